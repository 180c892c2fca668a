"""Where a pipeline's data is, for the pipeline driver: local copies of inputs, and PipelineData that a
ParallelRunStep's workers wrote on a remote datastore themselves ("direct", see ``pipeline_driver``).

Nothing here reads a remote object's bytes except ``materialize`` (a step that needs a local path):
a direct PipelineData is fingerprinted by its objects' names and sizes (the pipeline driver adds the part
records its producer's journal committed) and copied server-side on reuse.

Before its first request to a remote store each function here makes one TCP connection to the store's
endpoint (``data/endpoint.py``): a pipeline submitted again while its datastore's service is down fails
its step within seconds, naming the endpoint, not after the storage SDK's retries (minutes on Azure).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from ..data.endpoint import EndpointUnreachable, check_endpoint
from ..data.endpoint import advice as endpoint_advice
from ..data.files import GLOB_CHARS, iter_files
from ..data.storage import is_url, url_to_fs
from ..errors import UsageError
from ._dataset_paths import relative_path
from .datastore import endpoint_remedy


def link_or_copy(src: str, dst: str) -> None:
    """Hard-link when possible (reused outputs cost no space); the engine replaces files atomically, so a
    later run never writes through the link."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def materialize(entries: list[dict[str, Any]], dest: Path, options: dict[str, Any], base: Path) -> str:
    """Make a dataset's files available locally: a single local folder or file is used where it is;
    anything else is copied or downloaded under ``dest`` (once), keeping paths below each entry's root."""

    paths = [p for e in entries for p in (e["path"] if isinstance(e["path"], list) else [e["path"]])]
    if len(paths) == 1 and not is_url(paths[0]) and not (GLOB_CHARS & set(paths[0])):
        p = Path(paths[0]) if Path(paths[0]).is_absolute() else base / paths[0]
        if p.exists():
            return str(p)
    done = dest / ".complete"
    files: list[tuple[str, str]] = []
    patterns = [p if is_url(p) or Path(p).is_absolute() else str(base / p) for p in paths]
    for p, pattern in zip(paths, patterns, strict=True):
        for f, _, _ in iter_files(p, base, options):
            # Below a folder or a glob's fixed part, paths are kept; a single file keeps its name.
            files.append((f, relative_path(f, pattern)))
    if not done.exists():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for f, rel in files:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if is_url(f):
                fs, inner = url_to_fs(f, options)
                fs.get(inner, str(target))
            else:
                link_or_copy(f, str(target))
        done.touch()
    if len(files) == 1 and len(paths) == 1 and files[0][0] == patterns[0]:
        return str(dest / files[0][1])  # a single-file dataset: its path, as Azure's download gives
    return str(dest)


def join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}" if "://" in folder else str(Path(folder) / name)


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _remote(url: str, options: dict[str, Any], doing: str) -> tuple[Any, str]:
    """(filesystem, path in it) for ``url`` on a datastore, once something answers at its endpoint;
    UsageError saying what was being done and what to check otherwise."""
    found = url_to_fs(url, options)  # first: a missing extra says which one to install
    try:
        check_endpoint(url, options)
    except EndpointUnreachable as e:
        advice = endpoint_advice(endpoint_remedy(then="run the pipeline again"))
        raise UsageError(f"{doing} {url} failed: {e}. {advice}") from None
    return found


def remote_exists(url: str, options: dict[str, Any]) -> bool:
    """Whether anything is at ``url`` (an earlier step run's output, before it is reused)."""
    fs, inner = _remote(url, options, "checking the earlier output at")
    fs.invalidate_cache()
    return bool(fs.exists(inner))


def remote_fingerprint(url: str, options: dict[str, Any]) -> str:
    """A hash of the names and sizes of the objects under ``url`` (no byte of them is read)."""
    fs, inner = _remote(url, options, "fingerprinting the pipeline data at")
    fs.invalidate_cache()
    try:
        found = fs.find(inner, detail=True)
    except FileNotFoundError:
        return "missing"
    if not found:
        return "missing"
    h = hashlib.sha256()
    for path in sorted(found):
        h.update(f"{path[len(inner):]}\0{found[path].get('size')}\n".encode())
    return h.hexdigest()[:16]


def copy_remote(src: str, dst: str, options: dict[str, Any]) -> None:
    """Copy every object under ``src`` to ``dst`` on the same store (server-side copies), replacing ``dst``."""
    fs, src_inner = _remote(src, options, "copying the earlier output at")  # dst is on the same store
    _, dst_inner = url_to_fs(dst, options)
    fs.invalidate_cache()
    if src_inner.rstrip("/") == dst_inner.rstrip("/"):
        return
    for old in fs.find(dst_inner) if fs.exists(dst_inner) else []:
        fs.rm_file(old)
    for path in fs.find(src_inner):
        fs.copy(path, dst_inner.rstrip("/") + path[len(src_inner.rstrip("/")):])
    fs.invalidate_cache()
