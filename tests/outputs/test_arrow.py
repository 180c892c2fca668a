"""The Parquet parts' DataFrame -> Arrow conversion (``outputs/_arrow.py``) gives what pyarrow's own
``from_pandas(df, preserve_index=False)`` gives, metadata and Parquet bytes included, for every kind of
frame: the fast path's (plain numbers, seen before) and the others'."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from parallelrun.outputs import _arrow
from parallelrun.outputs._arrow import to_arrow


def _frames() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(7)
    emb = pd.DataFrame(rng.standard_normal((500, 64), dtype=np.float32), columns=[f"e{i}" for i in range(64)])
    emb.insert(0, "id", np.arange(1000, 1500))
    nan = emb.copy()
    nan.iloc[3, 5] = np.nan
    nan.iloc[7, 9] = np.inf
    mixed = pd.DataFrame({"i8": np.arange(500, dtype=np.int8), "u32": np.arange(500, dtype=np.uint32),
                          "f64": np.linspace(0, 1, 500), "flag": np.arange(500) % 3 == 0})
    named = mixed.copy()
    named.columns.name = "features"
    attrs = mixed.copy()
    attrs.attrs = {"model": "m1"}
    return {
        "embeddings": emb, "with NaN and inf": nan, "mixed numbers": mixed, "named column index": named,
        "attrs": attrs,
        "strings": pd.DataFrame({"id": np.arange(500), "label": [f"c{i % 7}" for i in range(500)]}),
        "nullable ints": pd.DataFrame({"a": pd.array([1, None] * 250, dtype="Int64")}),
        "dates": pd.DataFrame({"t": pd.date_range("2026-01-01", periods=500, freq="h")}),
        "float16": pd.DataFrame({"h": np.ones(500, dtype=np.float16)}),
        "integer column names": pd.DataFrame(np.ones((500, 3), dtype=np.float32)),
        "duplicate names": pd.DataFrame(np.ones((500, 2)), columns=["a", "a"]),
        "no rows": emb.iloc[:0],
        "multiindex columns": pd.DataFrame(np.ones((500, 2)), columns=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y")])),
    }


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, write_page_index=False)
    return sink.getvalue()


@pytest.mark.parametrize("kind", list(_frames()))
def test_the_table_is_what_from_pandas_gives(kind: str) -> None:
    _arrow._schemas.clear()
    df = _frames()[kind]
    if kind == "duplicate names":  # pyarrow refuses these; so does the conversion, with pyarrow's error
        with pytest.raises(ValueError):
            pa.Table.from_pandas(df, preserve_index=False)
        with pytest.raises(ValueError):
            to_arrow(df)
        return
    want = pa.Table.from_pandas(df, preserve_index=False)
    for _ in range(2):  # the first frame teaches the schema; the second takes the fast path when it may
        got = to_arrow(df)
        assert got.schema.equals(want.schema, check_metadata=True)
        assert got.equals(want)
        assert _parquet(got) == _parquet(want)


def test_plain_frames_take_the_fast_path_and_others_do_not() -> None:
    _arrow._schemas.clear()
    frames = _frames()
    fast = {k for k, df in frames.items() if _arrow._plain_key(df) is not None}
    assert fast == {"embeddings", "with NaN and inf", "mixed numbers", "named column index", "no rows"}
    # the same names and dtypes share one schema; NaN became null as from_pandas makes it, inf stays
    to_arrow(frames["embeddings"])
    got = to_arrow(frames["with NaN and inf"])
    assert len(_arrow._schemas) == 1
    assert got.column("e4")[3].as_py() is None
    assert got.column("e8")[7].as_py() == float("inf")
    assert got.column("e4").null_count == 1


def test_the_schema_cache_is_bounded() -> None:
    _arrow._schemas.clear()
    for i in range(_arrow._MAX_SCHEMAS + 5):
        df = pd.DataFrame({f"c{i}": np.arange(3.0)})
        assert to_arrow(df).equals(pa.Table.from_pandas(df, preserve_index=False))
    assert len(_arrow._schemas) == _arrow._MAX_SCHEMAS


def test_without_pandas_internal_iterator_the_columns_come_from_items(monkeypatch: pytest.MonkeyPatch) -> None:
    _arrow._schemas.clear()
    df = _frames()["with NaN and inf"]
    monkeypatch.delattr(pd.DataFrame, "_iter_column_arrays")
    want = pa.Table.from_pandas(df, preserve_index=False)
    to_arrow(df)
    assert to_arrow(df).equals(want)
