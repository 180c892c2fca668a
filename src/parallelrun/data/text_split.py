"""Text tabular files (CSV, TSV, JSON lines) cut into byte ranges of whole records, with their row counts.

The cut follows the pandas C parser, which is what ``tabular.read_batch`` reads the ranges with (the rules
are in ``tabular``'s docstring). ``plan_text`` runs on the driver at memory speed: quote-free spans are
counted with ``bytes.count`` (or numpy, for big files), and from the first quote on a regex of the CSV
grammar consumes whole records in C.
"""

from __future__ import annotations

import codecs
import re
import sys
from collections.abc import Iterator
from typing import IO, Any

_CHUNK = 8 * 1024 * 1024
_NUMPY_FROM = 256 * 1024 * 1024  # text files from this size are counted with numpy (see _numpy_from)
_NUMPY_SPAN = 64 * 1024  # ... in spans longer than this (shorter ones cost more in numpy's set-up)
_NUMPY_AFTER = 2 * _CHUNK  # ... from this far into the file on (the first chunks do without: see _numpy_from)


def _numpy_from(size: int) -> int | None:
    """Where (a file offset) numpy starts counting the lines of a text file of ``size`` bytes, or None: not
    for this file.

    numpy pays for its import (~0.1 s of CPU; the driver's own start-up needs none of it) on big files:
    counting in numpy takes ~0.15 ms per MB against ~0.7 with ``bytes.count`` and a regex (W3's 910 MB CSV:
    ~0.6 s of driver CPU, beside the workers). Smaller files use it only if it is already loaded. The first
    two chunks are counted without it: the driver plans the first mini-batch before it starts any worker,
    and importing numpy there delayed every worker's start by that ~0.1 s; imported later, it overlaps with
    the workers' own start-up.
    """
    if "numpy" in sys.modules:
        return 0
    if size < _NUMPY_FROM:
        return None
    return _NUMPY_AFTER


def _import_numpy() -> Any:
    try:
        import numpy
    except ImportError:  # pragma: no cover - pandas, a dependency, requires numpy
        return None
    return numpy


def plan_text(f: IO[bytes], fmt: str, size_bytes: int, opts: dict[str, Any],
              file_size: int) -> Iterator[tuple[int, int, int, int]]:
    """(start, end, header_end, rows) per batch of a text file of ``file_size`` bytes."""
    # pandas drops a utf-8 BOM; the scan must not see it (it would hide a quote that opens the first field).
    utf8 = codecs.lookup(opts["encoding"]).name in ("utf-8", "utf-8-sig")
    begin = 3 if utf8 and f.read(3) == codecs.BOM_UTF8 else 0
    has_header = fmt != "jsonl" and opts["header"]
    splitter = _Splitter(size_bytes, first_size=1 if has_header else size_bytes, begin=begin,
                         separator=None if fmt == "jsonl" else opts["separator"].encode("ascii"),
                         numpy_from=_numpy_from(file_size))
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
                 numpy_from: int | None = None) -> None:
        self.size, self.next_size = first_size, size
        self.quoting = separator is not None
        ws = b" \t" if separator is None else b" \t".replace(separator, b"")
        # A line of only spaces/tabs (not the separator) is skipped by pandas, so it is not a record.
        cr = b"\r" if separator is None else b""
        self.blank_re = re.compile(b"(?<=\\n)[" + re.escape(ws + cr) + b"]*\\r?\\n")
        # One regex search for "a newline then \n, \r or a blank": ~10x faster than a bytes.find per pair
        # (two-byte finds do not use memchr), which made planning an 850 MB CSV take seconds.
        self.blank_first = b"\n\r" + ws  # what may follow a newline where a blank line starts
        self.blank_probe = re.compile(b"\n[" + re.escape(self.blank_first) + b"]")
        self.np: Any = None
        self.numpy_from = numpy_from
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
            if self.numpy_from is not None and offset >= self.numpy_from:
                self._use_numpy()
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

    def _use_numpy(self) -> None:
        self.numpy_from = None
        self.np = numpy = _import_numpy()
        if numpy is not None:  # the blank-line probe as a table: which bytes after a newline may start one
            self.blank_start = numpy.zeros(256, dtype=bool)
            self.blank_start[list(self.blank_first)] = True
            self.is_newline = numpy.empty(0, dtype=bool)

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
