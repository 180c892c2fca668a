"""The compiled pipeline step: what ``Pipeline._compile`` hands the background driver, typed.

A ParallelRunStep or PythonScriptStep is validated once, when it is constructed; compiling resolves its
references against the workspace (datasets to input entries and fingerprints, models to paths,
environments to an interpreter, PipelineData to output locations) into a ``CompiledStep``. It travels in
``pipeline.json`` (``to_json``/``from_json``) and the driver reads its fields by name.

The nested parts stay JSON objects (they are the engine's input entries and the reuse index's data):
``outputs``: ``{name, step, datastore, path_on_datastore, local, remote, direct, url}`` (``direct``: the
workers write the rows at ``url`` themselves); ``inputs``/``side_inputs``:
``{kind: dataset|pipeline_data, name, type, entries?, fingerprint?, ...}``; ``arguments``:
``{value}|{data}|{input}``; ``models``: ``{name, version, path}``; ``environment``:
``{variables, fingerprint}``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

STEP_TYPES = ("ParallelRunStep", "PythonScriptStep")


@dataclass
class CompiledStep:
    type: str  # one of STEP_TYPES
    name: str
    allow_reuse: bool
    source_directory: str
    outputs: list[dict[str, Any]] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    arguments: list[dict[str, Any]] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    side_inputs: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=lambda: {"variables": {}, "fingerprint": None})
    python: str | None = None  # the workers' interpreter; None: the driver's
    # ParallelRunStep
    entry_script: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the engine's job-spec fields, validated at construction
    # PythonScriptStep
    script_name: str | None = None

    def __post_init__(self) -> None:
        if self.type not in STEP_TYPES:
            raise ValueError(f"compiled step {self.name!r}: unknown type {self.type!r}")
        if self.type == "ParallelRunStep" and not self.entry_script:
            raise ValueError(f"compiled step {self.name!r}: a ParallelRunStep needs entry_script")
        if self.type == "PythonScriptStep" and not self.script_name:
            raise ValueError(f"compiled step {self.name!r}: a PythonScriptStep needs script_name")

    @property
    def is_parallel(self) -> bool:
        return self.type == "ParallelRunStep"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CompiledStep:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
