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
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import JobSpecError

NAME_RE = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DEFAULT_FILE_BATCH = 10
DEFAULT_TABULAR_BATCH = "1MB"
# mini_batch_size for tabular input: a number of bytes with an optional 1024-based unit (Azure's "1MB",
# "512KB", "1024"; v2 YAML's "10kb"). The one parser of mini_batch_size is below; everything else asks it.
_SIZE_RE = re.compile(r"^(\d+)([kKmMgG]?)[bB]?$", re.ASCII)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

# A valid example per field, quoted in error messages so the fix is one copy-paste away.
EXAMPLES: dict[str, str] = {
    "name": "name: digits",
    "entry_script": "entry_script: digit_identification.py",
    "source_directory": "source_directory: scripts",
    "inputs": "inputs: [{type: file, path: data/digits}]",
    "type": "type: file   (or: tabular)",
    "path": "path: data/digits",
    "format": "format: csv   (csv | tsv | parquet | jsonl)",
    "output": "output: out/digits",
    "mini_batch_size": "mini_batch_size: 10 (file input), mini_batch_size: 1MB (tabular input), or auto",
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
        default_factory=dict, description="Filesystem options per protocol for a remote output, "
        "e.g. {az: {account_name: ..., account_key: ...}}; default: the backend's environment variables")
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
        if v is not None and (not _SIZE_RE.match(str(v)) or int(str(v).rstrip("kKmMgGbB") or 0) == 0):
            raise ValueError("not a size; use bytes or a size such as 2GB")
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


# --- mini_batch_size: the one parser --------------------------------------------------------------------

def is_auto(value: object) -> bool:
    """``mini_batch_size: auto``: the driver measures run() on probes and picks the size."""
    return isinstance(value, str) and value.strip().lower() == "auto"


def parse_size(value: str | int) -> int:
    """A mini-batch size such as ``"1MB"``, ``"512KB"``, ``"10kb"``, ``"2G"`` or ``512`` in bytes (1024-based).
    Raises ValueError for anything else, and for zero."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        text = repr(value)
    m = _SIZE_RE.match(text)
    size = int(m.group(1)) * _UNITS[m.group(2).lower()] if m else 0
    if size <= 0:
        raise ValueError(f"invalid mini-batch size {value!r}: use a size such as '1MB' or '512KB'")
    return size


def parse_count(value: str | int) -> int:
    """A file count (``10`` or ``"10"``); raises ValueError unless it is a positive whole number."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise ValueError(f"invalid file count {value!r}: use a positive whole number such as 10")
    count = int(str(value).strip())
    if count < 1:
        raise ValueError(f"invalid file count {value!r}: use a positive whole number such as 10")
    return count


def mini_batch_size_problem(value: object, input_type: str | None) -> str | None:
    """Why ``value`` is not a valid mini_batch_size for ``input_type`` (``file``, ``tabular``, or None when
    the input is not known yet: either kind is accepted), or None when it is valid (None and ``auto`` are)."""
    if value is None or is_auto(value):
        return None
    if not isinstance(value, (int, str)) or isinstance(value, bool):
        return f"mini_batch_size: {value!r} must be a number of files, a size, or auto. {EXAMPLES['mini_batch_size']}"
    parsers = {"file": parse_count, "tabular": parse_size}
    for kind in ([input_type] if input_type in parsers else ["file", "tabular"]):
        try:
            parsers[kind](value)
            return None
        except ValueError:
            continue
    if input_type == "file":
        return (f"mini_batch_size: {value!r} is not a file count; file input takes a positive number of files "
                f"per mini-batch. Example: mini_batch_size: 10")
    if input_type == "tabular":
        return (f"mini_batch_size: {value!r} is not a size; tabular input takes a size matching "
                f"^\\d+([kKmMgG][bB])?$. Example: mini_batch_size: 1MB")
    return (f"mini_batch_size: {value!r} is neither a file count (FileDataset input) nor a size "
            f"(TabularDataset input). Example: {EXAMPLES['mini_batch_size']}")


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


def _format_pydantic(err: ValidationError, data: dict[str, Any]) -> list[str]:
    problems = []
    fields = list(JobSpec.model_fields)
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        last = str(e["loc"][-1]) if e["loc"] else ""
        if e["type"] == "extra_forbidden":
            known = list(InputSpec.model_fields) if len(e["loc"]) > 1 else fields
            close = difflib.get_close_matches(last, known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else f" Valid fields: {', '.join(known)}."
            problems.append(f"{loc}: unknown field.{hint}")
            continue
        key = last if last in EXAMPLES else next((str(p) for p in reversed(e["loc"]) if str(p) in EXAMPLES), "")
        example = f" Example: {EXAMPLES[key]}" if key else ""
        if e["type"] == "missing":
            problems.append(f"{loc}: required field is missing.{example}")
        else:
            problems.append(f"{loc}: {e.get('input')!r} is invalid ({e['msg']}).{example}")
    return problems


def validate_spec(data: Any, source: str = "job spec") -> JobSpec:
    """Validate a mapping into a JobSpec, raising one JobSpecError that lists every problem."""
    if not isinstance(data, dict):
        raise JobSpecError([f"expected a mapping of fields, got {type(data).__name__}"], source)
    problems: list[str] = []
    spec = None
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as e:
        problems = _format_pydantic(e, data)
    reported = {p.split(":", 1)[0].split(".", 1)[0] for p in problems}
    problems += [p for p in _cross_checks(data) if p.split(":", 1)[0] not in reported]
    if problems or spec is None:
        raise JobSpecError(problems, source)
    return spec


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["mini_batch_size=20", "inputs.0.path=x"]`` -> a dict of YAML-parsed values by dotted key."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
            problems.append(f"--set {item!r}: expected field=value, e.g. --set mini_batch_size=20 "
                            "or --set inputs.0.path=data")
            continue
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    if problems:
        raise JobSpecError(problems, "--set")
    return out


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set each dotted key (``inputs.0.path``) in a copy of ``data``; every key that cannot be set (an
    index past the end of a list, a field inside a plain value) is reported at once as a JobSpecError."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    problems: list[str] = []
    for key, value in overrides.items():
        problem = _set_path(data, key.split("."), value)
        if problem:
            problems.append(f"--set {key}=...: {problem}")
    if problems:
        raise JobSpecError(problems, "--set")
    return data


def _set_path(data: dict[str, Any], parts: list[str], value: Any) -> str | None:
    """Set ``data[parts[0]][parts[1]]...`` = value; return what was wrong, or None."""
    target: Any = data
    for depth, p in enumerate(parts):
        where = ".".join(parts[:depth]) or "the job spec"
        last = depth == len(parts) - 1
        if isinstance(target, list):
            if not p.lstrip("-").isdigit():
                return f"{where} is a list: use an index (0..{len(target) - 1}), not {p!r}"
            i = int(p)
            if not 0 <= i < len(target) + (1 if last else 0) or (i == len(target) and not last):
                return (f"{where} has {len(target)} element(s), so index {i} does not exist "
                        f"(use 0..{len(target) - 1}{f', or {len(target)} to add one' if last else ''})")
            if last:
                if i == len(target):
                    target.append(value)
                else:
                    target[i] = value
                return None
            target = target[i]
        elif isinstance(target, dict):
            if last:
                target[p] = value
                return None
            target = target.setdefault(p, {})
        else:
            return f"{where} is a single value ({target!r}), so it has no field {p!r}"
    return None


def path_problems(data: Any, base: Path) -> list[str]:
    """Missing local paths of a (raw) spec: the source_directory, the entry script, each input path.

    Checked on the raw values, so they are reported together with the field errors. URLs, globs and
    paths inside a registered datastore are left to planning.
    """
    if not isinstance(data, dict):
        return []
    problems: list[str] = []
    src = data.get("source_directory")
    source = base
    if isinstance(src, str) and src:
        source = _resolved(base / src)
        if not source.is_dir():
            problems.append(f"source_directory: {src!r} is not a folder (resolved to {source}). "
                            f"Paths are relative to the job file's folder. Example: {EXAMPLES['source_directory']}")
    script = data.get("entry_script")
    if isinstance(script, str) and script and (source.is_dir()):
        p = source / script
        if not p.is_file():
            problems.append(f"entry_script: {script!r} does not exist (resolved to {p}). entry_script is "
                            "relative to source_directory (or to the job file's folder when it is not set).")
    inputs = data.get("inputs")
    for i, inp in enumerate(inputs if isinstance(inputs, list) else []):
        if not isinstance(inp, dict) or inp.get("datastore"):
            continue
        paths = inp.get("path")
        for path in [paths] if isinstance(paths, str) else (paths if isinstance(paths, list) else []):
            if not isinstance(path, str) or not path or "://" in path or any(c in path for c in "*?["):
                continue
            resolved = (base / os.path.expanduser(path))
            if resolved.is_symlink() and not resolved.exists():
                problems.append(f"inputs.{i}.path: {path} is a symbolic link that loops or points to nothing "
                                f"({resolved} -> {_link_target(resolved)}). Fix or remove the link.")
            elif not resolved.exists():
                problems.append(f"inputs.{i}.path: input path {path!r} does not exist (resolved to "
                                f"{_resolved(resolved)}). Paths are relative to the job file's folder.")
    return problems


def _resolved(p: Path) -> Path:
    """``p`` with links resolved, or made absolute only when resolving fails (a loop of links)."""
    try:
        return p.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(p))


def _link_target(p: Path) -> str:
    try:
        return os.readlink(p)
    except OSError:
        return "?"


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
