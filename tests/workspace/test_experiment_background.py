"""Experiment.submit runs the pipeline in a background process: it outlives the submitting interpreter,
cancel stops the workers and leaves the step run resumable, and resume finishes it exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from pipeline_helpers import make_project, output_rows, score_step

from parallelrun.journal import Journal
from parallelrun.workspace import Workspace
from parallelrun.workspace.experiment import Experiment
from parallelrun.workspace.pipeline import Pipeline
from parallelrun.workspace.run import PipelineRun, Run

# Slow on purpose: each item takes 0.3 s, and every worker notes its pid and each mini-batch it finishes.
SLOW = '''
import os, time
from azureml_user.parallel_run import EntryScript

def init():
    marks = os.environ["MARKS"]
    os.makedirs(marks, exist_ok=True)
    open(os.path.join(marks, f"pid-{os.getpid()}"), "w").close()
    time.sleep(float(os.environ.get("INIT_SLEEP", "0")))

def run(mini_batch, context):
    time.sleep(0.3 * len(mini_batch))
    open(os.path.join(os.environ["MARKS"], f"batch-{context.minibatch_index}-{os.getpid()}"), "w").close()
    return [f"{os.path.basename(p)}: {open(p).read().strip()}" for p in mini_batch]
'''


def _expected(project) -> list[str]:
    return sorted(f"{name}: {text}" for name, text in project.texts().items())


@pytest.mark.timeout(180)
def test_submit_returns_at_once_and_the_run_outlives_the_submitter(tmp_path: Path) -> None:
    project = make_project(tmp_path, files=6)
    project.write_script("slow.py", SLOW)
    marks = tmp_path / "marks"
    submitter = tmp_path / "submit.py"
    submitter.write_text(textwrap.dedent(f'''
        import json, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pipeline_helpers import Project, score_step
        from parallelrun.workspace import Workspace
        from parallelrun.workspace.experiment import Experiment
        from parallelrun.workspace.pipeline import Pipeline
        from pathlib import Path
        root = Path({str(tmp_path)!r})
        project = Project(root, Workspace(root / "ws"), root / "data", root / "scripts")
        step = score_step(project, inputs=[project.dataset()], script="slow.py", mini_batch_size=2,
                          environment_variables={{"MARKS": {str(marks)!r}, "INIT_SLEEP": "2"}})
        t0 = time.monotonic()
        run = Experiment(project.ws, "background").submit(Pipeline(project.ws, [step]))
        print(json.dumps({{"id": run.id, "seconds": time.monotonic() - t0, "status": run.get_status()}}))
    '''))
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, str(submitter)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    submitter_seconds = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout.splitlines()[-1])
    assert info["seconds"] < 5 and info["status"] in ("NotStarted", "Running")
    run = Run.get(Workspace(project.ws.path), info["id"])
    assert isinstance(run, PipelineRun)
    # The submitting interpreter is gone; the run it started is not done yet (init alone takes 2 s).
    assert run.get_status() in ("NotStarted", "Running"), submitter_seconds
    driver = run.record.driver_pid
    assert driver and psutil.pid_exists(driver)

    assert run.wait_for_completion(show_output=False, timeout_seconds=150) == "Completed"
    (step_run,) = run.get_steps()
    assert sorted(output_rows(step_run, "score_out")) == _expected(project)
    deadline = time.monotonic() + 15
    while psutil.pid_exists(driver) and psutil.Process(driver).status() != psutil.STATUS_ZOMBIE \
            and time.monotonic() < deadline:
        time.sleep(0.2)  # the driver exits once the record says Completed
    assert not psutil.pid_exists(driver) or psutil.Process(driver).status() == psutil.STATUS_ZOMBIE
    assert (run.run_dir / "pipeline.json").is_file()


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.timeout(240)
def test_cancel_stops_the_workers_and_resume_finishes_exactly_once(tmp_path: Path) -> None:
    project = make_project(tmp_path, files=16)
    project.write_script("slow.py", SLOW)
    marks = tmp_path / "marks"
    step = score_step(project, inputs=[project.dataset()], script="slow.py", mini_batch_size=2,
                      process_count_per_node=2, environment_variables={"MARKS": str(marks)})
    run = Experiment(project.ws, "cancel-me").submit(Pipeline(project.ws, [step]))

    deadline = time.monotonic() + 90
    while len(list(marks.glob("batch-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(list(marks.glob("batch-*"))) >= 2, "no mini-batch finished within 90 s"
    pids = [int(p.name.split("-")[1]) for p in marks.glob("pid-*")]
    assert _alive(pids), "the workers should be running"

    run.cancel()
    assert run.get_status() == "Canceled"
    (step_run,) = run.get_steps()
    assert step_run.get_status() == "Canceled"
    deadline = time.monotonic() + 10
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive(pids) == [], "cancel must stop the workers"
    with Journal(step_run.record.journal_path) as journal:
        counts = journal.counts()
    assert 0 < counts.batches_succeeded < counts.batches == 8  # stopped midway, progress kept
    done_before = counts.batches_succeeded

    run.resume()
    assert run.wait_for_completion(show_output=False, timeout_seconds=150) == "Completed"
    (resumed,) = run.get_steps()
    assert resumed.id == step_run.id and resumed.record.resumes == 1  # the same step run, continued
    got = output_rows(resumed, "score_out")
    assert sorted(got) == _expected(project) and len(got) == 16  # each item exactly once
    # Only the unfinished mini-batches ran again.
    batches = Counter(p.name.split("-")[1] for p in marks.glob("batch-*"))
    assert len(batches) == 8 and sum(batches.values()) <= 8 + (8 - done_before)


@pytest.mark.slow  # ~5 s; Run.cancel() is tested in `make test`; CI runs it (make test-slow)
@pytest.mark.timeout(120)
def test_cancel_from_the_cli_and_before_start(tmp_path: Path) -> None:
    project = make_project(tmp_path, files=8)
    project.write_script("slow.py", SLOW)
    marks = tmp_path / "marks"
    step = score_step(project, inputs=[project.dataset()], script="slow.py", mini_batch_size=2,
                      environment_variables={"MARKS": str(marks)})
    run = Experiment(project.ws, "cli-cancel").submit(Pipeline(project.ws, [step]))
    deadline = time.monotonic() + 60
    while not list(marks.glob("pid-*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    res = subprocess.run([sys.executable, "-m", "parallelrun", "runs", "cancel", run.id, "-w", str(project.ws.path)],
                         capture_output=True, text=True, timeout=90)
    assert res.returncode == 0 and "Canceled" in res.stdout, res.stdout + res.stderr
    assert run.get_status() == "Canceled"
    assert [s.get_status() for s in run.get_steps()] == ["Canceled"]
    # A pipeline canceled before its driver started never starts a step.
    early = Experiment(project.ws, "cli-cancel").submit(Pipeline(project.ws, [step]), regenerate_outputs=True)
    early.cancel()
    assert early.get_status() == "Canceled"
    assert early.wait_for_completion(show_output=False, timeout_seconds=30) == "Canceled"
    assert early.get_steps() == []


@pytest.mark.slow  # ~8 s; CI runs it (make test-slow)
@pytest.mark.timeout(240)
def test_killed_driver_shows_interrupted_and_resumes(tmp_path: Path) -> None:
    import os
    import signal

    from parallelrun.errors import JobFailedError

    project = make_project(tmp_path, files=12)
    project.write_script("slow.py", SLOW)
    marks = tmp_path / "marks"
    step = score_step(project, inputs=[project.dataset()], script="slow.py", mini_batch_size=2,
                      environment_variables={"MARKS": str(marks)})
    run = Experiment(project.ws, "killed").submit(Pipeline(project.ws, [step]))
    deadline = time.monotonic() + 90
    while not list(marks.glob("batch-*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    pids = [int(p.name.split("-")[1]) for p in marks.glob("pid-*")]
    os.kill(run.record.driver_pid, signal.SIGKILL)  # the driver dies without a word
    with pytest.raises(JobFailedError, match="interrupted.*resume"):
        run.wait_for_completion(show_output=False, timeout_seconds=30)
    assert run.get_status() == "Interrupted"
    assert [s.get_status() for s in run.get_steps()] == ["Interrupted"]
    deadline = time.monotonic() + 10
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive(pids) == [], "workers must not outlive their driver"
    run.resume()
    assert run.wait_for_completion(show_output=False, timeout_seconds=150) == "Completed"
    (step_run,) = run.get_steps()
    got = output_rows(step_run, "score_out")
    assert sorted(got) == _expected(project) and len(got) == 12
