"""``mini_batch_size: auto``: pick a size so that one ``run()`` takes about 1-2 seconds.

Before planning, the driver runs *probe* mini-batches, one after the other on the same worker: a tiny
one (1 file, or 256 KB of rows), whose time includes that worker's warm-up and only sizes the next; then
two measuring probes, one at least 4 times larger sized to take about 0.3 s, and one twice that. A call's
time is modelled as ``a + b*n``: a fixed cost per call ``a`` (a model call, a request, a GPU launch) plus
``b`` per item (file or byte), fitted through the two measuring probes; the size is the ``n`` where a
call takes about 1.5 s (or, when the fixed cost alone is near that, where the per-item part at least
equals it), never more than 16 times the largest size measured. A probe that alone takes 1.5 s or more
decides at once. Probes are ordinary descriptors with
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


MAX_PROBES = 3
EXTRAPOLATE = 16  # never choose more than 16x the largest size measured


def fit(p1: tuple[int, float], p2: tuple[int, float]) -> tuple[float, float]:
    """``(a, b)`` of ``seconds = a + b*n`` through two probes ``(n, seconds)``, both clamped to >= 0."""
    (n1, t1), (n2, t2) = p1, p2
    if n2 == n1:
        return 0.0, max(t2, 1e-9) / max(n2, 1)
    b = max(0.0, (t2 - t1) / (n2 - n1))
    a = t2 - b * n2
    if a < 0:  # noise: the line crosses below zero; take the larger probe's average instead
        return 0.0, t2 / max(n2, 1)
    return a, b


def size_for(a: float, b: float, largest: int) -> int:
    """The ``n`` where a call takes about TARGET_SECONDS under ``a + b*n`` (capped at EXTRAPOLATE x)."""
    cap = largest * EXTRAPOLATE
    if b <= 0:
        return cap  # no measurable per-item cost: the largest batch we dare to extrapolate to
    variable = max(TARGET_SECONDS - a, a)  # with a big fixed cost, at least as much time on the items
    return min(cap, round(variable / b))


def decide(kind: str, probes: list[tuple[int, float]]) -> tuple[int | None, int | None]:
    """From the probes so far ((items or bytes, seconds), in order), return ``(size, None)`` once the
    size is decided, or ``(None, next_probe_size)`` when another probe should run."""
    lo, hi = LIMITS[kind]
    if not probes:
        return None, FIRST_PROBE[kind]
    n, seconds = probes[-1]
    if len(probes) == 1:
        # The first probe's time includes the worker's warm-up (first call, lazy imports): trust it alone
        # only when it already says the size is tiny.
        if seconds >= TARGET_SECONDS:
            return max(lo, min(hi, round(TARGET_SECONDS * n / max(seconds, 1e-6)))), None
        per_item = max(seconds, 1e-6) / max(n, 1)
        return None, max(4 * FIRST_PROBE[kind], min(hi, math.ceil(PROBE_SECONDS / per_item)))
    if seconds >= TARGET_SECONDS or n >= hi or len(probes) >= MAX_PROBES:
        if len(probes) == 2:
            return max(lo, min(hi, round(TARGET_SECONDS * n / max(seconds, 1e-6)))), None
        a, b = fit(probes[-2], probes[-1])
        return max(lo, min(hi, size_for(a, b, max(probes[-2][0], n)))), None
    return None, min(hi, 2 * n)  # the second measuring probe: twice the first


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
            fixed, per = fit(self.probes[-2], self.probes[-1]) if len(self.probes) > 1 else (0.0, 0.0)
            unit = "file" if self.kind == "file" else "byte"
            self.note = (f"probes (size, seconds) {[(n, round(t, 3)) for n, t in self.probes]}; "
                         f"per call {fixed:.3f} s + {per:.3g} s per {unit}")
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
