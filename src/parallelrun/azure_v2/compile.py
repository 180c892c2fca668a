"""Compile an Azure ML v2 job into parallelrun's v1 objects: a front end, not a second engine.

A ``type: parallel`` job becomes a :class:`~parallelrun.ParallelRunConfig` and a
:class:`~parallelrun.ParallelRunStep`; a ``type: command`` job (``python script.py ...``) a
:class:`~parallelrun.PythonScriptStep`; data inputs become datasets and outputs PipelineData (see
:mod:`.resolve`); the whole is a :class:`~parallelrun.Pipeline`, submitted to an
:class:`~parallelrun.Experiment` as a v1 script would (a standalone job is a one-step pipeline).

Field mapping (v2 -> v1): ``mini_batch_size`` as is (a count or a size such as ``10kb``, checked by
ParallelRunConfig); ``resources.instance_count`` -> ``node_count``; ``max_concurrency_per_instance`` ->
``process_count_per_node``; ``mini_batch_error_threshold`` -> ``allowed_failed_count``;
``retry_settings.max_retries`` + 1 -> ``run_max_try``; ``retry_settings.timeout`` ->
``run_invocation_timeout``; ``append_row_to: ${{outputs.x}}`` -> ``output_action: append_row`` into x
(without it: ``summary_only``); ``--error_threshold`` / ``--allowed_failed_percent`` in
``program_arguments`` -> the fields of that name.

Every problem found (an unbound ``${{inputs.y}}``, a missing MLTable, an unregistered datastore) is
collected and raised at the end as one :class:`~parallelrun.errors.JobSpecError` naming where it is.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..errors import JobSpecError, ParallelRunError
from . import bindings
from .bindings import BindingError, Ref
from .mltable import MLTableError
from .resolve import Literal, Resolver
from .yaml_job import AnyJob, CommandJob, ParallelJob, PipelineJob

_PYTHON = re.compile(r"^(.*/)?python(\d+(\.\d+)?)?$")
_FLAG_EQ = re.compile(r"^(--?[\w-]+)=$")

# Azure's advanced settings passed in program_arguments: the ParallelRunConfig field they set here, or
# None and the reason they have no effect (reported as a notice).
_ADVANCED: dict[str, tuple[str | None, str]] = {
    "--error_threshold": ("error_threshold", ""),
    "--allowed_failed_percent": ("allowed_failed_percent", ""),
    "--task_overhead_timeout": (None, "workers load their mini-batches themselves; run() is timed by "
                                      "retry_settings.timeout"),
    "--progress_update_timeout": (None, "a stuck run() is stopped by retry_settings.timeout"),
    "--first_task_creation_timeout": (None, "there is no cluster scheduling delay to watch"),
    "--resource_monitor_interval": (None, "resource usage is not sampled into logs/sys/perf"),
    "--copy_logs_to_parent": (None, "step logs are already in the pipeline run's folder"),
    "--metrics_name_prefix": (None, "metrics are not pushed anywhere"),
    "--push_metrics_to_parent": (None, "metrics are not pushed anywhere"),
}
_ERRORS = (BindingError, MLTableError, ParallelRunError)
_FAILED = Literal("")  # an input whose problem is already reported: keeps its name bound, adds no noise


@dataclass
class OutputInfo:
    """Where one job output goes (for the CLI's closing summary)."""

    job: str
    name: str
    data: Any  # PipelineData / OutputFileDatasetConfig
    file_name: str | None = None


@dataclass
class CompiledJob:
    """The v1 objects of a v2 job, and what to tell the user about them."""

    pipeline: Any  # Pipeline
    experiment_name: str
    notices: list[str] = field(default_factory=list)
    outputs: list[OutputInfo] = field(default_factory=list)
    regenerate_outputs: bool = False
    continue_on_step_failure: bool = False


def _step_name(key: str, taken: set[str]) -> str:
    """A v2 job key (``batch_prediction``) as a v1 step name (``batch-prediction``), unique."""
    s = re.sub(r"[^a-z0-9-]+", "-", key.lower()).strip("-") or "job"
    if not s[0].isalpha():
        s = f"job-{s}"
    s = s[:32].rstrip("-")
    while len(s) < 3:
        s += "-job"
    base, n = s, 2
    while s in taken:
        s, n = f"{base[:29]}-{n}", n + 1
    taken.add(s)
    return s


def _experiment_name(job: AnyJob, base_dir: Path) -> str:
    name = job.experiment_name or base_dir.name  # Azure's default: the YAML's folder name
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_") or "azure-v2"
    return name if name[0].isalnum() else f"x{name}"


class _JobCompiler:
    def __init__(self, r: Resolver) -> None:
        self.r = r
        self.problems: list[str] = []
        self.outputs: list[OutputInfo] = []
        self.step_names: set[str] = set()
        self.consumed: dict[tuple[str, str], Any] = {}

    def problem(self, where: str, msg: object) -> None:
        self.problems.append(f"{where}: {msg}" if where else str(msg))

    # --- one job's inputs and outputs ---------------------------------------------------------------
    def values(self, key: str, job: ParallelJob | CommandJob, prefix: str, parent: dict[str, Any] | None,
               parent_outputs: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, tuple[Any, str | None]]]:
        values: dict[str, Any] = {}
        for name, v in job.inputs.items():
            try:
                values[name] = self.r.input_value(v, f"{prefix}inputs.{name}", parent)
            except _ERRORS as e:
                self.problem(f"{prefix}inputs.{name}", e)
                values[name] = _FAILED
        outs: dict[str, tuple[Any, str | None]] = {}
        for name, out in job.outputs.items():
            try:
                outs[name] = self.r.output(key, name, out, parent_outputs, f"{prefix}outputs.{name}")
            except _ERRORS as e:
                self.problem(f"{prefix}outputs.{name}", e)
                continue
            self.outputs.append(OutputInfo(key, name, outs[name][0], outs[name][1]))
        self.r.produced[key] = {n: o[0] for n, o in outs.items()}
        return values, outs

    def consume(self, key: str, name: str, value: Any) -> Any:
        """What a v1 step takes for an input: a named dataset input, a PipelineData, or a string."""
        if isinstance(value, Literal):
            return value.value
        if (key, name) not in self.consumed:
            self.consumed[key, name] = value.as_named_input(name) if hasattr(value, "as_named_input") else value
        return self.consumed[key, name]

    def ref_value(self, ref: Ref, key: str, values: dict[str, Any], outs: dict[str, Any]) -> Any:
        if ref.kind == "inputs":
            if ref.key not in values:
                bindings.check_name(ref, values, f"an input of job {key!r}")
            return self.consume(key, ref.key, values[ref.key])
        if ref.kind == "outputs":
            bindings.check_name(ref, outs, f"an output of job {key!r}")
            return outs[ref.key][0]
        if ref.kind == "default_datastore":
            return self.r.default_store.name
        if ref.kind == "name":
            raise BindingError("${{name}} is the run's name, known when it starts: use it in output paths only")
        raise BindingError(f"{ref.text}: bind pipeline values in the job's inputs: (d: {ref.text}) and use "
                           "${{inputs.d}} here")

    def arguments(self, tokens: list[str], key: str, values: dict[str, Any], outs: dict[str, Any],
                  where: str) -> list[Any]:
        args: list[Any] = []
        for token in tokens:
            try:
                parts = [self.ref_value(p, key, values, outs) if isinstance(p, Ref) else p
                         for p in bindings.split(token)]
            except _ERRORS as e:
                self.problem(where, e)
                continue
            if all(isinstance(p, str) for p in parts):
                args.append("".join(parts))
            elif len(parts) == 1:
                args.append(parts[0])
            elif len(parts) == 2 and isinstance(parts[0], str) and _FLAG_EQ.match(parts[0]):
                args.extend([parts[0][:-1], parts[1]])  # --model=${{inputs.m}} -> --model <path>
            else:
                self.problem(where, f"{token!r}: a data input or output must be a whole argument "
                                    "(--model ${{inputs.model}} or --model=${{inputs.model}})")
        return args

    # --- parallel -----------------------------------------------------------------------------------
    def parallel(self, key: str, job: ParallelJob, prefix: str, parent: dict[str, Any] | None,
                 parent_outputs: dict[str, Any] | None, defaults: dict[str, Any]) -> Any:
        from ..workspace.steps import ParallelRunConfig, ParallelRunStep

        n0 = len(self.problems)
        values, outs = self.values(key, job, prefix, parent, parent_outputs)
        main = None
        ref = bindings.whole(job.input_data)
        if ref is None or ref.kind != "inputs":
            self.problem(f"{prefix}input_data", f"{job.input_data!r} should name one of the job's inputs, e.g. "
                                                "input_data: ${{inputs.data}}")
        elif ref.key not in values:
            try:
                bindings.check_name(ref, job.inputs, f"an input of job {key!r}")
            except BindingError as e:
                self.problem(f"{prefix}input_data", e)
        elif values[ref.key] is _FAILED:
            pass
        elif isinstance(values[ref.key], Literal):
            self.problem(f"{prefix}input_data", f"{ref.text} is a literal; input_data is data (uri_folder, "
                                                "uri_file, mltable)")
        else:
            main = self.consume(key, ref.key, values[ref.key])
        fields: dict[str, Any] = {}
        tokens = self.split_command(job.task.program_arguments or "", f"{prefix}task.program_arguments")
        kept: list[str] = []
        i = 0
        while i < len(tokens):  # bounded: i grows every pass
            flag, eq, val = tokens[i].partition("=")
            if flag in _ADVANCED:
                if not eq:
                    val = tokens[i + 1] if i + 1 < len(tokens) else ""
                    i += 1
                target, why = _ADVANCED[flag]
                if target:
                    try:
                        fields[target] = float(val) if target == "allowed_failed_percent" else int(val)
                    except ValueError:
                        self.problem(f"{prefix}task.program_arguments", f"{flag} {val!r} is not a number")
                else:
                    self.r.notice(f"{prefix}task.program_arguments: {flag} accepted, no effect here: {why}")
            else:
                kept.append(tokens[i])
            i += 1
        args = self.arguments(kept, key, values, outs, f"{prefix}task.program_arguments")
        output, file_name = None, None
        if job.task.append_row_to:
            ref = bindings.whole(job.task.append_row_to)
            try:
                if ref is None or ref.kind != "outputs":
                    raise BindingError(f"{job.task.append_row_to!r} should name one of the job's outputs, e.g. "
                                       "append_row_to: ${{outputs.scores}}")
                bindings.check_name(ref, outs, f"an output of job {key!r}")
                output, file_name = outs[ref.key]
            except BindingError as e:
                self.problem(f"{prefix}task.append_row_to", e)
        elif outs:
            output = next(iter(outs.values()))[0]
        others = [n for n, (pd, _) in outs.items() if pd is not output]
        if others:
            self.problem(f"{prefix}outputs", f"a parallel job has one output here (a ParallelRunStep's output=), "
                                             f"so {', '.join(others)} cannot be written. Keep one output (the "
                                             "append_row_to one), or write the others from a command job.")
        used = {id(a) for a in args}
        side = [self.consume(key, n, v) for n, v in values.items()
                if not isinstance(v, Literal) and self.consume(key, n, v) is not main
                and id(self.consume(key, n, v)) not in used]
        compute = self.r.compute(job.compute or defaults.get("compute"), prefix)
        is_ray = getattr(compute, "type", None) == "ray"
        node_count = job.resources.instance_count
        if node_count > 1 and not is_ray:
            self.r.notice(f"{prefix}resources.instance_count: {node_count} nodes -> 1 on this machine (register "
                          "the compute as Ray for more nodes)")
            node_count = 1
        if job.resources.instance_type:
            self.r.notice(f"{prefix}resources.instance_type: ignored here")
        if job.mini_batch_size is None:
            mini_batch: Any = None if _is_tabular(main) else 1  # Azure's default: one file per mini-batch
        else:
            mini_batch = re.sub(r"\s+", "", str(job.mini_batch_size))  # Azure writes "10 kb" too
        env_vars = {**(job.environment_variables or {}), **(job.task.environment_variables or {})}
        env = None
        try:
            env = self.r.environment(job.task.environment, f"{prefix}task", key)
        except _ERRORS as e:
            self.problem(f"{prefix}task.environment", e)
        if len(self.problems) > n0 or main is None:
            return None
        code = (self.r.base / job.task.code).resolve() if job.task.code else self.r.base
        try:
            cfg = ParallelRunConfig(
                entry_script=job.task.entry_script, source_directory=str(code), mini_batch_size=mini_batch,
                error_threshold=fields.get("error_threshold", job.error_threshold),
                allowed_failed_count=job.mini_batch_error_threshold,
                allowed_failed_percent=fields.get("allowed_failed_percent", 100),
                output_action="append_row" if job.task.append_row_to else "summary_only",
                append_row_file_name=file_name or None, environment=env, compute_target=compute,
                node_count=node_count, process_count_per_node=job.max_concurrency_per_instance,
                logging_level=job.logging_level, run_invocation_timeout=job.retry_settings.timeout,
                run_max_try=job.retry_settings.max_retries + 1,  # retries after the first attempt
                environment_variables={k: str(v) for k, v in env_vars.items()},
                partition_keys=job.partition_keys)
            return ParallelRunStep(name=_step_name(key, self.step_names), parallel_run_config=cfg, inputs=[main],
                                   output=output, side_inputs=side, arguments=args,
                                   allow_reuse=job.is_deterministic)
        except (JobSpecError, ValueError) as e:
            for p in getattr(e, "problems", [str(e)]):
                self.problem(prefix.rstrip("."), p)
        return None

    # --- command ------------------------------------------------------------------------------------
    def split_command(self, text: str, where: str) -> list[str]:
        try:
            return shlex.split(text)
        except ValueError as e:
            self.problem(where, f"cannot split {text!r} into arguments: {e}")
            return []

    def command(self, key: str, job: CommandJob, prefix: str, parent: dict[str, Any] | None,
                parent_outputs: dict[str, Any] | None, defaults: dict[str, Any]) -> Any:
        from ..workspace.steps import PythonScriptStep

        n0 = len(self.problems)
        values, outs = self.values(key, job, prefix, parent, parent_outputs)
        tokens = self.split_command(job.command, f"{prefix}command")
        i = 1
        while i < len(tokens) and tokens[i].startswith("-") and tokens[i] != "-m":
            i += 1  # interpreter options such as -u
        if not tokens or not _PYTHON.match(tokens[0]) or i >= len(tokens) or tokens[i] == "-m":
            self.problem(f"{prefix}command", f"{job.command!r}: only 'python <script.py> [arguments]' commands "
                                             "run here (a PythonScriptStep); wrap other programs in a Python script")
            return None
        for n, (_pd, file_name) in outs.items():
            if file_name is not None:
                self.problem(f"{prefix}outputs.{n}", "a command job's uri_file output is not supported; use "
                                                     "uri_folder and write the file inside it")
        args = self.arguments(tokens[i + 1:], key, values, outs, f"{prefix}command")
        env = None
        try:
            env = self.r.environment(job.environment, prefix.rstrip("."), key)
        except _ERRORS as e:
            self.problem(f"{prefix}environment", e)
        self.r.compute(job.compute or defaults.get("compute"), prefix)  # notice only: scripts run here
        if job.distribution or job.limits:
            self.r.notice(f"{prefix}distribution/limits: ignored; the script runs once, in one process")
        if len(self.problems) > n0:
            return None
        data_inputs = [self.consume(key, n, v) for n, v in values.items() if not isinstance(v, Literal)]
        code = (self.r.base / job.code).resolve() if job.code else self.r.base
        try:
            return PythonScriptStep(
                script_name=tokens[i], source_directory=str(code), arguments=args, inputs=data_inputs,
                outputs=[pd for pd, _ in outs.values()], name=_step_name(key, self.step_names),
                allow_reuse=job.is_deterministic, runconfig=SimpleNamespace(environment=env),
                environment_variables={k: str(v) for k, v in (job.environment_variables or {}).items()})
        except JobSpecError as e:
            for p in e.problems:
                self.problem(prefix.rstrip("."), p)
        return None


def _is_tabular(obj: Any) -> bool:
    ds = getattr(obj, "dataset", obj)
    return type(ds).__name__ == "TabularDataset"


def compile_job(job: AnyJob, base_dir: Path, ws: Any, *, environment: str | None = None,
                compute: str | None = None, source: str = "Azure ML job") -> CompiledJob:
    """Build the Pipeline (with its steps, datasets and outputs) of a validated v2 job.

    ``environment="current"`` runs every step in this Python environment instead of building the job's;
    ``compute`` (``local``, ``ray``, ``ray://host:port``) overrides every job's compute.
    """
    from ..workspace import Datastore
    from ..workspace.pipeline import Pipeline

    r = Resolver(ws, base_dir, environment, compute)
    c = _JobCompiler(r)
    steps: list[Any] = []
    regenerate, keep_going = False, False
    if isinstance(job, PipelineJob):
        s = job.settings
        if s.default_datastore:
            try:
                r.default_store = Datastore.get(ws, s.default_datastore.removeprefix("azureml:"))
            except ParallelRunError as e:
                c.problem("settings.default_datastore", e)
        parent: dict[str, Any] = {}
        for name, v in job.inputs.items():
            try:
                parent[name] = r.input_value(v, f"inputs.{name}", None)
            except _ERRORS as e:
                c.problem(f"inputs.{name}", e)
        if s.on_init or s.on_finalize:
            r.notice("settings.on_init/on_finalize: those jobs run in their place in the data order, as others")
        defaults = {"compute": job.compute or s.default_compute}
        for key in bindings.order_jobs(job.jobs):
            child = job.jobs[key]
            if isinstance(child, ParallelJob):
                step = c.parallel(key, child, f"jobs.{key}.", parent, dict(job.outputs), defaults)
            else:
                step = c.command(key, child, f"jobs.{key}.", parent, dict(job.outputs), defaults)
            if step is not None:
                steps.append(step)
        regenerate, keep_going = s.force_rerun, s.continue_on_step_failure
    else:
        key = job.name or job.display_name or base_dir.name
        step = (c.parallel(key, job, "", None, None, {}) if isinstance(job, ParallelJob)
                else c.command(key, job, "", None, None, {}))
        if step is not None:
            steps.append(step)
    if c.problems:
        raise JobSpecError(c.problems, source)
    pipeline = Pipeline(ws, steps, description=job.description, default_datastore=r.default_store)
    return CompiledJob(pipeline, _experiment_name(job, base_dir), r.notices, c.outputs, regenerate, keep_going)
