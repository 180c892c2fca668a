"""Experiment: a named group of runs. ``Experiment(ws, name).submit(pipeline)`` starts a pipeline run.

``submit`` validates and compiles the pipeline in the caller (so a bad reference raises there, with the
fix), writes ``pipeline.json`` into the new pipeline run's folder and starts the pipeline driver as a
detached process (a new session: it outlives the submitting interpreter, and the terminal's Ctrl-C does
not reach it). It returns the PipelineRun at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from ..errors import UsageError
from ..runs import RunRecord, RunStore
from .pipeline import Pipeline
from .run import PipelineRun, Run, _wrap
from .steps import _Step

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")
_DRIVERS: list[subprocess.Popen[bytes]] = []  # keeps Popen objects alive: no ResourceWarning, reaped on exit


class Experiment:
    """A named group of pipeline runs in a workspace."""

    def __init__(self, workspace: Any, name: str, **_azure_only: Any) -> None:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise UsageError(f"experiment name {name!r} is invalid: use letters, digits, '_' and '-', starting "
                             "with a letter or digit (e.g. 'batch-scoring')")
        self.workspace = workspace
        self.name = name

    def submit(self, config: Any, tags: dict[str, str] | None = None, regenerate_outputs: bool = False,
               continue_on_step_failure: bool = False, **_azure_only: Any) -> PipelineRun:
        """Start ``config`` (a Pipeline, or a single step) and return its PipelineRun at once.

        ``regenerate_outputs=True`` runs every step even when its earlier output could be reused;
        ``continue_on_step_failure=True`` goes on with the steps that do not depend on a failed one.
        """
        if isinstance(config, _Step):
            config = Pipeline(self.workspace, [config])
        if not isinstance(config, Pipeline):
            raise UsageError(f"Experiment.submit takes a Pipeline (or a step), not {type(config).__name__}")
        if config.workspace is not None and config.workspace != self.workspace:
            raise UsageError("the pipeline belongs to another workspace than the experiment")
        store = RunStore(self.workspace.path)
        rec = store.new(self.name, job_file=None, job_dir=os.getcwd(), output_dir="", output_file=None,
                        kind="pipeline", experiment=self.name, tags=dict(tags or {}))
        rec.output_dir = str(rec.path)
        try:
            doc, options = config._compile(rec.id, rec.path)
        except BaseException:
            shutil.rmtree(rec.path, ignore_errors=True)  # nothing ran: leave no run behind
            raise
        doc["experiment"] = self.name
        doc["options"] = {"regenerate_outputs": bool(regenerate_outputs),
                          "continue_on_step_failure": bool(continue_on_step_failure)}
        path = rec.path / "pipeline.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        os.replace(tmp, path)
        store.save(rec)
        _start_driver(self.workspace, rec, options, resume=False)
        return PipelineRun(self.workspace, rec.id)

    def get_runs(self, type: str | None = None, tags: dict[str, str] | None = None,
                 include_children: bool = False, **_filters: Any) -> Iterator[Run]:
        """This experiment's runs, newest first (pipeline runs; their step runs too with
        ``include_children``)."""
        for rec in RunStore(self.workspace.path).list():
            if rec.experiment != self.name or (rec.kind == "step" and not include_children):
                continue
            if tags and any(rec.tags.get(k) != v for k, v in tags.items()):
                continue
            run = _wrap(self.workspace, rec)
            if type is None or run.type == type:
                yield run

    @staticmethod
    def list(workspace: Any) -> list[Experiment]:
        names = sorted({r.experiment for r in RunStore(workspace.path).list() if r.experiment})
        return [Experiment(workspace, n) for n in names]

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, workspace={str(self.workspace.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Experiment) and (other.workspace, other.name) == (self.workspace, self.name)

    def __hash__(self) -> int:
        return hash((self.name, str(self.workspace.path)))


def _start_driver(workspace: Any, rec: RunRecord, options: dict[str, Any], resume: bool) -> None:
    """Start the detached pipeline driver; credentials go through its stdin, never to disk."""
    store = RunStore(workspace.path)
    log = open(rec.logs_dir / "driver_stdout.txt", "ab")  # noqa: SIM115 - handed to the child
    cmd = [sys.executable, "-m", "parallelrun.workspace.pipeline_driver", str(workspace.path), rec.id]
    if resume:
        cmd.append("--resume")
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, cwd=os.getcwd())
    finally:
        log.close()
    _DRIVERS.append(proc)
    # The driver reads its stdin to the end before it touches the record, so this save cannot race it.
    fresh = store.get(rec.id)
    fresh.driver_pid = proc.pid
    if resume:
        fresh.status, fresh.reason, fresh.ended = "NotStarted", None, None
    store.save(fresh)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"storage_options": options}).encode())
    proc.stdin.close()
