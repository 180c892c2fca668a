"""The local paths a job spec names (source_directory, entry_script, input paths), checked before the job
runs so a missing one is reported with the field errors, resolved the way the user wrote it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SOURCE_DIRECTORY_EXAMPLE = "source_directory: scripts"


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
                            f"Paths are relative to the job file's folder. Example: {SOURCE_DIRECTORY_EXAMPLE}")
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
