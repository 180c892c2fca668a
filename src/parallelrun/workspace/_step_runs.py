"""The step runs of one pipeline run: its record's children, the newest run of each step, the totals and
the summary (``job_result.txt``) the pipeline run ends with, and the Failed record of a step that could not
run."""

from __future__ import annotations

import time
from collections.abc import Iterator

from ..errors import ParallelRunError
from ..runs import RunRecord, RunStore
from ._compiled import CompiledStep


class StepRuns:
    """The children of the pipeline run ``rec``, kept in ``store``."""

    def __init__(self, store: RunStore, rec: RunRecord) -> None:
        self.store = store
        self.rec = rec

    def add(self, run_id: str) -> None:
        if run_id not in self.rec.children:
            self.rec.children.append(run_id)
            self.store.save(self.rec)

    def _records(self, newest_first: bool = False) -> Iterator[RunRecord]:
        """The children's records that can still be read."""
        for run_id in reversed(self.rec.children) if newest_first else list(self.rec.children):
            try:
                yield self.store.get(run_id)
            except ParallelRunError:
                continue

    def latest(self, name: str) -> RunRecord | None:
        """The newest run of step ``name`` in this pipeline run."""
        return next((r for r in self._records(newest_first=True) if r.name == name), None)

    def total_counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for r in self._records():
            for k, v in r.counts.items():
                total[k] = total.get(k, 0) + int(v)
        return total

    def summary(self) -> str:
        lines = [f"pipeline run {self.rec.id}: {self.rec.status}"
                 + (f" - {self.rec.reason}" if self.rec.reason else "")]
        seen = set()
        for r in self._records(newest_first=True):
            if r.name in seen:
                continue
            seen.add(r.name)
            extra = f" (reused {r.reused_from})" if r.reused_from else ""
            lines.append(f"  step {r.name}: {r.effective_status()}{extra}  run {r.id}")
        return "\n".join(lines)

    def failed(self, step: CompiledStep, reason: str, detail: str, rec: RunRecord | None = None) -> None:
        """A step that failed before the engine could record why (or could not even start) still gets a
        Failed step run with the reason, so the user sees it."""
        if rec is None:
            rec = self.store.new(step.name, job_file=None, job_dir=step.source_directory,
                                 output_dir=str(self.rec.path), output_file=None, kind="step",
                                 step_type=step.type, parent=self.rec.id, experiment=self.rec.experiment)
            self.add(rec.id)
        rec.status, rec.reason, rec.ended = "Failed", reason, time.time()
        rec.started = rec.started or rec.ended
        self.store.save(rec)
        (rec.logs_dir / "job_error.txt").write_text(f"Failed: {reason}\n\n{detail}\n")
