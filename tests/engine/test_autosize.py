"""``mini_batch_size: auto``: probes measure run(), the size aims at 1-2 s per call, output stays exact."""

from __future__ import annotations

import json
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
        ("file", [(1, 0.01), (30, 0.3)], (round(TARGET_SECONDS / 0.01), None)),
        # one slow file decides at once: 3 s a file gives one file per mini-batch
        ("file", [(1, 3.0)], (1, None)),
        # next to nothing per file: capped, not millions
        ("file", [(1, 1e-5), (10_000, 0.001)], (LIMITS["file"][1], None)),
        ("tabular", [(262144, 0.02)], (None, 3932160)),
        ("tabular", [(262144, 0.02), (3932160, 0.3)], (19660800, None)),
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
