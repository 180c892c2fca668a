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
    if _is_dataframe(batch_inputs):
        twice, named = _check_rows(result, batch_inputs)
    else:
        named = _named_inputs(result, batch_inputs)
        unique = named is None or len(set(named)) == len(named)
        twice = [] if unique else [label for label, count in Counter(named).items() if count > 1]
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

    File input: every element mentions exactly one input's file name (names unique in the batch). (Tabular
    input: see ``_check_rows``.)
    """
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


def _check_rows(result: Any, batch_inputs: Any) -> tuple[list[Any], Any]:
    """Tabular input: (labels the result names twice, what its rows stand for) - the latter is the result's
    index when every label is an input's (run() kept the input's index), else None (cannot tell).

    With pandas' own vectorised index operations: as Python lists and sets, these checks cost ~6 ms per
    mini-batch of 23,000 rows (W3), a tenth of what the whole mini-batch costs.
    """
    if not _is_dataframe(result):
        return [], None
    labels, wanted = result.index, batch_inputs.index
    if labels.equals(wanted) and wanted.is_unique:  # the common case: every row kept, in order
        return [], labels
    if not labels.isin(wanted).all():
        return [], None
    twice = list(dict.fromkeys(labels[labels.duplicated(keep=False)]))  # in order of first appearance
    return twice, labels


def _missing_positions(named: Any, batch_inputs: Any) -> list[int] | None:
    """Which inputs did run() leave out? Exact when it can be known, else None."""
    if named is None:
        return None
    if _is_dataframe(batch_inputs):
        import numpy as np

        return np.flatnonzero(~batch_inputs.index.isin(named)).tolist()  # type: ignore[no-any-return]
    wanted = [_basename(p) for p in batch_inputs]
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


def _numeric_text(df: Any) -> bytes | None:
    """The ``text`` rows of a DataFrame of numbers and booleans, byte for byte what ``to_csv(sep=" ",
    header=False, index=False)`` writes, in pyarrow's C++ (~4x faster); None for any other frame.

    pandas turns such a column into text with numpy's ``astype(str)`` (~0.4 us a float: most of its time on
    W3) and writes NaN as an empty field; numbers need no quoting with a space separator. float16 and
    extension dtypes (nullable integers, strings, dates) are left to pandas.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if df.shape[1] == 0 or len(df) == 0:
        return None
    try:
        columns = []
        for i in range(df.shape[1]):
            dtype = df.dtypes.iloc[i]
            if not isinstance(dtype, np.dtype):  # nullable Int64 and the like: to_numpy() makes NaN of NA
                return None
            values, kind = df.iloc[:, i].to_numpy(), dtype.kind
            if kind in ("i", "u"):
                columns.append(pc.cast(pa.array(values), pa.string()))
            elif kind == "b":
                columns.append(pc.if_else(pa.array(values), "True", "False"))
            elif kind == "f" and values.dtype.itemsize in (4, 8):
                # The csv module quotes a row's only field when it is empty: a NaN alone on its row is "".
                columns.append(_float_text(values, '""' if df.shape[1] == 1 else ""))
            else:
                return None
        rows = pc.binary_join_element_wise(*columns, " ") if len(columns) > 1 else columns[0]
        rows = pc.binary_join_element_wise(rows, "", "\n")  # each row, then the terminator
    except pa.ArrowException:  # e.g. more than 2 GB of text in one mini-batch: pandas writes it
        return None
    offsets = np.frombuffer(rows.buffers()[1], np.int32, len(rows) + 1, rows.offset * 4)
    start, end = int(offsets[0]), int(offsets[-1])
    return rows.buffers()[2].slice(start, end - start).to_pybytes()  # type: ignore[no-any-return]


def _float_text(values: Any, nan: str) -> Any:
    """A float32/float64 column as numpy's ``astype(str)`` writes it (NaN as ``nan``), as a pyarrow string array.

    pyarrow prints the same shortest round-trip digits as numpy but chooses between 12.5 and 1.25e+01 by
    other rules, and prints 1.0 as "1". Where both are positional (1e-3 <= |x| < 1e5, and 0) its text is
    kept, with ".0" added to whole numbers; every other value (rare in model outputs) is written by numpy
    itself. The boundaries are inside the ranges where both print positionally, for float32 and float64.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.cast(pa.array(values), pa.string())
    with np.errstate(invalid="ignore"):
        mag = np.abs(values)
        plain = (mag < 1e5) & ((mag >= 1e-3) | (values == 0))  # False for NaN and inf
        whole = plain & (values == np.trunc(values))
    if whole.any():
        text = pc.replace_with_mask(text, pa.array(whole), pc.binary_join_element_wise(text.filter(whole), ".0", ""))
    other = ~plain
    if other.any():
        odd = values[other]
        fixed = np.where(np.isnan(odd), nan, odd.astype(str))
        text = pc.replace_with_mask(text, pa.array(other), pa.array(fixed, pa.string()))
    return text


def _encode(result: Any, fmt: str) -> bytes:
    if fmt == "text":
        if _is_dataframe(result):
            fast = _numeric_text(result)
            if fast is not None:
                return fast
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
        import pyarrow.parquet as pq

        from ._arrow import to_arrow

        table = to_arrow(df)
        sink = io.BytesIO()
        # No page index or bloom filter: their offsets live inside the body, where the one-file assembly,
        # which moves parts as bytes and rewrites only the footer, could not update them.
        pq.write_table(table, sink, use_dictionary=dictionary_columns(table.schema), write_page_index=False)
        return sink.getvalue()
    raise ValueError(f"unknown append_row_format {fmt!r}")
