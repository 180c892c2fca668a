"""How pipeline steps see the catalog's objects (datasets, named inputs, models, environments, compute
targets, datastores): the few questions the pipeline asks, answered in one place.

Steps accept the catalog's objects duck-typed (a dataset is anything with ``to_input_specs`` and
``fingerprint``; a named input has ``.dataset`` and ``.name``) so they stay importable on their own.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..errors import UsageError
from .compute import ComputeTarget
from .datastore import Datastore
from .model import Model


def dataset_of(obj: Any) -> Any:
    """The dataset behind a dataset or a named input (``ds.as_named_input('x')``), else None."""
    inner = getattr(obj, "dataset", None)
    if inner is not None and hasattr(inner, "to_input_specs"):
        return inner
    if hasattr(obj, "to_input_specs") and hasattr(obj, "fingerprint"):
        return obj
    return None


def is_dataset_like(obj: Any) -> bool:
    return dataset_of(obj) is not None


def dataset_type(ds: Any) -> str:
    """'file' or 'tabular'."""
    names = {c.__name__ for c in type(ds).__mro__}
    return "tabular" if "TabularDataset" in names else "file"


def input_name(obj: Any, index: int) -> str:
    """The name a worker sees an input by: the named input's name, the PipelineData's, the dataset's."""
    name = getattr(obj, "name", None)
    if isinstance(name, str) and name:
        return name
    ds = dataset_of(obj)
    name = getattr(ds, "name", None)
    return name if isinstance(name, str) and name else f"input_{index}"


def dataset_specs(obj: Any, ws: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The engine's input entries for a dataset and the storage options (credentials) to read them."""
    entries, options = dataset_of(obj).to_input_specs(ws)
    return [dict(e) for e in entries], dict(options or {})


def dataset_fingerprint(obj: Any, ws: Any) -> str:
    return str(dataset_of(obj).fingerprint(ws))


def dataset_identity(obj: Any) -> dict[str, Any]:
    ds = dataset_of(obj)
    return {"name": getattr(ds, "name", None), "version": getattr(ds, "version", None)}


def compute_string(target: Any, ws: Any) -> str:
    """The engine's ``compute`` value for a compute target (object or registered name)."""
    if target is None:
        return "local"
    if isinstance(target, str):
        if target in ("local", "ray", "auto") or target.startswith("ray://"):
            return target
        if ws is None:
            return "local"  # resolved against the workspace at submit
        target = ComputeTarget(ws, target)  # raises naming the registered targets and how to create one
    config = getattr(target, "config", target)  # a registered ComputeTarget holds its configuration
    fn = getattr(config, "engine_compute", None)
    if callable(fn):
        return str(fn())
    raise UsageError(f"compute_target {target!r} is not a compute target; use LocalCompute(), "
                     "RayCompute(address=...), or the name of one registered with ComputeTarget.create")


def compute_fields(target: Any, ws: Any) -> dict[str, Any]:
    """The job spec fields for a compute target: ``compute`` and, for a RayCompute with options, ``ray``."""
    fields: dict[str, Any] = {"compute": compute_string(target, ws)}
    if isinstance(target, str) and ws is not None and fields["compute"] != target:
        target = ComputeTarget(ws, target)
    fn = getattr(getattr(target, "config", target), "engine_fields", None)
    if callable(fn):
        fields.update(fn())
    return fields


def environment_python(env: Any, ws: Any) -> str | None:
    """The workers' interpreter for an Environment (building its virtual environment when needed)."""
    if env is None:
        return None
    fn = getattr(env, "python_executable", None)
    return fn(ws) if callable(fn) else None


def environment_variables(env: Any) -> dict[str, str]:
    if env is None:
        return {}
    return {str(k): str(v) for k, v in (getattr(env, "environment_variables", None) or {}).items()}


def environment_fingerprint(env: Any, python: str | None) -> str:
    """What identifies an environment for reuse: its interpreter (a venv's path holds the hash of its
    packages), its variables, and its own fingerprint when it has one."""
    if env is None:
        return "current-interpreter"
    own = getattr(env, "spec_hash", None) or getattr(env, "fingerprint", None)
    own_value = own() if callable(own) else own
    data = {"python": python, "variables": environment_variables(env),
            "own": own_value if isinstance(own_value, str) else None,
            "pip": _pip_packages(env)}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _pip_packages(env: Any) -> list[str]:
    deps = getattr(getattr(env, "python", None), "conda_dependencies", None)
    pkgs = getattr(deps, "pip_packages", None) or getattr(deps, "_pip_packages", None) or []
    try:
        return sorted(str(p) for p in pkgs)
    except TypeError:
        return []


def model_entry(model: Any, ws: Any) -> dict[str, Any]:
    """{name, version, path} of a Model object, or of a registered model named 'name' / 'name:version'."""
    if isinstance(model, str):
        name, _, version = model.partition(":")
        model = Model(ws, name, version=int(version) if version else None)
    return {"name": model.name, "version": model.version, "path": str(model.path)}


def datastore_for(data: Any, ws: Any) -> Any:
    """The datastore a PipelineData lives on (its own, or the workspace's default)."""
    ds = getattr(data, "datastore", None)
    if ds is None:
        return ws.get_default_datastore()
    if isinstance(ds, str):
        return Datastore.get(ws, ds)
    return ds


def local_root(datastore: Any) -> str | None:
    """A local datastore's folder; None for remote storage."""
    if getattr(datastore, "is_local", True):
        return str(datastore.url(""))
    return None
