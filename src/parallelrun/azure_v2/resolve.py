"""Resolving what an Azure ML v2 job names into parallelrun's workspace objects.

Paths (``azureml://datastores/<name>/paths/...`` on the workspace's registered datastores, URLs, local
paths relative to the YAML file), data inputs (datasets), outputs (PipelineData, or
OutputFileDatasetConfig at a given datastore path), bindings in inputs and outputs, environments and
compute targets. :mod:`.compile` uses a :class:`Resolver` per job file; problems are raised as
:class:`~.bindings.BindingError` for the compiler to collect, and notices are collected here.
"""

from __future__ import annotations

import posixpath
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import bindings
from .bindings import BindingError, Ref
from .mltable import MLTableError, load_mltable
from .yaml_job import (
    LITERAL_TYPES,
    DataInput,
    DataOutput,
    InlineEnvironment,
)

_DATASTORE_URI = re.compile(r"^azureml://(?:.*/)?datastores/([^/]+)/paths/(.*)$")
_ASSET = re.compile(r"^azureml:([^:@/]+)(?:[:@](.+))?$")
_DEFAULT_FILE = "parallel_run_step.txt"


@dataclass(frozen=True)
class Literal:
    """A literal input value, as the string a script's argv would receive."""

    value: str


class Resolver:
    """What one job file's names mean in the workspace ``ws``. ``base_dir`` is the YAML file's folder;
    ``environment="current"`` skips environment builds; ``compute`` overrides every job's compute.
    ``produced`` (job -> output -> PipelineData) is filled by the compiler as it goes, in data order."""

    def __init__(self, ws: Any, base_dir: Path, environment: str | None, compute: str | None) -> None:
        from ..workspace import Datastore

        self.ws = ws
        self.base = base_dir
        self.env_current = environment == "current"
        self.compute_override = compute
        self.notices: list[str] = []
        self.default_store = ws.get_default_datastore()
        self._Datastore = Datastore
        self.produced: dict[str, dict[str, Any]] = {}  # job key -> output name -> PipelineData
        self.data_names: set[str] = set()
        self._told: set[str] = set()

    def notice(self, text: str) -> None:
        if text not in self._told:
            self._told.add(text)
            self.notices.append(text)

    # --- paths, datasets ----------------------------------------------------------------------------
    def path_arg(self, path: str) -> Any:
        """A YAML input path as a dataset path: a DataPath on a registered datastore, a URL, or a local
        path (relative to the YAML's folder); None for a registered data asset (``azureml:name:1``)."""
        path = path.replace("${{default_datastore}}", self.default_store.name)
        if "${{" in path:
            raise BindingError(f"{path!r}: an input path can use ${{{{default_datastore}}}} only")
        m = _DATASTORE_URI.match(path)
        if m:
            store = self._Datastore.get(self.ws, m.group(1))  # UsageError lists the registered ones
            return store.path(m.group(2).strip("/"))
        if path.startswith("azureml:") and not path.startswith("azureml://"):
            return None  # a registered data asset: the caller looks it up
        if "://" in path:
            return path
        p = (self.base / path).resolve()
        if not p.exists():
            raise BindingError(f"{path} does not exist (looked for {p}; relative paths are relative to the YAML "
                               "file's folder)")
        return p

    def uri_path(self, uri: str) -> Any:
        arg = self.path_arg(uri)
        if arg is None:
            raise MLTableError(f"{uri}: an MLTable path can be a relative path or azureml://datastores/... URI")
        return str(arg) if isinstance(arg, Path) else arg

    def data(self, spec: DataInput, where: str) -> Any:
        from ..workspace import Dataset

        if spec.path is None:
            raise BindingError("path is required for a data input (a folder, a file or azureml://datastores/...)")
        arg = self.path_arg(spec.path)
        if arg is None:
            m = _ASSET.match(spec.path)
            if not m:
                raise BindingError(f"{spec.path!r} is not azureml:<name>:<version> or azureml:<name>@latest")
            version = m.group(2) if m.group(2) not in (None, "latest") else "latest"
            return Dataset.get_by_name(self.ws, m.group(1), version)
        if spec.type == "mltable":
            return load_mltable(arg, self.uri_path, self.notices)
        if spec.type == "uri_file" and isinstance(arg, Path) and not arg.is_file():
            raise BindingError(f"{spec.path} is not a file; a uri_file input is one file (use uri_folder)")
        if spec.type == "uri_folder" and isinstance(arg, Path) and not arg.is_dir():
            raise BindingError(f"{spec.path} is not a folder; use type: uri_file for one file")
        return Dataset.File.from_files(str(arg) if isinstance(arg, Path) else arg)

    def input_value(self, value: Any, where: str, parent: dict[str, Any] | None) -> Any:
        if isinstance(value, DataInput):
            if value.type in LITERAL_TYPES:
                if value.default is None:
                    raise BindingError(f"a {value.type} input needs a value (default:)")
                return Literal(str(value.default))
            ref = bindings.whole(value.path)
            if ref is None:
                return self.data(value, where)
            if value.type == "mltable" and ref.kind == "parent.jobs":
                self.notice(f"{where}: an mltable written by job {ref.parts[2]!r} is read as the files of its "
                            "folder (its MLTable file is known only when that job has run)")
            return self.bound(ref, where, parent)
        ref = bindings.whole(value)
        if ref is not None:
            return self.bound(ref, where, parent)
        if isinstance(value, str) and "${{" in value:  # text around literal references: "run-${{parent.inputs.n}}"
            parts = [p if isinstance(p, str) else self.bound(p, where, parent) for p in bindings.split(value)]
            if not all(isinstance(p, (str, Literal)) for p in parts):
                raise BindingError(f"{value!r}: data is bound as a whole value, e.g. data: ${{{{parent.inputs.data}}}}")
            return Literal("".join(p if isinstance(p, str) else p.value for p in parts))
        return Literal(str(value))

    def bound(self, ref: Ref, where: str, parent: dict[str, Any] | None) -> Any:
        if ref.kind == "default_datastore":
            return Literal(self.default_store.name)
        if ref.kind == "parent.inputs" and parent is not None:
            bindings.check_name(ref, parent, "an input of the pipeline")
            return parent[ref.key]
        if ref.kind == "parent.jobs" and parent is not None:
            job = ref.parts[2]
            bindings.check_name(Ref(("parent", "jobs", job)), self.produced, "a job of the pipeline")
            bindings.check_name(ref, self.produced[job], f"an output of job {job!r}")
            return self.produced[job][ref.key]
        raise BindingError(f"{ref.text} cannot be used here; a job's inputs take literals, data, "
                           "${{parent.inputs.<name>}} or ${{parent.jobs.<job>.outputs.<name>}}")

    # --- outputs ------------------------------------------------------------------------------------
    def output(self, job: str, name: str, value: Any, parent_outputs: dict[str, Any] | None,
               where: str) -> tuple[Any, str | None]:
        """(PipelineData, the file name for a uri_file output or None)."""
        from ..workspace.steps import OutputFileDatasetConfig, PipelineData

        spec = value if isinstance(value, DataOutput) else DataOutput()
        ref = bindings.whole(value)
        if ref is not None:
            if ref.kind != "parent.outputs" or parent_outputs is None:
                raise BindingError(f"{ref.text}: a job output can be bound to ${{{{parent.outputs.<name>}}}} only")
            bindings.check_name(ref, parent_outputs, "an output of the pipeline")
            bound = parent_outputs[ref.key]
            spec = bound if isinstance(bound, DataOutput) else DataOutput()
        elif isinstance(value, str):
            raise BindingError(f"{value!r} is not an output; give {{type: uri_folder}} or a "
                               "${{parent.outputs.<name>}} binding")
        data_name = name if name not in self.data_names else f"{job}_{name}"
        data_name = re.sub(r"\W", "_", data_name)
        self.data_names.add(data_name)
        if spec.path is None:
            file_name = _DEFAULT_FILE if spec.type == "uri_file" else None
            return PipelineData(data_name, datastore=self.default_store), file_name
        path = spec.path.replace("${{name}}", "{run-id}").replace("{output_name}", "{output-name}")
        m = _DATASTORE_URI.match(path.replace("${{default_datastore}}", self.default_store.name))
        if not m:
            raise BindingError(f"path {spec.path!r}: an output path is azureml://datastores/<name>/paths/<path> "
                               "(the datastore registered in the workspace)")
        store = self._Datastore.get(self.ws, m.group(1))
        rel = m.group(2).strip("/")
        file_name = None
        if spec.type == "uri_file":
            rel, file_name = posixpath.dirname(rel), posixpath.basename(rel)
        return OutputFileDatasetConfig(data_name, destination=(store, rel)), file_name

    # --- environment and compute --------------------------------------------------------------------
    def environment(self, spec: Any, where: str, job: str) -> Any:
        from ..workspace import Environment

        if self.env_current or spec is None:
            return None
        if isinstance(spec, str):
            m = _ASSET.match(spec)
            name = m.group(1) if m else spec
            if name in self.ws.environments:
                version = m.group(2) if m and m.group(2) not in (None, "latest") else None
                return Environment.get(self.ws, name, version)
            self.notice(f"{where}.environment: {spec} is not registered in this workspace, so the job runs in the "
                        "current Python environment (register it with Environment(...).register(ws), or give "
                        "an inline environment with conda_file)")
            return None
        assert isinstance(spec, InlineEnvironment)
        if spec.image or spec.build:
            self.notice(f"{where}.environment: image/build ignored; there are no containers here")
        if spec.conda_file is None:
            return None
        if isinstance(spec.conda_file, dict):
            with tempfile.TemporaryDirectory() as tmp:
                f = Path(tmp) / "conda.yml"
                f.write_text(yaml.safe_dump(spec.conda_file))
                return Environment.from_conda_specification(f"{job}-env", f)
        return Environment.from_conda_specification(f"{job}-env", self.base / spec.conda_file)

    def compute(self, name: str | None, where: str) -> Any:
        from ..workspace import LocalCompute, RayCompute

        if self.compute_override:
            c = self.compute_override
            return LocalCompute() if c == "local" else RayCompute(None if c == "ray" else c)
        if not name or name == "local":
            return None
        short = name.removeprefix("azureml:")
        targets = self.ws.compute_targets
        if short in targets:
            return targets[short]
        self.notice(f"compute: {name} is not a compute target of this workspace, so it runs on this machine "
                    f"(to run it on Ray: ComputeTarget.create(ws, {short!r}, RayCompute(address=...)))")
        return None
