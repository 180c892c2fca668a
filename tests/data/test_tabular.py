"""Tabular planning and reading: every row exactly once, in order, whatever the batch size."""

from __future__ import annotations

import io
import json
import random
import types
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from parallelrun.data.batches import TabularBatch, from_json, to_json
from parallelrun.data.tabular import infer_format, parse_size, plan_tabular, read_batch


def _plan(path: Path | str, size: int, **kwargs: object) -> list[TabularBatch]:
    return list(plan_tabular([str(path)], size, **kwargs))  # type: ignore[arg-type]


def _read_all(batches: list[TabularBatch]) -> pd.DataFrame:
    return pd.concat([read_batch(b) for b in batches])


def _assert_chained(batches: list[TabularBatch], n_rows: int) -> None:
    """Rows 0..n_rows-1 covered exactly once, in order, with ranges and indices that chain."""
    if not batches:
        assert n_rows == 0
        return
    assert [b.row_start for b in batches] == [0] + [b.row_end for b in batches[:-1]]
    assert (batches[-1].row_end if batches else 0) == n_rows
    assert all(b.n_items > 0 for b in batches)
    assert [b.index for b in batches] == list(range(batches[0].index, batches[0].index + len(batches)))
    text = [b for b in batches if b.format != "parquet"]
    for prev, cur in zip(text, text[1:], strict=False):
        assert cur.start == prev.end  # byte ranges tile the file: nothing skipped, nothing read twice


def _check_text(path: Path, size: int, expected: pd.DataFrame, **kwargs: object) -> list[TabularBatch]:
    batches = _plan(path, size, **kwargs)
    _assert_chained(batches, len(expected))
    got = _read_all(batches)
    pd.testing.assert_frame_equal(got, expected)
    assert list(got.index) == list(range(len(expected)))
    return batches


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- CSV / TSV ------------------------------------------------------------------------------------------

def _csv_rows(n: int) -> bytes:
    return b"id,name,score\n" + b"".join(b"%d,name_%d,%d.5\n" % (i, i, i * 3) for i in range(n))


@pytest.mark.parametrize("size", [1, 64, 100, 1000, 10**6])
def test_csv_with_header_every_row_once(tmp_path: Path, size: int) -> None:
    path = _write(tmp_path, "a.csv", _csv_rows(200))
    batches = _check_text(path, size, pd.read_csv(path))
    if size in (1, 10**6):
        assert len(batches) == (200 if size == 1 else 1)
    if size == 100:
        assert len(batches) > 20
        assert all(b.header_end == len(b"id,name,score\n") for b in batches)
        assert all(90 <= b.nbytes <= 130 for b in batches[:-1])  # ~size, ending on the next newline


def test_csv_quoted_newlines_and_escaped_quotes(tmp_path: Path) -> None:
    rows = [b'%d,"a ""b""\nc",plain' % i if i % 3 else b'%d,"x,\r\n\n""y""",""' % i for i in range(120)]
    path = _write(tmp_path, "q.csv", b'id,"multi\nline header",z\n' + b"\n".join(rows) + b"\n")
    expected = pd.read_csv(path, dtype=str)
    assert len(expected) == 120 and expected.iloc[1, 1] == 'a "b"\nc'
    for size in range(1, 60, 7):  # many offsets, so cuts fall on and around the quoted newlines
        _check_text(path, size, expected, options={"dtype": "str"})


def test_csv_stray_quote_inside_unquoted_field_is_literal(tmp_path: Path) -> None:
    # pandas treats a quote that does not start a field as an ordinary character: 12" stays 12".
    data = b'item,size\npizza,12" wide\n"quoted\nfield",x\npie,9" " deep\nend,1\n'
    path = _write(tmp_path, "s.csv", data)
    expected = pd.read_csv(path, dtype=str)
    assert expected["size"].tolist() == ['12" wide', "x", '9" " deep', "1"]
    for size in (1, 10, 20, 1000):
        _check_text(path, size, expected, options={"dtype": "str"})


def test_csv_without_trailing_newline_keeps_last_row(tmp_path: Path) -> None:
    path = _write(tmp_path, "t.csv", _csv_rows(30).rstrip(b"\n"))
    batches = _check_text(path, 50, pd.read_csv(path))
    assert batches[-1].row_end == 30 and batches[-1].end == path.stat().st_size


def test_csv_last_row_quoted_newline_no_terminator(tmp_path: Path) -> None:
    path = _write(tmp_path, "t.csv", b'a,b\n1,x\n2,"y\nz"')
    batches = _check_text(path, 1, pd.read_csv(path))
    assert [b.n_items for b in batches] == [1, 1]


def test_csv_crlf(tmp_path: Path) -> None:
    path = _write(tmp_path, "crlf.csv", _csv_rows(80).replace(b"\n", b"\r\n"))
    expected = pd.read_csv(path)
    assert len(expected) == 80
    _check_text(path, 64, expected)


def test_csv_blank_and_whitespace_lines_are_skipped_like_pandas(tmp_path: Path) -> None:
    data = b"\n  \na,b\n1,2\n\n   \n3,4\r\n\t\r\n\n5,6\n \n\n"
    path = _write(tmp_path, "blank.csv", data)
    expected = pd.read_csv(path)
    assert expected["a"].tolist() == [1, 3, 5]
    for size in (1, 5, 9, 100):
        _check_text(path, size, expected)


def test_csv_utf8_bom(tmp_path: Path) -> None:
    path = _write(tmp_path, "bom.csv", b'\xef\xbb\xbf"a",b\n"1",2\n3,4\n')
    expected = pd.read_csv(path)
    assert list(expected.columns) == ["a", "b"]
    _check_text(path, 1, expected)
    _check_text(path, 1, pd.read_csv(path, header=None, dtype=str).rename(columns=lambda i: f"Column{i + 1}"),
                options={"header": False, "dtype": "str"})


def test_empty_and_header_only_files_give_no_batch(tmp_path: Path) -> None:
    paths = [_write(tmp_path, "empty.csv", b""), _write(tmp_path, "head.csv", b"a,b\n"),
             _write(tmp_path, "head2.csv", b"a,b"), _write(tmp_path, "blank.csv", b"a,b\n\n  \n"),
             _write(tmp_path, "empty.jsonl", b""), _write(tmp_path, "blank.jsonl", b"\n \n"),
             _write(tmp_path, "empty.parquet", b"")]
    assert list(plan_tabular([str(p) for p in paths], 10)) == []


def test_tsv(tmp_path: Path) -> None:
    data = b"k\tv\n" + b"".join(b'%d\t"t,%d\n"\n' % (i, i) for i in range(50))
    path = _write(tmp_path, "a.tsv", data)
    expected = pd.read_csv(path, sep="\t")
    assert list(expected.columns) == ["k", "v"] and len(expected) == 50
    batches = _check_text(path, 40, expected)
    assert batches[0].format == "tsv" and batches[0].options["separator"] == "\t"


def test_custom_separator(tmp_path: Path) -> None:
    path = _write(tmp_path, "semi.csv", b"a;b\n1;x,y\n2;z\n")
    _check_text(path, 1, pd.read_csv(path, sep=";"), options={"separator": ";"})


def test_header_false_names_columns_like_azure(tmp_path: Path) -> None:
    path = _write(tmp_path, "nohead.csv", b"".join(b'%d,"v\n%d"\n' % (i, i) for i in range(40)))
    expected = pd.read_csv(path, header=None).rename(columns=lambda i: f"Column{i + 1}")
    batches = _check_text(path, 30, expected, options={"header": False})
    assert batches[0].start == 0 and batches[0].header_end == 0
    assert list(read_batch(batches[1]).columns) == ["Column1", "Column2"]


def test_dtype_option_keeps_every_batch_typed_alike(tmp_path: Path) -> None:
    path = _write(tmp_path, "codes.csv", b"code,n\n007,1\n008,x\n")
    batches = _plan(path, 1, options={"dtype": {"code": "str"}})
    assert [read_batch(b)["code"].iloc[0] for b in batches] == ["007", "008"]
    nohead = _write(tmp_path, "codes2.csv", b"007,1\n")
    [batch] = _plan(nohead, 100, options={"header": False, "dtype": {"Column1": "str"}})
    assert read_batch(batch)["Column1"].tolist() == ["007"]


@pytest.mark.slow  # ~25 s of randomized cases; the targeted CSV cases above run in `make test`
def test_randomized_csv_matches_pandas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20240601)

    def field() -> str:
        if rng.random() < 0.5:  # quoted: anything goes, quotes doubled
            parts = ["x", "y", " ", ",", '"', "\n", "\r\n", "z"]
            body = "".join(rng.choice(parts) for _ in range(rng.randint(0, 8)))
            return '"' + body.replace('"', '""') + '"'
        # unquoted: no separator/newline, and a quote only after the first character (literal to pandas)
        body = "".join(rng.choice("xyz ") for _ in range(rng.randint(0, 5)))
        return body + ('"' + rng.choice("xz") if body and rng.random() < 0.2 else "")

    for case in range(150):
        # Small scan chunks too, so chunk edges land inside quoted fields and records.
        monkeypatch.setattr("parallelrun.data.text_split._CHUNK", rng.choice([1, 5, 17, 64, 8 * 1024 * 1024]))
        n_cols = rng.randint(1, 4)
        lines = [",".join(f"c{i}" for i in range(n_cols))]
        for _ in range(rng.randint(0, 40)):
            lines.append("" if rng.random() < 0.05 else ",".join(field() for _ in range(n_cols)))
        text = "".join(line + rng.choice(["\n", "\r\n"]) for line in lines)
        if rng.random() < 0.3:
            text = text.rstrip("\r\n")
        path = _write(tmp_path, f"r{case}.csv", text.encode())
        expected = pd.read_csv(path, dtype=str)
        size = rng.choice([1, 2, 7, 16, 50, 200, 10**4])
        batches = _plan(path, size, options={"dtype": "str"})
        _assert_chained(batches, len(expected))
        if batches:
            pd.testing.assert_frame_equal(_read_all(batches), expected, obj=f"case {case} size {size}")


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 333])
def test_chunk_boundaries_inside_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    # Small scan chunks put chunk edges inside quoted fields, "" escapes, \r\n pairs and blank lines, and
    # make records whose quoted field spans chunks be followed by records that start with a quote.
    monkeypatch.setattr("parallelrun.data.text_split._CHUNK", chunk)
    odd, even = b'%d,"a ""b""\r\nc",  \r\n \r\n', b'"%d","x\ny, ""z""",w\n'
    rows = [(odd if i % 2 else even) % i for i in range(30)]
    path = _write(tmp_path, "c.csv", b"id,t,u\r\n" + b"".join(rows))
    expected = pd.read_csv(path, dtype=str)
    assert len(expected) == 30
    for size in (1, 13, 40, 10**6):
        _check_text(path, size, expected, options={"dtype": "str"})


@pytest.mark.parametrize("chunk", [5, 64, 4096])
def test_numpy_line_count_plans_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    # Big files count their lines with numpy (_numpy_from), from some way into the file on; the plan must be
    # the one bytes.count and the blank-line regex give, wherever the switch falls: blank and
    # whitespace-only lines (\\r, spaces, tabs) at chunk edges, CRLF, a quoted field after many plain
    # lines, JSON lines.
    rng = random.Random(chunk)
    monkeypatch.setattr("parallelrun.data.text_split._CHUNK", chunk)
    files = []
    for case in range(12):
        lines = ["a,b"]
        for i in range(rng.randint(0, 300)):
            lines.append(rng.choice([f"{i},{i / 7}", f"{i},x y", "", " ", "\t", " \t", "\r", f"{i}, 1"]))
        if case % 3 == 0:
            lines.append('9,"q\nq"')
        text = "".join(line + rng.choice(["\n", "\r\n"]) for line in lines)
        files.append(_write(tmp_path, f"n{case}.csv", text.encode()))
    files.append(_write(tmp_path, "n.jsonl", b"".join(b'{"a": %d}\n' % i + rng.choice([b"", b"\n", b" \n", b"\t\r\n"])
                                                       for i in range(200))))
    for size in (1, 40, 999):
        monkeypatch.setattr("parallelrun.data.text_split._numpy_from", lambda size: None)
        plain = [_plan(f, size) for f in files]
        for start in (0, 3 * chunk, 700):  # from the start, after a few chunks, mid-file (most files)
            monkeypatch.setattr("parallelrun.data.text_split._numpy_from", lambda size, start=start: start)
            monkeypatch.setattr("parallelrun.data.text_split._NUMPY_SPAN", 0)
            assert [_plan(f, size) for f in files] == plain
            monkeypatch.setattr("parallelrun.data.text_split._NUMPY_SPAN", 64 * 1024)


# --- JSON lines ------------------------------------------------------------------------------------------

def test_jsonl_with_blank_lines(tmp_path: Path) -> None:
    records = [{"id": i, "text": f"line {i}\nwith newline", "v": i / 4} for i in range(60)]
    body = "\n".join(json.dumps(r) + ("\n  " if i == 10 else "") for i, r in enumerate(records))
    path = _write(tmp_path, "a.jsonl", (body + "\n\n").encode())
    expected = pd.read_json(path, lines=True)
    assert len(expected) == 60
    for size in (1, 64, 1000):
        batches = _check_text(path, size, expected)
    assert batches[0].format == "jsonl" and batches[0].header_end == 0


def test_jsonl_without_trailing_newline(tmp_path: Path) -> None:
    path = _write(tmp_path, "b.ndjson", b'{"a": 1}\r\n{"a": 2}\r\n{"a": 3}')
    batches = _check_text(path, 1, pd.read_json(path, lines=True))
    assert [b.n_items for b in batches] == [1, 1, 1]


# --- Parquet --------------------------------------------------------------------------------------------

def _parquet(tmp_path: Path, n: int, row_group_size: int) -> Path:
    df = pd.DataFrame({"id": range(n), "name": [f"row-{i:05d}" for i in range(n)]})
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=row_group_size)
    return path


def test_parquet_groups_consecutive_row_groups(tmp_path: Path) -> None:
    path = _parquet(tmp_path, 1000, row_group_size=100)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 10
    rg_bytes = max(meta.row_group(g).total_byte_size for g in range(10))
    batches = _plan(path, int(rg_bytes * 2.5))
    assert [b.row_groups for b in batches] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    _assert_chained(batches, 1000)
    pd.testing.assert_frame_equal(_read_all(batches), pd.read_parquet(path))


def test_parquet_huge_row_group_split_into_row_ranges(tmp_path: Path) -> None:
    path = _parquet(tmp_path, 1000, row_group_size=1000)
    total = pq.ParquetFile(path).metadata.row_group(0).total_byte_size
    batches = _plan(path, total // 7)
    assert len(batches) >= 7 and all(b.row_groups == (0,) for b in batches)
    _assert_chained(batches, 1000)
    pd.testing.assert_frame_equal(_read_all(batches), pd.read_parquet(path))
    assert read_batch(batches[3]).index[0] == batches[3].row_start > 0


def test_parquet_mixed_small_and_huge_groups(tmp_path: Path) -> None:
    df = pd.DataFrame({"id": range(600), "blob": ["s" if i < 300 else "L" * 200 for i in range(600)]})
    path = tmp_path / "m.parquet"
    with pq.ParquetWriter(path, pa.Table.from_pandas(df, preserve_index=False).schema) as w:
        for lo, hi in [(0, 100), (100, 200), (200, 300), (300, 600)]:
            w.write_table(pa.Table.from_pandas(df.iloc[lo:hi], preserve_index=False))
    meta = pq.ParquetFile(path).metadata
    size = meta.row_group(0).total_byte_size * 3
    assert meta.row_group(3).total_byte_size > size
    batches = _plan(path, size)
    assert batches[0].row_groups == (0, 1, 2) and all(b.row_groups == (3,) for b in batches[1:])
    _assert_chained(batches, 600)
    pd.testing.assert_frame_equal(_read_all(batches), pd.read_parquet(path))


# --- many files, descriptors, laziness, errors ----------------------------------------------------------

def test_multiple_files_never_mixed_and_indices_consecutive(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.csv", _csv_rows(30))
    b = _write(tmp_path, "b.jsonl", b"".join(b'{"x": %d}\n' % i for i in range(20)))
    c = _parquet(tmp_path, 50, row_group_size=10)
    batches = list(plan_tabular([str(a), str(b), str(c)], 64, start_index=10))
    assert [x.index for x in batches] == list(range(10, 10 + len(batches)))
    for path, n in [(a, 30), (b, 20), (c, 50)]:
        mine = [x for x in batches if x.path == str(path)]
        _assert_chained(mine, n)
    order = [x.path for x in batches]
    assert order == sorted(order, key=[str(a), str(b), str(c)].index)  # files kept in the given order


def test_plan_is_lazy(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.csv", _csv_rows(10))
    consumed: list[str] = []

    def paths():  # type: ignore[no-untyped-def]
        for p in [str(a), "never-opened.csv"]:
            consumed.append(p)
            yield p

    plan = plan_tabular(paths(), 10**6)
    assert isinstance(plan, types.GeneratorType) and consumed == []
    assert next(plan).row_end == 10
    assert consumed == [str(a)]


def test_fsspec_urls_and_descriptor_round_trip(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/tabular-test/m.csv", _csv_rows(25))
    try:
        batches = list(plan_tabular(["memory://tabular-test/m.csv"], 100))
        assert len(batches) > 1
        _assert_chained(batches, 25)
        restored = [from_json(to_json(b)) for b in batches]
        assert restored == batches
        got = pd.concat([read_batch(b) for b in restored])  # type: ignore[arg-type]
        pd.testing.assert_frame_equal(got, pd.read_csv(io.BytesIO(_csv_rows(25))))
    finally:
        fs.rm("/tabular-test", recursive=True)


def test_storage_options_are_keyed_by_protocol(tmp_path: Path) -> None:
    from fsspec import register_implementation
    from fsspec.implementations.memory import MemoryFileSystem

    class RecordingFS(MemoryFileSystem):
        protocol = "prtabtest"
        cachable = False
        seen: list[dict] = []

        def __init__(self, *args: object, **kwargs: object) -> None:
            RecordingFS.seen.append(kwargs)
            super().__init__(*args, **kwargs)

        @classmethod
        def _strip_protocol(cls, path: str) -> str:
            return MemoryFileSystem._strip_protocol(path.replace("prtabtest://", "memory://", 1))

    register_implementation("prtabtest", RecordingFS, clobber=True)
    RecordingFS().pipe("/prtabtest-dir/a.csv", _csv_rows(5))
    try:
        options = {"prtabtest": {"token": "t"}, "az": {"account_name": "other"}}
        [batch] = plan_tabular(["prtabtest://prtabtest-dir/a.csv"], 10**6, storage_options=options)
        assert read_batch(batch, options)["id"].tolist() == [0, 1, 2, 3, 4]
        assert RecordingFS.seen[1:] and all(kw == {"token": "t"} for kw in RecordingFS.seen[1:])
    finally:
        RecordingFS().rm("/prtabtest-dir", recursive=True)


@pytest.mark.parametrize("backend", [pytest.param("az", marks=pytest.mark.azure),
                                     pytest.param("s3", marks=pytest.mark.s3)])
def test_remote_byte_ranges(backend: str, request: pytest.FixtureRequest,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    if backend == "az":
        server = request.getfixturevalue("azurite")
        options = {"az": {"connection_string": server.connection_string}}
    else:
        server = request.getfixturevalue("moto_s3")
        options = {"s3": {"key": server.access_key_id, "secret": server.secret_access_key,
                          "endpoint_url": server.endpoint_url}}
    monkeypatch.setattr("parallelrun.data.text_split._CHUNK", 1000)  # several reads through the remote file
    fs = fsspec.filesystem(backend, **options[backend])
    bucket = f"tabular-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    data = b"id,text\n" + b"".join(b'%d,"multi\nline ""%d"""\n' % (i, i) for i in range(300))
    fs.pipe(f"{bucket}/q.csv", data)
    batches = list(plan_tabular([f"{backend}://{bucket}/q.csv"], 256, storage_options=options))
    assert len(batches) > 10
    _assert_chained(batches, 300)
    got = pd.concat([read_batch(b, options) for b in batches])
    pd.testing.assert_frame_equal(got, pd.read_csv(io.BytesIO(data)))


def test_read_batch_detects_changed_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", _csv_rows(20))
    batch = _plan(path, 50)[1]
    path.write_bytes(_csv_rows(20).replace(b"\n", b"\n\n1,2,3\n"))
    with pytest.raises(ValueError, match=r"a\.csv bytes \d+-\d+: parsed \d+ rows but \d+ were planned"):
        read_batch(batch)


def test_rows_longer_than_header_are_an_error_not_an_index(tmp_path: Path) -> None:
    path = _write(tmp_path, "wide.csv", b"a,b\n1,2,3\n4,5,6\n")
    [batch] = _plan(path, 100)
    message = r"wide\.csv bytes 4-16 \(rows 0-1\): rows have more fields than the header"
    with pytest.raises(ValueError, match=message):
        read_batch(batch)


def test_read_batch_names_file_on_parse_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.jsonl", b'{"a": 1}\n{"a": \n')
    batches = _plan(path, 1)
    with pytest.raises(ValueError, match=r"cannot read .*bad\.jsonl bytes 9-16 \(rows 1-1\)"):
        read_batch(batches[1])


@pytest.mark.parametrize("options, message", [
    ({"sep": ";"}, "unknown tabular option"),
    ({"separator": ";;"}, "separator must be one ASCII character"),
    ({"separator": '"'}, "separator must be one ASCII character"),
    ({"header": "yes"}, "header must be true or false"),
    ({"encoding": "utf-16"}, "not ASCII-compatible"),
    ({"encoding": "no-such-codec"}, "unsupported encoding"),
])
def test_bad_options_are_rejected_at_call_time(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_tabular(["never-opened.csv"], 100, options=options)


# --- parse_size / infer_format --------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("1MB", 1024**2), ("10kb", 10240), ("2G", 2 * 1024**3), ("2GB", 2 * 1024**3), ("512", 512),
    (512, 512), ("512b", 512), ("512B", 512), (" 3m ", 3 * 1024**2), ("1K", 1024),
])
def test_parse_size(value: str | int, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["0", 0, "0MB", "1TB", "-1", -5, "1.5MB", "", "MB", "1 MB", "ten", True,
                                   None])
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ValueError, match=r"use a size such as '1MB' or '512KB'"):
        parse_size(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("path, fmt, expected", [
    ("a.csv", None, "csv"), ("dir/A.CSV", None, "csv"), ("a.tsv", None, "tsv"),
    ("a.parquet", None, "parquet"), ("a.pq", None, "parquet"),
    ("a.jsonl", None, "jsonl"), ("a.json", None, "jsonl"), ("a.ndjson", None, "jsonl"),
    ("abfs://c/x/part-0.parquet", None, "parquet"), ("https://h/x.csv?sig=abc", None, "csv"),
    ("a.txt", "csv", "csv"), ("a.dat", "JSON", "jsonl"), ("a", "jsonlines", "jsonl"),
    ("a", "ndjson", "jsonl"),
    ("a", "pq", "parquet"), ("a.csv", "tsv", "tsv"),
])
def test_infer_format(path: str, fmt: str | None, expected: str) -> None:
    assert infer_format(path, fmt) == expected


@pytest.mark.parametrize("path, fmt, message", [
    ("a.txt", None, r"cannot tell the format of 'a.txt'.*`format:` field.*csv, tsv, parquet, jsonl"),
    ("noext", None, r"`format:` field"),
    ("a.csv", "xml", r"unknown tabular format 'xml'.*`format:` field accepts csv, tsv, parquet, jsonl"),
    ("a.csv.gz", None, r"a\.csv\.gz: compressed files cannot be split"),
    ("a.jsonl.bz2", "jsonl", r"compressed files cannot be split"),
])
def test_infer_format_rejects(path: str, fmt: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        infer_format(path, fmt)
