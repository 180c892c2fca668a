"""A job spec's ``storage_options`` reach its inputs, not only its output: planning in the driver, reading in
the workers, ``parallelrun plan`` and ``debug``. Credentials given nowhere else (no AWS_* or AZURE_*
variable) are enough; wrong or missing ones stop the job with a message naming the input and what to fix,
exit code 2, and no traceback."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from parallelrun.errors import DatasetError
from parallelrun.preview import debug_batch, plan_job
from parallelrun.runner import resume_run
from parallelrun.runs import RunStore

SCRIPT = "import os\n\ndef run(mini_batch):\n    return [os.path.basename(p) + ' ' + open(p).read() for p in mini_batch]\n"
NAMES = ["a.txt", "b.txt", "c.txt"]


def _job(tmp_path: Path, url: str, options: dict[str, Any]) -> Path:
    job = tmp_path / "job"
    job.mkdir(exist_ok=True)
    (job / "score.py").write_text(SCRIPT)
    spec = {"name": "remote-input", "entry_script": "score.py", "inputs": [{"type": "file", "path": url}],
            "output": "out", "process_count_per_node": 1, "mini_batch_size": 2, "storage_options": options}
    (job / "job.yml").write_text(json.dumps(spec))  # JSON is YAML
    return job


def _cli(job: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m parallelrun ...`` with no storage credentials in its environment: only the job spec's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_"))}
    env["HOME"] = str(job)  # no ~/.aws/credentials either
    env["PARALLELRUN_WORKSPACE"] = str(job / "ws")
    return subprocess.run([sys.executable, "-m", "parallelrun", *args], cwd=job, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(autouse=True)
def _no_credentials_around(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for what runs in this process (``plan_job``, ``debug_batch``, ``run_job``)."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "AZURE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))


def _check_runs(job: Path, resume: bool = False) -> None:
    done = _cli(job, "run", "job.yml", "-q")
    assert done.returncode == 0, done.stderr
    assert (job / "out" / "parallel_run_step.txt").read_text().splitlines() == [f"{n} {n[0]}" for n in NAMES]
    # What `parallelrun plan` and `parallelrun debug` call, in this process (each CLI start costs ~1 s of CPU).
    planned = plan_job(job / "job.yml")
    assert (planned.items, planned.batches) == (3, 2)
    batch, result = debug_batch(job / "job.yml", 1)  # the workers' reading too: the file is downloaded
    assert (batch.index, result) == (1, ["c.txt c"])
    if resume:  # it lists the inputs again (to refuse a run whose inputs changed), with the same credentials
        (run,) = RunStore(job / "ws").list()
        assert resume_run(run.id, workspace=job / "ws", progress="quiet").status == "Completed"


def _check_refused(job: Path, url: str, secret: str, words: list[str], cli: bool = True) -> None:
    if cli:
        done = _cli(job, "run", "job.yml", "-q")
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert f"cannot list the input {url}" in done.stderr, done.stderr
        assert all(w in done.stderr for w in words), done.stderr
        assert secret not in done.stderr + done.stdout
        assert not (job / "out" / "parallel_run_step.txt").exists()
    with pytest.raises(DatasetError) as info:
        plan_job(job / "job.yml")
    text = str(info.value)
    assert f"cannot list the input {url}" in text and all(w in text for w in words) and secret not in text, text
    assert info.value.exit_code == 2


# --- S3 (moto) -------------------------------------------------------------------------------------------
def _bucket(moto_s3: Any) -> str:
    import boto3

    bucket = f"in{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_s3.endpoint_url, region_name="us-east-1",
                          aws_access_key_id=moto_s3.access_key_id, aws_secret_access_key=moto_s3.secret_access_key)
    client.create_bucket(Bucket=bucket)
    for name in NAMES:
        client.put_object(Bucket=bucket, Key=f"data/{name}", Body=name[0].encode())
    return f"s3://{bucket}/data"


@pytest.mark.s3
def test_s3_input_with_credentials_only_in_the_job_spec(tmp_path: Path, moto_s3: Any) -> None:
    url = _bucket(moto_s3)
    job = _job(tmp_path, url, {"s3": {"key": moto_s3.access_key_id, "secret": moto_s3.secret_access_key,
                                      "endpoint_url": moto_s3.endpoint_url}})
    _check_runs(job)


@pytest.mark.s3
def test_s3_input_with_a_wrong_key_or_none_says_so(tmp_path: Path, moto_s3: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import settings

    url = _bucket(moto_s3)
    wrong = "wrong-secret-" + uuid.uuid4().hex
    job = _job(tmp_path, url, {"s3": {"key": "AKIAWRONGWRONGWRONG0", "secret": wrong,
                                      "endpoint_url": moto_s3.endpoint_url}})
    # moto's server (in this process) checks credentials from now on, as S3 does; it accepts any otherwise.
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    _check_refused(job, url, wrong, ["InvalidAccessKeyId", "refused the credentials",
                                     "storage_options: {s3: {key: ..., secret: ..."])
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", float("inf"))
    job = _job(tmp_path, url, {"s3": {"endpoint_url": moto_s3.endpoint_url}})  # no key anywhere
    _check_refused(job, url, wrong, ["Unable to locate credentials", "none were found", "AWS_ACCESS_KEY_ID"],
                   cli=False)


# --- Azure Blob (Azurite) --------------------------------------------------------------------------------
def _container(azurite: Any) -> str:
    from azure.storage.blob import BlobServiceClient

    container = f"in{uuid.uuid4().hex[:12]}"
    client = BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container)
    for name in NAMES:
        client.upload_blob(f"data/{name}", name[0].encode())
    return f"az://{container}/data"


@pytest.mark.azure
def test_azure_input_with_credentials_only_in_the_job_spec(tmp_path: Path, azurite: Any) -> None:
    url = _container(azurite)
    _check_runs(_job(tmp_path, url, {"az": {"connection_string": azurite.connection_string}}), resume=True)


@pytest.mark.azure
def test_azure_input_with_a_wrong_key_says_so(tmp_path: Path, azurite: Any) -> None:
    url = _container(azurite)
    wrong = base64.b64encode(b"not the key" * 6).decode()  # valid base64, not the account's key
    connection = azurite.connection_string.replace(azurite.account_key, wrong)
    _check_refused(_job(tmp_path, url, {"az": {"connection_string": connection}}), url, wrong,
                   ["refused the credentials", "storage_options: {az: {account_name: ..., account_key: ..."])
