"""Datasets: definitions from every kind of path, versioning, reading, and the engine bridge."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from parallelrun import DatasetError, UsageError
from parallelrun.config import InputSpec
from parallelrun.workspace import Dataset, Datastore, FileDataset, TabularDataset, Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.create(tmp_path / "ws")


def _files(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


IMAGES = {"0.png": "zero", "1.png": "one", "sub/2.png": "two", "notes.md": "not an image"}


def test_file_dataset_from_every_kind_of_path(ws: Workspace, tmp_path: Path) -> None:
    store = ws.get_default_datastore()
    store.upload(_files(tmp_path / "src", IMAGES), "images", show_progress=False)
    by_datapath = Dataset.File.from_files(store.path("images/**/*.png"))
    by_tuple = Dataset.File.from_files((store, "images/**/*.png"))
    assert by_datapath.to_path() == by_tuple.to_path() == ["/0.png", "/1.png", "/sub/2.png"]
    assert Dataset.File.from_files(store.path("images/")).to_path() == ["/0.png", "/1.png", "/notes.md", "/sub/2.png"]
    assert Dataset.File.from_files(store.path("images/1.png")).to_path() == ["/1.png"]
    local = Dataset.File.from_files(str(tmp_path / "src" / "sub"))
    assert local.to_path() == ["/2.png"]
    both = Dataset.File.from_files([store.path("images/0.png"), str(tmp_path / "src" / "sub")])
    assert both.to_path() == ["/0.png", "/2.png"]
    got = by_datapath.download(tmp_path / "down")
    assert sorted(Path(p).read_text() for p in got) == ["one", "two", "zero"]
    assert (tmp_path / "down" / "sub" / "2.png").read_text() == "two"
    with pytest.raises(UsageError, match="overwrite=True"):
        by_datapath.download(tmp_path / "down")
    assert len(by_datapath.download(tmp_path / "down", overwrite=True)) == 3


def test_relative_local_paths_are_fixed_at_creation(ws: Workspace, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _files(tmp_path / "proj" / "data", {"a.txt": "a"})
    monkeypatch.chdir(tmp_path / "proj")
    ds = Dataset.File.from_files("data")
    monkeypatch.chdir(tmp_path)
    assert ds.to_path() == ["/a.txt"]


def test_validate_reports_the_path_and_the_fix(ws: Workspace, tmp_path: Path) -> None:
    store = ws.get_default_datastore()
    with pytest.raises(DatasetError) as e:
        Dataset.File.from_files(store.path("mnist/**/*.png"))
    msg = str(e.value)
    assert "datastore 'workspaceblobstore' path 'mnist/**/*.png'" in msg
    assert "datastore.upload" in msg and "validate=False" in msg
    with pytest.raises(DatasetError, match="nothing-here"):
        Dataset.Tabular.from_delimited_files(str(tmp_path / "nothing-here" / "*.csv"))
    lazy = Dataset.File.from_files(store.path("mnist/**/*.png"), validate=False)  # files come later
    _files(Path(store.url("mnist")), {"a/1.png": "1"})
    assert lazy.to_path() == ["/a/1.png"]
    with pytest.raises(UsageError, match="cannot be a int"):
        Dataset.File.from_files(3)  # type: ignore[arg-type]


def test_a_path_that_cannot_be_listed_says_why_not_that_it_matches_nothing(ws: Workspace, tmp_path: Path) -> None:
    """Only an empty match is "matches no file"; a file that cannot be recorded or read is named, with its
    own reason and fix."""
    folder = _files(tmp_path / "imgs", {"ok.txt": "ok"})
    (folder / os.fsdecode(b"caf\xe9.txt")).write_text("latin-1 name")  # not valid UTF-8
    with pytest.raises(DatasetError) as e:
        Dataset.File.from_files(str(folder))
    msg = str(e.value)
    assert f"listing the dataset path {str(folder)!r} failed" in msg, msg
    assert "caf\\xe9.txt has a name that is not valid UTF-8" in msg and "Rename it" in msg, msg
    assert "matches no file" not in msg, msg
    loop = tmp_path / "loop"
    loop.symlink_to(loop)  # a symbolic link to itself
    with pytest.raises(DatasetError) as e:
        Dataset.File.from_files(str(loop))
    assert "is a symbolic link that loops" in str(e.value) and "matches no file" not in str(e.value), str(e.value)
    with pytest.raises(DatasetError, match="matches no file"):  # an empty match still says so
        Dataset.File.from_files(str(tmp_path / "imgs" / "*.png"))


def test_tabular_datasets_read_every_format(ws: Workspace, tmp_path: Path) -> None:
    store = ws.get_default_datastore()
    root = Path(store.url("tables"))
    _files(root, {"a.csv": "x,y\n1,2\n3,4\n", "b.csv": "x,y\n5,6\n", "c.tsv": "7\t8\n"})
    pd.DataFrame({"x": [1, 2]}).to_parquet(root / "p.parquet")
    (root / "j.jsonl").write_text('{"x": 1}\n{"x": 2}\n{"x": 3}\n')
    csv = Dataset.Tabular.from_delimited_files(store.path("tables/*.csv"))
    assert csv.to_pandas_dataframe().to_dict("list") == {"x": [1, 3, 5], "y": [2, 4, 6]}
    tsv = Dataset.Tabular.from_delimited_files(store.path("tables/c.tsv"), separator="\t", header=False)
    assert tsv.to_pandas_dataframe().values.tolist() == [[7, 8]]
    assert Dataset.Tabular.from_parquet_files(store.path("tables/*.parquet")).to_pandas_dataframe()["x"].tolist() == [1, 2]
    assert len(Dataset.Tabular.from_json_lines_files(store.path("tables/j.jsonl")).to_pandas_dataframe()) == 3
    specs, options = tsv.to_input_specs(ws)
    assert specs == [{"type": "tabular", "path": [str(root / "c.tsv")], "format": "tsv", "separator": "\t",
                      "header": False, "encoding": "utf-8"}]
    assert options == {}
    InputSpec(**specs[0])  # the engine accepts it as it is


def test_registration_versions(ws: Workspace, tmp_path: Path) -> None:
    store = ws.get_default_datastore()
    _files(Path(store.url("v")), {"a.txt": "a", "b.txt": "b"})
    v1 = Dataset.File.from_files(store.path("v/a.txt")).register(ws, "docs", description="first", tags={"k": "1"})
    assert (v1.name, v1.version, v1.description, v1.tags) == ("docs", 1, "first", {"k": "1"})
    # the same definition again: still version 1 (re-running a notebook does not pile up versions)
    assert Dataset.File.from_files(store.path("v/a.txt")).register(ws, "docs").version == 1
    v2 = Dataset.File.from_files(store.path("v/*.txt")).register(ws, "docs")
    assert v2.version == 2
    with pytest.raises(UsageError, match="create_new_version=True"):
        Dataset.File.from_files(store.path("v/b.txt")).register(ws, "docs", create_new_version=False)
    assert Dataset.get_by_name(ws, "docs").version == 2
    assert Dataset.get_by_name(ws, "docs", version="latest").to_path() == ["/a.txt", "/b.txt"]
    old = Dataset.get_by_name(ws, "docs", version=1)
    assert isinstance(old, FileDataset) and old.to_path() == ["/a.txt"]
    assert Dataset.get_by_name(Workspace(ws.path), "docs", 2) == v2  # from the catalog, in a new object
    tab = Dataset.Tabular.from_delimited_files(store.path("v/a.txt"), validate=False).register(ws, "table")
    assert isinstance(Dataset.get_by_name(ws, "table"), TabularDataset) and tab.version == 1
    assert sorted(ws.datasets) == ["docs", "table"]
    with pytest.raises(UsageError, match=r"no dataset named 'doc'.*'docs', 'table'.*Did you mean 'docs'"):
        Dataset.get_by_name(ws, "doc")
    with pytest.raises(UsageError, match=r"no version 7; its versions are \[1, 2\]"):
        Dataset.get_by_name(ws, "docs", 7)
    row = json.loads(__import__("sqlite3").connect(ws.path / "catalog.sqlite").execute(
        "SELECT definition FROM datasets WHERE name='docs' AND version=2").fetchone()[0])
    assert row == {"kind": "file", "options": {}, "paths": [{"datastore": "workspaceblobstore", "path": "v/*.txt"}]}


def test_named_input_and_modes(ws: Workspace, tmp_path: Path) -> None:
    ds = Dataset.File.from_files(str(_files(tmp_path / "d", {"a": "a"})))
    named = ds.as_named_input("images")
    assert named.name == "images" and named.dataset is ds
    assert named.as_mount().dataset is ds and named.as_download().mode == "download"
    assert ds.as_mount().dataset is ds and ds.as_download().dataset is ds
    specs, _ = named.to_input_specs(ws)
    assert specs[0]["name"] == "images" and specs[0]["type"] == "file"
    with pytest.raises(UsageError, match="input name"):
        ds.as_named_input("no spaces")


def test_fingerprint_follows_content_and_version(ws: Workspace, tmp_path: Path) -> None:
    store = ws.get_default_datastore()
    root = _files(Path(store.url("fp")), {"a.txt": "a", "b.txt": "b"})
    ds = Dataset.File.from_files(store.path("fp")).register(ws, "fp")
    first = ds.fingerprint(ws)
    assert ds.fingerprint(ws) == first
    (root / "c.txt").write_text("c")  # a file added
    second = ds.fingerprint(ws)
    assert second != first
    time.sleep(0.01)
    (root / "a.txt").write_text("A")  # a file modified
    os.utime(root / "a.txt", ns=(time.time_ns(), time.time_ns() + 10**9))
    assert ds.fingerprint(ws) != second
    other = Dataset.File.from_files(store.path("fp/*.txt")).register(ws, "fp")  # a new version, same files
    assert other.fingerprint(ws) != ds.fingerprint(ws)


def test_two_accounts_of_one_protocol_cannot_feed_one_step(ws: Workspace) -> None:
    a = Datastore.register_s3_bucket(ws, "a", "bucket-a", endpoint_url="http://127.0.0.1:1")
    b = Datastore.register_s3_bucket(ws, "b", "bucket-b", endpoint_url="http://127.0.0.1:2")
    ds = Dataset.File.from_files([a.path("x"), b.path("y")], validate=False)
    with pytest.raises(UsageError, match="one account per protocol"):
        ds.to_input_specs(ws)
    same = Datastore.register_s3_bucket(ws, "c", "bucket-c", endpoint_url="http://127.0.0.1:1")
    specs, options = Dataset.File.from_files([a.path("x"), same.path("y")], validate=False).to_input_specs(ws)
    assert specs[0]["path"] == ["s3://bucket-a/x", "s3://bucket-c/y"]
    assert options == {"s3": {"client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}}}


# --- Azure Blob (Azurite) and S3 (moto) ---------------------------------------------------------------------
def _remote_store(kind: str, ws: Workspace, server: Any) -> Datastore:
    if kind == "azure":
        return Datastore.register_azure_blob_container(
            ws, "remote", f"c{uuid.uuid4().hex[:12]}", server.account_name, account_key=server.account_key,
            endpoint=server.endpoint, create_if_not_exists=True)
    return Datastore.register_s3_bucket(
        ws, "remote", f"b{uuid.uuid4().hex[:12]}", access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key, endpoint_url=server.endpoint_url, create_if_not_exists=True)


@pytest.fixture(params=[pytest.param("azure", marks=pytest.mark.azure), pytest.param("s3", marks=pytest.mark.s3)])
def remote(request: pytest.FixtureRequest, ws: Workspace) -> Datastore:
    server = request.getfixturevalue("azurite" if request.param == "azure" else "moto_s3")
    return _remote_store(request.param, ws, server)


def test_remote_file_and_tabular_datasets(remote: Datastore, ws: Workspace, tmp_path: Path) -> None:
    remote.upload(_files(tmp_path / "src", IMAGES), "x", show_progress=False)
    ds = Dataset.File.from_files(remote.path("x/**"))
    assert ds.to_path() == ["/0.png", "/1.png", "/notes.md", "/sub/2.png"]
    assert Dataset.File.from_files(remote.path("x/**/*.png")).to_path() == ["/0.png", "/1.png", "/sub/2.png"]
    got = ds.download(tmp_path / "down")
    assert {Path(p).relative_to(tmp_path / "down").as_posix(): Path(p).read_text() for p in got} == IMAGES
    with pytest.raises(DatasetError, match=r"'remote' path 'y/\*\*'.*datastore.upload"):
        Dataset.File.from_files(remote.path("y/**"))

    remote.upload(_files(tmp_path / "tables", {"a.csv": "id,v\n1,a\n2,b\n", "b.csv": "id,v\n3,c\n"}), "t",
                  show_progress=False)
    tab = Dataset.Tabular.from_delimited_files(remote.path("t/*.csv")).register(ws, "remote-table")
    df = Dataset.get_by_name(ws, "remote-table").to_pandas_dataframe()  # type: ignore[union-attr]
    assert df.to_dict("list") == {"id": [1, 2, 3], "v": ["a", "b", "c"]}
    specs, options = tab.to_input_specs(ws)
    assert specs[0]["path"] == [remote.url("t/*.csv")]
    assert options == remote.storage_options()
    fp = tab.fingerprint(ws)
    remote.upload(_files(tmp_path / "more", {"c.csv": "id,v\n4,d\n"}), "t", show_progress=False)
    assert tab.fingerprint(ws) != fp  # a new blob changes the fingerprint (etags and sizes are hashed)
