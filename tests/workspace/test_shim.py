"""Azure entry scripts run unmodified: ``azureml.core`` / ``azureml_user`` exist inside workers only, and
``Model.get_model_path`` finds the step's models (versions included)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from pipeline_helpers import make_project, output_rows, score_step

from parallelrun.azureml_shim import SHIM_DIR, shim_sys_path
from parallelrun.workspace import Dataset, Model
from parallelrun.workspace.experiment import Experiment
from parallelrun.workspace.pipeline import Pipeline
from parallelrun.workspace.steps import PipelineData, PythonScriptStep

# Written for Azure ML, not a line changed: every import an Azure ParallelRunStep script commonly has.
AZURE_SCRIPT = '''
import argparse
import json
import os

from azureml.core import Model, Run
from azureml.core.model import Model as ModelToo
from azureml_user.parallel_run import EntryScript


def init():
    global scale, old_scale, labels, logger
    logger = EntryScript().logger
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels_dir", required=True)
    args, _ = parser.parse_known_args()
    latest = Model.get_model_path("scaler")
    first = ModelToo.get_model_path("scaler", version=1)
    scale = json.load(open(os.path.join(latest, "model.json")))["scale"]
    old_scale = json.load(open(os.path.join(first, "model.json")))["scale"]
    # A side input: its folder comes as an argument and through the run context, as on Azure.
    assert Run.get_context().input_datasets["labels"] == args.labels_dir
    labels = dict(line.split(",") for line in open(os.path.join(args.labels_dir, "labels.csv")).read().split())
    logger.info("loaded scaler %s (v1: %s) from %s", scale, old_scale, latest)


def run(mini_batch):
    out = []
    for path in mini_batch:
        name = os.path.basename(path)
        number = int(open(path).read().split()[-1])
        out.append(f"{name}: {number * scale} {labels[name]} v1={number * old_scale}")
    return out
'''


def _register_scaler(project, scale: int) -> Model:
    folder = project.root / f"scaler{scale}"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({"scale": scale}))
    return Model.register(project.ws, str(folder), "scaler")


def test_the_shim_is_for_workers_only() -> None:
    # This interpreter (the driver's) has no azureml; the shim is offered to workers instead.
    assert importlib.util.find_spec("azureml") is None
    assert shim_sys_path() == [str(SHIM_DIR)]
    assert (SHIM_DIR / "azureml" / "core" / "model.py").is_file()


@pytest.mark.timeout(150)
def test_unmodified_azure_entry_script_with_models_and_side_input(tmp_path: Path) -> None:
    project = make_project(tmp_path, files=6)
    project.write_script("azure_score.py", AZURE_SCRIPT)
    v1, v2 = _register_scaler(project, 10), _register_scaler(project, 100)
    assert (v1.version, v2.version) == (1, 2)
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    (labels_dir / "labels.csv").write_text("\n".join(f"{n},label{n[4:7]}" for n in project.texts()) + "\n")
    labels = Dataset.File.from_files(str(labels_dir)).as_named_input("labels")
    step = score_step(project, inputs=[project.dataset()], script="azure_score.py", process_count_per_node=2,
                      models=[Model(project.ws, "scaler", version=1), Model(project.ws, "scaler")],
                      side_inputs=[labels], arguments=["--labels_dir", labels])
    run = Experiment(project.ws, "azure-script").submit(Pipeline(project.ws, [step]))
    assert run.wait_for_completion(show_output=False, timeout_seconds=120) == "Completed"
    (step_run,) = run.get_steps()
    expected = sorted(f"{n}: {int(t.split()[-1]) * 100} label{n[4:7]} v1={int(t.split()[-1]) * 10}"
                      for n, t in project.texts().items())
    assert sorted(output_rows(step_run, "score_out")) == expected
    logs = "".join(p.read_text() for p in (step_run.run_dir / "logs" / "user" / "entry_script_log").rglob("*.txt"))
    assert f"loaded scaler 100 (v1: 10) from {v2.path}" in logs
    assert step_run.record.models == {"scaler": str(v2.path), "scaler:1": str(v1.path), "scaler:2": str(v2.path)}


@pytest.mark.timeout(150)
def test_model_not_listed_names_the_fix_and_script_step_has_the_shim(tmp_path: Path) -> None:
    project = make_project(tmp_path, files=2)
    _register_scaler(project, 3)
    project.write_script("wants_other.py", '''
from azureml.core.model import Model

def init():
    Model.get_model_path("other-model")

def run(mini_batch):
    return mini_batch
''')
    project.write_script("azure_prep.py", '''
import sys
from azureml.core import Run
from azureml.core.model import Model
run = Run.get_context()
run.log("files", 2)
out = sys.argv[sys.argv.index("--out") + 1]
open(out + "/scale.txt", "w").write(open(Model.get_model_path("scaler") + "/model.json").read())
''')
    step = score_step(project, inputs=[project.dataset()], script="wants_other.py",
                      models=[Model(project.ws, "scaler")])
    run = Experiment(project.ws, "azure-script").submit(Pipeline(project.ws, [step]))
    assert run.wait_for_completion(show_output=False, timeout_seconds=120, raise_on_error=False) == "Failed"
    (step_run,) = run.get_steps()
    error = (step_run.run_dir / "logs" / "job_error.txt").read_text()
    assert "'other-model' is not one of the models this step lists (scaler)" in error
    assert "models=[Model(ws, 'other-model')]" in error

    # A PythonScriptStep gets the shim too; a model it did not list is found in the workspace.
    out = PipelineData("scale")
    prep = PythonScriptStep("azure_prep.py", source_directory=str(project.scripts), arguments=["--out", out],
                            outputs=[out], name="azure-prep")
    run = Experiment(project.ws, "azure-script").submit(Pipeline(project.ws, [prep]))
    assert run.wait_for_completion(show_output=False, timeout_seconds=60) == "Completed"
    (prep_run,) = run.get_steps()
    assert json.loads((Path(prep_run.get_output_data("scale").local_path) / "scale.txt").read_text()) == {"scale": 3}
    metrics = [json.loads(ln) for p in (prep_run.run_dir / "logs" / "user" / "metrics").glob("*.jsonl")
               for ln in p.read_text().splitlines()]
    assert [(m["name"], m["value"]) for m in metrics] == [("files", 2)]


def test_shim_folder_adds_only_the_azure_packages_to_worker_paths() -> None:
    # The folder goes first on workers' sys.path: any other module in it would shadow a user's module
    # of the same name (a user's ``_hints.py`` once lost to ours).
    importable = sorted(p.name for p in SHIM_DIR.iterdir()
                        if p.name != "__init__.py" and not p.name.startswith("__pycache__")
                        and (p.suffix == ".py" or (p / "__init__.py").exists()))
    assert importable == ["azureml", "azureml_user"]
