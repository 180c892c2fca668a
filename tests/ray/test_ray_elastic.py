"""Elastic clusters on a real multi-node Ray cluster (``ray.cluster_utils.Cluster`` on 127.0.0.1): the
pool grows when a node joins during the run and shrinks when one leaves, and every item is written
exactly once, a node that leaves costing only the mini-batch it was running.

Nodes are added and removed with ``Cluster.add_node`` / ``remove_node`` during the run, which is what an
autoscaler does to a job. ``ray.cluster_utils.AutoscalingCluster`` (Ray 2.60: a fake node provider) is
not used: its ``start`` and ``shutdown`` run ``ray stop --force``, which kills every Ray process of the
user on the machine (other test runs' clusters included), and it adds an autoscaler process for the
same two events. The head has no CPU, so workers only ever land on the worker nodes.

What happens when is not left to timing: the entry script below lets a test *hold* a worker inside a
mini-batch (``hold-<agent>`` in the state folder, holding from the agent's ``K+1``-th batch on), so a
node is removed while its worker is known to be in ``run()``, and the job cannot end before a node joins.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
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
    report_rows,
    running_driver,
    started,
    wait_until,
)

pytestmark = pytest.mark.ray

SHARED = {"file": {"shared": True}}  # every node runs on this machine: the output folder is shared storage

# The cluster fixture (conftest.py): a head without CPUs and one worker node of 1 CPU; tests add and
# remove nodes, and leave one.
CLUSTER_NODE_CPUS = [1]

ENTRY_SCRIPT = '''\
import os
import time
from pathlib import Path

from parallelrun import EntryScript

STATE = Path(os.environ["STATE_DIR"])
calls = 0


def init():
    pass


def run(mini_batch, context):
    global calls
    calls += 1
    agent = EntryScript().agent_name
    import ray
    ctx = ray.get_runtime_context()
    (STATE / "started").mkdir(parents=True, exist_ok=True)
    (STATE / "started" / f"{context.minibatch_index}-{agent}-{time.time_ns()}").write_text(
        f"{ctx.get_node_id()} {ctx.gcs_address}")
    hold = STATE / f"hold-{agent}"
    deadline = time.monotonic() + 100
    while hold.exists() and calls > int(hold.read_text() or 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(float(os.environ.get("SLEEP", "0")))
    return [f"{Path(p).name}: {Path(p).read_text().strip()}" for p in mini_batch]
'''


def _job(tmp_path: Path, files: int, **fields: Any) -> Path:
    job = make_job(tmp_path / "job", files=files, env={"SLEEP": "0.05"}, process_count_per_node=1,
                   run_invocation_timeout=120, storage_options=SHARED, **fields)
    (job.parent / "scripts" / "score.py").write_text(ENTRY_SCRIPT)
    return job


def _hold(job: Path, agent: str, after: int) -> Path:
    """Hold ``agent`` inside its mini-batches from its ``after + 1``-th on, until the file is removed."""
    path = job.parent / "state" / f"hold-{agent}"
    path.write_text(str(after))
    return path


def _runs_of(job: Path, agent: str) -> list[tuple[int, str]]:
    """(mini-batch index, Ray node id) of every run() call ``agent`` began."""
    return [(index, node) for index, who, node, _ in started(job.parent) if who == agent]


def _lost_attempts(run_dir: Path) -> list[tuple[int, str]]:
    """(mini-batch, worker) of every attempt the driver recorded as lost; read-only, so that a test can
    watch a running driver's journal (WAL readers do not block it)."""
    db = sqlite3.connect(f"file:{run_dir / 'journal.sqlite'}?mode=ro", uri=True, timeout=5)
    try:
        return [(int(b), str(w)) for b, w in db.execute("SELECT batch, worker FROM attempts WHERE outcome = 'lost'")]
    finally:
        db.close()


@pytest.mark.slow  # ~11-15 s with the cluster; make test keeps the elastic rules in test_ray_elastic_unit.py
@pytest.mark.timeout(180)
def test_a_node_that_joins_gets_workers_and_one_that_leaves_costs_only_its_running_batch(
        cluster: Any, tmp_path: Path) -> None:
    n = 40  # 20 mini-batches of 2 files
    job = _job(tmp_path, n, node_count=2)
    ws = tmp_path / "ws"
    release0 = _hold(job, "node0.process000", 1)  # node0 does one batch, then waits: the job cannot end early
    _hold(job, "node1.process000", 1)  # the joining node does one batch, then is in run() when removed
    before = {n.node_id for n in cluster.worker_nodes}
    t0 = time.monotonic()
    with running_driver(job, ws, "--compute", cluster.address) as driver:
        wait_until(lambda: len(_runs_of(job, "node0.process000")) >= 2, 90, "node0 to hold its 2nd batch", driver)
        joined = cluster.add_node(num_cpus=1)
        t_join = time.monotonic()
        wait_until(lambda: len(_runs_of(job, "node1.process000")) >= 2 and committed(
            only_run_dir(ws) / "journal.sqlite") >= 2, 60, "the new node to do one batch and hold the next", driver)
        print(f"\nthe new node's worker ran {time.monotonic() - t_join:.1f}s after the node was added")
        held = _runs_of(job, "node1.process000")
        cluster.remove_node(joined)
        # The driver records the loss while node0 still holds (nothing else could run the lost batch).
        wait_until(lambda: _lost_attempts(only_run_dir(ws)), 60, "the driver to record node1's batch as lost", driver)
        release0.unlink()
        out = finish(driver)
    print(f"run with a node joining and leaving: {time.monotonic() - t0:.1f}s")

    assert driver.returncode == 0, out
    run_dir = only_run_dir(ws)
    assert_each_once((job.parent / "out" / "parallel_run_step.txt").read_text().splitlines(), file_rows(n))
    # The joining node became node1: its worker ran on that Ray node, and its first batch counts.
    assert joined.node_id not in before and {node for _, node in held} == {joined.node_id}
    rows = report_rows(run_dir)
    assert {r["state"] for r in rows} == {"succeeded"}
    assert Counter(r["worker"] for r in rows)["node1.process000"] == 1, rows
    # Leaving cost only the batch node1 was in: one lost attempt, re-run once; nothing else ran twice.
    in_run = max(i for i, _ in held)  # its 2nd batch (an actor runs its calls in the order they were sent)
    assert _lost_attempts(run_dir) == [(in_run, "node1.process000")]
    twice = {i for i, k in Counter(i for i, *_ in started(job.parent)).items() if k > 1}
    assert twice == {in_run}
    # Not replaced elsewhere (node0 keeps its one worker); the driver's log says what happened.
    agents = {a for _, a, _, _ in started(job.parent)}
    assert agents == {"node0.process000", "node1.process000"}, agents
    log = (run_dir / "logs" / "sys" / "driver.txt").read_text()
    assert "joined the cluster: it becomes node1" in log and "starting on 1 node(s) of node_count 2" in log, log
    assert "node1.process000" in log and "not replaced" in log, log
    placed = next(line for line in log.splitlines() if "worker node1.process000 is Ray actor" in line)
    assert joined.node_id in placed, placed  # the run's own record names the node that joined


@pytest.mark.slow  # ~25 s: a node added, a wait past the join interval, a node removed and one joining
@pytest.mark.timeout(180)
def test_node_count_is_a_maximum_and_a_node_that_leaves_frees_its_place(cluster: Any, tmp_path: Path) -> None:
    n = 20
    job = _job(tmp_path, n, node_count=1)
    ws = tmp_path / "ws"
    _hold(job, "node0.process000", 1)  # held in its 2nd batch until its node is removed
    assert len(cluster.worker_nodes) == 1
    first = next(iter(cluster.worker_nodes))
    with running_driver(job, ws, "--compute", cluster.address) as driver:
        wait_until(lambda: len(_runs_of(job, "node0.process000")) >= 2, 90, "node0 to hold its 2nd batch", driver)
        spare = cluster.add_node(num_cpus=1)
        # Past the 5 s join interval: at the maximum already, the spare node must stay unused. An absence
        # has no event to wait for (the driver logs nothing when it is at node_count), hence the fixed wait.
        time.sleep(7)
        assert not _runs_of(job, "node1.process000")
        assert {node for _, node in _runs_of(job, "node0.process000")} == {first.node_id}
        cluster.remove_node(first)
        out = finish(driver)

    assert driver.returncode == 0, out
    run_dir = only_run_dir(ws)
    assert_each_once((job.parent / "out" / "parallel_run_step.txt").read_text().splitlines(), file_rows(n))
    # The spare node took the place the removed one left: its worker is node1, on that Ray node.
    assert {node for _, node in _runs_of(job, "node1.process000")} == {spare.node_id}
    held = max(i for i, _ in _runs_of(job, "node0.process000"))
    assert _lost_attempts(run_dir) == [(held, "node0.process000")]
    assert [i for i, k in Counter(i for i, *_ in started(job.parent)).items() if k > 1] == [held]


HOLD_IN_INIT = '''\
import os
import time
from pathlib import Path

STATE = Path(os.environ["STATE_DIR"])


def init():
    (STATE / "in-init").write_text(str(os.getpid()))
    deadline = time.monotonic() + 100
    while (STATE / "hold-init").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def run(mini_batch, context):
    return [str(p) for p in mini_batch]
'''


@pytest.mark.slow  # with the test above, make test no longer starts this module's cluster (~8 s)
@pytest.mark.timeout(180)
def test_losing_every_worker_during_start_up_says_their_node_left(cluster: Any, tmp_path: Path) -> None:
    """The only node that can host the job leaves while its worker is in init(): the job stops with a
    message that says the node left, what to do and that resume carries on - not "init() failed"."""
    doomed = cluster.add_node(num_cpus=1, resources={"doomed": 1})  # the fixture's node lacks "doomed"
    job = _job(tmp_path, 4, resources={"doomed": 1})
    (job.parent / "scripts" / "score.py").write_text(HOLD_IN_INIT)
    (job.parent / "state" / "hold-init").write_text("")
    ws = tmp_path / "ws"
    with running_driver(job, ws, "--compute", cluster.address) as driver:
        wait_until(lambda: (job.parent / "state" / "in-init").exists(), 90, "the worker to be in init()", driver)
        cluster.remove_node(doomed)
        out = finish(driver)

    assert driver.returncode == 1, out
    assert "init() failed" not in out and "the first error ()" not in out, out
    assert "no worker is left: the workers were lost before any of them was ready" in out, out
    assert "their node left the Ray cluster" in out and "its node died" in out, out
    run_dir = only_run_dir(ws)
    assert f"parallelrun resume {run_dir.name}" in out, out
    assert committed(run_dir / "journal.sqlite") == 0  # nothing ran: every mini-batch waits for the resume
