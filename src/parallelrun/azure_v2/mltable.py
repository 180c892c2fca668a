"""MLTable folders (Azure ML's ``type: mltable`` inputs) read into parallelrun datasets.

An MLTable folder holds a YAML file named ``MLTable``: ``paths`` (each a ``file``, a ``folder`` or a glob
``pattern``, relative to the folder unless a URI) and optionally one reading ``transformations`` entry:
``read_delimited``, ``read_parquet`` or ``read_json_lines``. With a reading transformation the input is a
:class:`~parallelrun.TabularDataset` (``run()`` gets DataFrames); with none it is a
:class:`~parallelrun.FileDataset` (``run()`` gets file paths), as on Azure.

Transformations that filter or reshape rows (``take``, ``drop_columns``, ``filter``...) are refused with
the alternative: do it in ``run()``.
"""

from __future__ import annotations

import difflib
import posixpath
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from ..errors import ParallelRunError
from ._strict import Strict

# Azure's encoding names -> Python codec names.
_ENCODINGS = {"utf8": "utf-8", "utf-8": "utf-8", "ascii": "ascii", "latin1": "latin-1", "iso88591": "iso-8859-1",
              "utf16": "utf-16", "windows1252": "cp1252", "utf8bom": "utf-8-sig"}
_HEADERS = ("no_header", "from_first_file", "all_files_different_headers", "all_files_same_headers")
_ROW_TRANSFORMS = ("take", "take_random_sample", "skip", "drop_columns", "keep_columns", "filter",
                   "convert_column_types", "extract_columns_from_partition_format")


class MLTableError(ValueError):
    """The MLTable file is missing or invalid; the message names the file and the fix."""


_Strict = Strict


class _PathEntry(_Strict):
    file: str | None = None
    folder: str | None = None
    pattern: str | None = None

    @model_validator(mode="after")
    def _one(self) -> _PathEntry:
        if sum(v is not None for v in (self.file, self.folder, self.pattern)) != 1:
            raise ValueError("each entry of paths has exactly one of file, folder or pattern")
        return self

    @property
    def value(self) -> str:
        return str(self.file or self.folder or self.pattern)


class _ReadDelimited(_Strict):
    delimiter: str = ","
    header: Literal["no_header", "from_first_file", "all_files_different_headers",
                    "all_files_same_headers"] = "all_files_same_headers"
    encoding: str = "utf8"
    empty_as_string: bool = False
    include_path_column: bool = False
    infer_column_types: bool = True
    support_multi_line: bool = False
    path_column: str | None = None


class _ReadParquet(_Strict):
    include_path_column: bool = False
    path_column: str | None = None


class _ReadJsonLines(_Strict):
    encoding: str = "utf8"
    include_path_column: bool = False
    invalid_lines: Literal["error", "drop"] = "error"
    path_column: str | None = None


class _MLTable(_Strict):
    schema_: str | None = Field(default=None, alias="$schema")
    type: Literal["mltable"] | None = None
    paths: list[_PathEntry] = Field(min_length=1)
    transformations: list[Any] = Field(default_factory=list)
    metadata: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None


def _read_text(folder: Path | Any) -> tuple[str, str]:
    """The MLTable file's text and a description of where it is. ``folder`` is a local Path or a
    DataPath (a folder on a registered datastore)."""
    if isinstance(folder, Path):
        f = folder / "MLTable"
        if not f.is_file():
            why = "does not exist" if not folder.exists() else "has no file named MLTable"
            raise MLTableError(f"MLTable folder {folder} {why}. An mltable input is a folder holding an MLTable "
                               "file (paths: and transformations:); for a plain folder of files use "
                               "type: uri_folder.")
        return f.read_text(), str(f)
    from ..workspace import Dataset

    where = f"datastore {folder.datastore.name!r} path {folder.path_on_datastore}/MLTable"
    with tempfile.TemporaryDirectory(prefix="mltable-") as tmp:
        try:
            ds = Dataset.File.from_files(folder.datastore.path(posixpath.join(folder.path_on_datastore, "MLTable")))
            ds.download(tmp, overwrite=True)
            found = list(Path(tmp).rglob("MLTable"))
        except ParallelRunError as e:
            raise MLTableError(f"{where} cannot be read: {e}. An mltable input is a folder holding an MLTable "
                               "file; for a plain folder of files use type: uri_folder.") from None
        if not found:
            raise MLTableError(f"{where} does not exist; for a plain folder of files use type: uri_folder.")
        return found[0].read_text(), where


def _transform(spec: _MLTable, where: str) -> tuple[str | None, Any]:
    """(reader name or None, its validated options) from the transformations list."""
    reader: tuple[str | None, Any] = (None, None)
    models: dict[str, type[_Strict]] = {"read_delimited": _ReadDelimited, "read_parquet": _ReadParquet,
                                        "read_json_lines": _ReadJsonLines}
    for i, t in enumerate(spec.transformations):
        name, options = (t, None) if isinstance(t, str) else next(iter(t.items())) if isinstance(t, dict) and \
            len(t) == 1 else (None, None)
        if name is None:
            raise MLTableError(f"{where}: transformations[{i}] should be one mapping such as "
                               "'- read_delimited: {delimiter: \",\"}'")
        if name in _ROW_TRANSFORMS:
            raise MLTableError(f"{where}: transformation {name!r} is not supported here; read the rows as they "
                               f"are and apply {name} to the DataFrame inside run().")
        if name not in models:
            close = difflib.get_close_matches(str(name), [*models, *_ROW_TRANSFORMS], n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise MLTableError(f"{where}: unknown transformation {name!r}.{hint} Supported: {', '.join(models)}.")
        if reader[0] is not None:
            raise MLTableError(f"{where}: two reading transformations ({reader[0]}, {name}); keep one.")
        try:
            reader = (name, models[name].model_validate(options or {}))
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise MLTableError(f"{where}: {name}{'.' + loc if loc else ''}: "
                               f"{str(first['msg']).removeprefix('Value error, ')}") from None
    return reader


def _encoding(name: str, where: str) -> str:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in {k.replace("-", "") for k in _ENCODINGS}:
        raise MLTableError(f"{where}: encoding {name!r} is not one of {', '.join(sorted(_ENCODINGS))}")
    return next(v for k, v in _ENCODINGS.items() if k.replace("-", "") == key)


def load_mltable(folder: Path | Any, resolve_uri: Callable[[str], Any], notices: list[str]) -> Any:
    """The dataset an MLTable folder describes. ``folder`` is a local Path or a DataPath;
    ``resolve_uri`` turns an absolute URI in ``paths`` (``azureml://datastores/...``) into a dataset path.
    Options that have no effect here are reported in ``notices``."""
    from ..workspace import Dataset

    text, where = _read_text(folder)
    try:
        spec = _MLTable.model_validate(yaml.safe_load(text) or {})
    except yaml.YAMLError as e:
        raise MLTableError(f"{where} is not valid YAML: {e}") from None
    except ValidationError as e:
        lines = [f"{'.'.join(str(p) for p in x['loc']) or 'MLTable'}: {str(x['msg']).removeprefix('Value error, ')}"
                 for x in e.errors()]
        raise MLTableError(f"{where} is invalid: " + "; ".join(lines)) from None
    paths: list[Any] = []
    for entry in spec.paths:
        v = entry.value
        if "://" in v:
            paths.append(resolve_uri(v))
        elif isinstance(folder, Path):
            paths.append(str((folder / v).resolve()))
        else:
            rel = posixpath.normpath(posixpath.join(folder.path_on_datastore, v))
            paths.append(folder.datastore.path(rel))
    name, options = _transform(spec, where)
    if spec.traits:
        notices.append(f"{where}: traits ({', '.join(spec.traits)}) have no effect here")
    if name is None:
        return Dataset.File.from_files(paths)
    if getattr(options, "include_path_column", False) or getattr(options, "path_column", None):
        notices.append(f"{where}: {name}.include_path_column is not supported; rows have no path column")
    if name == "read_delimited":
        if options.header == "from_first_file" and len(paths) > 1:
            notices.append(f"{where}: header: from_first_file is read as every file having a header line")
        if options.support_multi_line or options.empty_as_string or not options.infer_column_types:
            notices.append(f"{where}: read_delimited is read with pandas' defaults (quoted multi-line values "
                           "allowed, empty values as missing, column types inferred)")
        return Dataset.Tabular.from_delimited_files(paths, separator=options.delimiter,
                                                    header=options.header != "no_header",
                                                    encoding=_encoding(options.encoding, where))
    if name == "read_parquet":
        return Dataset.Tabular.from_parquet_files(paths)
    if options.invalid_lines == "drop":
        notices.append(f"{where}: read_json_lines.invalid_lines: drop is not supported; an invalid line fails "
                       "its mini-batch")
    return Dataset.Tabular.from_json_lines_files(paths, encoding=_encoding(options.encoding, where))
