"""What is particular to each datastore backend (registration forms, storage options, errors); what they
all share is in test_datastore_conformance.py."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from parallelrun import UsageError
from parallelrun.workspace import Datastore, Workspace


def test_local_datastore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = Workspace.create(tmp_path / "ws")
    store = Datastore.register_local(ws, "scratch", tmp_path / "scratch")
    assert store.url("x/y.txt") == str((tmp_path / "scratch" / "x" / "y.txt").resolve())
    assert store.storage_options() == {}
    (tmp_path / "src").mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / "src" / name).write_text(name)
    ws.get_default_datastore().upload(tmp_path / "src", "d")
    assert "Uploaded 3 file(s) to workspaceblobstore/d" in capsys.readouterr().out


def test_registration_is_idempotent_and_overwrite_guarded(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    a = Datastore.register_s3_bucket(ws, "bucket", "b1", endpoint_url="http://127.0.0.1:1")
    assert Datastore.register_s3_bucket(ws, "bucket", "b1", endpoint_url="http://127.0.0.1:1") == a
    with pytest.raises(UsageError, match="overwrite=True"):
        Datastore.register_s3_bucket(ws, "bucket", "b2")
    b = Datastore.register_s3_bucket(ws, "bucket", "b2", overwrite=True)
    assert b.bucket_name == "b2" and Datastore(ws, "bucket").bucket_name == "b2"
    with pytest.raises(UsageError, match="invalid"):
        Datastore.register_local(ws, "no spaces", tmp_path)
    b.unregister()
    assert "bucket" not in ws.datastores


def _azure(ws: Workspace, azurite: Any, name: str = "blobs", **kw: Any) -> Datastore:
    return Datastore.register_azure_blob_container(
        ws, name, f"c{uuid.uuid4().hex[:12]}", azurite.account_name, account_key=azurite.account_key,
        endpoint=azurite.endpoint, create_if_not_exists=True, **kw)


@pytest.mark.azure
def test_azure_blob_datastore(tmp_path: Path, azurite: Any) -> None:
    ws = Workspace.create(tmp_path / "ws")
    store = _azure(ws, azurite)
    assert store.datastore_type == "AzureBlob"
    assert store.url("mnist/0.png") == f"az://{store.container_name}/mnist/0.png"
    opts = store.storage_options()["az"]
    assert opts["account_name"] == "devstoreaccount1" and azurite.endpoint in opts["connection_string"]


@pytest.mark.azure
def test_azure_blob_with_a_connection_string(tmp_path: Path, azurite: Any) -> None:
    ws = Workspace.create(tmp_path / "ws")
    store = Datastore.register_azure_blob_container(
        ws, "viacs", f"c{uuid.uuid4().hex[:12]}", None, connection_string=azurite.connection_string,
        create_if_not_exists=True)
    assert store.account_name == "devstoreaccount1" and store.endpoint == azurite.endpoint
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "one.txt").write_text("1")
    store.upload(tmp_path / "f", show_progress=False)
    assert store._list("") == ["one.txt"]


@pytest.mark.azure
def test_azure_missing_container_error_names_the_fix(tmp_path: Path, azurite: Any) -> None:
    ws = Workspace.create(tmp_path / "ws")
    store = Datastore.register_azure_blob_container(ws, "gone", "nosuchcontainer", azurite.account_name,
                                                    account_key=azurite.account_key, endpoint=azurite.endpoint)
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "one.txt").write_text("1")
    with pytest.raises(UsageError, match=r"uploading on datastore 'gone'.*container or bucket exists"):
        store.upload(tmp_path / "f", show_progress=False)


@pytest.mark.s3
def test_s3_datastore(tmp_path: Path, moto_s3: Any) -> None:
    ws = Workspace.create(tmp_path / "ws")
    store = Datastore.register_s3_bucket(
        ws, "bucket", f"b{uuid.uuid4().hex[:12]}", access_key_id=moto_s3.access_key_id,
        secret_access_key=moto_s3.secret_access_key, endpoint_url=moto_s3.endpoint_url, region="us-east-1",
        create_if_not_exists=True)
    assert store.url("k") == f"s3://{store.bucket_name}/k"
    assert store.storage_options() == {"s3": {
        "key": moto_s3.access_key_id, "secret": moto_s3.secret_access_key,
        "client_kwargs": {"endpoint_url": moto_s3.endpoint_url, "region_name": "us-east-1"}}}


def test_missing_extra_names_the_pip_command(tmp_path: Path) -> None:
    """Without adlfs, using an Azure datastore says which extra to install (checked in a fresh interpreter,
    since this one has already imported adlfs)."""
    code = (
        "import sys; sys.modules['adlfs'] = None\n"
        "from parallelrun import MissingExtraError\n"
        "from parallelrun.workspace import Datastore, Workspace\n"
        f"ws = Workspace.create({str(tmp_path / 'ws')!r})\n"
        "store = Datastore.register_azure_blob_container(ws, 'blobs', 'cont', 'acct', account_key='k')\n"
        "try:\n"
        "    store.download('out')\n"
        "except MissingExtraError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "pip install 'parallelrun[azure]'" in out.stdout, out.stderr


def test_azure_endpoint_forms(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    plain = Datastore.register_azure_blob_container(ws, "plain", "c", "acct", account_key="k")
    assert plain.endpoint is None and plain.storage_options() == {"az": {"account_name": "acct", "account_key": "k"}}
    china = Datastore.register_azure_blob_container(ws, "china", "c", "acct", account_key="k",
                                                    endpoint="core.chinacloudapi.cn", protocol="https")
    assert china.endpoint == "https://acct.blob.core.chinacloudapi.cn"
    assert "BlobEndpoint=https://acct.blob.core.chinacloudapi.cn;" in china.storage_options()["az"]["connection_string"]
    sas = Datastore.register_azure_blob_container(ws, "sas", "c", "acct", sas_token="?sv=1&sig=x",
                                                  endpoint="http://127.0.0.1:10000/acct", skip_validation=True)
    assert sas.storage_options()["az"]["connection_string"].endswith("SharedAccessSignature=sv=1&sig=x;")
    public = Datastore.register_azure_blob_container(ws, "public", "c", "acct")
    assert public.storage_options() == {"az": {"account_name": "acct", "anon": True}}
    with pytest.raises(UsageError, match="account_name"):
        Datastore.register_azure_blob_container(ws, "noacct", "c", None, account_key="k")
