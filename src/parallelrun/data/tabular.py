"""Tabular files (CSV, TSV, Parquet, JSON lines) cut into mini-batches, and read back one batch at a time.

``plan_tabular`` only looks at bytes (text formats) or the footer (Parquet) and yields small
``TabularBatch`` descriptors that already know their exact rows; ``read_batch`` turns one descriptor into a
pandas DataFrame whose index gives the rows' positions in the file. A batch never spans two files.

Text files are cut at record boundaries (``text_split.py``). For CSV/TSV that follows the pandas C parser, which is what
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
import threading
import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported where rows are read: planning needs none of it (start-up time)
    import pandas as pd


from parallelrun.config import parse_size as parse_size  # re-exported: the one mini_batch_size parser
from parallelrun.data.batches import TabularBatch
from parallelrun.data.storage import url_to_fs
from parallelrun.data.text_split import plan_text

FORMATS = ("csv", "tsv", "parquet", "jsonl")
_ALIASES = {"json": "jsonl", "jsonlines": "jsonl", "ndjson": "jsonl", "pq": "parquet"}
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet",
               ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zstd", ".zip", ".lz4", ".snappy", ".tgz")
_OPTION_KEYS = ("separator", "header", "encoding", "dtype")
# Big reads keep the per-chunk Python overhead negligible next to the C-speed bytes.find/count scans.


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

    fs, path = _filesystem(batch.path, storage_options)
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
        fs, path = _filesystem(url, storage_options)
        size = os.path.getsize(path) if fs is None else fs.size(path)
        if size == 0:
            continue
        if fmt == "parquet":
            batches = _plan_parquet(fs, path, size_bytes)
            for row_groups, row_start, row_end, nbytes in batches:
                yield TabularBatch(index=index, path=url, format=fmt, row_start=row_start, row_end=row_end,
                                   row_groups=row_groups, nbytes=nbytes, options=opts)
                index += 1
            continue
        with open(path, "rb") if fs is None else fs.open(path, "rb") as f:
            row = 0
            for start, end, header_end, rows in plan_text(f, fmt, size_bytes, opts, size):
                yield TabularBatch(index=index, path=url, format=fmt, row_start=row, row_end=row + rows,
                                   start=start, end=end, header_end=header_end, nbytes=end - start,
                                   options=opts)
                index += 1
                row += rows


def _filesystem(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    """(None, path) for a path on the local disk, read with plain file calls; else (fsspec filesystem, path).

    Importing fsspec costs ~0.1 s of CPU (it scans the installed packages' entry points), on the driver
    before the first worker starts and again in every worker, for nothing on a local file: W3's bare Pool
    reads its CSV with ``open`` too.
    """
    if "://" not in url:
        return None, url
    return url_to_fs(url, storage_options)


def _read_range(fs: Any, path: str, ranges: list[tuple[int, int]]) -> io.BytesIO:
    """The bytes of ``ranges`` (``[start, end)`` pairs of one file) joined, as a file object to parse."""
    if fs is not None:
        # start/end by keyword: some filesystems (s3fs) take another argument in second place.
        return io.BytesIO(b"".join(fs.cat_file(path, start=start, end=end) for start, end in ranges))
    # A local file is read straight into one buffer, this thread's own and reused from batch to batch (when
    # not huge): f.read() and joining the header to the range took two fresh buffers of the batch's size (a
    # page fault per 4 KB) and a copy, ~2 ms of a W3 mini-batch's ~45 ms of reading.
    total = sum(end - start for start, end in ranges)
    buf = getattr(_THREAD, "buffer", None)
    if buf is None or total > _KEEP_BUFFER:
        buf = io.BytesIO()
        if total <= _KEEP_BUFFER:
            _THREAD.buffer = buf
    if buf.seek(0, io.SEEK_END) < total:
        buf.seek(total - 1)
        buf.write(b"\0")  # grows it (write() is the only way to)
    buf.truncate(total)  # not below half its size: then it would be reallocated
    got = 0
    with open(path, "rb", buffering=0) as f, buf.getbuffer() as view:
        for start, end in ranges:
            f.seek(start)
            got += _read_into(f, view[got:got + end - start])
    buf.truncate(got)  # the file is shorter than planned: read_batch will say so
    buf.seek(0)
    return buf


def _read_into(f: Any, view: memoryview) -> int:
    """Fill ``view`` from ``f``; the bytes read (fewer only at the end of the file)."""
    got = 0
    with view:
        while got < len(view):
            with view[got:] as room:  # released at once: an exported buffer cannot be resized
                n = f.readinto(room)
            if not n:
                break
            got += n
    return got


_THREAD = threading.local()
_KEEP_BUFFER = 64 * 1024 * 1024  # a bigger mini-batch gets a buffer of its own, freed after it


def _plan_parquet(fs: Any, path: str, size_bytes: int) -> list[tuple[tuple[int, ...], int, int, int]]:
    """(row_groups, row_start, row_end, nbytes) per batch, from the footer only."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with open(path, "rb") if fs is None else fs.open(path, "rb") as f:
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


def _read_text(fs: Any, path: str, batch: TabularBatch) -> pd.DataFrame:
    import pandas as pd

    opts = batch.options
    encoding = opts.get("encoding", "utf-8")
    dtype = opts.get("dtype")
    if batch.format == "jsonl":
        data = _read_range(fs, path, [(batch.start, batch.end)])
        kwargs: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
        return pd.read_json(data, lines=True, encoding=encoding, **kwargs)
    header = opts.get("header", True)
    if header and batch.start == batch.header_end:
        data = _read_range(fs, path, [(0, batch.end)])  # the first batch follows the header: one read
    elif header:
        data = _read_range(fs, path, [(0, batch.header_end), (batch.start, batch.end)])
    else:
        data = _read_range(fs, path, [(batch.start, batch.end)])
    if not header and isinstance(dtype, dict):
        # Columns are named like Azure's (Column1, ...) only after parsing; pandas wants 0-based positions.
        dtype = {int(k[6:]) - 1 if str(k).startswith("Column") else k: v for k, v in dtype.items()}
    # Rows longer than the header: by default pandas turns the extra leading fields into the index (which we
    # replace with row positions), and with index_col=False it drops the extra fields with a ParserWarning.
    # Either way data would vanish silently, so the warning becomes an error.
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            df = pd.read_csv(data, sep=opts.get("separator", ","), header=0 if header else None,
                             encoding=encoding, dtype=dtype, index_col=False)
        except pd.errors.ParserWarning as e:
            raise ValueError("rows have more fields than the header") from e
    if not header:
        df.columns = [f"Column{i + 1}" for i in range(len(df.columns))]
    return df


def _read_parquet(fs: Any, path: str, batch: TabularBatch) -> pd.DataFrame:
    import pyarrow.parquet as pq

    local = path if fs is None else _local_path(fs, path)
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
