"""``OutputClaim``: one run at a time writes into a local output folder.

A run's driver removes, at start-up, every part no record of *its* journal names (``OutputLocation.cleanup``:
a killed attempt's leftovers). A second run started into the same folder while the first works would so
delete the segments the first run's workers append to, and the first would fail at its assembly ("the
committed output of mini-batch 0 ... is missing"), having run every batch. The driver therefore holds an
exclusive ``flock`` on the output folder itself (a directory descriptor: no lock file is left in the user's
output) from before that clean-up until the run ends; a second driver is refused before it touches a part.

The kernel drops the lock when the driver dies (kill -9 included), so a killed run never blocks its resume or
a new run. Where ``flock`` is not supported (some network file systems) the claim is skipped: no worse than
before. Object stores have no such lock: nothing is claimed there.
"""

from __future__ import annotations

import errno
import fcntl
import os

from ..errors import OutputError


class OutputClaim:
    """An exclusive claim on a local output folder, held until ``release``; see the module docstring."""

    def __init__(self, folder: str, run_id: str) -> None:
        self.folder = folder
        self.fd: int | None = None
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return  # check_writable made it; gone or unreadable now: the writes will say so
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return  # flock not supported here (ENOLCK, EBADF on some network file systems)
            raise OutputError(
                f"the output folder {folder} is in use by another run, still running (its driver holds a lock "
                f"on the folder); run {run_id} did not start, so as not to delete that run's parts. Wait for "
                f"the other run to end, or give this run an output folder of its own (`output:` in the job "
                f"spec)") from None
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor of that open file drops the lock
            self.fd = None
