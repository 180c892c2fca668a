"""``mini_batch_size: auto``: probes measure run(), the size aims at 1-2 s per call, output stays exact."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from engine_helpers import expected_names

from parallelrun.config import validate_spec
from parallelrun.errors import JobSpecError
from parallelrun.execution.autosize import FIRST_PROBE, LIMITS, TARGET_SECONDS, decide

# ~20 ms per file: auto should settle near 1.5 s / 20 ms = 75 files per mini-batch.
TIMED = """
import os, time
def run(mini_batch):
    time.sleep(0.02 * len(mini_batch))
    return [os.path.basename(p) for p in mini_batch]
"""


@pytest.mark.parametrize(
    ("kind", "probes", "expected"),
    [
        ("file", [], (None, FIRST_PROBE["file"])),
        # a first probe at 10 ms a file (warm-up included) asks for a second one of ~0.3 s
        ("file", [(1, 0.01)], (None, 30)),
        # ...then one twice as large; the two measuring probes fit a + b*n (here a = 0, b = 10 ms)
        ("file", [(1, 0.01), (30, 0.3)], (None, 60)),
        ("file", [(1, 0.01), (30, 0.3), (60, 0.6)], (round(TARGET_SECONDS / 0.01), None)),
        # warm-up in the first probe does not count: only the measuring probes are fitted
        ("file", [(1, 2.0 - 1e-3), (30, 0.3), (60, 0.6)], (150, None)),
        # a fixed 0.2 s per call and nothing per file: as large as we dare extrapolate (16 x 8 files),
        # not 0.2 s / 2 files -> 15 files as a per-file average would say
        ("file", [(1, 0.25), (4, 0.2), (8, 0.2)], (128, None)),
        # 0.1 s per call + 50 ms a file: (1.5 - 0.1) / 0.05 = 28 files
        ("file", [(1, 0.3), (4, 0.3), (8, 0.5)], (28, None)),
        # a fixed cost above the target: at least as much time on the items as on the call
        ("file", [(1, 2.0 - 1e-3), (4, 1.4), (8, 1.48)], (66, None)),  # (1.32 s) / 20 ms
        # one slow file decides at once: 3 s a file gives one file per mini-batch
        ("file", [(1, 3.0)], (1, None)),
        # next to nothing per file: capped, not millions
        ("file", [(1, 1e-5), (10_000, 0.001)], (LIMITS["file"][1], None)),
        ("tabular", [(262144, 0.02)], (None, 3932160)),
        ("tabular", [(262144, 0.02), (3932160, 0.3)], (None, 7864320)),
        ("tabular", [(262144, 0.02), (3932160, 0.3), (7864320, 0.6)], (19660800, None)),
    ],
)
def test_decide(kind: str, probes: list[tuple[int, float]], expected: tuple[int | None, int | None]) -> None:
    assert decide(kind, probes) == expected


def test_auto_is_a_valid_mini_batch_size() -> None:
    base = {"name": "auto-job", "entry_script": "e.py"}
    for kind in ("file", "tabular"):
        spec = validate_spec({**base, "inputs": [{"type": kind, "path": "x"}], "mini_batch_size": "auto"})
        assert spec.mini_batch_size == "auto"
    with pytest.raises(JobSpecError, match="mini_batch_size: 'automatic'"):
        validate_spec({**base, "inputs": [{"type": "file", "path": "x"}], "mini_batch_size": "automatic"})


def _journal(job) -> sqlite3.Connection:
    (d,) = list((job.ws / "runs").iterdir())
    return sqlite3.connect(d / "journal.sqlite")


@pytest.mark.timeout(180)
def test_auto_file_job_picks_a_size_from_run_time(job_factory) -> None:
    n = 200
    job = job_factory(TIMED, n_files=n, mini_batch_size="auto", process_count_per_node=2)
    res = job.run()
    assert res.returncode == 0, res.stderr + res.stdout
    assert sorted(job.lines()) == expected_names(n)  # probes' output is dropped: every row once
    db = _journal(job)
    size = json.loads(db.execute("SELECT value FROM meta WHERE key='batch_size'").fetchone()[0])
    assert 40 <= size <= 110, size  # 1.5 s at ~20 ms a file, give or take a loaded machine
    sizes = [r[0] for r in db.execute("SELECT n_items FROM batches ORDER BY idx")]
    assert sizes[:-1] == [size] * (len(sizes) - 1) and sum(sizes) == n
    (d,) = list((job.ws / "runs").iterdir())
    assert "mini_batch_size: auto chose" in (d / "logs" / "sys" / "driver.txt").read_text()


FIXED_COST = """
import os, time
def run(mini_batch):
    time.sleep(0.2)  # a fixed cost per call (a model server round trip), nothing per file
    return [os.path.basename(p) for p in mini_batch]
"""


@pytest.mark.timeout(180)
def test_auto_models_a_fixed_cost_per_call(job_factory) -> None:
    """A run() costing 0.2 s a call whatever its size gets large batches, not 0.2 s / 2 files -> 15."""
    n = 150
    job = job_factory(FIXED_COST, n_files=n, mini_batch_size="auto", process_count_per_node=2)
    res = job.run()
    assert res.returncode == 0, res.stderr + res.stdout
    assert sorted(job.lines()) == expected_names(n)
    size = json.loads(_journal(job).execute("SELECT value FROM meta WHERE key='batch_size'").fetchone()[0])
    assert size >= 40, size  # the per-file average would give 15; the fixed-cost model extrapolates
    (d,) = list((job.ws / "runs").iterdir())
    log = (d / "logs" / "sys" / "driver.txt").read_text()
    assert re.search(r"auto chose \d+ .*per call 0\.[12]\d\d s", log), log


@pytest.mark.timeout(180)
def test_auto_tabular_job_keeps_every_row(job_factory, tmp_path) -> None:
    rows = 3000
    data = tmp_path / "rows"
    data.mkdir()
    (data / "t.csv").write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(rows)))
    script = """
import time
def run(df):
    time.sleep(0.0005 * len(df))
    return df
"""
    job = job_factory(script, n_files=0, inputs=[{"type": "tabular", "path": "rows"}], mini_batch_size="auto")
    res = job.run()
    assert res.returncode == 0, res.stderr + res.stdout
    assert sorted(job.lines(), key=lambda x: int(x.split()[0])) == [f"{i} {i * 2}" for i in range(rows)]
    db = _journal(job)
    size = json.loads(db.execute("SELECT value FROM meta WHERE key='batch_size'").fetchone()[0])
    assert LIMITS["tabular"][0] <= size <= LIMITS["tabular"][1]
