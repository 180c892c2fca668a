"""Azure ML CLI v2 job YAML, run unchanged: ``parallelrun run pipeline.yml``.

A front end: the YAML is validated (:mod:`.yaml_job`), its ``${{...}}`` bindings checked
(:mod:`.bindings`), its data, outputs, environments and compute resolved against the workspace
(:mod:`.resolve`, :mod:`.mltable`), and it is compiled into the v1 objects (:mod:`.compile`):
ParallelRunStep, PythonScriptStep, PipelineData, Pipeline, submitted to an Experiment. The engine, the
run folder, resume, reuse and logs are those of any v1 pipeline.

    from parallelrun.azure_v2 import submit
    run, compiled = submit("pipeline.yml", workspace=".parallelrun")
    run.wait_for_completion(show_output=True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .compile import CompiledJob, OutputInfo, compile_job
from .yaml_job import is_azure_v2, is_azure_v2_file, load

ENVIRONMENT_MODES = ("current",)


def open_workspace(workspace: str | os.PathLike[str] | None) -> Any:
    """The workspace the CLI uses: ``-w``, else ``$PARALLELRUN_WORKSPACE``, else ``./.parallelrun``
    (created when missing), so ``parallelrun runs list`` shows the run."""
    from ..runs import resolve_workspace
    from ..workspace import Workspace

    return Workspace.create(resolve_workspace(workspace), exist_ok=True)


def compile_file(path: str | os.PathLike[str], ws: Any, *, environment: str | None = None,
                 compute: str | None = None, overrides: list[str] | None = None) -> CompiledJob:
    """Read, validate and compile a v2 job file against ``ws``; raises JobSpecError listing every problem."""
    from ..config import parse_overrides

    if environment is not None and environment not in ENVIRONMENT_MODES:
        raise UsageError(f"--environment {environment!r}: the only mode is 'current' (run in this Python "
                         "environment instead of building the job's)")
    job = load(path, parse_overrides(overrides) if overrides else None)
    return compile_job(job, Path(path).resolve().parent, ws, environment=environment, compute=compute,
                       source=str(path))


def submit(path: str | os.PathLike[str], workspace: str | os.PathLike[str] | None = None, *,
           environment: str | None = None, compute: str | None = None,
           overrides: list[str] | None = None) -> tuple[Any, CompiledJob]:
    """Compile a v2 job file and submit it as a pipeline run; returns (PipelineRun, CompiledJob) at once."""
    from ..workspace.experiment import Experiment

    ws = open_workspace(workspace)
    compiled = compile_file(path, ws, environment=environment, compute=compute, overrides=overrides)
    run = Experiment(ws, compiled.experiment_name).submit(
        compiled.pipeline, regenerate_outputs=compiled.regenerate_outputs,
        continue_on_step_failure=compiled.continue_on_step_failure)
    return run, compiled


__all__ = ["CompiledJob", "OutputInfo", "compile_file", "compile_job", "is_azure_v2", "is_azure_v2_file",
           "load", "open_workspace", "submit"]
