"""Splitting mini-batch descriptors into pieces: identities, halves, and the rows a piece reads."""

from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from parallelrun.data.batches import (
    FileBatch,
    PieceId,
    TabularBatch,
    from_json,
    piece,
    piece_id,
    split,
    to_json,
    whole_items,
)
from parallelrun.data.tabular import plan_tabular, read_batch


def leaves(batch: FileBatch | TabularBatch) -> list[FileBatch | TabularBatch]:
    """Split recursively down to single items, depth first (first half first)."""
    if batch.n_items == 1:
        return [batch]
    a, b = split(batch)
    return leaves(a) + leaves(b)


@pytest.mark.parametrize("n", [2, 7, 50])
def test_file_batch_halves_cover_its_files_once_in_order(n: int) -> None:
    b = FileBatch(4, tuple(f"f{i}.png" for i in range(n)), nbytes=100 * n)
    first, second = split(b)
    assert first.paths + second.paths == b.paths
    assert (first.n_items, second.n_items) == (n // 2, n - n // 2)
    assert piece_id(first) == PieceId(4, 0, n // 2) and piece_id(second) == PieceId(4, n // 2, n)
    assert first.index == second.index == 4 and whole_items(second) == n
    singles = leaves(b)
    assert [s.paths[0] for s in singles] == list(b.paths)
    assert [piece_id(s) for s in singles] == sorted(piece_id(s) for s in singles)  # identity order = input order
    assert [piece_id(s) for s in singles] == [PieceId(4, i, i + 1) for i in range(n)]


@pytest.mark.parametrize("paths", [("a",), ('/x/"q"/b\\c', "\u00e9\u2603\U0001F600", "tab\there\nnl\x01\x7f"), ()])
def test_a_file_batch_json_is_exactly_what_json_dumps_writes(paths: tuple[str, ...]) -> None:
    """The journal's descriptor text is written out by hand on the planning hot path: it must stay the text
    json.dumps gave (resume's rebase_pending edits it as text; old journals hold it)."""
    import json

    b = FileBatch(7, paths, 123)
    assert to_json(b) == json.dumps({"index": 7, "paths": paths, "nbytes": 123, "kind": "file"}, separators=(",", ":"))
    assert from_json(to_json(b)) == b


def test_piece_identity_round_trips_through_json_pickle_and_text() -> None:
    b = FileBatch(9, ("a", "b", "c", "d", "e"), 50)
    p = piece(b, PieceId(9, 1, 3))
    assert p.paths == ("b", "c") and p.piece == (1, 3, 5) and p.nbytes == 20
    assert from_json(to_json(p)) == p and pickle.loads(pickle.dumps(p)) == p
    assert str(piece_id(p)) == "9[1:3]" and PieceId.parse("9[1:3]") == piece_id(p)
    assert piece(p, PieceId(9, 2, 3)).paths == ("c",)  # a piece of a piece, by original offsets
    assert piece_id(b) == PieceId(9, 0, 5) and '"piece"' not in to_json(b)  # whole batches' JSON unchanged
    with pytest.raises(ValueError, match="not inside"):
        piece(p, PieceId(9, 0, 2))
    with pytest.raises(ValueError, match="only pieces of 2 or more"):
        PieceId(9, 2, 3).halves()


def _csv(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "t.csv"
    pd.DataFrame({"id": range(n), "name": [f"row {i}" for i in range(n)]}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_tabular_pieces_read_exactly_their_rows(tmp_path: Path, fmt: str) -> None:
    n = 23
    df = pd.DataFrame({"id": range(n), "name": [f"row {i}" for i in range(n)]})
    path = tmp_path / f"t.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=5)
    batches = list(plan_tabular([str(path)], 10**6))
    assert len(batches) == 1 and batches[0].n_items == n
    whole = batches[0]
    singles = leaves(whole)
    assert len(singles) == n
    got = pd.concat([read_batch(s) for s in singles])
    assert list(got["id"]) == list(range(n)) and list(got.index) == list(range(n))
    a, b = split(whole)
    assert (a.row_start, a.row_end, b.row_start, b.row_end) == (0, 11, 11, 23)
    assert list(read_batch(b)["name"]) == [f"row {i}" for i in range(11, 23)]
    assert b.describe() == f"{path} rows 11-22" and b.span() == (0, 23)
    assert from_json(to_json(b)) == b and pickle.loads(pickle.dumps(b)) == b


def test_tabular_piece_of_a_later_batch_names_file_rows(tmp_path: Path) -> None:
    path = _csv(tmp_path, 200)
    batches = list(plan_tabular([str(path)], 1000))
    later = batches[2]
    p = piece(later, PieceId(later.index, 3, 5))
    assert isinstance(p, TabularBatch)
    assert (p.row_start, p.row_end) == (later.row_start + 3, later.row_start + 5)
    assert list(read_batch(p)["id"]) == [later.row_start + 3, later.row_start + 4]
    assert p.describe() == f"{path} rows {later.row_start + 3}-{later.row_start + 4}"
