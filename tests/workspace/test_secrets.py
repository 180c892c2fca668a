"""Secrets stay in ``<workspace>/secrets.json`` (mode 0600): never in the catalog, run records, logs, reprs,
pickles or error messages."""

from __future__ import annotations

import logging
import pickle
import stat
import traceback
import uuid
from pathlib import Path
from typing import Any

import pytest

import parallelrun
from parallelrun import UsageError
from parallelrun.config import JobSpec
from parallelrun.workspace import Dataset, Datastore, Workspace

S3_SECRET = "s3-secret-" + uuid.uuid4().hex
SAS = "sv=2022-11-02&ss=b&srt=co&sp=rl&sig=" + uuid.uuid4().hex


def _files_containing(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and p.name != "secrets.json":
            data = p.read_bytes()
            hits += [f"{p.relative_to(root)} holds {n[:6]}..." for n in needles if n.encode() in data]
    return hits


def test_secrets_file_is_owner_only_and_the_only_holder(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    s3 = Datastore.register_s3_bucket(ws, "bucket", "b", access_key_id="AKIDEXAMPLE", secret_access_key=S3_SECRET,
                                      endpoint_url="http://127.0.0.1:1")
    sas = Datastore.register_azure_blob_container(ws, "sas", "c", "acct", sas_token=SAS)
    secrets = ws.path / "secrets.json"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert S3_SECRET in secrets.read_text() and SAS in secrets.read_text()
    assert _files_containing(ws.path, [S3_SECRET, SAS, "AKIDEXAMPLE"]) == []
    for obj in (s3, sas, s3.path("x"), Dataset.File.from_files(s3.path("x/**"), validate=False),
                Dataset.File.from_files(s3.path("x/**"), validate=False).as_named_input("x"), ws.datastores):
        for text in (repr(obj), str(obj)):
            assert S3_SECRET not in text and SAS not in text and "AKIDEXAMPLE" not in text
    assert S3_SECRET.encode() not in pickle.dumps(s3)  # a Datastore never holds its credentials
    assert s3.storage_options()["s3"]["secret"] == S3_SECRET  # ... it reads them when asked
    assert sas.storage_options() == {"az": {"account_name": "acct", "sas_token": SAS}}
    # unregistering removes the credentials too
    s3.unregister()
    assert S3_SECRET not in secrets.read_text() and stat.S_IMODE(secrets.stat().st_mode) == 0o600


def test_errors_at_the_storage_boundary_are_redacted(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    store = Datastore.register_s3_bucket(ws, "bucket", "b", access_key_id="AKIDEXAMPLE", secret_access_key=S3_SECRET)
    with pytest.raises(UsageError) as e, store._errors("listing"):
        raise RuntimeError(f"request failed for key={S3_SECRET}")  # a library that echoes its credentials
    text = "".join(traceback.format_exception(e.value))
    assert "request failed for key=***" in text and S3_SECRET not in text


def test_masking_short_secrets_leaves_ordinary_words_alone(tmp_path: Path) -> None:
    """A secret of a few letters must not be masked inside words ("li***t-type", "ho***t"); real keys are
    masked wherever they appear, glued into a URL or a connection string too."""
    ws = Workspace.create(tmp_path / "ws")
    for name, secret in [("one", "s"), ("three", "key"), ("six", "hostna")]:
        Datastore.register_s3_bucket(ws, name, "b", access_key_id="AKIDEXAMPLE", secret_access_key=secret)
    sas = Datastore.register_azure_blob_container(ws, "sas", "c", "acct", sas_token=SAS)
    message = ("GET /b?list-type=2&prefix=data%2F on host 127.0.0.1 (hostname localhost) failed: "
               f"HTTP/1.1 403 for key 'hostna' at https://acct.blob.core.windows.net/c?{SAS}&x=1 "
               f"signed sig={SAS.rsplit('=', 1)[1]}; secret {S3_SECRET}s3")
    Datastore.register_s3_bucket(ws, "long", "b", access_key_id="AKIDEXAMPLE", secret_access_key=S3_SECRET)
    with pytest.raises(UsageError) as e, sas._errors("listing"):
        raise RuntimeError(message)
    text = str(e.value)
    assert ("GET /b?list-type=2&prefix=data%2F on host 127.0.0.1 (hostname localhost) failed: HTTP/1.1 403 "
            "for key '***' at https://acct.blob.core.windows.net/c?***&x=1 signed sig=***; secret ***s3") in text, text
    assert SAS not in text and S3_SECRET not in text and SAS.rsplit("=", 1)[1] not in text


@pytest.mark.azure
def test_account_key_never_leaves_the_secrets_file(tmp_path: Path, azurite: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ws = Workspace.create(tmp_path / "ws")
    store = Datastore.register_azure_blob_container(
        ws, "blobs", f"c{uuid.uuid4().hex[:12]}", azurite.account_name, account_key=azurite.account_key,
        endpoint=azurite.endpoint, create_if_not_exists=True)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.txt").write_text(str(i))
    store.upload(src, "in", show_progress=False)
    ds = Dataset.File.from_files(store.path("in/*.txt")).register(ws, "numbers")
    specs, options = ds.to_input_specs(ws)
    job = tmp_path / "job"
    job.mkdir()
    (job / "s.py").write_text("import os\ndef run(batch):\n    print(os.environ.get('X'))\n"
                              "    return [os.path.basename(p) for p in batch]\n")
    result = parallelrun.run_job(JobSpec(name="secrets", entry_script="s.py", inputs=specs, process_count_per_node=1,
                                         output=str(ws.path / "out")),
                                 job_dir=job, storage_options=options, workspace=ws.path, progress="quiet")
    assert result.ok, result.summary()
    assert len(Path(result.output_file or "").read_text().split()) == 3

    key = azurite.account_key
    assert stat.S_IMODE((ws.path / "secrets.json").stat().st_mode) == 0o600
    assert key in (ws.path / "secrets.json").read_text()
    assert _files_containing(ws.path, [key, azurite.connection_string]) == []
    assert (ws.runs_dir / result.run_id / "run.json").is_file()  # the run record was among the files searched
    assert key not in repr(store) and key not in str(store) and key not in repr(ds)
    assert key not in caplog.text

    # A wrong key: the service refuses it, and the error text holds neither key.
    wrong = "A" * 86 + "=="
    bad = Datastore.register_azure_blob_container(ws, "wrongkey", store.container_name or "", azurite.account_name,
                                                  account_key=wrong, endpoint=azurite.endpoint)
    with pytest.raises(UsageError) as e:
        bad.upload(src, "again", show_progress=False)
    text = "".join(traceback.format_exception(e.value))
    assert "on datastore 'wrongkey'" in text and "AuthorizationFailure" in text and "credentials" in text
    assert key not in text and wrong not in text
    with pytest.raises(parallelrun.DatasetError) as e2:
        Dataset.File.from_files(bad.path("in/*.txt"))
    text = "".join(traceback.format_exception(e2.value))
    assert key not in text and wrong not in text
