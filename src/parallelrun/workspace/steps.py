"""Pipeline steps, as in Azure ML SDK v1: ParallelRunConfig, ParallelRunStep, PythonScriptStep, and the
intermediate outputs that connect them (PipelineData, OutputFileDatasetConfig).

Everything is validated when it is constructed and every problem is reported at once, in one
:class:`~parallelrun.errors.JobSpecError`, with the engine's messages (the field, the bad value, a valid
example): a ParallelRunConfig is a job spec without its inputs, and a ParallelRunStep supplies them.

Nothing here runs anything. :class:`~parallelrun.workspace.pipeline.Pipeline` orders the steps and
compiles them for the background pipeline driver.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

from ..config import NAME_RE, mini_batch_size_problem, validate_spec
from ..errors import JobSpecError
from . import _refs

_DATA_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

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

# ParallelRunConfig fields that map one to one onto the engine's job spec.
_SPEC_FIELDS = ("mini_batch_size", "error_threshold", "allowed_failed_count", "allowed_failed_percent",
                "output_action", "append_row_file_name", "process_count_per_node", "node_count",
                "run_invocation_timeout", "run_max_try", "logging_level", "environment_variables")


class PipelineData:
    """An intermediate folder: written by the step that lists it in its outputs, read by the steps that
    list it in their inputs (which therefore run after the producer).

    The folder is ``azureml/<pipeline run id>/<step name>/<name>`` on ``datastore`` (default: the
    workspace's default datastore). ``output_path_on_compute`` and ``output_mode`` are accepted for
    compatibility; the local executor writes straight into the folder.
    """

    def __init__(self, name: str, datastore: Any = None, output_name: str | None = None,
                 output_mode: str = "mount", output_path_on_compute: str | None = None,
                 is_directory: bool | None = None, **_azure_only: Any) -> None:
        if not isinstance(name, str) or not _DATA_NAME_RE.match(name):
            raise JobSpecError([f"name: {name!r} is not a valid PipelineData name; use letters, digits and "
                                "underscores, starting with a letter. Example: PipelineData('scores')"],
                               type(self).__name__)
        self.name = name
        self.datastore = datastore
        self.output_name = output_name or name
        self.output_mode = output_mode
        self.output_path_on_compute = output_path_on_compute
        self.is_directory = is_directory
        self._producer: Any = None  # the step that lists this in its outputs
        self._tabular: dict[str, Any] | None = None

    # Azure's consumption helpers: all of them mean "the folder, read by the consumer".
    def as_dataset(self) -> PipelineData:
        return self

    def as_mount(self) -> PipelineData:
        return self

    def as_download(self, path_on_compute: str | None = None) -> PipelineData:
        return self

    def as_input(self, name: str | None = None) -> PipelineData:
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class _TabularPipelineData:
    """``OutputFileDatasetConfig.read_delimited_files()``: the folder's files read as a TabularDataset."""

    def __init__(self, data: PipelineData, options: dict[str, Any]) -> None:
        self.data = data
        self.options = options
        self.name = data.name

    def as_input(self, name: str | None = None) -> _TabularPipelineData:
        return self


class OutputFileDatasetConfig(PipelineData):
    """Azure's newer intermediate output. ``destination=(datastore, "path/{run-id}/{output-name}")``
    chooses where it is written; ``{run-id}`` is the pipeline run's id."""

    _count = 0

    def __init__(self, name: str | None = None, destination: tuple[Any, str] | None = None,
                 source: str | None = None, partition_format: str | None = None) -> None:
        if name is None:
            OutputFileDatasetConfig._count += 1
            name = f"output_{OutputFileDatasetConfig._count}"
        datastore, path = destination if destination else (None, None)
        self.destination_path: str | None = path
        super().__init__(name, datastore=datastore)

    def read_delimited_files(self, include_path: bool = False, separator: str = ",", header: bool = True,
                             **_azure_only: Any) -> _TabularPipelineData:
        return _TabularPipelineData(self, {"separator": separator, "header": header, "format": None})

    def read_parquet_files(self, **_azure_only: Any) -> _TabularPipelineData:
        return _TabularPipelineData(self, {"format": "parquet"})

    def register_on_complete(self, name: str, description: str | None = None,
                             tags: dict[str, str] | None = None) -> OutputFileDatasetConfig:
        self.register_as = name
        return self


class ParallelRunConfig:
    """How a ParallelRunStep runs its entry script; Azure's ParallelRunConfig, validated on construction.

    ``source_directory`` is resolved against the current folder now, as Azure snapshots it at submit.
    ``environment`` is an :class:`Environment` (None: this interpreter); ``compute_target`` a
    LocalCompute, a RayCompute, or the name of a registered compute target (None: local).
    """

    def __init__(self, entry_script: str, source_directory: str | os.PathLike[str] | None = None,
                 mini_batch_size: int | str | None = None, error_threshold: int = -1,
                 allowed_failed_count: int | None = None, allowed_failed_percent: float | None = None,
                 output_action: str = "append_row", append_row_file_name: str | None = None,
                 environment: Any = None, compute_target: Any = None, node_count: int = 1,
                 process_count_per_node: int | None = None, logging_level: str = "INFO",
                 run_invocation_timeout: float = 60, run_max_try: int = 3,
                 environment_variables: dict[str, str] | None = None, description: str | None = None,
                 partition_keys: list[str] | None = None) -> None:
        self.entry_script = entry_script
        self.source_directory = str(Path(source_directory).resolve()) if source_directory is not None else None
        self._base_dir = self.source_directory or os.getcwd()
        self.mini_batch_size = mini_batch_size
        self.error_threshold = error_threshold
        self.allowed_failed_count = -1 if allowed_failed_count is None else allowed_failed_count
        self.allowed_failed_percent = 100 if allowed_failed_percent is None else allowed_failed_percent
        self.output_action = output_action
        self.append_row_file_name = append_row_file_name or "parallel_run_step.txt"
        self.environment = environment
        self.compute_target = compute_target
        self.node_count = node_count
        self.process_count_per_node = process_count_per_node or (os.cpu_count() or 1)
        self.logging_level = logging_level.upper() if isinstance(logging_level, str) else logging_level
        self.run_invocation_timeout = run_invocation_timeout
        self.run_max_try = run_max_try
        self.environment_variables = dict(environment_variables or {})
        self.description = description
        self._node_count_warned = False
        problems = []
        if partition_keys:
            problems.append("partition_keys: partitioning by keys is not supported; split the input into one "
                            "folder per key and run one step per folder, or group the rows inside run().")
        if (p := mini_batch_size_problem(mini_batch_size, None)) is not None:
            problems.append(p)
        try:
            validate_spec(self._spec_fields(mini_batch=False) | {
                "name": "config-check", "inputs": [{"type": "file", "path": "."}]})
        except JobSpecError as e:
            problems.extend(e.problems)
        if problems:
            raise JobSpecError(problems, "ParallelRunConfig")

    def _spec_fields(self, mini_batch: bool = True, compute: dict[str, Any] | None = None) -> dict[str, Any]:
        """The engine's job-spec fields. ``compute``: the resolved compute fields, ``_refs.compute_fields`` (known at submit; before
        that, only when the target is an object rather than a registered name)."""
        d = {f: getattr(self, f) for f in _SPEC_FIELDS}
        d["entry_script"] = self.entry_script
        d["source_directory"] = self._base_dir
        if not mini_batch or d["mini_batch_size"] is None:
            d.pop("mini_batch_size")
        elif isinstance(d["mini_batch_size"], str) and d["mini_batch_size"].strip().isdigit():
            d["mini_batch_size"] = int(d["mini_batch_size"])
        if compute is None and not (isinstance(self.compute_target, str) or self.compute_target is None):
            compute = _refs.compute_fields(self.compute_target, None)
        if compute is not None:
            d.update(compute)
        if (d.get("compute") or "local") == "local" and isinstance(self.node_count, int) and self.node_count > 1:
            # Azure code sizes its AmlCompute cluster with node_count; one machine has one node.
            if not self._node_count_warned:
                self._node_count_warned = True
                warnings.warn(f"ParallelRunConfig: node_count={self.node_count} has no meaning on local compute "
                              "(one machine); running on this machine with process_count_per_node="
                              f"{self.process_count_per_node} workers. Use a RayCompute target to spread "
                              "workers over several nodes.", UserWarning, stacklevel=3)
            d["node_count"] = 1
        return d

    def __repr__(self) -> str:
        return (f"ParallelRunConfig(entry_script={self.entry_script!r}, source_directory="
                f"{self.source_directory!r}, mini_batch_size={self.mini_batch_size!r})")


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
