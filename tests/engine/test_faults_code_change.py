"""Faults: the code changes between a SIGKILL of the driver and `resume` (issue 13.2).

Each case kills the driver mid-run, changes one part of the code, and checks that `resume` refuses
with exit code 2 naming what changed, that `--allow-changed-code` then finishes the run with every input
exactly once, and that no process is left behind. A change that is not code (a `.pyc`, `__pycache__`)
resumes without the flag.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from engine_helpers import JobFolder, expected_names, journal_count

from parallelrun.fingerprint import changes, compute

SLOW_ECHO = """
import os, sys, time
import helper
def run(mini_batch):
    time.sleep(0.2)
    return [os.path.basename(p) for p in mini_batch]
"""
N = 40


def _start(job: JobFolder) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "parallelrun", "run", "job.yml", "--workspace", str(job.ws), "--quiet"],
        cwd=job.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _committed(job: JobFolder) -> int:
    return journal_count(job.ws)
    return 0


def _kill_driver_mid_run(job: JobFolder) -> str:
    proc = _start(job)
    deadline = time.monotonic() + 90
    while _committed(job) < 3:
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
        assert time.monotonic() < deadline, "no mini-batch committed in time"
        time.sleep(0.05)
    workers = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"workers outlived the killed driver: {alive}"
    (run_dir,) = (job.ws / "runs").iterdir()
    assert len(job.lines()) < N  # killed mid-run: the output is not complete
    return run_dir.name


def _left_behind(job: JobFolder) -> list[psutil.Process]:
    """Processes of this job still alive (workers run with the job's folder in their command or cwd)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "cwd"]):
        if p.pid == os.getpid():
            continue
        text = " ".join(p.info["cmdline"] or []) + " " + (p.info["cwd"] or "")
        if str(job.root) in text:
            found.append(p)
    return found


@dataclass
class Change:
    id: str
    apply: Callable[[JobFolder], None]
    says: list[str]  # fragments of the refusal; [] = not a code change, resume needs no flag


def _edit_script(job: JobFolder) -> None:
    p = job.root / "scripts" / "entry.py"
    p.write_text(p.read_text().replace("os.path.basename(p)", "'v2:' + os.path.basename(p)"))


def _edit_helpers(job: JobFolder) -> None:
    (job.root / "scripts" / "helper.py").write_text("VERSION = 2\n")
    (job.root / "scripts" / "lib").mkdir(exist_ok=True)
    (job.root / "scripts" / "lib" / "extra.py").write_text("X = 1\n")


def _noise_only(job: JobFolder) -> None:
    cache = job.root / "scripts" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "helper.cpython-311.pyc").write_bytes(b"\x00compiled")
    (job.root / "scripts" / "stale.pyc").write_bytes(b"\x00")


CHANGES = [
    Change("entry-script", _edit_script, ["entry script entry.py changed"]),
    Change("source-directory", _edit_helpers, ["source_directory: 1 file changed: helper.py",
                                               "1 file added: lib/extra.py"]),
    Change("pycache-only", _noise_only, []),
]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("change", [  # ~7 s each: `make test` runs the entry-script case, CI all (make test-slow)
    pytest.param(c, id=c.id, marks=() if c.id == "entry-script" else pytest.mark.slow) for c in CHANGES])
def test_resume_refuses_changed_code_and_allows_it_when_asked(job_factory, change: Change) -> None:
    job = job_factory(SLOW_ECHO, n_files=N, mini_batch_size=2)
    (job.root / "scripts" / "helper.py").write_text("VERSION = 1\n")
    run_id = _kill_driver_mid_run(job)
    change.apply(job)
    resume = ["resume", run_id, "--workspace", str(job.ws), "--quiet"]
    if change.says:
        res = job.cli(*resume, timeout=120)
        assert res.returncode == 2, res.stderr
        for fragment in change.says:
            assert fragment in res.stderr, res.stderr
        assert "--allow-changed-code" in res.stderr and "Traceback" not in res.stderr
        assert len(job.lines()) < N  # refused: nothing more was run or written
        res = job.cli(*resume, "--allow-changed-code", timeout=120)
    else:
        res = job.cli(*resume, timeout=120)
    assert res.returncode == 0, res.stderr
    names = [line.removeprefix("v2:") for line in job.lines()]
    assert sorted(names) == expected_names(N)  # every input exactly once, old rows and new
    assert job.failed_items() == []
    assert not _left_behind(job)
    # Once allowed, the new code is the reference: a second resume needs no flag.
    again = job.cli(*resume, timeout=120)
    assert again.returncode == 0, again.stderr


def test_resume_api_raises_resume_error_and_allow_changed_code_resumes(job_factory) -> None:
    """The library path: resume_run(..., allow_changed_code=...) without the CLI, on a stopped run."""
    from parallelrun import resume_run, run_job
    from parallelrun.errors import ResumeError

    job = job_factory("import os\ndef run(b):\n    return [os.path.basename(p) for p in b]\n", n_files=6)
    result = run_job(job.job, workspace=job.ws, progress="quiet")
    assert result.ok
    (job.root / "scripts" / "entry.py").write_text("import os\ndef run(b):\n    return [p for p in b]\n")
    with pytest.raises(ResumeError, match="entry script entry.py changed") as info:
        resume_run(result.run_id, workspace=job.ws, progress="quiet")
    assert info.value.exit_code == 2
    again = resume_run(result.run_id, workspace=job.ws, progress="quiet", allow_changed_code=True)
    assert again.ok and sorted(job.lines()) == expected_names(6)


def test_arguments_environment_and_models_are_named(tmp_path: Path) -> None:
    """The components a resume compares, and the words it uses for each."""
    from parallelrun.config import validate_spec

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text("def run(b):\n    return b\n")
    (tmp_path / "src" / "a.py").write_text("A = 1\n")
    (tmp_path / "data").mkdir()
    spec = validate_spec({"name": "fp-test", "entry_script": "score.py", "source_directory": "src",
                          "inputs": [{"type": "file", "path": "data"}], "arguments": ["--k", "1"]})
    spec2 = validate_spec({**spec.model_dump(), "arguments": ["--k", "2"]})
    models1 = {"digits": "models/digits/1/w.bin", "digits:1": "models/digits/1/w.bin"}
    models2 = {"digits": "models/digits/2/w.bin", "digits:2": "models/digits/2/w.bin"}
    old = compute(spec, tmp_path, python=None, models=models1)
    assert changes(old, compute(spec, tmp_path, python=None, models=models1)) == []
    (tmp_path / "src" / "a.py").write_text("A = 2\n")
    (tmp_path / "src" / "score.py").write_text("def run(b):\n    return b[:1]\n")
    new = compute(spec2, tmp_path, python="/ws/envs/abc123/bin/python", models=models2)
    said = "\n".join(changes(old, new))
    assert "entry script score.py changed" in said
    assert "source_directory: 1 file changed: a.py" in said and "score.py," not in said
    assert "arguments changed: ['--k', '1'] -> ['--k', '2']" in said
    assert "environment changed: " in said and "/ws/envs/abc123/bin/python" in said
    assert "models changed: digits models/digits/1/w.bin -> models/digits/2/w.bin" in said
    assert "digits:2 (none) -> models/digits/2/w.bin" in said


PIPELINE_SLOW = '''
import os, time

def run(mini_batch):
    time.sleep(0.3 * len(mini_batch))
    return [f"v1 {os.path.basename(p)}" for p in mini_batch]
'''


@pytest.mark.slow  # ~7 s; CI runs it (make test-slow)
@pytest.mark.timeout(240)
def test_a_pipeline_step_whose_code_changed_runs_afresh_on_resume(tmp_path: Path) -> None:
    """pipeline_run.resume() after the step's script changed: the stopped step run is not continued (its
    rows would mix two versions); the step runs afresh, every row from the new code, each exactly once."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workspace"))
    try:
        from pipeline_helpers import make_project, output_rows, score_step
    finally:
        sys.path.pop(0)
    from parallelrun.workspace.experiment import Experiment
    from parallelrun.workspace.pipeline import Pipeline

    project = make_project(tmp_path, files=12)
    script = project.write_script("slow.py", PIPELINE_SLOW)
    step = score_step(project, inputs=[project.dataset()], script="slow.py", mini_batch_size=2)
    run = Experiment(project.ws, "code-change").submit(Pipeline(project.ws, [step]))
    deadline = time.monotonic() + 90
    stopped = None
    while time.monotonic() < deadline:
        steps = run.get_steps()
        if steps and _committed_in(Path(steps[0].record.journal_path)) >= 1:
            stopped = steps[0]
            break
        time.sleep(0.1)
    assert stopped is not None, "no mini-batch of the step committed within 90 s"
    run.cancel()
    assert run.get_status() == "Canceled"
    script.write_text(PIPELINE_SLOW.replace('f"v1 ', 'f"v2 ').lstrip())
    run.resume()
    assert run.wait_for_completion(show_output=False, timeout_seconds=150) == "Completed"
    (fresh,) = [s for s in run.get_steps() if s.id != stopped.id]  # a new step run, not the stopped one
    assert fresh.get_status() == "Completed" and stopped.get_status() == "Canceled"
    rows = output_rows(fresh, "score_out")
    assert sorted(rows) == sorted(f"v2 {name}" for name in project.texts())  # one version, each item once


def _committed_in(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            (n,) = con.execute("SELECT COUNT(*) FROM batches WHERE state='succeeded'").fetchone()
        finally:
            con.close()
        return int(n)
    except sqlite3.Error:
        return 0
