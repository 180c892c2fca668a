"""Placement (CPU, GPU, memory, custom resources) and RayCompute's options (namespace, runtime_env) on a
real head that declares a custom resource ``widget: 4``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ray_jobs import RayHead, make_job

from parallelrun import run_job
from parallelrun.config import validate_spec

pytestmark = pytest.mark.ray

# Records, per run() call, what the actor sees: its namespace, variables, resources and an import.
PROBE_SCRIPT = '''\
import json
import os
from pathlib import Path

import ray


def init():
    pass


def run(mini_batch, context):
    ctx = ray.get_runtime_context()
    seen = {
        "namespace": ctx.namespace,
        "FROM_RUNTIME_ENV": os.environ.get("FROM_RUNTIME_ENV"),
        "SHARED": os.environ.get("SHARED"),
        "resources": ctx.get_assigned_resources(),
    }
    out = Path(os.environ["STATE_DIR"]) / f"seen-{context.minibatch_index}.json"
    out.write_text(json.dumps(seen))
    return [Path(p).name for p in mini_batch]
'''


@pytest.fixture(scope="module")
def widget_head(short_tmp: Path) -> Iterator[RayHead]:
    head = RayHead(short_tmp / "ray", num_cpus=2, resources={"widget": 4})
    try:
        yield head
    finally:
        head.stop()


def _probe_job(folder: Path, **fields: object) -> Path:
    job = make_job(folder, files=4, process_count_per_node=1, mini_batch_size=2, **fields)  # type: ignore[arg-type]
    (folder / "scripts" / "probe.py").write_text(PROBE_SCRIPT)
    spec = yaml.safe_load(job.read_text())
    spec["entry_script"] = "probe.py"
    job.write_text(yaml.safe_dump(spec, sort_keys=False))
    return job


def _seen(folder: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((folder / "state").glob("seen-*.json"))]


@pytest.mark.slow  # a Ray head with a custom resource of its own: ~15 s in all; CI runs it
@pytest.mark.timeout(120)
def test_resources_namespace_and_env_vars_reach_the_actors(widget_head: RayHead, tmp_path: Path) -> None:
    job = _probe_job(
        tmp_path / "job", env={"SHARED": "job"}, resources={"widget": 1.5}, memory_per_process="64MB",
        cpus_per_process=0.5,
        ray={"namespace": "team-a", "runtime_env": {"env_vars": {"FROM_RUNTIME_ENV": "yes", "SHARED": "runtime_env"}}},
    )

    res = run_job(job, overrides=[f"compute={widget_head.address}"], workspace=tmp_path / "ws", progress="quiet")

    assert res.status == "Completed", res.summary()
    seen = _seen(job.parent)
    assert len(seen) == 2
    for s in seen:
        assert s["namespace"] == "team-a"
        assert s["FROM_RUNTIME_ENV"] == "yes"
        assert s["SHARED"] == "job"  # the job's environment_variables win over runtime_env env_vars
        resources = s["resources"]
        assert isinstance(resources, dict)
        assert resources.get("widget") == 1.5 and resources.get("CPU") == 0.5
        assert resources.get("memory") == 64 * 2**20


@pytest.mark.slow  # a Ray head with a custom resource of its own: ~15 s in all; CI runs it
@pytest.mark.timeout(120)
def test_a_job_no_node_can_host_fails_at_once_naming_the_missing_resources(widget_head: RayHead,
                                                                           tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", files=4, process_count_per_node=1, gpus_per_process=1,
                   resources={"accelerator_type:A100": 0.01})

    # Bounded by the timeout: without the check, Ray would keep the actors pending forever.
    out = subprocess.run([sys.executable, "-m", "parallelrun", "run", str(job), "--workspace", str(tmp_path / "ws"),
                          "--quiet", "--compute", widget_head.address], capture_output=True, text=True, timeout=90)

    assert out.returncode == 2, out.stdout + out.stderr
    message = " ".join(out.stderr.split())
    assert "can host even one worker" in message
    assert "'accelerator_type:A100'" in message and "GPU" in message
    assert "GPU and 'accelerator_type:A100' are on no node" in message
    assert "CPU 2" in message and "'widget' 4" in message  # what the cluster has


@pytest.mark.slow  # a Ray head with a custom resource of its own: ~15 s in all; CI runs it
@pytest.mark.timeout(120)
def test_more_of_a_custom_resource_than_a_node_has_is_refused(widget_head: RayHead, tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", files=4, process_count_per_node=2, cpus_per_process=0.5,
                   resources={"widget": 3})  # 2 x 3 widgets on a node that has 4

    out = subprocess.run([sys.executable, "-m", "parallelrun", "run", str(job), "--workspace", str(tmp_path / "ws"),
                          "--quiet", "--compute", widget_head.address], capture_output=True, text=True, timeout=90)

    assert out.returncode == 2, out.stdout + out.stderr
    message = " ".join(out.stderr.split())
    assert "room for CPU 1, 'widget' 6" in message and "has 0 such node(s)" in message


def test_raycompute_options_become_the_job_specs_ray_field(tmp_path: Path) -> None:
    from parallelrun import ComputeTarget, ParallelRunConfig, RayCompute, Workspace
    from parallelrun.workspace import _refs

    target = RayCompute("127.0.0.1:6379", namespace="team-a", runtime_env={"pip": ["rapidfuzz"]})
    cfg = ParallelRunConfig(entry_script="score.py", source_directory=str(tmp_path), compute_target=target,
                            mini_batch_size=2)
    spec = validate_spec({**cfg._spec_fields(), "name": "probe", "inputs": [{"type": "file", "path": "."}]})
    assert spec.compute == "127.0.0.1:6379"
    assert spec.ray is not None and spec.ray.namespace == "team-a"
    assert spec.ray.runtime_env == {"pip": ["rapidfuzz"]}

    ws = Workspace.create(tmp_path / "ws")
    ComputeTarget.create(ws, "ray-team", target)
    assert _refs.compute_fields("ray-team", ws) == {
        "compute": "127.0.0.1:6379", "ray": {"namespace": "team-a", "runtime_env": {"pip": ["rapidfuzz"]}}}


def test_raycompute_refuses_unknown_options() -> None:
    from parallelrun import RayCompute, UsageError

    with pytest.raises(UsageError, match="unknown option.*namspace.*takes namespace, runtime_env"):
        RayCompute("127.0.0.1:6379", namspace="team-a")
