"""The merge of a huge folder's packed runs of sorted names (``files._merge``), as a pure function."""

from __future__ import annotations

import random

import pytest

from parallelrun.data import files as files_mod


@pytest.mark.parametrize("block_chars", [8, 40, 64 * 1024])
def test_merged_runs_give_every_name_once_in_sorted_order(monkeypatch: pytest.MonkeyPatch, block_chars: int) -> None:
    monkeypatch.setattr(files_mod, "_BLOCK_CHARS", block_chars)  # 8: a block holds one or two names
    for seed in range(60):
        rnd = random.Random(seed)
        # Unique names as a folder has them, of 1-6 characters (the block must fit one), non-ASCII included.
        names = list({"".join(rnd.choices("aZ_.0-é字", k=rnd.randint(1, 6))) for _ in range(rnd.randint(1, 300))})
        rnd.shuffle(names)
        size = rnd.randint(1, 40)
        runs = [files_mod._packed(names[i:i + size]) for i in range(0, len(names), size)]
        assert list(files_mod._merge(runs)) == sorted(names), f"seed {seed}, runs of {size}"


def test_no_runs_merge_to_nothing() -> None:
    assert list(files_mod._merge([])) == []
