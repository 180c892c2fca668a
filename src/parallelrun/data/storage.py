"""Filesystems by URL through fsspec, with optional backends imported lazily.

A short protocol name maps to the extra that provides it; a missing extra raises an error naming the pip
command. Credentials are never part of a URL or a mini-batch descriptor: workers receive them as
``storage_options`` from the driver at start-up (or read them from the workspace's secrets file).

``storage_options`` are keyed by protocol everywhere (``{"az": {...}, "s3": {...}}``): a job spec's, those
given to ``run_job``/``resume_run``, a datastore's. ``job_storage_options`` is the one rule that combines a
job spec's with those a caller gives, for its inputs and its output alike, and refuses options that are not
keyed so (a filesystem's own, ``{"account_name": ...}``): the inputs look theirs up by protocol and would
never see them.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import MissingExtraError, UsageError

#: the object stores parallelrun reads and writes: protocol -> (the fsspec backend's module, the extra to install)
BACKENDS = {"az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"), "abfss": ("adlfs", "azure"),
            "s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3")}
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# A protocol is a URL scheme (RFC 3986: no "_"), so a filesystem's own option names (account_name,
# client_kwargs) never pass for one; one-word options (key, anon) hold a string or a bool, not a dict.
_PROTOCOL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*$")
# Option names of adlfs and s3fs that say which protocol a flat set of options was meant for (the example in
# the message that refuses them).
_AZURE_OPTIONS = {"account_name", "account_key", "connection_string", "sas_token", "account_host", "tenant_id",
                  "client_id", "client_secret"}
_S3_OPTIONS = {"key", "secret", "token", "endpoint_url", "client_kwargs", "config_kwargs", "s3_additional_kwargs",
               "profile", "use_ssl", "requester_pays", "version_aware"}


def is_url(path: str) -> bool:
    return bool(_URL_RE.match(path)) and not path.startswith("file://")


def job_storage_options(spec_options: dict[str, Any] | None, given: dict[str, Any] | None) -> dict[str, Any]:
    """The storage options a job uses for its inputs (planning in the driver, reading in the workers) and its
    output: the job spec's ``storage_options``, with those given by the caller (``run_job(storage_options=)``,
    a pipeline's datastores) over them protocol by protocol: a protocol the caller names replaces the spec's
    options for that protocol whole (never a mix of two sets of credentials). Applying it twice changes
    nothing.

    ``UsageError`` when either holds options under no protocol (``{"account_name": ...}`` instead of or beside
    ``{"az": {...}}``), naming both sources and how to key them: the inputs look their options up by
    protocol and never see such options, and the output took them only when nothing else was keyed (mixed
    with the other source's if both were flat), so they were dropped or mixed without a word."""
    spec, extra = spec_options or {}, given or {}
    spec_loose, given_loose = unkeyed_options(spec), unkeyed_options(extra)
    if spec_loose or given_loose:
        raise UsageError(_unkeyed_message(spec, spec_loose, extra, given_loose))
    return {**spec, **extra}


def unkeyed_options(options: dict[str, Any]) -> list[str]:
    """The names in ``options`` that are not ``protocol: {that filesystem's options}``: a filesystem's own
    options (``account_name``, ``key``, ``client_kwargs``) given where options keyed by protocol belong."""
    return [name for name, value in options.items()
            if not (isinstance(value, dict) and _PROTOCOL_RE.match(str(name)))]


def _unkeyed_message(spec: dict[str, Any], spec_loose: list[str], given: dict[str, Any],
                     given_loose: list[str]) -> str:
    """What ``job_storage_options`` refuses: each source's options as they are, then how to key them."""
    found, fixes = [], []
    if given_loose:
        protocol = _protocol_of(given_loose, spec)
        found.append(f"the storage_options given to run_job (or resume_run) hold options under no protocol "
                     f"({', '.join(given_loose)})")
        names = ", ".join(f'"{n}": ...' for n in given_loose)
        replaces = f" (they replace the job spec's {protocol} options)" if protocol in spec else ""
        fixes.append(f'Key the ones given to run_job by protocol: storage_options={{"{protocol}": {{{names}}}}}'
                     f"{replaces}.")
    elif given:
        found.append(f"the storage_options given to run_job are keyed by protocol ({', '.join(given)})")
    if spec_loose:
        protocol = _protocol_of(spec_loose, given)
        found.append(f"the job spec's storage_options hold options under no protocol ({', '.join(spec_loose)})")
        names = ", ".join(f"{n}: ..." for n in spec_loose)
        fixes.append(f"In the job spec, write them under their protocol: storage_options: {{{protocol}: {{{names}}}}}.")
    elif spec:
        found.append(f"the job spec's storage_options are keyed by protocol ({', '.join(spec)})")
    return (f"{', while '.join(found)}. A job's storage_options are keyed by protocol, for its inputs and its "
            "output alike: options under no protocol never reach the inputs, so they are refused rather than "
            f"dropped. {' '.join(fixes)}")


def _protocol_of(names: list[str], other: dict[str, Any]) -> str:
    """The protocol a filesystem's own options most likely belong to, for the example in a message: the one
    their names are adlfs's or s3fs's, else the other source's only protocol, else a placeholder."""
    if any(n in _AZURE_OPTIONS for n in names):
        return "az"
    if any(n in _S3_OPTIONS for n in names):
        return "s3"
    keyed = [p for p in other if p not in unkeyed_options(other)]
    return keyed[0] if len(keyed) == 1 else "<protocol>"


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
        pkg, extra = BACKENDS.get(protocol, (protocol, protocol))
        raise MissingExtraError(pkg, extra, f"reading {protocol}:// paths") from e
