"""workers.json (written by the driver) and the pieces of live progress, without a web server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dashboard_helpers import Workspace

from parallelrun.dashboard.data import read_log
from parallelrun.live import WorkersFile, format_seconds, read_workers, run_progress, status_line
from parallelrun.runs import RunStore


@dataclass
class FakeWorker:
    """The fields of execution.base.WorkerState the writer reads."""

    name: str
    pid: int | None = None
    ready: bool = True
    queue: list[tuple[int, int]] = field(default_factory=list)
    started_at: float = 0.0
    node: str = "node0"


@pytest.fixture
def child():
    proc = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(8 << 20); time.sleep(60)"])
    time.sleep(0.3)
    yield proc
    proc.kill()
    proc.wait(10)


def test_workers_file_records_each_workers_batch_attempt_queue_and_memory(tmp_path: Path, child) -> None:
    wf = WorkersFile(tmp_path)
    mono = time.monotonic()
    wf.update([FakeWorker("node0.process000", child.pid, queue=[(7, 2), (9, 1)], started_at=mono - 3.0),
               FakeWorker("node0.process001", None, ready=False)])
    data = read_workers(tmp_path)
    assert data is not None and data["running"] is True
    busy, starting = data["workers"]
    assert (busy["batch"], busy["attempt"], busy["queue"], busy["pid"]) == (7, 2, 1, child.pid)
    assert busy["rss"] > 8 << 20 and busy["heartbeat"] == pytest.approx(time.time(), abs=5)
    assert busy["batch_started"] == pytest.approx(time.time() - 3.0, abs=1.0)
    assert (starting["ready"], starting["batch"], starting["rss"], starting["heartbeat"]) == (False, None, None, None)
    assert not list(tmp_path.glob(".*tmp"))  # written by rename: no temporary file left behind


def test_a_pid_that_is_not_our_child_gets_no_memory_reading(tmp_path: Path) -> None:
    import os

    wf = WorkersFile(tmp_path)
    wf.update([FakeWorker("remote", os.getppid(), queue=[(1, 1)])])  # e.g. a Ray worker's pid
    (w,) = read_workers(tmp_path)["workers"]  # type: ignore[index]
    assert w["rss"] is None and w["batch"] == 1


def test_writes_are_throttled_and_close_says_nothing_runs(tmp_path: Path) -> None:
    wf = WorkersFile(tmp_path, interval=60)
    wf.update([FakeWorker("a", queue=[(1, 1)])])
    wf.update([FakeWorker("a", queue=[(2, 1)])])  # within the interval: not written
    assert read_workers(tmp_path)["workers"][0]["batch"] == 1  # type: ignore[index]
    wf.update([FakeWorker("a", queue=[(3, 1)])], force=True)
    assert read_workers(tmp_path)["workers"][0]["batch"] == 3  # type: ignore[index]
    wf.close()
    assert read_workers(tmp_path)["running"] is False  # type: ignore[index]
    assert read_workers(tmp_path)["workers"] == []  # type: ignore[index]


def test_last_event_changes_only_when_the_worker_does(tmp_path: Path) -> None:
    wf = WorkersFile(tmp_path, interval=0)
    wf.update([FakeWorker("a", queue=[(1, 1)])])
    t1 = read_workers(tmp_path)["workers"][0]["last_event"]  # type: ignore[index]
    time.sleep(0.05)
    wf.update([FakeWorker("a", queue=[(1, 1)])])
    assert read_workers(tmp_path)["workers"][0]["last_event"] == t1  # type: ignore[index]
    time.sleep(0.05)
    wf.update([FakeWorker("a", queue=[(2, 1)])])
    assert read_workers(tmp_path)["workers"][0]["last_event"] > t1  # type: ignore[index]


def test_a_failing_write_never_fails_the_job(tmp_path: Path) -> None:
    wf = WorkersFile(tmp_path / "no" / "such" / "dir")
    wf.update([FakeWorker("a")])
    wf.close()
    assert wf.errors == 2


def test_the_drivers_interrupt_is_not_swallowed(tmp_path: Path) -> None:
    """The driver raises its SIGTERM exception wherever it is; the writer must let it through."""

    class Interrupted(Exception):
        pass

    class Exploding:
        @property
        def name(self) -> str:
            raise Interrupted()

    with pytest.raises(Interrupted):
        WorkersFile(tmp_path).update([Exploding()])


def test_progress_of_finished_and_failed_runs(workspace: Workspace) -> None:
    store = RunStore(workspace.path)
    p = run_progress(store.get(workspace.finished))
    assert (p["status"], p["items_done"], p["items_total"], p["eta_seconds"]) == ("Completed", 10, 10, 0.0)
    assert p["counts"]["items_failed"] == 2 and p["avg_items_per_second"] > 0
    line = status_line(p)
    assert line.startswith(f"run {workspace.finished}: Completed - 10/10 items (100%, 2 failed)")
    failed = run_progress(store.get(workspace.failed))
    assert failed["status"] == "Failed" and "threshold" in status_line(failed)


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (None, 0, 59.6, 61, 3725)] == ["?", "0s", "1m 00s", "1m 01s", "1h 02m"]


@pytest.mark.parametrize("limit", [1, 3, 4, 5, 7])
def test_log_chunks_never_split_a_utf8_character(workspace: Workspace, limit: int) -> None:
    logs = workspace.path / "runs" / workspace.finished / "logs"
    (logs / "utf8.txt").write_text("ab\u00e9\u20ac\U0001f600\n", encoding="utf-8")  # 1+1+2+3+4+1 bytes
    raw = (logs / "utf8.txt").read_bytes()
    offset, text = 0, ""
    for _ in range(len(raw)):
        chunk = read_log(workspace.path, workspace.finished, "utf8.txt", offset=offset, limit=limit)
        assert "\ufffd" not in chunk["text"]
        assert chunk["next_offset"] > offset  # always progress: a follower never stalls
        text += chunk["text"]
        offset = chunk["next_offset"]
        if offset >= len(raw):
            break
    assert text == raw.decode("utf-8")


def test_a_rewritten_shorter_file_restarts_the_follow(workspace: Workspace) -> None:
    logs = workspace.path / "runs" / workspace.finished / "logs"
    (logs / "short.txt").write_text("one\n")
    chunk = read_log(workspace.path, workspace.finished, "short.txt", offset=1000)
    assert chunk["reset"] is True and chunk["text"] == "one\n"


def test_workers_json_is_plain_json(workspace: Workspace) -> None:
    data = json.loads((workspace.path / "runs" / workspace.finished / "workers.json").read_text())
    assert data["running"] is False and "updated_at" in data


# --- memory and CPU of the driver's children (child_stats) ------------------------------------------------
@pytest.fixture
def busy_child(tmp_path: Path):
    """A child spinning on a CPU and holding 16 MB, whose name in /proc holds spaces and parentheses (the
    name is the executable's: a link named so), which must not shift the fields read after it."""
    exe = tmp_path / "w (1) x"
    exe.symlink_to(os.path.realpath(sys.executable))
    code = "import sys; x = bytearray(16 << 20); x[::4096] = b'x' * len(x[::4096]); sys.stdout.write('up\\n'); " \
           "sys.stdout.flush()\nwhile True: pass"
    proc = subprocess.Popen([str(exe), "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    yield proc
    proc.kill()
    proc.wait(10)


def _cpu_seconds(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


@pytest.mark.parametrize("proc_fs", [True, False], ids=["proc", "psutil"])
def test_child_stats_reads_a_childs_memory_and_cpu(busy_child, proc_fs: bool, monkeypatch) -> None:
    import psutil

    from parallelrun import child_stats

    if proc_fs and not child_stats._PROC:
        pytest.skip("no /proc here")
    monkeypatch.setattr(child_stats, "_PROC", proc_fs)
    if proc_fs:
        assert b"(w (1) x)" in Path(f"/proc/{busy_child.pid}/stat").read_bytes()
    stats = child_stats.ChildStats()
    first = stats.sample(busy_child.pid)
    assert first is not None and first[1] == 0.0  # the first sample only starts the CPU measurement
    rss = psutil.Process(busy_child.pid).memory_info().rss
    assert 16 << 20 < first[0] and abs(first[0] - rss) < 8 << 20  # the same reading psutil gives
    start = _cpu_seconds(busy_child.pid)
    deadline = time.monotonic() + 30  # until the child got some CPU (a loaded machine may delay it)
    while _cpu_seconds(busy_child.pid) < start + 0.05 and time.monotonic() < deadline:
        time.sleep(0.01)
    second = stats.sample(busy_child.pid)
    assert second is not None and 0.0 < second[1] <= 100.0 * (os.cpu_count() or 1) + 5


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="zombies are read from /proc")
def test_child_stats_gives_nothing_for_a_stranger_or_an_exited_child() -> None:
    from parallelrun.child_stats import ChildStats

    stats = ChildStats()
    assert stats.sample(os.getppid()) is None  # not our child (a Ray worker's pid looks like this)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # exited but not reaped yet: a zombie
        with open(f"/proc/{proc.pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                break
        time.sleep(0.01)
    assert stats.sample(proc.pid) is None
    proc.wait(10)
    assert stats.sample(proc.pid) is None  # reaped: gone
