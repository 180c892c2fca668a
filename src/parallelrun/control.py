"""Controlling a run from outside its driver: cancel."""

from __future__ import annotations

import os
import signal
import time

from .run_folder import RunFolder
from .runs import RunStore, is_locked


def cancel_run(run_id: str, workspace: object = None, wait: float = 30.0) -> str:
    """Ask a run's driver to stop (SIGTERM); it cancels its workers and leaves the run resumable."""
    store = RunStore(workspace)  # type: ignore[arg-type]
    rec = store.get(run_id)
    lock = RunFolder(rec.path).driver_lock
    if not is_locked(lock) or not rec.driver_pid:
        return f"run {rec.id} is not running (status {rec.effective_status()})"
    try:
        os.kill(rec.driver_pid, signal.SIGTERM)
    except ProcessLookupError:
        return f"run {rec.id} is not running"
    deadline = time.monotonic() + wait
    while is_locked(lock) and time.monotonic() < deadline:
        time.sleep(0.2)
    return f"run {rec.id}: {store.get(rec.id).effective_status()}"
