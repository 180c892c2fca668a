"""Run an assembly in this process and SIGKILL it part-way (assembly_helpers.kill_during_assembly runs it).

Usage: python assemble_killed.py SPEC.json — SPEC holds the location, records, and ``kill_after``: the
process kills itself (SIGKILL, no cleanup) just before the (kill_after+1)-th part copy or upload (or just
after the (kill_after+1)-th step of a Parquet file made in place).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from parallelrun.outputs import OutputLocation, PartRecord, _assemble, _parquet_concat, _parquet_inplace

spec = json.loads(open(sys.argv[1]).read())
loc = OutputLocation.parse(spec["url"], storage_options=spec["storage_options"])
calls = {"n": 0}


def _count() -> None:
    if calls["n"] >= spec["kill_after"]:
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

records = [PartRecord.from_json(r) for r in spec["records"]]
loc.assemble(records, file_name=spec["file_name"], fmt=spec["fmt"], layout="file", state_dir=spec["state_dir"])
print("finished without being killed")
