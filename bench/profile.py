"""Where the driver's time goes per mini-batch: ``python -m bench.profile [--files N] [--src DIR]``.

Runs W1 (tiny files, ``run()`` returns the names, mini_batch_size 10, 2 processes) once to warm up, then
once under cProfile (timing CPU, not waits), and splits the driver's CPU time into planning, dispatch, receiving results,
journal commits and the final output/report writing, in microseconds per mini-batch. The workers' side
comes from the journal (``seconds``: time inside ``WorkerRuntime.process``, i.e. opening, ``run()`` and
formatting) and from their CPU time. ``--src`` points at another checkout's ``src`` folder to profile an
older engine the same way (how docs/performance.md's "before" column was made). cProfile inflates
Python-heavy code, so read the split, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

# (category, functions whose cumulative time counts there); the first match wins, in this order
CATEGORIES = [
    ("plan (list, stat, descriptors, journal rows)", ["PlanFeed.step", "Journal.add_batches"]),
    ("journal commits", ["Journal.commit_successes", "Journal.commit_success"]),
    ("dispatch (descriptor, send)", ["Feed.descriptor", "Journal.batch", "LocalExecutor.submit",
                                     "LocalExecutor._flush"]),
    ("receive results (wait, read, decode)", ["LocalExecutor.poll"]),
    ("final output and reports", ["merge_output", "write_reports"]),
]


def _qualified(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative seconds by 'Class.method' (cProfile knows only file, line and name: map by line)."""
    import ast

    qual: dict[str, float] = {}
    cache: dict[str, dict[int, str]] = {}
    for (filename, line, name), (_, _, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "parallelrun" not in filename:
            continue
        if filename not in cache:
            names: dict[int, str] = {}
            try:
                tree = ast.parse(Path(filename).read_text())
            except (OSError, SyntaxError):
                tree = ast.Module(body=[], type_ignores=[])
            for node in tree.body:
                if isinstance(node, ast.ClassDef):
                    for item in node.body:
                        if isinstance(item, ast.FunctionDef):
                            names[item.lineno] = f"{node.name}.{item.name}"
                elif isinstance(node, ast.FunctionDef):
                    names[node.lineno] = node.name
            cache[filename] = names
        key = cache[filename].get(line, name)
        qual[key] = qual.get(key, 0.0) + ct
    return qual


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--src", type=Path, default=None, help="profile the parallelrun in this src folder instead")
    ap.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parent / ".data")
    args = ap.parse_args(argv)
    if args.src:
        sys.path.insert(0, str(args.src.resolve()))
    import os

    os.environ["PYTHONPATH"] = os.pathsep.join([*([str(args.src.resolve())] if args.src else []),
                                                os.environ.get("PYTHONPATH", "")])
    from parallelrun.config import validate_spec
    from parallelrun.runner import run_job

    from .data import tiny_files

    folder = tiny_files(args.data_dir, args.files, lambda m: print(m, file=sys.stderr))
    scratch = Path(tempfile.mkdtemp(prefix="parallelrun-profile-"))
    spec = validate_spec({"name": "profile-w1", "entry_script": "names.py",
                          "source_directory": str(Path(__file__).resolve().parent / "scripts"),
                          "inputs": [{"type": "file", "path": str(folder)}], "output": str(scratch / "out"),
                          "mini_batch_size": 10, "process_count_per_node": 2})
    try:
        run_job(spec, job_dir=scratch, workspace=scratch / "ws0", progress="quiet")  # warm-up
        prof = cProfile.Profile(time.process_time)  # CPU time: waiting for workers is not the driver's cost
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        prof.enable()
        result = run_job(spec, job_dir=scratch, workspace=scratch / "ws", progress="quiet")
        prof.disable()
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        stats = pstats.Stats(prof)
        qual = _qualified(stats)
        total = sum(ct for (_, _, name), (_, _, _, ct, _) in stats.stats.items()  # type: ignore[attr-defined]
                    if name == "run_job")
        batches = result.counts["batches"]
        (run_dir,) = list((scratch / "ws" / "runs").iterdir())
        with sqlite3.connect(run_dir / "journal.sqlite") as db:
            secs = [r[0] for r in db.execute("SELECT seconds FROM batches WHERE seconds IS NOT NULL")]
        print(f"W1: {args.files:,} files, {batches:,} mini-batches, wall {wall:.2f} s under cProfile "
              f"({wall / batches * 1e6:.0f} us per mini-batch)")
        print(f"{'driver CPU, per mini-batch':45s} {'us':>8s}")
        used = 0.0
        for label, funcs in CATEGORIES:
            t = sum(qual.get(f, 0.0) for f in funcs)
            if label.startswith("receive"):
                t -= qual.get("LocalExecutor._flush", 0.0)  # counted under dispatch
            used += t
            print(f"  {label:43s} {t / batches * 1e6:8.1f}")
        print(f"  {'other (loop, scheduler, progress, set-up)':43s} {(total - used) / batches * 1e6:8.1f}")
        print(f"  {'driver CPU total':43s} {total / batches * 1e6:8.1f}")
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        print(f"{'workers, per mini-batch':45s}")
        print(f"  {'inside process() (open, run, format)':43s} {statistics.median(secs) * 1e6:8.1f}  (median)")
        print(f"  {'worker CPU (both processes, all costs)':43s} {cpu / batches * 1e6:8.1f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
