"""Fixtures for the Ray suite: one real Ray head per module, or one multi-node cluster per module, stopped
at the module's end."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, short_tmp: Path) -> Iterator[Any]:
    """A multi-node cluster on 127.0.0.1 (``ray.cluster_utils.Cluster``, what Ray's own multi-node tests
    use): a head without CPUs, so every actor lands on a worker node, and one worker node per entry of
    the test module's ``CLUSTER_NODE_CPUS`` (their CPU counts). Each node has its own raylet, object store
    and worker processes."""
    from ray.cluster_utils import Cluster

    node_cpus = getattr(request.module, "CLUSTER_NODE_CPUS", None)
    if not node_cpus:
        pytest.fail(f"{request.module.__name__} uses the cluster fixture: set CLUSTER_NODE_CPUS = [cpus, ...]")
    with pytest.MonkeyPatch.context() as mp:
        # Cluster writes the "current cluster" address file into Ray's default temp dir: keep it ours.
        mp.setenv("RAY_TMPDIR", str(short_tmp))
        mp.setenv("RAY_AUTH_MODE", "disabled")  # see RayHead in ray_jobs.py
        (short_tmp / "ray").mkdir(exist_ok=True)
        t0 = time.monotonic()
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                          "temp_dir": str(short_tmp / "ray")})
        try:
            for cpus in node_cpus:
                c.add_node(num_cpus=cpus)
            c.wait_for_nodes()
            print(f"\nCluster with a head and {len(node_cpus)} worker node(s) up in {time.monotonic() - t0:.1f}s")
            yield c
        finally:
            c.shutdown()
