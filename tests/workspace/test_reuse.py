"""allow_reuse: an unchanged step reuses its earlier output; each kind of change runs it again."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import PREP, Project, make_project, output_rows, score_step

from parallelrun.workspace import Environment, Model
from parallelrun.workspace.experiment import Experiment
from parallelrun.workspace.pipeline import Pipeline
from parallelrun.workspace.steps import PipelineData, PythonScriptStep


class Base:
    """The module's workspace, its base step settings, and the step run every hit must point to."""

    def __init__(self, project: Project) -> None:
        self.project = project
        model_dir = project.root / "model"
        model_dir.mkdir()
        (model_dir / "weights.txt").write_text("v1")
        Model.register(project.ws, str(model_dir), "scorer")
        (model_dir / "weights.txt").write_text("v2")
        Model.register(project.ws, str(model_dir), "scorer")
        self.settings: dict[str, Any] = {"mini_batch_size": 4, "model_version": 1, "env_value": "a",
                                         "arguments": ["--suffix", "x"], "allow_reuse": True}
        self.first_id = ""

    def submit(self, regenerate_outputs: bool = False, **changes: Any) -> Any:
        s = self.settings | changes
        env = Environment("scoring")
        env.environment_variables = {"MODE": s["env_value"]}
        step = score_step(self.project, inputs=[self.project.dataset()], mini_batch_size=s["mini_batch_size"],
                          environment=env, models=[Model(self.project.ws, "scorer", version=s["model_version"])],
                          arguments=s["arguments"], allow_reuse=s["allow_reuse"])
        run = Experiment(self.project.ws, "reuse").submit(Pipeline(self.project.ws, [step]),
                                                          regenerate_outputs=regenerate_outputs)
        assert run.wait_for_completion(show_output=False, timeout_seconds=120) == "Completed"
        (step_run,) = run.get_steps()
        return step_run


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Base]:
    b = Base(make_project(tmp_path_factory.mktemp("reuse"), files=6))
    first = b.submit()
    assert not first.is_reused
    b.first_id = first.id
    b.expected = sorted(output_rows(first, "score_out"))
    assert len(b.expected) == 6
    yield b


def _assert_hit(base: Base, step_run: Any, origin: str | None = None) -> None:
    assert step_run.is_reused, "nothing changed: the step must reuse its earlier output"
    assert step_run.record.reused_from == (origin or base.first_id)
    assert sorted(output_rows(step_run, "score_out")) == base.expected
    assert not (step_run.run_dir / "journal.sqlite").exists()  # nothing ran


def _assert_miss(step_run: Any) -> None:
    assert not step_run.is_reused and step_run.record.reused_from is None
    assert step_run.record.counts["batches_succeeded"] > 0  # it really ran


@pytest.mark.timeout(120)
def test_unchanged_step_is_reused(base: Base) -> None:
    _assert_hit(base, base.submit())
    # Editor and interpreter droppings are not part of the source.
    (base.project.scripts / "__pycache__").mkdir(exist_ok=True)
    (base.project.scripts / "__pycache__" / "score.cpython-311.pyc").write_bytes(b"\0")
    (base.project.scripts / ".score.py.swp").write_text("editor state")
    _assert_hit(base, base.submit())


def _edit(path: Path, extra: str) -> Callable[[], None]:
    original, st = path.read_text(), path.stat()
    path.write_text(original + extra)

    def undo() -> None:  # content and modification time: a dataset's fingerprint holds both
        path.write_text(original)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    return undo


def _add_file(path: Path, text: str) -> Callable[[], None]:
    path.write_text(text)
    return path.unlink


# Each case changes one thing that decides the result, submits (a miss), undoes it, submits (a hit).
CHANGES: list[tuple[str, Callable[[Base], tuple[dict[str, Any], Callable[[], None]]]]] = [
    ("entry script", lambda b: ({}, _edit(b.project.scripts / "score.py", "\n# tuned\n"))),
    ("another file in the source folder", lambda b: ({}, _add_file(b.project.scripts / "labels.txt", "x"))),
    ("config", lambda b: ({"mini_batch_size": 3}, lambda: None)),
    ("input data", lambda b: ({}, _add_file(b.project.data / "item999.txt", "a new item"))),
    ("input file content", lambda b: ({}, _edit(b.project.data / "item000.txt", "more"))),
    ("model version", lambda b: ({"model_version": 2}, lambda: None)),
    ("environment", lambda b: ({"env_value": "b"}, lambda: None)),
    ("arguments", lambda b: ({"arguments": ["--suffix", "y"]}, lambda: None)),
]


# ~3 s each: `make test` runs a change to the code and one to the data; CI runs them all (make test-slow).
_FAST = ("entry script", "input file content")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("what, change", [
    pytest.param(*c, id=c[0], marks=() if c[0] in _FAST else pytest.mark.slow) for c in CHANGES])
def test_each_change_runs_the_step_again(base: Base, what: str, change: Any) -> None:
    settings, undo = change(base)
    try:
        _assert_miss(base.submit(**settings))
    finally:
        undo()
    _assert_hit(base, base.submit())


@pytest.mark.timeout(120)
def test_allow_reuse_false_and_regenerate_outputs_always_run(base: Base) -> None:
    _assert_miss(base.submit(allow_reuse=False))
    latest = base.submit(regenerate_outputs=True)
    _assert_miss(latest)
    _assert_hit(base, base.submit(), origin=latest.id)  # the newest identical output is the one reused
    base.first_id = latest.id


@pytest.mark.timeout(180)
def test_a_consumer_reuses_when_its_producer_output_is_the_same(tmp_path: Path) -> None:
    project = make_project(tmp_path, files=4)
    exp = Experiment(project.ws, "chain")
    # The producer's script lives in a folder of its own: a step's whole source folder is part of its key.
    prep_dir = tmp_path / "prep"
    prep_dir.mkdir()
    (prep_dir / "prep.py").write_text(PREP)

    def submit() -> tuple[Any, Any]:
        prepared = PipelineData("prepared")
        prep = PythonScriptStep("prep.py", source_directory=str(prep_dir), name="prep",
                                arguments=["--input", project.dataset(), "--output", prepared], outputs=[prepared])
        run = exp.submit(Pipeline(project.ws, [score_step(project, inputs=[prepared]), prep]))
        assert run.wait_for_completion(show_output=False, timeout_seconds=120) == "Completed"
        prep_run, score_run = run.get_steps()
        return prep_run, score_run

    prep1, score1 = submit()
    assert not prep1.is_reused and not score1.is_reused
    prep2, score2 = submit()
    assert prep2.is_reused and score2.is_reused
    # The producer's script changes but writes the same files: it runs, its consumer is reused.
    (prep_dir / "prep.py").write_text(PREP + "\n# refactored, same output\n")
    prep3, score3 = submit()
    assert not prep3.is_reused and score3.is_reused and score3.record.reused_from == score1.id
    # The producer now writes other content: both run.
    (prep_dir / "prep.py").write_text(PREP.replace("text[::-1]", "text[::-1] + '!'"))
    prep4, score4 = submit()
    assert not prep4.is_reused and not score4.is_reused
    assert all(r.endswith("!") for r in output_rows(score4, "score_out"))
    # A reused output is a copy: removing the original does not break the newer run's output.
    shutil.rmtree(Path(score1.get_output_data("score_out").local_path))
    assert len(output_rows(score2, "score_out")) == 4
