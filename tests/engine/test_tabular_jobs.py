"""Tabular jobs end to end: every row exactly once, output formats, failed rows named."""

from __future__ import annotations

import json
import textwrap

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from engine_helpers import JobFolder

ECHO_ROWS = """
import pandas as pd
def run(df):
    out = pd.DataFrame({"row": df.index, "text": df["text"].astype(str).str.replace("\\n", "|")})
    return out[~out["text"].str.contains("DROP")]
"""


def _job(tmp_path, inputs, **spec) -> JobFolder:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "entry.py").write_text(textwrap.dedent(ECHO_ROWS))
    doc = {"name": "tab-job", "entry_script": "entry.py", "source_directory": "scripts", "inputs": inputs,
           "output": "out", "mini_batch_size": "200B", "process_count_per_node": 2, "run_max_try": 1}
    doc.update(spec)
    (tmp_path / "job.yml").write_text(yaml.safe_dump(doc))
    return JobFolder(tmp_path)


def _frame(n: int) -> pd.DataFrame:
    texts = [f'row {i}, "quoted"\nsecond line' if i % 7 == 0 else f"row {i}" for i in range(n)]
    return pd.DataFrame({"id": range(n), "text": texts})


@pytest.mark.timeout(120)
def test_csv_with_quoted_newlines_every_row_once(tmp_path) -> None:
    (tmp_path / "data").mkdir()
    _frame(120).to_csv(tmp_path / "data" / "a.csv", index=False)
    job = _job(tmp_path, [{"type": "tabular", "path": "data/a.csv"}])
    res = job.run()
    assert res.returncode == 0, res.stderr
    rows = [line.split(" ", 1) for line in job.lines()]
    assert [int(r[0]) for r in rows] == list(range(120))  # in input order, each once
    assert job.record()["counts"]["batches"] > 5
    assert rows[7][1] == '"row 7, ""quoted""|second line"'  # intact across the split (quoted by to_csv)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_output_formats_and_failed_rows(tmp_path, fmt) -> None:
    (tmp_path / "data").mkdir()
    df = _frame(50)
    df.loc[[3, 31], "text"] = "DROP me"
    df.to_json(tmp_path / "data" / "a.jsonl", orient="records", lines=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "data" / "b.parquet",
                   row_group_size=10)
    job = _job(tmp_path, [{"type": "tabular", "path": ["data/a.jsonl", "data/b.parquet"]}],
               append_row_format=fmt, append_row_file_name=f"out.{fmt}")
    res = job.run()
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out" / f"out.{fmt}"
    if fmt == "csv":
        got = pd.read_csv(out)
    elif fmt == "jsonl":
        got = pd.read_json(out, lines=True)
    else:
        got = pq.read_table(out).to_pandas()
    expected = [i for i in range(50) if i not in (3, 31)]
    assert list(got["row"]) == expected + expected  # the JSONL file's rows, then the Parquet file's
    failed = job.failed_items()
    assert sorted(f["input"].rsplit("/", 1)[-1] for f in failed) == [
        "a.jsonl rows 3-3", "a.jsonl rows 31-31", "b.parquet rows 3-3", "b.parquet rows 31-31"]
    assert job.record()["counts"]["items_failed"] == 4


def test_unknown_extension_is_a_usage_error(tmp_path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.dat").write_text("a,b\n1,2\n")
    job = _job(tmp_path, [{"type": "tabular", "path": "data/x.dat"}])
    res = job.run()
    assert res.returncode == 2
    assert "format" in res.stderr and "x.dat" in res.stderr


def test_summary_only_writes_nothing_but_counts(tmp_path) -> None:
    (tmp_path / "data").mkdir()
    _frame(30).to_csv(tmp_path / "data" / "a.csv", index=False)
    job = _job(tmp_path, [{"type": "tabular", "path": "data/a.csv"}], output_action="summary_only")
    assert job.run().returncode == 0
    assert not (tmp_path / "out" / "parallel_run_step.txt").exists()
    assert json.loads((job.run_dirs()[0] / "run.json").read_text())["counts"]["items_succeeded"] == 30
