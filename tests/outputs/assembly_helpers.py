"""What the final-assembly tests (test_assembly.py, test_parquet_assembly.py) share: an assembly killed
with SIGKILL part-way in a child process, and a count of the bytes an assembly reads back through the
driver (what server-side composition must avoid)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from parallelrun.outputs import OutputLocation, PartRecord, default_file_name

HERE = Path(__file__).resolve().parent


def kill_during_assembly(tmp_path: Path, loc: OutputLocation, records: list[PartRecord], fmt: str,
                         kill_after: int, extra: dict[str, Any] | None = None) -> None:
    """Run ``loc.assemble(records)`` in a child (assemble_killed.py) that SIGKILLs itself just before its
    (``kill_after`` + 1)-th copy or upload; its state is left in ``tmp_path / "state"`` for a resume.
    ``extra`` adds keys to the child's spec (e.g. ``pids_file``)."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"url": loc.url, "storage_options": loc.storage_options, "fmt": fmt,
                                "file_name": default_file_name(fmt), "state_dir": str(tmp_path / "state"),
                                "records": [r.to_json() for r in records], "kill_after": kill_after,
                                **(extra or {})}))
    done = subprocess.run([sys.executable, str(HERE / "assemble_killed.py"), str(spec)], capture_output=True,
                          text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(HERE)})
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr


@contextlib.contextmanager
def bytes_read_through(fs: Any) -> Iterator[dict[str, int]]:
    """Count, in ``["bytes"]``, what ``fs.cat_file`` returns to this process while the block runs."""
    read = {"bytes": 0}
    real_cat = fs.cat_file

    def counting_cat(path: str, start: int | None = None, end: int | None = None, **kw: object) -> bytes:
        data = real_cat(path, start=start, end=end, **kw)
        read["bytes"] += len(data)
        return bytes(data)

    fs.cat_file = counting_cat
    try:
        yield read
    finally:
        del fs.cat_file  # the instance attribute: the class's method shows through again
