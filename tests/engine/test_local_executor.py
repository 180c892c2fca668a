"""The local executor's throughput machinery: adaptive depth, free slots, bulk reads of results; and worker
start-up that neither imports the driver's modules nor re-runs the caller's script."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from parallelrun.execution import local
from parallelrun.execution.base import WorkerState
from parallelrun.execution.messages import Ready
from parallelrun.execution.worker import WorkerConfig


def _executor(queues: dict[str, int], batch_seconds: float | None) -> local.LocalExecutor:
    cfg = WorkerConfig(entry_script="e.py", source_directory=".", working_dir=".", arguments=[],
                       environment_variables={}, logging_level="INFO", output_dir=".", log_dir=".",
                       output_action="append_row", output_format="text")
    ex = local.LocalExecutor(cfg, processes=len(queues), timeout=60)
    ex._batch_seconds = batch_seconds
    for name, held in queues.items():
        st = WorkerState(name, ready=True, queue=[(i, 1) for i in range(held)])
        ex._add(name, local._Proc(SimpleNamespace(), SimpleNamespace()), st)  # type: ignore[arg-type]
    return ex


@pytest.mark.parametrize(("batch_seconds", "depth"), [(None, 2), (5.0, 2), (0.004, 5), (0.00001, local._MAX_DEPTH)])
def test_depth_holds_about_20ms_of_work(batch_seconds: float | None, depth: int) -> None:
    assert _executor({"a": 0}, batch_seconds).depth == depth


def test_free_slots_spread_batches_over_workers() -> None:
    ex = _executor({"a": 0, "b": 1, "c": 3}, 0.004)  # depth 5: refilled once at most 2 are held
    slots = ex.idle_workers()
    assert slots == ["a", "a", "b", "a", "b", "a", "b", "a", "b"]  # c (3 held) waits; least loaded first
    assert _executor({"a": 1}, None).idle_workers() == ["a"]  # slow batches: one running, one prefetched


def test_frames_reads_every_waiting_message_in_one_go() -> None:
    ours, theirs = mp.Pipe()
    big = b"x" * 300_000  # bigger than the pipe: sent in pieces while we read
    msgs = [("ok", 1), ("ok", 2, big), Ready(3)]
    sender = threading.Thread(target=lambda: [theirs.send(m) for m in msgs])
    sender.start()
    frames = local._Frames(ours)
    got: list[object] = []
    deadline = time.monotonic() + 30
    while len(got) < 3 and time.monotonic() < deadline:
        if ours.poll(1):
            got += frames.read()
    sender.join()
    assert got == msgs
    theirs.close()
    with pytest.raises(EOFError):
        frames.read()


def test_worker_start_up_imports_no_driver_module() -> None:
    code = "import sys, parallelrun.execution.worker; print(sorted(m for m in ('pydantic', 'pandas', " \
           "'parallelrun.runner', 'parallelrun.config', 'sqlite3', 'parallelrun.journal', 'psutil') " \
           "if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.timeout(120)
def test_a_script_calling_run_job_without_a_main_guard_runs_once(job_factory, tmp_path: Path) -> None:
    """Spawned workers do not re-import the caller's script, which would run the job again in each."""
    job = job_factory("def run(mb):\n    return [p[-8:] for p in mb]\n", n_files=6)
    script = tmp_path / "driver_script.py"
    script.write_text(textwrap.dedent(f"""
        from parallelrun import run_job
        print("RUN", run_job({str(job.job)!r}, workspace={str(job.ws)!r}, progress="quiet").status)
    """))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=100, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("RUN") == 1 and "Completed" in res.stdout
    assert len(job.run_dirs()) == 1
