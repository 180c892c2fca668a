"""A Parquet footer scanned for where its absolute offsets lie, without building a tree.

The one-file assembly needs, of each part's footer, only where its absolute offsets are (to write them
shifted) and whether anything forbids moving it. Decoding a 256-column footer into a tree and encoding it
back took ~50 ms in pure Python (105 parts of W7: ~5 s); the scan below skips every value it does not need
without building it, and the row groups are written back as the part's own bytes with only the offset
varints replaced (``RowGroupSpan.shifted``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._parquet_footer import (
    BINARY,
    CC_COLUMN_INDEX,
    CC_CRYPTO,
    CC_ENCRYPTED_META,
    CC_FILE_OFFSET,
    CC_FILE_PATH,
    CC_META,
    CC_OFFSET_INDEX,
    CMD_BLOOM_FILTER,
    CMD_DATA_PAGE,
    CMD_DICTIONARY_PAGE,
    DOUBLE,
    FALSE,
    FMD_ENCRYPTION,
    FMD_NUM_ROWS,
    FMD_ROW_GROUPS,
    FMD_SIGNING_KEY,
    I8,
    I16,
    I32,
    I64,
    LIST,
    MAP,
    RG_COLUMNS,
    RG_FILE_OFFSET,
    RG_ORDINAL,
    SET,
    STOP,
    STRUCT,
    TRUE,
    FooterError,
    _Reader,
    _zigzag,
    encode,
    read_varint,
    shift_row_group,
)

_OFFSET, _ORDINAL = 0, 1


def _skip_varint(data: bytes, pos: int) -> int:
    while data[pos] & 0x80:
        pos += 1
    return pos + 1


def _skip(data: bytes, pos: int, t: int) -> int:
    """The position after a value of type ``t`` at ``pos`` (a bool here is a container's one-byte element)."""
    if t == I64 or t == I32 or t == I16:
        return _skip_varint(data, pos)
    if t == BINARY:
        n, pos = read_varint(data, pos)
        return pos + n
    if t == STRUCT:
        return _skip_struct(data, pos)
    if t == LIST or t == SET:
        head = data[pos]
        pos += 1
        size, et = head >> 4, head & 0x0F
        if size == 15:
            size, pos = read_varint(data, pos)
        if et == TRUE or et == FALSE or et == I8:
            return pos + size
        if et == DOUBLE:
            return pos + 8 * size
        if I16 <= et <= I64:
            for _ in range(size):
                while data[pos] & 0x80:
                    pos += 1
                pos += 1
            return pos
        if et == STRUCT:
            for _ in range(size):
                pos = _skip_struct(data, pos)
            return pos
        if et == BINARY:
            for _ in range(size):
                n, pos = read_varint(data, pos)
                pos += n
            return pos
        for _ in range(size):
            pos = _skip(data, pos, et)
        return pos
    if t == TRUE or t == FALSE or t == I8:
        return pos + 1
    if t == DOUBLE:
        return pos + 8
    if t == MAP:
        size, pos = read_varint(data, pos)
        if size:
            kv = data[pos]
            pos += 1
            for _ in range(size):
                pos = _skip(data, _skip(data, pos, kv >> 4), kv & 0x0F)
        return pos
    raise FooterError(f"unknown compact-protocol type {t}")


def _skip_struct(data: bytes, pos: int) -> int:
    # The common cases inlined (integers and short binaries are most of a footer's values): a call per
    # value is what made the tree decoder slow.
    while True:
        head = data[pos]
        pos += 1
        t = head & 0x0F
        if t == STOP:
            return pos
        if head < 0x10:
            pos = _skip_varint(data, pos)  # a field id written out
        if I16 <= t <= I64:
            while data[pos] & 0x80:
                pos += 1
            pos += 1
        elif t == BINARY:
            n = data[pos]
            if n < 0x80:
                pos += 1 + n
            else:
                n, pos = read_varint(data, pos)
                pos += n
        elif t > FALSE:  # a bool field has no value byte
            pos = _skip(data, pos, t)


def _field(data: bytes, pos: int, last: int) -> tuple[int, int, int]:
    """A field header at ``pos``: (type, field id, position of the value); type STOP ends the struct."""
    head = data[pos]
    t = head & 0x0F
    if t == STOP:
        return STOP, last, pos + 1
    if head >> 4:
        return t, last + (head >> 4), pos + 1
    n, pos = read_varint(data, pos + 1)
    return t, (n >> 1) ^ -(n & 1), pos


def _list_size(data: bytes, pos: int, want: int) -> tuple[int, int]:
    head = data[pos]
    size, et = head >> 4, head & 0x0F
    pos += 1
    if size == 15:
        size, pos = read_varint(data, pos)
    if et != want:
        raise FooterError(f"a list of type {et} where {want} was expected")
    return size, pos


_INT_TYPES = frozenset((I8, I16, I32, I64))


@dataclass
class RowGroupSpan:
    """One row group of a scanned footer: its bytes ``data[start:end]`` and where its offsets lie
    (``slots``: kind, field header start, value start, value end, value)."""

    data: bytes
    start: int
    end: int
    slots: list[tuple[int, int, int, int, int]]

    def shifted(self, delta: int, ordinal: int) -> bytes:
        """The row group's bytes with every absolute offset grown by ``delta`` and its ordinal set to
        ``ordinal`` (the same result as ``shift_row_group`` on the decoded tree, then ``encode``)."""
        data, out, pos = self.data, bytearray(), self.start
        for kind, head, s, e, v in self.slots:
            if kind == _OFFSET:
                out += data[pos:s]
                _zigzag(v + delta, out)
            elif ordinal < 2**15:
                out += data[pos:s]
                _zigzag(ordinal, out)
            elif data[e] == STOP:  # an i16: past 32,767 row groups the (optional) ordinal is left out
                out += data[pos:head]
            else:  # a field after it is written relative to it: rewrite this row group through the tree
                rg = _Reader(data, self.start).struct()
                shift_row_group(rg, delta, ordinal)
                return encode(rg)
            pos = e
        out += data[pos:self.end]
        return bytes(out)


@dataclass
class FooterScan:
    """What the assembly needs of a part's footer: each top-level field's value as bytes (``spans``), the
    rows, the row groups, and why the part cannot be moved as bytes (None when it can)."""

    data: bytes  # the footer itself
    spans: dict[int, bytes]
    num_rows: int
    row_groups: list[RowGroupSpan]
    why: str | None
    #: where each top-level field's value lies in ``data`` (start, end); empty when not known (a scan
    #: rebuilt from a worker's index, ``_parquet_index``)
    places: dict[int, tuple[int, int]] = field(default_factory=dict)


def scan(data: bytes) -> FooterScan:
    """Scan a ``FileMetaData`` (see :class:`FooterScan`). Raises :class:`FooterError` when malformed."""
    data = bytes(data)
    try:
        return _scan(data)
    except IndexError:
        raise FooterError("the footer ends in the middle of a value") from None


def _scan(data: bytes) -> FooterScan:
    spans: dict[int, bytes] = {}
    places: dict[int, tuple[int, int]] = {}
    groups: list[RowGroupSpan] = []
    rows, why, fid, pos = 0, None, 0, 0
    while True:
        t, fid, pos = _field(data, pos, fid)
        if t == STOP:
            break
        start = pos
        if fid == FMD_ROW_GROUPS and t == LIST:
            n, pos = _list_size(data, pos, STRUCT)
            for _ in range(n):
                rg_start = pos
                slots: list[tuple[int, int, int, int, int]] = []
                pos, rg_why = _scan_row_group(data, pos, slots)
                why = why or rg_why
                groups.append(RowGroupSpan(data, rg_start, pos, slots))
        elif fid == FMD_NUM_ROWS and t in _INT_TYPES:
            n, pos = read_varint(data, pos)
            rows = (n >> 1) ^ -(n & 1)
        else:
            if fid in (FMD_ENCRYPTION, FMD_SIGNING_KEY):
                why = "it is encrypted"
            pos = _skip(data, pos, t) if t > FALSE else pos
        spans[fid] = data[start:pos]
        places[fid] = (start, pos)
    if pos != len(data):
        raise FooterError(f"{len(data) - pos} bytes after the end of the struct")
    return FooterScan(data, spans, rows, groups, why, places)


def _scan_row_group(data: bytes, pos: int, slots: list[tuple[int, int, int, int, int]]) -> tuple[int, str | None]:
    why: str | None = "a row group has no columns"
    fid = 0
    while True:
        head = pos
        t, fid, pos = _field(data, pos, fid)
        if t == STOP:
            return pos, why
        if fid == RG_COLUMNS and t == LIST:
            n, pos = _list_size(data, pos, STRUCT)
            why = None
            for _ in range(n):
                pos, cc_why = _scan_column_chunk(data, pos, slots)
                why = why or cc_why
        elif (fid == RG_FILE_OFFSET or fid == RG_ORDINAL) and t in _INT_TYPES:
            v, end = read_varint(data, pos)
            slots.append((_OFFSET if fid == RG_FILE_OFFSET else _ORDINAL, head, pos, end, (v >> 1) ^ -(v & 1)))
            pos = end
        elif t > FALSE:
            pos = _skip(data, pos, t)


def _scan_column_chunk(data: bytes, pos: int, slots: list[tuple[int, int, int, int, int]]) -> tuple[int, str | None]:
    why: str | None = None
    has_meta = False
    fid = 0
    while True:
        head = pos
        t, fid, pos = _field(data, pos, fid)
        if t == STOP:
            return pos, why or (None if has_meta else "a column chunk has no metadata")
        if fid == CC_META and t == STRUCT:
            pos, meta_why = _scan_column_meta(data, pos, slots)
            has_meta, why = True, why or meta_why
        elif fid == CC_FILE_OFFSET and t in _INT_TYPES:
            v, end = read_varint(data, pos)
            if v:  # 0 means "not set" (deprecated field, most writers put 0): left as it is
                slots.append((_OFFSET, head, pos, end, (v >> 1) ^ -(v & 1)))
            pos = end
        else:
            if fid == CC_FILE_PATH:
                why = why or "its column data lies in another file"
            elif fid in (CC_OFFSET_INDEX, 5, CC_COLUMN_INDEX, 7):  # the page index: offsets and lengths
                why = why or "it has a page index (whose page offsets cannot be moved)"
            elif fid in (CC_CRYPTO, CC_ENCRYPTED_META):
                why = why or "a column is encrypted"
            if t > FALSE:
                pos = _skip(data, pos, t)


def _scan_column_meta(data: bytes, pos: int, slots: list[tuple[int, int, int, int, int]]) -> tuple[int, str | None]:
    why = None
    fid = 0
    while True:
        head = pos
        b = data[pos]
        pos += 1
        t = b & 0x0F
        if t == STOP:
            return pos, why
        if b >= 0x10:
            fid += b >> 4
        else:
            n, pos = read_varint(data, pos)
            fid = (n >> 1) ^ -(n & 1)
        if I16 <= t <= I64:
            if CMD_DATA_PAGE <= fid <= CMD_DICTIONARY_PAGE:
                v, end = read_varint(data, pos)
                slots.append((_OFFSET, head, pos, end, (v >> 1) ^ -(v & 1)))
                pos = end
            else:
                if fid == CMD_BLOOM_FILTER:
                    why = "it has a bloom filter"
                while data[pos] & 0x80:
                    pos += 1
                pos += 1
        else:
            if fid == CMD_BLOOM_FILTER:
                why = "it has a bloom filter"
            if t == STRUCT:  # statistics, size statistics
                pos = _skip_struct(data, pos)
            elif t > FALSE:
                pos = _skip(data, pos, t)
