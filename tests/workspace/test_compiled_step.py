"""The compiled step: typed, round-trips through pipeline.json, refuses what it cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_helpers import make_project, score_step

from parallelrun.workspace._compiled import CompiledStep
from parallelrun.workspace.pipeline import Pipeline
from parallelrun.workspace.steps import PipelineData, PythonScriptStep


def test_a_pipeline_compiles_to_typed_steps_that_round_trip(tmp_path: Path) -> None:
    project = make_project(tmp_path, files=3)
    prepared = PipelineData("prepared")
    prep = PythonScriptStep("prep.py", source_directory=str(project.scripts), name="prep",
                            arguments=["--input", project.dataset(), "--output", prepared], outputs=[prepared])
    score = score_step(project, inputs=[prepared], name="score")
    doc, _ = Pipeline(project.ws, [score, prep])._compile("run-1", tmp_path / "run")
    steps = [CompiledStep.from_json(d) for d in json.loads(json.dumps(doc))["steps"]]
    assert [(s.name, s.type, s.depends_on) for s in steps] == [
        ("prep", "PythonScriptStep", []), ("score", "ParallelRunStep", ["prep"])]
    prep_c, score_c = steps
    assert prep_c.script_name == "prep.py" and prep_c.entry_script is None and prep_c.config == {}
    assert score_c.entry_script == "score.py" and score_c.config["mini_batch_size"] == 4
    assert score_c.inputs == [{"kind": "pipeline_data", "name": "prepared", "type": "file"}]
    assert score_c.outputs[0]["path_on_datastore"] == "azureml/run-1/score/score_out"
    assert [CompiledStep.from_json(s.to_json()) for s in steps] == steps


def test_a_step_without_its_script_is_refused() -> None:
    with pytest.raises(ValueError, match="a ParallelRunStep needs entry_script"):
        CompiledStep(type="ParallelRunStep", name="s", allow_reuse=True, source_directory=".")
    with pytest.raises(ValueError, match="unknown type 'Spark'"):
        CompiledStep(type="Spark", name="s", allow_reuse=True, source_directory=".")
