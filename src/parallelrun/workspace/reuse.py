"""Step reuse (``allow_reuse=True``): a step whose inputs to its result are all unchanged takes the output
of its earlier run instead of running again.

The key of a step hashes what decides its result:

    step type and name, output names
    the source folder's content (each file's relative path and bytes; hidden and ``__pycache__`` folders,
        the workspace, and names matched by ``.amlignore`` / ``.gitignore`` are left out)
    the config (every ParallelRunConfig field but the compute target)
    each input: a dataset's fingerprint (its version, paths, sizes and modification times or etags), or
        an intermediate folder's content (the producer's output)
    models (name, version, path), the environment (interpreter, variables, packages), the arguments

The index is a table in ``<workspace>/reuse.sqlite``: key -> the step run that produced the output. A hit
is used only if that run is still Completed and its output folders still exist.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

_SKIP_DIRS = {"__pycache__", ".git", ".ipynb_checkpoints", ".mypy_cache", ".pytest_cache", ".ruff_cache",
              ".venv", "node_modules"}
_HASH_LIMIT = 256 * 1024 * 1024  # files larger than this are identified by size and mtime, not bytes
_MAX_FILES = 200_000


def _file_digest(path: str, size: int, mtime_ns: int, h: Any) -> None:
    if size > _HASH_LIMIT:
        h.update(f"size={size} mtime={mtime_ns}".encode())
        return
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)


def _ignore_patterns(root: Path) -> list[str]:
    for name in (".amlignore", ".gitignore"):
        f = root / name
        if f.is_file():
            lines = [ln.strip() for ln in f.read_text(errors="replace").splitlines()]
            return [ln.rstrip("/") for ln in lines if ln and not ln.startswith("#") and not ln.startswith("!")]
    return []


def folder_fingerprint(path: str | os.PathLike[str], exclude: tuple[str, ...] = (),
                       skip_hidden: bool = False) -> str:
    """A hash of every file under ``path`` (relative path and content), in a fixed order."""
    root = Path(path)
    h = hashlib.sha256()
    if root.is_file():
        st = root.stat()
        h.update(root.name.encode() + b"\0")
        _file_digest(str(root), st.st_size, st.st_mtime_ns, h)
        return h.hexdigest()[:16]
    if not root.is_dir():
        return "missing"
    patterns = _ignore_patterns(root) if skip_hidden else []
    excluded = {str(Path(e).resolve()) for e in exclude}
    stack = [root]
    count = 0
    while stack and count < _MAX_FILES:
        top = stack.pop()
        try:
            with os.scandir(top) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for e in entries:
            rel = os.path.relpath(e.path, root)
            if skip_hidden and (e.name.startswith(".") or any(
                    fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(e.name, p) for p in patterns)):
                continue
            if e.is_dir(follow_symlinks=False):
                if e.name not in _SKIP_DIRS and str(Path(e.path).resolve()) not in excluded:
                    subdirs.append(Path(e.path))
            elif e.is_file():
                st = e.stat()
                h.update(f"{rel}\0{st.st_size}\0".encode())
                _file_digest(e.path, st.st_size, st.st_mtime_ns, h)
                count += 1
        stack.extend(reversed(subdirs))
    return h.hexdigest()[:16]


def source_fingerprint(source_dir: str, workspace: str | os.PathLike[str], extra_exclude: tuple[str, ...] = ()
                       ) -> str:
    """The source folder's fingerprint, leaving out the workspace and outputs that may live inside it."""
    return folder_fingerprint(source_dir, exclude=(str(workspace), *extra_exclude), skip_hidden=True)


def step_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


class ReuseIndex:
    """key -> the step run whose output a step with that key reuses."""

    def __init__(self, workspace: str | os.PathLike[str]) -> None:
        self.path = Path(workspace) / "reuse.sqlite"

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("CREATE TABLE IF NOT EXISTS step_reuse (key TEXT PRIMARY KEY, step TEXT NOT NULL, "
                   "run_id TEXT NOT NULL, created REAL NOT NULL)")
        return db

    def lookup(self, key: str) -> str | None:
        db = self._connect()
        try:
            row = db.execute("SELECT run_id FROM step_reuse WHERE key = ?", (key,)).fetchone()
        finally:
            db.close()
        return row[0] if row else None

    def record(self, key: str, step: str, run_id: str) -> None:
        db = self._connect()
        try:
            with db:
                db.execute("INSERT OR REPLACE INTO step_reuse VALUES (?, ?, ?, ?)", (key, step, run_id, time.time()))
        finally:
            db.close()

    def forget(self, key: str) -> None:
        db = self._connect()
        try:
            with db:
                db.execute("DELETE FROM step_reuse WHERE key = ?", (key,))
        finally:
            db.close()
