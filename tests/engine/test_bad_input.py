"""Bad input fails fast with exit code 2 and a message that names the fix."""

from __future__ import annotations

import pytest
import yaml
from engine_helpers import ECHO

CASES = [
    # (id, change to the job folder, expected fragments of stderr)
    ("missing-path", {"inputs": [{"type": "file", "path": "nope"}]}, ["'nope' does not exist", "relative to the job"]),
    ("bad-batch-size-file", {"mini_batch_size": "1MB"}, ["mini_batch_size", "Example: mini_batch_size: 10"]),
    ("bad-batch-size-tabular", {"inputs": [{"type": "tabular", "path": "data"}], "mini_batch_size": "lots"},
     ["mini_batch_size", "1MB"]),
    ("unknown-field", {"mini_batch_sise": 5}, ["mini_batch_sise", "Did you mean 'mini_batch_size'"]),
    ("bad-name", {"name": "My Job"}, ["name", "Example: name: digits"]),
    ("node-count-local", {"node_count": 2}, ["node_count", "Ray backend"]),
    ("mixed-inputs", {"inputs": [{"type": "file", "path": "data"}, {"type": "tabular", "path": "data"}]},
     ["one input type"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_spec(job_factory, case) -> None:
    _, change, fragments = case
    job = job_factory(ECHO)
    doc = yaml.safe_load(job.job.read_text())
    doc.update(change)
    job.job.write_text(yaml.safe_dump(doc))
    res = job.run()
    assert res.returncode == 2, res.stderr
    for f in fragments:
        assert f in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_every_problem_reported_at_once(job_factory) -> None:
    job = job_factory(ECHO)
    doc = yaml.safe_load(job.job.read_text())
    doc.update({"run_max_try": 0, "logging_level": "LOUD", "output_action": "append", "colour": "red"})
    job.job.write_text(yaml.safe_dump(doc))
    res = job.run()
    assert res.returncode == 2
    assert "4 problem(s)" in res.stderr
    for field in ("run_max_try", "logging_level", "output_action", "colour"):
        assert field in res.stderr


def test_empty_dataset(job_factory) -> None:
    job = job_factory(ECHO, n_files=0)
    res = job.cli("run", "job.yml", "--workspace", str(job.ws))  # not quiet: the run id would be printed
    assert res.returncode == 2
    assert "the dataset is empty" in res.stderr
    assert "run id:" not in res.stderr  # no id is shown for a run that is not kept
    assert not (job.ws / "runs").exists() or not job.run_dirs()


def test_script_without_run(job_factory) -> None:
    job = job_factory("def init():\n    pass\n")
    res = job.run()
    assert res.returncode == 2
    assert "defines no run()" in res.stderr and "def run(mini_batch)" in res.stderr


def test_script_with_syntax_error(job_factory) -> None:
    job = job_factory("def run(mini_batch)\n    return mini_batch\n")
    res = job.run()
    assert res.returncode == 2
    assert "syntax error" in res.stderr and "entry.py" in res.stderr and "line 1" in res.stderr


def test_missing_job_file(tmp_path) -> None:
    from engine_helpers import JobFolder

    res = JobFolder(tmp_path).cli("run", "nothere.yml")
    assert res.returncode == 2
    assert "does not exist" in res.stderr


def test_bad_override(job_factory) -> None:
    job = job_factory(ECHO)
    res = job.run("--set", "mini_batch_size")
    assert res.returncode == 2
    assert "field=value" in res.stderr


def test_unknown_run_id(job_factory) -> None:
    job = job_factory(ECHO)
    res = job.cli("resume", "nope", "--workspace", str(job.ws))
    assert res.returncode == 2
    assert "no run 'nope'" in res.stderr


def test_cross_field_problems_reported_with_field_errors(job_factory) -> None:
    job = job_factory(ECHO)
    doc = yaml.safe_load(job.job.read_text())
    doc.update({"run_max_try": 0, "node_count": 3})
    job.job.write_text(yaml.safe_dump(doc))
    res = job.run()
    assert res.returncode == 2
    assert "2 problem(s)" in res.stderr and "run_max_try" in res.stderr and "Ray backend" in res.stderr
