"""Fixtures: one workspace holding a finished run, a failed run and a pipeline run with one step, made
once per session by the real engine."""

from __future__ import annotations

import time

import pytest
from dashboard_helpers import Workspace, make_client, make_job

from parallelrun import run_job
from parallelrun.runs import RunStore


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("dashboard")
    ws = root / "ws"
    ok = run_job(make_job(root / "finished", n_files=10, bad=(4,)), workspace=ws, progress="quiet")
    assert ok.status == "Completed", ok.summary()
    bad = run_job(make_job(root / "failed", n_files=8, bad=(1,), error_threshold=0), workspace=ws,
                  progress="quiet")
    assert bad.status == "Failed", bad.summary()
    # Pipelines come from the workflow layer; its record shape (kind, experiment, parent) is the engine's.
    store = RunStore(ws)
    pipe = store.new("nightly-pipeline", job_file=None, job_dir=str(root), output_dir=str(root), output_file=None,
                     kind="pipeline", experiment="nightly")
    step = run_job(make_job(root / "step", n_files=4), workspace=ws, progress="quiet",
                   record_fields={"kind": "step", "parent": pipe.id, "experiment": "nightly"})
    pipe.status, pipe.started, pipe.ended = "Completed", pipe.created, time.time()
    store.save(pipe)
    return Workspace(ws, ok.run_id, bad.run_id, pipe.id, step.run_id)


@pytest.fixture
def client(workspace: Workspace):
    from parallelrun.dashboard import create_app

    with make_client(create_app(workspace.path)) as c:
        yield c
