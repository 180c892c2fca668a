"""Listing input files lazily and in a deterministic order.

A folder is walked depth-first with each directory's entries sorted by name, so a million files never
need a million objects in memory at once (only one directory's names at a time). A glob or a remote URL
is listed by its filesystem and sorted. The order is the order of mini-batches and of the output rows.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import DatasetError
from .storage import is_url, url_to_fs

GLOB_CHARS = set("*?[")


def _walk(root: str) -> Iterator[tuple[str, int, int]]:
    """Yield (path, size, mtime_ns) under ``root`` in sorted tree order, following no symlinked dirs."""
    stack = [root]
    while stack:
        top = stack.pop()
        try:
            with os.scandir(top) as it:
                entries = sorted(it, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        subdirs: list[str] = []
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                subdirs.append(e.path)
            elif e.is_file():
                st = e.stat()
                yield e.path, st.st_size, st.st_mtime_ns
            # Directories are visited in name order after this directory's files: push in reverse.
        stack.extend(reversed(subdirs))


def iter_files(
    path: str, base_dir: Path, storage_options: dict | None = None
) -> Iterator[tuple[str, int, int | str]]:
    """Yield (path-or-url, size, version) for one input entry; version is mtime_ns or an etag.

    Raises DatasetError when the entry matches nothing.
    """
    if is_url(path):
        yield from _iter_remote(path, storage_options)
        return
    p = Path(os.path.expanduser(path))
    if not p.is_absolute():
        p = base_dir / p
    s = str(p)
    if GLOB_CHARS & set(path):
        matches = sorted(m for m in glob.iglob(s, recursive=True) if os.path.isfile(m))
        if not matches:
            raise DatasetError(f"input path {path!r} (resolved to {s}) matches no file. Check the pattern.")
        for m in matches:
            st = os.stat(m)
            yield m, st.st_size, st.st_mtime_ns
        return
    if p.is_file():
        st = p.stat()
        yield s, st.st_size, st.st_mtime_ns
        return
    if p.is_dir():
        yield from _walk(s)
        return
    raise DatasetError(
        f"input path {path!r} does not exist (resolved to {s}). Paths are relative to the job file's folder."
    )


def _iter_remote(url: str, storage_options: dict | None) -> Iterator[tuple[str, int, int | str]]:
    fs, root = url_to_fs(url, storage_options)
    protocol = url.split("://", 1)[0]
    if GLOB_CHARS & set(root):
        found = fs.glob(root, detail=True)
    elif fs.isfile(root):
        found = {root: fs.info(root)}
    else:
        found = fs.find(root, detail=True)
    entries = sorted((k, v) for k, v in found.items() if v.get("type", "file") == "file")
    if not entries:
        raise DatasetError(f"input path {url!r} matches no file in the datastore.")
    for name, info in entries:
        version = info.get("etag") or info.get("ETag") or info.get("last_modified") or info.get("mtime") or ""
        yield f"{protocol}://{name}", int(info.get("size") or 0), str(version)
