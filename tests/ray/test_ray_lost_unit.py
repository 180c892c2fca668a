"""Which batch a dead Ray actor was running (issue 14): an actor replies to each call as it ends, and dying
right after one ended (in the next batch's run()) can take that reply with it. The actor notes each batch it
starts; the pool then fails that batch and returns the ended ones unstarted (no Ray started here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from parallelrun.config import validate_spec
from parallelrun.execution.base import WorkerState
from parallelrun.execution.messages import Event, Outcome, WorkerLost
from parallelrun.execution.ray_executor import RayExecutor
from parallelrun.execution.running_note import RunningNote, running_marker
from parallelrun.execution.worker import WorkerConfig

pytestmark = pytest.mark.ray

NAME = "node0.process000"


def _executor(tmp_path: Path, queue: list[tuple[int, int]]) -> RayExecutor:
    (tmp_path / "sys").mkdir(exist_ok=True)
    cfg = WorkerConfig(entry_script="e.py", source_directory=".", working_dir=".", arguments=[],
                       environment_variables={}, logging_level="INFO", output_dir=".", log_dir=str(tmp_path),
                       output_action="append_row", output_format="text")
    spec = validate_spec({"name": "digits", "entry_script": "s.py", "inputs": [{"type": "file", "path": "d"}],
                          "compute": "127.0.0.1:6379"})
    ex = RayExecutor(cfg, spec)
    ex._closing = True  # no replacement: this is about the outcomes
    ex._states[NAME] = WorkerState(NAME, ready=True, pid=42, queue=list(queue))
    return ex


def _statuses(events: list[Event]) -> list[tuple[int, int, str]]:
    return [(e.index, e.attempt, e.status) for e in events if isinstance(e, Outcome)]


def test_the_batch_the_actor_noted_is_the_one_lost_the_ended_ones_go_back(tmp_path: Path) -> None:
    ex = _executor(tmp_path, [(1, 1), (2, 1), (3, 1)])
    note = RunningNote(running_marker(str(tmp_path), NAME))
    note.note(10, 1)
    note.note(2, 1)  # batch 1 ended; its reply died with the actor (10: an earlier, longer note rewritten)
    note.close()
    events: list[Event] = []

    ex._lost(NAME, "ActorDiedError: exit code 3", events)

    assert _statuses(events) == [(1, 1, "returned"), (2, 1, "lost"), (3, 1, "returned")]
    lost = [e for e in events if isinstance(e, WorkerLost)]
    assert len(lost) == 1 and "died while running mini-batch 2" in lost[0].message


@pytest.mark.parametrize("note", [None, "7 1", "2 2", "garbage"])
def test_without_a_matching_note_the_head_is_the_one_lost(tmp_path: Path, note: str | None) -> None:
    ex = _executor(tmp_path, [(1, 1), (2, 1)])
    if note is not None:
        Path(running_marker(str(tmp_path), NAME)).write_text(note)
    events: list[Event] = []

    ex._lost(NAME, "ActorDiedError", events)

    assert _statuses(events) == [(1, 1, "lost"), (2, 1, "returned")]
