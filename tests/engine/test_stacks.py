"""Worker stacks for real: a process stuck in a function, and one killed by SIGSEGV."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from parallelrun.execution import stacks

AGENT = "node0.process007"

STUCK = textwrap.dedent("""
    import sys, threading, time
    from parallelrun.execution import stacks

    stacks.install(sys.argv[1], "node0.process007")

    def helper_thread_waits():
        time.sleep(120)

    def stuck_in_run(seconds):
        time.sleep(seconds)  # the line the stack must point at

    def ready_once_main_thread_sleeps():
        # "ready" only once the main thread's innermost frame is stuck_in_run on its sleep line: a state
        # that lasts, as time.sleep pushes no Python frame. (Printing "ready" from the main thread just
        # before the sleep let a dump catch the print line, or any code run between the two.)
        main, sleep_line = threading.main_thread().ident, stuck_in_run.__code__.co_firstlineno + 1
        for _ in range(60000):  # bounded: 60 s
            frame = sys._current_frames().get(main)
            if frame is not None and frame.f_code is stuck_in_run.__code__ and frame.f_lineno == sleep_line:
                print("ready", flush=True)
                return
            time.sleep(0.001)

    threading.Thread(target=helper_thread_waits, daemon=True).start()
    threading.Thread(target=ready_once_main_thread_sleeps, daemon=True).start()
    stuck_in_run(120)
""")

CRASH = textwrap.dedent("""
    import ctypes, sys
    from parallelrun.execution import stacks

    stacks.install(sys.argv[1], "node0.process007")

    def crash_here():
        ctypes.string_at(0)  # reads address 0: SIGSEGV

    def run(mini_batch):
        crash_here()

    run(["a.png"])
""")


def _start(tmp_path: Path, code: str) -> subprocess.Popen[str]:
    script = tmp_path / "worker.py"
    script.write_text(code)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "logs")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture
def stuck(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = _start(tmp_path, STUCK)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield proc
    finally:
        proc.kill()
        proc.wait(30)


def test_capture_names_the_function_where_the_main_thread_sleeps(tmp_path: Path,
                                                                  stuck: subprocess.Popen[str]) -> None:
    text = stacks.capture(tmp_path / "logs", AGENT, stuck.pid, timeout=10)
    assert text is not None
    lines = text.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    # Most recent call last, as a Python traceback: the sleeping frame and its source line end it.
    assert lines[-2].endswith(", in stuck_in_run") and "worker.py" in lines[-2]
    assert lines[-1] == "    time.sleep(seconds)  # the line the stack must point at"
    assert "helper_thread_waits" not in text  # only the main thread: the one running run()
    assert stuck.poll() is None  # asking does not disturb the worker
    again = stacks.capture(tmp_path / "logs", AGENT, stuck.pid, timeout=10)
    assert again == text  # a second request reads its own, whole dump


def test_dump_all_lists_every_thread_of_every_live_worker(tmp_path: Path, stuck: subprocess.Popen[str]) -> None:
    # A file left by a worker that has exited is skipped (pids above 2**22 never exist on Linux).
    stale = stacks.dump_file(tmp_path / "logs", "node0.process001", 2**22 + 12345)
    stale.write_text(f"# parallelrun worker node0.process001 pid 4206649 host {socket.gethostname()} main thread 0x1\n")
    # A file naming another machine (a Ray worker on a shared folder) is never signalled: its pid is not ours.
    elsewhere = stacks.dump_file(tmp_path / "logs", "node1.process000", os.getpid())
    elsewhere.write_text(f"# parallelrun worker node1.process000 pid {os.getpid()} host another-node main thread 0x1\n")
    assert stacks.request(os.getpid(), elsewhere, timeout=1) is None
    out = stacks.dump_all(tmp_path / "logs", timeout=10)
    assert list(out) == [f"{AGENT} (pid {stuck.pid})", f"node1.process000 (pid {os.getpid()})"]
    assert out[f"node1.process000 (pid {os.getpid()})"].startswith("runs on another-node: its stack can only")
    text = out[f"{AGENT} (pid {stuck.pid})"]
    assert text.startswith("Main thread 0x") and "in stuck_in_run" in text.split("\n\n")[0]
    assert "in helper_thread_waits" in text


def test_a_segfault_leaves_its_last_python_frames(tmp_path: Path) -> None:
    proc = _start(tmp_path, CRASH)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGSEGV
    text = stacks.last_fatal(tmp_path / "logs", AGENT, proc.pid)
    assert text is not None
    lines = text.splitlines()
    assert lines[0] == "Segmentation fault. Last Python frames (most recent call last):"
    funcs = [ln.rsplit(", in ", 1)[1] for ln in lines if ln.startswith("  File ")]
    assert funcs[-3:] == ["run", "crash_here", "string_at"]
    assert "    ctypes.string_at(0)  # reads address 0: SIGSEGV" in lines


def test_nothing_to_read_from_a_process_that_never_installed(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"])
    proc.wait(30)
    assert stacks.last_fatal(tmp_path, AGENT, proc.pid) is None
    assert stacks.capture(tmp_path, AGENT, proc.pid, timeout=1) is None
    assert stacks.dump_all(tmp_path) == {}


def test_parse_keeps_the_last_dump_of_each_thread() -> None:
    text = ("Current thread 0x00000000000000aa (most recent call first):\n"
            '  File "/x/a.py", line 3 in old\n\n'
            "Thread 0x00000000000000bb (most recent call first):\n"
            '  File "/x/b.py", line ??? in other\n\n'
            "Current thread 0x00000000000000aa (most recent call first):\n"
            '  File "/x/a.py", line 9 in new\n'
            '  File "/x/a.py", line 1 in <module>\n')
    threads = {t.ident: t for t in stacks.parse(text)}
    assert threads[0xAA].frames == (stacks.Frame("/x/a.py", 9, "new"), stacks.Frame("/x/a.py", 1, "<module>"))
    assert threads[0xAA].current and not threads[0xBB].current
    assert stacks.render(threads[0xBB]).splitlines()[1] == '  File "/x/b.py", line ?, in other'


@pytest.fixture
def running_run(tmp_path: Path) -> Iterator[tuple[Path, str, subprocess.Popen[str]]]:
    """A run recorded as Running (its driver lock held here) with one real worker stuck in a function."""
    from parallelrun.runs import DriverLock, RunStore

    ws = tmp_path / "ws"
    store = RunStore(ws)
    rec = store.new("stuck-job", job_file=None, job_dir=str(tmp_path), output_dir=str(tmp_path / "out"),
                    output_file=None)
    rec.status = "Running"
    store.save(rec)
    lock = DriverLock(rec.path)
    assert lock.acquire()
    script = tmp_path / "worker.py"
    script.write_text(STUCK)
    proc = subprocess.Popen([sys.executable, str(script), str(rec.logs_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield ws, rec.id, proc
    finally:
        proc.kill()
        proc.wait(30)
        lock.release()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parallelrun", *args], capture_output=True, text=True, timeout=120)


def test_cli_runs_stack_prints_each_workers_stack(running_run: tuple[Path, str, subprocess.Popen[str]]) -> None:
    ws, run_id, proc = running_run
    res = _cli("runs", "stack", run_id, "--workspace", str(ws))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"=== {AGENT} (pid {proc.pid})\nMain thread 0x")
    assert ", in stuck_in_run\n    time.sleep(seconds)" in res.stdout
    assert "in helper_thread_waits" in res.stdout


def test_cli_runs_stack_of_a_finished_run_says_why_not(tmp_path: Path) -> None:
    from parallelrun.runs import RunStore

    store = RunStore(tmp_path / "ws")
    rec = store.new("done-job", job_file=None, job_dir=str(tmp_path), output_dir=str(tmp_path / "out"),
                    output_file=None)
    rec.status = "Completed"
    store.save(rec)
    res = _cli("runs", "stack", rec.id, "--workspace", str(tmp_path / "ws"))
    assert res.returncode == 2
    assert f"run {rec.id} is Completed, so it has no worker to ask" in res.stderr
    assert "Traceback" not in res.stderr


def test_dashboard_stacks_endpoint(running_run: tuple[Path, str, subprocess.Popen[str]]) -> None:
    pytest.importorskip("fastapi")
    import warnings

    from parallelrun.dashboard import create_app

    ws, run_id, proc = running_run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    with TestClient(create_app(ws), base_url="http://127.0.0.1:8265") as client:
        r = client.get(f"/api/runs/{run_id}/stacks")
        assert r.status_code == 200, r.text
        (text,) = r.json()["workers"].values()
        assert "in stuck_in_run" in text
        proc.kill()
        proc.wait(30)
        assert client.get(f"/api/runs/{run_id}/stacks").json()["workers"] == {}  # nobody left to ask


SLEEPER = """
import os, time

def slow_here(seconds):
    time.sleep(seconds)

def run(mini_batch):
    slow_here(120)
    return [os.path.basename(p) for p in mini_batch]
"""


@pytest.mark.timeout(180)
def test_runs_stack_of_a_real_running_job(job_factory) -> None:
    """The workers of a real job answer `parallelrun runs stack`, each showing where run() is."""
    import json
    import time

    job = job_factory(SLEEPER, n_files=4, mini_batch_size=1, run_invocation_timeout=300, process_count_per_node=2)
    proc = subprocess.Popen([sys.executable, "-m", "parallelrun", "run", "job.yml", "--workspace", str(job.ws),
                             "--quiet"], cwd=job.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until both workers run a batch
            runs = list((job.ws / "runs").glob("*/workers.json")) if (job.ws / "runs").is_dir() else []
            try:
                workers = json.loads(runs[0].read_text())["workers"] if runs else []
            except (OSError, ValueError):
                workers = []
            if len([w for w in workers if w.get("batch") is not None]) == 2:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the workers did not start in time")
        run_id = runs[0].parent.name
        res = _cli("runs", "stack", run_id, "--workspace", str(job.ws))
        assert res.returncode == 0, res.stderr
        blocks = res.stdout.split("=== ")[1:]
        assert len(blocks) == 2 and all(b.startswith("node0.process00") for b in blocks)
        for b in blocks:
            assert ", in slow_here\n    time.sleep(seconds)" in b and "entry.py" in b
    finally:
        subprocess.run([sys.executable, "-m", "parallelrun", "runs", "cancel", runs[0].parent.name if runs else "x",
                        "--workspace", str(job.ws)], capture_output=True, timeout=60)
        proc.wait(60)
