"""Runs as Azure ML SDK v1 shows them: ``Run``, ``PipelineRun``, ``StepRun`` and (from ``port_data.py``,
re-exported here) ``PortDataReference``.

They are views over the engine's run records (``<workspace>/runs/<run_id>/run.json``): a pipeline run
(kind ``pipeline``) lists its step runs (kind ``step``) in ``children``. Every method reads the records
afresh, so a Run object obtained in one process follows a pipeline driven by another.

Statuses are the engine's: NotStarted, Running, Completed, Failed, Canceled, and Interrupted for a run
whose driver died (resume it).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..control import cancel_run
from ..errors import JobFailedError, UsageError
from ..run_folder import RunFolder
from ..runs import TERMINAL, RunRecord, RunStore, is_locked
from ._launch import CANCEL_MARKER, start_driver
from ._run_follower import Follower
from .port_data import PortDataReference, pipeline_data_of

# PortDataReference is re-exported: ``parallelrun.workspace.run`` is where it was always imported from.
__all__ = ["PipelineRun", "PortDataReference", "Run", "StepRun", "cancel_pipeline", "set_experiment_factory"]

# ``Run.experiment`` builds an Experiment with this; experiment.py (which imports this module for its
# runs) registers its class when imported, and the package imports experiment.py, so it is always set.
_EXPERIMENT_FACTORY: list[Callable[[Any, str], Any]] = []


def set_experiment_factory(factory: Callable[[Any, str], Any]) -> None:
    _EXPERIMENT_FACTORY[:] = [factory]


def _utc(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat() if ts else None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:  # noqa: BLE001 - no such process, or no permission to ask
        return False


class Run:
    """A run in a workspace. ``Run.get(ws, run_id)`` returns a PipelineRun, a StepRun, or a Run (a job
    started with ``parallelrun run``)."""

    _kind = "Run"  # how wait_for_completion's progress names it (RunId:, PipelineRunId:, StepRunId:)

    def __init__(self, workspace: Any, run_id: str, _record: RunRecord | None = None) -> None:
        self.workspace = workspace
        self._store = RunStore(workspace.path)
        self._rec = _record or self._store.get(run_id)

    @staticmethod
    def get(workspace: Any, run_id: str) -> Run:
        return _wrap(workspace, RunStore(workspace.path).get(run_id))

    # --- identity -------------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self._rec.id

    @property
    def name(self) -> str:
        return self._rec.name

    display_name = name

    @property
    def type(self) -> str:
        return {"pipeline": "azureml.PipelineRun", "step": "azureml.StepRun"}.get(self._rec.kind, "parallelrun.job")

    @property
    def experiment(self) -> Any:
        if not self._rec.experiment:
            return None
        return _EXPERIMENT_FACTORY[0](self.workspace, self._rec.experiment)

    @property
    def parent(self) -> Run | None:
        return Run.get(self.workspace, self._rec.parent) if self._rec.parent else None

    @property
    def record(self) -> RunRecord:
        """The engine's run record, read afresh."""
        return self._refresh()

    @property
    def run_dir(self) -> Path:
        return self._rec.path

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._refresh().tags)

    def _refresh(self) -> RunRecord:
        self._rec = self._store.get(self._rec.id)
        return self._rec

    # --- status ---------------------------------------------------------------------------------------
    def get_status(self) -> str:
        """NotStarted, Running, Completed, Failed, Canceled, or Interrupted (the driver died: resume)."""
        rec = self._refresh()
        status = rec.effective_status()
        if status == "NotStarted" and rec.kind == "pipeline" and rec.driver_pid and not _alive(rec.driver_pid) \
                and not is_locked(RunFolder(rec.path).driver_lock):
            rec = self._refresh()  # the driver may have just finished between the two reads
            if rec.status == "NotStarted":
                return "Failed"
            status = rec.effective_status()
        return status

    def get_details(self) -> dict[str, Any]:
        rec = self._refresh()
        logs = rec.logs_dir
        files = {str(p.relative_to(rec.path)): str(p) for p in sorted(logs.rglob("*")) if p.is_file()} \
            if logs.is_dir() else {}
        d = {
            "runId": rec.id, "name": rec.name, "status": self.get_status(), "kind": rec.kind,
            "experiment": rec.experiment, "parent": rec.parent, "target": rec.compute,
            "startTimeUtc": _utc(rec.started), "endTimeUtc": _utc(rec.ended), "createdUtc": _utc(rec.created),
            "reason": rec.reason, "counts": dict(rec.counts), "runFolder": str(rec.path),
            "outputs": dict(rec.outputs), "reusedFrom": rec.reused_from, "tags": dict(rec.tags),
            "logFiles": files,
        }
        if rec.output_file:
            d["outputFile"] = rec.output_file
        return d

    def get_file_names(self) -> list[str]:
        """The run's log files, relative to its folder (``logs/job_result.txt``, ...)."""
        return list(self.get_details()["logFiles"])

    def download_file(self, name: str, output_file_path: str | os.PathLike[str] | None = None) -> str:
        src = (self._rec.path / name).resolve()
        if not str(src).startswith(str(self._rec.path.resolve())) or not src.is_file():
            raise UsageError(f"run {self.id} has no file {name!r}; see run.get_file_names()")
        dest = Path(output_file_path or Path(name).name)
        if dest.is_dir():
            dest = dest / src.name
        shutil.copy2(src, dest)
        return str(dest)

    def cancel(self) -> None:
        """Stop the run: its workers are stopped and the run stays resumable."""
        rec = self._refresh()
        if rec.kind in ("pipeline", "step"):  # a step runs inside its pipeline's driver
            cancel_pipeline(self._store, rec.id)
            return
        cancel_run(rec.id, self.workspace.path, wait=60)

    def wait_for_completion(self, show_output: bool = False, timeout: float | None = None,
                            raise_on_error: bool = True, timeout_seconds: float | None = None,
                            wait_post_processing: bool = False) -> dict[str, Any]:
        """Wait until the run ends (or ``timeout`` seconds pass), printing its progress with
        ``show_output``. Returns ``get_details()``; raises JobFailedError when it failed and
        ``raise_on_error``."""
        status = Follower(self, sys.stdout if show_output else None, self._kind).follow(
            timeout if timeout is not None else timeout_seconds)
        _check(self, status, raise_on_error)
        return self.get_details()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, status={self.get_status()!r})"


def cancel_pipeline(store: RunStore, run_id: str, wait: float = 60.0) -> str:
    """Cancel a pipeline run (or the pipeline of a step run): mark it so a driver about to start stops at
    once, and send SIGTERM to a running driver. Returns the status afterwards."""
    rec = store.get(run_id)
    if rec.kind == "step" and rec.parent:
        rec = store.get(rec.parent)
    if rec.effective_status() in TERMINAL:
        return rec.effective_status()
    (rec.path / CANCEL_MARKER).touch()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if is_locked(RunFolder(rec.path).driver_lock):
            cancel_run(rec.id, store.workspace, wait=max(1.0, deadline - time.monotonic()))
            break
        if not _alive(rec.driver_pid):
            break
        time.sleep(0.2)  # the driver is starting: it will take the lock, or see the marker
    rec = store.get(rec.id)
    if rec.status == "NotStarted":
        rec.status, rec.reason, rec.ended = "Canceled", "canceled before it started", time.time()
        store.save(rec)
    return rec.effective_status()


def _check(run: Run, status: str, raise_on_error: bool) -> None:
    if not raise_on_error:
        return
    if status == "Failed":
        if run._rec.status == "NotStarted":
            raise JobFailedError(f"run {run.id} failed: its driver exited before starting; see "
                                 f"{run._rec.logs_dir / 'driver_stdout.txt'}", run.id)
        raise JobFailedError(f"run {run.id} failed: {run._rec.reason or 'see its logs'} "
                             f"(logs: {run._rec.logs_dir})", run.id)
    if status == "Interrupted":
        raise JobFailedError(f"run {run.id} was interrupted: its driver died. Resume it with "
                             "Run.get(ws, run_id).resume()", run.id)


class PipelineRun(Run):
    """A submitted pipeline. ``get_steps()`` / ``find_step_run(name)`` give its StepRuns."""

    _kind = "PipelineRun"

    def get_steps(self) -> list[StepRun]:
        """The step runs, in the order they started (a step resumed keeps its run)."""
        out = []
        for run_id in self._refresh().children:
            try:
                out.append(StepRun(self.workspace, run_id))
            except UsageError:
                continue
        return out

    def get_children(self, recursive: bool = False, **_filters: Any) -> Iterator[StepRun]:
        return iter(self.get_steps())

    def find_step_run(self, name: str) -> list[StepRun]:
        """The step runs of the step called ``name`` (newest first; usually one)."""
        return [s for s in reversed(self.get_steps()) if s.name == name]

    def resume(self) -> PipelineRun:
        """Continue a Canceled, Failed or Interrupted pipeline run in the background: completed steps are
        kept, a stopped ParallelRunStep continues where it stopped (only unfinished mini-batches run),
        and the steps after it run. Returns at once; use wait_for_completion()."""
        status = self.get_status()
        if status not in ("Canceled", "Failed", "Interrupted"):
            raise UsageError(f"pipeline run {self.id} is {status}; only Canceled, Failed or Interrupted runs resume")
        (self._rec.path / CANCEL_MARKER).unlink(missing_ok=True)
        start_driver(self.workspace, self._rec, {}, resume=True)
        return self

    def cancel(self) -> None:
        """Stop the pipeline: the running step's workers are stopped (the step run stays resumable) and
        no further step starts. Returns when the driver has stopped (60 s at most)."""
        cancel_pipeline(self._store, self.id)

    def wait_for_completion(self, show_output: bool = True, timeout_seconds: float | None = None,  # type: ignore[override]
                            raise_on_error: bool = True, timeout: float | None = None) -> str:
        """Wait until the pipeline ends (or the timeout passes), streaming step status and progress lines
        with ``show_output``. Returns the status; raises JobFailedError when it failed and
        ``raise_on_error``."""
        status = Follower(self, sys.stdout if show_output else None, self._kind).follow(
            timeout if timeout is not None else timeout_seconds)
        _check(self, status, raise_on_error)
        return status

    def get_details(self) -> dict[str, Any]:
        d = super().get_details()
        d["steps"] = [{"name": s.name, "runId": s.id, "status": s.get_status(), "reusedFrom": s._rec.reused_from}
                      for s in self.get_steps()]
        return d


class StepRun(Run):
    """One step's run inside a pipeline run."""

    _kind = "StepRun"

    @property
    def is_reused(self) -> bool:
        """True when the step did not run but took the output of an earlier identical run."""
        return self._refresh().reused_from is not None

    def get_output_data(self, name: str) -> PortDataReference:
        """The step's output called ``name`` (the PipelineData's name)."""
        rec = self._refresh()
        if name not in rec.outputs:
            raise UsageError(f"step run {rec.id} ({rec.name}) has no output {name!r}; its outputs: "
                             f"{', '.join(sorted(rec.outputs)) or 'none'}")
        where = pipeline_data_of(self.workspace, rec).get(name, {})
        return PortDataReference(self.workspace, name, rec.outputs[name], where.get("datastore"),
                                 where.get("path_on_datastore"))

    def get_outputs(self) -> dict[str, PortDataReference]:
        return {n: self.get_output_data(n) for n in self._refresh().outputs}


def _wrap(workspace: Any, rec: RunRecord) -> Run:
    cls = {"pipeline": PipelineRun, "step": StepRun}.get(rec.kind, Run)
    return cls(workspace, rec.id, _record=rec)


