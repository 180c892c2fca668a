"""A pipeline over Azure Blob (Azurite): a side input downloaded from the container, a PythonScriptStep
whose PipelineData lives in the container, and a ParallelRunStep reading both."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_helpers import make_project, output_rows, score_step

from parallelrun.workspace import Dataset, Datastore
from parallelrun.workspace.experiment import Experiment
from parallelrun.workspace.pipeline import Pipeline
from parallelrun.workspace.steps import PipelineData, PythonScriptStep

WITH_LABELS = '''
import argparse, os
from azureml.core import Run

def init():
    global labels
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", required=True)
    args, _ = parser.parse_known_args()
    assert os.path.isdir(args.labels) and Run.get_context().input_datasets["labels"] == args.labels
    labels = {}
    for name in sorted(os.listdir(os.path.join(args.labels, "sub"))):
        labels.update(line.split("=") for line in open(os.path.join(args.labels, "sub", name)).read().split())

def run(mini_batch):
    return [f"{os.path.basename(p)}: {labels[os.path.basename(p)]}" for p in mini_batch]
'''


@pytest.mark.azure
@pytest.mark.timeout(180)
def test_side_input_and_intermediate_data_in_blob_storage(azurite, tmp_path: Path) -> None:
    project = make_project(tmp_path, files=5)
    project.write_script("with_labels.py", WITH_LABELS)
    blob = Datastore.register_azure_blob_container(
        project.ws, "blob", "pipeline-remote", azurite.account_name, account_key=azurite.account_key,
        endpoint=azurite.endpoint, create_if_not_exists=True)
    labels_dir = tmp_path / "labels" / "sub"
    labels_dir.mkdir(parents=True)
    for i, name in enumerate(project.texts()):
        (labels_dir / f"part{i}.txt").write_text(f"{name}=label{i}\n")
    blob.upload(str(tmp_path / "labels"), target_path="labels", overwrite=True, show_progress=False)
    labels = Dataset.File.from_files(blob.path("labels")).as_named_input("labels")

    prepared = PipelineData("prepared", datastore=blob)
    prep = PythonScriptStep("prep.py", source_directory=str(project.scripts), name="prep", outputs=[prepared],
                            arguments=["--input", project.dataset(), "--output", prepared])
    score = score_step(project, inputs=[prepared], script="with_labels.py", side_inputs=[labels],
                       arguments=["--labels", labels])
    run = Experiment(project.ws, "remote").submit(Pipeline(project.ws, [prep, score]))
    assert run.wait_for_completion(show_output=False, timeout_seconds=150) == "Completed"
    prep_run, score_run = run.get_steps()
    names = list(project.texts())
    assert sorted(output_rows(score_run, "score_out")) == sorted(f"{n}: label{i}" for i, n in enumerate(names))
    # The intermediate data was uploaded to the container, at its datastore path.
    out = prep_run.get_output_data("prepared")
    assert out.datastore_name == "blob" and out.path_on_datastore == f"azureml/{run.id}/prep/prepared"
    listed = Dataset.File.from_files(blob.path(out.path_on_datastore)).to_path()
    assert sorted(listed) == sorted(f"/{n}" for n in names)
