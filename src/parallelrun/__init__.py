"""parallelrun: batch inference over large file and tabular datasets.

Azure ML ParallelRunStep's programming model (an entry script with ``init()`` and ``run(mini_batch)``),
local-first, with exactly-once output and resume. The names below are the public API; everything else
lives in private modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .entry_script import EntryScript
from .errors import (
    DatasetError,
    EntryScriptError,
    JobFailedError,
    JobSpecError,
    MissingExtraError,
    ParallelRunError,
    ResumeError,
    UsageError,
)

if TYPE_CHECKING:
    from .notebook import RunDetails
    from .run_result import RunResult
    from .runner import resume_run, run_job
    from .workspace import (
        ComputeTarget,
        CondaDependencies,
        DataPath,
        Dataset,
        DatasetConsumptionConfig,
        Datastore,
        Environment,
        FileDataset,
        LocalCompute,
        Model,
        RayCompute,
        TabularDataset,
        Workspace,
    )
    from .workspace.experiment import Experiment
    from .workspace.pipeline import Pipeline
    from .workspace.run import PipelineRun, PortDataReference, Run, StepRun
    from .workspace.steps import (
        OutputFileDatasetConfig,
        ParallelRunConfig,
        ParallelRunStep,
        PipelineData,
        PythonScriptStep,
    )

__version__ = "0.1.0"

# Imported on first use: every worker process imports this package (for EntryScript), and the driver's
# modules (pydantic models, the runner, the workspace catalog) would add to each worker's start-up.
_LAZY = {
    "RunResult": "run_result", "resume_run": "runner", "run_job": "runner",
    "Workspace": "workspace", "Datastore": "workspace", "DataPath": "workspace", "Dataset": "workspace",
    "FileDataset": "workspace", "TabularDataset": "workspace", "DatasetConsumptionConfig": "workspace",
    "Model": "workspace", "Environment": "workspace", "CondaDependencies": "workspace",
    "ComputeTarget": "workspace", "LocalCompute": "workspace", "RayCompute": "workspace",
    "ParallelRunConfig": "workspace.steps", "ParallelRunStep": "workspace.steps",
    "PythonScriptStep": "workspace.steps", "PipelineData": "workspace.steps",
    "OutputFileDatasetConfig": "workspace.steps", "Pipeline": "workspace.pipeline",
    "Experiment": "workspace.experiment", "Run": "workspace.run", "PipelineRun": "workspace.run",
    "StepRun": "workspace.run", "PortDataReference": "workspace.run", "RunDetails": "notebook",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ComputeTarget",
    "CondaDependencies",
    "DataPath",
    "Dataset",
    "DatasetConsumptionConfig",
    "DatasetError",
    "Datastore",
    "EntryScript",
    "EntryScriptError",
    "Environment",
    "Experiment",
    "FileDataset",
    "JobFailedError",
    "JobSpecError",
    "LocalCompute",
    "MissingExtraError",
    "Model",
    "OutputFileDatasetConfig",
    "ParallelRunConfig",
    "ParallelRunError",
    "ParallelRunStep",
    "Pipeline",
    "PipelineData",
    "PipelineRun",
    "PortDataReference",
    "PythonScriptStep",
    "RayCompute",
    "ResumeError",
    "Run",
    "RunDetails",
    "RunResult",
    "StepRun",
    "TabularDataset",
    "UsageError",
    "Workspace",
    "resume_run",
    "run_job",
]
