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
from .runner import RunResult, resume_run, run_job

__version__ = "0.1.0"

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
