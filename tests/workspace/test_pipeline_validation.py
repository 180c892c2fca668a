"""Bad pipelines are refused when they are built (or submitted), every problem named with its fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_helpers import make_project, score_step

from parallelrun.errors import JobSpecError, ParallelRunError, UsageError
from parallelrun.workspace import Dataset, Model
from parallelrun.workspace.experiment import Experiment
from parallelrun.workspace.pipeline import Pipeline
from parallelrun.workspace.steps import (
    RESERVED_ARGUMENTS,
    ParallelRunConfig,
    ParallelRunStep,
    PipelineData,
    PythonScriptStep,
)


@pytest.fixture
def project(tmp_path: Path):
    return make_project(tmp_path, files=2)


def _config(project, **kw) -> ParallelRunConfig:
    args = dict(entry_script="score.py", source_directory=str(project.scripts), mini_batch_size=2,
                error_threshold=0, output_action="append_row")
    return ParallelRunConfig(**(args | kw))


@pytest.mark.parametrize("name", ["Score", "score_step", "-score", "ab", "x" * 33, "score-", "9score"])
def test_wrong_step_name_names_the_rule_and_a_valid_name(project, name: str) -> None:
    with pytest.raises(JobSpecError) as e:
        ParallelRunStep(name, _config(project), inputs=[project.dataset()])
    text = str(e.value)
    assert f"{name!r} is not a valid step name" in text and "^[a-z]([-a-z0-9]*[a-z0-9])?$" in text
    suggested = text.split("Example: name=")[1].split("'")[1]
    ParallelRunStep(suggested, _config(project), inputs=[project.dataset()])  # the suggestion is valid


def test_two_input_types_in_one_step(project, tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n")
    tabular = Dataset.Tabular.from_delimited_files(str(tmp_path / "rows.csv")).as_named_input("rows")
    with pytest.raises(JobSpecError) as e:
        ParallelRunStep("score", _config(project), inputs=[project.dataset("images"), tabular])
    assert "takes one input type" in str(e.value)
    assert "file: images" in str(e.value) and "tabular: rows" in str(e.value)
    assert "Split them into two ParallelRunSteps" in str(e.value)


@pytest.mark.parametrize("flag", sorted(RESERVED_ARGUMENTS))
def test_reserved_arguments_name_the_config_field(project, flag: str) -> None:
    with pytest.raises(JobSpecError) as e:
        ParallelRunStep("score", _config(project), inputs=[project.dataset()], arguments=[flag, "5"])
    assert f"{flag!r} is reserved by ParallelRunStep" in str(e.value)
    assert RESERVED_ARGUMENTS[flag] in str(e.value)


def test_every_problem_reported_at_once(project) -> None:
    with pytest.raises(JobSpecError) as e:
        ParallelRunConfig(entry_script="score.py", source_directory=str(project.scripts), mini_batch_size="lots",
                          error_threshold=-5, output_action="append_everything", run_max_try=0,
                          logging_level="LOUD")
    problems = e.value.problems
    for field in ("mini_batch_size", "error_threshold", "output_action", "run_max_try", "logging_level"):
        assert any(p.startswith(field) for p in problems), (field, problems)
    assert "Example: output_action: append_row" in str(e.value)


def test_node_count_on_local_compute_warns_and_runs_on_one_node(project) -> None:
    """Azure code sizes its cluster with node_count (the seed tutorial asks for 4): locally that has no
    meaning, so it warns and the engine gets node_count 1; with a Ray target it is kept."""
    with pytest.warns(UserWarning, match="node_count=2 has no meaning on local compute.*RayCompute"):
        cfg = _config(project, node_count=2)
    assert cfg.node_count == 2  # what the user set, as Azure keeps it
    assert cfg._spec_fields(compute={"compute": "local"})["node_count"] == 1
    assert cfg._spec_fields(compute={"compute": "ray://head:10001"})["node_count"] == 2


def test_mini_batch_size_must_fit_the_input_type(project, tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n")
    tabular = Dataset.Tabular.from_delimited_files(str(tmp_path / "rows.csv"))
    with pytest.raises(JobSpecError, match="mini_batch_size: '1MB' is not a file count"):
        ParallelRunStep("score", _config(project, mini_batch_size="1MB"), inputs=[project.dataset()])
    ParallelRunStep("score", _config(project, mini_batch_size="1MB"), inputs=[tabular.as_named_input("rows")])


def test_cycles_and_orphan_data(project) -> None:
    a_out, b_out = PipelineData("a_out"), PipelineData("b_out")
    a = PythonScriptStep("prep.py", source_directory=str(project.scripts), name="step-a",
                         arguments=["--input", b_out, "--output", a_out], outputs=[a_out])
    b = PythonScriptStep("prep.py", source_directory=str(project.scripts), name="step-b",
                         arguments=["--input", a_out, "--output", b_out], outputs=[b_out])
    with pytest.raises(JobSpecError, match=r"cycle: step-(a|b) -> step-(a|b) -> step-(a|b)"):
        Pipeline(project.ws, [a, b])
    orphan = PipelineData("nobody_writes_this")
    c = score_step(project, inputs=[orphan], name="step-c")
    with pytest.raises(JobSpecError, match="reads PipelineData 'nobody_writes_this', but no step writes it"):
        Pipeline(project.ws, [c])
    shared = PipelineData("shared")
    score_step(project, inputs=[project.dataset()], output=shared, name="first")
    with pytest.raises(JobSpecError, match="already the output of step 'first'"):
        score_step(project, inputs=[project.dataset()], output=shared, name="second")
    with pytest.raises(JobSpecError, match="letters, digits and underscores"):
        PipelineData("bad-name")


def test_script_step_needs_its_script(project) -> None:
    with pytest.raises(JobSpecError, match="'missing.py' is not a file in source_directory"):
        PythonScriptStep("missing.py", source_directory=str(project.scripts))


def _runs(project) -> list[Path]:
    return list((project.ws.path / "runs").iterdir()) if (project.ws.path / "runs").is_dir() else []


def test_unknown_references_fail_at_submit_and_leave_no_run(project) -> None:
    exp = Experiment(project.ws, "bad-refs")
    unknown_store = score_step(project, inputs=[project.dataset()], output=PipelineData("out", datastore="nostore"))
    with pytest.raises(UsageError, match="no datastore named 'nostore'.*register_local"):
        exp.submit(Pipeline(project.ws, [unknown_store]))
    unknown_model = score_step(project, inputs=[project.dataset()], models=["no-such-model"], name="needs-model")
    with pytest.raises(UsageError, match="no model named 'no-such-model'.*Model.register"):
        exp.submit(Pipeline(project.ws, [unknown_model]))
    unknown_compute = score_step(project, inputs=[project.dataset()], name="needs-compute")
    unknown_compute.parallel_run_config.compute_target = "big-cluster"
    with pytest.raises(UsageError, match="no compute target named 'big-cluster'.*ComputeTarget.create"):
        exp.submit(Pipeline(project.ws, [unknown_compute]))
    with pytest.raises(ParallelRunError, match="no dataset named 'nope'"):
        Dataset.get_by_name(project.ws, "nope")
    with pytest.raises(UsageError, match="Model.register"):
        Model(project.ws, "no-such-model")
    project.write_script("no_run.py", "def init():\n    pass\n")
    no_run = score_step(project, inputs=[project.dataset()], script="no_run.py", name="no-run")
    with pytest.raises(JobSpecError, match="run"):
        exp.submit(Pipeline(project.ws, [no_run]))
    assert _runs(project) == []
    with pytest.raises(UsageError, match="experiment name"):
        Experiment(project.ws, "bad name!")
