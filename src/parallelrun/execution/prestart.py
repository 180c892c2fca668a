"""Local workers started while the ``parallelrun run`` command is still starting up.

Before it can start a worker, ``parallelrun run`` spends ~0.3-0.4 s of one CPU importing its own code
(typer, pydantic, the engine) and reading the job; each worker then spends ~0.2 s more starting an
interpreter and importing the engine's worker side before it even loads the entry script. On a machine
with a CPU that the driver leaves idle meanwhile, a worker can do its part at the same time.

So the command line reads the job file first and, when the job plainly runs on local workers, starts
workers at once (:func:`start_for`): one per CPU beyond the driver's, at most the job's
``process_count_per_node`` (one on a 2-CPU machine, none on one CPU). Each imports the engine's worker
module and waits for its :class:`~parallelrun.execution.worker.WorkerConfig`; the local executor takes
these workers before it spawns any (:func:`take`) and sends them their configuration, after which they
are ordinary workers: children of the driver, their own process group, the job's environment variables,
working folder and ``sys.argv`` set from the configuration exactly as for a spawned worker. Nothing of
the job (its entry script, its packages) is imported ahead: a script that sets a variable such as
``OMP_NUM_THREADS`` before importing numpy sees no difference.

Starting *every* worker this way was measured and not kept (docs/performance.md, W7 "Session 7"): on 2
CPUs two importing workers slowed the driver, which on tiny mini-batches (W1) is the bottleneck.

Nothing is started when anything about the job is uncertain: another command or option than
``--workspace``/``--quiet``, another compute target than local, more than one node, an Environment (its
own interpreter), an Azure ML v2 YAML, a file that does not parse. Workers nobody took (the job failed
validation, or had no mini-batch) are stopped by :func:`discard` (the command calls it as it ends, and at
exit); one whose driver dies goes with it. ``PARALLELRUN_NO_PRESTART=1`` turns this off.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ENV_OFF = "PARALLELRUN_NO_PRESTART"  # set (to anything but "" or "0") to never start workers ahead

_waiting: list[tuple[Any, Any]] = []  # (process, the driver's end of its pipe), oldest first
_registered = False
started_ahead = False  # in a worker: True when this process was started ahead (tests and diagnostics read it)


@contextmanager
def main_module_hidden() -> Iterator[None]:
    """Start a spawned worker without it re-importing the driver's ``__main__``.

    ``multiprocessing`` makes every spawned child import the parent's main module (so pickled functions
    defined there resolve). A worker needs nothing from it - its target and arguments live in parallelrun -
    and importing it costs start-up time (the ``parallelrun`` command's CLI: typer, rich, ...) or, for a
    user's script that calls ``run_job`` without an ``if __name__ == "__main__":`` guard, runs the job
    again in every worker. The spawn machinery finds the main module by ``__spec__`` and ``__file__``
    while ``Process.start`` runs, so those are hidden for that moment.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved: dict[str, Any] = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def spare_cpus() -> int:
    """CPUs this process may use beyond the one the driver itself needs."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(0, cpus - 1)


def plan(argv: list[str]) -> int:
    """How many workers to start ahead for the command line ``argv`` (without the program name): the
    number for ``run JOB [--workspace W] [--quiet]`` of a plain local job, 0 for anything else."""
    found = _plain_local_job(argv)
    return _workers_for(found[0]) if found else 0


def _plain_local_job(argv: list[str]) -> tuple[dict[str, Any], Path] | None:
    """The job spec (as parsed YAML) and file of ``run JOB [--workspace W] [--quiet]`` when the job plainly
    runs on local workers; None for anything else."""
    if os.environ.get(ENV_OFF, "") not in ("", "0") or len(argv) < 2 or argv[0] != "run":
        return None
    rest = argv[2:]
    while rest:  # only options that cannot change where or how the job runs
        if rest[0] in ("--quiet", "-q") or rest[0].startswith("--workspace="):
            rest = rest[1:]
        elif rest[0] == "--workspace" and len(rest) > 1:
            rest = rest[2:]
        else:
            return None
    try:
        job = Path(argv[1])
        text = job.read_text(encoding="utf-8")
        if "$schema" in text:  # an Azure ML v2 YAML: compiled and run another way
            return None
        import yaml

        spec = yaml.safe_load(text)
    except Exception:  # noqa: BLE001 - whatever is wrong with the file, the command itself will say
        return None
    if not isinstance(spec, dict) or "entry_script" not in spec or "type" in spec:
        return None
    if spec.get("compute", "local") != "local" or spec.get("node_count", 1) != 1 or spec.get("environment"):
        return None
    return spec, job


def _workers_for(spec: dict[str, Any]) -> int:
    n = spec.get("process_count_per_node", os.cpu_count() or 1)
    if type(n) is not int or n < 1:
        return 0
    return min(n, spare_cpus())


def start_for(argv: list[str]) -> int:
    """Start the workers :func:`plan` says ``argv`` can use, and the listing of a big input folder
    (:func:`_walk_early`); returns how many workers were started."""
    found = _plain_local_job(argv)
    n = _workers_for(found[0]) if found else 0
    if found and n:
        _walk_early(*found)  # forked first: the walker inherits no worker's pipe
        prestart(n)
    return len(_waiting)


def _walk_early(spec: dict[str, Any], job: Path) -> None:
    """When the job's first input is a big local folder, start walking it now in a forked child
    (``data.files.walk_early``; planning adopts it): its ``stat`` calls run on the CPU that the command's
    start-up leaves idle, instead of beside the workers once the run has begun."""
    inputs = spec.get("inputs")
    first = inputs[0] if isinstance(inputs, list) and inputs else None
    if not isinstance(first, dict) or first.get("datastore"):  # a datastore's path is not the job folder's
        return
    path = first.get("path")
    path = path[0] if isinstance(path, list) and path else path
    if not isinstance(path, str):
        return
    try:
        from ..data.files import walk_early

        if walk_early(path, job.resolve().parent):
            _discard_at_exit()
    except Exception:  # noqa: BLE001 - planning walks it as usual, and says what is wrong with it
        pass


def _discard_at_exit() -> None:
    """What was started ahead and not taken is stopped at exit too (:func:`discard`), registered once."""
    global _registered
    if not _registered:
        _registered = True
        atexit.register(discard)


def prestart(n: int) -> None:
    """Start ``n`` workers that import the engine's worker module and wait for their configuration."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    for _ in range(n):
        parent, child = ctx.Pipe(duplex=True)
        p = ctx.Process(target=warm_main, args=(child, os.getpid()), name="parallelrun-worker", daemon=False)
        try:
            with main_module_hidden():
                p.start()
        except OSError:  # out of processes or memory: the executor spawns its workers later, as usual
            parent.close()
            child.close()
            break
        child.close()
        _waiting.append((p, parent))
    if _waiting:
        _discard_at_exit()


def take(python: str | None) -> tuple[Any, Any] | None:
    """A started worker, alive, for a configuration to be sent to it (``(process, connection)``); None when
    there is none, or when the job wants another interpreter (an Environment's)."""
    if python and os.path.realpath(python) != os.path.realpath(sys.executable):
        discard()
        return None
    while _waiting:
        p, conn = _waiting.pop(0)
        if p.exitcode is None:
            return p, conn
        discard_one(p, conn)
    return None


def discard() -> None:
    """Stop the workers nobody took, and an input folder's walk that planning did not adopt."""
    while _waiting:
        discard_one(*_waiting.pop())
    if "parallelrun.data.walk_ahead" in sys.modules:
        from ..data.walk_ahead import discard_early

        discard_early()


def discard_one(p: Any, conn: Any) -> None:
    # It holds nothing yet (no configuration, no input, no output): killed at once rather than waited for
    # through the imports it may still be doing.
    if p.exitcode is None:
        p.kill()
    p.join(5.0)
    conn.close()


def warm_main(conn: Any, driver_pid: int) -> None:
    """In the started process: import the worker side, wait for the configuration, then be a worker."""
    global started_ahead
    started_ahead = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle, as for any worker
    from .worker import die_with_parent, worker_main

    die_with_parent(driver_pid)
    try:
        cfg = conn.recv()
    except (EOFError, OSError):  # the driver went away, or discarded this worker
        return
    import multiprocessing as mp

    mp.current_process().name = cfg.agent_name
    worker_main(conn, cfg)
