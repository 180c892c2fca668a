"""The YAML of Azure ML CLI v2 jobs, parsed and validated: ``type: pipeline`` with ``jobs:`` of
``type: parallel`` and ``type: command``, and a standalone ``type: parallel`` or ``type: command`` job.

Only the keys Azure's schema defines are accepted. An unknown key is reported as the job spec reports one,
with its path and the closest known key (``jobs.score.task.entry_scrpt: unknown field. Did you mean
'entry_script'?``), every
problem at once, as one :class:`~parallelrun.errors.JobSpecError` (exit code 2). Keys that mean nothing
on this machine (``resources.instance_type``, ``identity``, ``image`` ...) are accepted here; the
compiler reports them as notices.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    ValidationError,
)
from pydantic_core import ErrorDetails

from ..config import validation_problems
from ..errors import JobSpecError
from ._strict import Strict
from .components import expand

_UNKNOWN = "\x00"  # brackets the key in an unknown-field message, so the report can put it in the path
DATA_TYPES = ("uri_folder", "uri_file", "mltable", "mlflow_model", "custom_model")
LITERAL_TYPES = ("string", "integer", "number", "boolean")


class _Strict(Strict):
    """Unknown keys are refused with the closest known one (Azure's YAML is case sensitive)."""

    @classmethod
    def unknown_field_message(cls, key: str, hint: str) -> str:
        return f"{_UNKNOWN}{key}{_UNKNOWN}unknown field.{hint}"


class DataInput(_Strict):
    """A job input that is data (``uri_folder``, ``uri_file``, ``mltable``, a model folder) or a typed
    literal (``type: string`` with ``default:``)."""

    type: Literal["uri_folder", "uri_file", "mltable", "mlflow_model", "custom_model",
                  "string", "integer", "number", "boolean"] = "uri_folder"
    path: str | None = None
    mode: Literal["ro_mount", "rw_mount", "download", "direct", "eval_mount", "eval_download"] | None = None
    default: Any = None
    optional: bool | None = None
    description: str | None = None


class DataOutput(_Strict):
    """A job output: a folder (``uri_folder``), a file (``uri_file``), or a model folder."""

    type: Literal["uri_folder", "uri_file", "mltable", "mlflow_model", "custom_model"] = "uri_folder"
    path: str | None = None
    mode: Literal["rw_mount", "upload", "direct"] | None = None
    description: str | None = None
    name: str | None = None
    version: str | None = None


def _input_tag(v: Any) -> str:
    return "~data" if isinstance(v, (dict, DataInput)) else "~literal"


InputValue = Annotated[
    Annotated[DataInput, Tag("~data")] | Annotated[str | bool | int | float, Tag("~literal")],
    Discriminator(_input_tag),
]
OutputValue = Annotated[
    Annotated[DataOutput, Tag("~data")] | Annotated[str | None, Tag("~literal")],
    Discriminator(_input_tag),
]


class InlineEnvironment(_Strict):
    """An inline environment: ``conda_file`` (its pip part is installed as our Environments do);
    ``image`` and ``build`` are accepted and ignored (no containers here)."""

    name: str | None = None
    version: str | int | None = None
    description: str | None = None
    image: str | None = None
    conda_file: str | dict[str, Any] | None = None
    build: dict[str, Any] | None = None
    os_type: str | None = None
    tags: dict[str, Any] | None = None
    inference_config: dict[str, Any] | None = None
    schema_: str | None = Field(default=None, alias="$schema")


EnvironmentSpec = str | InlineEnvironment


class RetrySettings(_Strict):
    """Azure documents ``max_retries`` as retries of a failed mini-batch (default 2): the first attempt
    plus that many, which is v1's ``run_max_try`` default of 3 attempts."""

    max_retries: int = Field(default=2, ge=0, le=99)
    timeout: float = Field(default=60, gt=0, le=259200)


class Resources(_Strict):
    instance_count: int = Field(default=1, ge=1)
    instance_type: str | None = None
    shm_size: str | None = None
    properties: dict[str, Any] | None = None
    docker_args: str | None = None


class ParallelTask(_Strict):
    type: Literal["run_function"] = "run_function"
    code: str | None = None
    entry_script: str
    program_arguments: str | None = None
    append_row_to: str | None = None
    environment: EnvironmentSpec | None = None
    environment_variables: dict[str, Any] | None = None


class _JobCommon(_Strict):
    schema_: str | None = Field(default=None, alias="$schema")
    name: str | None = None
    display_name: str | None = None
    description: str | None = None
    tags: dict[str, Any] | None = None
    experiment_name: str | None = None
    compute: str | None = None
    inputs: dict[str, InputValue] = Field(default_factory=dict)
    outputs: dict[str, OutputValue] = Field(default_factory=dict)
    environment_variables: dict[str, Any] | None = None
    is_deterministic: bool = True
    identity: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    services: dict[str, Any] | None = None


class ParallelJob(_JobCommon):
    """``type: parallel``: an entry script's init()/run() over ``input_data`` in mini-batches."""

    type: Literal["parallel"]
    task: ParallelTask
    input_data: str
    mini_batch_size: str | int | None = None
    partition_keys: list[str] | None = None
    resources: Resources = Field(default_factory=Resources)
    max_concurrency_per_instance: int | None = Field(default=None, ge=1)
    error_threshold: int = Field(default=-1, ge=-1)
    mini_batch_error_threshold: int = Field(default=-1, ge=-1)
    retry_settings: RetrySettings = Field(default_factory=RetrySettings)
    logging_level: Literal["DEBUG", "INFO", "WARNING"] = "INFO"
    settings: dict[str, Any] | None = None  # a standalone job's settings (default_datastore, ...)


class CommandJob(_JobCommon):
    """``type: command``: one process running ``command`` (here: ``python script.py ...``)."""

    type: Literal["command"]
    command: str
    code: str | None = None
    environment: EnvironmentSpec | None = None
    resources: Resources = Field(default_factory=Resources)
    distribution: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None
    queue_settings: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None


def _job_tag(v: Any) -> str | None:
    t = v.get("type") if isinstance(v, dict) else getattr(v, "type", None)
    return f"~{t}" if t in ("parallel", "command") else None


ChildJob = Annotated[
    Annotated[ParallelJob, Tag("~parallel")] | Annotated[CommandJob, Tag("~command")],
    Discriminator(_job_tag, custom_error_type="job_type",
                  custom_error_message="type must be 'parallel' or 'command' (the job types run here)"),
]


class PipelineSettings(_Strict):
    default_compute: str | None = None
    default_datastore: str | None = None
    default_environment: str | None = None
    continue_on_step_failure: bool = False
    force_rerun: bool = False
    on_init: str | None = None
    on_finalize: str | None = None


class PipelineJob(_JobCommon):
    """``type: pipeline``: child jobs connected by their inputs and outputs."""

    type: Literal["pipeline"]
    settings: PipelineSettings = Field(default_factory=PipelineSettings)
    jobs: dict[str, ChildJob] = Field(min_length=1)


def _top_tag(v: Any) -> str | None:
    t = v.get("type") if isinstance(v, dict) else None
    return f"~{t}" if t in ("pipeline", "parallel", "command") else None


class _Document(BaseModel):
    job: Annotated[
        Annotated[PipelineJob, Tag("~pipeline")] | Annotated[ParallelJob, Tag("~parallel")] | Annotated[CommandJob, Tag("~command")],
        Discriminator(_top_tag, custom_error_type="job_type",
                      custom_error_message="type must be 'pipeline', 'parallel' or 'command'"),
    ]


AnyJob = PipelineJob | ParallelJob | CommandJob


def is_azure_v2(data: Any) -> bool:
    """Whether a parsed YAML document is an Azure ML v2 job (rather than parallelrun's own job spec)."""
    if not isinstance(data, dict):
        return False
    if "azureml" in str(data.get("$schema", "")).lower():
        return True
    return (data.get("type") == "pipeline" and "jobs" in data) or (data.get("type") == "parallel" and "task" in data)


def is_azure_v2_file(path: str | Path) -> bool:
    """Whether the file at ``path`` holds an Azure ML v2 job; False when it cannot be read as YAML."""
    try:
        return is_azure_v2(yaml.safe_load(Path(path).read_text()))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False


def _word(e: ErrorDetails, loc: str) -> str | None:
    """What differs from the job spec's wording: unknown keys, "key" for "field", validators' messages."""
    msg = str(e["msg"]).removeprefix("Value error, ")
    if msg.startswith(_UNKNOWN):  # as the job spec says it: "jobs.score.task.entry_scrpt: unknown field."
        _, key, rest = msg.split(_UNKNOWN, 2)
        return f"{loc + '.' if loc else ''}{key}: {rest}"
    if e["type"] == "missing":
        return f"{loc}: required key is missing."
    if e["type"] in ("value_error", "job_type"):
        return f"{loc + ': ' if loc else ''}{msg}"
    return None


def parse(data: Any, source: str = "Azure ML job") -> AnyJob:
    """Validate a parsed YAML document into a job model; one JobSpecError lists every problem."""
    if not isinstance(data, dict):
        raise JobSpecError([f"expected a mapping of keys, got {type(data).__name__}"], source)
    try:
        return _Document.model_validate({"job": data}).job
    except ValidationError as e:
        raise JobSpecError(validation_problems(e, skip=1, word=_word), source) from None  # [0] is "job"


def load(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> AnyJob:
    """Read and validate an Azure ML v2 job file (``--set`` overrides applied first, then ``component:``
    files merged into their jobs)."""
    from ..config import apply_overrides

    p = Path(path)
    if not p.is_file():
        raise JobSpecError([f"job file {str(p)!r} does not exist. Example: parallelrun run pipeline.yml"])
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise JobSpecError([f"not valid YAML: {e}"], str(p)) from None
    if overrides and isinstance(data, dict):
        data = apply_overrides(data, overrides)
    data, problems = expand(data, p.resolve().parent)
    if problems:
        raise JobSpecError(problems, str(p))
    return parse(data, str(p))
