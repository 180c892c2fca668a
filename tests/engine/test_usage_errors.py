"""Every usage error exits 2 with a message and no traceback; the messages name the problem.

The table runs the installed CLI as a user would (a subprocess), so a typer upgrade that changes its
exception types (typer 0.29 vendors click as ``typer._click``) fails here, not in front of a user.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from engine_helpers import ECHO

# (argv, exit code, fragments of stderr+stdout)
USAGE = [
    (["--version"], 0, ["parallelrun 0.1.0"]),
    (["bogus"], 2, ["No such command 'bogus'"]),
    (["run"], 2, ["Missing argument", "parallelrun run --help"]),
    (["plan", "--show", "abc", "job.yml"], 2, ["Invalid value for '--show'", "valid integer"]),
    (["run", "job.yml", "--nope"], 2, ["No such option: --nope"]),
    (["runs", "show"], 2, ["Missing argument"]),
    (["runs", "bogus"], 2, ["No such command 'bogus'"]),
    (["run", "nothere.yml"], 2, ["job file 'nothere.yml' does not exist"]),
    (["run", "job.yml", "--set", "mini_batch_size"], 2, ["expected field=value"]),
    (["run", "job.yml", "--set", "inputs.5.path=x"], 2, ["inputs has 1 element(s), so index 5 does not exist"]),
    (["run", "job.yml", "--set", "inputs.x.path=x"], 2, ["inputs is a list: use an index"]),
    (["run", "job.yml", "--set", "name.x=1"], 2, ["name is a single value ('test-job'), so it has no field 'x'"]),
    (["plan", "job.yml", "--set", "inputs.0.path.deeper=1"], 2, ["inputs.0.path is a single value"]),
    (["runs", "show", "nope", "--workspace", "ws"], 2, ["no run 'nope'"]),
    (["runs", "logs", "nope", "--workspace", "ws"], 2, ["no run 'nope'"]),
    (["resume", "nope", "--workspace", "ws"], 2, ["no run 'nope'"]),
    (["debug", "job.yml", "--batch", "99"], 2, ["no mini-batch 99"]),
]


@pytest.mark.parametrize(("argv", "code", "fragments"), USAGE, ids=[" ".join(u[0]) for u in USAGE])
def test_usage_error(job_factory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                     argv: list[str], code: int, fragments: list[str]) -> None:
    """In this process, through ``main()`` - the function the ``parallelrun`` script calls - for speed;
    the subprocess tests below check the installed script itself."""
    from parallelrun.cli import main

    job = job_factory(ECHO)
    monkeypatch.chdir(job.root)
    rc = main(argv)
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert rc == code, out
    for f in fragments:
        assert f in out, out
    assert "Traceback" not in out


@pytest.mark.parametrize(("argv", "code", "fragment"), [
    ([], 2, "Usage"), (["--version"], 0, "parallelrun 0.1.0"), (["bogus"], 2, "No such command 'bogus'"),
    (["plan", "--show", "abc", "x.yml"], 2, "Invalid value for '--show'"),
])
def test_installed_script(tmp_path: Path, argv: list[str], code: int, fragment: str) -> None:
    script = Path(sys.executable).with_name("parallelrun")
    res = subprocess.run([str(script), *argv], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == code, res.stdout + res.stderr
    assert fragment in res.stdout + res.stderr and "Traceback" not in res.stderr


def test_binary_job_file(job_factory) -> None:
    job = job_factory(ECHO)
    job.job.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary")
    res = job.run()
    assert res.returncode == 2, res.stderr
    assert "not a text file" in res.stderr and "job.yml" in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_paths_reported_with_field_errors_in_one_pass(job_factory) -> None:
    """A bad name, a bad size, a missing entry script and a missing input: all four in one message."""
    job = job_factory(ECHO)
    doc = yaml.safe_load(job.job.read_text())
    doc.update({"name": "My Job", "mini_batch_size": "lots", "entry_script": "nothere.py",
                "inputs": [{"type": "file", "path": "nope"}]})
    job.job.write_text(yaml.safe_dump(doc))
    res = job.run()
    assert res.returncode == 2, res.stderr
    assert "4 problem(s)" in res.stderr, res.stderr
    for fragment in ("name:", "mini_batch_size", "entry_script: 'nothere.py' does not exist",
                     "inputs.0.path: input path 'nope' does not exist"):
        assert fragment in res.stderr
    assert not (job.ws / "runs").exists() or not list((job.ws / "runs").iterdir())


def test_missing_source_directory(job_factory) -> None:
    job = job_factory(ECHO)
    doc = yaml.safe_load(job.job.read_text())
    doc["source_directory"] = "gone"
    job.job.write_text(yaml.safe_dump(doc))
    res = job.cli("plan", "job.yml")
    assert res.returncode == 2
    assert "source_directory: 'gone' is not a folder" in res.stderr


@pytest.mark.parametrize("change", [{"inputs": [{"type": "file", "path": "nope"}]}, "empty"],
                         ids=["missing-input", "empty-dataset"])
def test_spec_error_leaves_no_run(job_factory, change) -> None:
    job = job_factory(ECHO, n_files=0 if change == "empty" else 12)
    if change != "empty":
        doc = yaml.safe_load(job.job.read_text())
        doc.update(change)
        job.job.write_text(yaml.safe_dump(doc))
    res = job.run()
    assert res.returncode == 2, res.stderr
    listing = job.cli("runs", "list", "--workspace", str(job.ws))
    assert listing.stdout.strip() == "no runs", listing.stdout
