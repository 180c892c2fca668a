"""The run folder's layout: one place that names every file and folder of a run.

    <workspace>/runs/<run_id>/
        run.json          the run's record (runs.py)
        journal.sqlite    what is done: batch states and part records (journal.py)
        driver.lock       held by the driver while it runs (runs.DriverLock)
        workers.json      live per-worker state for the dashboard (live.WorkersFile)
        logs/             the logs layout Azure users know (run_logs.py)
        tmp/              workers' scratch space for downloaded inputs; removed at the end
        outcomes/         workers' logs of the outcomes they reported (adopted on resume)
        assembly/         the final assembly's resumable state (parallelrun.outputs)

Every module asks a :class:`RunFolder` for these paths instead of spelling the names itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run's folder."""

    path: Path

    def __init__(self, path: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def record(self) -> Path:
        return self.path / "run.json"

    @property
    def journal(self) -> Path:
        return self.path / "journal.sqlite"

    @property
    def driver_lock(self) -> Path:
        return self.path / "driver.lock"

    @property
    def workers(self) -> Path:
        return self.path / "workers.json"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def scratch(self) -> Path:
        return self.path / "tmp"

    @property
    def assembly(self) -> Path:
        return self.path / "assembly"

    @property
    def outcome_logs(self) -> Path:
        """Workers' logs of reported outcomes (execution/outcome_log.py): read on resume, then removed."""
        return self.path / "outcomes"
