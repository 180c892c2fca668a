"""mini_batch_size has one parser (``config.py``): the engine, the job spec and ParallelRunConfig all ask it."""

from __future__ import annotations

import pytest

from parallelrun.config import mini_batch_size_problem, parse_count, parse_size
from parallelrun.errors import JobSpecError
from parallelrun.workspace.steps import ParallelRunConfig


@pytest.mark.parametrize(("value", "expected"), [
    ("1MB", 1024**2), ("512KB", 512 * 1024), ("10kb", 10 * 1024), ("2G", 2 * 1024**3), (512, 512), ("100b", 100)])
def test_sizes(value: str | int, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["0", "1TB", "MB", "1.5MB", "", True, None])
def test_bad_sizes(value: object) -> None:
    with pytest.raises(ValueError, match="invalid mini-batch size"):
        parse_size(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "input_type", "problem"), [
    (10, "file", None), ("10", "file", None), ("auto", "file", None), (None, "tabular", None),
    ("1MB", "tabular", None), ("10kb", "tabular", None), ("1MB", None, None), ("5", None, None),
    ("1MB", "file", "is not a file count"), (0, "file", "is not a file count"),
    ("lots", "tabular", "is not a size"), ("lots", None, "is neither a file count"),
    ([1], None, "must be a number of files, a size, or auto"),
])
def test_one_answer_for_every_caller(value: object, input_type: str | None, problem: str | None) -> None:
    found = mini_batch_size_problem(value, input_type)
    assert (found is None) if problem is None else (problem in (found or "")), found


def test_counts() -> None:
    assert parse_count("7") == 7
    with pytest.raises(ValueError, match="positive whole number"):
        parse_count("0")


def test_parallel_run_config_asks_the_same_parser(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "score.py").write_text("def run(b):\n    return b\n")
    assert ParallelRunConfig("score.py", str(tmp_path), mini_batch_size="10kb").mini_batch_size == "10kb"
    with pytest.raises(JobSpecError, match="is neither a file count"):
        ParallelRunConfig("score.py", str(tmp_path), mini_batch_size="1.5MB")
