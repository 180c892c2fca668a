"""Elastic clusters without Ray: which nodes a job starts on and which joining nodes it adds
(``pick_nodes``, ``joinable_nodes``), pure functions of the nodes' totals as ``ray.nodes()`` reports them;
and the executor's use of them (``_grow``, a lost worker whose node left) with the cluster's answers given.

Real clusters growing and shrinking during a run are in ``test_ray_elastic.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from parallelrun.config import validate_spec
from parallelrun.errors import JobSpecError
from parallelrun.execution.base import WorkerState
from parallelrun.execution.messages import Event, Outcome, WorkerLost
from parallelrun.execution.ray_calls import ActorCalls
from parallelrun.execution.ray_executor import RayExecutor
from parallelrun.execution.ray_placement import Placement, joinable_nodes, pick_nodes
from parallelrun.execution.worker import WorkerConfig

pytestmark = pytest.mark.ray

ONE_CPU = Placement(cpus=1)


def _node(node_id: str, cpus: float, alive: bool = True, **extra: float) -> dict[str, Any]:
    return {"NodeID": node_id, "Alive": alive, "NodeManagerAddress": f"10.0.0.{node_id[-1]}",
            "Resources": {"CPU": cpus, "memory": 8 * 2**30, **extra}}


# (alive nodes, used node ids, per_node, max_nodes, expected) - the table of the rule in docs/ray.md
JOIN_CASES = [
    pytest.param([_node("n1", 2), _node("n2", 2)], {"n1"}, 1, 2, ["n2"], id="a-new-node-joins"),
    pytest.param([_node("n1", 2), _node("n2", 2)], {"n1"}, 1, 1, [], id="at-the-maximum-nothing-joins"),
    pytest.param([_node("n1", 2), _node("n2", 2), _node("n3", 4)], {"n1"}, 1, 2, ["n3"],
                 id="one-place-left-the-biggest-takes-it"),
    pytest.param([_node("n1", 2), _node("n2", 2), _node("n3", 2)], set(), 1, 9, ["n1", "n2", "n3"],
                 id="same-size-by-node-id"),
    pytest.param([_node("n2", 2), _node("n3", 2)], {"n1", "n2"}, 1, 2, ["n3"],
                 id="a-node-that-left-frees-its-place"),
    pytest.param([_node("n1", 2), _node("n2", 2)], {"n1", "n2"}, 1, 4, [], id="a-used-node-is-never-added-again"),
    pytest.param([_node("n1", 2), _node("n2", 1)], {"n1"}, 2, 2, [], id="too-small-for-process-count-per-node"),
    pytest.param([_node("n1", 2), _node("h0", 0)], set(), 1, 2, ["n1"], id="a-head-without-cpus-never-joins"),
    pytest.param([], {"n1"}, 1, 2, [], id="no-node-alive"),
]


@pytest.mark.parametrize(("alive", "used", "per_node", "max_nodes", "expected"), JOIN_CASES)
def test_joinable_nodes(alive: list[dict[str, Any]], used: set[str], per_node: int, max_nodes: int,
                        expected: list[str]) -> None:
    assert joinable_nodes(alive, used, ONE_CPU, per_node, max_nodes) == expected


def test_the_preferred_node_comes_first_and_custom_resources_are_honoured() -> None:
    alive = [_node("n1", 8), _node("n2", 2, widget=1), _node("n3", 2, widget=1)]
    assert joinable_nodes(alive, set(), ONE_CPU, 1, 3, prefer="n3") == ["n3", "n1", "n2"]
    widget = Placement(cpus=1, resources=(("widget", 0.5),))
    assert joinable_nodes(alive, set(), widget, 2, 3) == ["n2", "n3"]
    assert joinable_nodes(alive, set(), widget, 3, 3) == []


class _FakeRay:
    """What ``pick_nodes`` asks of Ray: the nodes and the driver's node id."""

    def __init__(self, nodes: list[dict[str, Any]], mine: str | None = None) -> None:
        self._nodes, self._mine = nodes, mine

    def nodes(self) -> list[dict[str, Any]]:
        return self._nodes

    def kill(self, handle: Any, no_restart: bool = True) -> None:
        self.killed = [*getattr(self, "killed", []), handle]

    def get_runtime_context(self) -> Any:
        mine = self._mine

        class _Ctx:
            def get_node_id(self) -> str | None:
                return mine

        return _Ctx()


def _spec(**fields: Any) -> Any:
    return validate_spec({"name": "digits", "entry_script": "s.py", "inputs": [{"type": "file", "path": "d"}],
                          "compute": "10.0.0.1:6379", "process_count_per_node": 1, **fields})


def test_node_count_is_a_maximum_the_job_starts_on_the_nodes_there_are() -> None:
    ray = _FakeRay([_node("h0", 0), _node("n1", 2), _node("n2", 2, alive=False)])
    assert pick_nodes(ray, _spec(node_count=3), ONE_CPU, "10.0.0.1:6379") == ["n1"]
    ray = _FakeRay([_node("n1", 2), _node("n2", 2), _node("n3", 2)], mine="n2")
    assert pick_nodes(ray, _spec(node_count=2), ONE_CPU, "10.0.0.1:6379") == ["n2", "n1"]


def test_no_node_with_room_for_process_count_per_node_fails_at_once() -> None:
    ray = _FakeRay([_node("h0", 0), _node("n1", 2)])
    with pytest.raises(JobSpecError) as e:
        pick_nodes(ray, _spec(node_count=2, process_count_per_node=3), ONE_CPU, "10.0.0.1:6379")
    message = " ".join(str(e.value).split())
    assert "process_count_per_node: 3 needs a node with room for CPU 3" in message
    assert "has 0 such node(s), short of CPU" in message and "10.0.0.1: CPU 2" in message
    assert e.value.exit_code == 2


# --- the executor's side, with the cluster's answers given (no Ray started) -----------------------------
def _executor(tmp_path: Path, alive: list[dict[str, Any]], **fields: Any) -> tuple[RayExecutor, list[str]]:
    """A Ray executor holding one ready worker on n1 (node0); ``alive`` is what the cluster reports."""
    (tmp_path / "sys").mkdir(exist_ok=True)
    cfg = WorkerConfig(entry_script="e.py", source_directory=".", working_dir=".", arguments=[],
                       environment_variables={}, logging_level="INFO", output_dir=".", log_dir=str(tmp_path),
                       output_action="append_row", output_format="text")
    ex = RayExecutor(cfg, _spec(**fields))
    ex.cluster.alive_nodes = lambda: alive  # type: ignore[method-assign]
    ex.cluster.node_address = lambda node_id: f"10.0.0.{node_id[-1]}"  # type: ignore[method-assign]
    ex._cls = object()  # started
    ex.ray = _FakeRay(alive)  # ray.kill of a fake handle would start a local Ray instance to say it is not one
    spawned: list[str] = []

    def spawn(node_id: str) -> str:
        index = ex._nodes.setdefault(node_id, len(ex._nodes))
        name = f"node{index}.process{len(spawned):03d}"
        spawned.append(node_id)
        ex._add(name, ActorCalls(f"actor-{name}", node_id, index), WorkerState(name, ready=True, pid=1, node=f"node{index}"))
        return name

    ex._spawn = spawn  # type: ignore[method-assign]
    spawn("n1")
    spawned.clear()
    return ex, spawned


def test_the_pool_adds_a_node_that_joined_once_per_interval_up_to_node_count(tmp_path: Path) -> None:
    alive = [_node("n1", 2)]
    ex, spawned = _executor(tmp_path, alive, node_count=2)
    ex._next_join = time.monotonic() + 60  # not yet time to look
    alive += [_node("n2", 2), _node("n3", 2)]
    ex._grow([])
    assert spawned == []

    ex._next_join = 0.0
    ex._grow([])
    assert spawned == ["n2"] and ex._nodes == {"n1": 0, "n2": 1}  # n3 would be a third node: over the maximum
    ex._next_join = 0.0
    ex._grow([])
    assert spawned == ["n2"]


def test_a_worker_whose_node_left_is_not_replaced_and_a_waiting_node_takes_the_place(tmp_path: Path) -> None:
    alive = [_node("n1", 2), _node("n2", 2)]
    ex, spawned = _executor(tmp_path, alive, node_count=1)
    ex._next_join = time.monotonic() + 60
    ex._states["node0.process000"].queue = [(4, 1), (5, 1)]
    del alive[0]  # n1 left the cluster
    events: list[Event] = []

    ex._lost("node0.process000", "ActorDiedError: its node has died", events)
    ex._grow(events)  # the same poll: the look for nodes is not left for the next interval

    assert [(e.index, e.status) for e in events if isinstance(e, Outcome)] == [(4, "lost"), (5, "returned")]
    lost = [e for e in events if isinstance(e, WorkerLost)]
    assert len(lost) == 1 and lost[0].replaced_by is None
    assert spawned == ["n2"] and ex._nodes["n2"] == 1
    assert [st.name for st in ex.workers()] == ["node1.process000"]
    assert ex.ray.killed == ["actor-node0.process000"]
