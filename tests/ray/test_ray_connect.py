"""Connecting by address after a plain ``ray start --head``, with and without token authentication.

Ray 2.60 turns token authentication on for ``ray start`` when ``~/.ray/auth_token`` exists, but a driver
that connects by explicit address sends the token only with ``RAY_AUTH_MODE=token``. parallelrun sends it
whenever the token file is there and RAY_AUTH_MODE is unset. Each test uses its own HOME, so the real
``~/.ray/auth_token`` of this machine is never read or written.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray_jobs import RayHead, make_job

pytestmark = pytest.mark.ray


@pytest.fixture
def token_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A HOME with a Ray token, as a `ray.init()` on this machine leaves behind; RAY_AUTH_MODE unset."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(16))
    monkeypatch.setenv("HOME", str(home))
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    yield home


def _cli_run(job: Path, ws: Path, address: str, env_changes: dict[str, str] | None = None,
             timeout: float = 150) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env_changes or {})}
    return subprocess.run([sys.executable, "-m", "parallelrun", "run", str(job), "--workspace", str(ws), "--quiet",
                           "--compute", address], cwd=job.parent, capture_output=True, text=True, env=env,
                          timeout=timeout)


def _output_rows(ws: Path) -> list[str]:
    runs = sorted((ws / "runs").iterdir())
    rec = json.loads((runs[-1] / "run.json").read_text())
    return (ws / rec["output_file"]).read_text().splitlines()  # stored relative to the workspace


@pytest.mark.slow  # 15-25 s each: `make test-all` and CI run it (docs/ and README: make test-all)
@pytest.mark.timeout(240)
def test_a_token_protected_head_accepts_the_driver_without_ray_auth_mode(token_home: Path, short_tmp: Path,
                                                                         tmp_path: Path) -> None:
    head = RayHead(short_tmp / "tok", env={"HOME": str(token_home), "RAY_AUTH_MODE": None})
    try:
        job = make_job(tmp_path / "job", files=4, process_count_per_node=1)

        out = _cli_run(job, tmp_path / "ws", head.address)

        assert out.returncode == 0, out.stdout + out.stderr
        assert sorted(_output_rows(tmp_path / "ws")) == [f"f{i:03d}.txt: item {i}" for i in range(4)]
        # The head really wants the token: a driver told not to send it is refused, at once and saying why
        # (Ray alone retries for about 20 s, then says "Failed to connect").
        refused = _cli_run(job, tmp_path / "ws-refused", head.address, {"RAY_AUTH_MODE": "disabled"}, timeout=60)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"the Ray cluster at {head.address} uses token authentication" in refused.stderr
        assert "RAY_AUTH_MODE=disabled" in refused.stderr and "~/.ray/auth_token" in refused.stderr
    finally:
        head.stop()


@pytest.mark.slow  # 15-25 s each: `make test-all` and CI run it (docs/ and README: make test-all)
@pytest.mark.timeout(180)
def test_a_head_without_token_auth_accepts_a_driver_that_has_a_token_and_its_dashboard_is_linked(token_home: Path, short_tmp: Path,
                                                                     tmp_path: Path) -> None:
    head = RayHead(short_tmp / "notok", env={"HOME": str(token_home), "RAY_AUTH_MODE": "disabled"}, dashboard=True)
    try:
        job = make_job(tmp_path / "job", files=4, process_count_per_node=1)

        out = _cli_run(job, tmp_path / "ws", head.address)

        assert out.returncode == 0, out.stdout + out.stderr
        assert sorted(_output_rows(tmp_path / "ws")) == [f"f{i:03d}.txt: item {i}" for i in range(4)]
        # This head has a dashboard: its link is printed, and kept in driver.txt.
        link = f"Ray dashboard: http://127.0.0.1:{head.dashboard_port}"
        assert link in out.stderr, out.stderr
        driver_txt = next((tmp_path / "ws" / "runs").iterdir()) / "logs" / "sys" / "driver.txt"
        assert link in driver_txt.read_text()
    finally:
        head.stop()
