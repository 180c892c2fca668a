"""A run's ``.parts`` removed by someone else while its Ray actors append to their segments, and the usual
someone: a second run started into the same output folder.

What a second run (or a script) writing into the same output folder does: its start-up cleanup, or an
``rm -rf`` of the folder, unlinks the segments the first run's actors still append to. Before the writer
checked, each actor kept appending to its nameless segment, every record was committed, and the run failed
only at the assembly: "the committed output of mini-batch 0 (.parts/seg-...) is missing", saying neither who
wrote the segment nor when it went. Now the first append after the removal fails, and the run stops at once
with a message that names the worker, its pid and the likely cause. A second run into the folder of a
running one is refused before its start-up clean-up (``OutputClaim``), which used to delete the first run's
segments. Real head, real removal, real second driver, no mock. The removal also runs with local workers
(in `make test`), then a resume, which runs the mini-batches whose segment went again.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from ray_jobs import PYTHON, RayHead, committed, finish, make_job, only_run_dir, running_driver, wait_until

# On Ray each case costs ~12 s (its head is started for the module): `make test` runs the removal with local
# workers; CI runs the Ray cases too (make test-slow).
RAY = pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.slow])


def _compute(where: str, request: pytest.FixtureRequest) -> list[str]:
    return ["--compute", request.getfixturevalue("ray_head").address] if where == "ray" else []


@pytest.mark.timeout(180)
@pytest.mark.parametrize("where", ["local", RAY])
def test_parts_removed_while_actors_append_stops_the_run_naming_the_writer(where: str, request: pytest.FixtureRequest,
                                                                            tmp_path: Path) -> None:
    # 30 batches of 2 tiny files, 0.3 s each: ~5 s of work on 2 actors, long enough to remove .parts midway.
    job = make_job(tmp_path / "job", files=60, mini_batch_size=2, env={"SLEEP": "0.3"})
    ws, parts = tmp_path / "ws", job.parent / "out" / ".parts"
    with running_driver(job, ws, *_compute(where, request)) as driver:
        wait_until(lambda: (ws / "runs").exists() and committed(only_run_dir(ws) / "journal.sqlite") >= 2, 90,
                   "2 committed mini-batches", driver)
        assert any(p.name.startswith("seg-") for p in parts.iterdir()), list(parts.iterdir())
        shutil.rmtree(parts)  # what another run's cleanup of the same output folder does
        out = finish(driver, 90)
    assert driver.returncode == 1, out
    assert "was appending to was deleted" in out, out
    assert "node0.process00" in out and "pid " in out, out  # which worker and process wrote the segment
    assert "two runs" in out, out
    assert "Free space" not in out, out  # its own advice, not a full disk's
    assert "parallelrun resume" in out, out
    # Stopped at once, not after running every batch and failing at the assembly.
    assert "is missing" not in out, out
    assert committed(only_run_dir(ws) / "journal.sqlite", "state = 'succeeded'") < 30
    if where == "local":  # the resume runs the batches whose segment went, with the rest: every row once
        resumed = subprocess.run([PYTHON, "-m", "parallelrun", "resume", only_run_dir(ws).name, "--workspace",
                                  str(ws), "--quiet"], cwd=job.parent, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        rows = (job.parent / "out" / "parallel_run_step.txt").read_text().splitlines()
        assert rows == [f"f{i:03d}.txt: item {i}" for i in range(60)]  # once each, in input order
        driver_log = (only_run_dir(ws) / "logs" / "sys" / "driver.txt").read_text()
        assert "committed mini-batches run again: their output was deleted" in driver_log, driver_log


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_second_run_into_the_same_output_is_refused_and_the_first_completes(ray_head: RayHead,
                                                                            tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", files=60, mini_batch_size=2, env={"SLEEP": "0.2"})
    ws1, ws2 = tmp_path / "ws1", tmp_path / "ws2"
    with running_driver(job, ws1, "--compute", ray_head.address) as first:
        wait_until(lambda: (ws1 / "runs").exists() and committed(only_run_dir(ws1) / "journal.sqlite") >= 2, 90,
                   "2 committed mini-batches of the first run", first)
        with running_driver(job, ws2, "--compute", ray_head.address) as second:
            out2 = finish(second, 90)
        overlapped = first.poll() is None  # else the test proves nothing: the runs must overlap
        out1 = finish(first, 90)
    assert first.returncode == 0, out1  # without the claim: "the segment ... was deleted" (the second's clean-up)
    assert second.returncode == 1, out2
    assert "is in use by another run" in out2, out2
    assert overlapped, "the first run ended before the second was refused: make its job longer"
    rows = (job.parent / "out" / "parallel_run_step.txt").read_text().splitlines()
    assert sorted(rows) == sorted(f"f{i:03d}.txt: item {i}" for i in range(60))  # every row once
