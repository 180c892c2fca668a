"""Looking at a job without running it: ``plan_job`` (the dry run behind ``parallelrun plan``) and
``debug_batch`` (one mini-batch in this process, behind ``parallelrun debug``: breakpoints and pdb work)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from .config import load_job
from .data.batches import MiniBatch
from .data.plan import Plan
from .data.storage import job_storage_options
from .errors import UsageError
from .execution.entry import check_entry_script
from .execution.worker import WorkerConfig
from .runner import job_paths


@dataclass
class PlanSummary:
    batches: int
    items: int
    nbytes: int
    files: int
    first: list[MiniBatch]
    input_type: str
    fingerprint: str
    auto: bool = False  # mini_batch_size: auto: the real size is chosen at run time
    seconds: float = 0.0  # listing and splitting the inputs, without loading Python modules


def plan_job(job: str | os.PathLike[str], overrides: list[str] | None = None, show: int = 5) -> PlanSummary:
    from .data.plan import is_auto

    spec, base = load_job(job, overrides)
    if spec.input_type == "tabular":  # "planned in" times the planning, not loading the modules
        from .data import storage, tabular  # noqa: F401
    t0 = time.perf_counter()
    plan = Plan(spec, base)
    first: list[MiniBatch] = []
    for b in plan.batches():
        if len(first) < show:
            first.append(b)
    return PlanSummary(plan.batch_count, plan.items, plan.nbytes, plan.files, first, spec.input_type,
                       plan.fingerprint, is_auto(spec), time.perf_counter() - t0)


def debug_batch(job: str | os.PathLike[str], index: int, overrides: list[str] | None = None) -> Any:
    """Run init() and run() on one mini-batch in this process (breakpoints and pdb work) and return
    run()'s result. User exceptions propagate unchanged."""
    spec, base = load_job(job, overrides)
    source, script, output = job_paths(spec, base)
    check_entry_script(script)
    batch = None
    for b in Plan(spec, base).batches():
        if b.index == index:
            batch = b
            break
    if batch is None:
        raise UsageError(f"there is no mini-batch {index}; run 'parallelrun plan' to see how many there are")
    from .execution.entry import MiniBatchContext, load_entry_script
    from .execution.worker import WorkerRuntime

    cfg = WorkerConfig(entry_script=str(script), source_directory=str(source), working_dir=str(base),
                       arguments=spec.arguments, environment_variables=spec.environment_variables,
                       logging_level=spec.logging_level, output_dir=str(output), log_dir=str(output),
                       output_action=spec.output_action, output_format=spec.append_row_format,
                       redirect_output=False, storage_options=job_storage_options(spec.storage_options, None))
    rt = WorkerRuntime(cfg)
    cwd, argv = os.getcwd(), list(sys.argv)
    rt.setup()
    try:
        entry = load_entry_script(script)
        if entry.init:
            entry.init()
        data, _ = rt._open(batch)
        result = entry.run(data, MiniBatchContext(batch.index)) if entry.run_takes_context else entry.run(data)
        if entry.shutdown:
            entry.shutdown()
        return batch, result
    finally:
        os.chdir(cwd)
        sys.argv = argv
