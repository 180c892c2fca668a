"""Run an assembly in this process and SIGKILL it part-way (assembly_helpers.kill_during_assembly runs it).

Usage: python assemble_killed.py SPEC.json — SPEC holds the location, records, and ``kill_after``: the
process kills itself (SIGKILL, no cleanup) just before the (kill_after+1)-th part copy or upload, or
task handed to a helper process (or just after the (kill_after+1)-th step of a Parquet file made in place).
Before it dies it writes the pids of its helper processes to SPEC's ``pids_file`` (when given), so that the
test can check they exit on their own.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from parallelrun.outputs import (
    OutputLocation,
    PartRecord,
    _assemble,
    _offload,
    _parquet_concat,
    _parquet_inplace,
)

spec = json.loads(open(sys.argv[1]).read())
loc = OutputLocation.parse(spec["url"], storage_options=spec["storage_options"])
calls: dict[str, Any] = {"n": 0, "helpers": None}


def _count() -> None:
    if calls["n"] >= spec["kill_after"]:
        if spec.get("pids_file"):
            with open(spec["pids_file"], "w") as f:
                json.dump(calls["helpers"].pids if calls["helpers"] else [], f)
        os.kill(os.getpid(), signal.SIGKILL)
    calls["n"] += 1


if spec["fmt"] == "parquet" and spec.get("reencode"):
    import pyarrow.parquet as pq

    real_write = pq.ParquetWriter.write_table

    def write_table(self: Any, *a: Any, **k: Any) -> None:
        _count()
        real_write(self, *a, **k)

    pq.ParquetWriter.write_table = write_table  # type: ignore[method-assign]
elif loc.is_local:
    # Text formats: each record's copy; Parquet concatenation: each part's body copy; Parquet made in place:
    # each durable step (planned, footer appended, "renamed" saved, renamed).
    module, name = (_parquet_concat, "copy_body") if spec["fmt"] == "parquet" else (_assemble._Segments, "copy")
    real = getattr(module, name)

    def copy(*a: Any, **k: Any) -> int:
        _count()
        return int(real(*a, **k))

    setattr(module, name, copy)
    _parquet_inplace.checkpoint = lambda step: _count()
else:
    fs = loc.store.fs  # type: ignore[union-attr]
    real_call = fs.call_s3

    def call_s3(method: str, *a: Any, **k: Any) -> Any:
        if method in ("upload_part", "upload_part_copy"):
            _count()
        return real_call(method, *a, **k)

    fs.call_s3 = call_s3
    real_submit = _offload.Helpers.submit

    def submit(self: _offload.Helpers, *a: Any, **k: Any) -> Any:
        calls["helpers"] = self
        _count()  # the helpers may be busy with earlier tasks: the kill leaves them orphans
        return (yield from real_submit(self, *a, **k))

    _offload.Helpers.submit = submit  # type: ignore[method-assign]

records = [PartRecord.from_json(r) for r in spec["records"]]
loc.assemble(records, file_name=spec["file_name"], fmt=spec["fmt"], layout="file", state_dir=spec["state_dir"])
print("finished without being killed")
