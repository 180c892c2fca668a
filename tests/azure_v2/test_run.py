"""Azure ML v2 YAML run end to end through ``parallelrun run``: an MLTable on an Azurite-backed datastore,
an MLflow model folder as a uri_folder input, program_arguments, and append_row_to a uri_file output on
that datastore; and the example in examples/azure_v2 (a command job feeding a parallel job)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from parallelrun import Datastore, Workspace

from .helpers import MLTABLE_CSV, TABULAR_SCORE, iris_rows, save_mlflow_model, write_parts

pytest.importorskip("mlflow", reason="install the dev extra (mlflow-skinny): pip install -e '.[dev]'")
pytest.importorskip("sklearn", reason="install the examples extra: pip install -e '.[examples]'")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "azure_v2"

PIPELINE = """\
$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
type: pipeline
experiment_name: iris-mltable-blob
settings:
  default_compute: azureml:cpu-cluster
inputs:
  iris:
    type: mltable
    path: azureml://datastores/irisblob/paths/iris-mltable
  model:
    type: uri_folder
    path: azureml://datastores/irisblob/paths/models/iris
jobs:
  batch_prediction:
    type: parallel
    inputs:
      data: ${{parent.inputs.iris}}
      score_model: ${{parent.inputs.model}}
      tag: blue
    outputs:
      job_output_file:
        type: uri_file
        path: azureml://datastores/irisblob/paths/predictions/${{name}}/iris_scores.txt
    input_data: ${{inputs.data}}
    mini_batch_size: "2kb"
    max_concurrency_per_instance: 1
    mini_batch_error_threshold: 0
    retry_settings:
      max_retries: 2
      timeout: 120
    logging_level: DEBUG
    task:
      type: run_function
      code: ./script
      entry_script: iris_score.py
      program_arguments: >-
        --model ${{inputs.score_model}}
        --tag ${{inputs.tag}}
        --error_threshold 0
        --resource_monitor_interval 0
      append_row_to: ${{outputs.job_output_file}}
"""


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parallelrun", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=280)


@pytest.mark.azure
@pytest.mark.slow  # ~18 s (trains an MLflow model, runs against Azurite); CI runs it (make test-slow)
@pytest.mark.timeout(300)
def test_mltable_and_mlflow_model_on_azurite(azurite, tmp_path: Path) -> None:
    rows = iris_rows()
    ws = Workspace.create(tmp_path / "ws")
    blob = Datastore.register_azure_blob_container(
        ws, "irisblob", "azure-v2", azurite.account_name, account_key=azurite.account_key,
        endpoint=azurite.endpoint, create_if_not_exists=True)
    staging = tmp_path / "staging"
    write_parts(rows, staging / "iris-mltable" / "parts", 3)
    (staging / "iris-mltable" / "MLTable").write_text(MLTABLE_CSV)
    save_mlflow_model(rows, staging / "models" / "iris")
    blob.upload(str(staging), overwrite=True, show_progress=False)
    shutil.rmtree(staging)  # the job must read both from the blob container
    project = tmp_path / "project"
    (project / "script").mkdir(parents=True)
    (project / "script" / "iris_score.py").write_text(TABULAR_SCORE)
    (project / "pipeline.yml").write_text(PIPELINE)

    result = _cli(project, "run", "pipeline.yml", "-w", str(ws.path), "--environment", "current", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--resource_monitor_interval accepted, no effect here" in result.stderr
    run_id = next(line.split()[3] for line in result.stderr.splitlines() if line.startswith("pipeline run id:"))
    assert f"path predictions/{run_id}/iris_scores.txt" in result.stdout  # -q: the summary on stdout

    # The rows are in the blob container, at the uri_file's path: every iris row once, scored.
    got = tmp_path / "got"
    blob.download(str(got), prefix=f"predictions/{run_id}", show_progress=False)
    lines = (got / "predictions" / run_id / "iris_scores.txt").read_text().splitlines()
    scored = pd.DataFrame([line.split(",") for line in lines], columns=["id", "label", "predicted", "tag"])
    assert sorted(scored["id"].astype(int)) == list(range(150))
    assert set(scored["tag"]) == {"blue"}
    assert (scored["label"] == scored["predicted"]).mean() > 0.9
    # 2kb mini-batches over three ~1.7 KB files: more than one mini-batch ran.
    step_logs = next((ws.path / "runs").glob("batch-prediction_*/logs"))
    processed = (step_logs / "sys" / "job_report" / "processed_mini-batches.csv").read_text().splitlines()
    assert len(processed) - 1 >= 3


@pytest.mark.slow  # 15-25 s each: `make test-all` and CI run it (docs/ and README: make test-all)
@pytest.mark.timeout(300)
def test_example_pipeline_command_feeds_parallel(tmp_path: Path) -> None:
    folder = tmp_path / "azure_v2"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("data", "models", "__pycache__"))
    subprocess.run([sys.executable, "make_data.py"], cwd=folder, check=True, capture_output=True, timeout=200)
    ws = tmp_path / "ws"

    # As the README says, from the example's folder.
    # One worker (each imports mlflow, which takes seconds of CPU on a shared test machine).
    one = ("--set", "jobs.batch_scoring.max_concurrency_per_instance=1")
    result = _cli(folder, "run", "pipeline.yml", "-w", str(ws), "--environment", "current", *one)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "notice: compute: azureml:cpu-cluster is not a compute target" in result.stderr
    [scores] = (ws / "datastores" / "default" / "iris-scores").glob("*/scores.csv")
    lines = scores.read_text().splitlines()
    scored = pd.DataFrame([line.split(",") for line in lines], columns=["file", "id", "label", "predicted"])
    assert sorted(scored["id"].astype(int)) == list(range(150))
    assert set(scored["file"]) == {f"part-{i:03d}.csv" for i in range(6)}  # the command job's six files
    assert (scored["label"] == scored["predicted"]).mean() > 0.9

    # Nothing changed: both steps reuse their outputs, and the new run's scores are the same rows.
    again = _cli(folder, "run", "pipeline.yml", "-w", str(ws), "--environment", "current", "-q", *one)
    assert again.returncode == 0, again.stdout + again.stderr
    runs = sorted((ws / "datastores" / "default" / "iris-scores").glob("*/scores.csv"))
    assert len(runs) == 2 and sorted(runs[1].read_text().splitlines()) == sorted(lines)
    from parallelrun import Experiment

    latest = next(Experiment(Workspace(ws), "azure-v2-iris").get_runs())
    assert all(s.is_reused for s in latest.get_steps())


SLOW_SCORE = '''
import os
import time
from pathlib import Path


def init():
    Path(os.environ["MARKER_DIR"], f"worker-{os.getpid()}").write_text("started")


def run(mini_batch):
    time.sleep(60)
    return [str(p) for p in mini_batch]
'''

SLOW_JOB = """\
$schema: https://azuremlschemas.azureedge.net/latest/parallelJob.schema.json
type: parallel
name: slow_job
experiment_name: slow
inputs:
  files: {type: uri_folder, path: ./files}
outputs:
  out: {type: uri_folder}
input_data: ${{inputs.files}}
mini_batch_size: "1"
max_concurrency_per_instance: 2
retry_settings: {timeout: 120}
environment_variables:
  MARKER_DIR: MARKERS
task:
  code: ./src
  entry_script: slow.py
  append_row_to: ${{outputs.out}}
"""


@pytest.mark.timeout(240)
def test_ctrl_c_cancels_the_pipeline_and_exits_130(tmp_path: Path) -> None:
    import signal
    import time

    from parallelrun import Experiment

    (tmp_path / "files").mkdir()
    for i in range(4):
        (tmp_path / "files" / f"{i}.txt").write_text(str(i))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "slow.py").write_text(SLOW_SCORE)
    markers = tmp_path / "markers"
    markers.mkdir()
    (tmp_path / "job.yml").write_text(SLOW_JOB.replace("MARKERS", str(markers)))
    ws = tmp_path / "ws"
    proc = subprocess.Popen([sys.executable, "-m", "parallelrun", "run", "job.yml", "-w", str(ws), "-q"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 150
        while not list(markers.iterdir()) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert list(markers.iterdir()), "no worker started"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, err
    [run] = list(Experiment(Workspace(ws), "slow").get_runs())
    assert run.get_status() == "Canceled"
    workers = [int(p.name.split("-")[1]) for p in markers.iterdir()]
    deadline = time.monotonic() + 30  # bounded: a worker may take a moment to exit after its SIGTERM
    alive = [pid for pid in workers if _running(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [pid for pid in workers if _running(pid)]
    assert not alive, f"workers left running: {alive}"


def _running(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not running: reaped by nobody yet because its parent (the driver) is gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


FAILING_SCORE = '''
def init():
    pass


def run(mini_batch):
    if any(p.endswith("2.txt") for p in mini_batch):
        raise ValueError("cannot score file 2")
    return [p.rsplit("/", 1)[-1] for p in mini_batch]
'''


@pytest.mark.timeout(240)
def test_failing_parallel_job_exits_1_with_the_users_error_in_the_logs(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    for i in range(4):
        (tmp_path / "files" / f"{i}.txt").write_text(str(i))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "slow.py").write_text(FAILING_SCORE)
    job = (SLOW_JOB.replace("max_concurrency_per_instance: 2", "max_concurrency_per_instance: 1\n"
                            "mini_batch_error_threshold: 0")
           .replace("retry_settings: {timeout: 120}", "retry_settings: {max_retries: 0, timeout: 60}")
           .replace("MARKER_DIR: MARKERS", "UNUSED: x"))
    (tmp_path / "job.yml").write_text(job)
    ws = tmp_path / "ws"
    result = _cli(tmp_path, "run", "job.yml", "-w", str(ws), "-q")  # no environment: this interpreter
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Failed: pipeline run slow_" in result.stdout
    [failed] = (ws / "runs").glob("slow-job_*/logs/user/error/failed_items.jsonl")
    assert "cannot score file 2" in failed.read_text()


ENV_JOB = """\
$schema: https://azuremlschemas.azureedge.net/latest/parallelJob.schema.json
type: parallel
name: env_job
experiment_name: env-build
inputs:
  files: {type: uri_folder, path: ./files}
outputs:
  out: {type: uri_folder}
input_data: ${{inputs.files}}
max_concurrency_per_instance: 1
task:
  code: ./src
  entry_script: where.py
  environment:
    image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04
    conda_file: ./conda.yml
  append_row_to: ${{outputs.out}}
"""


@pytest.mark.timeout(600)
def test_conda_file_pip_part_is_built_and_used_by_the_workers(tmp_path: Path) -> None:
    # A small pure-Python package that the project's venv does not have (as tests/workspace does).
    (tmp_path / "conda.yml").write_text("name: scoring\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n"
                                        "      - inflection\n")
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_text("a")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "where.py").write_text(
        "import inflection\n\n\ndef run(mini_batch):\n    return [inflection.__file__ for _ in mini_batch]\n")
    (tmp_path / "job.yml").write_text(ENV_JOB)
    ws = tmp_path / "ws"
    result = _cli(tmp_path, "run", "job.yml", "-w", str(ws), "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "image/build ignored" in result.stderr
    [out] = (ws / "datastores" / "default" / "azureml").glob("*/env-job/out/parallel_run_step.txt")
    assert out.read_text().startswith(str(ws / "envs"))  # imported from the environment built for the job
