"""Tabular files (CSV, TSV, Parquet, JSON lines) cut into mini-batches, and read back one batch at a time.

``plan_tabular`` only looks at bytes (text formats) or the footer (Parquet) and yields small
``TabularBatch`` descriptors that already know their exact rows; ``read_batch`` turns one descriptor into a
pandas DataFrame whose index gives the rows' positions in the file. A batch never spans two files.

Text files are cut at record boundaries. For CSV/TSV that follows the pandas C parser, which is what
``read_batch`` uses: a quote opens a quoted field only at the start of a field, ``""`` inside a quoted
field is an escaped quote, a newline inside a quoted field does not end the record, and lines holding only
spaces/tabs are skipped. Line endings may be ``\\n`` or ``\\r\\n`` (not a bare ``\\r``). Encodings must be
ASCII-compatible (utf-8, latin-1, cp1252, ...) so that separators, quotes and newlines are single bytes.
"""

from __future__ import annotations

import codecs
import io
import math
import os
import posixpath
import re
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported where rows are read: planning needs none of it (start-up time)
    import pandas as pd


from parallelrun.config import parse_size as parse_size  # re-exported: the one mini_batch_size parser
from parallelrun.data.batches import TabularBatch
from parallelrun.data.storage import url_to_fs

FORMATS = ("csv", "tsv", "parquet", "jsonl")
_ALIASES = {"json": "jsonl", "jsonlines": "jsonl", "ndjson": "jsonl", "pq": "parquet"}
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet",
               ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zstd", ".zip", ".lz4", ".snappy", ".tgz")
_OPTION_KEYS = ("separator", "header", "encoding", "dtype")
# Big reads keep the per-chunk Python overhead negligible next to the C-speed bytes.find/count scans.
_CHUNK = 8 * 1024 * 1024
_NUMPY_FROM = 256 * 1024 * 1024  # text files from this size are counted with numpy (see _numpy_for)
_NUMPY_SPAN = 64 * 1024  # ... in spans longer than this (shorter ones cost more in numpy's set-up)


def infer_format(path: str, format: str | None = None) -> str:
    """Return ``csv``, ``tsv``, ``parquet`` or ``jsonl`` from an explicit ``format`` or the file extension.

    ``json``/``jsonlines``/``ndjson`` mean JSON lines (one object per line), not a JSON array.
    Compressed text files are refused: a compressed stream cannot be cut into byte ranges.
    """
    name = posixpath.basename(path.split("?", 1)[0]).lower()
    if name.endswith(_COMPRESSED):
        raise ValueError(f"{path}: compressed files cannot be split into mini-batches; "
                         "decompress it first or convert it to Parquet (which compresses internally)")
    if format is not None:
        fmt = _ALIASES.get(format.strip().lower(), format.strip().lower())
        if fmt not in FORMATS:
            raise ValueError(f"unknown tabular format {format!r}: the `format:` field accepts "
                             f"{', '.join(FORMATS)} (or json/jsonlines/ndjson, pq)")
        return fmt
    fmt = _EXTENSIONS.get(posixpath.splitext(name)[1], "")
    if not fmt:
        raise ValueError(f"cannot tell the format of {path!r} from its extension; set the `format:` field "
                         f"to one of {', '.join(FORMATS)}")
    return fmt


def plan_tabular(paths: Iterable[str], size_bytes: int, *, format: str | None = None,
                 options: dict[str, Any] | None = None, start_index: int = 0,
                 storage_options: dict[str, Any] | None = None) -> Iterator[TabularBatch]:
    """Lazily yield the mini-batches of ``paths`` (in the given order), indexed from ``start_index``.

    Each batch holds about ``size_bytes`` of one file: text formats by byte range ending on a record
    boundary, Parquet by whole row groups (a row group bigger than ``size_bytes`` is split by rows).
    Empty files and header-only CSVs give no batch. ``options`` may hold ``separator``, ``header``
    (default True), ``encoding`` (default utf-8) and ``dtype`` (a type name or {column: type name}, passed
    to pandas so every batch gets the same column types); they apply to text formats only.
    ``storage_options`` maps a protocol to its filesystem's keyword arguments (``{"az": {...}}``), as
    everywhere in parallelrun. Option errors are raised here, at call time; per-file errors (format,
    unreadable file) when iterating.
    """
    if size_bytes <= 0:
        raise ValueError(f"size_bytes must be positive, got {size_bytes}")
    if format is not None:
        infer_format("", format)  # fail fast on a misspelt format
    _check_options(options or {})
    return _plan(paths, size_bytes, format, options or {}, start_index, storage_options or {})


def read_batch(batch: TabularBatch, storage_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """Read exactly the rows of ``batch`` as a DataFrame indexed ``row_start .. row_end - 1`` (file rows).

    ``storage_options`` is keyed by protocol, as for ``plan_tabular``. Raises ValueError naming the file and
    byte range when the slice cannot be parsed or holds a different number of rows than planned (e.g. the
    file changed since planning).
    """
    import pandas as pd

    fs, path = url_to_fs(batch.path, storage_options)
    where = f"{batch.path} bytes {batch.start}-{batch.end}"
    try:
        if batch.format == "parquet":
            where = f"{batch.path} row groups {list(batch.row_groups)}"
            df = _read_parquet(fs, path, batch)
        else:
            df = _read_text(fs, path, batch)
    except ValueError as e:  # pandas/pyarrow parse and decode errors are ValueErrors
        raise ValueError(f"cannot read {where} (rows {batch.row_start}-{batch.row_end - 1}): {e}") from e
    # A text piece (data/batches.py) reads its original batch's byte range, then keeps its own rows.
    first, last = batch.span() if batch.format != "parquet" else (batch.row_start, batch.row_end)
    if len(df) != last - first:
        raise ValueError(f"{where}: parsed {len(df)} rows but {last - first} were planned; "
                         "the file may have changed since the batches were planned")
    if (first, last) != (batch.row_start, batch.row_end):
        df = df.iloc[batch.row_start - first:batch.row_end - first]
    df.index = pd.RangeIndex(batch.row_start, batch.row_end)
    return df


# --- planning -------------------------------------------------------------------------------------------

def _check_options(options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(_OPTION_KEYS))
    if unknown:
        raise ValueError(f"unknown tabular option(s) {unknown}: supported are {', '.join(_OPTION_KEYS)}")
    sep = options.get("separator")
    single = isinstance(sep, str) and len(sep) == 1 and sep.isascii() and sep not in "\"\r\n"
    if sep is not None and not single:
        raise ValueError(f"separator must be one ASCII character other than a quote or newline, got {sep!r}")
    if not isinstance(options.get("header", True), bool):
        raise ValueError(f"header must be true or false, got {options['header']!r}")
    encoding = options.get("encoding", "utf-8")
    try:
        probe = f"\n\r\"{sep or ','}\t ".encode(encoding)
    except (LookupError, UnicodeEncodeError, TypeError) as e:
        raise ValueError(f"unsupported encoding {encoding!r}: {e}") from e
    expected = f"\n\r\"{sep or ','}\t ".encode("ascii", errors="replace")
    # Byte-range splitting needs newline/quote/separator to be the same single bytes as in ASCII; utf-16
    # and friends are not (utf-8-sig only adds a BOM, which the planner skips).
    if probe.removeprefix(codecs.BOM_UTF8) != expected:
        raise ValueError(f"encoding {encoding!r} is not ASCII-compatible; re-encode the file as utf-8")
    dtype = options.get("dtype")
    if dtype is not None and not isinstance(dtype, str | dict):
        raise ValueError(f"dtype must be a type name such as 'str' or a {{column: type}} map, got {dtype!r}")


def _batch_options(fmt: str, options: dict[str, Any]) -> dict[str, Any]:
    if fmt == "parquet":
        return {}  # Parquet carries its own schema and encoding
    out: dict[str, Any] = {"encoding": options.get("encoding", "utf-8")}
    if fmt != "jsonl":
        out["separator"] = options.get("separator", "\t" if fmt == "tsv" else ",")
        out["header"] = options.get("header", True)
    if options.get("dtype") is not None:
        out["dtype"] = options["dtype"]
    return out


def _plan(paths: Iterable[str], size_bytes: int, format: str | None, options: dict[str, Any],
          index: int, storage_options: dict[str, Any]) -> Iterator[TabularBatch]:
    for url in paths:
        fmt = infer_format(url, format)
        opts = _batch_options(fmt, options)
        fs, path = url_to_fs(url, storage_options)
        size = fs.size(path)
        if size == 0:
            continue
        if fmt == "parquet":
            batches = _plan_parquet(fs, path, size_bytes)
            for row_groups, row_start, row_end, nbytes in batches:
                yield TabularBatch(index=index, path=url, format=fmt, row_start=row_start, row_end=row_end,
                                   row_groups=row_groups, nbytes=nbytes, options=opts)
                index += 1
            continue
        numpy = _numpy_for(size)
        with fs.open(path, "rb") as f:
            row = 0
            for start, end, header_end, rows in _plan_text(f, fmt, size_bytes, opts, numpy):
                yield TabularBatch(index=index, path=url, format=fmt, row_start=row, row_end=row + rows,
                                   start=start, end=end, header_end=header_end, nbytes=end - start,
                                   options=opts)
                index += 1
                row += rows


def _plan_parquet(fs: Any, path: str, size_bytes: int) -> list[tuple[tuple[int, ...], int, int, int]]:
    """(row_groups, row_start, row_end, nbytes) per batch, from the footer only."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as f:
            meta = pq.ParquetFile(f).metadata
    except pa.ArrowException as e:
        raise ValueError(f"{path}: not a readable Parquet file: {e}") from e
    out: list[tuple[tuple[int, ...], int, int, int]] = []
    group: list[int] = []
    group_start = group_rows = group_bytes = 0
    first_row = 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        n, nbytes = rg.num_rows, rg.total_byte_size
        if not n:
            continue
        if group and group_bytes + nbytes > size_bytes:
            out.append((tuple(group), group_start, group_start + group_rows, group_bytes))
            group, group_rows, group_bytes = [], 0, 0
        if nbytes > size_bytes:
            # Too big for one batch: cut by rows, assuming rows of similar size. The reader still decodes
            # the whole row group for each part; Parquet offers no finer random access.
            parts = min(n, math.ceil(nbytes / size_bytes))
            for i in range(parts):
                lo, hi = first_row + n * i // parts, first_row + n * (i + 1) // parts
                out.append(((g,), lo, hi, nbytes * (hi - lo) // n))
        else:
            if not group:
                group_start = first_row
            group.append(g)
            group_rows += n
            group_bytes += nbytes
        first_row += n
    if group:
        out.append((tuple(group), group_start, group_start + group_rows, group_bytes))
    return out


def _numpy_for(size: int) -> Any:
    """numpy, to count the lines of a text file of ``size`` bytes, when that pays for importing it (~0.1 s of
    CPU, the driver's own start-up needs none of it): counting in numpy takes ~0.15 ms per MB against ~0.7
    with ``bytes.count`` and a regex (W3's 910 MB CSV: ~0.6 s of driver CPU, beside the workers). None for
    smaller files, unless numpy is already loaded."""
    if size < _NUMPY_FROM and "numpy" not in sys.modules:
        return None
    try:
        import numpy
    except ImportError:  # pragma: no cover - pandas, a dependency, requires numpy
        return None
    return numpy


def _plan_text(f: IO[bytes], fmt: str, size_bytes: int, opts: dict[str, Any],
               numpy: Any = None) -> Iterator[tuple[int, int, int, int]]:
    """(start, end, header_end, rows) per batch of a text file."""
    # pandas drops a utf-8 BOM; the scan must not see it (it would hide a quote that opens the first field).
    utf8 = codecs.lookup(opts["encoding"]).name in ("utf-8", "utf-8-sig")
    begin = 3 if utf8 and f.read(3) == codecs.BOM_UTF8 else 0
    has_header = fmt != "jsonl" and opts["header"]
    splitter = _Splitter(size_bytes, first_size=1 if has_header else size_bytes, begin=begin,
                         separator=None if fmt == "jsonl" else opts["separator"].encode("ascii"), numpy=numpy)
    header_end = 0
    for start, end, rows in splitter.run(f):
        if has_header and not header_end:
            header_end = end  # the first record (rows == 1) is the header: excluded from every range
            continue
        yield start, end, header_end, rows


def _record_regexes(separator: bytes, ws: bytes) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    """(one record, a run of records) of the pandas C parser's CSV grammar, matched from a record start.

    A record is a blank line (only ``ws``), or fields joined by the separator and ended by a newline. A
    field is quoted (``""`` escapes; the closing quote is one not followed by another; text after it up to
    the separator is kept literally), unquoted (not starting with a quote; later quotes are literal), or
    empty. The grammar is unambiguous, so backtracking can never yield a second parse. Group 1 is the
    record when it is not blank. A quoted field that is not closed before ``endpos`` fails the record.
    """
    s = re.escape(separator)
    field = b'(?:"[^"]*(?:""[^"]*)*"(?!")[^%s\\n]*|[^"%s\\n][^%s\\n]*|)' % (s, s, s)
    fields = b"%s(?:%s%s)*\\n" % (field, s, field)
    blank = b"[%s]*\\r?\\n" % re.escape(ws) if ws else b"\\r?\\n"
    return re.compile(b"%s|(%s)" % (blank, fields)), re.compile(b"(?:%s|%s)*" % (blank, fields))


class _Splitter:
    """Cuts a text file into (start, end, rows) ranges of about ``size`` bytes, on record boundaries.

    The file is read in big chunks. Quote-free data (and JSON lines, where a newline inside a string is
    escaped) is split with ``bytes.find``/``bytes.count``. From the first quote on, a regex of the CSV
    grammar consumes whole records in C; a record still open at the chunk's end is carried into the next
    chunk and parsed again from its start, so no parser state crosses chunks.
    """

    def __init__(self, size: int, *, first_size: int, begin: int, separator: bytes | None,
                 numpy: Any = None) -> None:
        self.size, self.next_size = first_size, size
        self.quoting = separator is not None
        ws = b" \t" if separator is None else b" \t".replace(separator, b"")
        # A line of only spaces/tabs (not the separator) is skipped by pandas, so it is not a record.
        cr = b"\r" if separator is None else b""
        self.blank_re = re.compile(b"(?<=\\n)[" + re.escape(ws + cr) + b"]*\\r?\\n")
        # One regex search for "a newline then \n, \r or a blank": ~10x faster than a bytes.find per pair
        # (two-byte finds do not use memchr), which made planning an 850 MB CSV take seconds.
        self.blank_probe = re.compile(b"\n[" + re.escape(b"\n\r" + ws) + b"]")
        self.np = numpy
        if numpy is not None:  # the same probe as a table: which bytes after a newline may start a blank line
            self.blank_start = numpy.zeros(256, dtype=bool)
            self.blank_start[list(b"\n\r" + ws)] = True
            self.is_newline = numpy.empty(0, dtype=bool)
        self.ws = ws + b"\r"
        if separator is not None:
            self.record_re, self.run_re = _record_regexes(separator, ws)
        self.begin = self.batch_start = begin
        self.target = begin + first_size - 1  # the first terminator at or past this ends the batch
        self.rows = 0
        self.out: list[tuple[int, int, int]] = []

    def run(self, f: IO[bytes]) -> Iterator[tuple[int, int, int]]:
        f.seek(self.begin)
        carry, offset = b"", self.begin  # carry: the incomplete record at the end of the last chunk
        readinto = getattr(f, "readinto", None)
        buf = bytearray()
        while True:
            # Reading at least as much as is carried makes a record longer than a chunk cost O(its size)
            # in rescans overall rather than O(size**2 / chunk).
            size = max(_CHUNK, len(carry))
            # buf[0] is a virtual newline: buf[1] always starts a record (or the file). buf[total:] is stale.
            if readinto is not None:
                # Straight into the buffer after the carried bytes (b"\n" + carry + chunk copied every chunk
                # twice more into fresh pages, which was half the time of planning a big CSV), and into the
                # same buffer every time: fresh pages cost a page fault each (~0.2 s of system time for 1 GB).
                if len(buf) < 1 + len(carry) + size:
                    buf = bytearray(1 + len(carry) + size)
                buf[0] = 0x0A
                buf[1:1 + len(carry)] = carry
                with memoryview(buf) as view, view[1 + len(carry):1 + len(carry) + size] as room:
                    n = readinto(room) or 0
                total = 1 + len(carry) + n
                more = n > 0
            else:
                chunk = f.read(size)
                buf, more = bytearray(b"\n" + carry + chunk), bool(chunk)
                total = len(buf)
            base = offset - 1
            cut = total if not more else buf.rfind(b"\n", 0, total) + 1
            stop = self._scan(buf, cut, base)
            if not more:
                self._finish(bytes(buf[stop:total]), base + total)
                yield from self.out
                return
            yield from self.out
            self.out.clear()
            carry, offset = bytes(buf[stop:total]), base + stop

    def _scan(self, buf: bytes | bytearray, cut: int, base: int) -> int:
        """Count and cut the complete records in ``buf[1:cut]``; return where the first incomplete one
        starts. ``base`` is the file position of ``buf[0]``."""
        q = buf.find(b'"', 1, cut) if self.quoting else -1
        if q < 0:  # every newline ends a record
            self._records(buf, 1, cut, base)
            return buf.rfind(b"\n", 0, cut) + 1
        line = buf.rfind(b"\n", 0, q) + 1
        self._records(buf, 1, line, base)  # whole lines before the first quote
        return self._whole_records(buf, line, cut, base)

    def _records(self, buf: bytes | bytearray, a: int, b: int, base: int) -> None:
        """Count the records of quote-free ``buf[a:b]`` (a at a line start) and cut batches there."""
        while True:
            n = buf.find(b"\n", max(a, self.target - base), b)
            if n < 0:
                break
            self._count(buf, a, n + 1)
            self._emit(base + n + 1)
            a = n + 1
        if a < b:
            self._count(buf, a, b)

    def _count(self, buf: bytes | bytearray, a: int, b: int) -> None:
        if self.np is not None and b - a > _NUMPY_SPAN:
            # The newlines of buf[a-1:b]; a blank line may start after one that is not buf's last byte.
            view = self.np.frombuffer(buf, dtype=self.np.uint8)
            if len(self.is_newline) < b - a + 1:  # reused: a fresh 8 MB array costs a page fault per 4 KB
                self.is_newline = self.np.empty(b - a + 1, dtype=bool)
            is_newline = self.np.equal(view[a - 1:b], 0x0A, out=self.is_newline[:b - a + 1])
            at = self.np.flatnonzero(is_newline)
            newlines = len(at) - (buf[a - 1] == 0x0A)
            probe = bool(self.blank_start[view[at[at < b - a] + a]].any())
        else:
            newlines = buf.count(b"\n", a, b)
            probe = newlines > 0 and self.blank_probe.search(buf, a - 1, b) is not None
        # Cheap checks first: the regex only runs where a blank line is possible.
        if newlines and probe:
            newlines -= len(self.blank_re.findall(buf, a, b))
        self.rows += newlines

    def _whole_records(self, buf: bytes | bytearray, pos: int, cut: int, base: int) -> int:
        """Consume the complete records from the record start ``pos``; return where the first incomplete
        one starts (a quoted field still open at ``cut``, or the last line of the file)."""
        while True:
            t = self.target - base  # a record whose newline is at index >= t ends the batch
            if t >= cut:
                end = self.run_re.match(buf, pos, cut).end()  # type: ignore[union-attr]
                self._count_records(buf, pos, end)
                return end
            # endpos=t: the run stops before the record that crosses t, which is matched on its own.
            e = self.run_re.match(buf, pos, max(pos, t)).end()  # type: ignore[union-attr]
            m = self.record_re.match(buf, e, cut)
            if m is None:
                self._count_records(buf, pos, e)
                return e
            self._count_records(buf, pos, m.end())
            self._emit(base + m.end())
            pos = m.end()

    def _count_records(self, buf: bytes | bytearray, a: int, b: int) -> None:
        if b > a:
            records = self.record_re.findall(buf, a, b)  # b"" for a blank line (group 1 unmatched)
            self.rows += len(records) - records.count(b"")

    def _emit(self, end: int) -> None:
        # A range of only blank lines is no batch; it stays at the front of the next one, so ranges tile.
        if self.rows:
            self.out.append((self.batch_start, end, self.rows))
            self.size = self.next_size
            self.batch_start, self.rows = end, 0
        self.target = end + self.size - 1

    def _finish(self, tail: bytes, end: int) -> None:
        """At end of file: an unterminated last record still counts unless it is blank."""
        if tail.strip(self.ws):
            self.rows += 1
        self._emit(end)


# --- reading --------------------------------------------------------------------------------------------

def _read_text(fs: Any, path: str, batch: TabularBatch) -> pd.DataFrame:
    import pandas as pd

    opts = batch.options
    encoding = opts.get("encoding", "utf-8")
    dtype = opts.get("dtype")
    # start/end by keyword: some filesystems (s3fs) take another argument in second place.
    if batch.format == "jsonl":
        data = fs.cat_file(path, start=batch.start, end=batch.end)
        kwargs: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
        return pd.read_json(io.BytesIO(data), lines=True, encoding=encoding, **kwargs)
    header = opts.get("header", True)
    if header and batch.start == batch.header_end:
        data = fs.cat_file(path, start=0, end=batch.end)  # the first batch follows the header: one read
    elif header:
        data = (fs.cat_file(path, start=0, end=batch.header_end)
                + fs.cat_file(path, start=batch.start, end=batch.end))
    else:
        data = fs.cat_file(path, start=batch.start, end=batch.end)
    if not header and isinstance(dtype, dict):
        # Columns are named like Azure's (Column1, ...) only after parsing; pandas wants 0-based positions.
        dtype = {int(k[6:]) - 1 if str(k).startswith("Column") else k: v for k, v in dtype.items()}
    # Rows longer than the header: by default pandas turns the extra leading fields into the index (which we
    # replace with row positions), and with index_col=False it drops the extra fields with a ParserWarning.
    # Either way data would vanish silently, so the warning becomes an error.
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            df = pd.read_csv(io.BytesIO(data), sep=opts.get("separator", ","), header=0 if header else None,
                             encoding=encoding, dtype=dtype, index_col=False)
        except pd.errors.ParserWarning as e:
            raise ValueError("rows have more fields than the header") from e
    if not header:
        df.columns = [f"Column{i + 1}" for i in range(len(df.columns))]
    return df


def _read_parquet(fs: Any, path: str, batch: TabularBatch) -> pd.DataFrame:
    import pyarrow.parquet as pq

    local = _local_path(fs, path)
    if local is not None:
        # pyarrow's own reader on the path, not through fsspec's Python file object, and the footer parsed
        # once per file and worker: W3's 122 mini-batches each re-parsed a footer of 122 row groups x 65
        # columns (~8 ms) and read through Python (~5 ms more).
        pf = pq.ParquetFile(local, metadata=_footer(local))
        table = _row_groups(pf, batch)
    else:
        with fs.open(path, "rb") as f:
            table = _row_groups(pq.ParquetFile(f), batch)
    return table.to_pandas()


def _row_groups(pf: Any, batch: TabularBatch) -> Any:
    meta = pf.metadata
    first_row = sum(meta.row_group(g).num_rows for g in range(batch.row_groups[0]))
    # One thread: a worker shares the machine with one worker per core; pyarrow's thread pool only adds
    # CPU time (~20% on W3) there.
    table = pf.read_row_groups(list(batch.row_groups), use_threads=False)
    # Whole groups slice to themselves; a part of a split group keeps only its rows.
    return table.slice(batch.row_start - first_row, batch.n_items)


def _local_path(fs: Any, path: str) -> str | None:
    """``path`` when ``fs`` is the local disk (pyarrow can read it natively), else None."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else None


_FOOTERS: dict[tuple[str, int, int], Any] = {}


def _footer(path: str) -> Any:
    """The Parquet footer of a local file, parsed once per version of the file (size, mtime) in this process."""
    import pyarrow.parquet as pq

    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    meta = _FOOTERS.get(key)
    if meta is None:
        _FOOTERS.clear()  # one file at a time: batches come in file order
        meta = _FOOTERS[key] = pq.read_metadata(path)
    return meta
