"""Several mini-batches per Ray actor call (issue 14), driven through the executor against a real head.

One ``run`` call carries every batch submitted to an actor in one turn of the driver loop; the outcomes still
come back one per batch, in order, as each ends. A hang in the middle batch of a call times out at that
batch's own deadline, with the batches before it reported and the ones after it handed back unstarted; an
actor that exits in the middle of a call costs an attempt only to the batch it was running.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from ray_jobs import RayHead, make_job

from parallelrun.config import validate_spec
from parallelrun.data.batches import FileBatch
from parallelrun.execution.messages import Event, Outcome, WorkerLost, WorkerReady
from parallelrun.execution.ray_executor import RayExecutor
from parallelrun.execution.worker import WorkerConfig

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # several batches per call, timeouts and actor exits on Ray: ~35 s; CI runs it (make test-slow)


def _executor(job: Path, tmp_path: Path, address: str, timeout: float = 30) -> RayExecutor:
    """One actor for the job folder ``make_job`` wrote (its entry script and its data files)."""
    fields = yaml.safe_load(job.read_text())
    spec = validate_spec({**fields, "compute": address, "process_count_per_node": 1,
                          "run_invocation_timeout": timeout})
    logs = tmp_path / "logs"
    (logs / "sys").mkdir(parents=True, exist_ok=True)
    cfg = WorkerConfig(entry_script=str(job.parent / "scripts" / "score.py"),
                       source_directory=str(job.parent / "scripts"), working_dir=str(job.parent), arguments=[],
                       environment_variables=spec.environment_variables, logging_level="INFO",
                       output_dir=str(tmp_path / "out"), log_dir=str(logs), output_action="append_row",
                       output_format=spec.append_row_format)
    return RayExecutor(cfg, spec)


@pytest.fixture()
def running() -> Iterator[list[RayExecutor]]:
    """Executors a test started: shut down at its end, whatever happened."""
    started: list[RayExecutor] = []
    yield started
    for ex in started:
        ex.shutdown(grace=2.0)


def _poll_until(ex: RayExecutor, done: Callable[[list[Event]], bool], seconds: float) -> list[Event]:
    events: list[Event] = []
    deadline = time.monotonic() + seconds
    while not done(events):
        assert time.monotonic() < deadline, f"gave up after {seconds:g}s; events so far: {events}"
        events += ex.poll(0.2)
    return events


def _ready(ex: RayExecutor) -> str:
    ex.start()
    events = _poll_until(ex, lambda ev: any(isinstance(e, WorkerReady) for e in ev), 90)
    return next(e.worker for e in events if isinstance(e, WorkerReady))


def _batches(job: Path, n: int) -> list[FileBatch]:
    return [FileBatch(i, (str(job.parent / "data" / f"f{i:03d}.txt"),)) for i in range(n)]


def _outcomes(events: list[Event]) -> list[tuple[int, int, str]]:
    return [(e.index, e.attempt, e.status) for e in events if isinstance(e, Outcome)]


@pytest.mark.timeout(120)
def test_batches_travel_several_to_a_call_and_each_reports_once_in_order(
        ray_head: RayHead, tmp_path: Path, running: list[RayExecutor]) -> None:
    job = make_job(tmp_path / "job", files=60)
    ex = _executor(job, tmp_path, ray_head.address)
    running.append(ex)
    worker = _ready(ex)
    todo = _batches(job, 60)

    # The driver loop's way: fill the free slots, poll, repeat. The pool sizes how many go at once.
    events: list[Event] = []
    deadline = time.monotonic() + 60
    while len(_outcomes(events)) < 60:
        assert time.monotonic() < deadline, _outcomes(events)
        for _ in ex.idle_workers():
            if todo:
                ex.submit(worker, todo.pop(0), 1)
        events += ex.poll(0.2)

    assert _outcomes(events) == [(i, 1, "ok") for i in range(60)]  # every batch once, in the order sent
    assert all(e.succeeded == 1 for e in events if isinstance(e, Outcome))
    assert ex.calls_sent < 60 // 3, f"{ex.calls_sent} calls for 60 quick batches"
    assert ex.depth > 8  # quick batches: the actor is given many at once


@pytest.mark.timeout(120)
def test_a_hang_in_the_middle_of_a_call_times_out_at_its_own_deadline(
        ray_head: RayHead, tmp_path: Path, running: list[RayExecutor]) -> None:
    # Batch 0 takes 1.5 s, batch 1 hangs, batch 2 waits behind it; all three go in one call.
    job = make_job(tmp_path / "job", files=3, env={"MODE": "hang_once", "TRIGGER": "f001.txt", "SLEEP": "1.5"})
    ex = _executor(job, tmp_path, ray_head.address, timeout=3)
    running.append(ex)
    worker = _ready(ex)
    t0 = time.monotonic()
    for b in _batches(job, 3):
        ex.submit(worker, b, 1)

    events = _poll_until(ex, lambda ev: any(isinstance(e, WorkerLost) for e in ev), 30)
    waited = time.monotonic() - t0

    assert ex.calls_sent == 1
    assert _outcomes(events) == [(0, 1, "ok"), (1, 1, "timeout"), (2, 1, "returned")]
    # Batch 1's deadline counts from batch 0's end (1.5 s + 3 s), not from the call's start (3 s).
    assert 4.2 < waited < 9, waited
    lost = next(e for e in events if isinstance(e, WorkerLost))
    assert "mini-batch 1 exceeded run_invocation_timeout=3s" in lost.message and lost.replaced_by

    # The replacement runs the hung batch again (its second attempt) and the returned one (still its first).
    replacement = lost.replaced_by
    _poll_until(ex, lambda ev: any(isinstance(e, WorkerReady) for e in ev), 90)
    ex.submit(replacement, _batches(job, 3)[1], 2)
    ex.submit(replacement, _batches(job, 3)[2], 1)
    again = _poll_until(ex, lambda ev: len(_outcomes(ev)) == 2, 30)
    assert _outcomes(again) == [(1, 2, "ok"), (2, 1, "ok")]


@pytest.mark.timeout(120)
def test_an_actor_exiting_mid_call_costs_an_attempt_only_to_the_running_batch(
        ray_head: RayHead, tmp_path: Path, running: list[RayExecutor]) -> None:
    job = make_job(tmp_path / "job", files=4, env={"MODE": "exit_once", "TRIGGER": "f001.txt", "SLEEP": "0.3"})
    ex = _executor(job, tmp_path, ray_head.address)
    running.append(ex)
    worker = _ready(ex)
    for b in _batches(job, 4):
        ex.submit(worker, b, 1)

    events = _poll_until(ex, lambda ev: any(isinstance(e, WorkerLost) for e in ev), 30)

    assert ex.calls_sent == 1
    got = _outcomes(events)
    # Batch 0 ended before the exit: reported, or (its outcome died with the actor) handed back unstarted.
    assert got[0] in [(0, 1, "ok"), (0, 1, "returned")], got
    assert got[1:] == [(1, 1, "lost"), (2, 1, "returned"), (3, 1, "returned")]
    lost = next(e for e in events if isinstance(e, WorkerLost))
    assert "died while running mini-batch 1" in lost.message, lost.message


PREFETCH_SCRIPT = '''\
import os
import time

import fsspec
from fsspec.implementations.local import LocalFileSystem

EVENTS = os.path.join(os.environ["STATE_DIR"], "events.txt")


def _event(what, name):
    with open(EVENTS, "a") as f:
        f.write(f"{what}|{name}|{time.time()}\\n")


class SlowFile(LocalFileSystem):
    """A remote store where every download takes 0.4 s."""

    protocol = "slowfile"

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("slowfile://"))

    def get_file(self, rpath, lpath, **kwargs):
        name = os.path.basename(rpath)
        _event("download start", name)
        time.sleep(0.4)
        super().get_file(rpath, lpath, **kwargs)
        _event("download end", name)


fsspec.register_implementation("slowfile", SlowFile, clobber=True)


def run(mini_batch):
    name = os.path.basename(mini_batch[0])
    _event("run start", name)
    time.sleep(0.4)
    _event("run end", name)
    return [name]
'''


@pytest.mark.timeout(120)
def test_an_actor_fetches_the_next_batch_while_run_works_within_a_call_and_across_calls(
        ray_head: RayHead, tmp_path: Path, running: list[RayExecutor]) -> None:
    job = make_job(tmp_path / "job", files=4)
    (job.parent / "scripts" / "score.py").write_text(PREFETCH_SCRIPT)
    ex = _executor(job, tmp_path, ray_head.address)
    running.append(ex)
    worker = _ready(ex)
    remote = [FileBatch(i, (f"slowfile://{job.parent / 'data' / f'f{i:03d}.txt'}",)) for i in range(4)]

    ex.submit(worker, remote[0], 1)  # call 1: batch 0 alone
    events = ex.poll(0.1)
    for b in remote[1:]:  # call 2, sent while batch 0 runs (or downloads)
        ex.submit(worker, b, 1)
    events += _poll_until(ex, lambda ev: len(_outcomes(events + ev)) == 4, 60)

    assert ex.calls_sent == 2
    assert _outcomes(events) == [(i, 1, "ok") for i in range(4)]
    log = [line.split("|") for line in (job.parent / "state" / "events.txt").read_text().splitlines()]
    at = {(what, name): float(t) for what, name, t in log}
    # Each batch downloads while the one before it runs: batch 1 across two calls, batches 2 and 3 in one.
    for i in (1, 2, 3):
        assert at[("download start", f"f{i:03d}.txt")] < at[("run end", f"f{i - 1:03d}.txt")], log
    # One batch ahead, no more: batch 2's download waits until batch 1 has been taken to run.
    assert at[("download start", "f002.txt")] >= at[("download end", "f001.txt")], log
