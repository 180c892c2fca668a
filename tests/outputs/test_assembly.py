"""Final assembly: resumable after SIGKILL, parts consumed as they are appended, composition server-side."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from assembly_helpers import bytes_read_through, kill_during_assembly
from output_backends import Backend

from parallelrun.outputs import OutputLocation, PartRecord, default_file_name, format_result


def _write(loc: OutputLocation, fmt: str, batches: int, rows: int, workers: int = 3,
           segment_bytes: int | None = None) -> list[PartRecord]:
    writers = [loc.part_writer(worker=f"node0.process{w:03d}", fmt=fmt, layout="file") for w in range(workers)]
    if segment_bytes:
        for w in writers:
            w.segment_bytes = segment_bytes
            w.shared = False  # Parquet: a file per part, copied and consumed one by one (not made in place)
    records = []
    for b in range(batches):
        items = [f"{b:05d}-{i:03d}" for i in range(rows)]
        if fmt == "text":
            result = items
        else:
            import pandas as pd

            result = pd.DataFrame({"id": items})
        fr = format_result(result, action="append_row", fmt=fmt, batch_inputs=items)
        records.append(writers[b % workers].write(batch=b, attempt=1, result=fr))
    for w in writers:
        w.close()
    return records


def _rows(data: bytes, fmt: str) -> list[str]:
    if fmt == "text":
        return data.decode().splitlines()
    if fmt == "csv":
        lines = data.decode().splitlines()
        assert lines[0] == "id" and "id" not in lines[1:], "one header line, at the top"
        return lines[1:]
    return list(pq.read_table(io.BytesIO(data)).column("id").to_pylist())


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fmt", ["text", "csv", "parquet"])
def test_local_assembly_killed_then_resumed_has_every_row_once(tmp_path: Path, fmt: str) -> None:
    loc = OutputLocation.parse(str(tmp_path / "out"))
    records = _write(loc, fmt, batches=120, rows=20, segment_bytes=4096)
    parts = {r.name for r in records}
    total = sum(r.length for r in records)
    kill_during_assembly(tmp_path, loc, records, fmt, kill_after=70)

    out = Path(loc.url)
    left = {f".parts/{p.name}" for p in (out / ".parts").iterdir()}
    assembling = out / f".{default_file_name(fmt)}.assembling"
    # Parts were consumed as they were appended (Parquet too: its bodies are concatenated), so the disk
    # never held the parts and the file at once.
    assert left < parts and assembling.exists()
    held = sum((out / n).stat().st_size for n in left) + assembling.stat().st_size
    assert held <= total + 2 * 4096 * 3, (held, total)
    final = loc.assemble(records, file_name=default_file_name(fmt), fmt=fmt, state_dir=tmp_path / "state")
    want = [f"{b:05d}-{i:03d}" for b in range(120) for i in range(20)]
    assert _rows(Path(final).read_bytes(), fmt) == want
    loc.cleanup(set())
    assert sorted(p.name for p in out.iterdir()) == [default_file_name(fmt)]
    assert list((tmp_path / "state").iterdir()) == []


@pytest.mark.slow  # ~9 s (parts over S3's 5 MB minimum); CI runs it (make test-slow)
@pytest.mark.timeout(300)
def test_s3_assembly_copies_big_parts_server_side_and_resumes_after_a_kill(tmp_path: Path,
                                                                           s3_backend: Backend) -> None:
    loc = s3_backend.location()
    # 2 parts of 5.5 MB (copied server-side: S3's minimum part is 5 MB), then 6 parts of 1 MB (grouped: read
    # and uploaded by helper processes as parts of 5 MB and 1 MB, never by the driver).
    records: list[PartRecord] = []
    w = loc.part_writer(worker="w", fmt="text", layout="file")
    for b in range(8):
        n = (11 * 1024 * 1024 // 2 if b < 2 else 1024 * 1024) // 13
        items = [f"{b:05d}-{i:06d}" for i in range(n)]
        records.append(w.write(batch=b, attempt=1,
                               result=format_result(items, action="append_row", fmt="text", batch_inputs=items)))
    assert records[0].length > 5 * 1024 * 1024 > records[2].length
    kill_during_assembly(tmp_path, loc, records, "text", kill_after=2)  # after the two copies
    assert len(list((tmp_path / "state").glob("s3-assembly-*.json"))) == 1  # resumed below, same upload

    with bytes_read_through(loc.store.fs) as read:  # type: ignore[union-attr]
        final = loc.assemble(records, file_name=default_file_name("text"), fmt="text", state_dir=tmp_path / "state")
    assert final == loc.join(default_file_name("text"))
    assert read["bytes"] == 0, "a part's bytes came through the driver"
    lines = s3_backend.read(loc, default_file_name("text")).decode().splitlines()
    assert lines == [f"{b:05d}-{i:06d}" for b, r in enumerate(records) for i in range(r.rows)]
    assert s3_backend.names(loc) == [default_file_name("text")]
    assert list((tmp_path / "state").iterdir()) == []


@pytest.mark.timeout(120)
def test_azure_one_file_output_is_a_block_list_of_the_workers_staged_blocks(tmp_path: Path,
                                                                            azure_backend: Backend) -> None:
    from parallelrun.outputs._compose import AzureBlocks

    loc = azure_backend.location()
    records = _write(loc, "csv", batches=7, rows=5)
    blocks = AzureBlocks(loc.store, default_file_name("csv"))  # type: ignore[arg-type]
    assert len(blocks.sizes()) == 14  # header + rows per batch, staged by the workers, nothing committed
    assert azure_backend.names(loc) == []  # not visible before the commit
    final = loc.assemble(records, file_name=default_file_name("csv"), fmt="csv", state_dir=tmp_path / "s")
    committed, uncommitted = blocks._run("get_block_list", "all")
    assert len(committed) == 8 and uncommitted == []  # one header block, then each batch's rows
    assert final == loc.join(default_file_name("csv"))
    rows = _rows(azure_backend.read(loc, default_file_name("csv")), "csv")
    assert rows == [f"{b:05d}-{i:03d}" for b in range(7) for i in range(5)]


@pytest.mark.timeout(60)
def test_a_dataset_assembly_replaces_an_earlier_runs_parts_and_streams_its_manifest(tmp_path: Path) -> None:
    """Parts an earlier run left in the folder and this run does not name are removed (a merge of the sorted
    listing with this run's sorted names); the manifest is written as it is listed, then renamed whole."""
    loc = OutputLocation.parse(str(tmp_path / "out"))
    out = Path(loc.url)
    out.mkdir()
    for stale in ("part-00000001.p00000.csv", "part-00000007.csv", "part-00099999.csv"):
        (out / stale).write_text("old\n")
    (out / "notes.txt").write_text("the user's")  # not a part: kept
    records = [r for r in _write(loc, "csv", batches=6, rows=4) if r.batch != 3]  # batch 3 wrote nothing
    loc.assemble(records, file_name="x.csv", fmt="csv", layout="dataset", state_dir=tmp_path / "state")
    manifest = json.loads((out / "_manifest.json").read_text())
    names = [f"part-{b:08d}.csv" for b in (0, 1, 2, 4, 5)]
    assert [p["name"] for p in manifest["parts"]] == names and manifest["rows"] == 20
    assert manifest["format"] == "csv" and manifest["layout"] == "dataset"
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(["_manifest.json", "notes.txt", *names])
    assert [(out / n).read_text().splitlines()[1] for n in names] == [f"{b:05d}-000" for b in (0, 1, 2, 4, 5)]
