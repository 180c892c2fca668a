"""How a job spec's ``storage_options`` and those given to ``run_job`` combine (``data/storage.py``): keyed by
protocol, the given replace the spec's protocol by protocol; options under no protocol (a filesystem's own,
``{"account_name": ...}``) are refused up front, naming both sources and how to key them. They used to be
dropped without a word: the inputs look theirs up by protocol, and the output took them only when nothing
else was keyed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from parallelrun import run_job
from parallelrun.data.storage import job_storage_options
from parallelrun.errors import UsageError
from parallelrun.runs import RunStore

SECRET = "c2VjcmV0LWtleS1ub3QtdG8tYmUtc2hvd24="
SPEC_AZ = {"az": {"account_name": "specaccount", "account_key": SECRET}}
GIVEN_AZ = {"account_name": "givenaccount", "connection_string": f"AccountName=givenaccount;AccountKey={SECRET}"}
S3_ENDPOINT = {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}

MERGED = [
    # (the job spec's, those given to run_job, what the job uses)
    pytest.param(SPEC_AZ, {"az": GIVEN_AZ}, {"az": GIVEN_AZ}, id="keyed+keyed: the given replace the protocol"),
    pytest.param(SPEC_AZ, {"s3": S3_ENDPOINT}, {**SPEC_AZ, "s3": S3_ENDPOINT}, id="keyed+keyed: other protocols"),
    pytest.param({"file": {"shared": True}}, None, {"file": {"shared": True}}, id="keyed spec alone"),
    pytest.param({}, None, {}, id="none"),
]


@pytest.mark.parametrize(("spec", "given", "used"), MERGED)
def test_options_keyed_by_protocol_combine_protocol_by_protocol(spec: dict[str, Any], given: dict[str, Any] | None,
                                                               used: dict[str, Any]) -> None:
    assert job_storage_options(spec, given) == used
    assert job_storage_options(spec, job_storage_options(spec, given)) == used  # applying it twice changes nothing


REFUSED = [
    # (the job spec's, those given to run_job, what the message says)
    pytest.param(SPEC_AZ, GIVEN_AZ, [
        "the storage_options given to run_job (or resume_run) hold options under no protocol (account_name, "
        "connection_string), while the job spec's storage_options are keyed by protocol (az).",
        'Key the ones given to run_job by protocol: storage_options={"az": {"account_name": ..., '
        '"connection_string": ...}} (they replace the job spec\'s az options).'], id="keyed spec + flat given"),
    pytest.param({}, GIVEN_AZ, [
        "the storage_options given to run_job (or resume_run) hold options under no protocol (account_name, "
        "connection_string). A job's",
        'Key the ones given to run_job by protocol: storage_options={"az": {"account_name": ..., '
        '"connection_string": ...}}.'], id="flat given alone"),
    pytest.param({}, {"az": {"account_name": "a"}, "sas_token": SECRET}, [
        "given to run_job (or resume_run) hold options under no protocol (sas_token). A job's",
        'storage_options={"az": {"sas_token": ...}}.'], id="given half keyed"),
    pytest.param(S3_ENDPOINT, None, [
        "the job spec's storage_options hold options under no protocol (client_kwargs). A job's",
        "In the job spec, write them under their protocol: storage_options: {s3: {client_kwargs: ...}}."],
        id="flat spec"),
    pytest.param(S3_ENDPOINT, {"s3": {"key": "k", "secret": SECRET}}, [
        "the storage_options given to run_job are keyed by protocol (s3), while the job spec's storage_options "
        "hold options under no protocol (client_kwargs).",
        "storage_options: {s3: {client_kwargs: ...}}."], id="flat spec + keyed given"),
    pytest.param(S3_ENDPOINT, {"key": "k", "secret": SECRET}, [
        "given to run_job (or resume_run) hold options under no protocol (key, secret), while the job spec's "
        "storage_options hold options under no protocol (client_kwargs).",
        'storage_options={"s3": {"key": ..., "secret": ...}}.', "storage_options: {s3: {client_kwargs: ...}}."],
        id="flat spec + flat given"),
]


@pytest.mark.parametrize(("spec", "given", "words"), REFUSED)
def test_options_under_no_protocol_are_refused_naming_both_sources(spec: dict[str, Any], given: dict[str, Any] | None,
                                                                   words: list[str]) -> None:
    with pytest.raises(UsageError) as info:
        job_storage_options(spec, given)
    text = str(info.value)
    assert all(w in text for w in words), text
    assert ("A job's storage_options are keyed by protocol, for its inputs and its output alike: options under no "
            "protocol never reach the inputs, so they are refused rather than dropped.") in text
    assert SECRET not in text and "specaccount" not in text and "givenaccount" not in text  # names, never values
    assert info.value.exit_code == 2


def test_run_job_refuses_flat_options_beside_the_specs_before_any_run(tmp_path: Path) -> None:
    """Local inputs and output: the refusal needs no store. It comes before the run's record or output exist;
    the same options keyed by protocol run."""
    job = tmp_path / "job"
    (job / "data").mkdir(parents=True)
    for name in ("a.txt", "b.txt"):
        (job / "data" / name).write_text(name[0])
    (job / "score.py").write_text("import os\n\ndef run(mini_batch):\n    return [os.path.basename(p) for p in mini_batch]\n")
    spec = {"name": "options", "entry_script": "score.py", "inputs": [{"type": "file", "path": "data"}],
            "output": "out", "process_count_per_node": 1, "storage_options": SPEC_AZ}
    (job / "job.yml").write_text(json.dumps(spec))
    ws = tmp_path / "ws"
    with pytest.raises(UsageError) as info:
        run_job(job / "job.yml", workspace=ws, progress="quiet", storage_options=GIVEN_AZ)
    text = str(info.value)
    assert "the storage_options given to run_job (or resume_run) hold options under no protocol" in text, text
    assert "the job spec's storage_options are keyed by protocol (az)" in text, text
    assert 'storage_options={"az": {"account_name": ..., "connection_string": ...}}' in text, text
    assert RunStore(ws).list() == [] and not (job / "out").exists()
    result = run_job(job / "job.yml", workspace=ws, progress="quiet", storage_options={"az": GIVEN_AZ})
    assert result.status == "Completed", result.summary()
    assert sorted((job / "out" / "parallel_run_step.txt").read_text().split()) == ["a.txt", "b.txt"]


@pytest.mark.parametrize(("options", "said"), [
    pytest.param({"client_kwargs": {"aws_secret_access_key": SECRET}}, "client_kwargs: not a protocol",
                 id="a filesystem's own option"),
    pytest.param({"az": f"AccountName=a;AccountKey={SECRET}"}, "Input should be a valid dictionary",
                 id="a connection string where options belong"),
])
def test_a_spec_with_options_under_no_protocol_fails_when_loaded_without_quoting_them(
        options: dict[str, Any], said: str) -> None:
    from parallelrun.config import validate_spec
    from parallelrun.errors import JobSpecError

    with pytest.raises(JobSpecError) as e:
        validate_spec({"name": "keyed", "entry_script": "e.py", "inputs": [{"type": "file", "path": "d"}],
                       "storage_options": options})
    assert said in str(e.value) and "storage_options" in str(e.value)
    assert SECRET not in str(e.value)  # credentials are never quoted back
