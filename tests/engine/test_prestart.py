"""Workers started ahead by ``parallelrun run`` (execution/prestart.py): which command lines and jobs get
them, that they run the job exactly as spawned workers do, and that none outlives its command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from engine_helpers import expected_names

from parallelrun.data import walk_ahead
from parallelrun.execution import prestart

# init() records what a worker sees of the job; run() echoes the file names.
REPORT = """
import json, os, sys
from parallelrun.execution import prestart

def init():
    name = os.environ["PARALLELRUN_AGENT_NAME"]
    seen = {"ahead": prestart.started_ahead, "argv": sys.argv[1:], "cwd": os.getcwd(),
            "var": os.environ.get("JOB_VAR"), "own_group": os.getpgid(0) == os.getpid(),
            "source_on_path": os.path.dirname(os.path.abspath(__file__)) in sys.path}
    with open(os.path.join(os.environ["REPORT_DIR"], name + ".json"), "w") as f:
        json.dump(seen, f)

def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
"""


def _spec(tmp_path: Path, **fields: object) -> Path:
    doc = {"name": "j", "entry_script": "entry.py", "inputs": [{"type": "file", "path": "data"}], **fields}
    p = tmp_path / f"job-{uuid.uuid4().hex[:6]}.yml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_only_a_plain_local_run_starts_workers_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prestart, "spare_cpus", lambda: 3)  # a 4-CPU machine: three CPUs beside the driver
    monkeypatch.delenv(prestart.ENV_OFF, raising=False)
    job = str(_spec(tmp_path, process_count_per_node=2))
    assert prestart.plan(["run", job]) == 2
    assert prestart.plan(["run", job, "--workspace", "ws", "--quiet"]) == 2
    assert prestart.plan(["run", job, "--workspace=ws", "-q"]) == 2
    assert prestart.plan(["run", str(_spec(tmp_path, process_count_per_node=8))]) == 3  # at most the spare CPUs
    for argv in (["plan", job], ["run", job, "--set", "compute=ray"], ["run", job, "--compute", "ray"], ["run"],
                 ["run", str(tmp_path / "missing.yml")]):
        assert prestart.plan(argv) == 0, argv
    for fields in ({"compute": "ray"}, {"node_count": 2}, {"environment": "env.yml"},
                   {"process_count_per_node": "2"}, {"type": "parallel"}):
        assert prestart.plan(["run", str(_spec(tmp_path, **fields))]) == 0, fields
    v2 = tmp_path / "v2.yml"
    v2.write_text("$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json\n")
    bad = tmp_path / "bad.yml"
    bad.write_text("entry_script: [unclosed\n")
    assert prestart.plan(["run", str(v2)]) == prestart.plan(["run", str(bad)]) == 0
    monkeypatch.setenv(prestart.ENV_OFF, "1")
    assert prestart.plan(["run", job]) == 0
    monkeypatch.setattr(prestart, "spare_cpus", lambda: 0)  # one CPU: the driver's
    monkeypatch.delenv(prestart.ENV_OFF)
    assert prestart.plan(["run", job]) == 0


@pytest.mark.parametrize("off", ["", "1"])
def test_workers_started_ahead_run_the_job_as_spawned_ones_do(job_factory, tmp_path: Path, off: str) -> None:
    job = job_factory(REPORT, arguments=["--model", "m.onnx"], environment_variables={"JOB_VAR": "from-the-job"})
    reports = tmp_path / "reports"
    reports.mkdir()
    res = job.cli("run", "job.yml", "--workspace", str(job.ws), "--quiet",
                  env={**os.environ, "REPORT_DIR": str(reports), prestart.ENV_OFF: off})
    assert res.returncode == 0, res.stderr
    assert sorted(job.lines()) == sorted(expected_names(12))
    seen = {p.stem: json.loads(p.read_text()) for p in reports.glob("*.json")}
    assert sorted(seen) == ["node0.process000", "node0.process001"]
    ahead = 0 if off else min(2, prestart.spare_cpus())
    assert [seen[k].pop("ahead") for k in sorted(seen)] == [True] * ahead + [False] * (2 - ahead)
    for s in seen.values():  # the same job either way: arguments, variables, folder, process group, sys.path
        assert s == {"argv": ["--model", "m.onnx"], "cwd": str(job.root), "var": "from-the-job",
                     "own_group": True, "source_on_path": True}


def _left_with(mark: str) -> list[int]:
    """Processes (other than this one) whose environment holds ``mark``."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if mark.encode() in (d / "environ").read_bytes():
                    found.append(int(d.name))
            except OSError:
                pass
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _wait_none_left(mark: str, seconds: float = 15) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _left_with(mark)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_a_worker_started_ahead_and_not_taken_is_stopped(tmp_path: Path) -> None:
    """A job that fails validation after its worker was started: the worker goes with the command."""
    (tmp_path / "entry.py").write_text("def run(mb):\n    return mb\n")
    job = _spec(tmp_path, process_count_per_node=2)  # its input folder does not exist: exit code 2
    mark = f"PRESTART_MARK={uuid.uuid4().hex}"
    env = {**os.environ, "PRESTART_MARK": mark.split("=", 1)[1], prestart.ENV_OFF: ""}
    res = subprocess.run([sys.executable, "-m", "parallelrun", "run", str(job), "--workspace", str(tmp_path / "ws")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "data" in res.stderr, res.stderr
    # The worker is killed and reaped before the command returns; multiprocessing's resource tracker,
    # which shares the mark, ends once it sees the command gone.
    assert [pid for pid in _left_with(mark) if b"spawn_main" in _cmdline(pid)] == []
    assert _wait_none_left(mark) == []


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_a_worker_started_ahead_dies_with_a_killed_driver(tmp_path: Path) -> None:
    (tmp_path / "entry.py").write_text("def run(mb):\n    return mb\n")
    job = _spec(tmp_path, process_count_per_node=2)
    mark = uuid.uuid4().hex
    code = ("import os, signal, sys, time\nfrom parallelrun.execution import prestart\n"
            "prestart.prestart(1)\n"
            "p, conn = prestart._waiting[0]\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(0.5)\n"  # let it reach its wait for a configuration (or not: it must go either way)
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    res = subprocess.run([sys.executable, "-c", code, str(job)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PRESTART_MARK": mark})
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert int(res.stdout.split()[0]) > 0
    assert _wait_none_left(mark) == []


def _big_input_job(tmp_path: Path, n: int = 6000) -> Path:
    """A job whose input folder's directory entry is big enough to be walked by a child (walk_ahead)."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(n):
        (data / f"item-{i:06d}-{'x' * 24}.txt").write_text("x")
    assert data.stat().st_size >= walk_ahead.MIN_DIR_BYTES
    (tmp_path / "entry.py").write_text("import os\n\ndef run(mb):\n    return [os.path.basename(p) for p in mb]\n")
    job = tmp_path / "job.yml"
    job.write_text(yaml.safe_dump({"name": "early-walk", "entry_script": "entry.py", "mini_batch_size": 50,
                                   "inputs": [{"type": "file", "path": "data"}], "process_count_per_node": 2}))
    return job


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the walker is forked on Linux only")
def test_a_big_input_folder_is_walked_while_the_command_starts_and_the_run_is_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _big_input_job(tmp_path)
    monkeypatch.setattr(prestart, "spare_cpus", lambda: 1)
    monkeypatch.setattr(walk_ahead, "_single_threaded", lambda: True)  # pytest's own threads do not matter here
    monkeypatch.delenv(prestart.ENV_OFF, raising=False)
    monkeypatch.setattr(prestart, "prestart", lambda n: None)  # the walk alone: no worker in this test
    prestart.start_for(["run", str(job)])
    assert list(walk_ahead._early) == [str(tmp_path / "data")]  # where planning will look for it
    prestart.discard()  # the command failed before planning: nothing is left behind
    assert not walk_ahead._early

    runs = {}
    for off in ("1", ""):  # without, then with, everything started ahead: the same plan and output
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        res = subprocess.run([sys.executable, "-m", "parallelrun", "run", str(job), "--workspace", str(tmp_path / "ws"),
                              "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                             env={**os.environ, prestart.ENV_OFF: off})
        assert res.returncode == 0, res.stderr
        lines = (tmp_path / "out" / "early-walk" / "parallel_run_step.txt").read_text().splitlines()
        run_dir = max((tmp_path / "ws" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
        meta = json.loads(subprocess.run(
            [sys.executable, "-c", "import json, sqlite3, sys; print(json.dumps(dict(sqlite3.connect(sys.argv[1])"
             ".execute('SELECT key, value FROM meta'))))", str(run_dir / "journal.sqlite")],
            capture_output=True, text=True, check=True).stdout)
        runs[off] = (lines, json.loads(meta["input_fingerprint"]))
    assert runs["1"][0] == runs[""][0] == sorted(runs[""][0]) and len(runs[""][0]) == 6000
    assert runs["1"][1] == runs[""][1]  # the same input fingerprint: resume sees the same inputs
