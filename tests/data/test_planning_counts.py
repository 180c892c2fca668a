"""The driver reads the journal's counts after every planning step: they must stay exact without a scan.

A scan of the batches table per step grows with the plan (a million files are 100,000 rows and ~400
steps), which made counting, not listing, most of W4's planning time.
"""

from __future__ import annotations

from pathlib import Path

from parallelrun.config import validate_spec
from parallelrun.data.plan import Plan, PlanFeed
from parallelrun.journal import Journal


def _tree(root: Path, dirs: int = 3, per_dir: int = 11) -> None:
    for d in range(dirs):
        sub = root / f"d{d}"
        sub.mkdir(parents=True)
        for i in range(per_dir):
            (sub / f"f{i:02d}").write_text("x" * i)


def test_counts_after_each_plan_step_equal_a_fresh_scan_and_take_no_query(tmp_path: Path) -> None:
    _tree(tmp_path / "data")
    spec = validate_spec({"name": "counts", "entry_script": "e.py", "mini_batch_size": 4,
                          "inputs": [{"type": "file", "path": str(tmp_path / "data")}]})
    with Journal(tmp_path / "j.sqlite") as j:
        j.counts()  # the driver's first read: one scan, then kept current by this connection's writes
        queries: list[str] = []
        j._db.set_trace_callback(queries.append)
        feed = PlanFeed(Plan(spec, tmp_path), j)
        while not feed.done:
            feed.step(seconds=0.0)
            queries.clear()
            kept = j.counts()
            assert not queries  # answered from memory
            with Journal(tmp_path / "j.sqlite", readonly=True) as reader:
                assert kept == reader.counts()  # ...and exactly what a scan finds
        assert (kept.batches, kept.items, kept.batches_pending) == (9, 33, 9)
