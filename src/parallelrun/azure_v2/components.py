"""``component: ./score.yml`` in a pipeline's job: the component file's keys, merged under the job's.

A component file (``type: parallel`` or ``type: command``, Azure's ``parallelComponent`` and
``commandComponent`` schemas) declares its inputs and outputs (types, defaults) and holds the job's body
(``task``, ``command``, ``mini_batch_size``...). The pipeline's job gives the input and output values and
may override any other key. The merge happens on the YAML data, before validation, so a merged job is
checked and compiled like an inline one. Paths in the component (``code``, ``conda_file``) are relative
to the component file, and are made absolute here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_IDENTITY_KEYS = ("$schema", "name", "version", "display_name", "description", "tags", "is_deterministic")
_DECLARATION_KEYS = ("description", "optional", "min", "max", "enum")
_LITERAL_TYPES = ("string", "integer", "number", "boolean")


class ComponentError(ValueError):
    """A component file that cannot be read; the message names the file and the fix."""


def _absolute(value: Any, folder: Path) -> Any:
    if isinstance(value, str) and "://" not in value and not value.startswith("azureml:"):
        return str((folder / value.removeprefix("file:")).resolve())
    return value


def _rebase(body: dict[str, Any], folder: Path) -> None:
    """Make the component's own paths absolute (the compiler reads them relative to the pipeline)."""
    for holder in (body, body.get("task") if isinstance(body.get("task"), dict) else None):
        if not isinstance(holder, dict):
            continue
        if "code" in holder:
            holder["code"] = _absolute(holder["code"], folder)
        env = holder.get("environment")
        if isinstance(env, dict) and isinstance(env.get("conda_file"), str):
            env["conda_file"] = _absolute(env["conda_file"], folder)


def _inputs(declared: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, decl in declared.items():
        if name in given:
            out[name] = given[name]
        elif isinstance(decl, dict) and decl.get("default") is not None:
            out[name] = decl["default"] if decl.get("type") in _LITERAL_TYPES else \
                {k: v for k, v in decl.items() if k not in (*_DECLARATION_KEYS, "default")}
    for name, value in given.items():
        out.setdefault(name, value)  # unknown names stay: the binding check reports them if used
    return out


def merge(job: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """The job with its ``component:`` file's keys merged in (the job's own keys win)."""
    ref = job.get("component")
    if not isinstance(ref, str):
        raise ComponentError(f"component: {ref!r} should be the path of a component file, e.g. ./score.yml")
    if ref.startswith("azureml:"):
        raise ComponentError(f"component: {ref} is a registered component; here a component is a file: give "
                             "its path (component: ./score.yml), or put its keys in the job")
    path = (base_dir / ref.removeprefix("file:")).resolve()
    try:
        body = yaml.safe_load(path.read_text()) or {}
    except OSError:
        raise ComponentError(f"component: {ref} does not exist (looked for {path})") from None
    except yaml.YAMLError as e:
        raise ComponentError(f"component: {path} is not valid YAML: {e}") from None
    if not isinstance(body, dict):
        raise ComponentError(f"component: {path} should be a mapping of keys")
    if body.get("type") != job.get("type"):
        raise ComponentError(f"component: {path} is a type: {body.get('type')} component; this job is "
                             f"type: {job.get('type')}")
    _rebase(body, path.parent)
    merged = {k: v for k, v in body.items() if k not in (*_IDENTITY_KEYS, "inputs", "outputs")}
    declared_outputs = body.get("outputs") or {}
    merged["inputs"] = _inputs(body.get("inputs") or {}, job.get("inputs") or {})
    merged["outputs"] = {
        name: {k: v for k, v in (decl or {}).items() if k not in _DECLARATION_KEYS}
        for name, decl in declared_outputs.items()} | dict(job.get("outputs") or {})
    for key, value in job.items():
        if key in ("component", "inputs", "outputs"):
            continue
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}  # e.g. retry_settings: {max_retries: 3} over the component's
        else:
            merged[key] = value
    return merged


def expand(data: Any, base_dir: Path) -> tuple[Any, list[str]]:
    """The document with every ``component:`` job merged, and the problems found (``jobs.x.component: ...``)."""
    problems: list[str] = []
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), dict):
        return data, problems
    jobs = dict(data["jobs"])
    for key, job in jobs.items():
        if isinstance(job, dict) and "component" in job:
            try:
                jobs[key] = merge(job, base_dir)
            except ComponentError as e:
                problems.append(f"jobs.{key}.{e}")
    return {**data, "jobs": jobs}, problems
