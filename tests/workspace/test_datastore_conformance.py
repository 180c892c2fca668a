"""One conformance suite, run against every datastore backend: a local folder, Azure Blob (Azurite) and
S3 (moto's server). A new backend is one module in ``parallelrun/workspace/`` and one entry in BACKENDS.

Each test asserts what a user checks: the files that arrive, what is skipped or replaced, the errors'
text, that credentials never show.
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from parallelrun import UsageError
from parallelrun.data.storage import url_to_fs
from parallelrun.workspace import (
    AzureBlobDatastore,
    DataPath,
    Dataset,
    Datastore,
    LocalDatastore,
    S3Datastore,
    Workspace,
)


def _local(ws: Workspace, request: pytest.FixtureRequest, tmp: Path) -> Datastore:
    return Datastore.register_local(ws, "store", tmp / "folder")


def _azure(ws: Workspace, request: pytest.FixtureRequest, tmp: Path) -> Datastore:
    azurite = request.getfixturevalue("azurite")
    return Datastore.register_azure_blob_container(
        ws, "store", f"c{uuid.uuid4().hex[:12]}", azurite.account_name, account_key=azurite.account_key,
        endpoint=azurite.endpoint, create_if_not_exists=True)


def _s3(ws: Workspace, request: pytest.FixtureRequest, tmp: Path) -> Datastore:
    moto = request.getfixturevalue("moto_s3")
    return Datastore.register_s3_bucket(
        ws, "store", f"b{uuid.uuid4().hex[:12]}", access_key_id=moto.access_key_id,
        secret_access_key=moto.secret_access_key, endpoint_url=moto.endpoint_url, region="us-east-1",
        create_if_not_exists=True)


# (how to register one, the class it must be), with the marks its server needs
BACKENDS: list[Any] = [
    pytest.param((_local, LocalDatastore), id="local"),
    pytest.param((_azure, AzureBlobDatastore), id="azure-blob", marks=pytest.mark.azure),
    pytest.param((_s3, S3Datastore), id="s3", marks=pytest.mark.s3),
]

FILES = {"a.txt": "alpha", "sub/b.txt": "beta", "sub/deeper/c.csv": "x,y\n1,2\n"}


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Datastore:
    register: Callable[..., Datastore]
    register, cls = request.param
    ds = register(Workspace.create(tmp_path / "ws"), request, tmp_path)
    assert type(ds) is cls
    return ds


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _read_back(target: Path) -> dict[str, str]:
    return {p.relative_to(target).as_posix(): p.read_text() for p in sorted(target.rglob("*")) if p.is_file()}


def test_its_own_class_comes_back_from_the_catalog(store: Datastore) -> None:
    again = Datastore.get(store.workspace, "store")
    assert type(again) is type(store) and again == store and isinstance(again, Datastore)
    assert type(Datastore(store.workspace, "store")) is type(store)
    assert store.workspace.datastores["store"] == store
    assert type(pickle.loads(pickle.dumps(store))) is type(store)


def test_upload_list_download(store: Datastore, src: Path, tmp_path: Path) -> None:
    dp = store.upload(src, target_path="mnist/", show_progress=False)
    assert isinstance(dp, DataPath) and dp.path_on_datastore == "mnist"
    assert store._list("mnist") == sorted(f"mnist/{k}" for k in FILES)
    assert store.download(tmp_path / "out", prefix="mnist/", show_progress=False) == 3
    assert _read_back(tmp_path / "out") == {f"mnist/{k}": v for k, v in FILES.items()}
    # prefix is a path prefix, as in Azure: "mnist/sub/d" matches mnist/sub/deeper/...
    assert store.download(tmp_path / "out2", prefix="mnist/sub/d", show_progress=False) == 1
    assert _read_back(tmp_path / "out2") == {"mnist/sub/deeper/c.csv": FILES["sub/deeper/c.csv"]}


def test_overwrite_false_keeps_and_true_replaces(store: Datastore, src: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    store.upload(src, target_path="d", show_progress=False)
    (src / "a.txt").write_text("changed")
    store.upload(src, target_path="d")
    assert "Uploaded 0 file(s) to store/d, skipped 3 already there (overwrite=False)" in capsys.readouterr().out
    store.download(tmp_path / "out", prefix="d/", show_progress=False)
    assert (tmp_path / "out" / "d" / "a.txt").read_text() == "alpha"
    store.upload(src, target_path="d", overwrite=True, show_progress=False)
    assert store.download(tmp_path / "out", prefix="d/", show_progress=False) == 0  # all exist locally
    assert store.download(tmp_path / "out", prefix="d/", overwrite=True, show_progress=False) == 3
    assert (tmp_path / "out" / "d" / "a.txt").read_text() == "changed"


def test_upload_files_by_name_or_relative_root(store: Datastore, src: Path) -> None:
    store.upload_files([src / "sub" / "b.txt"], target_path="single", show_progress=False)
    assert store._list("single") == ["single/b.txt"]
    store.upload_files([src / "sub" / "deeper" / "c.csv"], target_path="rel", relative_root=str(src),
                       show_progress=False)
    assert store._list("rel") == ["rel/sub/deeper/c.csv"]


def test_the_engine_opens_the_same_files(store: Datastore, src: Path) -> None:
    """The URL and options handed to workers reach what upload wrote."""
    store.upload(src, target_path="m", show_progress=False)
    fs, inner = url_to_fs(store.url("m/sub/b.txt"), store.storage_options())
    assert fs.cat_file(inner) == b"beta"
    ds = Dataset.File.from_files(store.path("m/**/*.txt"))
    assert sorted(ds.to_path()) == ["/a.txt", "/sub/b.txt"]


def test_paths_stay_inside_the_datastore(store: Datastore) -> None:
    with pytest.raises(UsageError, match=r"'\.\.'"):
        store.path("../outside")
    assert store.path("./x//y/").path_on_datastore == "x/y"


def test_credentials_never_show(store: Datastore) -> None:
    secrets = [v for v in store.workspace._secrets.get("store").values() if v]
    shown = repr(store) + str(store) + repr(store.path("x")) + str(pickle.dumps(store))
    assert not any(s in shown for s in secrets)
    assert not any(s in str(store._definition) for s in secrets)


def test_unregister_removes_it_and_its_credentials(store: Datastore) -> None:
    ws = store.workspace
    store.unregister()
    assert "store" not in ws.datastores
    assert ws._secrets.get("store") == {}
    with pytest.raises(UsageError, match=r"no datastore named 'store'.*registered: 'workspaceblobstore'"):
        Datastore.get(ws, "store")
