"""Start-up time of the command line (issue 12): ``python -m bench.startup`` (part of ``make bench``).

Targets, with ``PYTHONDONTWRITEBYTECODE=1`` (as on many CI images and containers) after ``make venv``:

    parallelrun --help                      <= 0.3 s
    parallelrun plan job.yml (127 KB CSV)   <= 0.6 s

Each command runs ``--runs`` times (default 5); the best wall time is checked against the target. On a
busy machine wall time measures the queue for a core as much as the command, so the CPU time of the
command (user + system, which load inflates far less) is checked against the same target too. Whether site-packages holds compiled bytecode is reported too: without it every
process compiles pandas & co. again, which is what ``uv pip install --compile-bytecode`` in the Makefile
prevents.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGETS = {"help": 0.3, "plan": 0.6}


def _write_job(folder: Path, rows: int = 4_000) -> Path:
    """A job over one ~127 KB CSV (the size issue 12 measured)."""
    with open(folder / "data.csv", "w", encoding="utf-8") as f:
        f.write("id,city,temperature,humidity\n")
        for i in range(rows):
            f.write(f"{i},city-{i % 97:03d},{(i * 7919) % 400 / 10:.1f},{(i * 104729) % 1000 / 10:.1f}\n")
    (folder / "score.py").write_text("def run(mini_batch):\n    return mini_batch\n")
    job = folder / "job.yml"
    job.write_text("name: startup\nentry_script: score.py\ninputs: [{type: tabular, path: data.csv}]\n")
    return job


def _time(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child, stdout) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def _compiled() -> bool:
    """Whether pandas (the largest dependency) has bytecode next to its sources."""
    site = Path(sysconfig.get_paths()["purelib"])
    cache = site / "pandas" / "__pycache__"
    return cache.is_dir() and any(cache.glob("*.pyc"))


def measure(runs: int = 5) -> dict[str, Any]:
    exe = shutil.which("parallelrun", path=str(Path(sys.executable).parent)) or "parallelrun"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    results: dict[str, Any] = {"runs": runs, "bytecode_precompiled": _compiled(),
                               "load_before": round(os.getloadavg()[0], 2), "commands": {}}
    with tempfile.TemporaryDirectory(prefix="parallelrun-startup-") as tmp:
        job = _write_job(Path(tmp))
        commands = {"help": [exe, "--help"], "plan": [exe, "plan", job.name]}
        for name, cmd in commands.items():
            walls, cpus, planned = [], [], []
            for _ in range(runs):
                wall, cpu, out = _time(cmd, Path(tmp), env)
                walls.append(wall)
                cpus.append(cpu)
                m = re.search(r"planned in ([\d.]+) s", out)
                if m:
                    planned.append(float(m.group(1)))
            row: dict[str, Any] = {
                "command": " ".join(["parallelrun", *cmd[1:]]), "best": round(min(walls), 3),
                "median": round(statistics.median(walls), 3), "cpu_median": round(statistics.median(cpus), 3),
                "target": TARGETS[name], "met": min(walls) <= TARGETS[name],
                "met_cpu": statistics.median(cpus) <= TARGETS[name],
            }
            if planned:
                row["planned_in_median"] = round(statistics.median(planned), 3)
            results["commands"][name] = row
    results["load_after"] = round(os.getloadavg()[0], 2)
    return results


def render(results: dict[str, Any]) -> str:
    lines = [f"start-up with PYTHONDONTWRITEBYTECODE=1 (bytecode precompiled: "
             f"{'yes' if results['bytecode_precompiled'] else 'NO - run make venv'}; "
             f"load average {results['load_before']} -> {results['load_after']}; {results['runs']} runs)",
             f"  {'command':34} {'best':>7} {'median':>7} {'cpu':>7} {'target':>7}  met (wall / cpu)"]
    for row in results["commands"].values():
        lines.append(f"  {row['command']:34} {row['best']:>6.2f}s {row['median']:>6.2f}s {row['cpu_median']:>6.2f}s "
                     f"{row['target']:>6.2f}s  {'yes' if row['met'] else 'NO'} / {'yes' if row['met_cpu'] else 'NO'}"
                     + (f"   (planned in {row['planned_in_median']:.2f} s)" if "planned_in_median" in row else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per command (default 5)")
    ap.add_argument("--out", type=Path, default=None, help="JSON result (default bench/results/startup-<time>.json)")
    args = ap.parse_args(argv)
    results = measure(args.runs)
    out = args.out or HERE / "results" / f"startup-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
