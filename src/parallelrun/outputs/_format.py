"""Results: turning what ``run()`` returned into output rows, and merging committed rows into one file.

Workers format their own results into bytes (``format_result``), so the driver never unpickles user
objects: it stores the bytes with the batch's journal entry and, at the end, streams them in batch order
into ``<output>/<append_row_file_name>`` through a temporary file and an atomic rename
(``merge_output``). The file therefore holds each committed batch's rows exactly once, in input order.

Formats (``append_row_format``):

- ``text`` (default, what Azure writes): list items as ``str(item)`` one per line; DataFrame rows
  space-separated with no header.
- ``csv``: a header line then properly quoted rows; ``jsonl``: one JSON object per row;
- ``parquet``: one Parquet file; each batch travels as an Arrow IPC stream.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .journal import Journal


class ResultTypeError(TypeError):
    """run() returned something that is not a list, tuple or DataFrame."""


@dataclass
class FormattedResult:
    succeeded: int
    payload: bytes | None
    # Positions (in the mini-batch) of inputs the result does not account for; None = cannot tell which.
    missing: list[int] | None


def _is_dataframe(obj: Any) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "to_csv")


def format_result(result: Any, *, action: str, fmt: str, batch_inputs: list[str] | Any) -> FormattedResult:
    """Format ``run()``'s result as output bytes and work out which inputs it left out."""
    if _is_dataframe(result):
        n = len(result)
    elif isinstance(result, (list, tuple)):
        n = len(result)
    else:
        raise ResultTypeError(
            f"run() must return a list, a tuple or a pandas DataFrame with one element per succeeded item; "
            f"it returned {type(result).__name__}"
        )
    n_inputs = len(batch_inputs)
    missing: list[int] | None = []
    if n < n_inputs:
        missing = _missing_positions(result, batch_inputs)
    payload = None if action == "summary_only" or n == 0 else _encode(result, fmt)
    return FormattedResult(succeeded=min(n, n_inputs) if n_inputs else n, payload=payload, missing=missing)


def _missing_positions(result: Any, batch_inputs: Any) -> list[int] | None:
    """Which inputs did run() leave out? Exact when it can be known, else None."""
    if _is_dataframe(batch_inputs):
        if _is_dataframe(result):
            returned = set(result.index)
            wanted = list(batch_inputs.index)
            if returned <= set(wanted):
                return [pos for pos, label in enumerate(wanted) if label not in returned]
        return None
    # File input: match each returned item to the one input whose file name it mentions.
    names = [os.path.basename(str(p)) for p in batch_inputs]
    if len(set(names)) != len(names):
        return None
    seen: set[int] = set()
    items = result.itertuples(index=False) if _is_dataframe(result) else result
    for item in items:
        text = " ".join(map(str, item)) if _is_dataframe(result) else str(item)
        hits = [i for i, nm in enumerate(names) if nm in text]
        if len(hits) != 1 or hits[0] in seen:
            return None
        seen.add(hits[0])
    return [i for i in range(len(names)) if i not in seen]


def _encode(result: Any, fmt: str) -> bytes:
    if fmt == "text":
        if _is_dataframe(result):
            return result.to_csv(sep=" ", header=False, index=False, lineterminator="\n").encode()
        # No pandas here: importing it costs a worker ~1 s, for scripts that never touch it.
        return "".join(f"{item}\n" for item in result).encode()
    import pandas as pd

    df = result if _is_dataframe(result) else pd.DataFrame({"result": [str(x) for x in result]})
    if fmt == "csv":
        return df.to_csv(index=False, lineterminator="\n").encode()
    if fmt == "jsonl":
        return df.to_json(orient="records", lines=True, date_format="iso").encode()
    if fmt == "parquet":
        import pyarrow as pa

        table = pa.Table.from_pandas(df, preserve_index=False)
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        return sink.getvalue()
    raise ValueError(f"unknown append_row_format {fmt!r}")


def merge_output(journal: Journal, out_dir: Path, file_name: str, fmt: str) -> tuple[Path, int]:
    """Write every committed batch's rows, in batch order, to ``out_dir/file_name`` atomically.

    Returns the path and the number of bytes written. Rebuilt from the journal on every call, so a
    resumed run's file is whole and never holds a row twice.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / file_name
    tmp = out_dir / f".{file_name}.tmp-{os.getpid()}"
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
    return final, final.stat().st_size


def _merge_parquet(journal: Journal, tmp: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for _, data in journal.iter_outputs():
            table = pa.ipc.open_stream(data).read_all()
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


