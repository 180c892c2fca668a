"""Datasets: named, versioned references to files in datastores (or local folders, or URLs).

A dataset holds no data, only its definition (which paths, which format); the files are listed when it is
used. ``Dataset.File.from_files(...)`` gives a :class:`FileDataset` (``run()`` receives file paths);
``Dataset.Tabular.from_*_files(...)`` a :class:`TabularDataset` (``run()`` receives DataFrames).

The engine bridge is :meth:`Dataset.to_input_specs` (the job spec's ``inputs:`` entries plus the
``storage_options`` of the datastores involved) and :meth:`Dataset.fingerprint` (for step reuse).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from ..data.files import iter_files
from ..data.storage import is_url, url_to_fs
from ..errors import DatasetError, ParallelRunError, UsageError
from ._secrets import redact
from .datastore import DataPath, Datastore, clean_relative
from .workspace import Workspace, register_asset

_GLOB = re.compile(r"[*?\[]")
_INPUT_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
PathArg = Union[DataPath, tuple, str, "os.PathLike[str]", list]


@dataclass(frozen=True)
class _Source:
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

    def describe(self) -> str:
        return f"datastore {self.datastore.name!r} path {self.path!r}" if self.datastore else repr(self.path)

    def to_json(self) -> dict[str, str]:
        return {"datastore": self.datastore.name, "path": self.path} if self.datastore else {"path": self.path}


def _sources(path: Any) -> list[_Source]:
    """Normalise every accepted form of ``path`` into sources."""
    if isinstance(path, DataPath):
        return [_Source(path.datastore, path.path_on_datastore)]
    if isinstance(path, tuple) and len(path) == 2 and isinstance(path[0], Datastore):
        return [_Source(path[0], clean_relative(path[1]))]
    if isinstance(path, (str, os.PathLike)):
        text = os.fspath(path)
        if not text:
            raise UsageError("a dataset path is empty; give a datastore path, a local path or a URL")
        if is_url(text):
            return [_Source(None, text)]
        if text.startswith("file://"):
            text = text[len("file://"):]
        return [_Source(None, os.path.abspath(os.path.expanduser(text)))]
    if isinstance(path, list):
        if not path:
            raise UsageError("the list of dataset paths is empty")
        return [s for p in path for s in _sources(p)]
    raise UsageError(
        f"a dataset path cannot be a {type(path).__name__}; use datastore.path('folder/**'), "
        "(datastore, 'folder/**'), a local path, a URL, or a list of these"
    )


def _relative(found: str, pattern: str) -> str:
    """The path of a listed file relative to the non-glob base of the pattern it came from."""
    if found == pattern:
        return posixpath.basename(found.replace(os.sep, "/"))
    m = _GLOB.search(pattern)
    base = pattern[: m.start()].rsplit("/", 1)[0] if m else pattern.rstrip("/")
    if found.startswith(base + "/") or found.startswith(base + os.sep):
        return found[len(base) + 1:].replace(os.sep, "/")
    return posixpath.basename(found.replace(os.sep, "/"))


class Dataset:
    """Base class of FileDataset and TabularDataset; ``Dataset.File`` and ``Dataset.Tabular`` make them."""

    _kind = ""

    def __init__(self, sources: list[_Source], options: dict[str, Any] | None = None) -> None:
        self._sources = sources
        self._options = dict(options or {})
        self.name: str | None = None
        self.version: int | None = None
        self.description: str | None = None
        self.tags: dict[str, str] = {}

    # --- factories (Azure: Dataset.File.from_files, Dataset.Tabular.from_delimited_files, ...) --------
    class File:
        @staticmethod
        def from_files(path: PathArg, validate: bool = True) -> FileDataset:
            """Files from datastore paths, local paths or URLs (globs allowed), e.g.
            ``Dataset.File.from_files(datastore.path("mnist/**/*.png"))``."""
            ds = FileDataset(_sources(path))
            if validate:
                ds._validate()
            return ds

    class Tabular:
        @staticmethod
        def from_delimited_files(path: PathArg, validate: bool = True, separator: str = ",",
                                 header: bool = True, encoding: str = "utf-8") -> TabularDataset:
            """Rows of CSV/TSV files (``separator="\\t"`` for TSV); ``header=False`` when they have none."""
            fmt = "tsv" if separator == "\t" else "csv"
            return TabularDataset._make(path, validate, {"format": fmt, "separator": separator,
                                                         "header": bool(header), "encoding": encoding})

        @staticmethod
        def from_parquet_files(path: PathArg, validate: bool = True) -> TabularDataset:
            return TabularDataset._make(path, validate, {"format": "parquet"})

        @staticmethod
        def from_json_lines_files(path: PathArg, validate: bool = True, encoding: str = "utf-8") -> TabularDataset:
            return TabularDataset._make(path, validate, {"format": "jsonl", "encoding": encoding})

    # --- catalog --------------------------------------------------------------------------------------
    def register(self, workspace: Workspace, name: str, description: str | None = None,
                 tags: dict[str, str] | None = None, create_new_version: bool = True) -> Dataset:
        """Register this definition as ``name``: version 1, then 2, 3, ... as the definition changes.

        Registering the same definition again returns the existing latest version (so a notebook that
        re-registers on every run keeps one version, and step reuse keeps hitting). A different
        definition needs ``create_new_version=True``.
        """
        if not name or "/" in name or ":" in name:
            raise UsageError(f"dataset name {name!r} is invalid: use a non-empty name without '/' or ':'")
        definition = self._definition()
        with workspace.catalog.connect(write=True) as db:
            row = db.execute("SELECT version, definition FROM datasets WHERE name = ? ORDER BY version DESC "
                             "LIMIT 1", (name,)).fetchone()
            if row is not None and json.loads(row["definition"]) == definition:
                version = int(row["version"])
            elif row is not None and not create_new_version:
                raise UsageError(
                    f"a dataset named {name!r} (version {row['version']}) is already registered with a "
                    "different definition; pass create_new_version=True to register this one as a new "
                    "version, or choose another name"
                )
            else:
                version = workspace.catalog.add_version(db, "datasets", name, {
                    "definition": definition, "description": description, "tags": dict(tags or {})})
        return Dataset.get_by_name(workspace, name, version)

    @staticmethod
    def get_by_name(workspace: Workspace, name: str, version: int | str = "latest") -> FileDataset | TabularDataset:
        """A registered dataset; ``version="latest"`` (the default) or a version number."""
        v: int | None = None if str(version).lower() == "latest" else _as_version(version)
        row = workspace.catalog.lookup("datasets", name, v)
        d = row["definition"]
        sources = [_Source(Datastore.get(workspace, s["datastore"]) if "datastore" in s else None, s["path"])
                   for s in d["paths"]]
        cls: type[FileDataset] | type[TabularDataset] = FileDataset if d["kind"] == "file" else TabularDataset
        ds = cls(sources, d.get("options"))
        ds.name, ds.version = row["name"], int(row["version"])
        ds.description, ds.tags = row.get("description"), dict(row.get("tags") or {})
        return ds

    @staticmethod
    def get_all(workspace: Workspace) -> dict[str, FileDataset | TabularDataset]:
        return {n: Dataset.get_by_name(workspace, n) for n in workspace.catalog.names("datasets")}

    # --- consumption ----------------------------------------------------------------------------------
    def as_named_input(self, name: str) -> DatasetConsumptionConfig:
        """This dataset as a step input called ``name`` (the key in ``mini_batch_context`` / inputs)."""
        if not _INPUT_NAME_RE.match(name or ""):
            raise UsageError(f"input name {name!r} is invalid: use letters, digits, '_' and '-' (e.g. 'images')")
        return DatasetConsumptionConfig(name, self)

    def as_mount(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        """Accepted for Azure compatibility: locally, workers read the files directly either way."""
        return DatasetConsumptionConfig(self.name or "input", self, "mount")

    def as_download(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        return DatasetConsumptionConfig(self.name or "input", self, "download")

    # --- engine bridge --------------------------------------------------------------------------------
    def to_input_specs(self, ws: Workspace) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        """The engine's ``inputs:`` entries for this dataset, and the merged ``storage_options`` of its
        datastores (credentials: hand them to ``run_job``, never persist them)."""
        spec: dict[str, Any] = {"type": self._kind, "path": [s.url(ws) for s in self._sources]}
        if self._kind == "tabular":
            spec["format"] = self._options["format"]
            if self._options["format"] in ("csv", "tsv"):
                spec["separator"] = self._options.get("separator", ",")
                spec["header"] = self._options.get("header", True)
            if self._options.get("encoding"):
                spec["encoding"] = self._options["encoding"]
        return [spec], merge_storage_options(s.storage_options(ws) for s in self._sources)

    def fingerprint(self, ws: Workspace) -> str:
        """A hash of the dataset's name, version and definition and of every file's path, size and
        modification time (or etag): it changes when any input file changes."""
        h = hashlib.sha256()
        h.update(json.dumps([self.name, self.version, self._definition()], sort_keys=True).encode())
        for _, path, size, version in self._files(ws):
            h.update(f"\n{path}\0{size}\0{version}".encode())
        return h.hexdigest()[:16]

    # --- helpers --------------------------------------------------------------------------------------
    def _definition(self) -> dict[str, Any]:
        return {"kind": self._kind, "paths": [s.to_json() for s in self._sources], "options": self._options}

    def _files(self, ws: Workspace | None = None) -> Iterator[tuple[_Source, str, int, int | str]]:
        """(source, url-or-path, size, version) of every file, in order; DatasetError when a path matches
        nothing."""
        for src in self._sources:
            url = src.url(ws)
            try:
                for path, size, version in iter_files(url, Path.cwd(), src.storage_options(ws)):
                    yield src, path, size, version
            except DatasetError:
                raise DatasetError(
                    f"the dataset path {src.describe()} (resolved to {url}) matches no file. Upload the files "
                    "first (datastore.upload(...)), fix the path or glob, or pass validate=False to create the "
                    "dataset before the files exist."
                ) from None
            except ParallelRunError:
                raise
            except Exception as e:
                ws_ = ws or (src.datastore.workspace if src.datastore else None)
                text, advice = _service_error(e)
                text = redact(text, ws_._secrets.values() if ws_ else [])
                raise DatasetError(f"listing the dataset path {src.describe()} ({url}) failed: {text}. {advice}") \
                    from None

    def _validate(self) -> None:
        for src in self._sources:
            single = type(self)([src], self._options)
            next(single._files(), None)  # raises DatasetError naming the path when nothing matches

    def _label(self) -> str:
        return f"name={self.name!r}, version={self.version}" if self.name else "unregistered"

    def __repr__(self) -> str:
        paths = ", ".join(s.describe() for s in self._sources)
        return f"{type(self).__name__}({self._label()}, paths=[{paths}])"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._definition() == self._definition() and (  # type: ignore[attr-defined]
            other.name, other.version) == (self.name, self.version)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(json.dumps([self.name, self.version, self._definition()], sort_keys=True))


class FileDataset(Dataset):
    """Files: ``run(mini_batch)`` receives a list of local file paths."""

    _kind = "file"

    def to_path(self) -> list[str]:
        """The files' paths relative to the folder each dataset path starts from, as Azure shows them
        (``["/0.png", "/sub/1.png"]``)."""
        return ["/" + _relative(path, src.url()) for src, path, _, _ in self._files()]

    def download(self, target_path: str | os.PathLike[str], overwrite: bool = False) -> list[str]:
        """Copy every file under ``target_path`` (keeping ``to_path()``'s layout); returns the local paths."""
        target = Path(target_path).expanduser().resolve()
        plan = [(src, path, target / _relative(path, src.url())) for src, path, _, _ in self._files()]
        existing = [str(dest) for _, _, dest in plan if dest.exists()]
        if existing and not overwrite:
            raise UsageError(f"{len(existing)} file(s) already exist in {target} (first: {existing[0]}); "
                             "pass overwrite=True or choose an empty folder")
        for src, path, dest in plan:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if is_url(path):
                fs, inner = url_to_fs(path, src.storage_options())
                fs.get(inner, str(dest))
            else:
                shutil.copy2(path, dest)
        return [str(dest) for _, _, dest in plan]

    def mount(self, mount_point: str | None = None) -> _LocalMount:
        """Azure's mount context: here the files are downloaded to a temporary folder for the block."""
        return _LocalMount(self, mount_point)


class TabularDataset(Dataset):
    """Rows: ``run(mini_batch)`` receives a pandas DataFrame."""

    _kind = "tabular"

    @staticmethod
    def _make(path: PathArg, validate: bool, options: dict[str, Any]) -> TabularDataset:
        ds = TabularDataset(_sources(path), options)
        if validate:
            ds._validate()
        return ds

    def to_pandas_dataframe(self) -> Any:
        """Every row of every file as one pandas DataFrame (fine for small data; the engine streams)."""
        import fsspec
        import pandas as pd

        frames = []
        o = self._options
        for src, path, _, _ in self._files():
            with fsspec.open(path, "rb", **src.storage_options().get(path.split("://")[0], {})) as f:
                if o["format"] in ("csv", "tsv"):
                    frames.append(pd.read_csv(f, sep=o.get("separator", ","), header=0 if o.get("header", True)
                                              else None, encoding=o.get("encoding", "utf-8")))
                elif o["format"] == "parquet":
                    frames.append(pd.read_parquet(f))
                else:
                    frames.append(pd.read_json(f, lines=True, encoding=o.get("encoding", "utf-8")))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class DatasetConsumptionConfig:
    """A dataset used as a named step input (what ``as_named_input`` returns; ParallelRunStep's inputs)."""

    def __init__(self, name: str, dataset: Dataset, mode: str = "direct") -> None:
        self.name = name
        self.dataset = dataset
        self.mode = mode

    def as_mount(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        return DatasetConsumptionConfig(self.name, self.dataset, "mount")

    def as_download(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        return DatasetConsumptionConfig(self.name, self.dataset, "download")

    def to_input_specs(self, ws: Workspace) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        """As :meth:`Dataset.to_input_specs`, with each entry named after this input."""
        specs, options = self.dataset.to_input_specs(ws)
        return [{**s, "name": self.name} for s in specs], options

    def __repr__(self) -> str:
        return f"DatasetConsumptionConfig(name={self.name!r}, mode={self.mode!r}, dataset={self.dataset!r})"


class _LocalMount:
    def __init__(self, ds: FileDataset, mount_point: str | None) -> None:
        self.ds, self.mount_point = ds, mount_point

    def __enter__(self) -> _LocalMount:
        import tempfile

        self._tmp = None if self.mount_point else tempfile.mkdtemp(prefix="parallelrun-mount-")
        self.mount_point = self.mount_point or self._tmp
        assert self.mount_point is not None
        self.ds.download(self.mount_point, overwrite=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)


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


def _as_version(version: int | str) -> int:
    try:
        return int(version)
    except (TypeError, ValueError):
        raise UsageError(f"dataset version {version!r} is not a number; use an integer or 'latest'") from None


def _service_error(e: BaseException) -> tuple[str, str]:
    """The storage service's own message for a failed request (walking the exception's causes: fsspec
    backends wrap the SDK's error), and advice that matches it: credentials only for 401/403, the
    endpoint only when nothing answered."""
    parts: list[str] = []
    status = None
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen and len(seen) < 10:
        seen.add(id(cur))
        msg = str(getattr(cur, "message", "") or cur).strip()
        first = msg.splitlines()[0] if msg else type(cur).__name__
        if first and first not in parts:
            parts.append(f"{type(cur).__name__}: {first}" if not parts else first)
        status = status or getattr(cur, "status_code", None) or getattr(getattr(cur, "response", None),
                                                                         "status_code", None)
        cur = cur.__cause__ or cur.__context__
    text = " <- ".join(parts[:3])
    if status in (401, 403):
        return text, "The service refused the credentials: check the datastore's account key, SAS token or secret."
    if isinstance(e, (ConnectionError, TimeoutError)) or "connect" in text.lower() and status is None:
        return text, "Nothing answered: check the datastore's endpoint (is the service running and reachable?)."
    return text, "That is the storage service's own answer; see its message above."


register_asset("datasets", Dataset.get_all)
