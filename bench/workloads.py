"""W1-W6 from issue 5: what each measures, at full, quick and smoke sizes.

W1-W3 run every contender on the same mini-batches, repeatedly, in rotating order, and report medians
and per-repeat ratios (parallelrun's items/s over the peer's, measured within the same repeat). W4-W6
drive the ``parallelrun`` command in a subprocess, as a user would, and read its journal and logs.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from . import data
from .peers import RUNNERS, Work, job_spec
from .ray_group import RAY_PEERS, run_ray_group

SCRIPTS = Path(__file__).resolve().parent / "scripts"
PROCESSES = 2


@dataclass(frozen=True)
class Sizes:
    w1_files: int
    w2_images: int
    w3_rows: int
    w3_batch: str
    w4_files: tuple[int, int]
    w6_images: int
    runs: int
    model_iterations: int = 200  # training of the digits model (its accuracy times nothing)
    w7_rows: int = 1_000_000  # W7: rows of 256 float32 out (~1 GB of Parquet at full size)
    w4_flat: int = 1_000_000  # W4: files in one flat folder (listed in packed runs), planned as the tree is


FULL = Sizes(100_000, 20_000, 2_000_000, "10MB", (100_000, 1_000_000), 20_000, runs=3)
QUICK = Sizes(20_000, 4_000, 200_000, "10MB", (20_000, 200_000), 4_000, runs=3, w7_rows=200_000, w4_flat=200_000)
SMOKE = Sizes(300, 100, 4_000, "256KB", (1_000, 3_000), 200, runs=1, model_iterations=10, w7_rows=12_000,
              w4_flat=3_000)


class Bench:
    """Shared state of one benchmark run: sizes, folders, contenders, logging."""

    def __init__(self, sizes: Sizes, data_dir: Path, peers: list[str], log: Callable[[str], None]) -> None:
        self.sizes = sizes
        self.data_dir = data_dir
        self.scratch = data_dir / "scratch"
        self.peers = peers
        self.log = log

    def work(self, name: str, kind: str, script: str, argv: list[str], inputs: Path, mbs: int | str,
             items: int, tabular_batches: list[Any] | None = None) -> Work:
        scratch = self.scratch / name.replace(" ", "-")
        scratch.mkdir(parents=True, exist_ok=True)
        return Work(name, kind, SCRIPTS / script, argv, inputs, mbs, items, PROCESSES, scratch,
                    tabular_batches=tabular_batches or [])

    # --- contenders side by side ----------------------------------------------------------------------
    def compare(self, work: Work, peers: list[str]) -> dict[str, Any]:
        """Run every contender ``runs`` times (rotating the order) and summarise.

        Ray contenders run after the others, on a Ray head of their own (see ``run_ray_group``);
        their r-th run is paired with parallelrun's r-th run for the per-repeat ratio.
        """
        import parallelrun.runner  # noqa: F401 - a library import is a one-off, not part of any run

        local = [p for p in peers if p not in RAY_PEERS]
        seconds: dict[str, list[float]] = {p: [] for p in peers}
        errors: dict[str, str] = {}
        for r in range(self.sizes.runs):
            for peer in local[r % len(local):] + local[:r % len(local)]:
                if peer in errors:
                    continue
                try:
                    out = RUNNERS[peer](work)
                except Exception as e:  # noqa: BLE001 - a failing peer is reported, not fatal
                    errors[peer] = f"{type(e).__name__}: {e}"
                    self.log(f"  {work.name} {peer}: FAILED {errors[peer]}")
                    continue
                if out.lines != work.items:
                    errors[peer] = f"wrote {out.lines} rows for {work.items} items"
                    self.log(f"  {work.name} {peer}: WRONG OUTPUT {errors[peer]}")
                    continue
                seconds[peer].append(out.seconds)
                self._logged(work, r, peer, out.seconds)
        ray_peers = [p for p in peers if p in RAY_PEERS]
        if ray_peers:
            got = run_ray_group(work, ray_peers, self.sizes.runs,
                                on_run=lambda r, peer, s: self._logged(work, r, peer, s))
            errors.update(got.pop("errors", {}))
            for peer in ray_peers:
                seconds[peer] = list(got.get(peer, []))
                if peer in errors:
                    self.log(f"  {work.name} {peer}: FAILED {errors[peer]}")
        mine = seconds["parallelrun"]
        rows = []
        for peer in peers:
            s = seconds[peer]
            row: dict[str, Any] = {"peer": peer, "seconds": s, "error": errors.get(peer)}
            if s:
                med = statistics.median(s)
                row.update(median_seconds=med, items_per_second=work.items / med)
            ratios = [theirs / ours for ours, theirs in zip(mine, s, strict=False)]  # = pr items/s ÷ peer items/s
            if peer != "parallelrun" and ratios:
                row["parallelrun_ratio"] = statistics.median(ratios)
                row["parallelrun_ratios"] = ratios
            rows.append(row)
        return {"items": work.items, "mini_batch_size": work.mini_batch_size, "processes": work.processes,
                "rows": rows}

    def _logged(self, work: Work, r: int, peer: str, seconds: float) -> None:
        self.log(f"  {work.name} run {r + 1}/{self.sizes.runs} {peer:16s} {seconds:8.3f} s  "
                 f"{work.items / seconds:12,.0f} items/s")

    # --- W1 -------------------------------------------------------------------------------------------
    def w1(self) -> dict[str, Any]:
        n = self.sizes.w1_files
        folder = data.tiny_files(self.data_dir, n, self.log)
        data.warm([folder])
        return self.compare(self.work("W1", "file", "names.py", [], folder, 10, n), self.peers)

    # --- W2 -------------------------------------------------------------------------------------------
    def w2(self) -> dict[str, Any]:
        n = self.sizes.w2_images
        folder = data.digit_pngs(self.data_dir, n, self.log)
        model = data.digits_model(self.data_dir, self.log, self.sizes.model_iterations)
        data.warm([folder, model])
        work = self.work("W2", "file", "digits.py", ["--model", str(model)], folder, 5, n)
        return self.compare(work, self.peers)

    # --- W3 -------------------------------------------------------------------------------------------
    def w3(self) -> dict[str, Any]:
        from parallelrun.data.tabular import parse_size, plan_tabular

        rows = self.sizes.w3_rows
        csv, parquet = data.tabular(self.data_dir, rows, self.log)
        model = data.tabular_model(self.data_dir, self.log)
        out: dict[str, Any] = {}
        for kind, path in (("csv", csv), ("parquet", parquet)):
            data.warm([path])
            batches = list(plan_tabular([str(path)], parse_size(self.sizes.w3_batch)))
            work = self.work(f"W3 {kind}", kind, "score.py", ["--model", str(model)], path,
                             self.sizes.w3_batch, rows, batches)
            out[kind] = self.compare(work, self.peers)
            out[kind]["bytes"] = path.stat().st_size
            out[kind]["batches"] = len(batches)
        return out

    # --- W4 -------------------------------------------------------------------------------------------
    def w4(self) -> dict[str, Any]:
        out: dict[str, Any] = {"runs": []}
        for n in self.sizes.w4_files:
            tree = data.file_tree(self.data_dir, n, self.log)
            out["runs"] += self._w4_runs(self.work(f"W4-{n}", "file", "names.py", [], tree, 10, n), f"{n:,} files")
        by_n: dict[int, dict[str, float]] = {n: _w4_median([m for m in out["runs"] if m["files"] == n])
                                             for n in self.sizes.w4_files}
        small, large = self.sizes.w4_files
        out["median"] = {str(n): v for n, v in by_n.items()}
        out["rss_growth"] = by_n[large]["driver_peak_rss_mb"] / by_n[small]["driver_peak_rss_mb"]
        # The same files in ONE folder: listed in packed runs (bounded memory) by one forked walker, not
        # dealt subtree by subtree to two; measured apart, outside the targets (issue 9 sets none for it).
        n = self.sizes.w4_flat
        flat = data.flat_files(self.data_dir, n, self.log)
        runs = self._w4_runs(self.work(f"W4-flat-{n}", "file", "names.py", [], flat, 10, n), f"{n:,} files in one folder")
        out["flat"] = {"files": n, "runs": runs, "median": _w4_median(runs)}
        return out

    def _w4_runs(self, work: Work, what: str) -> list[dict[str, Any]]:
        runs = []
        for r in range(self.sizes.runs):
            m = self._cli_run(work, measure_rss=True)
            m["files"] = work.items
            runs.append(m)
            self.log(f"  W4 {what} run {r + 1}: first dispatch {m['first_dispatch_s']:.3f} s, planned "
                     f"{m['files_per_second']:,.0f} files/s, driver peak RSS {m['driver_peak_rss_mb']:.0f} MB, "
                     f"total {m['seconds']:.1f} s")
        return runs

    # --- W5 -------------------------------------------------------------------------------------------
    def w5(self) -> dict[str, Any]:
        n = self.sizes.w2_images
        folder = data.digit_pngs(self.data_dir, n, self.log)
        model = data.digits_model(self.data_dir, self.log, self.sizes.model_iterations)
        work = self.work("W5", "file", "digits.py", ["--model", str(model)], folder, 5, n)
        firsts: list[float] = []
        pool_firsts: list[float] = []
        for r in range(self.sizes.runs):
            m = self._cli_run(work, stop_after_first=True)
            firsts.append(m["first_commit_s"])
            p = RUNNERS["pool"](work)
            assert p.first_result is not None
            pool_firsts.append(p.first_result)
            self.log(f"  W5 run {r + 1}: parallelrun run -> first committed result {m['first_commit_s']:.3f} s "
                     f"(bare Pool, in-process, first result {p.first_result:.3f} s)")
        return {"first_commit_seconds": firsts, "median_first_commit_s": statistics.median(firsts),
                "pool_first_result_seconds": pool_firsts, "median_pool_first_result_s": statistics.median(pool_firsts)}

    # --- W6 -------------------------------------------------------------------------------------------
    def w6(self) -> dict[str, Any]:
        n = self.sizes.w6_images
        folder = data.digit_pngs(self.data_dir, n, self.log)
        model = data.digits_model(self.data_dir, self.log, self.sizes.model_iterations)
        work = self.work("W6", "file", "digits.py", ["--model", str(model)], folder, 5, n)
        names = sorted(os.listdir(folder))
        runs = []
        for r in range(self.sizes.runs):
            full = self._cli_run(work)
            exec_log = work.scratch / "exec.log"
            exec_log.unlink(missing_ok=True)
            cut = self._cli_run(work, kill_at=0.5, env={"BENCH_EXEC_LOG": str(exec_log)})
            resumed = self._cli_resume(work, cut["run_id"], env={"BENCH_EXEC_LOG": str(exec_log)})
            starts = exec_log.read_text().splitlines()
            redone = len(starts) - len(set(starts))
            rows = Path(resumed["output"]).read_text().splitlines()
            row_names = [x.split(":", 1)[0] for x in rows]
            m = {"batches": (n + 4) // 5, "killed_after_committed": cut.get("committed_at_kill"),
                 "batches_run_twice": redone, "workers": PROCESSES,
                 "rows": len(rows), "duplicate_rows": len(row_names) - len(set(row_names)),
                 "missing_rows": len(set(names) - set(row_names)),
                 "uninterrupted_s": full["seconds"], "killed_s": cut["seconds"], "resume_s": resumed["seconds"]}
            m["total_over_uninterrupted"] = (m["killed_s"] + m["resume_s"]) / m["uninterrupted_s"]
            runs.append(m)
            self.log(f"  W6 run {r + 1}: killed at {m['killed_after_committed']}/{m['batches']} committed, "
                     f"{redone} mini-batches ran twice, {m['duplicate_rows']} duplicate and {m['missing_rows']} "
                     f"missing rows, {m['killed_s']:.2f} s + resume {m['resume_s']:.2f} s vs "
                     f"{m['uninterrupted_s']:.2f} s uninterrupted")
        return {"runs": runs, "max_batches_run_twice": max(m["batches_run_twice"] for m in runs),
                "median_total_over_uninterrupted": statistics.median(m["total_over_uninterrupted"] for m in runs)}

    # --- the command line in a subprocess ---------------------------------------------------------------
    def _job(self, work: Work) -> tuple[Path, Path]:
        d = work.scratch / "cli"
        if d.exists():
            import shutil

            shutil.rmtree(d)
        d.mkdir(parents=True)
        spec = job_spec(work)
        spec["output"] = str(d / "out")
        (d / "job.yml").write_text(yaml.safe_dump(spec))
        return d / "job.yml", d / "ws"

    def _cli_run(self, work: Work, *, measure_rss: bool = False, stop_after_first: bool = False,
                 kill_at: float | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
        job, ws = self._job(work)
        rss_file = job.parent / "rss.json"
        if measure_rss:
            cmd = [sys.executable, "-m", "bench._driver", str(rss_file), "run", str(job), "--workspace", str(ws),
                   "--quiet"]
        else:
            cmd = [*_parallelrun_cmd(), "run", str(job), "--workspace", str(ws), "--quiet"]
        launched = time.time()
        proc = subprocess.Popen(cmd, cwd=job.parent, env={**os.environ, **(env or {})},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        m: dict[str, Any] = {}
        batches = (work.items + int(work.mini_batch_size) - 1) // int(work.mini_batch_size)
        if stop_after_first or kill_at is not None:
            deadline = time.monotonic() + 600
            while proc.poll() is None and time.monotonic() < deadline:
                done = _committed(ws)
                if stop_after_first and done:
                    proc.send_signal(signal.SIGTERM)
                    break
                if kill_at is not None and done >= kill_at * batches:
                    proc.kill()  # kill -9 of the driver
                    m["committed_at_kill"] = done
                    break
                time.sleep(0.005)
        try:
            _, err = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        m["seconds"] = time.time() - launched
        if kill_at is None and not stop_after_first and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{err.decode()[-2000:]}")
        run_dir = _run_dir(ws)
        m["run_id"] = run_dir.name
        if stop_after_first:
            first = _first_commit(run_dir / "journal.sqlite")
            assert first is not None, "no result was committed"
            m["first_commit_s"] = first - launched
        if measure_rss:
            m["driver_peak_rss_mb"] = json.loads(rss_file.read_text())["maxrss_mb"]
            log = _driver_log(run_dir)
            m["first_dispatch_s"] = log["first dispatched"] - launched
            m["plan_seconds"] = log["plan_seconds"]
            m["files_per_second"] = work.items / log["plan_seconds"]
        out = job.parent / "out" / "parallel_run_step.txt"
        m["output"] = str(out)
        if kill_at is None and not stop_after_first:
            lines = sum(1 for _ in open(out, "rb"))
            if lines != work.items:
                raise RuntimeError(f"{work.name}: parallelrun wrote {lines} rows for {work.items} items")
        return m

    def _cli_resume(self, work: Work, run_id: str, env: dict[str, str]) -> dict[str, Any]:
        ws = work.scratch / "cli" / "ws"
        t0 = time.time()
        done = subprocess.run([*_parallelrun_cmd(), "resume", run_id, "--workspace", str(ws), "--quiet"],
                              cwd=ws.parent, env={**os.environ, **env}, capture_output=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"resume {run_id} exited {done.returncode}:\n{done.stderr.decode()[-2000:]}")
        return {"seconds": time.time() - t0, "output": str(ws.parent / "out" / "parallel_run_step.txt")}


def _w4_median(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {k: statistics.median(m[k] for m in runs)
            for k in ("first_dispatch_s", "files_per_second", "driver_peak_rss_mb", "seconds")}


def _parallelrun_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "parallelrun"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "parallelrun"]


def _run_dir(ws: Path) -> Path:
    runs = sorted((ws / "runs").iterdir()) if (ws / "runs").exists() else []
    if len(runs) != 1:
        raise RuntimeError(f"expected one run in {ws}, found {len(runs)}")
    return runs[0]


def _journal(ws: Path) -> Path | None:
    runs = ws / "runs"
    if not runs.exists():
        return None
    for d in runs.iterdir():
        j = d / "journal.sqlite"
        if j.exists():
            return j
    return None


def _committed(ws: Path) -> int:
    j = _journal(ws)
    if j is None:
        return 0
    try:
        with sqlite3.connect(f"file:{j}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM batches WHERE state='succeeded'").fetchone()[0])
    except sqlite3.Error:
        return 0


def _first_commit(journal: Path) -> float | None:
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5) as db:
        row = db.execute("SELECT MIN(finished_at) FROM batches WHERE state='succeeded'").fetchone()
    return row[0] if row else None


def _driver_log(run_dir: Path) -> dict[str, float]:
    """Timestamps (epoch seconds) of the driver log's milestones, and the planning time it reports."""
    out: dict[str, float] = {}
    for line in (run_dir / "logs" / "sys" / "driver.txt").read_text().splitlines():
        stamp = line[:23]
        try:
            ts = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        if "first mini-batch dispatched" in line:
            out["first dispatched"] = ts
        elif " planned " in line and " in " in line:
            out["plan_seconds"] = float(line.rsplit(" in ", 1)[1].split()[0])
    return out


def _w7(bench: Bench) -> dict[str, Any]:
    from .w7 import w7

    return w7(bench)


WORKLOADS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "W1": Bench.w1, "W2": Bench.w2, "W3": Bench.w3, "W4": Bench.w4, "W5": Bench.w5, "W6": Bench.w6, "W7": _w7,
}
