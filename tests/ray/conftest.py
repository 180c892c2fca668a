"""Fixtures for the Ray suite: one real Ray head per module, stopped at the module's end."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="install the ray extra: pip install 'parallelrun[ray]'")

from ray_jobs import RayHead  # noqa: E402


@pytest.fixture(scope="module")
def short_tmp() -> Iterator[Path]:
    """A short temp folder: Ray's Unix socket paths must stay under ~107 characters."""
    path = Path(tempfile.mkdtemp(prefix="prray-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head(short_tmp: Path) -> Iterator[RayHead]:
    """A real head from `ray start --head` on 127.0.0.1 with 2 CPUs."""
    head = RayHead(short_tmp / "ray", num_cpus=2)
    print(f"\n`ray start --head` took {head.started_in:.1f}s")
    try:
        yield head
    finally:
        head.stop()
