"""A two-step pipeline: PythonScriptStep -> ParallelRunStep through a PipelineData, run in the background."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from pipeline_helpers import make_project, output_rows, score_step

from parallelrun.errors import JobFailedError
from parallelrun.workspace.experiment import Experiment
from parallelrun.workspace.pipeline import Pipeline
from parallelrun.workspace.run import PipelineRun, Run, StepRun
from parallelrun.workspace.steps import PipelineData, PythonScriptStep


def _prep(project, prepared: PipelineData, script: str = "prep.py") -> PythonScriptStep:
    return PythonScriptStep(script, source_directory=str(project.scripts), name="prep",
                            arguments=["--input", project.dataset("raw"), "--output", prepared], outputs=[prepared])


@pytest.mark.timeout(180)
def test_prep_then_score_through_pipeline_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = make_project(tmp_path, files=10)
    prepared, scores = PipelineData("prepared"), PipelineData("scores")
    _prep(project, prepared)
    score = score_step(project, inputs=[prepared], output=scores, process_count_per_node=2)
    # Only the consumer is listed: the producer comes with the data it writes, and runs first.
    pipeline = Pipeline(project.ws, steps=[score])
    assert [s.name for s in pipeline.steps] == ["prep", "score"]

    run = Experiment(project.ws, "two-step").submit(pipeline)
    assert isinstance(run, PipelineRun)
    assert run.wait_for_completion(show_output=True, timeout_seconds=150) == "Completed"
    shown = capsys.readouterr().out

    prep_run, score_run = run.get_steps()
    assert (prep_run.name, score_run.name) == ("prep", "score")
    assert prep_run.get_status() == score_run.get_status() == "Completed"
    assert not prep_run.is_reused and not score_run.is_reused
    # Every input file went through both steps exactly once: reversed by prep, upper-cased by score.
    expected = sorted(f"{name}: {text[::-1].upper()}" for name, text in project.texts().items())
    got = output_rows(score_run, "scores")
    assert sorted(got) == expected and len(got) == len(set(got)) == 10
    # The PythonScriptStep's output is a folder in the default datastore, downloadable like Azure's.
    local = Path(prep_run.get_output_data("prepared").download(tmp_path / "dl"))
    assert local == tmp_path / "dl" / "azureml" / run.id / "prep" / "prepared"
    assert sorted(p.name for p in local.iterdir()) == sorted(project.texts())
    assert "prepared 10 files" in (prep_run.run_dir / "logs" / "std_log.txt").read_text()
    # What wait_for_completion(show_output=True) streamed.
    assert f"PipelineRunId: {run.id}" in shown
    assert f"StepRunId: {score_run.id}" in shown and "StepRun(score) Status: Completed" in shown
    assert "prepared 10 files" in shown and "10 succeeded, 0 failed" in shown
    assert "PipelineRun Status: Completed" in shown
    # The same runs, seen from elsewhere.
    again = Run.get(project.ws, run.id)
    assert isinstance(again, PipelineRun) and again.get_status() == "Completed"
    assert isinstance(Run.get(project.ws, score_run.id), StepRun)
    assert [r.id for r in Experiment(project.ws, "two-step").get_runs()] == [run.id]
    details = run.get_details()
    assert [s["name"] for s in details["steps"]] == ["prep", "score"] and details["status"] == "Completed"
    assert run.find_step_run("score")[0].id == score_run.id
    # And from the CLI: the pipeline run with its step runs under it.
    cli = [sys.executable, "-m", "parallelrun", "runs"]
    listed = subprocess.run([*cli, "list", "-w", str(project.ws.path)], capture_output=True, text=True, timeout=60)
    lines = listed.stdout.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith(run.id))
    assert "pipeline" in lines[at] and lines[at + 1].startswith(f"  {prep_run.id}") \
        and lines[at + 2].startswith(f"  {score_run.id}")
    shown_json = json.loads(subprocess.run([*cli, "show", run.id, "-w", str(project.ws.path), "--json"],
                                           capture_output=True, text=True, timeout=60).stdout)
    assert shown_json["children"] == [prep_run.id, score_run.id]
    log = subprocess.run([*cli, "logs", run.id, "-w", str(project.ws.path)], capture_output=True, text=True,
                         timeout=60).stdout
    assert "step score: run" in log and "Completed" in log


@pytest.mark.timeout(120)
def test_failed_script_step_stops_the_pipeline(tmp_path: Path) -> None:
    project = make_project(tmp_path, files=3)
    project.write_script("broken_prep.py", "import sys\nprint('cannot prepare')\nsys.exit(3)\n")
    prepared = PipelineData("prepared")
    prep = _prep(project, prepared, "broken_prep.py")
    score = score_step(project, inputs=[prepared])
    run = Experiment(project.ws, "broken").submit(Pipeline(project.ws, [prep, score]))
    with pytest.raises(JobFailedError, match="step prep failed"):
        run.wait_for_completion(show_output=False, timeout_seconds=100)
    assert run.get_status() == "Failed"
    (prep_run,) = run.get_steps()  # score never started: it needs prep's output
    assert prep_run.get_status() == "Failed"
    assert "exited with code 3" in (prep_run.record.reason or "")
    assert "cannot prepare" in (prep_run.run_dir / "logs" / "job_error.txt").read_text()


@pytest.mark.timeout(120)
def test_failed_parallel_step_has_the_reason(tmp_path: Path) -> None:
    project = make_project(tmp_path, files=4)
    project.write_script("fails.py", "def run(mini_batch):\n    raise ValueError('bad input')\n")
    # The failing mini-batch is isolated into its 4 items; error_threshold counts failed items after
    # isolation, so 3 lets all 4 fail before the step stops (with 0 it stopped at the first, and how many
    # others had failed by then was a race).
    step = score_step(project, inputs=[project.dataset()], script="fails.py", run_max_try=1, error_threshold=3)
    run = Experiment(project.ws, "fails").submit(Pipeline(project.ws, [step]))
    assert run.wait_for_completion(show_output=False, timeout_seconds=100, raise_on_error=False) == "Failed"
    (step_run,) = run.get_steps()
    assert step_run.get_status() == "Failed"
    error = (step_run.run_dir / "logs" / "job_error.txt").read_text()
    assert "ValueError: bad input" in error
    failed = [json.loads(ln) for ln in (step_run.run_dir / "logs" / "user" / "error" / "failed_items.jsonl")
              .read_text().splitlines()]
    assert Counter(Path(f["input"]).name for f in failed) == Counter(list(project.texts()))
