"""A Parquet footer as a tree: a schema-free reader and writer of Thrift's compact protocol.

A Parquet file ends with its ``FileMetaData`` (Thrift compact protocol), then the footer's length (4 bytes,
little-endian) and ``PAR1``. To concatenate parts without re-encoding them, the assembly must rewrite that
footer with shifted offsets; pyarrow cannot write one, so this module reads any compact-protocol struct
into plain values and writes it back, byte for byte the same when nothing changed (tested on footers that
pyarrow writes).

The tree: a struct is a ``dict`` from field id to ``(type, value)``, in the order read; a list or set is a
:class:`TList` (element type and items); a map is a :class:`TMap`. Integers are ``int`` whatever their
width (the type code keeps the width), binaries ``bytes``, booleans ``bool``. Only the field ids this
project needs are named here (``FMD_*``, ``RG_*``, ``CC_*``, ``CMD_*``, from ``parquet.thrift``).
"""

from __future__ import annotations

import struct as _struct
from dataclasses import dataclass, field
from typing import Any

# Compact-protocol type codes.
STOP, TRUE, FALSE, I8, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)
_INTS = (I8, I16, I32, I64)

# parquet.thrift field ids used by the assembly.
FMD_SCHEMA, FMD_NUM_ROWS, FMD_ROW_GROUPS, FMD_KEY_VALUE = 2, 3, 4, 5
FMD_ENCRYPTION, FMD_SIGNING_KEY = 8, 9
RG_COLUMNS, RG_NUM_ROWS, RG_FILE_OFFSET, RG_ORDINAL = 1, 3, 5, 7
CC_FILE_PATH, CC_FILE_OFFSET, CC_META = 1, 2, 3
CC_OFFSET_INDEX, CC_COLUMN_INDEX, CC_CRYPTO, CC_ENCRYPTED_META = 4, 6, 8, 9
CMD_DATA_PAGE, CMD_INDEX_PAGE, CMD_DICTIONARY_PAGE, CMD_BLOOM_FILTER = 9, 10, 11, 14

Struct = dict[int, tuple[int, Any]]


class FooterError(ValueError):
    """The bytes are not a well-formed compact-protocol struct (a truncated or foreign footer)."""


@dataclass
class TList:
    etype: int
    items: list[Any] = field(default_factory=list)


@dataclass
class Raw:
    """A value already encoded (written as is): the output's row groups, kept as bytes, not as a tree."""

    data: bytes


@dataclass
class TMap:
    ktype: int
    vtype: int
    items: list[tuple[Any, Any]] = field(default_factory=list)


# --- reading ----------------------------------------------------------------------------------------------
def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(the unsigned varint at ``pos``, the position after it); IndexError past the end."""
    b = data[pos]
    if b < 0x80:  # most varints are one byte
        return b, pos + 1
    result, shift = b & 0x7F, 7
    while True:
        pos += 1
        b = data[pos]
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos + 1
        shift += 7
        if shift > 70:
            raise FooterError("a varint longer than 10 bytes")


class _Reader:
    """Reads values from ``data`` at ``pos``. Past the end, ``bytes`` indexing raises IndexError, which
    ``decode`` reports as a truncated footer (no bounds test per byte: a 256-column footer is ~40 KB)."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def varint(self) -> int:
        value, self.pos = read_varint(self.data, self.pos)
        return value

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise FooterError("the footer ends in the middle of a binary value")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def value(self, t: int) -> Any:
        if t == STRUCT:
            return self.struct()
        if t == I32 or t == I64 or t == I16:
            n = self.varint()
            return (n >> 1) ^ -(n & 1)
        if t == BINARY:
            return self.take(self.varint())
        if t == LIST or t == SET:
            head = self.data[self.pos]
            self.pos += 1
            size, etype = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            return TList(etype, [self.value(etype) for _ in range(size)])
        if t == TRUE or t == FALSE:  # inside a container: one byte (1 = true)
            self.pos += 1
            return self.data[self.pos - 1] == TRUE
        if t == I8:
            self.pos += 1
            b = self.data[self.pos - 1]
            return b - 256 if b > 127 else b
        if t == DOUBLE:
            return _struct.unpack("<d", self.take(8))[0]
        if t == MAP:
            size = self.varint()
            if not size:
                return TMap(0, 0)
            kv = self.data[self.pos]
            self.pos += 1
            kt, vt = kv >> 4, kv & 0x0F
            return TMap(kt, vt, [(self.value(kt), self.value(vt)) for _ in range(size)])
        raise FooterError(f"unknown compact-protocol type {t}")

    def struct(self, spans: dict[int, bytes] | None = None) -> Struct:
        """A struct; ``spans``, when given, receives each field's value as the bytes it was read from."""
        out: Struct = {}
        last = 0
        data = self.data
        while True:
            head = data[self.pos]
            self.pos += 1
            t = head & 0x0F
            if t == STOP:
                return out
            delta = head >> 4
            fid = last + delta if delta else self.zigzag()
            if t == TRUE or t == FALSE:
                out[fid] = (TRUE, t == TRUE)
            else:
                start = self.pos
                out[fid] = (t, self.value(t))
                if spans is not None:
                    spans[fid] = data[start:self.pos]
            last = fid


def decode(data: bytes | memoryview, spans: dict[int, bytes] | None = None) -> Struct:
    """The struct encoded in ``data`` (all of it). ``spans``, when given, receives each top-level field's
    value as its encoded bytes (to compare fields without encoding them again)."""
    r = _Reader(bytes(data))
    try:
        s = r.struct(spans)
    except IndexError:
        raise FooterError("the footer ends in the middle of a value") from None
    if r.pos != len(r.data):
        raise FooterError(f"{len(r.data) - r.pos} bytes after the end of the struct")
    return s


# --- writing ----------------------------------------------------------------------------------------------
def _varint(n: int, out: bytearray) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _zigzag(n: int, out: bytearray) -> None:
    _varint((n << 1) ^ (n >> 63), out)


def _write_value(t: int, v: Any, out: bytearray) -> None:
    if isinstance(v, Raw):
        out += v.data
    elif t in (TRUE, FALSE):
        out.append(TRUE if v else FALSE)
    elif t == I8:
        out.append(v & 0xFF)
    elif t in (I16, I32, I64):
        _zigzag(int(v), out)
    elif t == DOUBLE:
        out += _struct.pack("<d", v)
    elif t == BINARY:
        _varint(len(v), out)
        out += v
    elif t in (LIST, SET):
        out += list_header(v.etype, len(v.items))
        for item in v.items:
            _write_value(v.etype, item, out)
    elif t == MAP:
        _varint(len(v.items), out)
        if v.items:
            out.append((v.ktype << 4) | v.vtype)
            for k, val in v.items:
                _write_value(v.ktype, k, out)
                _write_value(v.vtype, val, out)
    elif t == STRUCT:
        _write_struct(v, out)
    else:
        raise FooterError(f"unknown compact-protocol type {t}")


def list_header(etype: int, n: int) -> bytes:
    """The bytes that start a list of ``n`` elements of type ``etype`` (its elements follow)."""
    if n < 15:
        return bytes([(n << 4) | etype])
    out = bytearray([0xF0 | etype])
    _varint(n, out)
    return bytes(out)


def _write_struct(s: Struct, out: bytearray) -> None:
    last = 0
    for fid, (t, v) in s.items():
        code = (TRUE if v else FALSE) if t in (TRUE, FALSE) else t
        if 0 < fid - last <= 15:
            out.append(((fid - last) << 4) | code)
        else:
            out.append(code)
            _zigzag(fid, out)
        if t not in (TRUE, FALSE):
            _write_value(t, v, out)
        last = fid
    out.append(STOP)


def encode(s: Struct) -> bytes:
    out = bytearray()
    _write_struct(s, out)
    return bytes(out)


# --- Parquet helpers ---------------------------------------------------------------------------------------
def get(s: Struct, fid: int, default: Any = None) -> Any:
    entry = s.get(fid)
    return default if entry is None else entry[1]


def set_int(s: Struct, fid: int, value: int, t: int = I64) -> None:
    """Set an integer field, keeping the width it was read with."""
    s[fid] = (s[fid][0] if fid in s else t, value)


def shift_row_group(rg: Struct, delta: int, ordinal: int) -> None:
    """Move a row group read from a part to where the part's bytes lie in the output: every absolute
    offset grows by ``delta``; the ordinal becomes ``ordinal`` (its place in the output)."""
    if RG_FILE_OFFSET in rg:
        set_int(rg, RG_FILE_OFFSET, get(rg, RG_FILE_OFFSET) + delta)
    if RG_ORDINAL in rg:
        if ordinal < 2**15:
            set_int(rg, RG_ORDINAL, ordinal, I16)
        else:  # an i16: past 32,767 row groups the (optional) ordinal cannot be written
            del rg[RG_ORDINAL]
    for cc in get(rg, RG_COLUMNS).items:
        if get(cc, CC_FILE_OFFSET):  # 0 means "not set" (deprecated field, most writers put 0)
            set_int(cc, CC_FILE_OFFSET, get(cc, CC_FILE_OFFSET) + delta)
        meta = get(cc, CC_META)
        for fid in (CMD_DATA_PAGE, CMD_INDEX_PAGE, CMD_DICTIONARY_PAGE):
            if fid in meta:
                set_int(meta, fid, get(meta, fid) + delta)


def not_concatenable(meta: Struct) -> str | None:
    """Why a part with this footer cannot be moved by shifting offsets, or None when it can."""
    if FMD_ENCRYPTION in meta or FMD_SIGNING_KEY in meta:
        return "it is encrypted"
    for rg in get(meta, FMD_ROW_GROUPS, TList(STRUCT)).items:
        if RG_COLUMNS not in rg:
            return "a row group has no columns"
        for cc in get(rg, RG_COLUMNS).items:
            if CC_FILE_PATH in cc:
                return "its column data lies in another file"
            if CC_OFFSET_INDEX in cc or CC_COLUMN_INDEX in cc:
                return "it has a page index (whose page offsets cannot be moved)"
            if CC_CRYPTO in cc or CC_ENCRYPTED_META in cc:
                return "a column is encrypted"
            meta_data = get(cc, CC_META)
            if meta_data is None:
                return "a column chunk has no metadata"
            if CMD_BLOOM_FILTER in meta_data:
                return "it has a bloom filter"
    return None

