"""A two-node Ray cluster (``ray.cluster_utils.Cluster``, a head without CPUs and two 1-CPU nodes on
127.0.0.1) writing its output to Azure Blob (Azurite).

Each actor stages its batches' rows as blocks of the final blob itself; the driver commits the block
list. Checked as a user would, plus through a counting proxy in front of Azurite: every id once and in
input order in the blob, nothing left beside it, the actor on each node uploaded rows itself, and the
driver process moved a few KB while the output is ~2 MB.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from ray_jobs import finish, running_driver

from store_proxy import CountingProxy

pytestmark = [pytest.mark.ray, pytest.mark.azure]

ITEMS, ROW = 16, 128 * 1024

# The cluster fixture (conftest.py): a head without CPUs and two worker nodes of 1 CPU each.
CLUSTER_NODE_CPUS = [1, 1]

SCRIPT = f'''
import os
from pathlib import Path

import ray

STATE = Path(os.environ["STATE_DIR"])

def init():
    # Which Ray node this actor runs on, and its pid (the proxy attributes connections to pids).
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / f"actor-{{os.getpid()}}").write_text(ray.get_runtime_context().get_node_id())

def run(mini_batch):
    return [os.path.basename(p) + " " + "z" * {ROW} for p in mini_batch]
'''


def _job_folder(tmp_path: Path, output: str, *, items: int, storage_options: dict[str, Any] | None) -> Path:
    root = tmp_path / "job"
    (root / "data").mkdir(parents=True)
    for i in range(items):
        (root / "data" / f"f{i:03d}.txt").write_text(f"{i}\n")
    (root / "scripts").mkdir()
    (root / "scripts" / "score.py").write_text(textwrap.dedent(SCRIPT))
    spec: dict[str, Any] = {
        "name": "rayblob", "entry_script": "score.py", "source_directory": "scripts",
        "inputs": [{"type": "file", "path": "data"}], "output": output, "mini_batch_size": 2, "node_count": 2,
        "process_count_per_node": 1, "run_invocation_timeout": 60,
        "environment_variables": {"STATE_DIR": str(root / "state"), "OMP_NUM_THREADS": "1"}}
    if storage_options:
        spec["storage_options"] = storage_options
    (root / "job.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


@pytest.mark.slow  # ~25-35 s with the cluster's start-up on this 2-core machine
@pytest.mark.timeout(240)
def test_two_ray_nodes_write_their_parts_to_azurite_and_the_driver_only_commits(
        cluster: Any, azurite: Any, tmp_path: Path) -> None:
    from azure.storage.blob import BlobServiceClient

    proxy = CountingProxy(int(urlparse(azurite.endpoint).port or 0))
    try:
        container = f"ray{uuid.uuid4().hex[:10]}"
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        service.create_container(container)
        conn = azurite.connection_string.replace(azurite.endpoint,
                                                 f"http://127.0.0.1:{proxy.port}/{azurite.account_name}")
        root = _job_folder(tmp_path, f"az://{container}/scores", items=ITEMS,
                           storage_options={"az": {"connection_string": conn}})  # travels to every actor
        state = root / "state"
        t0 = time.monotonic()
        with running_driver(root / "job.yml", tmp_path / "ws", "--compute", cluster.address) as driver:
            out = finish(driver, timeout=200)
        print(f"\nthe run took {time.monotonic() - t0:.1f}s")
        assert driver.returncode == 0, out

        # Every id once, in input order, in the blob; nothing else in the container.
        cc = service.get_container_client(container)
        data = cc.download_blob("scores/parallel_run_step.txt").readall()
        assert [ln.split(" ", 1)[0] for ln in data.decode().splitlines()] == [f"f{i:03d}.txt" for i in range(ITEMS)]
        assert sorted(b.name for b in cc.list_blobs()) == ["scores/parallel_run_step.txt"]

        # One actor on each worker node (the head has no CPU), and each uploaded rows itself.
        actors = {int(p.name.split("-")[1]): p.read_text() for p in state.glob("actor-*")}
        nodes = {n.node_id for n in cluster.worker_nodes}
        assert set(actors.values()) == nodes, (actors, nodes)
        for pid in actors:
            assert proxy.opened_by(pid) >= 1, f"actor {pid} opened no connection to the store"
            sent = sum(c.moved(None)[1] for c in proxy.connections if pid in c.holders)
            assert sent >= 2 * ROW, (pid, sent)  # at least one batch of rows
        report = next((tmp_path / "ws" / "runs").iterdir()) / "logs" / "sys" / "job_report"
        with open(report / "processed_mini-batches.csv", newline="") as f:
            assert {r["worker"] for r in csv.DictReader(f)} == {"node0.process000", "node1.process000"}

        # The driver committed names only: a few KB through its own connections.
        down, up = proxy.moved_by(driver.pid)
        assert proxy.opened_by(driver.pid) >= 1
        assert down < len(data) // 20 and up < len(data) // 20, (down, up, len(data))
    finally:
        proxy.close()


@pytest.mark.slow  # shares the cluster above (its start-up alone is ~20 s)
@pytest.mark.timeout(240)
def test_credentials_only_in_the_drivers_environment_stop_the_run_with_what_to_fix(
        cluster: Any, azurite: Any, tmp_path: Path) -> None:
    """The driver's probe passes with its own environment, the actors on the other nodes have none: the run
    stops at the first batch (exit 1, no item counted as failed) saying which credentials to set where."""
    from azure.storage.blob import BlobServiceClient

    container = f"ray{uuid.uuid4().hex[:10]}"
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    service.create_container(container)
    root = _job_folder(tmp_path, f"az://{container}/scores", items=4, storage_options=None)
    done = subprocess.run([sys.executable, "-m", "parallelrun", "run", "job.yml", "--workspace",
                           str(tmp_path / "ws"), "--compute", cluster.address],
                          cwd=root, capture_output=True, text=True, timeout=200,
                          env={**os.environ, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "writing the output of mini-batch" in done.stderr, done.stderr
    assert "credentials the workers see" in done.stderr and "AZURE_STORAGE_CONNECTION_STRING" in done.stderr
    assert "Free space" not in done.stderr
    assert "0 failed" in done.stderr  # the store's failure, not the items'
    assert list(service.get_container_client(container).list_blobs()) == []
