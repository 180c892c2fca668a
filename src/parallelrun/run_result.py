"""What a finished (or stopped) run did: ``RunResult``, returned by ``run_job``/``resume_run`` and printed
by the CLI as the run's summary."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from .run_folder import RunFolder
from .runs import RunRecord


@dataclass
class RunResult:
    """What a finished (or stopped) run did.

    ``counts`` are the run's (all sessions); ``session_items`` the items finished by this driver session
    alone (a resume's own work), read from the journal when not given: the rate in ``summary()`` divides
    those by this session's ``wall_seconds``.
    """

    record: RunRecord
    status: str  # Completed | Failed | Canceled
    reason: str | None
    counts: dict[str, int]
    wall_seconds: float
    output_file: str | None
    isolation: dict[int, tuple[int, list[str]]] = field(default_factory=dict)  # batch -> (pieces, items)
    session_items: int | None = None

    def __post_init__(self) -> None:
        if self.session_items is None:
            self.session_items = _session_items(self.record, self.counts)

    @property
    def run_id(self) -> str:
        return self.record.id

    @property
    def ok(self) -> bool:
        return self.status == "Completed"

    @property
    def exit_code(self) -> int:
        return {"Completed": 0, "Failed": 1}.get(self.status, 130)

    def summary(self) -> str:
        c = self.counts
        n = self.session_items or 0
        rate = n / self.wall_seconds if self.wall_seconds > 0 else 0.0
        resumed = self.record.resumes > 0
        if resumed and n == 0 and not c.get("batches_pending"):
            timing = f"{self.wall_seconds:.1f} s (nothing was left to run: every mini-batch was already settled)"
        elif resumed:
            timing = f"{self.wall_seconds:.1f} s for this resume ({n:,} items, {rate:,.1f} items/s)"
        else:
            timing = f"{self.wall_seconds:.1f} s ({rate:,.1f} items/s)"
        lines = [
            f"run {self.run_id}: {self.status}" + (f" - {self.reason}" if self.reason else ""),
            f"  items:        {c.get('items_succeeded', 0):,} succeeded, {c.get('items_failed', 0):,} failed, "
            f"{c.get('items', 0):,} in all",
            f"  mini-batches: {c.get('batches_succeeded', 0):,} succeeded, {c.get('batches_failed', 0):,} failed, "
            f"{c.get('batches_pending', 0):,} not done, {c.get('batches', 0):,} in all",
            f"  wall time:    {timing}",
        ]
        if self.isolation:
            items = [os.path.basename(i) for _, found in self.isolation.values() for i in found]
            shown = ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
            split = sorted(self.isolation)
            which = ", ".join(map(str, split[:5])) + (f" +{len(split) - 5} more" if len(split) > 5 else "")
            lines.append(f"  isolation:    {len(split)} mini-batch(es) split ({which}), "
                         f"{sum(n for n, _ in self.isolation.values())} pieces run; "
                         f"{len(items)} item(s) failed alone{': ' + shown if items else ''}")
        if self.output_file and c.get("items_succeeded", 0) > 0:
            lines.append(f"  output:       {self.output_file}")
        elif self.output_file:
            lines.append("  output:       none (no item succeeded)")
        lines.append(f"  logs:         {self.record.logs_dir}")
        if self.status != "Completed":
            lines.append(f"  why:          {self.record.logs_dir / 'job_error.txt'}")
        if c.get("items_failed"):
            lines.append(f"  failed items: {self.record.logs_dir / 'user' / 'error' / 'failed_items.jsonl'}")
        if self.status != "Completed" and resumable(self.reason):
            lines.append(f"  resume with:  parallelrun resume {self.run_id}"
                         + (" --retry-failed" if c.get("batches_failed") or c.get("items_failed") else ""))
        return "\n".join(lines)


def resumable(reason: str | None) -> bool:
    """Whether resuming can finish a stopped run: not when its reason says to run the job again (a part
    or segment deleted from the output folder under the run, an output that cannot hold the plan) and
    offers no resume."""
    text = (reason or "").lower()
    return "run the job again" not in text or "resume" in text


def _session_items(rec: RunRecord, counts: dict[str, int]) -> int:
    """Items the current (or last) driver session finished: committed since it took ``driver.lock``."""
    from .live import throughput_series
    from .runs import session_start

    started = session_start(RunFolder(rec.path).driver_lock)
    if started is None or not rec.resumes:
        return int(counts.get("items_succeeded", 0)) + int(counts.get("items_failed", 0))
    now = time.time()
    return int(throughput_series(rec.journal_path, started, now, max_points=1, recent_since=started)["recent_items"])
