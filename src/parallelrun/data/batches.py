"""Mini-batch descriptors: small, picklable, known before they run, opened lazily by the worker.

A descriptor never holds the data itself. The driver ships descriptors to workers (local processes or
Ray actors) and records them in the journal as JSON, so a resumed run or ``parallelrun debug`` rebuilds
exactly the same mini-batch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class FileBatch:
    """A mini-batch of whole files: ``run()`` receives their local paths."""

    index: int
    paths: tuple[str, ...]
    nbytes: int = 0

    @property
    def n_items(self) -> int:
        return len(self.paths)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by value: dataclass(slots=True) pickling goes through Python-level __getstate__ and
        # fields(), several times slower, and descriptors cross a pipe for every mini-batch.
        return (FileBatch, (self.index, self.paths, self.nbytes))

    def describe(self) -> str:
        first = self.paths[0] if self.paths else "-"
        more = f" (+{len(self.paths) - 1} more)" if len(self.paths) > 1 else ""
        return f"{first}{more}"


@dataclass(frozen=True, slots=True)
class TabularBatch:
    """A slice of one tabular file: ``run()`` receives it as a pandas DataFrame.

    Text formats (csv, tsv, jsonl) are sliced by byte range ``[start, end)`` on record boundaries; a CSV/TSV
    batch that does not begin at the file's start re-reads the header from ``[0, header_end)``. Parquet is
    sliced by row group (``row_groups``), and within a row group by ``[row_start, row_end)`` relative to the
    file. ``row_start``/``row_end`` always give the rows' positions in the file (0-based, header excluded),
    so a failed row can be named exactly.
    """

    index: int
    path: str
    format: str  # csv | tsv | parquet | jsonl
    row_start: int
    row_end: int
    start: int = 0
    end: int = 0
    header_end: int = 0
    row_groups: tuple[int, ...] = ()
    nbytes: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # separator, header, encoding

    @property
    def n_items(self) -> int:
        return self.row_end - self.row_start

    def describe(self) -> str:
        return f"{self.path} rows {self.row_start}-{self.row_end - 1}"


MiniBatch = FileBatch | TabularBatch


def to_json(batch: MiniBatch) -> str:
    if isinstance(batch, FileBatch):
        # The hot path of planning a million files: asdict() deep-copies and costs 4x as much.
        return json.dumps({"index": batch.index, "paths": batch.paths, "nbytes": batch.nbytes, "kind": "file"},
                          separators=(",", ":"))
    d = asdict(batch)
    d["kind"] = "file" if isinstance(batch, FileBatch) else "tabular"
    return json.dumps(d, separators=(",", ":"))


def from_json(text: str) -> MiniBatch:
    d = json.loads(text)
    kind = d.pop("kind")
    if kind == "file":
        d["paths"] = tuple(d["paths"])
        return FileBatch(**d)
    d["row_groups"] = tuple(d.get("row_groups", ()))
    return TabularBatch(**d)
