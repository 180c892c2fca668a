"""The private Ray instance of ``compute: ray`` (no address), which must never outlive its driver.

The instance lives in its own temporary folder (``$RAY_TMPDIR/prinst-XXXXXXXX``), recorded in the run
folder as ``ray_instance.json``. A watchdog process in its own session watches the driver; when the driver
is gone without having stopped the instance (kill -9, OOM), it stops every process that has that folder in
its command line or among its open files (Ray's own reaper misses the agents the raylet starts, and the
actors), then removes the folder. Processes of other Ray instances on the machine are never touched.
The next driver of the same run (``resume``) also stops what a dead driver left, should the watchdog have
died with it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: in the run folder: the private Ray instance of the current (or last) driver
INSTANCE_FILE = "ray_instance.json"
#: seconds between two looks of the watchdog at the driver
WATCH_EVERY = 0.5


@dataclass
class PrivateInstance:
    """A Ray instance started for one driver, in its own temporary folder, watched by a watchdog."""

    temp_dir: str
    run_dir: Path
    watchdog: subprocess.Popen[bytes] | None = None

    @staticmethod
    def start(run_dir: Path) -> PrivateInstance:
        """Stop what an earlier driver of this run left behind, then create the folder and the watchdog."""
        reap_recorded(run_dir)
        # Short: Ray's Unix socket paths under it must stay below ~107 characters.
        base = os.environ.get("RAY_TMPDIR") or "/tmp"
        os.makedirs(base, exist_ok=True)
        temp_dir = tempfile.mkdtemp(prefix="prinst-", dir=base)
        inst = PrivateInstance(temp_dir, run_dir)
        import parallelrun

        src = str(Path(parallelrun.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
        inst.watchdog = subprocess.Popen(
            [sys.executable, "-c", "from parallelrun.execution.ray_instance import _watch_main; _watch_main()",
             str(os.getpid()), str(_create_time(os.getpid())), temp_dir],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True,  # outlives the driver, and is not in the group Ray's reaper kills
        )
        _atomic_json(run_dir / INSTANCE_FILE, {"temp_dir": temp_dir, "driver_pid": os.getpid(),
                                               "watchdog_pid": inst.watchdog.pid})
        return inst

    def stop(self) -> None:
        """After ``ray.shutdown()``: stop what is left of the instance, the watchdog, and the folder."""
        reap(self.temp_dir)
        if self.watchdog is not None:
            self.watchdog.terminate()
            try:
                self.watchdog.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()
                self.watchdog.wait(timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        try:
            (self.run_dir / INSTANCE_FILE).unlink()
        except OSError:
            pass


def reap_recorded(run_dir: Path) -> None:
    """Stop a private instance recorded in ``run_dir`` whose driver is gone (its watchdog died too)."""
    try:
        rec = json.loads((run_dir / INSTANCE_FILE).read_text())
    except (OSError, ValueError):
        return
    pid = rec.get("driver_pid")
    if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
        return  # another live driver: not ours to stop
    temp_dir = rec.get("temp_dir")
    if isinstance(temp_dir, str) and temp_dir:
        reap(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def instance_processes(temp_dir: str) -> list[Any]:
    """Every process of the instance in ``temp_dir``: the folder in its command line or its open files."""
    import psutil

    root = os.path.abspath(temp_dir)
    prefix = root + os.sep
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if p.pid == os.getpid():
            continue
        try:
            args = p.info["cmdline"] or []
            if any(prefix in a or a.endswith(root) for a in args) or any(
                    f.path.startswith(prefix) for f in p.open_files()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def reap(temp_dir: str, grace: float = 2.0, rounds: int = 3) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds, every process of the instance; returns how many."""
    import psutil

    total = 0
    for _ in range(rounds):  # a raylet may start a worker while we stop the others
        procs = instance_processes(temp_dir)
        if not procs:
            break
        total += len(procs)
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=grace)
    return total


def _watch_main() -> None:
    """The watchdog: ``<driver pid> <driver create time> <temp dir>``. Reaps the instance when the driver
    is gone; exits quietly on SIGTERM (the driver stopped the instance itself) or when the folder is gone."""
    pid, created, temp_dir = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while os.path.isdir(temp_dir):
        if not _alive(pid, created):
            reap(temp_dir)
            shutil.rmtree(temp_dir, ignore_errors=True)
            return
        time.sleep(WATCH_EVERY)


def _create_time(pid: int) -> float:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


def _alive(pid: int, created: float = 0.0) -> bool:
    """``pid`` runs and is the same process (same start time; pids are reused), not a zombie."""
    import psutil

    try:
        p = psutil.Process(pid)
        if created and abs(p.create_time() - created) > 0.01:
            return False
        return bool(p.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)
