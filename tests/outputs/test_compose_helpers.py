"""Object-store composition never reads a part's bytes in the driver: S3 parts under 5 MB and Azure bodies
that the service cannot copy from a URL are moved by helper processes (``_offload``).

What is measured is what the issue promises: the bytes the driver process itself received and sent, through
a counting proxy in front of the store that attributes each connection to the process holding its socket.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from assembly_helpers import kill_during_assembly
from output_backends import Backend

from parallelrun.errors import OutputError
from parallelrun.outputs import FormattedResult, OutputLocation, PartRecord, default_file_name, format_result
from parallelrun.outputs._compose_s3 import S3_MIN_PART, plan_pieces
from parallelrun.outputs._offload import Helpers
from store_proxy import CountingProxy

MB = 1024 * 1024
FILE = default_file_name("text")  # the name the killed assembly used: its state file is found by it
LINE = 100  # bytes per row of a text part (99 characters and the newline)
# Parts in batch order, in MB: small runs before, between and after parts over S3's 5 MB minimum, and
# small parts that alone make more than one 5 MB run.
SIZES = [1, 1, 1, 6, *[0.5] * 12, 5.5, 2, 1, 0.3]


def _rows(b: int, n: int) -> list[str]:
    return [f"{b:05d}-{i:06d}".ljust(LINE - 1, "x") for i in range(n)]


def _write_text(loc: OutputLocation, sizes: list[float]) -> tuple[list[PartRecord], list[str]]:
    w = loc.part_writer(worker="node0.process000", fmt="text", layout="file")
    records, want = [], []
    for b, mb in enumerate(sizes):
        rows = _rows(b, int(mb * MB) // LINE)
        records.append(w.write(batch=b, attempt=1,
                               result=format_result(rows, action="append_row", fmt="text", batch_inputs=rows)))
        want += rows
    w.close()
    return records, want


@pytest.fixture
def proxied(s3_backend: Backend, moto_s3: Any) -> Iterator[tuple[OutputLocation, CountingProxy]]:
    """The same S3 location, reached through a counting proxy."""
    proxy = CountingProxy(int(urlparse(moto_s3.endpoint_url).port or 0))
    opts = json.loads(json.dumps(s3_backend.storage_options))
    opts["client_kwargs"]["endpoint_url"] = f"http://127.0.0.1:{proxy.port}"
    try:
        yield OutputLocation.parse(s3_backend.url, storage_options=opts), proxy
    finally:
        proxy.close()


def test_plan_groups_consecutive_small_ranges_into_runs_of_the_minimum() -> None:
    """Pure: copies for ranges big enough alone, runs of at least ``min_size`` (but the last) of the others,
    in order, none over ``min_size`` (a helper's memory)."""
    sizes = [1, 1, 1, 6, 2, 2, 2, 2, 9, 1]
    ranges = [(f"p{i}", 10, n) for i, n in enumerate(sizes)]
    pieces = list(plan_pieces(ranges, min_size=5, max_copy=100))
    got = [(p.copy, [(s, o, n) for s, o, n in p.ranges]) for p in pieces]
    assert got == [
        (False, [("p0", 10, 1), ("p1", 10, 1), ("p2", 10, 1), ("p3", 10, 2)]),
        (False, [("p3", 12, 4), ("p4", 10, 1)]),
        (False, [("p4", 11, 1), ("p5", 10, 2), ("p6", 10, 2)]),
        (False, [("p7", 10, 2), ("p8", 10, 3)]),
        (True, [("p8", 13, 6)]),
        (False, [("p9", 10, 1)]),
    ]
    assert [p.copy for p in plan_pieces([("a", 0, 7), ("b", 0, 1)], min_size=5)] == [True, False]
    # Every byte once, in order; every piece but the last at least min_size and no group over it.
    flat = [(s, int(o) + k) for p in pieces for s, o, n in p.ranges for k in range(n)]
    assert flat == [(f"p{i}", 10 + k) for i, n in enumerate(sizes) for k in range(n)]
    assert all(5 <= sum(n for _, _, n in p.ranges) for p in pieces[:-1])
    assert all(sum(n for _, _, n in p.ranges) <= 5 for p in pieces if not p.copy)


@pytest.mark.s3
@pytest.mark.timeout(240)
def test_s3_small_parts_are_uploaded_by_helpers_and_never_reach_the_driver(
        tmp_path: Path, s3_backend: Backend, proxied: tuple[OutputLocation, CountingProxy]) -> None:
    loc, proxy = proxied
    records, want = _write_text(s3_backend.location(), SIZES)
    small = sum(r.length for r in records if r.length < S3_MIN_PART)
    final = loc.assemble(records, file_name="rows.txt", fmt="text", state_dir=tmp_path / "state")
    down, up = proxy.moved_by(os.getpid())
    _, helpers_up = proxy.moved_by_others(os.getpid())
    print(f"\n{len(records)} parts ({small} bytes in parts < 5 MB): the driver received {down} bytes, sent "
          f"{up}; the helpers sent {helpers_up}")
    assert proxy.opened_by(os.getpid()) >= 1, "the driver's own connections were not seen: the check is blind"
    assert down < 64 * 1024 and up < 64 * 1024, (down, up)  # the multipart calls only
    assert helpers_up >= small
    assert s3_backend.read(loc, "rows.txt").decode().splitlines() == want
    assert final == loc.join("rows.txt") and s3_backend.names(loc) == ["rows.txt"]
    assert list((tmp_path / "state").iterdir()) == []


def _gone(pids: list[int], seconds: float) -> list[int]:
    """The pids still alive after waiting up to ``seconds`` for them to exit (polled, bounded)."""
    deadline = time.monotonic() + seconds
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists()
                 and Path(f"/proc/{p}/stat").read_text().split(")")[-1].split()[0] != "Z"]
        if alive:
            time.sleep(0.1)
    return alive


@pytest.mark.s3
@pytest.mark.slow  # ~10 s of CPU (moto in this process, 30 MB of parts); test_assembly's S3 kill test is fast
@pytest.mark.timeout(300)
def test_s3_assembly_killed_while_helpers_upload_then_resumed(
        tmp_path: Path, s3_backend: Backend, proxied: tuple[OutputLocation, CountingProxy]) -> None:
    """kill -9 of the driver while its helpers hold tasks: they exit on their own, and the resumed assembly
    finishes the same upload, every row once, with no part's bytes through the driver."""
    loc, proxy = proxied
    records, want = _write_text(s3_backend.location(), SIZES)
    pids_file = tmp_path / "helpers.json"
    spec = {"pids_file": str(pids_file)}
    # SIZES make 4 runs of small parts and one copy (of the 5.5 MB part), in that order but for the last run:
    # killed at the copy, after three runs were handed to helpers (some may still be uploading theirs).
    kill_during_assembly(tmp_path, s3_backend.location(), records, "text", kill_after=3, extra=spec)
    helpers = json.loads(pids_file.read_text())
    assert helpers, "the driver was killed before it started a helper: the kill missed its moment"
    assert _gone(helpers, 60) == [], "helper processes outlived their killed driver"
    assert [p.name for p in (tmp_path / "state").iterdir()] == [f"s3-assembly-{FILE}.json"]  # to resume

    final = loc.assemble(records, file_name=FILE, fmt="text", state_dir=tmp_path / "state")
    down, up = proxy.moved_by(os.getpid())
    assert down < 64 * 1024 and up < 64 * 1024, (down, up)
    assert list((tmp_path / "state").iterdir()) == []
    assert s3_backend.read(loc, FILE).decode().splitlines() == want
    assert final == loc.join(FILE) and s3_backend.names(loc) == [FILE]


@pytest.mark.s3
@pytest.mark.timeout(120)
def test_s3_a_part_gone_before_assembly_fails_it_with_what_to_do(tmp_path: Path, s3_backend: Backend) -> None:
    loc = s3_backend.location()
    records, _ = _write_text(loc, [1, 1])
    loc.store.remove(records[1].name)
    with pytest.raises(OutputError) as err:
        loc.assemble(records, file_name="rows.txt", fmt="text", state_dir=tmp_path / "state")
    text = str(err.value)
    assert "assembly helper" in text and "FileNotFoundError" in text and "resume" in text, text


@pytest.mark.azure
@pytest.mark.timeout(180)
def test_azure_parquet_bodies_are_staged_by_helpers_not_the_driver(tmp_path: Path, azurite: Any) -> None:
    """Azurite has no "Put Block From URL": the bodies are read and staged by helpers; the driver reads only
    the parts' footers."""
    from azure.storage.blob import BlobServiceClient

    proxy = CountingProxy(int(urlparse(azurite.endpoint).port or 0))
    container = f"c{uuid.uuid4().hex[:12]}"
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container)
    direct = OutputLocation.parse(f"az://{container}/out",
                                  storage_options={"connection_string": azurite.connection_string})
    conn = azurite.connection_string.replace(azurite.endpoint,
                                             f"http://127.0.0.1:{proxy.port}/{azurite.account_name}")
    loc = OutputLocation.parse(f"az://{container}/out", storage_options={"connection_string": conn})
    w = direct.part_writer(worker="w", fmt="parquet", layout="file")
    records, tables = [], []
    for b in range(6):
        noise = random.Random(b)  # incompressible: 250 rows of 4 KB make ~1 MB a part
        t = pa.table({"id": [f"{b:05d}-{i:06d}" for i in range(250)],
                      "blob": pa.array([noise.randbytes(4096) for _ in range(250)], pa.binary())})
        sink = io.BytesIO()
        pq.write_table(t, sink, compression="none", use_dictionary=False)
        records.append(w.write(batch=b, attempt=1, result=FormattedResult(250, sink.getvalue(), [], 250)))
        tables.append(t)
    total = sum(r.length for r in records)
    try:
        final = loc.assemble(records, file_name="all.parquet", fmt="parquet", state_dir=tmp_path / "s")
        down, up = proxy.moved_by(os.getpid())
        _, helpers_up = proxy.moved_by_others(os.getpid())
    finally:
        proxy.close()
    print(f"\n{total} bytes of parts: the driver received {down}, sent {up}; the helpers sent {helpers_up}")
    assert down < 256 * 1024 and up < 256 * 1024, (down, up)  # footers, block lists, the merged footer
    assert helpers_up >= total - 256 * 1024
    with direct.store.open_read("all.parquet") as f:
        assert pq.read_table(f).equals(pa.concat_tables(tables))
    assert final == loc.join("all.parquet")


def test_helpers_return_results_and_report_failures_and_deaths() -> None:
    """The pool itself, with standard-library tasks: results by key; a task's error and a helper killed with
    -9 both raise ``OSError`` naming what happened; closing leaves no process behind."""
    with Helpers(2) as helpers:
        got = dict(kv for i in range(5) for kv in helpers.submit(i, pow, i, 2))
        got.update(helpers.drain())
        assert got == {i: i * i for i in range(5)} and len(helpers.pids) == 2
        for _ in helpers.submit("stat", os.stat, "/nonexistent/part"):
            pass
        with pytest.raises(OSError, match=r"assembly helper \(process \d+\) failed: FileNotFoundError"):
            list(helpers.drain())
        for _ in helpers.submit("sleep", time.sleep, 60):
            pass
        busy = next(h for h in helpers.helpers if h.key == "sleep")
        os.kill(busy.proc.pid, signal.SIGKILL)
        with pytest.raises(OSError, match=r"died: exit code SIGKILL\(-9\)"):
            list(helpers.drain())
        pids = helpers.pids
    assert _gone(pids, 30) == []
