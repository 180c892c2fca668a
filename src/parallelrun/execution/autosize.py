"""``mini_batch_size: auto``: pick a size so that one ``run()`` takes about 1-2 seconds.

Before planning, the driver runs two *probe* mini-batches, one after the other on the same worker: a tiny
one (1 file, or 256 KB of rows), whose time includes that worker's warm-up, then one sized from it to take
about 0.3 s, whose time per item (file or byte) sets the size. Probes are ordinary descriptors with
negative indices (``mini_batch_context.minibatch_index`` is -1, -2): the journal never sees them and their
output is dropped, so the real plan - which starts from the first input again - still holds every item
exactly once. The chosen size is recorded in the journal, and a resumed run plans with it.

``decide`` is the pure part (tested alone); ``Calibrator`` feeds probes to the driver loop.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from ..data.batches import MiniBatch

TARGET_SECONDS = 1.5  # the middle of "about 1-2 s"
PROBE_SECONDS = 0.3  # long enough to measure, short enough not to delay the job
FIRST_PROBE = {"file": 1, "tabular": 256 * 1024}
LIMITS = {"file": (1, 10_000), "tabular": (64 * 1024, 1024**3)}


def decide(kind: str, probes: list[tuple[int, float]]) -> tuple[int | None, int | None]:
    """From the probes so far ((items or bytes, seconds), in order), return ``(size, None)`` once the
    size is decided, or ``(None, next_probe_size)`` when another probe should run."""
    lo, hi = LIMITS[kind]
    if not probes:
        return None, FIRST_PROBE[kind]
    items, seconds = probes[-1]
    per_item = max(seconds, 1e-6) / max(items, 1)
    # The first probe's time includes the worker's warm-up (first call, lazy imports): trust it alone
    # only when it already says the size is tiny.
    if len(probes) >= 2 or seconds >= TARGET_SECONDS:
        return max(lo, min(hi, round(TARGET_SECONDS / per_item))), None
    return None, max(FIRST_PROBE[kind], min(hi, math.ceil(PROBE_SECONDS / per_item)))


class Calibrator:
    """Runs the probes through the driver loop, then holds the chosen size.

    ``make_probe(size)`` returns the first mini-batch the inputs give at that size (it raises what
    planning raises, e.g. an empty dataset). The driver asks ``next()`` for a probe to dispatch, routes
    events of negative indices to ``succeeded``/``failed``/``returned``, and starts planning once
    ``size`` is set.
    """

    def __init__(self, kind: str, make_probe: Callable[[int], MiniBatch], default: int) -> None:
        self.kind = kind
        self.make_probe = make_probe
        self.default = default
        self.size: int | None = None
        self.note = ""
        self.probes: list[tuple[int, float]] = []
        self.worker: str | None = None  # probes after the first run on the same (warm) worker
        self._ready: MiniBatch | None = self._probe(FIRST_PROBE[kind])
        self._running: MiniBatch | None = None

    def _probe(self, size: int) -> MiniBatch:
        b = self.make_probe(size)
        return dataclasses.replace(b, index=-(len(self.probes) + 1))

    def next(self, worker: str) -> MiniBatch | None:
        """A probe for ``worker`` to run now, or None."""
        if self._ready is None or self._running is not None or (self.worker not in (None, worker)):
            return None
        self._running, self._ready = self._ready, None
        self.worker = worker
        return self._running

    def succeeded(self, index: int, seconds: float) -> None:
        if self._running is None or index != self._running.index:
            return
        b, self._running = self._running, None
        self.probes.append((b.nbytes if self.kind == "tabular" else b.n_items, seconds))
        size, probe = decide(self.kind, self.probes)
        if size is not None:
            self.size = size
            self.note = f"measured {self.probes}"
        else:
            assert probe is not None
            self._ready = self._probe(probe)

    def failed(self, index: int, message: str) -> None:
        """A probe failed (run() raised, timed out, or its worker died): fall back to the default size."""
        if self._running is not None and index == self._running.index:
            self._running = None
            self.size = self.default
            self.note = f"a probe failed ({message}); using the default"

    def lost(self, worker: str) -> None:
        """The warm worker is gone: the next probe may run anywhere."""
        if self.worker == worker and self._running is None:
            self.worker = None

    def returned(self, index: int) -> None:
        """A probe handed back unstarted (its worker died first): run it again, on any worker."""
        if self._running is not None and index == self._running.index:
            self._ready, self._running, self.worker = self._running, None, None
