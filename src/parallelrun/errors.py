"""Every public exception of parallelrun.

    ParallelRunError                 base of everything we raise on purpose
    ├── JobSpecError                 the job spec is invalid (CLI exit code 2); lists every problem
    ├── UsageError                   a command was used wrongly: unknown run id, bad option (exit 2)
    ├── EntryScriptError             the entry script cannot be loaded: syntax error, no run() (exit 2)
    ├── DatasetError                 an input path matches nothing, a dataset is empty (exit 2)
    ├── ResumeError                  a run cannot be resumed: spec or inputs changed, already running (exit 2)
    ├── MissingExtraError            an optional dependency is not installed; names the pip command
    ├── OutputError                  the output location cannot be written: no permission, no space (exit 1)
    └── JobFailedError               the job ran and failed: threshold exceeded, init failed everywhere (exit 1)

``UserCodeError`` is not raised to callers: it is the record of an exception raised by the user's own
code inside a worker, with the user's traceback as text.
"""

from __future__ import annotations

from dataclasses import dataclass


class ParallelRunError(Exception):
    """Base class of parallelrun's errors."""

    exit_code = 1


class JobSpecError(ParallelRunError):
    """The job spec is invalid. ``problems`` holds one line per problem."""

    exit_code = 2

    def __init__(self, problems: list[str], source: str = "job spec") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source} is invalid ({len(self.problems)} problem(s)):\n{lines}")


class UsageError(ParallelRunError):
    exit_code = 2


class EntryScriptError(ParallelRunError):
    exit_code = 2


class DatasetError(ParallelRunError):
    exit_code = 2


class ResumeError(ParallelRunError):
    exit_code = 2


class MissingExtraError(ParallelRunError, ImportError):
    """An optional dependency is missing."""

    exit_code = 2

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed. "
            f"Install it with: pip install 'parallelrun[{extra}]'"
        )


class OutputError(ParallelRunError):
    """The output location cannot be written (permission, space, unreachable store); says what to free or fix."""

    exit_code = 1


class JobFailedError(ParallelRunError):
    """The job ran and failed; ``run_id`` names the run and ``reason`` says why."""

    exit_code = 1

    def __init__(self, reason: str, run_id: str | None = None) -> None:
        self.reason = reason
        self.run_id = run_id
        super().__init__(reason)


@dataclass(frozen=True)
class UserCodeError:
    """An exception raised by user code in a worker, carried back as text."""

    type: str
    message: str
    traceback: str

    def one_line(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type
