"""Azure's v1 ``iris_score.py`` pattern under pandas 3: it fails, with a hint; pinning ``pandas<3`` in the
step's Environment runs it unchanged.

The script below is our own, written on the pattern of Azure's sample (Azure/MachineLearningNotebooks,
parallel-run/Code/iris_score.py): the model name comes in ``--model_name``, the model is a pickle found
with ``Model.get_model_path``, and the prediction is assigned to a column as a 2-D ``(n, 1)`` array, which
pandas 3 refuses for string data.

The pinned environment is a real virtual environment built from the package index, so the test is
marked ``slow`` (about a minute when the wheels are cached; longer on a cold cache).
"""

from __future__ import annotations

import csv
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from parallelrun.execution.migration_hints import migration_hint, raised_inside_pandas
from parallelrun.workspace import CondaDependencies, Dataset, Environment, Model, Workspace
from parallelrun.workspace.experiment import Experiment
from parallelrun.workspace.pipeline import Pipeline
from parallelrun.workspace.steps import ParallelRunConfig, ParallelRunStep, PipelineData

IRIS_SCORE = '''
import argparse
import pickle

from azureml.core.model import Model
from azureml_user.parallel_run import EntryScript


def init():
    global iris_model
    logger = EntryScript().logger
    parser = argparse.ArgumentParser(description="iris scoring")
    parser.add_argument("--model_name", dest="model_name", required=True)
    args, _ = parser.parse_known_args()
    with open(Model.get_model_path(args.model_name), "rb") as f:
        iris_model = pickle.load(f)
    logger.info("model loaded")


def run(input_data):
    rows, _ = input_data.shape
    pred = iris_model.predict(input_data).reshape((rows, 1))
    result = input_data.drop(input_data.columns[4:], axis=1)
    result["variety"] = pred
    return result
'''

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
VARIETIES = np.array(["Setosa", "Versicolor", "Virginica"])


@pytest.fixture
def iris(tmp_path: Path) -> tuple[Workspace, Path, Path, dict[tuple[float, ...], str]]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    labels = VARIETIES[data.target]
    ws = Workspace.create(tmp_path / "ws")
    (tmp_path / "data").mkdir()
    truth = {}
    with open(tmp_path / "data" / "iris.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FEATURES)
        for row, label in zip(data.data, labels, strict=True):
            writer.writerow([f"{v:.1f}" for v in row])
            truth[tuple(round(float(v), 1) for v in row)] = str(label)
    model = LogisticRegression(max_iter=500).fit(pd.DataFrame(data.data, columns=FEATURES), labels)
    (tmp_path / "iris.pkl").write_bytes(pickle.dumps(model))
    Model.register(ws, model_path=str(tmp_path / "iris.pkl"), model_name="iris")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "iris_score.py").write_text(IRIS_SCORE)
    return ws, tmp_path / "data" / "iris.csv", scripts, truth


def _submit(ws: Workspace, csv_path: Path, scripts: Path, environment: Environment | None) -> object:
    ds = Dataset.Tabular.from_delimited_files(str(csv_path))
    config = ParallelRunConfig(entry_script="iris_score.py", source_directory=str(scripts), mini_batch_size="1KB",
                               error_threshold=5, output_action="append_row", environment=environment,
                               process_count_per_node=1, run_max_try=1)
    step = ParallelRunStep("iris-score", config, inputs=[ds.as_named_input("iris")], output=PipelineData("scores"),
                           arguments=["--model_name", "iris"], allow_reuse=False)
    return Experiment(ws, "iris").submit(Pipeline(ws, [step]))


def test_the_pattern_fails_inside_pandas_3_with_a_hint() -> None:
    if int(pd.__version__.split(".")[0]) < 3:
        pytest.skip("this interpreter has pandas < 3")
    result = pd.DataFrame({"sepal_length": [5.1, 4.9]})
    try:
        result["variety"] = np.array([["Setosa"], ["Setosa"]])
    except Exception as e:  # noqa: BLE001 - what pandas 3 raises is the subject
        exc = e
    else:
        pytest.fail("pandas 3 accepted a 2-D column assignment")
    assert raised_inside_pandas(exc)
    hint = migration_hint(exc)
    assert f"raised inside pandas {pd.__version__}" in hint
    assert "pin pandas<3 in the step's Environment" in hint and "pred.ravel()" in hint


def test_no_hint_for_errors_outside_pandas() -> None:
    try:
        {}["missing"]
    except KeyError as e:
        assert migration_hint(e) == ""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_iris_score_runs_when_the_environment_pins_pandas_below_3(iris) -> None:  # type: ignore[no-untyped-def]
    ws, csv_path, scripts, truth = iris
    if int(pd.__version__.split(".")[0]) >= 3:
        # Here, without a pin, the step fails inside pandas.
        run = _submit(ws, csv_path, scripts, None)
        assert run.wait_for_completion(show_output=False, timeout_seconds=300, raise_on_error=False) == "Failed"
        (step_run,) = run.get_steps()
        errors = "".join(Path(p).read_text(errors="replace") for p in step_run.get_details()["logFiles"].values())
        assert "only handle 1-dimensional arrays" in errors
        assert 'result["variety"] = pred' in errors  # the user's own line, in the user's traceback

    env = Environment("iris-pandas2")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["pandas<3"])
    run = _submit(ws, csv_path, scripts, env)
    assert run.wait_for_completion(show_output=False, timeout_seconds=800) == "Completed"
    (step_run,) = run.get_steps()
    out = Path(step_run.get_output_data("scores").local_path) / "parallel_run_step.txt"
    rows = [line.split() for line in out.read_text().splitlines()]
    assert len(rows) == 150
    correct = sum(truth[tuple(float(v) for v in r[:4])] == r[4] for r in rows)
    assert correct >= 140
    # The workers really ran pandas 2.
    python = env.python_executable(ws)
    probe = subprocess.run([str(python), "-c", "import pandas; print(pandas.__version__)"], capture_output=True,
                           text=True, timeout=120)
    assert probe.returncode == 0 and probe.stdout.startswith("2."), probe.stdout + probe.stderr
