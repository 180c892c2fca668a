"""A worker's note of the mini-batch it runs, read by the driver when the worker dies or times out.

A worker may have ended batches whose outcomes the driver has not seen when it dies: a Ray actor's reply
can die with it, and a local worker holds the outcomes of quick batches a moment to send several in one
write (``worker.py``). The head of its queue is then not always the batch it was running. So each worker
notes every batch it starts, by index and attempt, in ``logs/sys/<worker>.running``; the pool reads the
note (:func:`running_position`) to tell the batch that was running from those that had ended before it
(``WorkerPool._running_position``). Best effort: without a note (a Ray node whose logs folder the driver
does not see) the head of the queue counts as running.
"""

from __future__ import annotations

import os


def running_marker(log_dir: str, agent: str) -> str:
    """The file where a worker notes the batch it starts (``index attempt``)."""
    return os.path.join(log_dir, "sys", f"{agent}.running")


class RunningNote:
    """The worker's side: the note kept open and rewritten in place for each batch.

    Opening, writing and closing a file per batch cost about a millisecond here (more than a quick batch's
    run()); one ``pwrite`` of a fixed width costs microseconds.
    """

    def __init__(self, path: str | None) -> None:
        self.fd: int | None = None
        if path is not None:
            try:
                self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            except OSError:
                pass

    def note(self, index: int, attempt: int) -> None:
        if self.fd is None:
            return
        try:
            os.pwrite(self.fd, f"{index:>20} {attempt:>6}".encode("ascii"), 0)  # same width: no truncation
        except OSError:
            pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def running_position(log_dir: str | None, agent: str, queue: list[tuple[int, int]]) -> int:
    """Where in ``queue`` (its ``(index, attempt)`` entries, in order) the batch the worker noted last is: the
    one it was running; 0 (the head) when there is no note or it names none of them."""
    if not log_dir:
        return 0
    try:
        with open(running_marker(log_dir, agent), encoding="ascii") as f:
            index, attempt = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return 0
    return next((pos for pos, entry in enumerate(queue) if entry == (index, attempt)), 0)
