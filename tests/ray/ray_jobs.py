"""Helpers for the Ray tests: real clusters (never mocks), small jobs, and exactly-once checks.

The entry script's behaviour is chosen by environment variables in the job spec (``MODE``, ``TRIGGER``,
``SLEEP``), so each test states in its job what goes wrong and where. ``STATE_DIR`` collects what the
workers did: the pids that ran init(), the mini-batches started (per agent and Ray node), and one-shot
markers (a crash or hang happens only the first time).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

PYTHON = sys.executable
RAY = str(Path(sys.executable).with_name("ray"))

ENTRY_SCRIPT = '''\
import os
import time
from pathlib import Path

from parallelrun import EntryScript

MODE = os.environ.get("MODE", "ok")
TRIGGER = os.environ.get("TRIGGER", "")
STATE = Path(os.environ["STATE_DIR"])


def _where():
    """The Ray node id and GCS address this worker runs under ("local" outside Ray)."""
    try:
        import ray
        if not ray.is_initialized():  # a local worker: asking Ray would start an instance
            return "local local"
        ctx = ray.get_runtime_context()
        return f"{ctx.get_node_id()} {ctx.gcs_address}"
    except Exception:
        return "local local"


def _once(name):
    """True the first time any worker asks (O_EXCL makes it atomic across processes)."""
    try:
        os.close(os.open(STATE / f"tripped-{name}", os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def init():
    agent = EntryScript().agent_name
    (STATE / "pids").mkdir(parents=True, exist_ok=True)
    (STATE / "pids" / str(os.getpid())).write_text(agent)
    (STATE / "script_file").write_text(str(Path(__file__).resolve()))
    print(f"init in {agent}", flush=True)
    EntryScript().logger.info("init in %s", agent)
    if MODE == "init_fails":
        raise ValueError("no model here")


def _names(mini_batch):
    if hasattr(mini_batch, "columns"):
        return [str(v) for v in mini_batch["name"]]
    return [Path(p).name for p in mini_batch]


def run(mini_batch, context):
    agent = EntryScript().agent_name
    started = STATE / "started"
    started.mkdir(parents=True, exist_ok=True)
    (started / f"{context.minibatch_index}-{agent}-{time.time_ns()}").write_text(_where())
    for name in _names(mini_batch):
        if name != TRIGGER:
            continue
        if MODE == "exit_once" and _once(name):
            os._exit(3)
        if MODE == "hang_once" and _once(name):
            time.sleep(600)
        if MODE == "hang_always":
            time.sleep(600)
    time.sleep(float(os.environ.get("SLEEP", "0")))
    if hasattr(mini_batch, "columns"):
        return mini_batch.assign(double=mini_batch["x"] * 2)
    return [f"{Path(p).name}: {Path(p).read_text().strip()}" for p in mini_batch]
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- a real head started with `ray start --head` -----------------------------------------------------
class RayHead:
    """``ray start --head`` on 127.0.0.1 in its own session, stopped by killing that session's group.

    ``ray stop --force`` would stop every Ray process of this user on the machine (other test runs,
    other people's clusters); killing the process group we created stops exactly ours.
    """

    def __init__(self, temp_dir: Path, num_cpus: int = 2, *, resources: dict[str, float] | None = None,
                 env: dict[str, str | None] | None = None, dashboard: bool = False) -> None:
        self.port = free_port()
        self.client_port = free_port()
        self.temp_dir = temp_dir
        self.started_in = 0.0
        cmd = [RAY, "start", "--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
               f"--num-cpus={num_cpus}", f"--include-dashboard={str(dashboard).lower()}", "--disable-usage-stats",
               f"--temp-dir={temp_dir}", f"--ray-client-server-port={self.client_port}",
               f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"]
        if resources:
            cmd.append(f"--resources={json.dumps(resources)}")
        self.dashboard_port = free_port() if dashboard else None
        if dashboard:
            cmd += ["--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
        t0 = time.monotonic()
        # Ray >= 2.5x turns token authentication on for `ray start` when ~/.ray/auth_token exists, and
        # then refuses drivers that connect by explicit address without RAY_AUTH_MODE=token. Pin it off
        # so the test does not depend on what else ran on this machine.
        # ``env`` changes that (None removes a variable), e.g. to start a head with token authentication.
        full = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        for key, value in (env or {}).items():
            if value is None:
                full.pop(key, None)
            else:
                full[key] = value
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, env=full)
        out, _ = self.proc.communicate(timeout=120)
        if self.proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start --head failed ({self.proc.returncode}):\n{out}")
        self.started_in = time.monotonic() - t0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_address(self) -> str:
        """The Ray Client address, once its server listens: `ray start` returns before the proxy that
        serves it does, and a test that connects at once would find nothing there."""
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.client_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Ray Client server of this head never listened on {self.client_port}") from None
                time.sleep(0.2)
        return f"ray://127.0.0.1:{self.client_port}"

    @contextlib.contextmanager
    def ray_client(self) -> Iterator[str]:
        """The Ray Client address, for a connection made while this machine-wide lock is held.

        Every head's Ray Client proxy gives each client a server of its own on the first port from 23000 up
        that it finds free (``ray.util.client.server.proxier``): it binds the port, closes it, sets up the
        client's runtime_env, starts a Python process, and only that process binds it for good - seconds,
        tens of seconds under load. Two heads on one machine (test runs side by side) that do this at the
        same time both pick 23000, and the second server dies at start ("Starting Ray client server failed.
        See ray_client_server_23000.err"). Connecting under this lock (held until the caller is done, its
        server then listening, so another head's proxy skips its port) keeps test runs on one machine apart.
        On a failure the head's client server logs are added to the error: the .err files go with the head.
        """
        import fcntl

        with open(Path(tempfile.gettempdir()) / "parallelrun-tests-ray-client.lock", "a") as lock:
            deadline = time.monotonic() + 45  # another run's client test holds it: at most as long as it runs
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        break  # go on unlocked: a clash then fails with its .err below, not with a timeout
                    time.sleep(0.2)
            try:
                yield self.client_address
            except Exception as e:
                logs = sorted(self.temp_dir.glob("session_*/logs/ray_client_server_*.err"))
                tails = "\n".join(f"--- {f}:\n{f.read_text(errors='replace')[-2000:]}" for f in logs)
                raise AssertionError(f"through Ray Client: {type(e).__name__}: {e}\n{tails}") from e
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def stop(self) -> None:
        pgid = self.proc.pid  # the session leader: every Ray process of this head shares its group
        # SIGTERM first for a clean exit; gcs_server often ignores it, hence the short wait before SIGKILL.
        for sig, wait in ((signal.SIGTERM, 1.5), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.2)


# --- jobs ----------------------------------------------------------------------------------------------
def make_job(folder: Path, name: str = "rayjob", *, files: int = 0, csv_rows: int = 0, env: dict[str, str] | None = None,
             **fields: Any) -> Path:
    """A job folder: scripts/score.py, data/ (``files`` text files or a CSV of ``csv_rows`` rows), job.yml."""
    (folder / "scripts").mkdir(parents=True, exist_ok=True)
    (folder / "scripts" / "score.py").write_text(ENTRY_SCRIPT)
    state = folder / "state"
    state.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    if csv_rows:
        lines = ["name,x,note"]
        for i in range(csv_rows):
            # Quoted commas and newlines: rows must still arrive intact and exactly once.
            note = f'"line one, {i}\nline two"' if i % 7 == 0 else f"plain {i}"
            lines.append(f"r{i:04d},{i},{note}")
        (data / "rows.csv").write_text("\n".join(lines) + "\n")
        inputs = [{"type": "tabular", "path": "data/rows.csv"}]
    else:
        for i in range(files):
            (data / f"f{i:03d}.txt").write_text(f"item {i}\n")
        inputs = [{"type": "file", "path": "data"}]
    spec: dict[str, Any] = {
        "name": name, "entry_script": "score.py", "source_directory": "scripts", "inputs": inputs,
        "output": "out", "mini_batch_size": 2 if files else "1KB", "process_count_per_node": 2,
        "run_invocation_timeout": 30, "run_max_try": 3,
        "environment_variables": {"STATE_DIR": str(state), "OMP_NUM_THREADS": "1", **(env or {})},
    }
    spec.update(fields)
    job = folder / "job.yml"
    job.write_text(yaml.safe_dump(spec, sort_keys=False))
    return job


def reset_state(folder: Path) -> None:
    """Forget what earlier runs of this job folder did (markers, pids, started batches)."""
    state = folder / "state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()


def output_lines(result: Any) -> list[str]:
    return Path(result.output_file).read_text().splitlines()


def assert_each_once(lines: list[str], expected: list[str]) -> None:
    """Every expected row exactly once, nothing else (a Counter shows duplicates by name)."""
    dupes = {k: v for k, v in Counter(lines).items() if v > 1}
    assert not dupes, f"rows written more than once: {dupes}"
    assert sorted(lines) == sorted(expected), (
        f"missing: {sorted(set(expected) - set(lines))[:10]}, unexpected: {sorted(set(lines) - set(expected))[:10]}"
    )


def file_rows(n: int) -> list[str]:
    return [f"f{i:03d}.txt: item {i}" for i in range(n)]


def report_rows(run_dir: Path) -> list[dict[str, str]]:
    import csv

    with open(run_dir / "logs" / "sys" / "job_report" / "processed_mini-batches.csv", newline="") as f:
        return list(csv.DictReader(f))


def committed(journal: Path, where: str = "state != 'pending'") -> int:
    """Mini-batches committed so far (those that match ``where``), read without disturbing the driver (WAL
    readers do not block)."""
    if not journal.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
        try:
            return int(db.execute(f"SELECT COUNT(*) FROM batches WHERE {where}").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def started(folder: Path) -> list[tuple[int, str, str, str]]:
    """(mini-batch index, agent name, Ray node id, GCS address) of every run() call that began."""
    out = []
    d = folder / "state" / "started"
    for p in d.iterdir() if d.exists() else []:
        index, agent, _ = p.name.split("-", 2)
        text = p.read_text()
        if not text:  # written but not yet flushed by the worker
            continue
        node_id, gcs = text.split(" ", 1)
        out.append((int(index), agent, node_id, gcs))
    return out


def start_driver(job: Path, workspace: Path, *args: str) -> subprocess.Popen[str]:
    """``python -m parallelrun run`` as a subprocess (so that it can be killed or outlived)."""
    return subprocess.Popen(
        [PYTHON, "-m", "parallelrun", "run", str(job), "--workspace", str(workspace), "--quiet", *args],
        cwd=job.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@contextlib.contextmanager
def running_driver(job: Path, workspace: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """:func:`start_driver`, killed (SIGKILL) and reaped on the way out if it still runs: a wait that
    timed out or an assertion inside the block leaves no driver behind."""
    driver = start_driver(job, workspace, *args)
    try:
        yield driver
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait(10)
        if driver.stdout:
            driver.stdout.close()


def finish(driver: subprocess.Popen[str], timeout: float = 90) -> str:
    """Wait (``timeout`` s at most) for the driver to exit; what it printed (stdout and stderr)."""
    out, _ = driver.communicate(timeout=timeout)
    return out


def only_run_dir(workspace: Path) -> Path:
    runs = sorted((workspace / "runs").iterdir()) if (workspace / "runs").exists() else []
    assert len(runs) == 1, runs
    return runs[0]


def wait_until(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"the driver exited ({proc.returncode}) before {what}:\n{out}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        # A zombie is dead for our purposes (it burns no CPU).
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                continue
        except OSError:
            continue
        alive.append(pid)
    return alive
