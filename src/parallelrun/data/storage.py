"""Filesystems by URL through fsspec, with optional backends imported lazily.

A short protocol name maps to the extra that provides it; a missing extra raises an error naming the pip
command. Credentials are never part of a URL or a mini-batch descriptor: workers receive them as
``storage_options`` from the driver at start-up (or read them from the workspace's secrets file).

``storage_options`` are keyed by protocol everywhere (``{"az": {...}, "s3": {...}}``): a job spec's, those
given to ``run_job``/``resume_run``, a datastore's. ``job_storage_options`` is the one rule that combines a
job spec's with those a caller gives, for its inputs and its output alike.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import MissingExtraError

_EXTRAS = {"az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"), "abfss": ("adlfs", "azure"),
           "s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3")}
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_url(path: str) -> bool:
    return bool(_URL_RE.match(path)) and not path.startswith("file://")


def job_storage_options(spec_options: dict[str, Any] | None, given: dict[str, Any] | None) -> dict[str, Any]:
    """The storage options a job uses for its inputs (planning in the driver, reading in the workers) and its
    output: the job spec's ``storage_options``, with those given by the caller (``run_job(storage_options=)``,
    a pipeline's datastores) over them protocol by protocol: a protocol the caller names replaces the spec's
    options for that protocol whole (never a mix of two sets of credentials). Applying it twice changes
    nothing."""
    return {**(spec_options or {}), **(given or {})}


def url_to_fs(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """Return (filesystem, path inside it) for a URL, naming the pip extra when its backend is missing.

    ``storage_options`` maps a protocol to the keyword arguments of its filesystem, e.g.
    ``{"az": {"account_name": ..., "account_key": ...}}``.
    """
    import fsspec.core

    protocol = url.split("://", 1)[0] if "://" in url else "file"
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}).get(protocol, {}))
    except ImportError as e:
        pkg, extra = _EXTRAS.get(protocol, (protocol, protocol))
        raise MissingExtraError(pkg, extra, f"reading {protocol}:// paths") from e
