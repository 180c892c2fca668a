"""Azure ML v2 YAML compiled to the v1 objects: field mapping, MLTable, bindings, and the errors (exit 2)
a user gets for a bad file. Nothing runs here except the CLI's validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from parallelrun import (
    ComputeTarget,
    FileDataset,
    ParallelRunStep,
    PipelineData,
    PythonScriptStep,
    RayCompute,
    TabularDataset,
    Workspace,
)
from parallelrun.azure_v2 import compile_file, is_azure_v2
from parallelrun.cli import main
from parallelrun.errors import JobSpecError

from .helpers import MLTABLE_CSV, iris_rows, write_parts

SCORE = "def init():\n    pass\n\n\ndef run(mini_batch):\n    return [str(x) for x in mini_batch]\n"


def _project(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text(SCORE)
    (tmp_path / "src" / "prep.py").write_text("print('prep')\n")
    table = tmp_path / "iris-mltable"
    write_parts(iris_rows(), table / "parts", 3)
    (table / "MLTable").write_text(MLTABLE_CSV)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("flavors: {}\n")
    return tmp_path


def _pipeline(**score_overrides: object) -> dict:
    score = {
        "type": "parallel",
        "compute": "azureml:cpu-cluster",
        "inputs": {"data": {"type": "mltable", "path": "./iris-mltable"},
                   "model": "${{parent.inputs.model}}", "tag": "${{parent.inputs.tag}}"},
        "outputs": {"scores": {"type": "uri_file",
                               "path": "azureml://datastores/workspaceblobstore/paths/out/${{name}}/s.csv"}},
        "input_data": "${{inputs.data}}",
        "mini_batch_size": "10 kb",
        "resources": {"instance_count": 2},
        "max_concurrency_per_instance": 3,
        "error_threshold": 5,
        "mini_batch_error_threshold": 2,
        "retry_settings": {"max_retries": 4, "timeout": 90},
        "logging_level": "DEBUG",
        "environment_variables": {"OMP_NUM_THREADS": 1},
        "task": {"type": "run_function", "code": "./src", "entry_script": "score.py",
                 "program_arguments": "--model ${{inputs.model}} --tag ${{inputs.tag}} --allowed_failed_percent 30 "
                                      "--progress_update_timeout 600",
                 "append_row_to": "${{outputs.scores}}"},
    }
    score.update(score_overrides)
    return {
        "$schema": "https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json",
        "type": "pipeline", "experiment_name": "v2-test",
        "inputs": {"model": {"type": "uri_folder", "path": "./model"}, "tag": "alpha"},
        "jobs": {"score_iris": score},
    }


def _write(folder: Path, doc: dict, name: str = "pipeline.yml") -> Path:
    p = folder / name
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def test_parallel_job_fields_map_onto_parallel_run_config(tmp_path: Path) -> None:
    folder = _project(tmp_path)
    ws = Workspace.create(tmp_path / "ws")
    compiled = compile_file(_write(folder, _pipeline()), ws)

    [step] = compiled.pipeline.steps
    assert isinstance(step, ParallelRunStep) and step.name == "score-iris"
    cfg = step.parallel_run_config
    assert (cfg.mini_batch_size, cfg.node_count, cfg.process_count_per_node) == ("10kb", 1, 3)
    assert (cfg.error_threshold, cfg.allowed_failed_count, cfg.allowed_failed_percent) == (5, 2, 30.0)
    assert (cfg.run_max_try, cfg.run_invocation_timeout, cfg.logging_level) == (5, 90, "DEBUG")  # 1 + 4 retries
    assert (cfg.output_action, cfg.append_row_file_name) == ("append_row", "s.csv")
    assert cfg.environment_variables == {"OMP_NUM_THREADS": "1"}
    assert Path(cfg.source_directory) == folder / "src"
    # The MLTable folder is a TabularDataset; the model folder a side input passed in the arguments.
    assert isinstance(step.inputs[0].dataset, TabularDataset)
    model_arg = step.arguments[1]
    assert step.arguments[0] == "--model" and isinstance(model_arg.dataset, FileDataset)
    assert step.arguments[2:] == ["--tag", "alpha"]  # the advanced settings are taken out
    assert step.output.destination_path == "out/{run-id}"
    notices = "\n".join(compiled.notices)
    assert "--progress_update_timeout accepted, no effect here" in notices
    assert "instance_count: 2 nodes -> 1 on this machine" in notices
    assert "azureml:cpu-cluster is not a compute target of this workspace" in notices
    assert compiled.experiment_name == "v2-test"


def test_compute_registered_as_ray_is_used(tmp_path: Path) -> None:
    folder = _project(tmp_path)
    ws = Workspace.create(tmp_path / "ws")
    ComputeTarget.create(ws, "cpu-cluster", RayCompute(address="ray://127.0.0.1:10001"))
    step = compile_file(_write(folder, _pipeline()), ws).pipeline.steps[0]
    assert step.parallel_run_config.compute_target.name == "cpu-cluster"
    assert step.parallel_run_config.node_count == 2  # a cluster keeps instance_count


def test_conda_file_builds_the_pip_part_and_current_skips_it(tmp_path: Path) -> None:
    folder = _project(tmp_path)
    (folder / "conda.yml").write_text("dependencies:\n  - python=3.11\n  - pip\n  - pip:\n"
                                      "      - scikit-learn>=1.3\n      - mlflow-skinny\n")
    doc = _pipeline()
    doc["jobs"]["score_iris"]["task"]["environment"] = {"image": "mcr.microsoft.com/azureml/x:1",
                                                        "conda_file": "./conda.yml"}
    ws = Workspace.create(tmp_path / "ws")
    compiled = compile_file(_write(folder, doc), ws)
    env = compiled.pipeline.steps[0].parallel_run_config.environment
    assert env.python.conda_dependencies.pip_packages == ["scikit-learn>=1.3", "mlflow-skinny"]
    assert any("image/build ignored" in n for n in compiled.notices)
    current = compile_file(_write(folder, doc), ws, environment="current")
    assert current.pipeline.steps[0].parallel_run_config.environment is None


def test_command_output_feeds_parallel_input(tmp_path: Path) -> None:
    folder = _project(tmp_path)
    doc = _pipeline(inputs={"data": "${{parent.jobs.prep.outputs.prepared}}"},
                    outputs={}, task={"code": "./src", "entry_script": "score.py"}, mini_batch_size="2")
    doc["jobs"] = {"score": doc["jobs"]["score_iris"], "prep": {
        "type": "command", "code": "./src",
        "command": "python -u prep.py --rows ${{inputs.rows}} --out=${{outputs.prepared}}",
        "inputs": {"rows": {"type": "uri_folder", "path": "./iris-mltable/parts"}},
        "outputs": {"prepared": {"type": "uri_folder"}}}}
    ws = Workspace.create(tmp_path / "ws")
    steps = compile_file(_write(folder, doc), ws).pipeline.steps
    assert [s.name for s in steps] == ["prep", "score"]  # ordered by the data, not the listing
    prep, score = steps
    assert isinstance(prep, PythonScriptStep) and prep.script_name == "prep.py"
    assert prep.arguments[0] == "--rows" and prep.arguments[2] == "--out"
    assert isinstance(prep.arguments[3], PipelineData) and score.inputs == [prep.arguments[3]]
    assert score.parallel_run_config.output_action == "summary_only"
    assert score.parallel_run_config.mini_batch_size == "2"


def test_standalone_parallel_job_and_detection(tmp_path: Path) -> None:
    folder = _project(tmp_path)
    doc = _pipeline()["jobs"]["score_iris"]
    doc["inputs"] = {"data": {"type": "mltable", "path": "./iris-mltable"},
                     "model": {"type": "uri_folder", "path": "./model"}, "tag": "beta"}
    doc.pop("mini_batch_size")
    assert is_azure_v2(doc) and not is_azure_v2({"name": "x", "entry_script": "s.py", "inputs": []})
    ws = Workspace.create(tmp_path / "ws")
    [step] = compile_file(_write(folder, doc, "job.yml"), ws).pipeline.steps
    assert step.parallel_run_config.mini_batch_size is None  # tabular: the engine's default size
    assert step.arguments[2:] == ["--tag", "beta"]


def test_text_around_literal_references(tmp_path: Path) -> None:
    folder = _project(tmp_path)
    doc = _pipeline()
    doc["jobs"]["score_iris"]["inputs"]["tag"] = "run-${{parent.inputs.tag}}-on-${{default_datastore}}"
    step = compile_file(_write(folder, doc), Workspace.create(tmp_path / "ws")).pipeline.steps[0]
    assert step.arguments[2:] == ["--tag", "run-alpha-on-workspaceblobstore"]
    doc["jobs"]["score_iris"]["inputs"]["tag"] = "x-${{parent.inputs.model}}"
    with pytest.raises(JobSpecError, match="data is bound as a whole value"):
        compile_file(_write(folder, doc), Workspace.create(tmp_path / "ws"))


@pytest.mark.parametrize("transform, options", [
    ("- read_parquet: {include_path_column: false}", {"format": "parquet"}),
    ("- read_json_lines: {encoding: utf8, invalid_lines: error}", {"format": "jsonl", "encoding": "utf-8"}),
    ("- read_delimited: {delimiter: ';', header: no_header, encoding: latin1}",
     {"separator": ";", "header": False, "encoding": "latin-1"}),
])
def test_mltable_readers(tmp_path: Path, transform: str, options: dict) -> None:
    folder = _project(tmp_path)
    (folder / "iris-mltable" / "MLTable").write_text(f"paths:\n  - folder: ./parts\ntransformations:\n  {transform}\n")
    ws = Workspace.create(tmp_path / "ws")
    ds = compile_file(_write(folder, _pipeline()), ws).pipeline.steps[0].inputs[0].dataset
    assert isinstance(ds, TabularDataset)
    [entry], _ = ds.to_input_specs(ws)  # what the engine is given
    assert options.items() <= entry.items()


def test_mltable_without_transformations_is_a_file_dataset(tmp_path: Path) -> None:
    folder = _project(tmp_path)
    (folder / "iris-mltable" / "MLTable").write_text("paths:\n  - file: ./parts/part-0.csv\n  - file: ./parts/part-1.csv\n")
    ws = Workspace.create(tmp_path / "ws")
    step = compile_file(_write(folder, _pipeline(mini_batch_size=1)), ws).pipeline.steps[0]
    assert isinstance(step.inputs[0].dataset, FileDataset)
    assert sorted(Path(p).name for p in step.inputs[0].dataset.to_path()) == ["part-0.csv", "part-1.csv"]


# --- bad YAML: exit code 2 and a message naming the problem -------------------------------------------
def _bad(tmp_path: Path, mutate) -> str:
    folder = _project(tmp_path)
    doc = _pipeline()
    mutate(doc, folder)
    path = _write(folder, doc)
    return path


BAD_CASES = [
    ("unknown key", lambda d, f: d["jobs"]["score_iris"]["task"].update(entry_scrpt="x.py"),
     ["jobs.score_iris.task.entry_scrpt: unknown field. Did you mean 'entry_script'?"]),
    ("unknown top-level key", lambda d, f: d.update(setings={}),
     ["  - setings: unknown field. Did you mean 'settings'?"]),
    ("unbound input", lambda d, f: d["jobs"]["score_iris"]["task"].update(
        program_arguments="--model ${{inputs.y}}"),
     ["jobs.score_iris.task.program_arguments: ${{inputs.y}} is unbound", "'y' is not an input of job 'score_iris'",
      "(those are: data, model, tag)"]),
    ("unbound parent input", lambda d, f: d["jobs"]["score_iris"]["inputs"].update(model="${{parent.inputs.modle}}"),
     ["jobs.score_iris.inputs.model: ${{parent.inputs.modle}} is unbound", "Did you mean ${{parent.inputs.model}}?"]),
    ("missing MLTable file", lambda d, f: (f / "iris-mltable" / "MLTable").unlink(),
     ["jobs.score_iris.inputs.data: MLTable folder", "has no file named MLTable", "use type: uri_folder"]),
    ("unsupported transformation", lambda d, f: (f / "iris-mltable" / "MLTable").write_text(
        "paths:\n  - folder: ./parts\ntransformations:\n  - read_delimited: {}\n  - take: 5\n"),
     ["transformation 'take' is not supported here", "inside run()"]),
    ("unregistered datastore", lambda d, f: d["jobs"]["score_iris"]["outputs"]["scores"].update(
        path="azureml://datastores/nosuch/paths/x.csv"),
     ["jobs.score_iris.outputs.scores:", "'nosuch'"]),
    ("bad mini_batch_size", lambda d, f: d["jobs"]["score_iris"].update(mini_batch_size="ten"),
     ["mini_batch_size: 'ten'"]),
    ("bad advanced setting", lambda d, f: d["jobs"]["score_iris"]["task"].update(
        program_arguments="--allowed_failed_percent lots"),
     ["jobs.score_iris.task.program_arguments: --allowed_failed_percent 'lots' is not a number"]),
    ("two outputs", lambda d, f: d["jobs"]["score_iris"]["outputs"].update(extra={"type": "uri_folder"}),
     ["jobs.score_iris.outputs: a parallel job has one output here", "so extra cannot be written"]),
    ("non-python command", lambda d, f: d["jobs"].update(prep={"type": "command", "command": "bash run.sh"}),
     ["jobs.prep.command: 'bash run.sh': only 'python <script.py> [arguments]' commands run here"]),
]


@pytest.mark.parametrize("case, mutate, expected", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_yaml_exits_2_naming_the_problem(tmp_path: Path, capsys, case, mutate, expected) -> None:
    path = _bad(tmp_path, mutate)
    code = main(["run", str(path), "-w", str(tmp_path / "ws"), "-q", "--environment", "current"])
    err = capsys.readouterr().err
    assert code == 2, err
    for text in expected:
        assert text in err, f"{text!r} not in:\n{err}"
    assert "Traceback" not in err
    assert not list((tmp_path / "ws" / "runs").glob("*")), "a rejected job left a run behind"


def test_several_problems_reported_at_once(tmp_path: Path) -> None:
    def mutate(d: dict, f: Path) -> None:
        d["jobs"]["score_iris"]["task"]["program_arguments"] = "--model ${{inputs.y}}"
        d["jobs"]["score_iris"]["retry_settings"]["max_retry"] = 3

    path = _bad(tmp_path, mutate)
    with pytest.raises(JobSpecError) as e:
        compile_file(path, Workspace.create(tmp_path / "ws"))
    assert any("max_retry" in p and "max_retries" in p for p in e.value.problems)


def test_environment_flag_only_for_v2(tmp_path: Path, capsys) -> None:
    job = tmp_path / "job.yml"
    job.write_text("name: plain\nentry_script: s.py\ninputs: [{type: file, path: .}]\n")
    assert main(["run", str(job), "--environment", "current", "-w", str(tmp_path / "ws")]) == 2
    assert "--environment applies to Azure ML v2 YAML jobs" in capsys.readouterr().err


def test_migration_guide_yaml_compiles(tmp_path: Path) -> None:
    """The pipeline in docs/migrating-from-azureml.md's Azure ML v2 section compiles as the guide says."""
    guide = (Path(__file__).resolve().parents[2] / "docs" / "migrating-from-azureml.md").read_text()
    section = guide[guide.index("## Azure ML v2"):]
    block = section[section.index("```yaml\n") + len("```yaml\n"):]
    (tmp_path / "pipeline.yml").write_text(block[:block.index("```")])
    write_parts(iris_rows(), tmp_path / "neural-iris-mltable" / "parts", 2)
    (tmp_path / "neural-iris-mltable" / "MLTable").write_text(MLTABLE_CSV)
    (tmp_path / "iris-model").mkdir()
    (tmp_path / "script").mkdir()
    (tmp_path / "script" / "iris_prediction.py").write_text(SCORE)
    (tmp_path / "environment").mkdir()
    (tmp_path / "environment" / "environment_parallel.yml").write_text(
        "dependencies:\n  - python=3.11\n  - pip:\n      - mlflow-skinny\n      - scikit-learn\n")
    ws = Workspace.create(tmp_path / "ws")

    compiled = compile_file(tmp_path / "pipeline.yml", ws, overrides=["jobs.batch_prediction.mini_batch_size=20kb"])
    [step] = compiled.pipeline.steps
    cfg = step.parallel_run_config
    assert (cfg.mini_batch_size, cfg.error_threshold, cfg.allowed_failed_percent, cfg.allowed_failed_count) == \
        ("20kb", 5, 30.0, 5)
    assert (cfg.append_row_file_name, cfg.node_count) == ("parallel_run_step.txt", 1)
    assert cfg.environment.python.conda_dependencies.pip_packages == ["mlflow-skinny", "scikit-learn"]
    notices = "\n".join(compiled.notices)
    for flag in ("--task_overhead_timeout", "--progress_update_timeout", "--first_task_creation_timeout",
                 "--copy_logs_to_parent", "--resource_monitor_interval"):
        assert f"{flag} accepted, no effect here" in notices
    assert compiled.experiment_name == tmp_path.name  # no experiment_name: the YAML folder names it, as on Azure


COMPONENT = """\
$schema: https://azuremlschemas.azureedge.net/latest/parallelComponent.schema.json
type: parallel
name: batch_scoring_component
version: 1
inputs:
  job_data_path:
    type: uri_folder
    mode: ro_mount
  score_model:
    type: uri_folder
    mode: download
  tag:
    type: string
    default: from-component
outputs:
  job_output_file:
    type: uri_file
    mode: rw_mount
mini_batch_size: "5"
resources:
  instance_count: 2
mini_batch_error_threshold: 5
input_data: ${{inputs.job_data_path}}
retry_settings:
  max_retries: 2
  timeout: 45
task:
  type: run_function
  code: .
  entry_script: score.py
  environment:
    image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04
    conda_file: ./env.yml
  program_arguments: --model ${{inputs.score_model}} --tag ${{inputs.tag}}
  append_row_to: ${{outputs.job_output_file}}
"""


def test_component_file_merges_under_the_job(tmp_path: Path) -> None:
    folder = _project(tmp_path)
    (folder / "src" / "component.yml").write_text(COMPONENT)
    (folder / "src" / "env.yml").write_text("dependencies:\n  - pip:\n      - scikit-learn\n")
    doc = {"$schema": "https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json", "type": "pipeline",
           "jobs": {"predict": {
               "type": "parallel", "compute": "azureml:cpu-cluster", "component": "./src/component.yml",
               "inputs": {"job_data_path": {"type": "uri_folder", "path": "./iris-mltable/parts"},
                          "score_model": {"type": "uri_folder", "path": "./model"}},
               "outputs": {"job_output_file": {
                   "type": "uri_file", "path": "azureml://datastores/workspaceblobstore/paths/${{name}}/agg.csv"}},
               "mini_batch_error_threshold": 10, "retry_settings": {"max_retries": 3}}}}
    ws = Workspace.create(tmp_path / "ws")
    [step] = compile_file(_write(folder, doc), ws).pipeline.steps
    cfg = step.parallel_run_config
    assert Path(cfg.source_directory) == folder / "src"  # code: . is the component file's folder
    assert (cfg.mini_batch_size, cfg.allowed_failed_count) == ("5", 10)  # the job's keys win
    assert (cfg.run_max_try, cfg.run_invocation_timeout) == (4, 45)  # merged key by key
    assert cfg.append_row_file_name == "agg.csv"
    assert cfg.environment.python.conda_dependencies.pip_packages == ["scikit-learn"]
    assert step.arguments[2:] == ["--tag", "from-component"]  # an input's default


def test_missing_component_file_exits_2(tmp_path: Path, capsys) -> None:
    folder = _project(tmp_path)
    doc = {"type": "pipeline", "jobs": {"predict": {"type": "parallel", "component": "./nope.yml"}}}
    assert main(["run", str(_write(folder, doc)), "-w", str(tmp_path / "ws"), "-q"]) == 2
    assert "jobs.predict.component: ./nope.yml does not exist" in capsys.readouterr().err


def test_bindings_registered_dataset_typed_literal_and_pipeline_output(tmp_path: Path) -> None:
    from parallelrun import Dataset

    folder = _project(tmp_path)
    ws = Workspace.create(tmp_path / "ws")
    Dataset.File.from_files(str(folder / "iris-mltable" / "parts")).register(ws, "iris-parts")
    doc = _pipeline(inputs={"data": {"type": "uri_folder", "path": "azureml:iris-parts@latest"},
                            "model": "${{parent.inputs.model}}",
                            "tag": {"type": "integer", "default": 7}},
                    outputs={"scores": "${{parent.outputs.final}}"}, mini_batch_size=3)
    doc["outputs"] = {"final": {"type": "uri_folder",
                                "path": "azureml://datastores/${{default_datastore}}/paths/final/${{name}}"}}
    step = compile_file(_write(folder, doc), ws, compute="ray://127.0.0.1:10001").pipeline.steps[0]
    assert step.inputs[0].dataset.name == "iris-parts"
    assert step.arguments[2:] == ["--tag", "7"]
    assert step.output.destination_path == "final/{run-id}"
    assert step.parallel_run_config.append_row_file_name == "parallel_run_step.txt"  # a folder output
    assert step.parallel_run_config.compute_target == RayCompute(address="ray://127.0.0.1:10001")


def test_standalone_command_job(tmp_path: Path) -> None:
    folder = _project(tmp_path)
    doc = {"$schema": "https://azuremlschemas.azureedge.net/latest/commandJob.schema.json", "type": "command",
           "code": "./src", "command": "python prep.py --rows ${{inputs.rows}} --n 3",
           "inputs": {"rows": {"type": "uri_file", "path": "./iris-mltable/parts/part-0.csv"}},
           "environment": "azureml:AzureML-sklearn-1.5@latest"}
    compiled = compile_file(_write(folder, doc, "job.yml"), Workspace.create(tmp_path / "ws"))
    [step] = compiled.pipeline.steps
    assert isinstance(step, PythonScriptStep) and step.arguments[2:] == ["--n", "3"]
    assert any("AzureML-sklearn-1.5@latest is not registered in this workspace" in n for n in compiled.notices)


def test_run_name_only_in_output_paths(tmp_path: Path) -> None:
    folder = _project(tmp_path)
    doc = _pipeline()
    doc["jobs"]["score_iris"]["task"]["program_arguments"] = "--model ${{inputs.model}} --run ${{name}}"
    with pytest.raises(JobSpecError, match=r"\$\{\{name\}\} is the run's name, known when it starts"):
        compile_file(_write(folder, doc), Workspace.create(tmp_path / "ws"))


def test_jobs_reading_each_other_are_a_cycle() -> None:
    from types import SimpleNamespace

    from parallelrun.azure_v2.bindings import order_jobs

    jobs = {"score": SimpleNamespace(inputs={"d": "${{parent.jobs.prep.outputs.o}}"}),
            "prep": SimpleNamespace(inputs={"d": {"path": "x"}}),
            "a": SimpleNamespace(inputs={"d": "${{parent.jobs.b.outputs.o}}"}),
            "b": SimpleNamespace(inputs={"d": "${{parent.jobs.a.outputs.o}}"})}
    with pytest.raises(JobSpecError, match="jobs: a, b read each other's outputs in a cycle"):
        order_jobs(jobs)
    del jobs["a"], jobs["b"]
    assert order_jobs(jobs) == ["prep", "score"]


@pytest.mark.parametrize("command", ["plan", "debug"])
def test_plan_and_debug_point_to_run(tmp_path: Path, capsys, command: str) -> None:
    path = _write(_project(tmp_path), _pipeline())
    assert main([command, str(path)]) == 2
    assert f"is an Azure ML v2 job; 'parallelrun {command}' takes a parallelrun job spec" in capsys.readouterr().err
