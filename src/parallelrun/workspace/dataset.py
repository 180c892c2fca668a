"""Datasets: named, versioned references to files in datastores (or local folders, or URLs).

A dataset holds no data, only its definition (which paths, which format); the files are listed when it is
used. ``Dataset.File.from_files(...)`` gives a :class:`FileDataset` (``run()`` receives file paths);
``Dataset.Tabular.from_*_files(...)`` a :class:`TabularDataset` (``run()`` receives DataFrames).

A dataset's paths (their forms, their listing, the errors when listing fails) are ``_dataset_paths.py``.
The engine bridge is :meth:`Dataset.to_input_specs` (the job spec's ``inputs:`` entries plus the
``storage_options`` of the datastores involved) and :meth:`Dataset.fingerprint` (for step reuse).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

from ..data.storage import is_url, url_to_fs
from ..errors import UsageError
from ._dataset_paths import Source, list_files, merge_storage_options, relative_path, sources_of
from .datastore import DataPath, Datastore
from .workspace import Workspace, register_asset

# merge_storage_options is re-exported: it was always imported from here.
__all__ = ["Dataset", "DatasetConsumptionConfig", "FileDataset", "PathArg", "TabularDataset", "merge_storage_options"]

_INPUT_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
PathArg = Union[DataPath, tuple, str, "os.PathLike[str]", list]


class Dataset:
    """Base class of FileDataset and TabularDataset; ``Dataset.File`` and ``Dataset.Tabular`` make them."""

    _kind = ""

    def __init__(self, sources: list[Source], options: dict[str, Any] | None = None) -> None:
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
            ds = FileDataset(sources_of(path))
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
        sources = [Source(Datastore.get(workspace, s["datastore"]) if "datastore" in s else None, s["path"])
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

    def _files(self, ws: Workspace | None = None) -> Iterator[tuple[Source, str, int, int | str]]:
        """(source, url-or-path, size, version) of every file, in order; DatasetError when a path matches
        nothing."""
        return list_files(self._sources, ws)

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
        return ["/" + relative_path(path, src.url()) for src, path, _, _ in self._files()]

    def download(self, target_path: str | os.PathLike[str], overwrite: bool = False) -> list[str]:
        """Copy every file under ``target_path`` (keeping ``to_path()``'s layout); returns the local paths."""
        target = Path(target_path).expanduser().resolve()
        plan = [(src, path, target / relative_path(path, src.url())) for src, path, _, _ in self._files()]
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
        ds = TabularDataset(sources_of(path), options)
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


def _as_version(version: int | str) -> int:
    try:
        return int(version)
    except (TypeError, ValueError):
        raise UsageError(f"dataset version {version!r} is not a number; use an integer or 'latest'") from None


register_asset("datasets", Dataset.get_all)
