"""``merge_output``: the journal-held outputs merged into one file (the engine's path before parts).

Kept only until the engine commits part records instead of bytes; then deleted.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..journal import Journal


def merge_output(journal: Journal, out_dir: Path, file_name: str, fmt: str) -> tuple[Path, int]:
    """Write every committed batch's rows, in batch order, to ``out_dir/file_name`` atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / file_name
    tmp = out_dir / f".{file_name}.tmp-{os.getpid()}"
    try:
        if fmt == "parquet":
            _merge_parquet(journal, tmp)
        else:
            with open(tmp, "wb") as f:
                first = True
                for _, data in journal.iter_outputs():
                    if fmt == "csv" and not first:
                        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
                    f.write(data)
                    first = False
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final, final.stat().st_size


def _merge_parquet(journal: Journal, tmp: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for _, data in journal.iter_outputs():
            table = pq.read_table(io.BytesIO(data))
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            elif table.schema != writer.schema:
                table = table.cast(writer.schema)
            writer.write_table(table)
        if writer is None:
            pq.write_table(pa.table({}), tmp)
    finally:
        if writer is not None:
            writer.close()
