"""Experiment: a named group of runs. ``Experiment(ws, name).submit(pipeline)`` starts a pipeline run.

``submit`` hands the pipeline to ``Pipeline._submit``: it is validated and compiled in the caller (so a bad
reference raises there, with the fix), ``pipeline.json`` is written into the new pipeline run's folder and
the pipeline driver starts as a detached process (a new session: it outlives the submitting interpreter,
and the terminal's Ctrl-C does not reach it). It returns the PipelineRun at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import UsageError
from ..runs import RunStore
from ._launch import check_experiment_name
from .pipeline import Pipeline
from .run import PipelineRun, Run, _wrap, set_experiment_factory
from .steps import _Step


class Experiment:
    """A named group of pipeline runs in a workspace."""

    def __init__(self, workspace: Any, name: str, **_azure_only: Any) -> None:
        self.workspace = workspace
        self.name = check_experiment_name(name)

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
        return config._submit(self.name, tags=tags, regenerate_outputs=regenerate_outputs,
                              continue_on_step_failure=continue_on_step_failure)

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


# Runs build their ``experiment`` through this hook, so run.py does not import this module back.
set_experiment_factory(Experiment)
