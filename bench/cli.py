"""``python -m bench`` (``make bench``): run the workloads, print the table, write JSON to bench/results/.

    python -m bench                    # everything at full size (~15-20 min; inputs generated once)
    python -m bench --quick            # smaller inputs, same workloads (a few minutes)
    python -m bench --smoke            # tiny inputs, one run each (seconds; what the test suite runs)
    python -m bench --only W1,W3 --runs 5
    python -m bench --peers parallelrun,pool   # leave out Ray Data (and the serial baseline)
    python -m bench.startup            # start-up time of `parallelrun --help` and `plan` (bench/startup.py)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from .report import evaluate, render
from .workloads import FULL, QUICK, SMOKE, WORKLOADS, Bench

HERE = Path(__file__).resolve().parent
ALL_PEERS = ["parallelrun", "pool", "ray_data", "serial"]


def _machine() -> dict[str, Any]:
    import psutil

    info: dict[str, Any] = {
        "cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "platform": platform.platform(), "python": platform.python_version(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    for mod in ("ray", "onnxruntime", "pandas", "pyarrow", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description="parallelrun against its peers (issue 5)")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="tiny inputs, one run each (seconds)")
    size.add_argument("--quick", action="store_true", help="smaller inputs (a few minutes)")
    ap.add_argument("--only", default="", help="comma-separated workloads, e.g. W1,W2 (default: all)")
    ap.add_argument("--runs", type=int, default=None, help="repeats per contender (default: 3; smoke: 1)")
    ap.add_argument("--peers", default="", help=f"contenders for W1-W3 (default: {','.join(ALL_PEERS)})")
    ap.add_argument("--ray-backend", action="store_true",
                    help="also run parallelrun's Ray backend: on W1-W3 `parallelrun run --compute <head>` on the "
                         "Ray head Ray Data uses; on W7 a whole `parallelrun run` with its own private Ray instance")
    ap.add_argument("--data-dir", type=Path, default=HERE / ".data", help="cache of generated inputs")
    ap.add_argument("--out", type=Path, default=None, help="JSON result file (default: bench/results/<time>.json)")
    args = ap.parse_args(argv)

    sizes = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.runs:
        from dataclasses import replace

        sizes = replace(sizes, runs=args.runs)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    only = [w.strip().upper() for w in args.only.split(",") if w.strip()] or list(WORKLOADS)
    unknown = [w for w in only if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    peers = [p.strip() for p in args.peers.split(",") if p.strip()] or list(ALL_PEERS)
    if "parallelrun" not in peers:
        peers.insert(0, "parallelrun")
    if args.ray_backend:
        peers.append("parallelrun_ray")

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    # Workers find the benchmark's entry scripts and this package from the repository root.
    root = str(HERE.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    if root not in sys.path:
        sys.path.insert(0, root)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(sizes, args.data_dir.resolve(), peers, log)
    started = time.time()
    results: dict[str, Any] = {
        "mode": mode, "sizes": sizes.__dict__, "peers": peers, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": _machine(), "workloads": {}, "load": {},
    }
    log(f"benchmark ({mode}): {', '.join(only)}; contenders {', '.join(peers)}; load average "
        f"{os.getloadavg()[0]:.2f}")
    for name in only:
        before = os.getloadavg()
        t0 = time.time()
        log(f"{name} ...")
        results["workloads"][name] = WORKLOADS[name](bench)
        results["load"][name] = {"before": before[0], "after": os.getloadavg()[0],
                                 "seconds": round(time.time() - t0, 1)}
    results["seconds"] = round(time.time() - started, 1)
    results["targets"] = evaluate(results)
    out = args.out or HERE / "results" / f"bench-{mode}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(render(results))
    log(f"wrote {out} ({results['seconds']:.0f} s in all)")
    return 0
