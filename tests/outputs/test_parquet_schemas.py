"""Parquet parts whose schemas differ (a column all null in one mini-batch, which pyarrow types ``null``):
one file with every row, in place when only later parts differ, re-encoded as a whole otherwise."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from parallelrun.outputs import FormattedResult, OutputLocation, PartRecord, default_file_name
from parallelrun.outputs._format import _encode

FILE = default_file_name("parquet")


def _notes(batch: int, null_batch: int) -> pd.DataFrame:
    """What a worker formats: a note column, all None (typed null) in ``null_batch``."""
    notes = [None] * 3 if batch == null_batch else [f"n{batch}-{i}" for i in range(3)]
    return pd.DataFrame({"id": [batch * 10 + i for i in range(3)], "note": notes, "score": [0.5 * i for i in range(3)]})


def _write(loc: OutputLocation, batches: int, null_batch: int, shared: bool) -> list[PartRecord]:
    w = loc.part_writer(worker="w", fmt="parquet", layout="file")
    w.shared = w.shared and shared
    recs = [w.write(batch=b, attempt=1, result=FormattedResult(3, _encode(_notes(b, null_batch), "parquet"), [], 3))
            for b in range(batches)]
    w.close()
    return recs


@pytest.mark.timeout(60)
@pytest.mark.parametrize("null_batch", [0, 2, 4])
@pytest.mark.parametrize("shared", [True, False], ids=["in-place", "parts-in-own-files"])
def test_a_batch_with_a_column_all_null_gives_one_file_with_every_row(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, null_batch: int, shared: bool) -> None:
    loc = OutputLocation.parse(str(tmp_path / "out"))
    records = _write(loc, 5, null_batch, shared)
    in_place = shared and loc.part_writer(worker="x", fmt="parquet", layout="file").shared
    with caplog.at_level(logging.INFO):
        final = loc.assemble(records, file_name=FILE, fmt="parquet", state_dir=tmp_path / "state")
    table = pq.read_table(final)
    assert table.column("id").to_pylist() == [b * 10 + i for b in range(5) for i in range(3)]
    assert table.column("note").to_pylist() == [None if b == null_batch else f"n{b}-{i}" for b in range(5)
                                                for i in range(3)]
    assert pa.types.is_large_string(table.schema.field("note").type) or pa.types.is_string(
        table.schema.field("note").type)
    if in_place and null_batch > 0:  # only the odd part re-encoded; the file made in place
        assert f"mini-batch {null_batch}'s Parquet schema differs from mini-batch 0's" in caplog.text
        assert "re-encoding every row group" not in caplog.text
    else:  # the first part's schema cannot take the others' rows: every row group re-encoded, the log says why
        assert "re-encoding every row group" in caplog.text and "schema differs" in caplog.text
    assert sorted(p.name for p in Path(loc.url).iterdir() if not p.name.startswith(".")) == [FILE]


@pytest.mark.timeout(60)
def test_a_footer_past_what_parquet_holds_is_refused_and_one_readers_refuse_is_written_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The limits lowered (a 2 GiB footer is ~80,000 W7 mini-batches): past MAX_FOOTER the assembly stops
    with what to do and the parts stay; past WARN_ROW_GROUPS the file is written and the log says why
    readers may refuse it."""
    from parallelrun.outputs import _parquet_concat
    from parallelrun.outputs._parquet_concat import FooterTooLarge

    loc = OutputLocation.parse(str(tmp_path / "out"))
    records = _write(loc, 6, -1, shared=True)
    monkeypatch.setattr(_parquet_concat, "MAX_FOOTER", 1000)
    with pytest.raises(FooterTooLarge, match="footer over 2 GiB .*output_layout: dataset"):
        loc.assemble(records, file_name=FILE, fmt="parquet", state_dir=tmp_path / "state")
    assert not (tmp_path / "out" / FILE).exists() and all(loc.verify(r) for r in records)
    monkeypatch.setattr(_parquet_concat, "MAX_FOOTER", 2**31 - 1)
    monkeypatch.setattr(_parquet_concat, "WARN_ROW_GROUPS", 5)
    in_place = loc.part_writer(worker="x", fmt="parquet", layout="file").shared
    with caplog.at_level(logging.WARNING):
        final = loc.assemble(records, file_name=FILE, fmt="parquet", state_dir=tmp_path / "state")
    assert pq.read_table(final).column("id").to_pylist() == [b * 10 + i for b in range(6) for i in range(3)]
    if in_place:
        assert "footer holds 6 row groups" in caplog.text and "thrift_container_size_limit" in caplog.text
