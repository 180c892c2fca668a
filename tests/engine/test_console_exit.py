"""The ``parallelrun`` command in its own process (``cli.console``) keeps what it loaded away from the cyclic
garbage collector (``gc.freeze``) once a run's modules are in and before exiting; ``cli.main`` called
in-process leaves the caller's collector as it was."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from parallelrun import cli

ENTRY = "def run(mini_batch):\n    return [p.rsplit('/', 1)[-1] for p in mini_batch]\n"

# Reports, at exit, how many objects the collector was told to leave alone (its own counter).
PROBE = """
import atexit, gc, sys
from parallelrun import cli
atexit.register(lambda: print("frozen", gc.get_freeze_count(), file=sys.stderr))
sys.argv[0] = "parallelrun"
cli.console()
"""


def _job(tmp_path: Path, n: int) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(n):
        (data / f"f{i:05d}.txt").write_text("x")
    (tmp_path / "entry.py").write_text(ENTRY)
    job = tmp_path / "job.yml"
    job.write_text(yaml.safe_dump({"name": "console-exit", "entry_script": "entry.py", "inputs": [{"type": "file", "path": "data"}],
                                   "output": "out", "mini_batch_size": 10, "process_count_per_node": 2}))
    return job


def test_the_command_freezes_what_it_loaded_and_its_run_completes(tmp_path: Path) -> None:
    job = _job(tmp_path, 3000)
    done = subprocess.run([sys.executable, "-c", PROBE, "run", str(job), "--workspace", str(tmp_path / "ws"),
                           "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "out" / "parallel_run_step.txt").read_text().splitlines()
    assert lines == [f"f{i:05d}.txt" for i in range(3000)]  # every item once, in input order
    probe = next(line for line in done.stderr.splitlines() if line.startswith("frozen "))
    assert int(probe.split()[1]) > 10_000  # typer, pydantic and the engine: tens of thousands of objects


def test_main_in_process_leaves_the_collector_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _job(tmp_path, 20)
    monkeypatch.chdir(tmp_path)
    before = gc.get_freeze_count()
    assert cli.main(["run", str(job), "--workspace", str(tmp_path / "ws"), "--quiet"]) == 0
    assert gc.get_freeze_count() == before
    assert len((tmp_path / "out" / "parallel_run_step.txt").read_text().splitlines()) == 20
