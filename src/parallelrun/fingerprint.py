"""The code fingerprint of a run: what the workers execute, so resume never mixes two versions of it.

A run's output must come from one version of the code. The job spec and the inputs have their own
fingerprints (``config.JobSpec.fingerprint``, ``data.plan``); this module covers the rest, as named
components so a mismatch can say *what* changed:

- ``entry_script``: the content hash of the entry script;
- ``source_directory``: a content hash per file of the source directory (the job file's folder when the
  spec sets none), without the entry script, Python caches and tool noise (``__pycache__``, ``*.pyc``,
  ``.git``, ``.venv``, editor and checker caches), the workspace, the output folder and the inputs;
  files over :data:`LARGE_FILE` bytes, and all files once :data:`MAX_BYTES` were read or past
  :data:`MAX_FILES` files, count by size and modification time instead of content;
- ``arguments``: the entry script's ``arguments``;
- ``environment``: the workers' interpreter (an Environment's virtual environment, whose path holds the
  hash of its packages, or this interpreter and its version);
- ``models``: the registered models the run lists, by ``name:version`` and path.

``compute`` makes one (a plain JSON-able dict, stored in the run's journal at start); ``changes``
compares two and returns one line per difference, empty when they match.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import JobSpec
from .errors import ResumeError

if TYPE_CHECKING:
    from .journal import Journal
    from .runs import RunRecord

LARGE_FILE = 64 * 1024 * 1024  # bytes: bigger files (data, weights) count by size and mtime, not content
MAX_FILES = 10_000  # a source directory this big is almost surely not code; the rest counts by stat
MAX_WALK = 200_000  # files past MAX_FILES looked at, at most: a bounded walk even of a data folder
MAX_BYTES = 256 * 1024 * 1024  # content hashed per run at most (~0.5 s); past it, files count by stat
_NOISE_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn", ".venv", "venv", ".tox", ".nox", ".mypy_cache",
                         ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints", ".idea", ".vscode", "node_modules",
                         ".parallelrun", ".DS_Store"})
_NOISE_SUFFIXES = (".pyc", ".pyo", ".swp", ".swo", "~")
_NOISE_FILES = frozenset({".DS_Store", "Thumbs.db"})
_SHOWN = 5  # file names listed per kind of change


def compute(spec: JobSpec, job_dir: Path, *, python: str | None, models: dict[str, str],
            exclude: Iterable[str | os.PathLike[str]] = ()) -> dict[str, Any]:
    """The fingerprint of the code a run of ``spec`` (from ``job_dir``) executes; see the module docstring.

    ``exclude`` lists folders never to hash (the workspace, the output folder); the spec's local input
    paths are excluded too.
    """
    source = _real(job_dir / spec.source_directory) if spec.source_directory else _real(job_dir)
    script = _real(source / spec.entry_script)
    skip = {_real(Path(p)) for p in exclude}
    skip.update(_real(job_dir / p) for p in _local_inputs(spec))
    skip.add(script)
    return {
        "entry_script": {"name": spec.entry_script, "hash": _file_hash(script)[0]},
        "source_directory": {"path": str(source), "files": _tree_hashes(source, skip)},
        "arguments": list(spec.arguments),
        "environment": _environment(python),
        "models": dict(sorted(models.items())),
    }


def for_record(spec: JobSpec, job_dir: Path, rec: RunRecord) -> dict[str, Any]:
    """The fingerprint of a run's code, from its record (interpreter, models, workspace and output folders)."""
    return compute(spec, job_dir, python=rec.python, models=rec.models, exclude=(rec.path.parent.parent,
                                                                                  rec.output_dir))


def check_resume(journal: Journal, spec: JobSpec, job_dir: Path, rec: RunRecord, allow_changed_code: bool) -> None:
    """Refuse to resume ``rec`` when its code changed since it started (unless ``allow_changed_code``).

    Raises :class:`ResumeError` naming every change. A run that started before fingerprints existed has
    none stored: it resumes as before, and from now on carries one. An allowed change becomes the new
    reference, and is listed in the journal's ``code_changes_allowed``.
    """
    meta = journal.meta()
    stored, current = meta.get("code_fingerprint"), for_record(spec, job_dir, rec)
    what = changes(stored, current) if stored else []
    if what and not allow_changed_code:
        lines = "\n".join(f"  - {w}" for w in what)
        raise ResumeError(
            f"the code of run {rec.id} changed since it started, so its output would mix rows from two versions "
            f"of it:\n{lines}\nRestore the code and resume, start a new run (parallelrun run ...), or resume "
            "anyway with --allow-changed-code (resume_run(..., allow_changed_code=True)) if the change does not "
            "alter the results.")
    if what or not stored:
        allowed = list(meta.get("code_changes_allowed") or []) + ([what] if what else [])
        journal.set_meta(code_fingerprint=current, code_changes_allowed=allowed)


def _environment(python: str | None) -> dict[str, Any]:
    if not python:
        return {"python": sys.executable, "version": platform.python_version()}
    from .workspace._venv import READY_FILE

    # An Environment's venv: its path holds the hash of its packages; the ready marker's time tells a
    # rebuilt venv (deleted and built again) from the one the run started with.
    ready = Path(python).parent.parent / READY_FILE
    try:
        built: int | None = ready.stat().st_mtime_ns
    except OSError:
        built = None
    return {"python": python, "built": built}


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, one line per component (empty: the same code)."""
    out: list[str] = []
    o_script, n_script = old.get("entry_script") or {}, new.get("entry_script") or {}
    if o_script.get("name") != n_script.get("name"):
        out.append(f"entry script is now {n_script.get('name')} (was {o_script.get('name')})")
    elif o_script.get("hash") != n_script.get("hash"):
        out.append(f"entry script {n_script.get('name')} changed")
    o_files = (old.get("source_directory") or {}).get("files") or {}
    n_files = (new.get("source_directory") or {}).get("files") or {}
    if o_files != n_files:
        parts = []
        for label, names in (
            ("changed", [f for f in n_files if f in o_files and o_files[f] != n_files[f]]),
            ("added", [f for f in n_files if f not in o_files]),
            ("removed", [f for f in o_files if f not in n_files]),
        ):
            if names:
                shown = ", ".join(sorted(names)[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")
                parts.append(f"{len(names)} file{'s' if len(names) > 1 else ''} {label}: {shown}")
        out.append("source_directory: " + "; ".join(parts))
    if old.get("arguments") != new.get("arguments"):
        out.append(f"arguments changed: {old.get('arguments')} -> {new.get('arguments')}")
    if old.get("environment") != new.get("environment"):
        o_env, n_env = old.get("environment") or {}, new.get("environment") or {}
        out.append("environment changed: " + ", ".join(
            f"{k} {o_env.get(k)} -> {n_env.get(k)}" for k in sorted({*o_env, *n_env}) if o_env.get(k) != n_env.get(k)))
    if old.get("models") != new.get("models"):
        o_m, n_m = old.get("models") or {}, new.get("models") or {}
        out.append("models changed: " + ", ".join(
            f"{k} {o_m.get(k, '(none)')} -> {n_m.get(k, '(none)')}" for k in sorted({*o_m, *n_m})
            if o_m.get(k) != n_m.get(k)))
    return out


def _local_inputs(spec: JobSpec) -> list[str]:
    """The local folders (and files) the inputs name: data, not code, and fingerprinted on their own."""
    paths = []
    for inp in spec.inputs:
        if inp.datastore:
            continue
        for path in inp.paths():
            if "://" in path:
                continue
            cut = min((i for i, c in enumerate(path) if c in "*?["), default=len(path))
            # A glob stands for its folder part ("data/*.csv" -> "data"); one in the top folder for nothing.
            paths.append(os.path.dirname(path[:cut]) if cut < len(path) else path)
    return [os.path.expanduser(p) for p in paths if p not in ("", ".")]


def _real(path: Path) -> Path:
    """``path`` with symlinks resolved as far as they go: never raises (Path.resolve does on a loop)."""
    return Path(os.path.realpath(path))


def _file_hash(path: Path, by_stat: bool = False) -> tuple[str, int]:
    """(sha256 of the content, bytes read); a file over LARGE_FILE (or ``by_stat``) by size and mtime; an
    unreadable one by its errno."""
    try:
        st = os.stat(path)
        if by_stat or st.st_size > LARGE_FILE:
            return f"stat:{st.st_size}:{st.st_mtime_ns}", 0
        h = hashlib.sha256()
        n = 0
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                n += len(chunk)
        return h.hexdigest()[:32], n
    except OSError as e:
        return f"unreadable:{e.errno}", 0


def _tree_hashes(root: Path, skip: set[Path]) -> dict[str, str]:
    """{relative path: hash} of the files under ``root``, in sorted order; no symlinked folder followed.

    Past :data:`MAX_FILES` files the rest count together, by name, size and mtime, as one entry; past
    another :data:`MAX_WALK`, not at all.
    """
    out: dict[str, str] = {}
    if not root.is_dir():
        return out
    rest = hashlib.sha256()
    n_rest = hashed = 0
    for top, dirs, files in os.walk(root, followlinks=False):
        here = Path(top)
        dirs[:] = sorted(d for d in dirs if d not in _NOISE_DIRS and _real(here / d) not in skip)
        for name in sorted(files):
            if name in _NOISE_FILES or name.endswith(_NOISE_SUFFIXES):
                continue
            path = here / name
            # ``root`` is real, and no symlinked folder is entered: only a symlinked file needs resolving.
            if path in skip or (os.path.islink(path) and _real(path) in skip):
                continue
            # JSON (and SQLite) hold only valid UTF-8: show an undecodable name's bytes as escapes.
            rel = os.fsencode(path.relative_to(root)).decode("utf-8", "backslashreplace")
            if len(out) < MAX_FILES:
                out[rel], n = _file_hash(path, by_stat=hashed > MAX_BYTES)
                hashed += n
                continue
            if n_rest >= MAX_WALK:
                break
            try:
                st = os.stat(path)
                rest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError as e:
                rest.update(f"{rel}\0unreadable:{e.errno}\n".encode())
            n_rest += 1
        if n_rest >= MAX_WALK:
            break
    if n_rest:
        more = f"{n_rest} more files" if n_rest < MAX_WALK else f"the next {n_rest} files (the rest: not counted)"
        out[f"({more}, by size and time)"] = rest.hexdigest()[:32]
    return out
