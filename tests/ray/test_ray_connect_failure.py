"""A failed connection leaves this process able to connect again.

Ray keeps half-made state when ``ray.init`` fails after it started connecting (a Ray Client session
refused by the server, a runtime_env Ray rejects): the next ``ray.init`` in the same process then fails
with a bare ``AssertionError`` from Ray's internals. A notebook, a pipeline driver or a test session runs
several jobs in one process, so parallelrun resets Ray after a failed connect.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ray_jobs import RayHead, assert_each_once, file_rows, make_job, output_lines

from parallelrun import run_job
from parallelrun.errors import UsageError


@pytest.mark.slow  # a Ray Client session on its own Ray head: ~15 s; CI runs it (make test-slow)
@pytest.mark.timeout(120)
def test_a_job_after_a_failed_ray_client_connect_runs(ray_head: RayHead, tmp_path: Path) -> None:
    # Ray refuses pip together with uv while the Ray Client session is being set up.
    bad = make_job(tmp_path / "bad", files=2, ray={"runtime_env": {"pip": ["a"], "uv": ["b"]}})
    with ray_head.ray_client() as address, pytest.raises(UsageError, match="cannot connect to the Ray cluster") as err:
        run_job(bad, overrides=[f"compute={address}"], workspace=tmp_path / "ws", progress="quiet")
    assert "'pip' field, 'uv' field" in str(err.value)

    good = make_job(tmp_path / "good", files=4)
    res = run_job(good, overrides=[f"compute={ray_head.address}"], workspace=tmp_path / "ws", progress="quiet")

    assert res.status == "Completed", res.summary()
    assert_each_once(output_lines(res), file_rows(4))
