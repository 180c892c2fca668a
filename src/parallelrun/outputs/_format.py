"""What ``run()`` returned, turned into output bytes in the worker (``format_result``).

Workers format their own results, so the driver never unpickles user objects. Formats
(``append_row_format``):

- ``text`` (default, what Azure writes): list items as ``str(item)`` one per line; DataFrame rows
  space-separated with no header.
- ``csv``: a header line then properly quoted rows; ``jsonl``: one JSON object per row;
- ``parquet``: a self-contained Parquet file per mini-batch.

Azure's contract is one result element per succeeded input. A result that breaks it (more elements than
inputs, or one input named twice) raises :class:`ResultMismatchError` before anything is written: the
worker reports a failed attempt with that message, so a duplicate row never reaches the output.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any


class ResultTypeError(TypeError):
    """run() returned something that is not a list, tuple or DataFrame."""


class ResultMismatchError(ValueError):
    """run()'s result does not match its mini-batch: more elements than inputs, or one input twice.

    Raised by :func:`format_result` before any byte is written; the worker turns it into a failed attempt.
    """


@dataclass
class FormattedResult:
    succeeded: int
    payload: bytes | None
    # Positions (in the mini-batch) of inputs the result does not account for; None = cannot tell which.
    missing: list[int] | None
    rows: int = 0  # rows in ``payload`` (0 when there is no payload)


def _is_dataframe(obj: Any) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "to_csv")


def format_result(result: Any, *, action: str, fmt: str, batch_inputs: list[str] | Any) -> FormattedResult:
    """Format ``run()``'s result as output bytes and work out which inputs it left out.

    Raises :class:`ResultTypeError` for a result that is not a list, tuple or DataFrame, and
    :class:`ResultMismatchError` for one that has more elements than inputs or names an input twice.
    """
    if _is_dataframe(result) or isinstance(result, (list, tuple)):
        n = len(result)
    else:
        raise ResultTypeError(
            f"run() must return a list, a tuple or a pandas DataFrame with one element per succeeded item; "
            f"it returned {type(result).__name__}"
        )
    n_inputs = len(batch_inputs)
    if n_inputs and n > n_inputs:
        raise ResultMismatchError(
            f"run() returned {n} elements for a mini-batch of {n_inputs} input(s); it must return at most one "
            f"element per input (one per succeeded item), so this attempt is failed and nothing of it is "
            f"written. Return one element per input (for example a list built with one append per input)."
        )
    named = _named_inputs(result, batch_inputs)
    if named is not None and len(set(named)) != len(named):
        twice = [label for label, count in Counter(named).items() if count > 1]
        if twice:
            shown = ", ".join(repr(str(t)) for t in twice[:5]) + (" ..." if len(twice) > 5 else "")
            raise ResultMismatchError(
                f"run()'s result names the input(s) {shown} more than once ({n} elements for {n_inputs} "
                f"input(s)); each input may have at most one element, so this attempt is failed and nothing of "
                f"it is written. Return one element per input."
            )
    missing: list[int] | None = []
    if n < n_inputs:
        missing = _missing_positions(named, batch_inputs)
    payload = None if action == "summary_only" or n == 0 else _encode(result, fmt)
    return FormattedResult(succeeded=min(n, n_inputs) if n_inputs else n, payload=payload, missing=missing,
                           rows=n if payload is not None else 0)


if os.sep == "/" and os.altsep is None:
    def _basename(p: Any) -> str:
        """``os.path.basename(str(p))`` at a third of its cost (asked for every input of every mini-batch)."""
        s = p if type(p) is str else str(p)
        return s[s.rfind("/") + 1:]
else:  # Windows: backslashes and drive letters too
    def _basename(p: Any) -> str:
        return os.path.basename(str(p))


_MATCH_BUDGET = 1_000_000  # 1,000 files x 1,000 elements: well under 0.1 s


def _named_inputs(result: Any, batch_inputs: Any) -> list[Any] | None:
    """The input each result element stands for, when that can be known; else None.

    Tabular input: the result is a DataFrame that kept the input's index (its labels are all input labels).
    File input: every element mentions exactly one input's file name (names unique in the batch).
    """
    if _is_dataframe(batch_inputs):
        if _is_dataframe(result):
            labels = list(result.index)
            if set(labels) <= set(batch_inputs.index):
                return labels
        return None
    if len(batch_inputs) * len(result) > _MATCH_BUDGET:
        return None  # matching is (elements x inputs) substring tests: past this, the count is all we check
    names = [_basename(p) for p in batch_inputs]
    if len(set(names)) != len(names):
        return None
    found: list[Any] = []
    exact = set(names)
    items = result.itertuples(index=False) if _is_dataframe(result) else result
    for item in items:
        text = " ".join(map(str, item)) if _is_dataframe(result) else str(item)
        if text in exact:
            # The element is an input's file name (what scripts that return names do): any other name it
            # contains is shorter and part of it, so the rule below would keep this one. One set lookup
            # instead of one substring test per input.
            found.append(text)
            continue
        hits = [nm for nm in names if nm in text]
        if len(hits) > 1:  # "1.txt" inside "11.txt": keep the longest, which the shorter is part of
            longest = max(hits, key=len)
            hits = [longest] if all(h in longest for h in hits) else hits
        if len(hits) != 1:
            return None
        found.append(hits[0])
    return found


def _missing_positions(named: list[Any] | None, batch_inputs: Any) -> list[int] | None:
    """Which inputs did run() leave out? Exact when it can be known, else None."""
    if named is None:
        return None
    wanted = list(batch_inputs.index) if _is_dataframe(batch_inputs) else [_basename(p) for p in batch_inputs]
    returned = set(named)
    return [pos for pos, label in enumerate(wanted) if label not in returned]


def dictionary_columns(schema: Any) -> list[str]:
    """Columns worth dictionary-encoding in Parquet: all but floating-point ones.

    Floating-point results (embeddings, scores) are nearly all distinct: pyarrow's default tries a
    dictionary for them, gives up after 1 MB, and the attempt makes writing ~3x slower and the file ~40%
    larger (measured on 256 float32 columns). Low-cardinality floats lose a little compression instead.
    """
    import pyarrow as pa

    return [f.name for f in schema if not pa.types.is_floating(f.type)]


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
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        sink = io.BytesIO()
        # No page index or bloom filter: their offsets live inside the body, where the one-file assembly,
        # which moves parts as bytes and rewrites only the footer, could not update them.
        pq.write_table(table, sink, use_dictionary=dictionary_columns(table.schema), write_page_index=False)
        return sink.getvalue()
    raise ValueError(f"unknown append_row_format {fmt!r}")
