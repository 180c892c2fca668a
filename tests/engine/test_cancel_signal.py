"""A cancel (SIGTERM to the driver) is never swallowed by code that catches ``Exception``: the driver turns
the signal into an exception raised wherever its main thread happens to be, and that can be inside a
logging handler's ``emit`` (which hands any ``Exception`` to ``handleError``, a no-op for the driver's log)
or inside library code with a broad ``except``. Seen once in CI: a pipeline canceled right as its step's
driver logged "worker ... ready" ran on to Completed."""

from __future__ import annotations

import logging
import os
import signal

import pytest
from engine_helpers import ECHO

from parallelrun import run_job


@pytest.mark.timeout(120)
def test_sigterm_during_a_log_write_still_cancels_the_run(job_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    job = job_factory(ECHO, process_count_per_node=1)
    original = logging.Formatter.format
    sent: list[str] = []

    def format_then_cancel(self: logging.Formatter, record: logging.LogRecord) -> str:
        text = original(self, record)
        if not sent and record.getMessage().startswith("worker ") and record.getMessage().endswith(" ready"):
            sent.append(record.getMessage())
            os.kill(os.getpid(), signal.SIGTERM)  # arrives inside FileHandler.emit's try/except Exception
        return text

    monkeypatch.setattr(logging.Formatter, "format", format_then_cancel)
    result = run_job(job.job, workspace=job.ws, progress="quiet")
    assert sent, "the driver never logged a ready worker"
    assert result.status == "Canceled", (result.status, result.reason)
    assert "interrupted" in (result.reason or "")
