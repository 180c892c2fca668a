"""A storage failure while listing a dataset passes the service's own message through, with advice that
matches it (issue 12: "check endpoint and credentials" pointed the wrong way)."""

from __future__ import annotations

import base64
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from parallelrun import DatasetError, UsageError, run_job
from parallelrun.config import JobSpec
from parallelrun.workspace import Dataset, Datastore, Workspace

# The one phrase after "nothing answered" (data/endpoint.py), and what a datastore's messages add to it.
ENDPOINT_ADVICE = "Check the storage endpoint: is the storage service running, are its host and port right?"
DATASTORE_REMEDY = "To change them, re-register the datastore with overwrite=True."


def _listing_error(ws: Workspace, store: Datastore) -> str:
    with pytest.raises(DatasetError) as info:
        Dataset.File.from_files(path=(store, "images/**"))
    return str(info.value)


@pytest.mark.azure
def test_wrong_key_shows_the_service_message_and_blames_the_credentials(tmp_path: Path, azurite: Any) -> None:
    ws = Workspace.create(tmp_path / "ws")
    container = f"c{uuid.uuid4().hex[:12]}"
    Datastore.register_azure_blob_container(ws, "good", container, azurite.account_name,
                                            account_key=azurite.account_key, endpoint=azurite.endpoint,
                                            create_if_not_exists=True)
    wrong = base64.b64encode(b"not the key" * 6).decode()
    bad = Datastore.register_azure_blob_container(ws, "bad", container, azurite.account_name, account_key=wrong,
                                                  endpoint=azurite.endpoint)
    text = _listing_error(ws, bad)
    assert "authenticat" in text.lower() or "403" in text, text  # Azurite's own words
    assert "credentials" in text and "endpoint" not in text.split("failed:", 1)[1].split(".")[-2], text
    assert wrong not in text


def _unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dead_azure(ws: Workspace, port: int, request: pytest.FixtureRequest) -> tuple[Datastore, str]:
    azurite = request.getfixturevalue("azurite")
    dead = f"http://127.0.0.1:{port}/{azurite.account_name}"
    return Datastore.register_azure_blob_container(ws, "dead", "c1", azurite.account_name,
                                                   account_key=azurite.account_key, endpoint=dead), dead


def _dead_s3(ws: Workspace, port: int, request: pytest.FixtureRequest) -> tuple[Datastore, str]:
    s3 = request.getfixturevalue("moto_s3")
    dead = f"http://127.0.0.1:{port}"
    return Datastore.register_s3_bucket(ws, "dead", "b1", access_key_id=s3.access_key_id,
                                        secret_access_key=s3.secret_access_key, endpoint_url=dead), dead


DEAD_STORES = [pytest.param(_dead_azure, id="azure-blob", marks=pytest.mark.azure),
               pytest.param(_dead_s3, id="s3", marks=pytest.mark.s3)]


@pytest.mark.parametrize("dead_store", DEAD_STORES)
def test_nothing_listening_blames_the_endpoint(tmp_path: Path, request: pytest.FixtureRequest,
                                                dead_store: Any) -> None:
    """The storage SDKs retry a refused connection with back-off (Azure: 172 s to list, botocore: 5-12 s);
    parallelrun tries a TCP connect first and says at once that nothing answers there."""
    ws = Workspace.create(tmp_path / "ws")
    store, dead = dead_store(ws, _unused_port(), request)  # a port nothing listens on
    t0 = time.monotonic()
    text = _listing_error(ws, store)
    assert time.monotonic() - t0 < 10, text
    port = dead.split(":")[2].split("/")[0]
    said = f"nothing answered at the endpoint {dead} (connection refused: nothing listens on port {port} of 127.0.0.1)"
    # The probe's words alone: not its class name, nor the socket error it raised over (`from None`).
    assert f"failed: {said}. {ENDPOINT_ADVICE} {DATASTORE_REMEDY}" in text, text
    assert text.endswith(DATASTORE_REMEDY) and "Errno" not in text and " <- " not in text, text
    t0 = time.monotonic()
    with pytest.raises(UsageError) as info:  # the datastore's own operations too
        store.download(tmp_path / "down", show_progress=False)
    assert time.monotonic() - t0 < 10, str(info.value)
    assert str(info.value) == (f"connecting on datastore 'dead' ({store.url()}) failed: {said}. {ENDPOINT_ADVICE} "
                               f"{DATASTORE_REMEDY}")  # no request was made: credentials are not in question


@pytest.mark.parametrize("dead_store", DEAD_STORES)
def test_a_job_whose_input_store_does_not_answer_stops_within_seconds(
        tmp_path: Path, request: pytest.FixtureRequest, dead_store: Any) -> None:
    ws = Workspace.create(tmp_path / "ws")
    store, dead = dead_store(ws, _unused_port(), request)
    ds = Dataset.File.from_files(store.path("images/**"), validate=False)
    entries, options = ds.as_named_input("images").to_input_specs(ws)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "score.py").write_text("def run(mini_batch):\n    return list(mini_batch)\n")
    spec = JobSpec(name="dead-input", entry_script="score.py", inputs=entries, process_count_per_node=1,
                   output=str(tmp_path / "out"))
    t0 = time.monotonic()
    with pytest.raises(DatasetError) as info:
        run_job(spec, job_dir=job_dir, storage_options=options, workspace=ws.path, progress="quiet")
    assert time.monotonic() - t0 < 10, str(info.value)
    assert info.value.exit_code == 2
    assert f"cannot list the input {store.url('images')}" in str(info.value), str(info.value)
    assert f"nothing answered at the endpoint {dead} (connection refused" in str(info.value), str(info.value)
    assert str(info.value).endswith(f"Nothing was run. {ENDPOINT_ADVICE} They come from the storage options (a "
                                    "connection string's BlobEndpoint, an S3 endpoint_url) or the backend's "
                                    "environment variables (AZURE_STORAGE_CONNECTION_STRING, AWS_ENDPOINT_URL)."), \
        str(info.value)


@pytest.mark.parametrize("dead_store", DEAD_STORES)
def test_pipeline_reuse_checks_of_a_store_that_does_not_answer_stop_within_seconds(
        tmp_path: Path, request: pytest.FixtureRequest, dead_store: Any) -> None:
    """A pipeline submitted again checks its earlier remote outputs (exists, fingerprint, server-side copy)
    before it reuses them: with the store down, each says so at once, naming the endpoint."""
    from parallelrun.workspace._pipeline_data import copy_remote, remote_exists, remote_fingerprint

    ws = Workspace.create(tmp_path / "ws")
    store, dead = dead_store(ws, _unused_port(), request)
    earlier, now = store.url("azureml/run1/score/scores"), store.url("azureml/run2/score/scores")
    checks = [("checking the earlier output at", lambda: remote_exists(earlier, store.storage_options())),
              ("fingerprinting the pipeline data at", lambda: remote_fingerprint(earlier, store.storage_options())),
              ("copying the earlier output at", lambda: copy_remote(earlier, now, store.storage_options()))]
    for doing, check in checks:
        t0 = time.monotonic()
        with pytest.raises(UsageError) as info:
            check()
        text = str(info.value)
        assert time.monotonic() - t0 < 10, text
        assert f"{doing} {earlier} failed: nothing answered at the endpoint {dead} (connection refused" in text, text
        assert text.endswith(f"{ENDPOINT_ADVICE} To change them, re-register the datastore with overwrite=True, "
                             "then run the pipeline again."), text


def test_a_dataset_url_whose_store_does_not_answer_points_at_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dataset path given as a URL is listed with no datastore's options: its endpoint comes from the
    backend's environment variables, and re-registering a datastore would fix nothing."""
    pytest.importorskip("adlfs", reason="install the azure extra: pip install 'parallelrun[azure]'")
    port = _unused_port()
    dead = f"http://127.0.0.1:{port}/acct"
    key = base64.b64encode(b"not the key" * 6).decode()
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", f"AccountName=acct;AccountKey={key};BlobEndpoint={dead}")
    with pytest.raises(DatasetError) as info:
        Dataset.File.from_files(path="az://c1/images/**")
    assert str(info.value) == (
        f"listing the dataset path 'az://c1/images/**' (az://c1/images/**) failed: nothing answered at the endpoint "
        f"{dead} (connection refused: nothing listens on port {port} of 127.0.0.1). {ENDPOINT_ADVICE} They come "
        "from the backend's environment variables (AZURE_STORAGE_CONNECTION_STRING, AWS_ENDPOINT_URL).")
