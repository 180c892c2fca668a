"""The footer scan a worker stores inside its Parquet part (``_parquet_index``): the same scan the assembly
would make, a part that pyarrow still reads as before, and an index that does not match its footer never
used."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_parquet_assembly import FILE, TABLES, _footer_bytes, _parquet, _part, _put_parts, _table

from parallelrun.outputs import OutputLocation, PartCorruptedError, PartRecord
from parallelrun.outputs._parquet_footer import FMD_KEY_VALUE, FMD_SCHEMA
from parallelrun.outputs._parquet_index import TAG, index_pieces, scan_from_index
from parallelrun.outputs._parquet_scan import scan
from parallelrun.outputs._records import checksum_of


def _index_of(part: bytes) -> tuple[bytes, bytes]:
    """(footer, index) of a part written with its index."""
    footer = _footer_bytes(part)
    before = len(part) - 8 - len(footer)
    assert part[before - 4:before] == TAG
    k = int.from_bytes(part[before - 8:before - 4], "little")
    return footer, part[before - 8 - k:before - 8]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind,options", TABLES)
def test_the_index_is_the_scan_of_the_footer_and_the_part_reads_as_before(kind: str, options: dict[str, Any]) -> None:
    for extra in ({}, {"row_group_size": 5}):
        table = _table(7, 40, kind)
        data = _parquet(table, **{**options, **extra})
        pieces = index_pieces(data)
        assert pieces is not None
        part = b"".join(pieces)
        assert pq.read_table(io.BytesIO(part)).equals(pq.read_table(io.BytesIO(data)))
        footer, blob = _index_of(part)
        assert footer == _footer_bytes(data)
        got, want = scan_from_index(footer, blob), scan(footer)
        assert got is not None
        assert (got.num_rows, got.why, len(got.row_groups)) == (40, None, len(want.row_groups))
        for fid in (FMD_SCHEMA, FMD_KEY_VALUE):
            assert got.spans.get(fid) == want.spans.get(fid)
        for i, (a, b) in enumerate(zip(got.row_groups, want.row_groups, strict=True)):
            for delta, ordinal in ((0, i), (10**9 + 3, 2**15 + i)):
                assert a.shifted(delta, ordinal) == b.shifted(delta, ordinal)


def test_a_part_that_cannot_be_moved_as_bytes_gets_no_index() -> None:
    assert index_pieces(_parquet(_table(0, 10, "nulls"), write_page_index=True)) is None
    assert index_pieces(b"not a parquet file") is None


def test_an_index_that_does_not_match_its_footer_is_not_used() -> None:
    part = b"".join(index_pieces(_parquet(_table(1, 30, "dictionary"))) or [])
    footer, blob = _index_of(part)
    other, _ = _index_of(b"".join(index_pieces(_parquet(_table(2, 31, "dictionary"))) or []))
    assert scan_from_index(footer, blob) is not None
    assert scan_from_index(other, blob) is None  # made from another footer
    for at in (0, 10, len(blob) // 2, len(blob) - 1):  # any byte changed: its own checksum fails
        damaged = bytearray(blob)
        damaged[at] ^= 0x40
        assert scan_from_index(footer, bytes(damaged)) is None
    assert scan_from_index(footer, blob[:-7]) is None


@pytest.mark.timeout(60)
def test_an_index_changed_after_the_commit_fails_the_assembly_and_a_stale_one_is_only_skipped(tmp_path: Path) -> None:
    loc = OutputLocation.parse(str(tmp_path / "out"))
    records = _put_parts(loc, "embeddings", {"use_dictionary": ["id"]}, batches=6, rows=25)
    want = pa.concat_tables([_part(loc, r).read() for r in records])
    path = loc.store.path(records[0].name)
    rec = records[2]
    part = loc.store.read(rec.name, rec.offset, rec.length)
    footer, blob = _index_of(part)
    at = rec.offset + part.index(blob) + len(blob) // 2  # a byte in the middle of part 2's index
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x01
    path.write_bytes(raw)
    # Changed on disk after its commit: the part's checksum, which covers the index, fails the assembly.
    with pytest.raises(PartCorruptedError, match="mini-batch 2 .*does not match its checksum"):
        loc.assemble(records, file_name=FILE, fmt="parquet", state_dir=tmp_path / "state")
    assert not (tmp_path / "out" / FILE).exists()
    # The same bytes as committed (an index that is not its footer's, as a foreign writer could leave):
    # the footer is scanned instead, and the file is right.
    fixed = PartRecord(rec.batch, rec.name, rec.offset, rec.length, rec.rows,
                       checksum_of(bytes(raw[rec.offset:rec.offset + rec.length])))
    records[2] = fixed
    final = loc.assemble(records, file_name=FILE, fmt="parquet", state_dir=tmp_path / "state")
    assert pq.read_table(final).equals(want)


@pytest.mark.parametrize("kind,options", TABLES)
def test_the_merged_footer_is_what_the_tree_codec_writes(kind: str, options: dict[str, Any]) -> None:
    """The merged footer splices the rows and the row groups into the first part's footer bytes; the tree
    codec (decode, replace both, encode) gives the same bytes."""
    from parallelrun.outputs import _parquet_concat as concat
    from parallelrun.outputs import _parquet_footer as footer

    raw = _footer_bytes(_parquet(_table(4, 30, kind), **options))
    groups = bytearray(b"".join(rg.shifted(1000, i) for i, rg in enumerate(scan(raw).row_groups)))
    for rows, n in ((30, len(scan(raw).row_groups)), (10**10, 70_000)):
        tree = footer.decode(raw)
        tree[footer.FMD_ROW_GROUPS] = (footer.LIST, footer.Raw(footer.list_header(footer.STRUCT, n) + bytes(groups)))
        footer.set_int(tree, footer.FMD_NUM_ROWS, rows)
        assert concat._with_row_groups(scan(raw), rows, n, groups) == footer.encode(tree)
