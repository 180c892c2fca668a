"""Tabular data through a pipeline: a script writes CSV files into an OutputFileDatasetConfig, and a
ParallelRunStep reads them back as DataFrames (``read_delimited_files()``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_helpers import make_project, score_step

from parallelrun.workspace import Dataset
from parallelrun.workspace.experiment import Experiment
from parallelrun.workspace.pipeline import Pipeline
from parallelrun.workspace.steps import OutputFileDatasetConfig, PythonScriptStep

MAKE_ROWS = '''
import argparse, os
parser = argparse.ArgumentParser()
parser.add_argument("--out")
args = parser.parse_args()
for part in range(3):
    with open(os.path.join(args.out, f"part{part}.csv"), "w") as f:
        f.write("id,value\\n")
        for i in range(part * 10, part * 10 + 10):
            f.write(f"{i},{i * i}\\n")
'''

SCORE_ROWS = '''
def run(mini_batch):
    mini_batch["double"] = mini_batch["value"] * 2
    return mini_batch[["id", "double"]]
'''


@pytest.mark.timeout(150)
def test_rows_written_by_a_script_are_scored_as_dataframes(tmp_path: Path) -> None:
    project = make_project(tmp_path, files=1)
    project.write_script("make_rows.py", MAKE_ROWS)
    project.write_script("score_rows.py", SCORE_ROWS)
    rows = OutputFileDatasetConfig(name="rows", destination=(project.ws.get_default_datastore(), "tables/{run-id}"))
    make = PythonScriptStep("make_rows.py", source_directory=str(project.scripts), arguments=["--out", rows],
                            outputs=[rows], name="make-rows")
    score = score_step(project, inputs=[rows.read_delimited_files().as_input("rows")], script="score_rows.py",
                       mini_batch_size="100", name="score-rows")
    run = Experiment(project.ws, "tabular").submit(Pipeline(project.ws, [make, score]))
    assert run.wait_for_completion(show_output=False, timeout_seconds=120) == "Completed"
    make_run, score_run = run.get_steps()
    out = make_run.get_output_data("rows")
    assert out.path_on_datastore == f"tables/{run.id}"
    assert Path(out.local_path) == Path(project.ws.get_default_datastore().url(f"tables/{run.id}"))
    lines = (Path(score_run.get_output_data("score_rows_out").local_path) / "parallel_run_step.txt").read_text()
    got = sorted(tuple(map(int, ln.split())) for ln in lines.splitlines())
    assert got == [(i, 2 * i * i) for i in range(30)]
    # The same folder, read as a TabularDataset from the datastore.
    ds = Dataset.Tabular.from_delimited_files(project.ws.get_default_datastore().path(f"tables/{run.id}/*.csv"))
    assert len(ds.to_pandas_dataframe()) == 30
