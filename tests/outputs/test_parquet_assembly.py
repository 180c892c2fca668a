"""One Parquet file from the parts by byte concatenation: the footer codec, the merged file as pyarrow reads
it, the fallback to re-encoding, kill -9 and resume, peak disk, and composition on Azurite and moto's S3."""

from __future__ import annotations

import io
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from assembly_helpers import bytes_read_through, kill_during_assembly
from output_backends import Backend

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from engine_helpers import journal_count  # noqa: E402

from parallelrun.outputs import (
    FormattedResult,
    OutputLocation,
    PartCorruptedError,
    PartRecord,
    _parquet_concat,
    _parquet_inplace,
    _parquet_scan,
    default_file_name,
)
from parallelrun.outputs import _parquet_footer as footer
from parallelrun.outputs._records import checksum_of, part_name

FILE = default_file_name("parquet")


def _host() -> str:
    import socket

    return "".join(c if c.isalnum() or c in "._-" else "_" for c in socket.gethostname())


def _parquet(table: pa.Table, **options: Any) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return sink.getvalue()


def _footer_bytes(data: bytes) -> bytes:
    n = int.from_bytes(data[-8:-4], "little")
    return data[-8 - n:-8]


def _table(b: int, rows: int, kind: str) -> pa.Table:
    """Batch ``b``'s rows; every kind keeps one schema across batches (ids say batch and row)."""
    ids = [f"{b:05d}-{i:04d}" for i in range(rows)]
    if kind == "embeddings":
        vec = pa.array([[float(b + i / 7)] * 16 for i in range(rows)], pa.list_(pa.float32()))
        return pa.table({"id": ids, "embedding": vec})
    if kind == "nulls":
        return pa.table({"id": ids, "score": pa.array([None if i % 3 == 0 else i * 0.5 for i in range(rows)],
                                                      pa.float64()),
                         "label": pa.array([None if i % 4 == 0 else f"l{i % 5}" for i in range(rows)], pa.string())})
    if kind == "dictionary":
        return pa.table({"id": ids, "cls": pa.array([f"class-{i % 3}" for i in range(rows)]).dictionary_encode(),
                         "n": pa.array([i % 7 for i in range(rows)], pa.int16()), "ok": [i % 2 == 0 for i in range(rows)]})
    raise AssertionError(kind)


TABLES: list[tuple[str, dict[str, Any]]] = [
    ("embeddings", {"use_dictionary": ["id"]}),  # what format_result writes for float results
    ("nulls", {"row_group_size": 7}),  # many row groups per part
    ("dictionary", {"compression": "zstd", "write_statistics": True}),
]


def _put_parts(loc: OutputLocation, kind: str, options: dict[str, Any], batches: int, rows: int,
               shared: bool = True, order: list[int] | None = None) -> list[PartRecord]:
    """``shared``: appended to the host's shared file (what workers do on local disk), else a file per part
    (what a part too big for one append, or another host's part, is)."""
    w = loc.part_writer(worker="w", fmt="parquet", layout="file")
    w.shared = w.shared and shared
    out = []
    for b in order or range(batches):
        data = _parquet(_table(b, rows, kind), **options)
        out.append(w.write(batch=b, attempt=1, result=FormattedResult(succeeded=rows, payload=data, missing=[],
                                                                      rows=rows)))
    w.close()
    return out


def _part(loc: OutputLocation, rec: PartRecord) -> pq.ParquetFile:
    """A committed part, read alone (a part may lie inside a shared file)."""
    return pq.ParquetFile(io.BytesIO(loc.store.read(rec.name, rec.offset, rec.length)))


@pytest.mark.parametrize("kind,options", TABLES)
def test_footer_codec_writes_back_what_it_read(kind: str, options: dict[str, Any]) -> None:
    table = _table(3, 40, kind).replace_schema_metadata({"origin": "test", "k": "v" * 300})
    for extra in ({}, {"row_group_size": 5}, {"write_statistics": False}):
        raw = _footer_bytes(_parquet(table, **{**options, **extra}))
        tree = footer.decode(raw)
        assert footer.encode(tree) == raw
        assert footer.get(tree, footer.FMD_NUM_ROWS) == 40


def test_footer_codec_handles_every_compact_type() -> None:
    """Types pyarrow's footers do not use (maps, sets, doubles, i8, bools in a list, big ids and lists)."""
    tree = {1: (footer.I8, -5), 2: (footer.I16, -300), 3: (footer.I32, 2**31 - 1), 4: (footer.I64, -(2**63)),
            5: (footer.DOUBLE, 0.1), 6: (footer.TRUE, False), 7: (footer.BINARY, b"\x00" * 200),
            30: (footer.SET, footer.TList(footer.I32, [1, 2, 3])),
            31: (footer.LIST, footer.TList(footer.TRUE, [True, False, True] * 7)),
            32: (footer.MAP, footer.TMap(footer.BINARY, footer.STRUCT, [(b"k", {1: (footer.I64, 7)})])),
            33: (footer.MAP, footer.TMap(0, 0)), 34: (footer.STRUCT, {})}
    data = footer.encode(tree)
    assert footer.decode(data) == tree
    assert footer.encode(footer.decode(data)) == data


def test_footer_codec_refuses_truncated_bytes() -> None:
    raw = _footer_bytes(_parquet(_table(0, 10, "nulls")))
    with pytest.raises(footer.FooterError):
        footer.decode(raw[:-5])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shared", [True, False], ids=["in-place", "copied"])
@pytest.mark.parametrize("kind,options", TABLES)
def test_concatenated_file_reads_as_the_parts_in_order(tmp_path: Path, kind: str, options: dict[str, Any],
                                                       shared: bool, caplog: pytest.LogCaptureFixture) -> None:
    loc = OutputLocation.parse(str(tmp_path / "out"))
    # Written out of order, as workers finish (in place, the parts lie in the file in that order).
    records = _put_parts(loc, kind, options, batches=9, rows=23, shared=shared, order=[4, 0, 8, 1, 2, 7, 3, 6, 5])
    records.sort(key=lambda r: r.batch)
    names = {r.name for r in records}
    assert names == {f".parts/shared-{_host()}.parquet"} if shared else len(names) == 9
    parts = [_part(loc, r).read() for r in records]
    groups = sum(_part(loc, r).num_row_groups for r in records)
    groups_before = [(pf.read_row_group(g), [(md.column(c).statistics, md.column(c).num_values)
                                             for c in range(md.num_columns)])
                     for pf in (_part(loc, r) for r in records) for g in range(pf.num_row_groups)
                     for md in [pf.metadata.row_group(g)]]
    with caplog.at_level(logging.INFO):
        out = loc.assemble(records, file_name=FILE, fmt="parquet", state_dir=tmp_path / "state")
    assert "re-encoding" not in caplog.text  # joined as bytes, not the fallback
    whole = pq.ParquetFile(out)
    assert whole.metadata.num_rows == 9 * 23
    assert whole.metadata.num_row_groups == groups
    assert pq.read_table(out).equals(pa.concat_tables(parts))
    # Each row group on its own (its offsets, not a neighbour's), with the part's statistics.
    for i, (table, stats) in enumerate(groups_before):
        assert whole.read_row_group(i).equals(table)
        got = whole.metadata.row_group(i)
        assert [(got.column(c).statistics, got.column(c).num_values) for c in range(got.num_columns)] == stats
    # Statistics were moved with their row groups: a filtered read finds exactly the matching rows.
    wanted = [f"{b:05d}-{i:04d}" for b in range(9) for i in range(23)]
    assert pq.read_table(out, filters=[("id", ">=", "00004-0000")]).column("id").to_pylist() == wanted[4 * 23:]
    assert sorted(p.name for p in Path(loc.url).rglob("*") if p.is_file()) == [FILE]
    assert list((tmp_path / "state").iterdir()) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("why", ["schema", "page_index"])
def test_parts_that_cannot_be_joined_are_re_encoded_and_the_log_says_why(
        tmp_path: Path, why: str, caplog: pytest.LogCaptureFixture) -> None:
    loc = OutputLocation.parse(str(tmp_path / "out"))
    records = _put_parts(loc, "nulls", {}, batches=4, rows=10)
    # Batch 2: its label column is all null, so pyarrow types it 'null' (another Parquet schema); or a part
    # written with a page index, whose page offsets a footer rewrite cannot move.
    # That part is committed as a file of its own (the others lie in the shared file: the re-encoding reads
    # each part alone from both).
    t = _table(2, 10, "nulls")
    if why == "schema":
        t = t.set_column(2, "label", pa.nulls(10))
        data = _parquet(t)
    else:
        data = _parquet(t, write_page_index=True)
    name = part_name(2, 2, "parquet")
    loc.store.put(name, data)
    records[2] = PartRecord(batch=2, name=name, offset=0, length=len(data), rows=10,
                            checksum=checksum_of(data))
    with caplog.at_level(logging.INFO):
        out = loc.assemble(records, file_name=FILE, fmt="parquet", state_dir=tmp_path / "state")
    assert "re-encoding" in caplog.text
    assert ("schema differs" if why == "schema" else "page index") in caplog.text
    assert pq.read_table(out).column("id").to_pylist() == [f"{b:05d}-{i:04d}" for b in range(4) for i in range(10)]


def _disk(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.mark.timeout(60)
def test_in_place_the_disk_holds_the_shared_file_and_a_footer_and_no_part_is_copied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loc = OutputLocation.parse(str(tmp_path / "out"))
    records = _put_parts(loc, "embeddings", {"use_dictionary": ["id"]}, batches=30, rows=400)
    shared = loc.store.path(records[0].name)  # type: ignore[union-attr]
    size = shared.stat().st_size
    peak = {"bytes": _disk(tmp_path)}
    monkeypatch.setattr(_parquet_inplace, "checkpoint",
                        lambda step: peak.update(bytes=max(peak["bytes"], _disk(tmp_path))))
    monkeypatch.setattr(_parquet_concat, "copy_body", lambda *a, **k: pytest.fail("a part was copied"))
    out = Path(loc.assemble(records, file_name=FILE, fmt="parquet", state_dir=tmp_path / "state"))
    footer_len = out.stat().st_size - size
    assert 0 < footer_len < size / 10
    assert peak["bytes"] <= size + 2 * footer_len + 4096, (peak, size, footer_len)  # file, footer, its saved copy
    assert pq.read_table(out).column("id").to_pylist() == [f"{b:05d}-{i:04d}" for b in range(30) for i in range(400)]
    assert sorted(p.name for p in Path(loc.url).rglob("*") if p.is_file()) == [FILE]


@pytest.mark.timeout(60)
def test_peak_disk_is_the_output_plus_one_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loc = OutputLocation.parse(str(tmp_path / "out"))
    records = _put_parts(loc, "embeddings", {}, batches=30, rows=400, shared=False)
    peak = {"bytes": 0}
    real = _parquet_concat.copy_body

    def measured(*a: Any, **k: Any) -> int:
        peak["bytes"] = max(peak["bytes"], _disk(tmp_path))
        n = real(*a, **k)
        peak["bytes"] = max(peak["bytes"], _disk(tmp_path))
        return n

    monkeypatch.setattr(_parquet_concat, "copy_body", measured)
    monkeypatch.setattr(_parquet_concat, "SAVE_BYTES", 20_000)  # 16 MB in real runs: these parts are small
    out = loc.assemble(records, file_name=FILE, fmt="parquet", state_dir=tmp_path / "state")
    size = Path(out).stat().st_size
    parts = sum(r.length for r in records)
    # The disk holds the parts when assembly starts; from then on each body moves from a part into the file,
    # and the part goes: never the parts and the file at once (re-encoding kept both: parts + size), only
    # the parts copied since the last save (SAVE_BYTES), removed at the next one. Slack: state, footer.
    biggest = max(r.length for r in records)
    assert peak["bytes"] <= parts + 20_000 + biggest + 16 * 1024, (peak["bytes"], parts, size)
    assert peak["bytes"] <= size + 20_000 + 2 * biggest + 16 * 1024, (peak["bytes"], parts, size)


@pytest.mark.timeout(240)
def test_killed_concatenation_resumes_with_every_row_once_in_order(tmp_path: Path) -> None:
    loc = OutputLocation.parse(str(tmp_path / "out"))
    records = _put_parts(loc, "nulls", {"row_group_size": 9}, batches=40, rows=20, shared=False)
    want = pa.concat_tables([pq.read_table(loc.store.path(r.name)) for r in records])  # type: ignore[union-attr]
    rng = random.Random(9)
    done = rng.randrange(1, 39)
    # Killed before the first copy, then mid-way, then (resuming from there) at a random later copy.
    for kill_after in (0, done, rng.randrange(0, 40 - done)):
        kill_during_assembly(tmp_path, loc, records, "parquet", kill_after=kill_after)
    final = loc.assemble(records, file_name=FILE, fmt="parquet", state_dir=tmp_path / "state")
    assert pq.read_table(final).equals(want)
    loc.cleanup(set())
    assert sorted(p.name for p in Path(loc.url).iterdir()) == [FILE]
    assert list((tmp_path / "state").iterdir()) == []


@pytest.mark.slow  # ~4 s; CI runs it (make test-slow)
@pytest.mark.timeout(240)
def test_s3_parquet_is_composed_server_side_and_resumes_after_a_kill(tmp_path: Path, s3_backend: Backend) -> None:
    loc = s3_backend.location()
    # Two parts over S3's 5 MB minimum part (copied server-side), then small ones (grouped by helper processes).
    w = loc.part_writer(worker="w", fmt="parquet", layout="file")
    records, tables = [], []
    for b in range(6):
        rows = 1400 if b < 2 else 30
        noise = random.Random(b)  # 4 KB that no codec shrinks: 1,400 rows make 5.7 MB
        t = pa.table({"id": [f"{b:05d}-{i:06d}" for i in range(rows)],
                      "blob": pa.array([noise.randbytes(4096) for _ in range(rows)], pa.binary())})
        data = _parquet(t, compression="none", use_dictionary=False)
        records.append(w.write(batch=b, attempt=1, result=FormattedResult(rows, data, [], rows)))
        tables.append(t)
    assert records[0].length > 5 * 1024 * 1024 > records[2].length
    kill_during_assembly(tmp_path, loc, records, "parquet", kill_after=1)
    with bytes_read_through(loc.store.fs) as read:  # type: ignore[union-attr]
        final = loc.assemble(records, file_name=FILE, fmt="parquet", state_dir=tmp_path / "state")
    assert final == loc.join(FILE)
    assert read["bytes"] < 6 * 1024 * 1024 < records[0].length + records[1].length  # big parts never came through
    assert pq.read_table(io.BytesIO(s3_backend.read(loc, FILE))).equals(pa.concat_tables(tables))
    assert s3_backend.names(loc) == [FILE]


@pytest.mark.timeout(120)
def test_azure_parquet_is_a_block_list_of_the_parts_bodies(tmp_path: Path, azure_backend: Backend,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    from parallelrun.outputs._compose import AzureBlocks

    loc = azure_backend.location()
    records = _put_parts(loc, "dictionary", {}, batches=5, rows=50)
    tables = [pq.read_table(io.BytesIO(azure_backend.read(loc, r.name))) for r in records]
    store: Any = loc.store
    real_remove, removed = store.remove, []

    def remove_then_die(name: str) -> None:  # the driver dies while removing the parts, after the commit
        if removed:
            raise KeyboardInterrupt
        removed.append(name)
        real_remove(name)

    store.remove = remove_then_die
    with caplog.at_level(logging.INFO), pytest.raises(KeyboardInterrupt):
        loc.assemble(records, file_name=FILE, fmt="parquet", state_dir=tmp_path / "s")
    store.remove = real_remove
    final = loc.assemble(records, file_name=FILE, fmt="parquet", state_dir=tmp_path / "s")  # finishes
    assert final == loc.join(FILE)
    # Azurite has no "Put Block From URL": helper processes stage the bodies, and the log says so (Azure copies them).
    assert "cannot copy blocks from a URL" in caplog.text and "re-encoding" not in caplog.text
    committed, _ = AzureBlocks(loc.store, FILE)._run("get_block_list", "all")  # type: ignore[arg-type]
    assert len(committed) == 5 + 1  # each part's body (the first with its PAR1), then the merged footer
    assert pq.read_table(io.BytesIO(azure_backend.read(loc, FILE))).equals(pa.concat_tables(tables))
    assert azure_backend.names(loc) == [FILE]


NOTE_SCRIPT = """
import os
import pandas as pd
def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    # The mini-batch holding f004.txt has no note at all: pandas gives an all-None column, typed null.
    notes = [None if "f004.txt" in names or "f005.txt" in names else f"note {n}" for n in names]
    return pd.DataFrame({"file": names, "note": notes if {NULLS} else [f"note {n}" for n in names]})
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("nulls", [False, True])
def test_a_job_writes_one_parquet_file_and_the_driver_log_says_how(tmp_path: Path, nulls: bool) -> None:
    (tmp_path / "data").mkdir()
    for i in range(12):
        (tmp_path / "data" / f"f{i:03d}.txt").write_text(f"{i}\n")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "entry.py").write_text(NOTE_SCRIPT.replace("{NULLS}", str(nulls)))
    (tmp_path / "job.yml").write_text(yaml.safe_dump({
        "name": "pq-job", "entry_script": "entry.py", "source_directory": "scripts",
        "inputs": [{"type": "file", "path": "data"}], "output": "out", "mini_batch_size": 2,
        "process_count_per_node": 2, "append_row_format": "parquet"}))
    res = subprocess.run([sys.executable, "-m", "parallelrun", "run", "job.yml", "--workspace", "ws", "--quiet"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=100, env=dict(os.environ))
    assert res.returncode == 0, res.stderr
    table = pq.read_table(tmp_path / "out" / FILE)
    assert table.column("file").to_pylist() == [f"f{i:03d}.txt" for i in range(12)]
    (run,) = (tmp_path / "ws" / "runs").iterdir()
    log = (run / "logs" / "sys" / "driver.txt").read_text()
    if nulls:
        # Only mini-batch 2's part (f004, f005: no note at all) is re-encoded, to the first part's schema.
        assert "re-encoding every row group" not in log, log
        assert "mini-batch 2's Parquet schema differs from mini-batch 0's" in log and "re-encoded" in log, log
        assert table.column("note").to_pylist()[4:6] == [None, None]
        assert table.column("note").to_pylist()[:4] == [f"note f{i:03d}.txt" for i in range(4)]
        assert not pa.types.is_null(table.schema.field("note").type)
    else:
        assert "re-encoding" not in log, log
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [FILE]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("layout", ["file", "dataset"])
def test_records_are_read_per_pass_from_a_source_never_held(tmp_path: Path, layout: str) -> None:
    """What the runner passes (``Journal.iter_parts``): a function called once per pass. Batch 1 was split to
    isolate a failure (two pieces, two records) and batch 3 wrote no rows (a record of length 0)."""
    loc = OutputLocation.parse(str(tmp_path / "out"))
    w = loc.part_writer(worker="w", fmt="parquet", layout=layout)
    records = []
    for b, attempt in [(0, 1), (1, 1), (1, 2), (2, 1), (3, 1), (4, 1)]:
        t = _table(b * 10 + attempt, 0 if b == 3 else 5, "dictionary")
        fr = FormattedResult(5, _parquet(t) if t.num_rows else None, [], t.num_rows)
        records.append(w.write(batch=b, attempt=attempt, result=fr))
    calls = {"n": 0}

    def source() -> Any:
        calls["n"] += 1
        return iter(records)

    out = loc.assemble(source, file_name=FILE, fmt="parquet", layout=layout, state_dir=tmp_path / "state")
    assert calls["n"] > 1
    want = [f"{b * 10 + a:05d}-{i:04d}" for b, a in [(0, 1), (1, 1), (1, 2), (2, 1), (4, 1)] for i in range(5)]
    if layout == "file":
        assert pq.read_table(out).column("id").to_pylist() == want
    else:
        assert sorted(p.name for p in Path(out).glob("part-*")) == [
            "part-00000000.parquet", "part-00000001.p00000.parquet", "part-00000001.p00001.parquet",
            "part-00000002.parquet", "part-00000004.parquet"]
        assert pq.read_table(out, ignore_prefixes=["_", "."]).column("id").to_pylist() == want


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kills", [[0, 0, 0], [3]], ids=["each-step-in-turn", "after-the-rename"])
def test_in_place_assembly_killed_at_each_step_resumes_with_every_row_once(tmp_path: Path, kills: list[int]) -> None:
    loc = OutputLocation.parse(str(tmp_path / "out"))
    records = _put_parts(loc, "nulls", {"row_group_size": 9}, batches=12, rows=20, order=list(range(11, -1, -1)))
    records.sort(key=lambda r: r.batch)
    want = pa.concat_tables([_part(loc, r).read() for r in records])
    # [0, 0, 0]: killed after planning; the resume killed after appending the footer; the next after saving
    # "renamed", before the rename. [3]: killed after the rename, before the state is removed.
    for k in kills:
        kill_during_assembly(tmp_path, loc, records, "parquet", kill_after=k)
    final = loc.assemble(records, file_name=FILE, fmt="parquet", state_dir=tmp_path / "state")
    assert pq.read_table(final).equals(want)
    # One footer at the end: a footer appended by a killed step was cut off before the next was appended.
    assert pq.ParquetFile(final).metadata.num_row_groups == sum(_part_groups(want_rows=20, size=9) for _ in records)
    loc.cleanup(set())
    assert sorted(p.name for p in Path(loc.url).iterdir()) == [FILE]
    assert list((tmp_path / "state").iterdir()) == []


def _part_groups(want_rows: int, size: int) -> int:
    return -(-want_rows // size)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("what", ["overwritten", "truncated"])
def test_in_place_a_part_changed_on_disk_after_its_commit_fails_the_assembly_and_nothing_is_lost(
        tmp_path: Path, what: str) -> None:
    loc = OutputLocation.parse(str(tmp_path / "out"))
    records = _put_parts(loc, "dictionary", {}, batches=6, rows=30)
    shared = loc.store.path(records[0].name)  # type: ignore[union-attr]
    bad = records[3]
    with open(shared, "r+b") as f:
        if what == "overwritten":  # one byte in the middle of batch 3's body: only its checksum can tell
            f.seek(bad.offset + bad.length // 2)
            b = f.read(1)
            f.seek(bad.offset + bad.length // 2)
            f.write(bytes([b[0] ^ 0xFF]))
        else:
            f.truncate(records[-1].offset + records[-1].length - 1)
    before = shared.read_bytes()
    with pytest.raises(PartCorruptedError, match=f"mini-batch {5 if what == 'truncated' else 3} .*"):
        loc.assemble(records, file_name=FILE, fmt="parquet", state_dir=tmp_path / "state")
    assert shared.read_bytes() == before  # nothing appended, nothing renamed: the committed parts are all there
    assert not (Path(loc.url) / FILE).exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind,options", TABLES)
def test_footer_scan_shifts_row_groups_as_the_tree_codec_does(kind: str, options: dict[str, Any]) -> None:
    """The scan (used by the assembly) against the tree codec: same row groups, same bytes once shifted, and
    an ordinal past an i16 dropped."""
    for extra in ({}, {"row_group_size": 5}, {"write_statistics": False}):
        raw = _footer_bytes(_parquet(_table(3, 40, kind), **{**options, **extra}))
        sc = _parquet_scan.scan(raw)
        tree = footer.decode(raw)
        assert sc.num_rows == 40 and sc.why is None
        rgs = footer.get(tree, footer.FMD_ROW_GROUPS).items
        assert len(rgs) == len(sc.row_groups)
        for i, (rg, span) in enumerate(zip(rgs, sc.row_groups, strict=True)):
            assert raw[span.start:span.end] == footer.encode(rg)
            for delta, ordinal in ((0, i), (10**12 + 7, 31_000 + i), (123, 2**15 + i)):
                want = footer.decode(footer.encode(rg))
                footer.shift_row_group(want, delta, ordinal)
                assert span.shifted(delta, ordinal) == footer.encode(want)
    with pytest.raises(footer.FooterError):
        _parquet_scan.scan(raw[:-5])
    assert "page index" in (_parquet_scan.scan(_footer_bytes(_parquet(_table(0, 10, "nulls"), write_page_index=True))).why
                            or "")


def _append_parts(url: str, worker: int, batches: int) -> list[str]:
    loc = OutputLocation.parse(url)
    w = loc.part_writer(worker=f"w{worker}", fmt="parquet", layout="file")
    out = []
    for b in range(worker, 2 * batches, 2):
        data = _parquet(_table(b, 300 + 37 * b, "embeddings"), use_dictionary=["id"])
        out.append(w.write(batch=b, attempt=1, result=FormattedResult(1, data, [], 300 + 37 * b)).to_json())
    w.close()
    return out


@pytest.mark.timeout(120)
def test_two_processes_appending_to_the_shared_file_never_interleave(tmp_path: Path) -> None:
    import multiprocessing as mp

    url = str(tmp_path / "out")
    with mp.get_context("spawn").Pool(2) as pool:
        got = pool.starmap(_append_parts, [(url, 0, 20), (url, 1, 20)])
    records = sorted((PartRecord.from_json(r) for rs in got for r in rs), key=lambda r: r.batch)
    loc = OutputLocation.parse(url)
    assert len({r.name for r in records}) == 1 and all(loc.verify(r) for r in records)
    spans = sorted((r.offset, r.offset + r.length) for r in records)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # no two parts overlap
    final = loc.assemble(records, file_name=FILE, fmt="parquet", state_dir=tmp_path / "state")
    assert pq.read_table(final).column("id").to_pylist() == [
        f"{b:05d}-{i:04d}" for b in range(40) for i in range(300 + 37 * b)]


def test_parts_share_a_file_only_where_appends_never_interleave(tmp_path: Path) -> None:
    from parallelrun.outputs._writer import appends_are_atomic

    assert not appends_are_atomic("/proc/self")  # procfs: not a file system for data
    local = appends_are_atomic(str(tmp_path))
    assert OutputLocation.parse(str(tmp_path)).part_writer(worker="w", fmt="parquet", layout="file").shared == local
    for fmt, layout in (("parquet", "dataset"), ("text", "file")):
        assert not OutputLocation.parse(str(tmp_path)).part_writer(worker="w", fmt=fmt, layout=layout).shared


SLOW_ROWS_SCRIPT = """
import os, time
import pandas as pd
def run(mini_batch):
    time.sleep(0.1)
    names = [os.path.basename(p) for p in mini_batch]
    return pd.DataFrame({"file": names, "pad": ["x" * 20_000 for _ in names]})
"""


@pytest.mark.slow  # ~8 s; CI runs it (make test-slow)
@pytest.mark.timeout(300)
def test_a_parquet_job_whose_driver_and_workers_are_killed_resumes_with_every_row_once(tmp_path: Path) -> None:
    """kill -9 of the driver and its workers (maybe in the middle of an append to the shared file), twice at
    random moments, then resume: one file, every input once, in order, no part left."""
    import psutil

    n = 30
    (tmp_path / "data").mkdir()
    for i in range(n):
        (tmp_path / "data" / f"f{i:03d}.txt").write_text(f"{i}\n")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "entry.py").write_text(SLOW_ROWS_SCRIPT)
    (tmp_path / "job.yml").write_text(yaml.safe_dump({
        "name": "pq-kill", "entry_script": "entry.py", "source_directory": "scripts",
        "inputs": [{"type": "file", "path": "data"}], "output": "out", "mini_batch_size": 2,
        "process_count_per_node": 2, "append_row_format": "parquet"}))
    ws = tmp_path / "ws"
    rnd = random.Random(13)
    cmd = [sys.executable, "-m", "parallelrun", "run", "job.yml", "--workspace", str(ws), "--quiet"]
    for at_least in (3, 7):
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while journal_count(ws) < at_least and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rnd.uniform(0.0, 0.3))
        assert proc.poll() is None, "the job finished before it could be killed"
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for p in procs:
            p.kill()
        psutil.wait_procs(procs, timeout=15)
        (run,) = (ws / "runs").iterdir()
        cmd = [sys.executable, "-m", "parallelrun", "resume", run.name, "--workspace", str(ws), "--quiet"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=200)
    assert res.returncode == 0, res.stderr
    table = pq.read_table(tmp_path / "out" / FILE)
    assert table.column("file").to_pylist() == [f"f{i:03d}.txt" for i in range(n)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [FILE]
