"""Registered versions reach the workers: each step reads the dataset version it asked for."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_helpers import make_project, output_rows, score_step

from parallelrun.workspace import Dataset
from parallelrun.workspace.experiment import Experiment
from parallelrun.workspace.pipeline import Pipeline


@pytest.mark.timeout(150)
def test_each_step_reads_its_dataset_version(tmp_path: Path) -> None:
    project = make_project(tmp_path, files=3)
    newer = tmp_path / "newer"
    newer.mkdir()
    for i in range(2):
        (newer / f"new{i}.txt").write_text(f"fresh {i}\n")
    v1 = Dataset.File.from_files(str(project.data)).register(project.ws, "items")
    v2 = Dataset.File.from_files(str(newer)).register(project.ws, "items", create_new_version=True)
    assert (v1.version, v2.version) == (1, 2)
    first = score_step(project, inputs=[Dataset.get_by_name(project.ws, "items", version=1).as_named_input("items")],
                       name="score-v1")
    latest = score_step(project, inputs=[Dataset.get_by_name(project.ws, "items").as_named_input("items")],
                        name="score-latest")
    run = Experiment(project.ws, "versions").submit(Pipeline(project.ws, [first, latest]))
    assert run.wait_for_completion(show_output=False, timeout_seconds=120) == "Completed"
    by_name = {s.name: s for s in run.get_steps()}
    assert sorted(output_rows(by_name["score-v1"], "score_v1_out")) == sorted(
        f"{n}: {t.upper()}" for n, t in project.texts().items())
    assert sorted(output_rows(by_name["score-latest"], "score_latest_out")) == ["new0.txt: FRESH 0",
                                                                               "new1.txt: FRESH 1"]
