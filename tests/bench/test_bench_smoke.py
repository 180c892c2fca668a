"""The benchmark at smoke size, so its code cannot rot: every workload runs and reports its rows.

No timing is asserted (the machine may be busy); what is checked is that each contender produced every
row (the benchmark itself refuses a run whose output has the wrong number of rows) and that the JSON
holds what docs/performance.md is made from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="the benchmark needs the examples extra")
pytest.importorskip("skl2onnx", reason="the benchmark needs the examples extra")

REPO = Path(__file__).resolve().parents[2]
PEERS = ["parallelrun", "pool", "serial"]  # Ray Data costs ~10 s of start-up: left to `make bench`


@pytest.mark.slow  # ~90 s on a 2-core machine: `make test-all` (and `make bench` itself) run it
@pytest.mark.timeout(420)
def test_bench_smoke_reports_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    res = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--peers", ",".join(PEERS), "--data-dir", str(tmp_path / "data"),
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=400, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert res.returncode == 0, res.stderr[-4000:]
    results = json.loads(out.read_text())
    w = results["workloads"]
    assert sorted(w) == ["W1", "W2", "W3", "W4", "W5", "W6", "W7"]
    for summary in (w["W1"], w["W2"], w["W3"]["csv"], w["W3"]["parquet"]):
        rows = {r["peer"]: r for r in summary["rows"]}
        assert sorted(rows) == sorted(PEERS)
        for peer, row in rows.items():
            assert row["error"] is None, (peer, row["error"])
            assert len(row["seconds"]) == 1 and row["items_per_second"] > 0
            if peer != "parallelrun":
                assert row["parallelrun_ratio"] > 0
    assert {r["files"] for r in w["W4"]["runs"]} == set(results["sizes"]["w4_files"])
    assert all(r["driver_peak_rss_mb"] > 0 and r["files_per_second"] > 0 for r in w["W4"]["runs"])
    flat = w["W4"]["flat"]  # the same files in one folder
    assert [r["files"] for r in flat["runs"]] == [results["sizes"]["w4_flat"]] and flat["median"]["files_per_second"] > 0
    assert f"| {flat['files']:,} in one folder |" in res.stdout
    assert w["W5"]["median_first_commit_s"] > 0
    (w6,) = w["W6"]["runs"]
    assert w6["duplicate_rows"] == 0 and w6["missing_rows"] == 0 and w6["rows"] == results["sizes"]["w6_images"]
    w7 = w["W7"]
    assert w7["errors"] == {} and w7["rows"] == results["sizes"]["w7_rows"]
    for who in ("parallelrun", "parallelrun_dataset", "pool"):
        assert [m["rows"] for m in w7["runs"][who]] == [w7["rows"]]
    assert w7["median"]["parallelrun"]["driver_peak_rss_mb"] > 0 and w7["median"]["parallelrun"]["output_mb"] > 0
    assert {t["target"].split(":")[0] for t in results["targets"]} >= {"W1", "W2", "W4", "W5", "W6", "W7"}
    assert "| W1 | parallelrun |" in res.stdout  # the table printed for docs/performance.md
