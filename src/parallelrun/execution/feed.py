"""What the driver dispatches, and from where: probes, then the plan as it is being written.

``Feed`` sits between the driver loop and the journal:

- with ``mini_batch_size: auto`` it first hands out probe mini-batches (see ``autosize``) and records the
  size they give;
- it plans in steps (``PlanFeed``): the driver dispatches the first mini-batches while the rest of a
  million-file input is still being listed;
- it gives the driver each batch's descriptor without a journal query per batch: freshly planned ones
  from memory (a bounded window), older ones read ahead from the journal in chunks.
"""

from __future__ import annotations

import select
import time
from pathlib import Path
from typing import Any

from ..config import DEFAULT_FILE_BATCH, DEFAULT_TABULAR_BATCH, JobSpec, parse_size
from ..data.batches import MiniBatch
from ..data.plan import Plan, PlanFeed, is_auto
from ..journal import Journal
from .autosize import Calibrator

_WINDOW = 8192  # descriptors kept in memory ahead of dispatch
_READ_AHEAD = 512  # descriptors read from the journal at a time


class Feed:
    """Planning and descriptors for one run of the driver (a fresh run, or a resumed one)."""

    def __init__(self, spec: JobSpec, base: Path, storage_options: dict[str, Any] | None, journal: Journal) -> None:
        self.spec = spec
        self.base = base
        self.storage_options = storage_options
        self.journal = journal
        meta = journal.meta()
        state = meta.get("plan")
        # Journals written before planning was streamed have no "plan" entry but are complete.
        self.done = "input_fingerprint" in meta and (state is None or bool(state.get("complete")))
        self.resuming = state is not None and not self.done
        self.size: int | None = meta.get("batch_size")
        self.plan: Plan | None = None
        self.calibrator: Calibrator | None = None
        self._plan_feed: PlanFeed | None = None
        self._window: dict[int, MiniBatch] = {}
        if self.done:
            return
        if self.size is None and is_auto(spec):
            kind = spec.input_type
            default = DEFAULT_FILE_BATCH if kind == "file" else _parse(DEFAULT_TABULAR_BATCH)
            self.calibrator = Calibrator(kind, self._first_batch, default)
        else:
            self._start_plan()

    # --- planning -------------------------------------------------------------------------------------
    @property
    def calibrating(self) -> bool:
        return self.calibrator is not None and self.calibrator.size is None

    def _first_batch(self, size: int) -> MiniBatch:
        for b in Plan(self.spec, self.base, self.storage_options, batch_size=size).batches():
            return b
        raise AssertionError("unreachable: an empty plan raises DatasetError")

    def _start_plan(self) -> None:
        self.plan = Plan(self.spec, self.base, self.storage_options, batch_size=self.size)
        self._plan_feed = PlanFeed(self.plan, self.journal, resume=self.resuming)

    @property
    def plan_seconds(self) -> float:
        """Seconds since planning started (final once ``done``)."""
        if self._plan_feed is None:
            return 0.0
        return (self._plan_feed.finished or time.monotonic()) - self._plan_feed.started

    def size_decided(self) -> int | None:
        """After calibration: record the chosen size and start planning with it (returns it once)."""
        if self.calibrator is None or self.calibrator.size is None or self._plan_feed is not None:
            return None
        self.size = self.calibrator.size
        self.journal.set_meta(batch_size=self.size)
        self._start_plan()
        return self.size

    def catch_up(self) -> None:
        """Resuming a run killed while planning: re-plan what it had written (the journal's fingerprint at
        that point must match, else ResumeError) up to its first unwritten batch."""
        while self._plan_feed is not None and not self.done and not self.step(seconds=0.5):
            if (fd := self.waiting_on) is not None:
                select.select([fd], [], [], 0.5)  # no worker runs yet: only the walk to wait for

    @property
    def waiting_on(self) -> int | None:
        """The pipe of a process walking the input that the last step stopped at, having taken all it had
        sent: the driver waits on it together with its workers rather than planning again at once."""
        return None if self._plan_feed is None or self.done else self._plan_feed.waiting_on

    def step(self, seconds: float = 0.02) -> list[MiniBatch]:
        """Plan a little more (about ``seconds``, never waiting for the walk: see ``waiting_on``); the
        batches written to the journal."""
        if self.done or self._plan_feed is None:
            return []
        out = self._plan_feed.step(seconds)
        self.done = self._plan_feed.done
        room = _WINDOW - len(self._window)
        for b in out[:max(0, room)]:
            self._window[b.index] = b
        return out

    # --- descriptors ----------------------------------------------------------------------------------
    def descriptor(self, index: int) -> MiniBatch:
        b = self._window.pop(index, None)
        if b is not None:
            return b
        ahead = self.journal.pending_descriptors(index, _READ_AHEAD)
        for d in ahead[1:]:
            self._window.setdefault(d.index, d)
        if ahead and ahead[0].index == index:
            return ahead[0]
        return self.journal.batch(index)


def _parse(size: str) -> int:
    return parse_size(size)
