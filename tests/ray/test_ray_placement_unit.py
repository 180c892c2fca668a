"""What one worker asks of a node, and whether a node can host it: pure functions of the spec and of the
node's totals as ``ray.nodes()`` reports them (no Ray started)."""

from __future__ import annotations

from typing import Any

import pytest

from parallelrun.config import validate_spec
from parallelrun.errors import JobSpecError
from parallelrun.execution.ray_placement import Placement, node_summary

pytestmark = pytest.mark.ray

NODE: dict[str, Any] = {"NodeManagerAddress": "10.0.0.7", "Resources": {
    "CPU": 8.0, "GPU": 1.0, "memory": 32 * 2**30, "object_store_memory": 2**30, "node:10.0.0.7": 1.0,
    "accelerator_type:T4": 1.0}}


def _spec(**fields: Any) -> Any:
    return validate_spec({"name": "digits", "entry_script": "s.py", "inputs": [{"type": "file", "path": "d"}],
                          "compute": "10.0.0.7:6379", **fields})


def test_the_actor_options_carry_every_resource_asked_for() -> None:
    p = Placement.of(_spec(cpus_per_process=2, gpus_per_process=0.5, memory_per_process="2GB",
                           resources={"accelerator_type:T4": 0.01}))
    assert p.actor_options() == {"num_cpus": 2, "num_gpus": 0.5, "memory": 2 * 2**30,
                                 "resources": {"accelerator_type:T4": 0.01}}
    assert Placement.of(_spec()).actor_options() == {"num_cpus": 1, "num_gpus": 0}


@pytest.mark.parametrize(("fields", "actors", "missing"), [
    ({}, 8, []),
    ({}, 9, ["CPU"]),
    ({"gpus_per_process": 0.5}, 2, []),
    ({"gpus_per_process": 0.5}, 3, ["GPU"]),
    ({"memory_per_process": "20GB"}, 2, ["memory"]),
    ({"resources": {"accelerator_type:A100": 0.01}}, 1, ["accelerator_type:A100"]),
    ({"resources": {"accelerator_type:T4": 0.25}}, 4, []),
])
def test_a_node_fits_or_names_what_it_lacks(fields: dict[str, Any], actors: int, missing: list[str]) -> None:
    p = Placement.of(_spec(**fields))
    assert p.missing(NODE, actors) == missing
    assert p.fits(NODE, actors) == (not missing)


def test_the_node_summary_shows_what_a_user_can_ask_for() -> None:
    assert node_summary(NODE) == "10.0.0.7: CPU 8, GPU 1, memory 32.0 GiB, 'accelerator_type:T4' 1"


@pytest.mark.parametrize(("fields", "message"), [
    ({"memory_per_process": "lots"}, "memory_per_process"),
    ({"resources": {"CPU": 1}}, "cpus_per_process"),
    ({"resources": {"widget": -1}}, ">= 0"),
    ({"ray": {"namespace": "a", "runtim_env": {}}}, "runtim_env"),
])
def test_bad_placement_fields_are_spec_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(JobSpecError, match=message):
        _spec(**fields)
