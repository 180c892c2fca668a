"""format_result: results to bytes, and the "one element per input" contract (issue 13, item 1)."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow.parquet as pq
import pytest

from parallelrun.outputs import ResultMismatchError, ResultTypeError, format_result
from parallelrun.outputs._format import _numeric_text

FILES = ["/data/a.txt", "/data/b.txt", "/data/c.txt"]

# (run()'s result, inputs, message pattern); every case is a failed attempt with nothing written.
MISMATCH_CASES = [
    ([f"{n}: ok" for n in ("a.txt", "b.txt", "c.txt")] * 2, FILES, r"returned 6 elements for a mini-batch of 3"),
    (["a.txt: 1", "a.txt: 2", "b.txt: 3"], FILES, r"names the input\(s\) 'a.txt' more than once"),
    (["a.txt: 1", "a.txt: 2"], FILES, r"'a.txt' more than once"),
    (pd.DataFrame({"v": [1, 2]}, index=[10, 10]), pd.DataFrame({"x": [0, 1, 2]}, index=[10, 11, 12]),
     r"'10' more than once"),
    (pd.DataFrame({"v": range(4)}), pd.DataFrame({"x": [0, 1, 2]}), r"returned 4 elements for a mini-batch of 3"),
]


@pytest.mark.parametrize(("result", "inputs", "pattern"), MISMATCH_CASES)
def test_a_result_that_breaks_one_element_per_input_is_refused(result: object, inputs: object, pattern: str) -> None:
    with pytest.raises(ResultMismatchError, match=pattern) as e:
        format_result(result, action="append_row", fmt="text", batch_inputs=inputs)
    assert "nothing of it is written" in str(e.value)


def test_results_within_the_contract_pass_and_report_what_is_missing() -> None:
    fr = format_result(["a.txt: 1", "c.txt: 3"], action="append_row", fmt="text", batch_inputs=FILES)
    assert fr.succeeded == 2 and fr.missing == [1] and fr.payload == b"a.txt: 1\nc.txt: 3\n" and fr.rows == 2
    # Results that name no input: the count is all that can be checked.
    fr = format_result(["x", "x", "x"], action="append_row", fmt="text", batch_inputs=FILES)
    assert fr.succeeded == 3 and fr.missing == []
    # "1.txt" is part of "11.txt": an element naming 11.txt stands for 11.txt only.
    fr = format_result(["11.txt ok", "1.txt ok"], action="append_row", fmt="text", batch_inputs=["1.txt", "11.txt"])
    assert fr.succeeded == 2


def test_results_that_are_the_input_names_are_matched_as_by_substring() -> None:
    """Elements equal to an input's file name take a one-lookup path; the outcome is what the substring
    rule gives: the name twice is refused, the missing one named, "1.txt" told from "11.txt"."""
    names = ["/d/1.txt", "/d/11.txt", "/d/b.txt"]
    fr = format_result(["11.txt", "1.txt"], action="append_row", fmt="text", batch_inputs=names)
    assert fr.succeeded == 2 and fr.missing == [2]
    fr = format_result(["b.txt", "1.txt: ok", "11.txt"], action="append_row", fmt="text", batch_inputs=names)
    assert fr.succeeded == 3 and fr.missing == []
    with pytest.raises(ResultMismatchError, match="'1.txt' more than once"):
        format_result(["1.txt", "1.txt: again"], action="append_row", fmt="text", batch_inputs=names)


def test_tabular_result_with_its_index_kept_reports_missing_rows() -> None:
    inputs = pd.DataFrame({"x": [0, 1, 2]}, index=[10, 11, 12])
    fr = format_result(inputs.loc[[10, 12]], action="append_row", fmt="csv", batch_inputs=inputs)
    assert fr.missing == [1] and fr.payload == b"x\n0\n2\n"


def test_formats_and_summary_only() -> None:
    df = pd.DataFrame({"a": [1, 2], "b": ["x y", "z"]})
    assert format_result(df, action="append_row", fmt="text", batch_inputs=[1, 2]).payload == b'1 "x y"\n2 z\n'
    assert format_result(df, action="append_row", fmt="jsonl", batch_inputs=[1, 2]).payload == (
        b'{"a":1,"b":"x y"}\n{"a":2,"b":"z"}\n')
    pq_bytes = format_result(df, action="append_row", fmt="parquet", batch_inputs=[1, 2]).payload
    assert pq_bytes is not None and pq.read_table(io.BytesIO(pq_bytes)).to_pandas().equals(df)
    fr = format_result(df, action="summary_only", fmt="text", batch_inputs=[1, 2])
    assert fr.payload is None and fr.succeeded == 2 and fr.rows == 0
    with pytest.raises(ResultTypeError, match="returned dict"):
        format_result({"a": 1}, action="append_row", fmt="text", batch_inputs=[1])


def _frames_for_text() -> list[pd.DataFrame]:
    import numpy as np

    rng = np.random.default_rng(7)
    n = 3000
    # Doubles of every magnitude (both sides of repr's 1e-4 and 1e16 switches to exponents), integral ones,
    # signed zeros, infinities, the extremes.
    wide = rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)
    edges = np.array([0.0, -0.0, 1.0, -1.0, 0.5, 1e-4, 9.999e-5, 1e-5, 1e15, 1e16, 9999999999999998.0, 0.1 + 0.2,
                      np.inf, -np.inf, 5e-324, np.finfo(np.float64).max, 123456789.0, 2.0**53])
    return [
        pd.DataFrame({"label": rng.integers(0, 2, n), "p": np.round(rng.random(n), 4)}),  # W3's shape
        pd.DataFrame({"x": np.concatenate([wide, edges]), "y": np.concatenate([edges, wide])}),
        pd.DataFrame({"i8": rng.integers(-100, 100, 50).astype("int8"), "u64": np.full(50, 2**64 - 1, "uint64"),
                      "b": rng.random(50) > 0.5, "f": rng.random(50)}, index=range(100, 150)),
        pd.DataFrame({"a": [1.5, 2.5], "a2": [3, 4]}).rename(columns={"a2": "a"}),  # duplicate column names
        # NaN is an empty field, or "" alone on its row; float32 has digits of its own (0.1, not 0.10000000149).
        pd.DataFrame({"v": [1.0, float("nan")]}),
        pd.DataFrame({"v": [1.0, float("nan")], "w": [float("nan")] * 2}),
        pd.DataFrame({"x": np.concatenate([wide, edges[:-4]]).astype("float32"), "n": np.arange(n + len(edges) - 4)}),
        # pandas writes these itself: float16, strings (quoting), nullable integers, dates.
        pd.DataFrame({"h": np.array([0.1, 2.5], dtype="float16")}),
        pd.DataFrame({"s": ["a b", 'q"q'], "v": [1, 2]}),
        pd.DataFrame({"v": pd.array([1, None], dtype="Int64")}),
        pd.DataFrame({"t": pd.to_datetime(["2026-01-01", "2026-01-02"])}),
    ]


@pytest.mark.parametrize("frame", range(11))
def test_text_rows_of_a_dataframe_are_what_pandas_writes(frame: int) -> None:
    df = _frames_for_text()[frame]
    expected = df.to_csv(sep=" ", header=False, index=False, lineterminator="\n").encode()
    fr = format_result(df, action="append_row", fmt="text", batch_inputs=df)
    assert fr.payload == expected and fr.rows == len(df) and fr.missing == []
    # The first seven are written by our own path, the rest by pandas.
    assert (_numeric_text(df) is not None) == (frame < 7)


def test_tabular_rows_checked_with_any_index() -> None:
    inputs = pd.DataFrame({"x": range(6)}, index=pd.RangeIndex(10, 16))
    # Reordered rows with the input's labels: every input accounted for.
    fr = format_result(inputs.iloc[::-1], action="append_row", fmt="text", batch_inputs=inputs)
    assert fr.succeeded == 6 and fr.missing == []
    # Labels that are not the input's (run() reset the index): only the count tells, and it is short by one.
    fr = format_result(pd.DataFrame({"v": range(5)}), action="append_row", fmt="text", batch_inputs=inputs)
    assert fr.succeeded == 5 and fr.missing is None
    # Two labels twice, named in the order they first appear.
    twice = pd.DataFrame({"v": range(5)}, index=[13, 11, 13, 11, 12])
    with pytest.raises(ResultMismatchError, match=r"'13', '11' more than once"):
        format_result(twice, action="append_row", fmt="text", batch_inputs=inputs)
