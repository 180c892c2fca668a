"""Pipeline: steps ordered by the data that connects them, compiled for the background driver.

A step that reads a PipelineData runs after the step that writes it (and after any step named in its
``run_after``). Steps are run one at a time in that order; the order among independent steps is the
order they were listed in. A producer that was not listed is added, as Azure does.

``_compile`` turns the pipeline into plain JSON (``pipeline.json`` in the pipeline run's folder): dataset
inputs become the engine's input entries and fingerprints, models their paths, environments their
interpreter. Credentials to read remote datasets are kept out of that file: they travel to the driver
through a pipe (see :mod:`._launch`) or are read again from the workspace's secrets on resume.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import JobSpecError, UsageError
from ..execution.entry import check_entry_script
from ..runs import RunStore
from . import _refs
from ._compiled import CompiledStep
from ._launch import check_experiment_name, start_driver
from .intermediate import OutputFileDatasetConfig, PipelineData, _TabularPipelineData
from .run import PipelineRun
from .steps import ParallelRunStep, PythonScriptStep, _Step, input_type


class Pipeline:
    """A set of steps to run together: ``Experiment(ws, name).submit(Pipeline(ws, [step1, step2]))``."""

    def __init__(self, workspace: Any, steps: list[Any], description: str | None = None,
                 default_datastore: Any = None, default_source_directory: str | None = None) -> None:
        self.workspace = workspace
        self.description = description
        self.default_datastore = default_datastore
        if isinstance(steps, _Step):
            steps = [steps]
        problems: list[str] = []
        for i, s in enumerate(steps or []):
            if not isinstance(s, _Step):
                problems.append(f"steps[{i}]: {s!r} is not a step; use ParallelRunStep or PythonScriptStep")
        if not steps:
            problems.append("steps: a pipeline needs at least one step. Example: Pipeline(ws, steps=[step])")
        if problems:
            raise JobSpecError(problems, "Pipeline")
        self._steps = _order(list(steps))

    @property
    def steps(self) -> list[_Step]:
        """The steps in the order they run."""
        return list(self._steps)

    def validate(self) -> list[str]:
        """Problems found (none: an empty list); construction already raised on graph errors."""
        problems = []
        for s in self._steps:
            if isinstance(s, ParallelRunStep):
                cfg = s.parallel_run_config
                try:
                    check_entry_script(Path(cfg._base_dir) / cfg.entry_script)
                except Exception as e:  # noqa: BLE001 - reported, not raised
                    problems.append(f"step {s.name!r}: {e}")
        return problems

    def submit(self, experiment_name: str, tags: dict[str, str] | None = None, regenerate_outputs: bool = False,
               continue_on_step_failure: bool = False, **_azure_only: Any) -> PipelineRun:
        """``Experiment(self.workspace, experiment_name).submit(self, ...)``."""
        return self._submit(check_experiment_name(experiment_name), tags=tags, regenerate_outputs=regenerate_outputs,
                            continue_on_step_failure=continue_on_step_failure)

    def _submit(self, experiment_name: str, tags: dict[str, str] | None, regenerate_outputs: bool,
                continue_on_step_failure: bool) -> PipelineRun:
        """Compile into a new pipeline run's folder and start its driver; the run, at once."""
        store = RunStore(self.workspace.path)
        rec = store.new(experiment_name, job_file=None, job_dir=os.getcwd(), output_dir="", output_file=None,
                        kind="pipeline", experiment=experiment_name, tags=dict(tags or {}))
        rec.output_dir = str(rec.path)
        try:
            doc, options = self._compile(rec.id, rec.path)
        except BaseException:
            shutil.rmtree(rec.path, ignore_errors=True)  # nothing ran: leave no run behind
            raise
        doc["experiment"] = experiment_name
        doc["options"] = {"regenerate_outputs": bool(regenerate_outputs),
                          "continue_on_step_failure": bool(continue_on_step_failure)}
        path = rec.path / "pipeline.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        os.replace(tmp, path)
        store.save(rec)
        start_driver(self.workspace, rec, options, resume=False)
        return PipelineRun(self.workspace, rec.id)

    # --- compilation ----------------------------------------------------------------------------------
    def _compile(self, run_id: str, run_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """(the pipeline as JSON-able data, storage options per step name). Raises on a bad reference."""
        ws = self.workspace
        problems = self.validate()
        if problems:
            raise JobSpecError(problems, "Pipeline")
        data: dict[str, dict[str, Any]] = {}
        compiled: list[CompiledStep] = []
        options: dict[str, dict[str, Any]] = {}
        for step in self._steps:
            for out in step._outputs:
                data[out.name] = _output_location(out, step, ws, run_id, run_dir, self.default_datastore)
            step_options: dict[str, Any] = {}
            common: dict[str, Any] = {
                "name": step.name, "allow_reuse": step.allow_reuse,
                "outputs": [data[o.name] for o in step._outputs],
                "depends_on": sorted({p._producer.name for p in step._consumed()} | {a.name for a in step._after}),
                "arguments": [_argument(a) for a in step._arguments],
                "inputs": [_input(o, i, ws, step_options, step.name) for i, o in enumerate(step._inputs)],
            }
            if isinstance(step, ParallelRunStep):
                cfg = step.parallel_run_config
                python = _refs.environment_python(cfg.environment, ws)
                compiled.append(CompiledStep(
                    type=step.type_name, **common, source_directory=cfg._base_dir, entry_script=cfg.entry_script,
                    config=cfg._spec_fields(compute=_refs.compute_fields(cfg.compute_target, ws)), python=python,
                    environment={"variables": _refs.environment_variables(cfg.environment),
                                 "fingerprint": _refs.environment_fingerprint(cfg.environment, python)},
                    side_inputs=[_input(o, i, ws, step_options, step.name) for i, o in enumerate(step._side_inputs)],
                    models=[_refs.model_entry(m, ws) for m in step.models],
                ))
            elif isinstance(step, PythonScriptStep):
                python = _refs.environment_python(step.environment, ws)
                compiled.append(CompiledStep(
                    type=step.type_name, **common, source_directory=step.source_directory,
                    script_name=step.script_name, python=python,
                    environment={"variables": {**_refs.environment_variables(step.environment),
                                               **step.environment_variables},
                                 "fingerprint": _refs.environment_fingerprint(step.environment, python)},
                ))
            options[step.name] = step_options
        doc = {"format": 1, "run_id": run_id, "workspace": str(ws.path), "cwd": os.getcwd(),
               "description": self.description, "steps": [c.to_json() for c in compiled], "data": data}
        return doc, options


def _output_location(out: PipelineData, step: _Step, ws: Any, run_id: str, run_dir: Path,
                     default_datastore: Any) -> dict[str, Any]:
    if out.datastore is None and default_datastore is not None:
        out.datastore = default_datastore
    store = _refs.datastore_for(out, ws)
    rel = f"azureml/{run_id}/{step.name}/{out.name}"
    if isinstance(out, OutputFileDatasetConfig) and out.destination_path:
        rel = out.destination_path.replace("{run-id}", run_id).replace("{output-name}", out.name).strip("/")
    root = _refs.local_root(store)
    local = str(Path(root) / rel) if root else str(run_dir / "outputs" / step.name / out.name)
    # A ParallelRunStep's rows on remote storage are written there by its workers ("direct"): no local copy,
    # no upload after the step. ``local`` is then only where a consumer that needs a local path gets a copy.
    direct = root is None and isinstance(step, ParallelRunStep) and \
        step.parallel_run_config.output_action == "append_row"
    return {"name": out.name, "step": step.name, "datastore": store.name, "path_on_datastore": rel,
            "local": local, "remote": root is None, "direct": direct,
            "url": store.url(rel) if root is None else None}


def _argument(a: Any) -> dict[str, Any]:
    if isinstance(a, str):
        return {"value": a}
    if isinstance(a, _TabularPipelineData):
        return {"data": a.data.name}
    if isinstance(a, PipelineData):
        return {"data": a.name}
    return {"input": _refs.input_name(a, 0)}


def _input(obj: Any, index: int, ws: Any, options: dict[str, Any], step: str) -> dict[str, Any]:
    if isinstance(obj, _TabularPipelineData):
        return {"kind": "pipeline_data", "name": obj.data.name, "type": "tabular", "options": obj.options}
    if isinstance(obj, PipelineData):
        return {"kind": "pipeline_data", "name": obj.name, "type": "file"}
    entries, opts = _refs.dataset_specs(obj, ws)
    for protocol, value in opts.items():
        if protocol in options and options[protocol] != value:
            raise UsageError(
                f"step {step!r} reads {protocol}:// data from two datastores with different credentials; one "
                "step reads one account per protocol. Copy the data into one datastore, or split the step.")
        options[protocol] = value
    name = _refs.input_name(obj, index)
    for e in entries:
        e.setdefault("name", name)
    return {"kind": "dataset", "name": name, "type": input_type(obj), "entries": entries,
            "fingerprint": _refs.dataset_fingerprint(obj, ws), "dataset": _refs.dataset_identity(obj),
            "datastores": sorted({e["datastore"] for e in entries if e.get("datastore")})}


# --- ordering ------------------------------------------------------------------------------------------
def _order(listed: list[_Step]) -> list[_Step]:
    """All steps (listed ones and the producers they need) in a topological order; raises on cycles,
    duplicate names, and data nobody writes."""
    steps: list[_Step] = []
    problems: list[str] = []
    todo = list(listed)
    while todo:
        s = todo.pop(0)
        if any(s is t for t in steps):
            continue
        steps.append(s)
        for pd in s._consumed():
            if pd._producer is None:
                problems.append(f"step {s.name!r} reads PipelineData {pd.name!r}, but no step writes it: list it "
                                "in a step's output= (ParallelRunStep) or outputs= (PythonScriptStep).")
            else:
                todo.append(pd._producer)
        todo.extend(s._after)
    names: dict[str, _Step] = {}
    data_names: dict[str, PipelineData] = {}
    for s in steps:
        if s.name in names:
            problems.append(f"two steps are named {s.name!r}; step names must be unique in a pipeline.")
        names[s.name] = s
        for out in s._outputs:
            if out.name in data_names and data_names[out.name] is not out:
                problems.append(f"two PipelineData are named {out.name!r}; output names must be unique in a "
                                "pipeline.")
            data_names[out.name] = out
    if problems:
        raise JobSpecError(sorted(set(problems)), "Pipeline")
    deps = {id(s): [pd._producer for pd in s._consumed()] + list(s._after) for s in steps}
    ordered: list[_Step] = []
    state: dict[int, int] = {}  # 1 visiting, 2 done

    def visit(s: _Step, path: list[_Step]) -> None:
        if state.get(id(s)) == 2:
            return
        if state.get(id(s)) == 1:
            cycle = path[next(i for i, p in enumerate(path) if p is s):] + [s]
            raise JobSpecError([
                "the steps form a cycle: " + " -> ".join(p.name for p in reversed(cycle))
                + ". A step cannot read (directly or through other steps) data it writes itself; "
                "give it another PipelineData."], "Pipeline")
        state[id(s)] = 1
        for d in deps[id(s)]:
            visit(d, [*path, s])
        state[id(s)] = 2
        ordered.append(s)

    for s in steps:
        visit(s, [])
    return ordered
