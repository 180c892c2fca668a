"""A part whose Parquet schema differs from the first part's, re-encoded alone so the assembly stays in place.

Each worker encodes its mini-batch's rows on its own, so a column that is all null in one mini-batch (a
note no row of that batch has) is typed ``null`` there and ``string`` or ``double`` elsewhere: the parts'
schemas differ and their bytes cannot be joined under one footer. Rather than re-encode the whole output
(``_assemble._reencode_parquet``: every row decoded and encoded again, the parts kept until the end, twice
the output on disk), the one-file assembly in place re-encodes only such a part: its rows cast to the first
part's Arrow schema (a ``null`` column casts to any type), written as the workers write parts
(``_format``), appended to the shared file with its scan index (``_writer.append_part``). The footer then
lists the new part's row groups; the old part's bytes stay in the file unreferenced, like any part's own
footer. A part that cannot be cast (a column of another type) is left to the caller (``None``): the whole
output is re-encoded, as before.

The first part's schema is the target: when the first part itself has the ``null`` column, later parts
cannot be cast to it and the output is re-encoded as a whole (``_reencode_parquet`` has the same limit).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ._format import dictionary_columns
from ._records import PartCorruptedError, PartRecord, Records, checksum_of
from ._store import FsspecStore, LocalStore
from ._writer import append_part


class Unifier:
    """Re-encodes parts to the first part's schema and appends them to ``shared`` (``__call__``)."""

    def __init__(self, shared: Path, first: PartRecord, log: logging.Logger | None = None) -> None:
        self.shared = shared
        self.first = first
        self.log = log
        self.schema: Any = None

    def _read(self, rec: PartRecord) -> bytes:
        with open(self.shared, "rb") as f:
            f.seek(rec.offset)
            data = f.read(rec.length)
        if len(data) != rec.length:
            raise PartCorruptedError(rec, "is shorter than its record says")
        if checksum_of(data, rec.checksum) != rec.checksum:
            raise PartCorruptedError(rec, "does not match its checksum")
        return data

    def __call__(self, rec: PartRecord) -> PartRecord | None:
        """``rec``'s rows as a new part in the first part's schema, appended to the shared file (its
        record); None when they cannot be cast to it. Memory: one part's rows."""
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.schema is None:
            self.schema = pq.read_schema(pa.BufferReader(self._read(self.first)))
        table = pq.read_table(pa.BufferReader(self._read(rec)))
        if table.schema.names != self.schema.names:
            return None
        try:
            table = table.cast(self.schema)  # the target's metadata too (Arrow's and pandas' schema)
        except (pa.ArrowException, ValueError):
            return None
        sink = io.BytesIO()
        pq.write_table(table, sink, use_dictionary=dictionary_columns(self.schema), write_page_index=False)
        fd = os.open(self.shared, os.O_WRONLY | os.O_APPEND)
        try:
            offset, length, crc = append_part(fd, str(self.shared), sink.getvalue())
        finally:
            os.close(fd)
        if self.log is not None:
            self.log.info("mini-batch %d's Parquet schema differs from mini-batch %d's (a column all null in one "
                          "of them): its %d rows were re-encoded to the first schema, the rest kept as they are",
                          rec.batch, self.first.batch, rec.rows)
        return PartRecord(batch=rec.batch, name=rec.name, offset=offset, length=length, rows=rec.rows, checksum=crc)


def unified_schema(store: LocalStore | FsspecStore, records: Records) -> Any:
    """One Arrow schema every part's rows can be cast to (a column ``null`` in some parts takes its type
    from the others; pyarrow's ``unify_schemas``), read from the parts' footers only; the first part's
    metadata. For the whole-output re-encoding, whose writer needs it before the first row group: with the
    first part's schema, a first mini-batch with a column all null made every later part fail its cast."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = None
    for rec in records:
        tail = store.read(rec.name, rec.offset + rec.length - 8, 8)
        if len(tail) != 8 or tail[4:] != b"PAR1":
            raise PartCorruptedError(rec, "does not end as a Parquet file does")
        n = int.from_bytes(tail[:4], "little")
        if n > rec.length - 12:
            raise PartCorruptedError(rec, "has a footer longer than the part")
        footer = store.read(rec.name, rec.offset + rec.length - 8 - n, n)
        # The footer alone, framed as a file with no rows: pyarrow reads the schema from it.
        schema = pq.read_schema(pa.BufferReader(b"PAR1" + footer + tail))
        target = schema if target is None else pa.unify_schemas([target, schema])
    return target
