"""Pipeline steps, as in Azure ML SDK v1: ParallelRunConfig, ParallelRunStep, PythonScriptStep, and the
intermediate outputs that connect them (PipelineData, OutputFileDatasetConfig).

Everything is validated when it is constructed and every problem is reported at once, in one
:class:`~parallelrun.errors.JobSpecError`, with the engine's messages (the field, the bad value, a valid
example): a ParallelRunConfig is a job spec without its inputs, and a ParallelRunStep supplies them.

PipelineData and OutputFileDatasetConfig live in ``intermediate.py``, ParallelRunConfig in
``parallel_run_config.py``; both are re-exported here. Nothing here runs anything. :class:`~parallelrun.workspace.pipeline.Pipeline` orders the steps and
compiles them for the background pipeline driver.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..config import NAME_RE, validate_spec
from ..errors import JobSpecError
from . import _refs
from .intermediate import OutputFileDatasetConfig, PipelineData, _TabularPipelineData
from .parallel_run_config import ParallelRunConfig

# Re-exported: ``parallelrun.workspace.steps`` is where Azure code (and ours) imports them from.
__all__ = ["OutputFileDatasetConfig", "ParallelRunConfig", "ParallelRunStep", "PipelineData", "PythonScriptStep",
           "RESERVED_ARGUMENTS", "input_type"]

# Arguments ParallelRunStep sets itself on Azure, which rejects them in ``arguments=``: the value goes in
# the ParallelRunConfig field named here instead.
RESERVED_ARGUMENTS: dict[str, str] = {
    "--mini_batch_size": "mini_batch_size",
    "--error_threshold": "error_threshold",
    "--allowed_failed_count": "allowed_failed_count",
    "--allowed_failed_percent": "allowed_failed_percent",
    "--output": "the step's output= (a PipelineData)",
    "--output_action": "output_action",
    "--append_row_file_name": "append_row_file_name",
    "--process_count_per_node": "process_count_per_node",
    "--node_count": "node_count",
    "--run_invocation_timeout": "run_invocation_timeout",
    "--run_max_try": "run_max_try",
    "--logging_level": "logging_level",
    "--entry_script": "entry_script",
    "--scoring_module_name": "entry_script",
    "--partition_keys": "partition_keys (not supported: partition the input instead)",
}

def input_type(obj: Any) -> str | None:
    """'file', 'tabular', or None when ``obj`` is not something a step can read."""
    if isinstance(obj, _TabularPipelineData):
        return "tabular"
    if isinstance(obj, PipelineData):
        return "file"
    ds = _refs.dataset_of(obj)
    return _refs.dataset_type(ds) if ds is not None else None


class _Step:
    """What every step shares: a name, inputs and outputs (which order the pipeline), and run_after."""

    type_name = "Step"

    def __init__(self, name: str, allow_reuse: bool) -> None:
        self.name = name
        self.allow_reuse = allow_reuse
        self._inputs: list[Any] = []
        self._outputs: list[PipelineData] = []
        self._side_inputs: list[Any] = []
        self._arguments: list[Any] = []
        self._after: list[_Step] = []

    def run_after(self, step: _Step) -> None:
        """Run this step after ``step`` even when no data connects them."""
        self._after.append(step)

    def _consumed(self) -> list[PipelineData]:
        found: list[PipelineData] = []
        for obj in [*self._inputs, *self._side_inputs, *self._arguments]:
            if isinstance(obj, _TabularPipelineData):
                obj = obj.data
            if isinstance(obj, PipelineData) and obj not in self._outputs and obj not in found:
                found.append(obj)
        return found

    def _claim_outputs(self, problems: list[str]) -> None:
        for out in self._outputs:
            if out._producer is not None and out._producer is not self:
                problems.append(f"output: PipelineData {out.name!r} is already the output of step "
                                f"{out._producer.name!r}; give each step its own PipelineData.")
            else:
                out._producer = self

    def __repr__(self) -> str:
        return f"{self.type_name}(name={self.name!r})"


def _check_arguments(arguments: list[Any], problems: list[str]) -> list[Any]:
    out = []
    for a in arguments:
        if isinstance(a, str):
            flag = a.split("=", 1)[0]
            if flag in RESERVED_ARGUMENTS:
                problems.append(f"arguments: {a!r} is reserved by ParallelRunStep (it sets {flag} itself); "
                                f"set it with ParallelRunConfig's {RESERVED_ARGUMENTS[flag]} instead, or give "
                                "your own argument another name.")
            out.append(a)
        elif isinstance(a, (int, float, bool)):
            out.append(str(a))
        elif isinstance(a, (PipelineData, _TabularPipelineData)) or _refs.is_dataset_like(a):
            out.append(a)
        else:
            problems.append(f"arguments: {a!r} is neither a string nor a number, a PipelineData or a dataset "
                            "input. Example: arguments=['--threshold', '0.5', '--labels', labels_input]")
    return out


class ParallelRunStep(_Step):
    """Run an entry script over a dataset in parallel (the engine), as one step of a pipeline.

    ``inputs``: FileDatasets, TabularDatasets (``ds.as_named_input('name')``) or PipelineData, all of one
    type. ``output``: the PipelineData the rows go to (made for you when omitted). ``side_inputs``:
    datasets every worker can read whole; each is downloaded once and its local path is passed where it
    appears in ``arguments`` and in ``$AZUREML_DATAREFERENCE_<name>``. ``models``: registered models the
    entry script finds with ``Model.get_model_path(name)``.
    """

    type_name = "ParallelRunStep"

    def __init__(self, name: str, parallel_run_config: ParallelRunConfig, inputs: list[Any],
                 output: PipelineData | None = None, side_inputs: list[Any] | None = None,
                 models: list[Any] | None = None, arguments: list[Any] | None = None,
                 allow_reuse: bool = True, tags: dict[str, str] | None = None) -> None:
        super().__init__(name, allow_reuse)
        problems = _check_step_name(name)
        if not isinstance(parallel_run_config, ParallelRunConfig):
            raise JobSpecError([f"parallel_run_config: expected a ParallelRunConfig, got "
                                f"{type(parallel_run_config).__name__}"], f"ParallelRunStep {name!r}")
        self.parallel_run_config = cfg = parallel_run_config
        if inputs is None or not isinstance(inputs, (list, tuple)) or not inputs:
            problems.append("inputs: a ParallelRunStep needs a list of at least one input. "
                            "Example: inputs=[dataset.as_named_input('images')]")
            inputs = []
        types: dict[str, list[str]] = {}
        for i, obj in enumerate(inputs):
            kind = input_type(obj)
            if kind is None:
                problems.append(f"inputs[{i}]: {obj!r} is not a dataset or a PipelineData. Example: "
                                "inputs=[Dataset.File.from_files(...).as_named_input('images')]")
                continue
            types.setdefault(kind, []).append(_refs.input_name(obj, i))
        if len(types) > 1:
            problems.append(
                "inputs: a ParallelRunStep takes one input type, but these inputs mix them: "
                + "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(types.items()))
                + ". Split them into two ParallelRunSteps, or make them one FileDataset or one TabularDataset."
            )
        self._inputs = list(inputs)
        kind_of_inputs = next(iter(types), "file")
        if output is None:  # Azure's default: an output named after the step
            output = PipelineData(re.sub(r"\W", "_", f"{name}_output") if re.match(r"^[A-Za-z]", str(name))
                                  else "step_output")
        if not isinstance(output, PipelineData):
            problems.append(f"output: {output!r} is not a PipelineData. Example: output=PipelineData('scores')")
        else:
            self._outputs = [output]
        self.output = output
        self._side_inputs = list(side_inputs or [])
        for i, obj in enumerate(self._side_inputs):
            if input_type(obj) is None:
                problems.append(f"side_inputs[{i}]: {obj!r} is not a dataset or a PipelineData.")
        self._arguments = _check_arguments(list(arguments or []), problems)
        for a in self._arguments:  # a dataset named in arguments is a side input, as on Azure
            if not isinstance(a, str) and a not in self._side_inputs and a not in self._inputs:
                self._side_inputs.append(a)
        self.models = list(models or [])
        self.tags = dict(tags or {})
        spec = cfg._spec_fields() | {"name": name if re.match(NAME_RE, name or "") and 3 <= len(name) <= 32
                                     else "step-check", "inputs": [{"type": kind_of_inputs, "path": "."}]}
        try:
            validate_spec(spec)
        except JobSpecError as e:
            problems.extend(e.problems)
        self._claim_outputs(problems)
        if problems:
            raise JobSpecError(problems, f"ParallelRunStep {name!r}")
        self.input_type = kind_of_inputs

    @property
    def inputs(self) -> list[Any]:
        return list(self._inputs)

    @property
    def side_inputs(self) -> list[Any]:
        return list(self._side_inputs)

    @property
    def arguments(self) -> list[Any]:
        return list(self._arguments)


class PythonScriptStep(_Step):
    """Run a Python script once, in a subprocess, e.g. to prepare data before a ParallelRunStep or to
    aggregate its output after. PipelineData and dataset inputs in ``arguments`` become local paths."""

    type_name = "PythonScriptStep"

    def __init__(self, script_name: str, source_directory: str | os.PathLike[str] | None = None,
                 arguments: list[Any] | None = None, inputs: list[Any] | None = None,
                 outputs: list[PipelineData] | None = None, compute_target: Any = None,
                 allow_reuse: bool = True, name: str | None = None, runconfig: Any = None,
                 environment_variables: dict[str, str] | None = None) -> None:
        super().__init__(name or Path(script_name).stem.replace("_", "-").lower(), allow_reuse)
        problems = _check_step_name(self.name, "name")
        self.script_name = script_name
        self.source_directory = str(Path(source_directory).resolve()) if source_directory else os.getcwd()
        script = Path(self.source_directory) / script_name
        if not script.is_file():
            problems.append(f"script_name: {script_name!r} is not a file in source_directory "
                            f"{self.source_directory}. Example: PythonScriptStep('prepare.py', "
                            "source_directory='scripts')")
        self._inputs = list(inputs or [])
        for i, obj in enumerate(self._inputs):
            if input_type(obj) is None:
                problems.append(f"inputs[{i}]: {obj!r} is not a dataset or a PipelineData.")
        self._outputs = []
        for i, out in enumerate(outputs or []):
            if not isinstance(out, PipelineData):
                problems.append(f"outputs[{i}]: {out!r} is not a PipelineData. "
                                "Example: outputs=[PipelineData('prepared')]")
            else:
                self._outputs.append(out)
        self._arguments = []
        for a in arguments or []:
            if isinstance(a, (int, float, bool)):
                self._arguments.append(str(a))
            elif isinstance(a, (str, PipelineData, _TabularPipelineData)) or _refs.is_dataset_like(a):
                self._arguments.append(a)
            else:
                problems.append(f"arguments: {a!r} is neither a string nor a number, a PipelineData or a "
                                "dataset input.")
        for a in self._arguments:
            if not isinstance(a, str) and a not in self._inputs and a not in self._outputs:
                self._inputs.append(a)
        self.compute_target = compute_target
        self.environment = getattr(runconfig, "environment", None)
        self.environment_variables = dict(environment_variables or {})
        self._claim_outputs(problems)
        if problems:
            raise JobSpecError(problems, f"PythonScriptStep {self.name!r}")

    @property
    def inputs(self) -> list[Any]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[PipelineData]:
        return list(self._outputs)

    @property
    def arguments(self) -> list[Any]:
        return list(self._arguments)


def _check_step_name(name: Any, field: str = "name") -> list[str]:
    if isinstance(name, str) and 3 <= len(name) <= 32 and re.match(NAME_RE, name):
        return []
    suggestion = re.sub(r"[^a-z0-9-]+", "-", str(name).lower()).strip("-") or "batch-score"
    if not suggestion[0].isalpha():
        suggestion = f"step-{suggestion}"
    suggestion = suggestion[:32].rstrip("-")
    if len(suggestion) < 3:
        suggestion = f"{suggestion}-step"
    return [f"{field}: {name!r} is not a valid step name: it must be 3-32 characters of lowercase letters, "
            f"digits and '-', start with a letter and end with a letter or digit "
            f"(^[a-z]([-a-z0-9]*[a-z0-9])?$). Example: {field}={suggestion!r}"]


__all__ = ["OutputFileDatasetConfig", "ParallelRunConfig", "ParallelRunStep", "PipelineData",
           "PythonScriptStep", "RESERVED_ARGUMENTS"]
