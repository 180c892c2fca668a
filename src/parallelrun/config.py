"""The job spec: ``job.yml`` and ``ParallelRunConfig`` share these models and their validation.

Field names follow Azure ML's ParallelRunConfig / ParallelRunStep so migrated jobs read the same.
``load_job`` reads YAML, applies ``--set`` overrides, and validates everything up front, reporting every
problem at once (field, bad value, a valid example) as one :class:`~parallelrun.errors.JobSpecError`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from .batch_size import EXAMPLE as MINI_BATCH_SIZE_EXAMPLE
from .batch_size import SIZE_RE, is_auto, mini_batch_size_problem, parse_count, parse_size
from .data.storage import unkeyed_options
from .errors import JobSpecError
from .spec_overrides import apply_overrides, parse_overrides
from .spec_paths import SOURCE_DIRECTORY_EXAMPLE, path_problems

# Re-exported: callers ask the job spec's module for these (``parallelrun.config.parse_size``, ...).
__all__ = [
    "DEFAULT_FILE_BATCH", "DEFAULT_TABULAR_BATCH", "EXAMPLES", "NAME_RE", "InputSpec", "JobSpec", "RayOptions",
    "apply_overrides", "is_auto", "json_schema", "load_job", "mini_batch_size_problem", "parse_count",
    "parse_overrides", "parse_size", "path_problems", "validate_spec", "validation_problems",
]

NAME_RE = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DEFAULT_FILE_BATCH = 10
DEFAULT_TABULAR_BATCH = "1MB"

# A valid example per field, quoted in error messages so the fix is one copy-paste away.
EXAMPLES: dict[str, str] = {
    "name": "name: digits",
    "entry_script": "entry_script: digit_identification.py",
    "source_directory": SOURCE_DIRECTORY_EXAMPLE,
    "inputs": "inputs: [{type: file, path: data/digits}]",
    "type": "type: file   (or: tabular)",
    "path": "path: data/digits",
    "format": "format: csv   (csv | tsv | parquet | jsonl)",
    "output": "output: out/digits",
    "mini_batch_size": MINI_BATCH_SIZE_EXAMPLE,
    "error_threshold": "error_threshold: 10   (-1 ignores all failed items)",
    "allowed_failed_count": "allowed_failed_count: 5   (-1 ignores)",
    "allowed_failed_percent": "allowed_failed_percent: 10   (0-100)",
    "isolate_failures": "isolate_failures: false   (default true: a failing mini-batch is split to find its bad items)",
    "output_action": "output_action: append_row   (or: summary_only)",
    "append_row_file_name": "append_row_file_name: parallel_run_step.txt",
    "output_layout": "output_layout: file   (or: dataset)",
    "storage_options": "storage_options: {az: {account_name: myaccount}}",
    "append_row_format": "append_row_format: text   (text | csv | jsonl | parquet)",
    "process_count_per_node": "process_count_per_node: 2",
    "node_count": "node_count: 1",
    "run_invocation_timeout": "run_invocation_timeout: 60",
    "run_max_try": "run_max_try: 3",
    "logging_level": "logging_level: INFO   (WARNING | INFO | DEBUG)",
    "arguments": "arguments: [--model, models/digits.onnx]",
    "environment_variables": 'environment_variables: {OMP_NUM_THREADS: "1"}',
    "compute": "compute: local   (or: ray, ray://127.0.0.1:10001, auto)",
    "gpus_per_process": "gpus_per_process: 1",
    "cpus_per_process": "cpus_per_process: 1",
    "memory_per_process": "memory_per_process: 2GB",
    "resources": 'resources: {"accelerator_type:A100": 0.01}',
    "ray": "ray: {namespace: team-a, runtime_env: {pip: [rapidfuzz]}}",
}


class InputSpec(BaseModel):
    """One input of the job: a file dataset or a tabular dataset."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["file", "tabular"] = Field(description="file: run() gets file paths; tabular: a DataFrame")
    path: str | list[str] = Field(description="A folder (recursive), a file, a glob, a URL, or a list of them")
    format: Literal["csv", "tsv", "parquet", "jsonl"] | None = Field(
        default=None, description="Tabular format; inferred from the extension when omitted"
    )
    separator: str | None = Field(default=None, description="Delimiter for csv/tsv")
    header: bool = Field(default=True, description="Whether delimited files start with a header line")
    encoding: str = "utf-8"
    name: str | None = Field(default=None, description="The input's name (as_named_input)")
    datastore: str | None = Field(default=None, description="Resolve path inside this registered datastore")

    def paths(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)


class RayOptions(BaseModel):
    """Options for the Ray backend (``RayCompute(namespace=..., runtime_env=...)`` in the Azure-style API)."""

    model_config = ConfigDict(extra="forbid")

    namespace: str | None = Field(default=None, description="The Ray namespace the job's actors live in")
    runtime_env: dict[str, Any] = Field(
        default_factory=dict, description="A Ray runtime_env for the workers (working_dir, pip, env_vars, ...)"
    )


class JobSpec(BaseModel):
    """A parallelrun job: what to run, on what, and how."""

    model_config = ConfigDict(extra="forbid", title="parallelrun job spec")

    name: str = Field(min_length=3, max_length=32, pattern=NAME_RE, description="Job name")
    entry_script: str = Field(description="The script with init() and run(mini_batch)")
    source_directory: str | None = Field(
        default=None, description="Folder holding the entry script; put on sys.path of every worker"
    )
    inputs: list[InputSpec] = Field(min_length=1, description="What to process")
    output: str | None = Field(
        default=None, description="Output folder or URL: a local path, az://, abfs:// or s3:// (default: out/<name>)")
    output_layout: Literal["file", "dataset"] = Field(
        default="file", description="file: one file (append_row_file_name) assembled from the parts in input "
        "order; dataset: the parts themselves, part-<batch>.<ext>, with a _manifest.json in input order")
    storage_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Filesystem options per protocol for remote inputs and a remote "
        "output, e.g. {az: {account_name: ..., account_key: ...}, s3: {key: ..., secret: ..., endpoint_url: ...}}; "
        "default: the backend's environment variables")
    mini_batch_size: int | str | None = Field(
        default=None, description="File input: a count (default 10); tabular: a size such as 1MB (default); "
        "or auto: measured on probe mini-batches so that one run() takes about 1-2 s"
    )
    error_threshold: int = Field(default=-1, ge=-1, description="Failed items allowed; -1 ignores all")
    allowed_failed_count: int = Field(default=-1, ge=-1, description="Failed mini-batches allowed; -1 ignores")
    allowed_failed_percent: float = Field(
        default=100, ge=0, le=100, description="Percent of failed mini-batches allowed, checked at the end"
    )
    isolate_failures: bool = Field(
        default=True, description="A mini-batch that fails all its attempts is split, down to single items, so "
        "only the items that fail alone are failed items (see docs/isolation.md); false: the whole mini-batch fails"
    )
    output_action: Literal["append_row", "summary_only"] = "append_row"
    append_row_file_name: str = Field(
        default="parallel_run_step.txt", description="The output file's name; when omitted, parallel_run_step "
        "with the format's extension (.txt, .csv, .jsonl, .parquet)")
    append_row_format: Literal["text", "csv", "jsonl", "parquet"] = Field(
        default="text", description="How DataFrame results are written; text = space separated, no header"
    )
    process_count_per_node: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, le=512, description="Worker processes per node"
    )
    node_count: int = Field(default=1, ge=1, le=1024, description="Nodes to use; on Ray the most used at once: "
                            "the job starts on the nodes there are and adds nodes that join (docs/ray.md)")
    run_invocation_timeout: float = Field(default=60, gt=0, description="Seconds allowed per run() call")
    run_max_try: int = Field(default=3, ge=1, le=100, description="Attempts per mini-batch")
    logging_level: Literal["WARNING", "INFO", "DEBUG"] = "INFO"
    arguments: list[str] = Field(default_factory=list, description="Passed to the entry script's sys.argv")
    environment_variables: dict[str, str] = Field(default_factory=dict)
    compute: str = Field(default="local", description="local, ray, ray://host:port, or auto")
    gpus_per_process: float = Field(default=0, ge=0)
    cpus_per_process: float = Field(default=1, gt=0)
    memory_per_process: int | str | None = Field(
        default=None, description="Ray: memory each worker reserves, in bytes or a size such as 2GB"
    )
    resources: dict[str, float] = Field(
        default_factory=dict, description='Ray: custom resources each worker reserves, e.g. {"accelerator_type:A100": 0.01}'
    )
    ray: RayOptions | None = Field(default=None, description="Ray: namespace and runtime_env")

    @field_validator("memory_per_process")
    @classmethod
    def _memory_size(cls, v: Any) -> Any:
        if v is not None and (not SIZE_RE.match(str(v)) or int(str(v).rstrip("kKmMgGbB") or 0) == 0):
            raise ValueError("not a size; use bytes or a size such as 2GB")
        return v

    @field_validator("storage_options")
    @classmethod
    def _keyed_by_protocol(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        # The schema lets {client_kwargs: {...}} through (its value is a mapping); a run refuses it later
        # (data/storage.job_storage_options). Said here, a spec with it fails when it is loaded.
        loose = unkeyed_options(v)
        if loose:
            raise ValueError(f"{', '.join(loose)}: not a protocol. Options are keyed by the protocol of the input or "
                             "output they are for (az, abfs, s3): write them under it")
        return v

    @field_validator("resources")
    @classmethod
    def _resource_amounts(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, amount in v.items() if amount < 0 or k in ("CPU", "GPU", "memory")]
        if bad:
            raise ValueError(f"{bad}: amounts must be >= 0, and CPU, GPU and memory have their own fields "
                             "(cpus_per_process, gpus_per_process, memory_per_process)")
        return v

    @model_validator(mode="after")
    def _file_name_fits_format(self) -> JobSpec:
        # Parquet output is not called parallel_run_step.txt; an explicit append_row_file_name still wins.
        if "append_row_file_name" not in self.model_fields_set:
            ext = {"text": "txt", "csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}[self.append_row_format]
            self.__dict__["append_row_file_name"] = f"parallel_run_step.{ext}"
        return self

    @field_validator("arguments", mode="before")
    @classmethod
    def _args_to_str(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [str(a) for a in v]
        return v

    @field_validator("environment_variables", mode="before")
    @classmethod
    def _env_to_str(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): str(val) for k, val in v.items()}
        return v

    @field_validator("logging_level", mode="before")
    @classmethod
    def _upper_level(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    # --- derived values -------------------------------------------------------------------------------
    @property
    def input_type(self) -> str:
        return self.inputs[0].type

    @property
    def batch_count(self) -> int:
        """Files per mini-batch (file input)."""
        v = self.mini_batch_size
        return DEFAULT_FILE_BATCH if v is None or is_auto(v) else parse_count(v)

    @property
    def batch_bytes(self) -> int:
        """Bytes per mini-batch (tabular input)."""
        v = self.mini_batch_size
        return parse_size(DEFAULT_TABULAR_BATCH if v is None or is_auto(v) else v)

    def fingerprint(self) -> str:
        """A hash of everything that changes the result; resume refuses a changed spec."""
        d = self.model_dump(exclude={"process_count_per_node", "logging_level", "run_invocation_timeout",
                                     "run_max_try", "compute", "node_count", "error_threshold",
                                     "allowed_failed_count", "allowed_failed_percent",
                                     "isolate_failures",
                                     # where the workers run, not what they compute
                                     "memory_per_process", "resources", "ray"})
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


class _RawView:
    """Attribute access to raw spec values, with the model's defaults for absent fields."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._d = data

    def __getattr__(self, name: str) -> Any:
        if name in self._d:
            return self._d[name]
        f = JobSpec.model_fields[name]
        return None if f.default_factory is not None else f.default

    @property
    def inputs(self) -> list[Any]:
        v = self._d.get("inputs")
        return v if isinstance(v, list) else []

    @property
    def input_type(self) -> str | None:
        for i in self.inputs:
            if isinstance(i, dict) and i.get("type") in ("file", "tabular"):
                return str(i["type"])
        return None


def _cross_checks(data: dict[str, Any]) -> list[str]:
    """Checks across fields, on the raw values, so they are reported together with field errors."""
    spec = _RawView(data)
    problems: list[str] = []
    types = {i.get("type") for i in spec.inputs if isinstance(i, dict)} - {None}
    if len(types) > 1:
        problems.append(
            "inputs: mixes file and tabular inputs; a job takes one input type. "
            "Split it into two jobs (or two ParallelRunSteps)."
        )
    if (problem := mini_batch_size_problem(spec.mini_batch_size, spec.input_type)) is not None:
        problems.append(problem)
    if not isinstance(spec.append_row_file_name, str):
        pass
    elif "/" in spec.append_row_file_name or "\\" in spec.append_row_file_name or not spec.append_row_file_name:
        problems.append(
            f"append_row_file_name: {spec.append_row_file_name!r} must be a plain file name. "
            f"Example: {EXAMPLES['append_row_file_name']}"
        )
    if isinstance(spec.node_count, int) and spec.node_count > 1 and spec.compute == "local":
        problems.append(
            f"node_count: {spec.node_count} needs a cluster; the local executor has one node. "
            "Use the Ray backend (compute: ray, or --compute ray://host:port) or set node_count: 1."
        )
    c = spec.compute
    if isinstance(c, str) and not (c in ("local", "ray", "auto") or c.startswith("ray://") or re.match(r"^[\w.\-]+:\d+$", c)):
        problems.append(f"compute: {c!r} is not a compute target. Example: {EXAMPLES['compute']}")
    return problems


def validation_problems(err: ValidationError, *, skip: int = 0,
                        word: Callable[[ErrorDetails, str], str | None] = lambda e, loc: None,
                        example: Callable[[tuple[int | str, ...]], str] = lambda loc: "") -> list[str]:
    """One line per error of ``err``, as a JobSpecError lists them: ``<dotted path>: <what is wrong>.``
    (the job spec's problems and the Azure ML YAML's alike).

    The path leaves out its first ``skip`` parts (a wrapper model's field) and union tags (``~name``).
    ``word`` may word an error itself (None: the default wording below); ``example`` appends a hint for
    a path (`` Example: ...``).
    """
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"][skip:] if not str(p).startswith("~"))
        text = word(e, loc)
        if text is None:
            # Storage options hold credentials: their values are never quoted back.
            shown = "the value" if "storage_options" in map(str, e["loc"]) else repr(e.get("input"))
            what = "required field is missing." if e["type"] == "missing" else f"{shown} is invalid ({e['msg']})."
            text = f"{loc + ': ' if loc else ''}{what}{example(e['loc'])}"
        problems.append(text)
    return problems


def _unknown_field(e: ErrorDetails, loc: str) -> str | None:
    if e["type"] != "extra_forbidden":
        return None
    known = list(InputSpec.model_fields) if len(e["loc"]) > 1 else list(JobSpec.model_fields)
    close = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else f" Valid fields: {', '.join(known)}."
    return f"{loc}: unknown field.{hint}"


def _example(loc: tuple[int | str, ...]) -> str:
    key = next((str(p) for p in reversed(loc) if str(p) in EXAMPLES), "")
    return f" Example: {EXAMPLES[key]}" if key else ""


def validate_spec(data: Any, source: str = "job spec") -> JobSpec:
    """Validate a mapping into a JobSpec, raising one JobSpecError that lists every problem."""
    if not isinstance(data, dict):
        raise JobSpecError([f"expected a mapping of fields, got {type(data).__name__}"], source)
    problems: list[str] = []
    spec = None
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as e:
        problems = validation_problems(e, word=_unknown_field, example=_example)
    reported = {p.split(":", 1)[0].split(".", 1)[0] for p in problems}
    problems += [p for p in _cross_checks(data) if p.split(":", 1)[0] not in reported]
    if problems or spec is None:
        raise JobSpecError(problems, source)
    return spec


def load_job(path: str | os.PathLike[str], overrides: list[str] | None = None) -> tuple[JobSpec, Path]:
    """Read, override and validate a job file. Returns the spec and the job file's folder.

    Every problem is reported at once, in one JobSpecError: the fields' values, the combinations of
    fields, and the local paths the spec names (source_directory, entry_script, input paths).
    """
    p = Path(path)
    if not p.is_file():
        raise JobSpecError([f"job file {str(p)!r} does not exist. Example: parallelrun run job.yml"])
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise JobSpecError([f"not a text file (UTF-8 YAML expected; byte {e.start} is not UTF-8). "
                            "Is this the job spec?"], str(p)) from None
    except yaml.YAMLError as e:
        raise JobSpecError([f"not valid YAML: {e}"], str(p)) from None
    if overrides:
        data = apply_overrides(data, parse_overrides(overrides)) if isinstance(data, dict) else data
    base = p.resolve().parent
    missing = path_problems(data, base)
    try:
        spec = validate_spec(data, str(p))
    except JobSpecError as e:
        raise JobSpecError(e.problems + missing, str(p)) from None
    if missing:
        raise JobSpecError(missing, str(p))
    return spec, base


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the job spec, for editors' completion."""
    schema = JobSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
