"""Remote inputs of the next mini-batch download while the current one runs (one batch ahead, no more).

A slow in-memory fsspec filesystem stands in for a remote datastore: each download takes 0.3 s and
run() takes 0.3 s, and the order of events shows whether downloads overlap with compute.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from parallelrun.data.batches import FileBatch
from parallelrun.execution.worker import WorkerConfig, WorkerRuntime

EVENTS: list[tuple[str, str, float]] = []
_LOCK = threading.Lock()


def _event(what: str, name: str) -> None:
    with _LOCK:
        EVENTS.append((what, name, time.monotonic()))


class SlowFS(MemoryFileSystem):
    """A remote store where every download takes 0.3 s."""

    protocol = "slowmem"
    store: dict[str, Any] = {}
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path: str) -> str:  # MemoryFileSystem only strips "memory://"
        return super()._strip_protocol(path.removeprefix("slowmem://"))

    def get_file(self, rpath: str, lpath: str, **kwargs: Any) -> None:
        name = rpath.rsplit("/", 1)[-1]
        _event("download start", name)
        time.sleep(0.3)
        super().get_file(rpath, lpath, **kwargs)
        _event("download end", name)


SCRIPT = """
import os, time
from test_prefetch import _event
def run(mini_batch):
    name = open(mini_batch[0]).read()
    _event("run start", name)
    time.sleep(0.3)
    _event("run end", name)
    return [name]
"""


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WorkerRuntime:
    fsspec.register_implementation("slowmem", SlowFS, clobber=True)
    fs = fsspec.filesystem("slowmem")
    for i in range(3):
        fs.pipe(f"/bucket/b{i}.txt", f"b{i}.txt".encode())
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    (tmp_path / "entry.py").write_text(SCRIPT)
    cfg = WorkerConfig(entry_script=str(tmp_path / "entry.py"), source_directory=str(tmp_path),
                       working_dir=str(tmp_path), arguments=[], environment_variables={}, logging_level="INFO",
                       output_dir=str(tmp_path), log_dir=str(tmp_path), output_action="append_row",
                       output_format="text", redirect_output=False, scratch_dir=str(tmp_path / "scratch"))
    rt = WorkerRuntime(cfg)
    assert rt.init() is None
    EVENTS.clear()
    return rt


def _at(what: str, name: str) -> float:
    return next(t for w, n, t in EVENTS if w == what and n == name)


@pytest.mark.timeout(60)
def test_next_batch_downloads_while_this_one_runs(runtime: WorkerRuntime, tmp_path: Path) -> None:
    batches = [FileBatch(i, (f"slowmem://bucket/b{i}.txt",), 7) for i in range(3)]
    for b in batches:
        runtime.offer(b, 1)  # what the inbox thread does as the driver's batches arrive
    results = []
    for b in batches:
        outcome = runtime.process(b, 1)
        assert outcome.ok, outcome
        results.append(outcome.succeeded)
        # this batch's downloads are gone as soon as it is done; the next one's may be there already
        assert not (tmp_path / "scratch" / "node0.process000" / f"batch{b.index}-1").exists()
    runtime.shutdown()
    assert results == [1, 1, 1]
    # b1 was fetched while b0 ran...
    assert _at("download start", "b1.txt") < _at("run end", "b0.txt")
    assert _at("download end", "b1.txt") <= _at("run start", "b1.txt")
    # ...but b2 only once b1 was taken: at most one batch is downloaded ahead of the running one.
    assert _at("download start", "b2.txt") >= _at("run end", "b0.txt")


@pytest.mark.timeout(60)
def test_a_failed_download_fails_only_its_batch(runtime: WorkerRuntime) -> None:
    good = FileBatch(0, ("slowmem://bucket/b0.txt",), 7)
    missing = FileBatch(1, ("slowmem://bucket/nope.txt",), 7)
    runtime.offer(missing, 1)
    runtime.offer(good, 1)
    bad = runtime.process(missing, 1)
    assert bad.status == "error" and bad.error is not None and "nope.txt" in bad.error.message
    ok = runtime.process(good, 1)
    assert ok.ok and ok.succeeded == 1 and not ok.failed_items
    runtime.shutdown()
