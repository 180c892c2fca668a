"""Mini-batch descriptors: small, picklable, known before they run, opened lazily by the worker.

A descriptor never holds the data itself. The driver ships descriptors to workers (local processes or
Ray actors) and records them in the journal as JSON, so a resumed run or ``parallelrun debug`` rebuilds
exactly the same mini-batch.

A *piece* is part of a mini-batch that failed all its attempts (see ``docs/isolation.md``): items
``[lo, hi)`` of the original batch, named by a :class:`PieceId`. A piece descriptor is an ordinary
descriptor (a ``FileBatch`` with those files, a ``TabularBatch`` with those rows) whose ``piece`` records
``(lo, hi, n)``, ``n`` being the original batch's item count. Pieces keep the original ``index``, so
sorting by ``(index, lo)`` gives the original input order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

_json_str = json.encoder.encode_basestring_ascii  # what json.dumps quotes a str with (ensure_ascii)

Span = tuple[int, int, int]  # (lo, hi, n): items lo..hi-1 of an original mini-batch of n items


@dataclass(frozen=True, slots=True)
class FileBatch:
    """A mini-batch of whole files: ``run()`` receives their local paths."""

    index: int
    paths: tuple[str, ...]
    nbytes: int = 0
    piece: Span | None = None  # set on a piece of batch ``index`` (then ``paths`` are the piece's files)

    @property
    def n_items(self) -> int:
        return len(self.paths)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by value: dataclass(slots=True) pickling goes through Python-level __getstate__ and
        # fields(), several times slower, and descriptors cross a pipe for every mini-batch.
        return (FileBatch, (self.index, self.paths, self.nbytes, self.piece))

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

    A piece (``piece`` set) keeps the original batch's byte range or row groups and narrows
    ``row_start``/``row_end`` to its own rows: reading it reads the original slice and keeps those rows.
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
    piece: Span | None = None

    @property
    def n_items(self) -> int:
        return self.row_end - self.row_start

    def describe(self) -> str:
        return f"{self.path} rows {self.row_start}-{self.row_end - 1}"

    def span(self) -> tuple[int, int]:
        """The rows (in the file) of the original batch: what reading the byte range yields."""
        if self.piece is None:
            return self.row_start, self.row_end
        lo, _hi, n = self.piece
        first = self.row_start - lo
        return first, first + n


MiniBatch = FileBatch | TabularBatch


@dataclass(frozen=True, order=True, slots=True)
class PieceId:
    """Items ``[lo, hi)`` of mini-batch ``index``: a piece's identity, stable across runs and resumes.

    Orders as the input does: by batch, then by first item.
    """

    index: int
    lo: int
    hi: int

    @property
    def n_items(self) -> int:
        return self.hi - self.lo

    def halves(self) -> tuple[PieceId, PieceId]:
        """The two halves (the first one is the smaller when the count is odd). Needs 2 items or more."""
        if self.n_items < 2:
            raise ValueError(f"piece {self} has {self.n_items} item(s); only pieces of 2 or more split")
        mid = self.lo + self.n_items // 2
        return PieceId(self.index, self.lo, mid), PieceId(self.index, mid, self.hi)

    def __str__(self) -> str:
        return f"{self.index}[{self.lo}:{self.hi}]"

    @classmethod
    def parse(cls, text: str) -> PieceId:
        """The inverse of ``str()``: ``"12[3:5]"`` -> PieceId(12, 3, 5)."""
        index, _, rest = text.partition("[")
        lo, _, hi = rest.rstrip("]").partition(":")
        return cls(int(index), int(lo), int(hi))


def whole_items(batch: MiniBatch) -> int:
    """The item count of the original batch (of a piece: of the batch it was cut from)."""
    return batch.piece[2] if batch.piece is not None else batch.n_items


def piece_id(batch: MiniBatch) -> PieceId:
    """The identity of a descriptor; a whole batch is the piece ``index[0:n]``."""
    if batch.piece is not None:
        return PieceId(batch.index, batch.piece[0], batch.piece[1])
    return PieceId(batch.index, 0, batch.n_items)


def piece(batch: MiniBatch, pid: PieceId) -> MiniBatch:
    """The descriptor of piece ``pid`` cut from ``batch`` (the original batch or any piece holding it)."""
    own = piece_id(batch)
    if pid.index != own.index or not own.lo <= pid.lo < pid.hi <= own.hi:
        raise ValueError(f"piece {pid} is not inside mini-batch piece {own}")
    span = (pid.lo, pid.hi, whole_items(batch))
    a, b = pid.lo - own.lo, pid.hi - own.lo  # offsets within this descriptor
    if isinstance(batch, FileBatch):
        # nbytes of the whole batch is all planning knew; a piece gets its share by item count.
        nbytes = batch.nbytes * (b - a) // max(batch.n_items, 1)
        return FileBatch(batch.index, batch.paths[a:b], nbytes, span)
    nbytes = batch.nbytes * (b - a) // max(batch.n_items, 1)
    return replace(batch, row_start=batch.row_start + a, row_end=batch.row_start + b, nbytes=nbytes, piece=span)


def split(batch: MiniBatch) -> tuple[MiniBatch, MiniBatch]:
    """The two halves of a batch or piece of 2 items or more, as piece descriptors."""
    first, second = piece_id(batch).halves()
    return piece(batch, first), piece(batch, second)


def to_json(batch: MiniBatch) -> str:
    if isinstance(batch, FileBatch):
        if batch.piece is None and type(batch.index) is int and type(batch.nbytes) is int:
            # The hot path of planning a million files, written out: the same text json.dumps gives (its
            # own string escaper; ints print alike), at a third of the cost of building a dict to dump.
            return (f'{{"index":{batch.index},"paths":[{",".join(map(_json_str, batch.paths))}],'
                    f'"nbytes":{batch.nbytes},"kind":"file"}}')
        # asdict() deep-copies and costs 4x as much as this dict.
        d: dict[str, Any] = {"index": batch.index, "paths": batch.paths, "nbytes": batch.nbytes, "kind": "file"}
        if batch.piece is not None:
            d["piece"] = batch.piece
        return json.dumps(d, separators=(",", ":"))
    d = asdict(batch)
    if d["piece"] is None:
        del d["piece"]  # whole batches keep the JSON they had before pieces existed
    d["kind"] = "tabular"
    return json.dumps(d, separators=(",", ":"))


def from_json(text: str) -> MiniBatch:
    d = json.loads(text)
    kind = d.pop("kind")
    if d.get("piece") is not None:
        d["piece"] = tuple(d["piece"])
    if kind == "file":
        d["paths"] = tuple(d["paths"])
        return FileBatch(**d)
    d["row_groups"] = tuple(d.get("row_groups", ()))
    return TabularBatch(**d)
