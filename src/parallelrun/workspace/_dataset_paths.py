"""A dataset's paths: the accepted forms of ``path`` normalised into sources (a datastore path, a URL, or
an absolute local path), resolved to URLs and credentials, and listed file by file with errors that say
which path failed and why (the storage service's own answer, and advice that fits it)."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.endpoint import FROM_ENVIRONMENT
from ..data.endpoint import advice as endpoint_advice
from ..data.files import NoFileMatched, iter_files
from ..data.storage import is_url
from ..data.storage_errors import Kind, redact, service_error
from ..errors import DatasetError, ParallelRunError, UsageError
from .datastore import DataPath, Datastore, clean_relative, endpoint_remedy
from .workspace import Workspace

_GLOB = re.compile(r"[*?\[]")
# What to check, by the kind of storage failure (``storage_errors.service_error``): credentials only when the
# service refused them (or none were found), the endpoint only when nothing answered (``Source.advice``).
_ADVICE = {
    "credentials": "The service refused the credentials (or none were found): check the datastore's account "
                   "key, SAS token or secret.",
    "service": "That is the storage service's own answer; see its message above.",
}


@dataclass(frozen=True)
class Source:
    """One path of a dataset: inside a datastore (``datastore`` set), or a URL, or an absolute local path."""

    datastore: Datastore | None
    path: str

    def url(self, ws: Workspace | None = None) -> str:
        if self.datastore is None:
            return self.path
        return self._store(ws).url(self.path)

    def storage_options(self, ws: Workspace | None = None) -> dict[str, dict[str, Any]]:
        return {} if self.datastore is None else self._store(ws).storage_options()

    def _store(self, ws: Workspace | None) -> Datastore:
        assert self.datastore is not None
        if ws is None or ws == self.datastore.workspace:
            return Datastore.get(self.datastore.workspace, self.datastore.name)  # fresh definition
        return Datastore.get(ws, self.datastore.name)

    def advice(self, kind: Kind) -> str:
        """What to check after a listing failure of ``kind``; nothing answering is the endpoint's fault, which a
        datastore's registration sets, and the backend's environment variables for a URL."""
        if kind != "endpoint":
            return _ADVICE[kind]
        return endpoint_advice(endpoint_remedy() if self.datastore else FROM_ENVIRONMENT)

    def describe(self) -> str:
        return f"datastore {self.datastore.name!r} path {self.path!r}" if self.datastore else repr(self.path)

    def to_json(self) -> dict[str, str]:
        return {"datastore": self.datastore.name, "path": self.path} if self.datastore else {"path": self.path}


def sources_of(path: Any) -> list[Source]:
    """Normalise every accepted form of ``path`` into sources."""
    if isinstance(path, DataPath):
        return [Source(path.datastore, path.path_on_datastore)]
    if isinstance(path, tuple) and len(path) == 2 and isinstance(path[0], Datastore):
        return [Source(path[0], clean_relative(path[1]))]
    if isinstance(path, (str, os.PathLike)):
        text = os.fspath(path)
        if not text:
            raise UsageError("a dataset path is empty; give a datastore path, a local path or a URL")
        if is_url(text):
            return [Source(None, text)]
        if text.startswith("file://"):
            text = text[len("file://"):]
        return [Source(None, os.path.abspath(os.path.expanduser(text)))]
    if isinstance(path, list):
        if not path:
            raise UsageError("the list of dataset paths is empty")
        return [s for p in path for s in sources_of(p)]
    raise UsageError(
        f"a dataset path cannot be a {type(path).__name__}; use datastore.path('folder/**'), "
        "(datastore, 'folder/**'), a local path, a URL, or a list of these"
    )


def relative_path(found: str, pattern: str) -> str:
    """The path of a listed file relative to the non-glob base of the pattern it came from."""
    if found == pattern:
        return posixpath.basename(found.replace(os.sep, "/"))
    m = _GLOB.search(pattern)
    base = pattern[: m.start()].rsplit("/", 1)[0] if m else pattern.rstrip("/")
    if found.startswith(base + "/") or found.startswith(base + os.sep):
        return found[len(base) + 1:].replace(os.sep, "/")
    return posixpath.basename(found.replace(os.sep, "/"))


def list_files(sources: list[Source], ws: Workspace | None = None) -> Iterator[tuple[Source, str, int, int | str]]:
    """(source, url-or-path, size, version) of every file of ``sources``, in order; DatasetError when a path
    matches nothing, naming the file it cannot record or read (a name that is not valid UTF-8, a folder it
    may not list), or naming the storage service's answer when listing failed."""
    for src in sources:
        url = src.url(ws)
        try:
            for path, size, version in iter_files(url, Path.cwd(), src.storage_options(ws)):
                yield src, path, size, version
        except NoFileMatched:
            raise DatasetError(
                f"the dataset path {src.describe()} (resolved to {url}) matches no file. Upload the files "
                "first (datastore.upload(...)), fix the path or glob, or pass validate=False to create the "
                "dataset before the files exist."
            ) from None
        except DatasetError as e:  # a file it cannot record or read: its own reason, with the dataset path
            raise DatasetError(f"listing the dataset path {src.describe()} failed: {e}") from None
        except ParallelRunError:
            raise
        except Exception as e:
            ws_ = ws or (src.datastore.workspace if src.datastore else None)
            text, kind = service_error(e)
            text = redact(text, ws_._secrets.values() if ws_ else [])
            raise DatasetError(f"listing the dataset path {src.describe()} ({url}) failed: {text}. "
                               f"{src.advice(kind)}") from None


def merge_storage_options(parts: Any) -> dict[str, dict[str, Any]]:
    """Merge per-datastore storage options; two different configurations for one protocol cannot be
    expressed to the engine (it keys options by protocol), so that is an error naming the fix."""
    merged: dict[str, dict[str, Any]] = {}
    for opts in parts:
        for protocol, values in opts.items():
            if protocol in merged and merged[protocol] != values:
                raise UsageError(
                    f"the inputs use two differently configured {protocol}:// datastores (accounts, endpoints "
                    "or credentials differ); one step can read from one account per protocol. Copy the data "
                    "into one datastore, or split the work into two steps."
                )
            merged[protocol] = values
    return merged
