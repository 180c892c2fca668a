"""Shared by the pipeline tests: a small project (input files, scripts, a workspace) and its expected rows."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parallelrun.workspace import Dataset, Workspace
from parallelrun.workspace.steps import ParallelRunConfig, ParallelRunStep, PipelineData

# An entry script as Azure users write it: Azure's imports, EntryScript's logger.
SCORE = '''
import os
from azureml_user.parallel_run import EntryScript

def init():
    global logger
    logger = EntryScript().logger
    logger.info("score init")

def run(mini_batch):
    logger.info("scoring %d files", len(mini_batch))
    return [f"{os.path.basename(p)}: {open(p).read().strip().upper()}" for p in mini_batch]
'''

# A PythonScriptStep: copy every input file, reversing its text, into the output folder.
PREP = '''
import argparse, os
parser = argparse.ArgumentParser()
parser.add_argument("--input", required=True)
parser.add_argument("--output", required=True)
args = parser.parse_args()
os.makedirs(args.output, exist_ok=True)
names = sorted(os.listdir(args.input))
for name in names:
    text = open(os.path.join(args.input, name)).read().strip()
    with open(os.path.join(args.output, name), "w") as f:
        f.write(text[::-1] + "\\n")
print(f"prepared {len(names)} files")
'''


@dataclass
class Project:
    root: Path
    ws: Workspace
    data: Path
    scripts: Path

    def dataset(self, name: str = "raw") -> Any:
        return Dataset.File.from_files(str(self.data)).as_named_input(name)

    def texts(self) -> dict[str, str]:
        return {p.name: p.read_text().strip() for p in sorted(self.data.iterdir())}

    def write_script(self, name: str, source: str) -> Path:
        path = self.scripts / name
        path.write_text(textwrap.dedent(source).lstrip())
        return path


def make_project(tmp_path: Path, files: int = 12) -> Project:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(files):
        (data / f"item{i:03d}.txt").write_text(f"item number {i}\n")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    project = Project(tmp_path, Workspace.create(tmp_path / "ws"), data, scripts)
    project.write_script("score.py", SCORE)
    project.write_script("prep.py", PREP)
    return project


def score_step(project: Project, inputs: list[Any], output: PipelineData | None = None, name: str = "score",
               script: str = "score.py", mini_batch_size: int = 4, process_count_per_node: int = 1,
               **step_args: Any) -> ParallelRunStep:
    config_args = {k: step_args.pop(k) for k in list(step_args) if k in (
        "environment", "environment_variables", "run_invocation_timeout", "run_max_try", "error_threshold")}
    config = ParallelRunConfig(entry_script=script, source_directory=str(project.scripts),
                               mini_batch_size=mini_batch_size, error_threshold=config_args.pop("error_threshold", 0),
                               output_action="append_row", process_count_per_node=process_count_per_node,
                               **config_args)
    return ParallelRunStep(name, config, inputs=inputs, output=output or PipelineData(f"{name.replace('-', '_')}_out"),
                           **step_args)


def rows(path: str | Path) -> list[str]:
    return Path(path).read_text().splitlines()


def output_rows(step_run: Any, name: str) -> list[str]:
    """The rows of a ParallelRunStep's output file, read where the step wrote them."""
    folder = Path(step_run.get_output_data(name).local_path)
    return rows(folder / "parallel_run_step.txt")
