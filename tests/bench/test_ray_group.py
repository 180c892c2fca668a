"""The benchmark's Ray head (``bench/ray_group.py``): started with ``ray start --head``, reachable by
address, and stopped with every one of its processes - and only its own - also when a contender fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="install the ray extra: pip install 'parallelrun[ray]'")
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the benchmark is a folder of the repository, not an installed package

from bench.peers import Work  # noqa: E402
from bench.ray_group import BenchHead, run_ray_group  # noqa: E402

from parallelrun.execution.ray_instance import instance_processes  # noqa: E402

pytestmark = pytest.mark.ray


def _answers(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.mark.slow  # ~10 s: a real head started and stopped
@pytest.mark.timeout(180)
def test_the_head_is_stopped_with_all_its_processes_and_nothing_else() -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    head = BenchHead.start(num_cpus=1)
    try:
        assert head.address.startswith("127.0.0.1:") and _answers(head.address)
        procs = instance_processes(head.temp_dir)
        names = " ".join(" ".join(p.cmdline()) for p in procs)
        assert "gcs_server" in names and "raylet" in names, names
        # Its address file stays in its own folder: no `address="auto"` driver elsewhere finds this head.
        port = head.address.rsplit(":", 1)[1]
        assert (Path(head.temp_dir) / "ray_current_cluster").read_text().strip().endswith(f":{port}")
    finally:
        head.stop()
    try:
        assert instance_processes(head.temp_dir) == []
        assert not os.path.exists(head.temp_dir) and not _answers(head.address)
        assert bystander.poll() is None  # a process of another group lives on
    finally:
        bystander.kill()
        bystander.wait(10)


@pytest.mark.slow  # ~25 s on a busy 2-core machine: a head's start, a command that fails, the stop
@pytest.mark.timeout(180)
def test_a_failing_contender_is_reported_and_the_head_still_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[BenchHead] = []
    real_start = BenchHead.start

    def start(num_cpus: int, timeout: float = 180) -> BenchHead:
        started.append(real_start(num_cpus, timeout))
        return started[-1]

    monkeypatch.setattr(BenchHead, "start", staticmethod(start))
    # An entry script that does not exist: the command exits 2 (a spec error), as any failing run would.
    work = Work("W0", "file", tmp_path / "missing.py", [], tmp_path, 1, 1, 1, tmp_path / "scratch")
    work.scratch.mkdir()
    t0 = time.monotonic()
    got = run_ray_group(work, ["parallelrun_ray"], runs=2)
    print(f"\nhead started, one failing command, head stopped: {time.monotonic() - t0:.1f}s")
    assert got["parallelrun_ray"] == []
    assert "exited 2" in got["errors"]["parallelrun_ray"], got
    (head,) = started
    assert instance_processes(head.temp_dir) == [] and not os.path.exists(head.temp_dir)
