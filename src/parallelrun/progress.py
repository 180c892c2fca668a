"""Progress display: a rich bar on a terminal, plain periodic lines otherwise, nothing with --quiet.

Totals are shown only once they are known: while the plan is still being written (a large input listed
while the first mini-batches run, or ``mini_batch_size: auto`` still probing) the display says
"planning…" with the items found so far, never a percentage of a partial total. The rate counts only
the items done since this display started (a resume's rate is the resume's own).
"""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    def __init__(self, mode: str = "auto", stream: Any = None, interval: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "rich" if getattr(self.stream, "isatty", lambda: False)() else "plain"
        self.mode = mode
        self.interval = interval
        self.total = 0
        self.planning = False
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0
        self._t0 = time.monotonic()
        self._done0 = 0

    def start(self, total_items: int, done: int = 0, failed: int = 0, planning: bool = False) -> None:
        """Start showing; ``planning`` says ``total_items`` is what the plan holds so far, not the total."""
        self.total = total_items
        self.planning = planning
        self._done0 = done
        self._t0 = time.monotonic()
        if self.mode == "rich":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("items  [red]{task.fields[failed]} failed"), TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(), TimeRemainingColumn(),
                console=Console(file=self.stream), transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self._description(), total=None if planning else total_items,
                                            completed=done, failed=failed, rate="")

    def _description(self) -> str:
        return f"planning… ({self.total:,} items so far)" if self.planning else "running"

    def set_total(self, total_items: int) -> None:
        """The plan grew (it is still being written while the first batches run)."""
        self.total = total_items
        if self._bar is not None:
            self._bar.update(self._task, description=self._description(),
                             total=None if self.planning else total_items)

    def planned(self, total_items: int | None = None) -> None:
        """The plan is complete: the totals are final from now on."""
        if total_items is not None:
            self.total = total_items
        if self.planning:
            self.planning = False
            self._last = 0.0  # say the real totals at the next update
            if self._bar is not None:
                self._bar.update(self._task, description=self._description(), total=self.total)

    def update(self, done: int, failed: int, batches_done: int, batches: int) -> None:
        now = time.monotonic()
        elapsed = now - self._t0
        rate = (done - self._done0) / elapsed if elapsed > 0 else 0.0
        if self.mode == "rich" and self._bar is not None:
            self._bar.update(self._task, completed=done, failed=failed, rate=f"{rate:,.1f} items/s")
        elif self.mode == "plain" and now - self._last >= self.interval:
            self._last = now
            print(self.line(done, failed, batches_done, batches, rate), file=self.stream, flush=True)

    def line(self, done: int, failed: int, batches_done: int, batches: int, rate: float) -> str:
        """One plain progress line."""
        if self.planning:
            return (f"progress: planning… {self.total:,} items in {batches:,} mini-batches so far; "
                    f"{done:,} items done, {failed:,} failed, {rate:,.1f} items/s")
        pct = 100.0 * done / self.total if self.total else 100.0
        return (f"progress: {done:,}/{self.total:,} items ({pct:.1f}%), {failed:,} failed, "
                f"{batches_done:,}/{batches:,} mini-batches, {rate:,.1f} items/s")

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
