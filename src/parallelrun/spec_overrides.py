"""``--set field=value`` overrides of a job spec: parsed (values as YAML) and applied to the raw spec
before it is validated, every problem reported at once as one JobSpecError."""

from __future__ import annotations

import json
from typing import Any

import yaml

from .errors import JobSpecError


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
