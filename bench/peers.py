"""The contenders: parallelrun and what a user would write instead, on exactly the same work.

Every runner takes a :class:`Work` and returns a :class:`Outcome` (wall seconds, output lines). All of them
call the same entry script (``init()`` once per process, ``run()`` per mini-batch), format results the way
parallelrun's default ``append_row`` text format does, and write every row to one output file:

- ``serial``: one process, no framework;
- ``pool``: a bare ``multiprocessing.Pool`` (spawn, an initializer that runs ``init()``,
  ``imap_unordered`` over the mini-batches, chunksize 1) - the "no framework" bound;
- ``ray_data``: Ray Data ``map_batches`` with an actor pool of the same size (see ``run_ray_data``);
- ``parallelrun``: ``parallelrun.run_job`` in this process (local executor, or ``compute: ray``).

File workloads list their folder inside the timed region (a user has to); tabular workloads hand the
peers the mini-batches parallelrun's planner makes, computed outside the timed region, while parallelrun's
own time includes planning them (a conservative choice for parallelrun).
"""

from __future__ import annotations

import importlib.util
import io
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

#: Ray Data actors ask for half a CPU each: see run_ray_data
RAY_ACTOR_CPUS = 0.5


@dataclass
class Work:
    """One workload, as every contender sees it."""

    name: str
    kind: str  # file | csv | parquet
    script: Path
    argv: list[str]
    inputs: Path  # a folder (file workloads) or one file (tabular)
    mini_batch_size: int | str
    items: int
    processes: int
    scratch: Path
    env: dict[str, str] = field(default_factory=dict)
    tabular_batches: list[Any] = field(default_factory=list)  # TabularBatch descriptors (tabular kinds)

    @property
    def rows_per_batch(self) -> int:
        """Ray Data's batch_size (rows) matching parallelrun's byte-sized tabular mini-batches."""
        sizes = sorted(b.n_items for b in self.tabular_batches)
        return sizes[len(sizes) // 2] if sizes else 1

    def out_file(self, who: str) -> Path:
        d = self.scratch / who
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d / "out.txt"


@dataclass
class Outcome:
    seconds: float
    lines: int
    output: Path
    first_result: float | None = None  # seconds to the first result (W5)
    extra: dict[str, Any] = field(default_factory=dict)


# --- shared helpers (run in worker processes too) ----------------------------------------------------
def load_script(path: str, argv: list[str], env: dict[str, str]) -> ModuleType:
    """Import the entry script as a fresh module, with its arguments in sys.argv, and call init()."""
    os.environ.update(env)
    sys.argv = [path, *argv]
    spec = importlib.util.spec_from_file_location(f"bench_entry_{os.getpid()}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if hasattr(mod, "init"):
        mod.init()
    return mod


def format_rows(result: Any) -> bytes:
    """parallelrun's default text rows: str(item) per line; DataFrame rows space separated, no header."""
    if hasattr(result, "to_csv"):
        return result.to_csv(sep=" ", header=False, index=False, lineterminator="\n").encode()
    return "".join(f"{item}\n" for item in result).encode()


def read_tabular(b: Any) -> Any:
    """A tabular mini-batch as a DataFrame, read directly (CSV byte range with its header, or row groups)."""
    import pandas as pd

    if b.format == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(b.path)
        first = sum(pf.metadata.row_group(g).num_rows for g in range(b.row_groups[0]))
        return pf.read_row_groups(list(b.row_groups)).slice(b.row_start - first, b.n_items).to_pandas()
    with open(b.path, "rb") as f:
        header = f.read(b.header_end)
        f.seek(b.start)
        data = f.read(b.end - b.start)
    return pd.read_csv(io.BytesIO(header + data))


def list_files(folder: Path) -> list[str]:
    out: list[str] = []
    for dirpath, dirnames, files in os.walk(folder):
        dirnames.sort()
        out.extend(os.path.join(dirpath, f) for f in sorted(files))
    return out


def _batches(work: Work) -> list[Any]:
    if work.kind == "file":
        paths = list_files(work.inputs)
        n = int(work.mini_batch_size)
        return [paths[i:i + n] for i in range(0, len(paths), n)]
    return list(work.tabular_batches)


def _write_count(path: Path, chunks: Any) -> int:
    lines = 0
    with open(path, "wb") as f:
        for data in chunks:
            f.write(data)
            lines += data.count(b"\n")
    return lines


# --- serial ------------------------------------------------------------------------------------------
def run_serial(work: Work) -> Outcome:
    """One fresh process, no framework: it pays its interpreter start and imports, as the pool's workers
    and parallelrun's do (run in the benchmark's own process it would reuse imports made earlier)."""
    import pickle
    import subprocess

    out = work.out_file("serial")
    spec = work.scratch / "serial-work.pkl"
    spec.write_bytes(pickle.dumps((work, str(out))))
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "import bench.peers as p; p._serial_main()", str(spec)],
                          capture_output=True, text=True, timeout=3600, cwd=work.scratch)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"serial run failed:\n{done.stderr[-2000:]}")
    lines, first = (float(x) for x in done.stdout.split())
    return Outcome(seconds, int(lines), out, first)


def _serial_main() -> None:
    import pickle

    t0 = time.perf_counter()
    work, out = pickle.loads(Path(sys.argv[1]).read_bytes())
    mod = load_script(str(work.script), work.argv, work.env)
    first: list[float] = []

    def results() -> Any:
        for b in _batches(work):
            data = format_rows(mod.run(b if work.kind == "file" else read_tabular(b)))
            if not first:
                first.append(time.perf_counter() - t0)
            yield data

    lines = _write_count(Path(out), results())
    print(lines, first[0] if first else 0.0)


# --- multiprocessing.Pool ----------------------------------------------------------------------------
_MOD: Any = None
_KIND = "file"


def _pool_init(script: str, argv: list[str], env: dict[str, str], kind: str) -> None:
    global _MOD, _KIND
    _KIND = kind
    _MOD = load_script(script, argv, env)


def _pool_task(b: Any) -> bytes:
    return format_rows(_MOD.run(b if _KIND == "file" else read_tabular(b)))


def run_pool(work: Work) -> Outcome:
    out = work.out_file("pool")
    t0 = time.perf_counter()
    first: list[float] = []
    batches = _batches(work)
    ctx = mp.get_context("spawn")
    with ctx.Pool(work.processes, initializer=_pool_init,
                  initargs=(str(work.script), work.argv, work.env, work.kind)) as pool:

        def results() -> Any:
            for data in pool.imap_unordered(_pool_task, batches):
                if not first:
                    first.append(time.perf_counter() - t0)
                yield data

        lines = _write_count(out, results())
    return Outcome(time.perf_counter() - t0, lines, out, first[0] if first else None)


# --- Ray Data ----------------------------------------------------------------------------------------
class _RayUDF:
    """The map_batches callable: init() in the constructor (once per actor), run() per batch."""

    def __init__(self, script: str, argv: list[str], env: dict[str, str], kind: str) -> None:
        self.kind = kind
        self.mod = load_script(script, argv, env)

    def __call__(self, batch: Any) -> Any:
        import numpy as np

        if self.kind == "file":
            result = self.mod.run([str(p) for p in batch["path"]])
            return {"line": np.array([str(x) for x in result], dtype=object)}
        return self.mod.run(batch)


def ray_init(processes: int) -> None:
    """One Ray instance for the whole benchmark (its start-up is not timed), sized like the machine."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=processes, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 object_store_memory=2 * 1024**3, configure_logging=False)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False


def run_ray_data(work: Work) -> Outcome:
    """Ray Data ``map_batches`` over an actor pool of ``processes`` actors.

    On a 2-CPU Ray instance, actors that take one CPU each hold both CPUs, so the read task of
    ``read_csv``/``read_parquet`` never gets one and the job hangs. The actors therefore ask for
    ``RAY_ACTOR_CPUS`` (0.5) CPU each: the pool is still exactly ``processes`` actors (``concurrency``),
    and a read task can be scheduled next to them.
    """
    import ray

    out = work.out_file("ray_data")
    t0 = time.perf_counter()
    first: list[float] = []
    if work.kind == "file":
        ds = ray.data.from_items([{"path": p} for p in list_files(work.inputs)])
        batch_size, fmt = int(work.mini_batch_size), "numpy"
    elif work.kind == "csv":
        ds, batch_size, fmt = ray.data.read_csv(str(work.inputs)), work.rows_per_batch, "pandas"
    else:
        ds, batch_size, fmt = ray.data.read_parquet(str(work.inputs)), work.rows_per_batch, "pandas"
    mapped = ds.map_batches(_RayUDF, fn_constructor_args=(str(work.script), work.argv, work.env, work.kind),
                            batch_size=batch_size, concurrency=work.processes, num_cpus=RAY_ACTOR_CPUS,
                            batch_format=fmt)

    def results() -> Any:
        for batch in mapped.iter_batches(batch_size=None, batch_format=fmt):
            if fmt == "numpy":
                data = "".join(f"{x}\n" for x in batch["line"]).encode()
            else:
                data = format_rows(batch)
            if not first:
                first.append(time.perf_counter() - t0)
            yield data

    lines = _write_count(out, results())
    return Outcome(time.perf_counter() - t0, lines, out, first[0] if first else None)


# --- parallelrun -------------------------------------------------------------------------------------
def job_spec(work: Work, compute: str = "local") -> dict[str, Any]:
    kind = "file" if work.kind == "file" else "tabular"
    return {
        "name": f"bench-{work.name.lower().replace(' ', '-')}",
        "entry_script": work.script.name,
        "source_directory": str(work.script.parent),
        "inputs": [{"type": kind, "path": str(work.inputs)}],
        "output": str(work.scratch / "parallelrun"),
        "mini_batch_size": work.mini_batch_size,
        "process_count_per_node": work.processes,
        "arguments": work.argv,
        "environment_variables": work.env,
        "run_invocation_timeout": 600,
        "compute": compute,
    }


def run_parallelrun(work: Work, compute: str = "local") -> Outcome:
    """parallelrun as a user meets it: the whole ``parallelrun run job.yml`` command in a process of its
    own (interpreter start-up, imports, planning and the final assembly included).

    The Ray backend is the exception: it runs in the process that holds the Ray instance Ray Data uses
    (``run_ray_group``), so both Ray contenders share one instance; it is timed from ``run_job``'s call.
    """
    who = "parallelrun" if compute == "local" else f"parallelrun_{compute}"
    out_dir = work.scratch / who
    shutil.rmtree(out_dir, ignore_errors=True)
    spec = {**job_spec(work, compute), "output": str(out_dir)}
    if compute == "local":
        import subprocess

        import yaml

        job = work.scratch / f"{who}.yml"
        job.write_text(yaml.safe_dump(spec))
        cli = Path(sys.executable).with_name("parallelrun")
        t0 = time.perf_counter()
        done = subprocess.run([str(cli), "run", str(job), "--workspace", str(work.scratch / "ws"), "--quiet"],
                              cwd=work.scratch, capture_output=True, text=True, timeout=3600)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"parallelrun run exited {done.returncode}:\n{done.stderr[-2000:]}")
        out = _result_file(out_dir)
        extra: dict[str, Any] = {}
    else:
        from parallelrun.config import validate_spec
        from parallelrun.runner import run_job

        t0 = time.perf_counter()
        result = run_job(validate_spec(spec), job_dir=work.scratch, workspace=work.scratch / "ws", progress="quiet")
        seconds = time.perf_counter() - t0
        if not result.ok:
            raise RuntimeError(f"parallelrun run {result.run_id} did not complete: {result.reason}")
        out = Path(result.output_file or _result_file(out_dir))
        extra = {"run_id": result.run_id}
    with open(out, "rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return Outcome(seconds, lines, out, extra=extra)


def _result_file(out_dir: Path) -> Path:
    """The job's one output file (``parallel_run_step.<ext>``) in its output folder."""
    found = sorted(out_dir.glob("parallel_run_step.*"))
    if len(found) != 1:
        raise RuntimeError(f"expected one parallel_run_step.* in {out_dir}, found {[p.name for p in found]}")
    return found[0]


RAY_PEERS = ("ray_data", "parallelrun_ray")


def run_ray_group(work: Work, peers: list[str], runs: int) -> dict[str, Any]:
    """Run the Ray contenders ``runs`` times each in a fresh process holding one Ray instance.

    Ray's daemons (GCS, raylet, idle workers) keep using CPU while Ray is up; on 2 cores that would slow
    every other contender measured in the same process. So Ray lives only in this child: started (not
    timed), both Ray contenders measured on the same instance, shut down. Returns {peer: [seconds]} and
    {"errors": {peer: message}}.
    """
    import json
    import pickle
    import subprocess

    spec = work.scratch / "ray-work.pkl"
    spec.write_bytes(pickle.dumps((work, peers, runs)))
    done = subprocess.run([sys.executable, "-c", "import bench.peers as p; p._ray_main()", str(spec)],
                          capture_output=True, text=True, timeout=3600, cwd=work.scratch)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("BENCH-RAY "):
            return dict(json.loads(line[len("BENCH-RAY "):]))
    return {"errors": {p: f"the Ray process exited {done.returncode}: {done.stderr[-1500:]}" for p in peers}}


def _ray_main() -> None:
    import json
    import pickle

    work, peers, runs = pickle.loads(Path(sys.argv[1]).read_bytes())
    out: dict[str, Any] = {p: [] for p in peers}
    errors: dict[str, str] = {}
    ray_init(work.processes)
    import parallelrun.runner  # noqa: F401 - a library import is a one-off, not part of any run

    for r in range(runs):
        for peer in peers[r % len(peers):] + peers[:r % len(peers)]:
            if peer in errors:
                continue
            try:
                o = RUNNERS[peer](work)
            except Exception as e:  # noqa: BLE001 - reported, not fatal
                errors[peer] = f"{type(e).__name__}: {e}"
                continue
            if o.lines != work.items:
                errors[peer] = f"wrote {o.lines} rows for {work.items} items"
                continue
            out[peer].append(o.seconds)
    import ray

    ray.shutdown()
    print("BENCH-RAY " + json.dumps({**out, "errors": errors}), flush=True)


RUNNERS: dict[str, Callable[[Work], Outcome]] = {
    "parallelrun": run_parallelrun,
    "pool": run_pool,
    "ray_data": run_ray_data,
    "serial": run_serial,
    "parallelrun_ray": lambda w: run_parallelrun(w, compute="ray"),
}
