"""``compute: ray`` without an address: the private Ray instance never outlives its driver.

The instance lives in its own folder under RAY_TMPDIR; its processes are found by that folder (in their
command line or their open files), never by name, so other Ray instances on the machine are left alone.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from ray_jobs import PYTHON, make_job, only_run_dir, start_driver, started, wait_until

from parallelrun.execution.ray_instance import (
    INSTANCE_FILE,
    PrivateInstance,
    instance_processes,
    reap_recorded,
)

pytestmark = pytest.mark.ray

# A stand-in for a Ray process: the folder in its command line, or only among its open files.
_HOLDS_FILE = "import os, sys, time; f = open(os.environ['HOLD'], 'w'); time.sleep(300)"


def _fake_instance_process(folder: Path, by: str) -> subprocess.Popen[bytes]:
    if by == "cmdline":
        return subprocess.Popen([PYTHON, "-c", "import time; time.sleep(300)", str(folder / "session" / "x")],
                                start_new_session=True)
    env = {**os.environ, "HOLD": str(folder / "held.log")}
    return subprocess.Popen([PYTHON, "-c", _HOLDS_FILE], env=env, start_new_session=True)


@pytest.mark.timeout(60)
def test_the_watchdog_stops_the_instance_when_its_driver_dies(tmp_path: Path, short_tmp: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_TMPDIR", str(short_tmp / "wd"))
    other = short_tmp / "other-instance"
    other.mkdir()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # The "driver" is a child that starts the instance's watchdog and then is killed with SIGKILL.
    driver = subprocess.Popen([PYTHON, "-c", (
        "import sys, time; from pathlib import Path\n"
        "from parallelrun.execution.ray_instance import PrivateInstance\n"
        "inst = PrivateInstance.start(Path(sys.argv[1])); print(inst.temp_dir, flush=True); time.sleep(300)"),
        str(run_dir)], stdout=subprocess.PIPE, text=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        assert driver.stdout is not None
        folder = Path(driver.stdout.readline().strip())
        assert folder.parent == short_tmp / "wd" and folder.is_dir()
        assert json.loads((run_dir / INSTANCE_FILE).read_text())["temp_dir"] == str(folder)
        procs = [_fake_instance_process(folder, "cmdline"), _fake_instance_process(folder, "open file"),
                 _fake_instance_process(other, "cmdline")]  # another instance's process: must survive
        wait_until(lambda: (folder / "held.log").exists(), 20, "the fake process to open its file")
        assert len([p for p in instance_processes(str(folder)) if p.pid in {q.pid for q in procs}]) == 2

        driver.kill()
        driver.wait(10)

        wait_until(lambda: procs[0].poll() is not None and procs[1].poll() is not None, 30,
                   "the watchdog to stop the dead driver's instance")
        wait_until(lambda: not folder.exists(), 10, "the watchdog to remove the instance's folder")
        assert procs[2].poll() is None, "a process of another Ray instance was stopped"
    finally:
        driver.kill()
        for p in procs:
            p.kill()
            p.wait(10)


@pytest.mark.timeout(60)
def test_a_recorded_instance_whose_driver_is_gone_is_stopped_at_the_next_start(tmp_path: Path,
                                                                                short_tmp: Path) -> None:
    folder = short_tmp / "left-behind"
    folder.mkdir()
    leftover = _fake_instance_process(folder, "cmdline")
    dead = subprocess.Popen([PYTHON, "-c", "pass"])
    dead.wait(10)
    try:
        (tmp_path / INSTANCE_FILE).write_text(json.dumps({"temp_dir": str(folder), "driver_pid": dead.pid}))
        reap_recorded(tmp_path)  # what PrivateInstance.start does first (e.g. on resume)
        assert leftover.wait(10) is not None
        assert not folder.exists()
    finally:
        leftover.kill()


@pytest.mark.slow  # 15-25 s each: `make test-all` and CI run it (docs/ and README: make test-all)
@pytest.mark.timeout(180)
def test_kill_9_of_the_driver_stops_its_private_ray_instance(tmp_path: Path, short_tmp: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # do not write ~/.ray/auth_token on this machine
    monkeypatch.setenv("RAY_TMPDIR", str(short_tmp / "k9"))
    job = make_job(tmp_path / "job", files=40, process_count_per_node=2, env={"SLEEP": "0.5"})
    ws = tmp_path / "ws"
    driver = start_driver(job, ws, "--compute", "ray")
    folder = None
    try:
        wait_until(lambda: (ws / "runs").exists() and any((ws / "runs").iterdir()), 60, "the run folder", driver)
        run_dir = only_run_dir(ws)
        wait_until(lambda: (run_dir / INSTANCE_FILE).exists(), 60, "the private instance's record", driver)
        folder = json.loads((run_dir / INSTANCE_FILE).read_text())["temp_dir"]
        wait_until(lambda: len(started(job.parent)) >= 2, 120, "the actors to run mini-batches", driver)
        before = instance_processes(folder)
        names = sorted(p.name() for p in before)
        assert any(n == "raylet" for n in names) and any(n == "gcs_server" for n in names), names
        # While it runs, `runs show` says where each worker runs: the node's address and the Ray actor.
        wait_until(lambda: '"actor": "' in (run_dir / "workers.json").read_text()
                   if (run_dir / "workers.json").exists() else False, 30, "workers.json with actors", driver)
        show = subprocess.run([PYTHON, "-m", "parallelrun", "runs", "show", run_dir.name, "--workspace", str(ws)],
                              capture_output=True, text=True, timeout=60)
        assert show.returncode == 0, show.stderr
        lines = [ln for ln in show.stdout.splitlines() if ln.strip().startswith("node0.process00")]
        assert len(lines) == 2 and all(" actor " in ln for ln in lines), show.stdout
    finally:
        driver.kill()  # SIGKILL: the driver cleans up nothing
        driver.wait(10)
    assert folder is not None
    wait_until(lambda: not instance_processes(folder), 45,
               f"every process of the dead driver's instance in {folder} to exit")
    wait_until(lambda: not Path(folder).exists(), 10, "the instance's folder to be removed")


@pytest.mark.timeout(60)
def test_a_clean_end_leaves_no_process_and_no_folder(tmp_path: Path, short_tmp: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Ray: start() and stop() of the bookkeeping (the executor calls stop after ray.shutdown)."""
    monkeypatch.setenv("RAY_TMPDIR", str(short_tmp / "clean"))
    inst = PrivateInstance.start(tmp_path)
    assert inst.watchdog is not None and inst.watchdog.poll() is None
    stray = _fake_instance_process(Path(inst.temp_dir), "cmdline")
    try:
        inst.stop()
        assert stray.wait(10) is not None
        assert inst.watchdog.poll() is not None
        assert not Path(inst.temp_dir).exists() and not (tmp_path / INSTANCE_FILE).exists()
    finally:
        stray.kill()
