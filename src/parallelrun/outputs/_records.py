"""Part records and names: what a worker reports for a batch instead of its bytes.

A part is a byte range ``(name, offset, length)`` inside the output location holding one attempt's rows
of one mini-batch. ``name`` is relative to the output location, always under ``.parts/``:

- ``.parts/seg-<worker>-<seq:05d>.<ext>``: a worker's segment file, to which it appends the batches it
  runs (local disk, one-file layout, text/csv/jsonl: no file per tiny mini-batch);
- ``.parts/part-<batch:08d>.a<attempt>.<ext>``: one attempt of one batch as a whole file (the dataset
  layout, and object stores, where an object is written whole and cannot be appended to); a CSV part of a
  one-file output also names its header line's length, ``part-<batch>.a<attempt>.h<n>.csv``;
- ``.parts/shared-<host>.parquet``: local disk, one-file layout, Parquet: every worker of a host appends
  each attempt's whole Parquet file to this one file, which the assembly turns into the output in place
  (``_parquet_inplace``).

Only parts whose record the journal committed count; everything else under ``.parts/`` is removed by
``OutputLocation.cleanup``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import xxhash

from ..errors import OutputError

PARTS_DIR = ".parts"
MANIFEST = "_manifest.json"
Layout = Literal["file", "dataset"]
LAYOUTS: tuple[str, ...] = ("file", "dataset")
EXTENSIONS = {"text": "txt", "csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}
DEFAULT_STEM = "parallel_run_step"
_json_str = json.encoder.encode_basestring_ascii  # how json.dumps quotes a str (ensure_ascii)


def default_file_name(fmt: str) -> str:
    """The output file's name when ``append_row_file_name`` is not given: the extension fits the format."""
    return f"{DEFAULT_STEM}.{EXTENSIONS[fmt]}"


class PartHash:
    """The running checksum of a part's bytes, written ``"<algorithm>:<hex>"`` in its record.

    XXH3-64 (xxhash): every output byte is hashed twice, by the worker that writes it and by the assembly
    that checks it, and XXH3 runs ~5x faster than zlib's CRC-32 (5.8 against 1.1 GB/s measured here), for
    the same purpose: catching a part truncated or overwritten since its worker wrote it. ``like``: the
    record to check, whose algorithm is used (records of older versions say ``crc32:``).
    """

    __slots__ = ("_crc", "_xxh")

    def __init__(self, like: str = "") -> None:
        self._crc = 0
        self._xxh = None if like.startswith("crc32:") else xxhash.xxh3_64()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._xxh is not None:
            self._xxh.update(data)
        else:
            self._crc = zlib.crc32(data, self._crc)

    def text(self) -> str:
        return f"xxh3:{self._xxh.intdigest():016x}" if self._xxh is not None else f"crc32:{self._crc:08x}"


def checksum_of(data: bytes | bytearray | memoryview, like: str = "") -> str:
    """The checksum text of ``data`` (as :class:`PartHash` gives it)."""
    if not like.startswith("crc32:"):
        return f"xxh3:{xxhash.xxh3_64_intdigest(data):016x}"
    return f"crc32:{zlib.crc32(data):08x}"


# slots: a run of a million batches holds a million of them. Not frozen (nothing changes one after it is
# made): a frozen dataclass's __init__ costs ~1.5 us more, and a record is built in the worker, in the
# driver, and at each pass of the assembly, for every mini-batch.
@dataclass(slots=True)
class PartRecord:
    """Where one committed attempt of one mini-batch lies. Small, JSON-able, stored by the journal."""

    batch: int
    name: str  # relative to the output location
    offset: int
    length: int
    rows: int
    checksum: str  # "xxh3:<hex>" (or an older version's "crc32:<hex>") of the ``length`` bytes at ``offset``

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by value: one travels with every mini-batch's outcome (pipe and outcome log).
        return (PartRecord, (self.batch, self.name, self.offset, self.length, self.rows, self.checksum))

    def to_json(self) -> str:
        if all(type(v) is int for v in (self.batch, self.offset, self.length, self.rows)):
            # Written out (the assembly hashes every record's text, twice): the text json.dumps gives, with
            # its own string escaper, at a third of the cost.
            return (f'{{"batch":{self.batch},"name":{_json_str(self.name)},"offset":{self.offset},'
                    f'"length":{self.length},"rows":{self.rows},"checksum":{_json_str(self.checksum)}}}')
        # A plain dict, not dataclasses.asdict (its deep copy made this 10x slower: 20,000 calls cost
        # 0.5 s at the assembly of a 10,000-batch job).
        return json.dumps({"batch": self.batch, "name": self.name, "offset": self.offset, "length": self.length,
                           "rows": self.rows, "checksum": self.checksum}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes | dict[str, Any]) -> PartRecord:
        d = text if isinstance(text, dict) else json.loads(text)
        return cls(batch=int(d["batch"]), name=str(d["name"]), offset=int(d["offset"]),
                   length=int(d["length"]), rows=int(d["rows"]), checksum=str(d["checksum"]))


def part_name(batch: int, attempt: int, fmt: str, header: int | None = None) -> str:
    """``header``: the length of a CSV part's header line, carried in its name (``.h<length>``) so that the
    one-file assembly on S3 can skip it by byte range, without reading the part."""
    tag = "" if header is None else f".h{header}"
    return f"{PARTS_DIR}/part-{batch:08d}.a{attempt}{tag}.{EXTENSIONS[fmt]}"


_HEADER_TAG = re.compile(r"\.a\d+\.h(\d+)\.[a-z]+$")


def header_length(name: str) -> int | None:
    """The header length a part's name carries (see ``part_name``), or None (not recorded: read the part)."""
    m = _HEADER_TAG.search(name)
    return int(m.group(1)) if m else None


def segment_name(worker: str, seq: int, fmt: str) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in worker)
    return f"{PARTS_DIR}/seg-{safe}-{seq:05d}.{EXTENSIONS[fmt]}"


SHARED_PREFIX = f"{PARTS_DIR}/shared-"


def shared_name(host: str, fmt: str) -> str:
    """The file the workers of ``host`` append their Parquet parts to (local disk, one-file layout)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in host)
    return f"{SHARED_PREFIX}{safe}.{EXTENSIONS[fmt]}"


def is_shared(name: str) -> bool:
    return name.startswith(SHARED_PREFIX)


def dataset_name(batch: int, fmt: str, piece: int | None = None) -> str:
    """A committed part's name in the dataset layout (deterministic, sorts in batch order). A batch split
    to isolate failures (docs/isolation.md) has one part per succeeded piece: ``piece`` numbers them in
    input order (``part-<batch>.p00000.<ext>``, ...), which still sorts in input order."""
    if piece is not None:
        return f"part-{batch:08d}.p{piece:05d}.{EXTENSIONS[fmt]}"
    return f"part-{batch:08d}.{EXTENSIONS[fmt]}"


class PartCorruptedError(OutputError):
    """A committed part is missing or its bytes changed since it was written (checksum mismatch)."""

    def __init__(self, rec: PartRecord, what: str) -> None:
        self.record = rec
        super().__init__(
            f"the committed output of mini-batch {rec.batch} ({rec.name}, {rec.length} bytes at offset "
            f"{rec.offset}) {what}; something outside parallelrun changed the output folder while the job "
            f"ran. Run the job again into a fresh output location.")


class Records:
    """The committed records in batch order, empty ones (batches that wrote no rows) left out, read afresh
    for each pass: the assembly of a million-batch job does not hold a million records at once.

    ``source``: a function returning a new iterator at each call (``Journal.iter_parts``, which pages
    through the journal), or records already in a list. ``name_counts``: a function giving what
    :meth:`name_counts` returns without a pass over the records (``Journal.part_name_counts``).
    """

    def __init__(self, source: Iterable[PartRecord] | Callable[[], Iterable[PartRecord]],
                 name_counts: Callable[[], dict[str, int]] | None = None) -> None:
        if callable(source):
            self._open: Callable[[], Iterable[PartRecord]] = source
        else:
            held = source if isinstance(source, (list, tuple)) else list(source)
            self._open = lambda: held
        self._name_counts = name_counts
        self._len: int | None = None

    def __iter__(self) -> Iterator[PartRecord]:
        return (r for r in self._open() if r.length > 0)

    def __len__(self) -> int:
        if self._len is None:
            self._len = sum(1 for _ in self)
        return self._len

    def name_counts(self) -> dict[str, int]:
        """How many records each part holds."""
        if self._name_counts is not None:
            counts = self._name_counts()
        else:
            counts = {}
            for r in self:
                counts[r.name] = counts.get(r.name, 0) + 1
        self._len = sum(counts.values())
        return counts

    def first(self) -> PartRecord | None:
        return next(iter(self), None)

    def prefix(self, n: int) -> Iterator[PartRecord]:
        return islice(self, n)

    def names(self) -> Iterator[str]:
        """Each part's name, once for each run of records in the same part (a segment's records may recur
        later: callers that must not see a name twice dedupe, as removal does not need to)."""
        last = None
        for r in self:
            if r.name != last:
                yield r.name
                last = r.name


def digest_key(r: PartRecord) -> bytes:
    """What ``records_digest`` hashes of one record: every field, one line (a tenth of ``to_json``'s cost)."""
    return f"{r.batch}\x1f{r.name}\x1f{r.offset}\x1f{r.length}\x1f{r.rows}\x1f{r.checksum}\n".encode()


def records_digest(records: Iterable[PartRecord]) -> str:
    """A fingerprint of the records (which parts, in which order): a saved assembly state is only resumed
    for the very records it was started with. A running ``hashlib.sha256`` fed ``digest_key`` of each
    record in turn gives the same value."""
    h = hashlib.sha256()
    for r in records:
        h.update(digest_key(r))
    return h.hexdigest()


def load_state(path: Path) -> dict[str, Any] | None:
    """An assembly's saved progress (JSON), or None when there is none or it is unreadable."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Replace the saved progress atomically (a kill leaves the old state or the new one, never half)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def abandon_partial(tmp: Path, saved_size: int, *state_files: Path) -> None:
    """An assembly interrupted by an error. Nothing consumed yet (``saved_size`` 0): the file is only a
    temporary, removed with its state files. Parts consumed: the file holds their rows (they are gone), so
    it stays, cut back to the length the saved state vouches for; the next assembly continues it."""
    if not saved_size:
        tmp.unlink(missing_ok=True)
        for f in state_files:
            f.unlink(missing_ok=True)
        return
    try:
        os.truncate(tmp, saved_size)
    except OSError:
        pass
