"""Workspace: creation, discovery, the catalog, compute targets, and sharing the folder with the engine."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from parallelrun import UsageError, run_job
from parallelrun.config import validate_spec
from parallelrun.runs import RunStore
from parallelrun.workspace import ComputeTarget, Datastore, LocalCompute, RayCompute, Workspace


def test_create_makes_the_layout_and_default_datastore(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    assert ws.path == (tmp_path / "ws").resolve()
    assert (ws.path / "parallelrun_workspace.json").is_file()
    tables = {r[0] for r in sqlite3.connect(ws.path / "catalog.sqlite").execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"datastores", "datasets", "models", "environments", "compute_targets"} <= tables
    default = ws.get_default_datastore()
    assert default.name == "workspaceblobstore"
    assert default.datastore_type == "Local"
    assert Path(default.url("")) == ws.path / "datastores" / "default"
    assert list(ws.datastores) == ["workspaceblobstore"]
    assert ws.runs_dir == ws.path / "runs"
    # exist_ok
    assert Workspace.create(tmp_path / "ws") == ws
    with pytest.raises(UsageError, match="already exists"):
        Workspace.create(tmp_path / "ws", exist_ok=False)


def test_from_config_searches_parents_and_dot_parallelrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARALLELRUN_WORKSPACE", raising=False)
    project = tmp_path / "project"
    deep = project / "src" / "pkg"
    deep.mkdir(parents=True)
    ws = Workspace.create(project / ".parallelrun")
    monkeypatch.chdir(deep)
    assert Workspace.from_config() == ws
    assert Workspace.from_config(path=str(deep)) == ws
    assert Workspace.from_config(ws.path / "parallelrun_workspace.json") == ws
    # A workspace folder that is itself the project folder is found too.
    other = Workspace.create(tmp_path / "other")
    (other.path / "sub").mkdir()
    assert Workspace.from_config(other.path / "sub") == other


def test_from_config_not_found_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARALLELRUN_WORKSPACE", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"parallelrun_workspace\.json.*Workspace\.create\('.parallelrun'\)"):
        Workspace.from_config()


def test_opening_a_missing_or_foreign_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="Workspace.create"):
        Workspace(tmp_path / "nope")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    with pytest.raises(UsageError, match="is not a workspace"):
        Workspace(tmp_path / "notes")
    assert not (tmp_path / "notes" / "catalog.sqlite").exists()


def _job(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    for i in range(3):
        (tmp_path / "data" / f"{i}.txt").write_text(str(i))
    (tmp_path / "score.py").write_text("import os\ndef run(batch):\n    return [os.path.basename(p) for p in batch]\n")
    (tmp_path / "job.yml").write_text("name: shared\nentry_script: score.py\ninputs: [{type: file, path: data}]\n"
                                      "process_count_per_node: 1\nmini_batch_size: 3\n")
    return tmp_path / "job.yml"


def test_engine_runs_land_in_the_workspace_and_an_engine_folder_is_adopted(tmp_path: Path) -> None:
    job = _job(tmp_path)
    engine_ws = tmp_path / ".parallelrun"
    result = run_job(job, workspace=engine_ws, progress="quiet")  # made by the engine alone
    assert result.ok
    ws = Workspace(engine_ws)  # adopted: catalog and config file added, the run kept
    assert (ws.path / "parallelrun_workspace.json").is_file()
    assert (ws.runs_dir / result.run_id / "run.json").is_file()
    assert [r.id for r in RunStore(ws.path).list()] == [result.run_id]


def test_compute_targets(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    assert list(ws.compute_targets) == ["local"]
    assert ws.compute_targets["local"].compute == "local"
    ray = ComputeTarget.create(ws, "cluster", RayCompute(address="ray://10.0.0.5:10001"))
    assert ray.compute == "ray://10.0.0.5:10001"
    assert ComputeTarget.create(ws, "cluster", RayCompute(address="ray://10.0.0.5:10001")) == ray  # idempotent
    assert ComputeTarget(Workspace(ws.path), "cluster").config == RayCompute("ray://10.0.0.5:10001")
    ComputeTarget.create(ws, "here", RayCompute())
    assert ws.compute_targets["here"].compute == "ray"
    assert ComputeTarget.create(ws, "mine", LocalCompute()).compute == "local"
    # Each compute value is one the engine's job spec accepts.
    for target in ws.compute_targets.values():
        validate_spec({"name": "abc", "entry_script": "s.py", "inputs": [{"type": "file", "path": "x"}],
                       "compute": target.compute})
    with pytest.raises(UsageError, match="different configuration"):
        ComputeTarget.create(ws, "cluster", RayCompute(address="10.0.0.6:6379"))
    with pytest.raises(UsageError, match="reserved"):
        ComputeTarget.create(ws, "local", RayCompute())
    with pytest.raises(UsageError, match="ray://host:port"):
        RayCompute(address="http://nope")
    with pytest.raises(UsageError, match=r"no compute target named 'gpu'.*'local', 'cluster'"):
        ComputeTarget(ws, "gpu")
    with pytest.raises(UsageError, match="no AmlCompute"):
        ComputeTarget.create(ws, "aml", object())  # type: ignore[arg-type]
    ws.compute_targets["cluster"].delete()
    assert "cluster" not in ws.compute_targets


def test_unknown_datastore_names_registered_ones_and_how_to_register(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    Datastore.register_local(ws, "scratch", tmp_path / "scratch")
    with pytest.raises(UsageError) as e:
        Datastore.get(ws, "images")
    msg = str(e.value)
    assert "'images'" in msg and "'scratch'" in msg and "'workspaceblobstore'" in msg
    assert "register_azure_blob_container" in msg and "register_local" in msg


def test_catalog_is_plain_sqlite_without_secrets_columns(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    Datastore.register_local(ws, "scratch", tmp_path / "scratch")
    rows = sqlite3.connect(ws.path / "catalog.sqlite").execute(
        "SELECT name, type, definition FROM datastores ORDER BY name").fetchall()
    assert [(n, t) for n, t, _ in rows] == [("scratch", "Local"), ("workspaceblobstore", "Local")]
    assert json.loads(rows[0][2]) == {"root": str((tmp_path / "scratch").resolve())}
