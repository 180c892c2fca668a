"""Local tabular files are planned and read with plain file calls; big CSVs import numpy only later on.

Both are start-up costs of W3 (a 910 MB CSV): fsspec's import (~0.1 s of CPU, in the driver and in every
worker) and numpy's (~0.1 s) came before the driver started its first worker.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from parallelrun.data.tabular import plan_tabular, read_batch


def _csv(path: Path, rows: int, crlf: bool = False) -> Path:
    end = "\r\n" if crlf else "\n"
    text = "id,x,name" + end + "".join(f'{i},{i / 8},"n {i}"{end}' for i in range(rows))
    path.write_text(text)
    return path


def test_local_path_and_file_url_give_the_same_batches_and_rows(tmp_path: Path) -> None:
    # A plain path is read with open(); a file:// URL still goes through fsspec. Batches after the first
    # re-read the header from the file's start: both ways must give the rows pandas reads from the file.
    csv = _csv(tmp_path / "a.csv", 500, crlf=True)
    tsv = tmp_path / "b.tsv"
    tsv.write_text("k\tv\n" + "".join(f"{i}\tv{i}\n" for i in range(300)))
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps({"a": i, "b": f"t {i}"}) + "\n" for i in range(300)))
    pq.write_table(pa.table({"a": list(range(1000)), "b": [i / 3 for i in range(1000)]}), tmp_path / "d.parquet",
                   row_group_size=100)
    expected = {"a.csv": pd.read_csv(csv), "b.tsv": pd.read_csv(tsv, sep="\t"),
                "c.jsonl": pd.read_json(jsonl, lines=True), "d.parquet": pd.read_parquet(tmp_path / "d.parquet")}
    for name, want in expected.items():
        local = list(plan_tabular([str(tmp_path / name)], 1000))
        url = list(plan_tabular([f"file://{tmp_path / name}"], 1000))
        assert len(local) > 2
        assert [(b.start, b.end, b.header_end, b.row_start, b.row_end, b.row_groups) for b in local] == \
            [(b.start, b.end, b.header_end, b.row_start, b.row_end, b.row_groups) for b in url]
        for batches in (local, url):
            got = pd.concat([read_batch(b) for b in batches])
            pd.testing.assert_frame_equal(got, want, check_index_type=False)
            assert list(got.index) == list(range(len(want)))


def test_missing_local_file_names_the_file(tmp_path: Path) -> None:
    csv = _csv(tmp_path / "gone.csv", 50)
    batches = list(plan_tabular([str(csv)], 200))
    csv.unlink()
    try:
        read_batch(batches[1])
    except FileNotFoundError as e:
        assert "gone.csv" in str(e)
    else:
        raise AssertionError("reading a deleted file succeeded")


def test_first_batch_of_a_big_csv_needs_neither_numpy_nor_fsspec(tmp_path: Path) -> None:
    # In a fresh interpreter, as the driver is: the first batch is planned with bytes.count (numpy is
    # imported from _NUMPY_AFTER bytes on, here made small), and fsspec is never imported for a local file.
    csv = _csv(tmp_path / "big.csv", 4000)
    code = f"""
import sys
from parallelrun.data import text_split
text_split._NUMPY_FROM = 0  # this small file counts as big
text_split._CHUNK = 4096
text_split._NUMPY_AFTER = 3 * 4096
from parallelrun.data.tabular import plan_tabular
plan = plan_tabular([{str(csv)!r}], 1000)
first = next(plan)
seen = ["numpy" in sys.modules, "fsspec" in sys.modules]
rest = list(plan)
seen += ["numpy" in sys.modules, "fsspec" in sys.modules, first.row_start, rest[-1].row_end]
print(seen)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[False, False, True, False, 0, 4000]"


def test_reused_read_buffer_never_leaks_bytes_between_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Local ranges are read into one buffer per thread, reused: batches read in any order (big after small,
    # small after big), some bigger than the kept size, must each give exactly their own rows.
    monkeypatch.setattr("parallelrun.data.tabular._KEEP_BUFFER", 1500)
    csv = _csv(tmp_path / "r.csv", 600)
    want = pd.read_csv(csv)
    batches = list(plan_tabular([str(csv)], 700)) + list(plan_tabular([str(csv)], 4000))
    assert max(b.end - b.start for b in batches) > 1500 > min(b.end - b.start for b in batches)
    for b in [*reversed(batches), *batches[::2], *batches[1::2]]:
        got = read_batch(b)
        pd.testing.assert_frame_equal(got, want.iloc[b.row_start:b.row_end], check_index_type=False)


def test_file_cut_short_after_planning_is_an_error_naming_the_range(tmp_path: Path) -> None:
    csv = _csv(tmp_path / "short.csv", 400)
    batches = list(plan_tabular([str(csv)], 1000))
    data = csv.read_bytes()
    read_batch(batches[-1])  # the reused buffer now holds the last range's bytes: they must not be read again
    csv.write_bytes(data[:batches[-2].start + 10])  # the second-to-last range loses all but 10 bytes
    for b in batches[:-3:-1]:
        try:
            read_batch(b)
        except ValueError as e:
            assert f"short.csv bytes {b.start}-{b.end}" in str(e)
            assert "planned" in str(e) or "cannot read" in str(e)
        else:
            raise AssertionError(f"reading {b.describe()} of a file cut short succeeded")
    pd.testing.assert_frame_equal(read_batch(batches[0]), pd.read_csv(io.BytesIO(data)).iloc[:batches[0].row_end])
