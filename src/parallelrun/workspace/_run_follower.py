"""Following a run as ``wait_for_completion(show_output=True)`` does: its status changes, its steps'
progress and log lines, and the execution summary, printed until it ends (or the timeout passes)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TextIO

from ..runs import TERMINAL

_POLL = 1.0


class Follower:
    """Prints a run's status changes and new log lines until it ends."""

    def __init__(self, run: Any, out: TextIO | None, kind: str) -> None:
        self.run = run  # a Run; a PipelineRun (``kind``) also has get_steps()
        self.out = out
        self.kind = kind
        self.offsets: dict[Path, int] = {}
        self.announced: dict[str, str] = {}

    def _print(self, text: str) -> None:
        if self.out is not None:
            print(text, file=self.out, flush=True)

    def _tail(self, path: Path, prefix: str = "") -> None:
        if self.out is None or not path.is_file():
            return
        pos = self.offsets.get(path, 0)
        with open(path, "rb") as f:
            f.seek(pos)
            chunk = f.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return  # no complete line yet
        self.offsets[path] = pos + end + 1
        for line in chunk[:end].decode("utf-8", errors="replace").splitlines():
            self._print(f"{prefix}{line}")

    def _step(self, step: Any) -> None:
        rec = step._rec
        status = step.get_status()
        seen = self.announced.get(rec.id)
        if seen is None:
            self._print(f"\nStepRunId: {rec.id}\nStepRun({rec.name}) Status: {status}")
        elif seen != status and status not in TERMINAL:
            self._print(f"StepRun({rec.name}) Status: {status}")
        self._tail(rec.logs_dir / "job_progress_overview.txt", "  ")
        self._tail(rec.logs_dir / "std_log.txt", "  ")
        if status in TERMINAL and seen not in TERMINAL:
            self._print(f"\nStepRun({rec.name}) Execution Summary\n" + "=" * 40 + f"\nStepRun({rec.name}) Status: "
                        f"{status}")
            result = rec.logs_dir / "job_result.txt"
            if result.is_file():
                self._print(result.read_text(errors="replace").rstrip())
            if status == "Failed" and (rec.logs_dir / "job_error.txt").is_file():
                self._print((rec.logs_dir / "job_error.txt").read_text(errors="replace").rstrip()[-4000:])
        self.announced[rec.id] = status

    def _stream(self) -> None:
        run = self.run
        if self.kind == "PipelineRun":
            self._tail(run._rec.logs_dir / "pipeline.txt")
            for step in run.get_steps():
                self._step(step)
        else:
            self._step(run)

    def follow(self, timeout: float | None) -> str:
        run, kind = self.run, self.kind
        self._print(f"{kind}Id: {run.id}\nRun folder: {run.run_dir}")
        deadline = None if timeout is None else time.monotonic() + timeout
        status = run.get_status()
        if kind == "PipelineRun":
            self._print(f"{kind} Status: {status}")
        while True:
            self._stream()
            status = run.get_status()
            if status in TERMINAL or status == "Interrupted":
                break
            if deadline is not None and time.monotonic() >= deadline:
                self._print(f"\nStopped waiting after {timeout} s; the run goes on ({status}).")
                return status
            time.sleep(_POLL)
        self._stream()
        if kind == "PipelineRun":
            rec = run._refresh()
            self._print(f"\n{kind} Execution Summary\n" + "=" * 40 + f"\n{kind} Status: {status}"
                        + (f" - {rec.reason}" if rec.reason else ""))
        return status
