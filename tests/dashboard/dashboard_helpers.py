"""Helpers for the dashboard tests: real jobs (finished, failed, running) made by the real engine."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@dataclass
class Workspace:
    path: Path
    finished: str  # Completed: 10 items, 1 bad one in a failed mini-batch of 2 (error_threshold -1)
    failed: str  # Failed: error_threshold 0 and one bad item
    pipeline: str  # a pipeline record (experiment "nightly") whose one step is a real run
    step: str

# Raises for inputs whose file name holds "bad"; sleeps SLEEP seconds per item (a job that runs a while).
SCRIPT = """
import os
import time


def run(mini_batch):
    out = []
    for path in mini_batch:
        name = os.path.basename(path)
        if "bad" in name:
            raise ValueError(f"cannot score {name}")
        time.sleep(float(os.environ.get("SLEEP", "0")))
        out.append(name)
    return out
"""


# Every run() call sleeps in sleep_in_run; a helper thread writes $MARKER once the main thread's innermost
# frame is on the sleep line (a state that lasts: time.sleep pushes no Python frame), so a stack asked for
# after that must show it.
SLEEPER = """
import os
import sys
import threading
import time


def sleep_in_run(seconds):
    time.sleep(seconds)  # where the stack must point


def _mark_once_sleeping(main):
    line = sleep_in_run.__code__.co_firstlineno + 1
    for _ in range(60000):  # bounded: 60 s
        frame = sys._current_frames().get(main)
        if frame is not None and frame.f_code is sleep_in_run.__code__ and frame.f_lineno == line:
            with open(os.environ["MARKER"], "w") as f:
                f.write(str(os.getpid()))
            return
        time.sleep(0.001)


def run(mini_batch):
    threading.Thread(target=_mark_once_sleeping, args=(threading.get_ident(),), daemon=True).start()
    sleep_in_run(300)
    return [os.path.basename(p) for p in mini_batch]
"""

#: what a stack of a worker of a SLEEPER job shows: run() calling sleep_in_run, sleeping on its line
SLEEPING_FRAMES = ", in run\n    sleep_in_run(300)\n", ", in sleep_in_run\n    time.sleep(seconds)"


def make_sleeping_job(root: Path) -> tuple[Path, Path]:
    """One worker whose run() sleeps 300 s (SLEEPER); returns (job.yml, the marker it writes once asleep)."""
    marker = root / "sleeping"
    job = make_job(root, n_files=3, script=SLEEPER, mini_batch_size=1, run_invocation_timeout=600,
                   environment_variables={"MARKER": str(marker)})
    return job, marker


def make_job(root: Path, *, n_files: int, bad: tuple[int, ...] = (), sleep: float = 0.0, script: str = SCRIPT,
             **spec: Any) -> Path:
    """A file job in ``root``: data/f000.txt.. (``bad`` indices named f003_bad.txt); returns job.yml."""
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (data / (f"f{i:03d}_bad.txt" if i in bad else f"f{i:03d}.txt")).write_text(f"{i}\n")
    (root / "scripts").mkdir(exist_ok=True)
    (root / "scripts" / "score.py").write_text(textwrap.dedent(script))
    doc: dict[str, Any] = {
        "name": "dash-job",
        "entry_script": "score.py",
        "source_directory": "scripts",
        "inputs": [{"type": "file", "path": "data"}],
        "output": "out",
        "mini_batch_size": 2,
        "process_count_per_node": 1,
        "run_max_try": 1,
        "error_threshold": -1,
        "isolate_failures": False,  # a bad item fails its whole batch: the pages show failed mini-batches
        "run_invocation_timeout": 60,
        "environment_variables": {"SLEEP": str(sleep)},
    }
    doc.update(spec)
    job = root / "job.yml"
    job.write_text(yaml.safe_dump(doc))
    return job


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 90.0, every: float = 0.2) -> T:
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def read_record(ws: Path, run_id: str) -> dict[str, Any]:
    return json.loads((ws / "runs" / run_id / "run.json").read_text())


class RunningJob:
    """``python -m parallelrun run job.yml`` in a subprocess, stopped (SIGTERM, then SIGKILL) on close."""

    def __init__(self, job: Path, ws: Path) -> None:
        self.job, self.ws = job, ws
        before = set(self._run_ids())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "parallelrun", "run", str(job), "--workspace", str(ws), "--quiet"],
            cwd=job.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.run_id: str = wait_for("the run to appear", lambda: next(iter(set(self._run_ids()) - before), None))

    def _run_ids(self) -> list[str]:
        runs = self.ws / "runs"
        return [p.name for p in runs.iterdir() if (p / "run.json").is_file()] if runs.is_dir() else []

    def record(self) -> dict[str, Any]:
        return read_record(self.ws, self.run_id)

    def wait_running(self, min_batches_done: int = 1, timeout: float = 90.0) -> None:
        """Until the run is Running with at least ``min_batches_done`` mini-batches committed."""
        from parallelrun.live import journal_counts

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the job exited early ({self.proc.returncode}):\n{self.output()}")
            c = journal_counts(self.ws / "runs" / self.run_id / "journal.sqlite") or {}
            return self.record()["status"] == "Running" and \
                c.get("batches_succeeded", 0) + c.get("batches_failed", 0) >= min_batches_done

        wait_for(f"run {self.run_id} to be running", ready, timeout)

    def output(self) -> str:
        if self.proc.poll() is None or self.proc.stdout is None:
            return ""
        return self.proc.stdout.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


def interrupt(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """Stop a server a test started as a user would (Ctrl-C: SIGINT), and SIGKILL it if it has not exited
    within ``timeout`` seconds; reaped either way."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def alive(pid: int) -> bool:
    """Process ``pid`` exists and is not a zombie (a zombie burns nothing: it only waits to be reaped)."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_client(app: Any, **kw: Any) -> Any:
    """FastAPI's TestClient as a browser on 127.0.0.1 would talk (the Host header matters: see security)."""
    with warnings.catch_warnings():
        # Starlette's note that httpx will be replaced: the framework's affair, not this test's.
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    kw.setdefault("base_url", "http://127.0.0.1:8265")
    return TestClient(app, **kw)


os.environ.setdefault("PYTHONFAULTHANDLER", "1")


def raw_get(app: Any, raw_path: str, host: str = "127.0.0.1:8265") -> tuple[int, str]:
    """GET ``raw_path`` straight into the ASGI app, with no client-side URL normalisation (``../`` kept),
    as ``curl --path-as-is`` would send it; the path is percent-decoded as uvicorn does."""
    import asyncio
    from urllib.parse import unquote

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": unquote(raw_path), "raw_path": raw_path.encode(), "root_path": "", "query_string": b"",
        "headers": [(b"host", host.encode()), (b"accept", b"*/*")], "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8265),
    }
    status, body = 0, bytearray()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    asyncio.run(app(scope, receive, send))
    return status, body.decode("utf-8", errors="replace")
