"""A part's footer scan, done by the worker that wrote the part and stored inside the part itself.

The one-file assembly needs of every part's footer where its absolute offsets lie (``_parquet_scan``).
Scanning a 256-column footer costs 4-13 ms of pure Python; done at the end of the run for every part (105
on W7) it was most of the in-place assembly's time, on one CPU while the workers were already done. The
worker that writes a part to the host's shared file (``_writer``) scans the footer it has just encoded,
while the other workers still use the other CPUs, and stores the result in the part, between its column
chunks and its footer::

    PAR1, column chunks, INDEX, len(INDEX) (4 bytes LE), b"PRX1", footer, len(footer) (4 bytes LE), PAR1

A Parquet reader finds every column chunk by the footer's offsets, so the part is still a valid Parquet
file (pyarrow reads it as before), and the index lies inside the bytes the part's record covers: its
checksum, which the assembly checks for every part, covers the index too. The index is also checked on its
own before use: it names the CRC-32 of the footer it was made from and carries a CRC-32 of itself; an
index that does not match (or a part without one: written by an older version, or not in a shared file)
makes the assembly scan the footer, as before. Nothing is held in memory between the commit and the
assembly, and a resumed driver finds every index in the parts themselves.

INDEX (little-endian): ``u32`` CRC-32 of what follows; ``u32`` CRC-32 of the footer; ``u32`` footer length;
``u32 u32`` start and end of the schema field's value and ``u32 u32`` of the key-value metadata's (0, 0:
absent); ``i64`` rows; ``u32`` row groups; per row group ``u32 u32 u32`` start, end and slot count, then
per slot ``u32 u8 u8 u8``: where the offset's (or ordinal's) value starts, its length, the kind, and how
far before the value its field header starts. ~7 bytes an offset: ~5 KB for a 256-column row group.
"""

from __future__ import annotations

import struct
import zlib

from ._parquet_footer import FMD_KEY_VALUE, FMD_SCHEMA, FooterError, read_varint
from ._parquet_scan import FooterScan, RowGroupSpan, scan

TAG = b"PRX1"
_HEAD = struct.Struct("<IIIIIIIqI")  # crc of the rest, footer crc, footer length, 4 span ends, rows, groups
_GROUP = struct.Struct("<III")
_SLOT = struct.Struct("<IBBB")
#: a part whose footer is at least this long gets no index (its positions would not fit a u32)
_MAX_FOOTER = 2**32 - 1


def index_pieces(part: bytes) -> list[bytes | memoryview] | None:
    """``part`` (a whole Parquet file) cut in the pieces to write, the index inserted before the footer;
    None when the part gets no index (its footer forbids moving the part as bytes, or it is malformed)."""
    if len(part) < 12 or part[-4:] != b"PAR1":
        return None
    n = int.from_bytes(part[-8:-4], "little")
    if n > len(part) - 12 or n >= _MAX_FOOTER:
        return None
    cut = len(part) - 8 - n
    footer = part[cut:len(part) - 8]
    try:
        sc = scan(footer)
    except FooterError:
        return None
    if sc.why:
        return None
    blob = _pack(sc)
    view = memoryview(part)
    return [view[:cut], blob, len(blob).to_bytes(4, "little"), TAG, view[cut:]]


def _span(sc: FooterScan, fid: int) -> tuple[int, int]:
    value = sc.spans.get(fid)
    if value is None:
        return 0, 0
    start = sc.data.find(value)  # only the bytes matter: any place holding them gives the same slice
    return start, start + len(value)


def _pack(sc: FooterScan) -> bytes:
    out = bytearray()
    for rg in sc.row_groups:
        out += _GROUP.pack(rg.start, rg.end, len(rg.slots))
        for kind, head, s, e, _ in rg.slots:
            out += _SLOT.pack(s, e - s, kind, s - head)
    schema, kv = _span(sc, FMD_SCHEMA), _span(sc, FMD_KEY_VALUE)
    rest = _HEAD.pack(0, zlib.crc32(sc.data), len(sc.data), *schema, *kv, sc.num_rows, len(sc.row_groups))[4:]
    body = rest + bytes(out)
    return zlib.crc32(body).to_bytes(4, "little") + body


def scan_from_index(footer: bytes, blob: bytes) -> FooterScan | None:
    """The footer's scan as ``index_pieces`` stored it, or None when ``blob`` is not the index of this very
    footer (damaged, or made from other bytes): the caller then scans the footer itself."""
    if len(blob) < _HEAD.size or zlib.crc32(blob[4:]) != int.from_bytes(blob[:4], "little"):
        return None
    _, fcrc, flen, s0, s1, k0, k1, rows, n = _HEAD.unpack_from(blob)
    if flen != len(footer) or fcrc != zlib.crc32(footer):
        return None
    spans = {}
    if s1:
        spans[FMD_SCHEMA] = footer[s0:s1]
    if k1:
        spans[FMD_KEY_VALUE] = footer[k0:k1]
    groups: list[RowGroupSpan] = []
    pos = _HEAD.size
    try:
        for _ in range(n):
            start, end, count = _GROUP.unpack_from(blob, pos)
            pos += _GROUP.size
            slots = []
            for s, length, kind, back in _SLOT.iter_unpack(blob[pos:pos + count * _SLOT.size]):
                v, e = read_varint(footer, s)
                if e != s + length:
                    return None
                slots.append((kind, s - back, s, e, (v >> 1) ^ -(v & 1)))
            if len(slots) != count:
                return None
            pos += count * _SLOT.size
            groups.append(RowGroupSpan(footer, start, end, slots))
    except (struct.error, IndexError, FooterError):
        return None
    if pos != len(blob):
        return None
    return FooterScan(footer, spans, rows, groups, None)
