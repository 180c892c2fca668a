"""node_count > 1 on a real multi-node cluster: ``ray.cluster_utils.Cluster`` with two worker nodes.

The head has no CPUs, so every actor lands on one of the two worker nodes (2 CPUs each, so that a node
can take the other node's actor when that node is removed). All nodes run on this machine, each with its
own raylet, object store and worker processes, which is what Ray's own multi-node tests use.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ray_jobs import (
    assert_each_once,
    committed,
    file_rows,
    finish,
    make_job,
    only_run_dir,
    output_lines,
    report_rows,
    running_driver,
    started,
    wait_until,
)

from parallelrun import run_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a two-node ray.cluster_utils.Cluster: ~20 s; CI runs it (make test-slow)

# Every node of these clusters runs on this machine, so the output folder is shared storage: say so.
SHARED = {"file": {"shared": True}}

# The cluster fixture (conftest.py): a head without CPUs and two worker nodes of 2 CPUs each.
CLUSTER_NODE_CPUS = [2, 2]


@pytest.mark.timeout(120)
def test_a_local_output_on_two_nodes_is_refused_unless_marked_shared(cluster: Any, tmp_path: Path) -> None:
    """Actors write their parts themselves: a path on one node's disk is not an output for two nodes."""
    job = make_job(tmp_path / "job", files=4, node_count=2, process_count_per_node=1)
    out = subprocess.run([sys.executable, "-m", "parallelrun", "run", str(job), "--workspace", str(tmp_path / "ws"),
                          "--quiet", "--set", f"compute={cluster.address}"],
                         capture_output=True, text=True, timeout=100, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "is a path on this machine's disk" in out.stderr and "storage_options: {file: {shared: true}}" in out.stderr
    assert not (job.parent / "out" / "parallel_run_step.txt").exists()


def _worker_nodes(cluster: Any) -> dict[str, Any]:
    return {n.node_id: n for n in cluster.worker_nodes}


@pytest.mark.timeout(120)
def test_node_count_2_puts_work_on_both_nodes(cluster: Any, tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", files=24, env={"SLEEP": "0.2"}, node_count=2, process_count_per_node=1,
                   storage_options=SHARED)

    res = run_job(job, overrides=[f"compute={cluster.address}"], workspace=tmp_path / "ws", progress="quiet")

    assert res.status == "Completed", res.summary()
    assert_each_once(output_lines(res), file_rows(24))
    agents = {row["worker"] for row in report_rows(res.record.path)}
    assert agents == {"node0.process000", "node1.process000"}, agents
    # Each agent ran on its own Ray node, and those are the two worker nodes (the head has no CPU).
    node_of = {agent: node_id for _, agent, node_id, _ in started(job.parent)}
    assert len(set(node_of.values())) == 2 and set(node_of.values()) == set(_worker_nodes(cluster))
    for node in ("node0", "node1"):
        assert (res.record.logs_dir / "user" / "stdout" / node / "process000.stdout.txt").is_file()


@pytest.mark.timeout(60)
def test_more_workers_than_any_node_fits_is_refused_with_exit_code_2(cluster: Any, tmp_path: Path) -> None:
    # node_count is a maximum (elastic clusters), but a node must have room for process_count_per_node.
    job = make_job(tmp_path / "job", files=2, node_count=2, process_count_per_node=3)
    out = subprocess.run(
        [sys.executable, "-m", "parallelrun", "run", str(job), "--workspace", str(tmp_path / "ws"), "--quiet",
         "--compute", cluster.address], capture_output=True, text=True, timeout=50,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    message = " ".join(out.stderr.split())
    # Three nodes are alive: the head has no CPU, the worker nodes 2 each.
    assert "process_count_per_node: 3 needs a node with room for CPU 3" in message
    assert "has 0 such node(s), short of CPU" in message


@pytest.mark.slow  # 15-25 s each: `make test-all` and CI run it (docs/ and README: make test-all)
@pytest.mark.timeout(150)
def test_removing_a_node_mid_run_still_gives_every_item_once(cluster: Any, tmp_path: Path) -> None:
    n = 40
    job = make_job(tmp_path / "job", files=n, env={"SLEEP": "0.4"}, node_count=2, process_count_per_node=1,
                   storage_options=SHARED)
    ws = tmp_path / "ws"
    removed = None
    try:
        with running_driver(job, ws, "--compute", cluster.address) as driver:
            def node1_busy() -> bool:
                # node1 began its second mini-batch and the driver committed its first (an actor runs one
                # at a time): that batch counts for node1 whatever happens to the node next.
                if not (ws / "runs").exists():
                    return False
                by_node1 = committed(only_run_dir(ws) / "journal.sqlite", "state = 'succeeded' AND worker LIKE 'node1.%'")
                return by_node1 >= 1 and sum(agent.startswith("node1.") for _, agent, _, _ in started(job.parent)) >= 2

            wait_until(node1_busy, 90, "node1 to run two mini-batches, its first committed", driver)
            node1 = next(node_id for _, agent, node_id, _ in started(job.parent) if agent.startswith("node1."))
            removed = _worker_nodes(cluster)[node1]
            cluster.remove_node(removed)
            out = finish(driver, timeout=120)
    finally:
        if removed is not None:
            cluster.add_node(num_cpus=2)  # leave two worker nodes for any later test
            cluster.wait_for_nodes()

    assert driver.returncode == 0, out
    run_dir = only_run_dir(ws)
    assert_each_once(Path(job.parent / "out" / "parallel_run_step.txt").read_text().splitlines(), file_rows(n))
    driver_log = (run_dir / "logs" / "sys" / "driver.txt").read_text()
    assert "node1.process000" in driver_log and "its node has died" in driver_log, driver_log
    rows = report_rows(run_dir)
    assert {r["state"] for r in rows} == {"succeeded"}
    # node1's batches before the removal count; node0 did the rest: a gone node's worker is not moved to
    # another node (elastic clusters: the pool shrinks, docs/ray.md).
    workers = {r["worker"] for r in rows}
    assert workers == {"node0.process000", "node1.process000"}, workers
    assert "not replaced" in driver_log, driver_log
    assert os.path.isdir(run_dir / "logs" / "user" / "stdout" / "node1")
