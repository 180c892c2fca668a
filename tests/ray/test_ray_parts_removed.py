"""A run's ``.parts`` removed by someone else while its Ray actors append to their segments.

What a second run (or a script) writing into the same output folder does: its start-up cleanup, or an
``rm -rf`` of the folder, unlinks the segments the first run's actors still append to. Before the writer
checked, each actor kept appending to its nameless segment, every record was committed, and the run failed
only at the assembly: "the committed output of mini-batch 0 (.parts/seg-...) is missing", saying neither who
wrote the segment nor when it went. Now the first append after the removal fails, and the run stops at once
with a message that names the worker, its pid and the likely cause. Real head, real removal, no mock.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ray_jobs import RayHead, committed, finish, make_job, only_run_dir, running_driver, wait_until

pytestmark = pytest.mark.ray


@pytest.mark.timeout(180)
def test_parts_removed_while_actors_append_stops_the_run_naming_the_writer(ray_head: RayHead,
                                                                            tmp_path: Path) -> None:
    # 30 batches of 2 tiny files, 0.3 s each: ~5 s of work on 2 actors, long enough to remove .parts midway.
    job = make_job(tmp_path / "job", files=60, mini_batch_size=2, env={"SLEEP": "0.3"})
    ws, parts = tmp_path / "ws", job.parent / "out" / ".parts"
    with running_driver(job, ws, "--compute", ray_head.address) as driver:
        wait_until(lambda: (ws / "runs").exists() and committed(only_run_dir(ws) / "journal.sqlite") >= 2, 90,
                   "2 committed mini-batches", driver)
        assert any(p.name.startswith("seg-") for p in parts.iterdir()), list(parts.iterdir())
        shutil.rmtree(parts)  # what another run's cleanup of the same output folder does
        out = finish(driver, 90)
    assert driver.returncode == 1, out
    assert "was appending to was deleted" in out, out
    assert "node0.process00" in out and "pid " in out, out  # which worker and process wrote the segment
    assert "two runs" in out, out
    # Stopped at once, not after running every batch and failing at the assembly.
    assert "is missing" not in out, out
    assert committed(only_run_dir(ws) / "journal.sqlite", "state = 'succeeded'") < 30
