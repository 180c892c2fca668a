"""W7 (issue 9), large outputs: 1,000,000 rows in, 256 float32 out per row (~1 GB of Parquet), 2 processes.

Contenders, on the same input and mini-batches, one after the other in each repeat:

- ``parallelrun`` (one file) and ``parallelrun_dataset`` (``output_layout: dataset``): the whole
  ``parallelrun run`` command in a subprocess, as a user meets it, ``append_row_format: parquet``;
- ``pool``: a bare ``multiprocessing.Pool`` whose workers write one Parquet part per mini-batch (timed
  in-process, like the W1-W3 peers);
- ``ray_data``: Ray Data ``read_csv`` -> ``map_batches`` (2 actors) -> ``write_parquet``, each run in a
  process of its own connected to the bench's ``ray start --head`` (connecting not timed);
- ``parallelrun_ray`` (with ``--ray-backend``): the whole ``parallelrun run --compute <head>`` command on
  that same head.

For parallelrun it also records the driver's peak RSS, the peak disk used (output folder + run folder,
sampled every 0.1 s), the final output's size and the journal's size after the run.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from .peers import RAY_ACTOR_CPUS, load_script, ray_init, read_tabular
from .ray_group import BenchHead

SCRIPT = Path(__file__).resolve().parent / "scripts" / "embed.py"
PROCESSES = 2
ROWS_PER_BATCH = 10_000
# Every contender writes the same Parquet encoding as parallelrun (a dictionary for the id column, none
# for the 256 float columns; see ``parallelrun.outputs._format.dictionary_columns``), so the bytes written
# are the same and the times compare the frameworks, not two encodings.
DICTIONARY_COLUMNS = ["id"]


def embed_input(root: Path, rows: int, log: Any) -> Path:
    """``rows`` rows of ``id,text`` as CSV (~21 bytes a row), made once and cached."""
    from .data import _cached

    def make(tmp: Path) -> None:
        with open(tmp / "items.csv", "w") as f:
            f.write("id,text\n")
            for start in range(0, rows, 100_000):
                f.write("".join(f"{i},item {i:09d}\n" for i in range(start, min(rows, start + 100_000))))

    return _cached(root, f"w7-items-{rows}", make, log) / "items.csv"


def _du(paths: list[Path]) -> int:
    total = 0
    for root in paths:
        for dirpath, _, files in os.walk(root):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                except OSError:
                    pass
    return total


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    if path.is_file():
        return int(pq.ParquetFile(path).metadata.num_rows)
    return sum(int(pq.ParquetFile(p).metadata.num_rows) for p in sorted(path.glob("*.parquet")))


def run_parallelrun_cli(inputs: Path, batch: str, scratch: Path, layout: str, compute: str = "local",
                        address: str | None = None) -> dict[str, Any]:
    """The whole ``parallelrun run`` command; with ``address``, ``--compute <address>`` (the bench's Ray head)."""
    d = scratch / f"parallelrun-{layout}-{compute}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    spec = {"name": "bench-w7", "entry_script": SCRIPT.name, "source_directory": str(SCRIPT.parent),
            "inputs": [{"type": "tabular", "path": str(inputs)}], "output": str(d / "out"),
            "mini_batch_size": batch, "process_count_per_node": PROCESSES, "append_row_format": "parquet",
            "output_layout": layout, "run_invocation_timeout": 600, "compute": compute}
    (d / "job.yml").write_text(yaml.safe_dump(spec))
    rss = d / "rss.json"
    watched = [d / "out", d / "ws"]
    peak = {"bytes": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["bytes"] = max(peak["bytes"], _du(watched))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    sampler.start()
    done = subprocess.run([sys.executable, "-m", "bench._driver", str(rss), "run", str(d / "job.yml"),
                           "--workspace", str(d / "ws"), "--quiet", *(["--compute", address] if address else [])], cwd=d, capture_output=True, text=True,
                          timeout=3600)
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    if done.returncode != 0:
        raise RuntimeError(f"parallelrun run exited {done.returncode}:\n{done.stderr[-2000:]}")
    out = d / "out" / "parallel_run_step.parquet" if layout == "file" else d / "out"
    journals = list((d / "ws").rglob("journal.sqlite*"))
    m = {"seconds": seconds, "rows": _parquet_rows(out), "driver_peak_rss_mb": json.loads(rss.read_text())["maxrss_mb"],
         "peak_disk_mb": peak["bytes"] / 2**20, "output_mb": _du([d / "out"]) / 2**20,
         "journal_mb": sum(p.stat().st_size for p in journals) / 2**20,
         "run_folder_mb_after": _du([d / "ws"]) / 2**20}
    shutil.rmtree(d, ignore_errors=True)
    return m


_MOD: Any = None


def _pool_init(script: str) -> None:
    global _MOD
    _MOD = load_script(script, [], {})


def _pool_task(args: tuple[Any, str]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    b, out = args
    result = _MOD.run(read_tabular(b))
    table = pa.Table.from_pandas(result, preserve_index=False)
    pq.write_table(table, f"{out}/part-{b.index:08d}.parquet", use_dictionary=DICTIONARY_COLUMNS)
    return len(result)


def run_pool(batches: list[Any], scratch: Path) -> dict[str, Any]:
    out = scratch / "pool"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(PROCESSES, initializer=_pool_init, initargs=(str(SCRIPT),)) as pool:
        rows = sum(pool.imap_unordered(_pool_task, [(b, str(out)) for b in batches]))
    seconds = time.perf_counter() - t0
    m = {"seconds": seconds, "rows": rows, "output_mb": _du([out]) / 2**20}
    shutil.rmtree(out, ignore_errors=True)
    return m


class _Embed:
    def __init__(self, script: str) -> None:
        self.mod = load_script(script, [], {})

    def __call__(self, batch: Any) -> Any:
        return self.mod.run(batch)


def _ray_main() -> None:
    """In a process of its own: Ray Data read_csv -> map_batches -> write_parquet, ``runs`` times."""
    import ray

    inputs, scratch, runs, address = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    ray_init(PROCESSES, address)
    got: list[dict[str, Any]] = []
    for _ in range(runs):
        out = scratch / "ray_data"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        ds = ray.data.read_csv(inputs).map_batches(
            _Embed, fn_constructor_args=(str(SCRIPT),), batch_size=ROWS_PER_BATCH, concurrency=PROCESSES,
            num_cpus=RAY_ACTOR_CPUS, batch_format="pandas")
        ds.write_parquet(str(out), use_dictionary=DICTIONARY_COLUMNS)
        seconds = time.perf_counter() - t0
        got.append({"seconds": seconds, "rows": _parquet_rows(out), "output_mb": _du([out]) / 2**20})
        shutil.rmtree(out, ignore_errors=True)
    ray.shutdown()
    print("BENCH-W7-RAY " + json.dumps(got), flush=True)


def run_ray_data(inputs: Path, scratch: Path, runs: int, head: BenchHead) -> list[dict[str, Any]]:
    """Ray Data ``runs`` times, each in a fresh process, as W1-W3 run it (``ray_group.run_ray_data_on``): in
    one process, its later runs found the first run's worker processes still up (started, imports done),
    which no other contender's run gets (parallelrun's are whole commands; the Pool starts its own)."""
    got: list[dict[str, Any]] = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", "import bench.w7 as w; w._ray_main()", str(inputs),
                               str(scratch), "1", head.address], capture_output=True, text=True, timeout=3600,
                              cwd=scratch, env=head.driver_env())
        for line in reversed(done.stdout.splitlines()):
            if line.startswith("BENCH-W7-RAY "):
                got.extend(json.loads(line[len("BENCH-W7-RAY "):]))
                break
        else:
            raise RuntimeError(f"the Ray Data process exited {done.returncode}: {done.stderr[-1500:]}")
    return got


def w7(bench: Any) -> dict[str, Any]:
    from parallelrun.data.tabular import parse_size, plan_tabular

    rows = bench.sizes.w7_rows
    inputs = embed_input(bench.data_dir, rows, bench.log)
    from .data import warm

    warm([inputs])
    batch = f"{max(1, 21 * ROWS_PER_BATCH // 1024)}KB"  # ~10,000 rows of ~21 bytes
    batches = list(plan_tabular([str(inputs)], parse_size(batch)))
    scratch = bench.scratch / "W7"
    scratch.mkdir(parents=True, exist_ok=True)
    peers = ["parallelrun", "parallelrun_dataset", "pool"]
    if "parallelrun_ray" in bench.peers:
        peers.append("parallelrun_ray")
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in peers}
    errors: dict[str, str] = {}
    # The Ray contenders share one `ray start --head` (as W1-W3's do): parallelrun_ray is the whole
    # `parallelrun run --compute <head>` command, Ray Data a driver connected to the same head.
    head = BenchHead.start(PROCESSES) if "parallelrun_ray" in peers or "ray_data" in bench.peers else None
    try:
        _w7_runs(bench, peers, runs, errors, inputs, batch, batches, scratch, head)
    finally:
        if head is not None:
            head.stop()
    return _summary(rows, batches, batch, runs, errors)


def _w7_runs(bench: Any, peers: list[str], runs: dict[str, list[dict[str, Any]]], errors: dict[str, str],
             inputs: Path, batch: str, batches: list[Any], scratch: Path, head: BenchHead | None) -> None:
    rows = bench.sizes.w7_rows
    for r in range(bench.sizes.runs):
        for peer in peers[r % len(peers):] + peers[:r % len(peers)]:
            try:
                if peer == "pool":
                    m = run_pool(batches, scratch)
                else:
                    layout = "dataset" if peer == "parallelrun_dataset" else "file"
                    ray_peer = peer == "parallelrun_ray" and head is not None
                    m = run_parallelrun_cli(inputs, batch, scratch, layout, "ray" if ray_peer else "local",
                                            head.address if ray_peer and head else None)
            except Exception as e:  # noqa: BLE001 - a failing contender is reported, not fatal
                errors[peer] = f"{type(e).__name__}: {e}"
                bench.log(f"  W7 {peer}: FAILED {errors[peer][:300]}")
                continue
            if m["rows"] != rows:
                errors[peer] = f"wrote {m['rows']} rows for {rows}"
            runs[peer].append(m)
            bench.log(f"  W7 run {r + 1} {peer:20s} {m['seconds']:7.2f} s  " + ", ".join(
                f"{k} {v:.0f}" for k, v in m.items() if k.endswith("_mb")))
    if "ray_data" in bench.peers and head is not None:
        try:
            runs["ray_data"] = run_ray_data(inputs, scratch, bench.sizes.runs, head)
            for m in runs["ray_data"]:
                bench.log(f"  W7 ray_data {m['seconds']:7.2f} s  output {m['output_mb']:.0f} MB")
        except Exception as e:  # noqa: BLE001
            errors["ray_data"] = f"{type(e).__name__}: {e}"
            bench.log(f"  W7 ray_data: FAILED {errors['ray_data'][:300]}")


def _summary(rows: int, batches: list[Any], batch: str, runs: dict[str, list[dict[str, Any]]],
             errors: dict[str, str]) -> dict[str, Any]:
    summary: dict[str, Any] = {"rows": rows, "batches": len(batches), "mini_batch_size": batch,
                               "processes": PROCESSES, "runs": runs, "errors": errors, "median": {}}
    for peer, ms in runs.items():
        if ms:
            summary["median"][peer] = {k: statistics.median(m[k] for m in ms) for k in ms[0] if k != "rows"}
    med = summary["median"]
    if "parallelrun" in med:
        pr = med["parallelrun"]
        for peer in ("pool", "ray_data"):
            if peer in med:
                summary[f"ratio_vs_{peer}"] = med[peer]["seconds"] / pr["seconds"]
                if "parallelrun_dataset" in med:
                    summary[f"dataset_ratio_vs_{peer}"] = med[peer]["seconds"] / med["parallelrun_dataset"]["seconds"]
    return summary
