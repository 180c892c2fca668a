"""The commands around a run: plan, debug, runs list/show/logs, --set, schema."""

from __future__ import annotations

import json

import jsonschema
import yaml
from engine_helpers import ECHO, expected_names


def test_run_prints_id_and_summary(job_factory) -> None:
    job = job_factory(ECHO)
    res = job.cli("run", "job.yml", "--workspace", str(job.ws))
    assert res.returncode == 0
    assert "run id: test-job_" in res.stderr
    for fragment in ("Completed", "12 succeeded, 0 failed", "mini-batches: 4 succeeded", "items/s", "output:",
                     "logs:"):
        assert fragment in res.stderr
    assert job.lines() == expected_names(12)


def test_set_overrides_fields(job_factory) -> None:
    job = job_factory(ECHO)
    res = job.run("--set", "mini_batch_size=5", "--set", "process_count_per_node=1")
    assert res.returncode == 0
    rec = job.record()
    assert rec["counts"]["batches"] == 3
    assert rec["spec"]["process_count_per_node"] == 1


def test_plan(job_factory) -> None:
    job = job_factory(ECHO, n_files=25)
    res = job.cli("plan", "job.yml", "--set", "mini_batch_size=10")
    assert res.returncode == 0
    assert "25 files, 25 items" in res.stdout and "3 mini-batches" in res.stdout
    assert "mini-batch 0: 10 items" in res.stdout and "f000.txt" in res.stdout
    res = job.cli("plan", "job.yml", "--json")
    d = json.loads(res.stdout)
    assert d["batches"] == 9 and d["items"] == 25 and d["first"][0]["paths"][0].endswith("f000.txt")


def test_debug_runs_one_batch_in_process(job_factory) -> None:
    job = job_factory("import os\ndef init():\n    print('INIT-CALLED')\ndef run(mini_batch, ctx):\n"
                      "    return [f'{ctx.minibatch_index}:{os.path.basename(p)}' for p in mini_batch]\n")
    res = job.cli("debug", "job.yml", "--batch", "2")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["INIT-CALLED", "2:f006.txt", "2:f007.txt", "2:f008.txt"]
    res = job.cli("debug", "job.yml", "--batch", "99")
    assert res.returncode == 2 and "no mini-batch 99" in res.stderr


def test_debug_shows_user_traceback(job_factory) -> None:
    job = job_factory("def run(mini_batch):\n    return 1 / 0\n")
    res = job.cli("debug", "job.yml", "--batch", "0")
    assert res.returncode == 1
    assert "ZeroDivisionError" in res.stderr and "entry.py" in res.stderr
    assert "parallelrun/runner.py" not in res.stderr


def test_runs_list_and_show_json(job_factory) -> None:
    job = job_factory(ECHO)
    job.run()
    res = job.cli("runs", "list", "--workspace", str(job.ws), "--json")
    (rec,) = json.loads(res.stdout)
    for key in ("id", "name", "status", "counts", "output_file", "logs", "journal"):
        assert key in rec
    assert rec["status"] == "Completed" and rec["counts"]["items_succeeded"] == 12
    shown = json.loads(job.cli("runs", "show", rec["id"], "--workspace", str(job.ws), "--json").stdout)
    assert shown["id"] == rec["id"]
    text = job.cli("runs", "list", "--workspace", str(job.ws)).stdout
    assert rec["id"] in text and "Completed" in text
    logs = job.cli("runs", "logs", rec["id"], "--workspace", str(job.ws), "--file", "job_result.txt").stdout
    assert "Completed" in logs
    bad = job.cli("runs", "logs", rec["id"], "--workspace", str(job.ws), "--file", "../../../run.json")
    assert bad.returncode == 2


def test_schema_validates_example_jobs(job_factory) -> None:
    job = job_factory(ECHO)
    schema = json.loads(job.cli("schema").stdout)
    doc = yaml.safe_load(job.job.read_text())
    jsonschema.validate(doc, schema)
    assert "mini_batch_size" in schema["properties"]


def test_entry_script_api_and_argv(job_factory) -> None:
    script = """
import argparse, os, sys
from parallelrun import EntryScript
def init():
    global ARGS
    ARGS, _ = argparse.ArgumentParser().parse_known_args()
    EntryScript().logger.info('hello from %s', EntryScript().agent_name)
def run(mini_batch):
    p = argparse.ArgumentParser(); p.add_argument('--tag')
    tag = p.parse_known_args()[0].tag
    return [f"{os.path.basename(x)} {tag} {os.environ['MY_VAR']} {os.path.basename(os.getcwd())}" for x in mini_batch]
"""
    job = job_factory(script, arguments=["--tag", 7], environment_variables={"MY_VAR": 1})
    assert job.run().returncode == 0
    assert job.lines()[0] == f"f000.txt 7 1 {job.root.name}"
    logs = list((job.run_dirs()[0] / "logs" / "user" / "entry_script_log" / "node0").glob("*.log.txt"))
    assert logs and any("hello from node0.process" in p.read_text() for p in logs)


def test_plan_of_one_file_and_auto(job_factory) -> None:
    job = job_factory(ECHO, n_files=1)
    res = job.cli("plan", "job.yml")
    assert res.returncode == 0, res.stderr
    assert "1 file, 1 item," in res.stdout and "-> 1 mini-batch (planned in" in res.stdout
    auto = job.cli("plan", "job.yml", "--set", "mini_batch_size=auto")
    assert auto.returncode == 0, auto.stderr
    assert "the size is chosen at run time" in auto.stdout


def test_init_failure_summary_points_at_the_error_not_an_empty_output(job_factory) -> None:
    job = job_factory("def init():\n    raise RuntimeError('no model here')\ndef run(mini_batch):\n    return mini_batch\n")
    res = job.run()
    assert res.returncode == 1
    assert "output:       none (no item succeeded)" in res.stdout, res.stdout
    assert "job_error.txt" in res.stdout and "resume with:" in res.stdout


def test_plain_progress_says_planning_until_totals_are_known() -> None:
    import io

    from parallelrun.progress import Progress

    out = io.StringIO()
    p = Progress("plain", stream=out, interval=0.0)
    p.start(0, planning=True)
    p.update(0, 0, 0, 0)
    p.set_total(1450)
    p.update(0, 0, 0, 58)
    p.planned(2000)
    p.update(100, 1, 4, 80)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("progress: planning… 0 items") and "%" not in lines[0]
    assert lines[1].startswith("progress: planning… 1,450 items in 58 mini-batches so far") and "%" not in lines[1]
    assert lines[2].startswith("progress: 100/2,000 items (5.0%), 1 failed, 4/80 mini-batches")


def test_non_tty_progress_of_an_auto_job_says_planning_first(job_factory) -> None:
    job = job_factory(ECHO, mini_batch_size="auto")
    res = job.cli("run", "job.yml", "--workspace", str(job.ws))
    assert res.returncode == 0, res.stderr
    progress = [line for line in res.stderr.splitlines() if line.startswith("progress:")]
    assert progress and progress[0].startswith("progress: planning…"), res.stderr
    assert not any("0/0 items" in line for line in progress), progress
    assert any("/12 items" in line for line in progress[1:]), progress  # the real total, once known


def test_a_job_spec_is_told_from_an_azure_v2_job_without_loading_the_v2_front_end(tmp_path) -> None:
    """``parallelrun run`` peeks at the text first: a file without "azureml", "pipeline" or "parallel"
    cannot be a v2 job (is_azure_v2), so the v2 modules are not imported for it."""
    import subprocess
    import sys

    from parallelrun.cli.app import _is_azure_v2

    cases = {
        "spec.yml": ("name: x\nentry_script: s.py\ninputs:\n- {type: file, path: data}\n", False),
        "parallel.yml": ("type: parallel\ntask: {type: run_function}\n", True),
        "pipeline.yml": ("type: pipeline\njobs: {}\n", True),
        "schema.yml": ("$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json\n", True),
        "named.yml": ("name: my-parallel-job\nentry_script: s.py\ninputs: []\n", False),  # the full check says no
    }
    for name, (text, v2) in cases.items():
        (tmp_path / name).write_text(text)
        assert _is_azure_v2(tmp_path / name) is v2, name
    assert _is_azure_v2(tmp_path / "missing.yml") is False
    probe = ("import sys; from pathlib import Path; from parallelrun.cli.app import _is_azure_v2; "
             f"assert not _is_azure_v2(Path({str(tmp_path / 'spec.yml')!r})); "
             "print('parallelrun.azure_v2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
