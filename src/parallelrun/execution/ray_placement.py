"""Placement on a Ray cluster: what one worker (actor) reserves, and which nodes can host the workers.

Pure functions of the job spec and of the nodes' totals as ``ray.nodes()`` reports them, so they are
tested without starting Ray. The check is made on totals, before any actor exists: a request no node can
ever satisfy fails at once naming the missing resource (Ray alone would keep the actor pending forever);
resources that exist but are held by other jobs are waited for, as Ray does.

Elastic clusters: ``node_count`` is the most nodes a job uses at once. It starts on the nodes that fit
(at least one), and :func:`joinable_nodes` says, while it runs, which nodes that joined it may add.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import JobSpecError

if TYPE_CHECKING:
    from ..config import JobSpec

#: seconds between two looks for nodes that joined the cluster (an elastic cluster's new capacity): a
#: ``ray.nodes()`` call each time; an autoscaler takes tens of seconds to add a node anyway
JOIN_EVERY = 5.0


@dataclass(frozen=True)
class Placement:
    """What one worker (actor) reserves on its node."""

    cpus: float
    gpus: float = 0.0
    memory: int = 0  # bytes; 0 = no reservation
    resources: tuple[tuple[str, float], ...] = ()

    @staticmethod
    def of(spec: JobSpec) -> Placement:
        memory = 0
        if spec.memory_per_process is not None:
            from ..data.tabular import parse_size

            memory = parse_size(spec.memory_per_process)
        return Placement(spec.cpus_per_process, spec.gpus_per_process, memory,
                         tuple(sorted(spec.resources.items())))

    def actor_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.memory:
            opts["memory"] = self.memory
        if self.resources:
            opts["resources"] = dict(self.resources)
        return opts

    def demand(self, actors: int) -> dict[str, float]:
        """Ray resource name -> amount, for ``actors`` workers on one node."""
        need = {"CPU": self.cpus * actors, "GPU": self.gpus * actors, "memory": float(self.memory * actors),
                **{k: v * actors for k, v in self.resources}}
        return {k: v for k, v in need.items() if v > 0}

    def missing(self, node: dict[str, Any], actors: int) -> list[str]:
        """The resources ``node`` (a ``ray.nodes()`` entry) lacks for ``actors`` workers; [] if they fit."""
        have = node.get("Resources", {})
        return [k for k, v in self.demand(actors).items() if have.get(k, 0) + 1e-9 < v]

    def fits(self, node: dict[str, Any], actors: int) -> bool:
        return not self.missing(node, actors)

    def describe(self, actors: int) -> str:
        return ", ".join(f"{_name(k)} {_amount(k, v)}" for k, v in self.demand(actors).items())


def _name(resource: str) -> str:
    return {"CPU": "CPU", "GPU": "GPU", "memory": "memory"}.get(resource, repr(resource))


def _amount(resource: str, value: float) -> str:
    return f"{value / 2**30:.1f} GiB" if resource in ("memory", "object_store_memory") else f"{value:g}"


def node_summary(node: dict[str, Any]) -> str:
    """``127.0.0.1: CPU 2, GPU 0, memory 15.4 GiB, 'accelerator_type:T4' 1`` (no Ray-internal entries)."""
    res = node.get("Resources", {})
    keys = ["CPU", "GPU", "memory", *sorted(k for k in res if k not in ("CPU", "GPU", "memory", "object_store_memory")
                                            and not k.startswith("node:"))]
    return f"{node.get('NodeManagerAddress', '?')}: " + ", ".join(f"{_name(k)} {_amount(k, res.get(k, 0))}"
                                                                 for k in keys)


def alive_nodes(ray: Any) -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def pick_nodes(ray: Any, spec: JobSpec, placement: Placement, where: str) -> list[str]:
    """The nodes to start on: up to ``node_count`` alive nodes with room for ``process_count_per_node``
    workers, the driver's first. ``node_count`` is a maximum: with fewer such nodes the job starts on those
    and takes the others as they join (:func:`joinable_nodes`).

    Raises JobSpecError (exit code 2) when no alive node can host ``process_count_per_node`` workers
    (judged on the nodes' totals: resources held by other jobs are waited for, as Ray does), naming the
    resource that is missing.
    """
    alive = alive_nodes(ray)
    per_node = spec.process_count_per_node
    if not any(placement.fits(n, per_node) for n in alive):
        sizes = "; ".join(node_summary(n) for n in alive) or "none alive"
        if not any(placement.fits(n, 1) for n in alive):
            lacking = sorted({k for n in alive for k in placement.missing(n, 1)})
            absent = [k for k in lacking if not any(n.get("Resources", {}).get(k) for n in alive)]
            names = [_name(k) for k in (absent or lacking)]
            what = " and ".join(names) + (" are" if len(names) > 1 else " is")
            raise JobSpecError([
                f"no node of the Ray cluster at {where} can host even one worker: each asks for "
                f"{placement.describe(1)}, and {what} " + ("on no node" if absent else "short on every node")
                + f" (nodes: {sizes}). Lower cpus_per_process / gpus_per_process / memory_per_process, drop "
                "the resources the cluster lacks, or add a node that has them."
            ], source="job spec (Ray backend)")
        short = sorted({k for n in alive for k in placement.missing(n, per_node)})
        raise JobSpecError([
            f"process_count_per_node: {per_node} needs a node with room for {placement.describe(per_node)}; "
            f"the Ray cluster at {where} has 0 such node(s), short of {' and '.join(map(_name, short))} "
            f"(nodes: {sizes}). Lower process_count_per_node or cpus_per_process (e.g. 0.5), or add a "
            "bigger node."
        ], source="job spec (Ray backend)")
    try:
        mine = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - Ray Client has no local node
        mine = None
    return joinable_nodes(alive, set(), placement, per_node, spec.node_count, prefer=mine)


def joinable_nodes(alive: list[dict[str, Any]], used: Collection[str], placement: Placement, per_node: int,
                   max_nodes: int, prefer: str | None = None) -> list[str]:
    """The alive nodes a running job may start using now (elastic clusters), best first.

    ``alive`` are ``ray.nodes()`` entries, ``used`` every node id the job has ever placed workers on. A
    node qualifies when the job never used it (a node it used and still sees keeps its place; one whose
    workers all failed is not tried again) and its totals have room for ``per_node`` workers. At most
    ``max_nodes`` nodes are in use at once: the used ones still alive count against it, so a node that
    left frees its place for a newcomer. Order: ``prefer`` (the driver's node) first, then the most CPUs,
    then the node id, so the choice is the same on every call.
    """
    ids = {n["NodeID"] for n in alive}
    room = max_nodes - len(ids & set(used))
    if room <= 0:
        return []
    fresh = [n for n in alive if n["NodeID"] not in used and placement.fits(n, per_node)]
    fresh.sort(key=lambda n: (n["NodeID"] != prefer, -n.get("Resources", {}).get("CPU", 0), n["NodeID"]))
    return [n["NodeID"] for n in fresh[:room]]
