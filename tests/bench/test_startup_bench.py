"""bench/startup.py runs and reports both commands (no timing asserted: targets are for `make bench`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_startup_bench_reports_help_and_plan(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    res = subprocess.run([sys.executable, "-m", "bench.startup", "--runs", "1", "--out", str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads(out.read_text())
    assert sorted(results["commands"]) == ["help", "plan"]
    plan = results["commands"]["plan"]
    assert plan["target"] == 0.6 and results["commands"]["help"]["target"] == 0.3
    assert plan["planned_in_median"] < plan["best"]  # "planned in" leaves out start-up and imports
    assert "parallelrun plan job.yml" in res.stdout and "planned in" in res.stdout
