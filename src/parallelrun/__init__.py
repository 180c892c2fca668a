"""parallelrun: batch inference over large file and tabular datasets.

Azure ML ParallelRunStep's programming model (an entry script with ``init()`` and ``run(mini_batch)``),
local-first, with exactly-once output and resume.
"""

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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import RunResult, resume_run, run_job

__version__ = "0.1.0"

# Imported on first use: every worker process imports this package, and the driver's modules (pydantic
# models, the runner) would add ~0.2 s to each worker's start-up for nothing.
_LAZY = {"RunResult": "runner", "resume_run": "runner", "run_job": "runner"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "DatasetError",
    "EntryScript",
    "EntryScriptError",
    "JobFailedError",
    "JobSpecError",
    "MissingExtraError",
    "ParallelRunError",
    "ResumeError",
    "RunResult",
    "UsageError",
    "resume_run",
    "run_job",
]
