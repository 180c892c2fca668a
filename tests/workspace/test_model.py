"""Models: versions, lookup (in a worker and outside), and safe unpacking of archives."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import warnings
from pathlib import Path

import pytest

from parallelrun import UsageError, run_job
from parallelrun.config import JobSpec
from parallelrun.workspace import Model, Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.create(tmp_path / "ws")


def test_register_file_and_folder_as_versions(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"v1")
    m1 = Model.register(ws, tmp_path / "model.onnx", "digits", tags={"acc": "0.9"}, description="first")
    assert (m1.name, m1.version, m1.tags, m1.description) == ("digits", 1, {"acc": "0.9"}, "first")
    assert m1.path == str(ws.path / "models" / "digits" / "1" / "model.onnx")
    (tmp_path / "model.onnx").write_bytes(b"v2")
    m2 = Model.register(ws, str(tmp_path / "model.onnx"), "digits")
    assert m2.version == 2 and Path(m2.path).read_bytes() == b"v2"
    assert Path(m1.path).read_bytes() == b"v1"  # a registered copy never changes
    folder = tmp_path / "bert"
    (folder / "tok").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"w")
    (folder / "tok" / "vocab.txt").write_text("a b")
    m3 = Model.register(ws, folder, "digits")
    assert m3.version == 3 and (Path(m3.path) / "tok" / "vocab.txt").read_text() == "a b"
    assert Model(ws, "digits").version == 3 and Model(ws, "digits", version=1) == m1
    assert Model(ws, id="digits:2") == m2
    assert [m.id for m in Model.list(ws)] == ["digits:1", "digits:2", "digits:3"]
    Model.register(ws, tmp_path / "model.onnx", "other")
    assert [m.id for m in Model.list(ws, latest=True)] == ["digits:3", "other:1"]
    assert [m.id for m in Model.list(ws, name="other")] == ["other:1"]
    assert Model(Workspace(ws.path), "digits", 3).path == m3.path
    assert not any(p.name.startswith(".staging") for p in (ws.path / "models" / "digits").iterdir())
    copy = m2.download(tmp_path / "dl")
    assert Path(copy).read_bytes() == b"v2"


def test_unknown_model_names_registered_ones(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "m.bin").write_bytes(b"x")
    Model.register(ws, tmp_path / "m.bin", "digits")
    with pytest.raises(UsageError, match=r"no model named 'digit'.*'digits'.*Did you mean 'digits'.*Model\.register"):
        Model(ws, "digit")
    with pytest.raises(UsageError, match=r"has no version 4; its versions are \[1\]"):
        Model(ws, "digits", 4)
    with pytest.raises(UsageError, match="does not exist"):
        Model.register(ws, tmp_path / "missing.bin", "digits")
    with pytest.raises(UsageError, match="invalid"):
        Model.register(ws, tmp_path / "m.bin", "a/b")


def test_get_model_path_outside_a_worker(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARALLELRUN_MODELS", raising=False)
    monkeypatch.delenv("PARALLELRUN_WORKSPACE", raising=False)
    (tmp_path / "m.bin").write_bytes(b"x")
    m1 = Model.register(ws, tmp_path / "m.bin", "digits")
    m2 = Model.register(ws, tmp_path / "m.bin", "digits")
    assert Model.get_model_path("digits", _workspace=ws) == m2.path
    assert Model.get_model_path("digits", version=1, _workspace=ws) == m1.path
    monkeypatch.chdir(ws.path)  # found by Workspace.from_config()
    assert Model.get_model_path("digits") == m2.path
    with pytest.raises(UsageError, match="no model named 'nope'"):
        Model.get_model_path("nope")


def test_get_model_path_from_the_workers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLELRUN_MODELS", json.dumps({"digits": "/m/digits/2/model.onnx",
                                                         "bert:1": "/m/bert/1/bert", "bert:3": "/m/bert/3/bert"}))
    assert Model.get_model_path("digits") == "/m/digits/2/model.onnx"
    assert Model.get_model_path("bert") == "/m/bert/3/bert"  # the highest version listed
    assert Model.get_model_path("bert", version=1) == "/m/bert/1/bert"
    with pytest.raises(UsageError, match=r"'resnet' is not one of the models this step lists \(bert, digits\).*models="):
        Model.get_model_path("resnet")
    with pytest.raises(UsageError, match="'bert:2' is not one of"):
        Model.get_model_path("bert", version=2)


def test_get_model_path_inside_a_real_worker(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "w.txt").write_text("weights-v1")
    model = Model.register(ws, tmp_path / "w.txt", "digits")
    job = tmp_path / "job"
    (job / "data").mkdir(parents=True)
    (job / "data" / "a.txt").write_text("a")
    (job / "score.py").write_text(
        "from parallelrun.workspace import Model\n"
        "def init():\n"
        "    global weights\n"
        "    weights = open(Model.get_model_path('digits')).read()\n"
        "def run(batch):\n"
        "    return [weights for _ in batch]\n")
    spec = JobSpec(name="models", entry_script="score.py", inputs=[{"type": "file", "path": "data"}],
                   process_count_per_node=1, output=str(tmp_path / "out"))
    result = run_job(spec, job_dir=job, workspace=ws.path, progress="quiet",
                     record_fields={"models": {"digits": model.path}})
    assert result.ok, result.summary()
    assert Path(result.output_file or "").read_text().split() == ["weights-v1"]


# --- archives --------------------------------------------------------------------------------------------------
def _tar(path: Path, members: list[tuple[str, str, bytes | str]]) -> Path:
    """(kind, name, data-or-link-target) with kind in file, dir, sym, hard."""
    with tarfile.open(path, "w:gz") as tf:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                payload = data if isinstance(data, bytes) else data.encode()
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("sym", "hard"):
                info.linkname = str(data)
            tf.addfile(info)
    return path


def test_tar_gz_is_unpacked_into_a_folder(ws: Workspace, tmp_path: Path) -> None:
    archive = _tar(tmp_path / "bert.tar.gz", [("dir", "cfg", b""), ("file", "cfg/config.json", "{}"),
                                              ("file", "weights.bin", b"w"), ("sym", "latest", "weights.bin")])
    m = Model.register(ws, archive, "bert")
    root = Path(m.path)
    assert root == ws.path / "models" / "bert" / "1" / "bert"
    assert (root / "cfg" / "config.json").read_text() == "{}"
    assert (root / "latest").read_bytes() == b"w"
    m2 = Model.register(ws, _tar(tmp_path / "x.tgz", [("file", "a", "1")]), "bert")
    assert (Path(m2.path) / "a").read_text() == "1" and Path(m2.path).name == "x"


MALICIOUS = [
    ("dotdot", [("file", "ok.txt", "fine"), ("file", "../escaped.txt", "pwned")], "contains '..'"),
    ("dotdot-inner", [("dir", "a", b""), ("file", "a/../../escaped.txt", "pwned")], "contains '..'"),
    ("absolute", [("file", "/tmp/parallelrun-escaped.txt", "pwned")], "absolute path"),
    ("symlink-out", [("sym", "link", "../../../../outside"), ("file", "link/escaped.txt", "pwned")],
     "symbolic link"),
    ("symlink-abs", [("sym", "passwd", "/etc/passwd")], "symbolic link"),
    ("hardlink-out", [("hard", "h", "../../escaped.txt")], "hard link"),
    ("fifo", [("fifo", "pipe", "")], "device or FIFO"),
    # Chained links: each one alone looks harmless against the empty folder on disk; followed through
    # the links the archive made before it, 't' is the target's parent and the file lands beside it.
    ("chained", [("sym", "s", "."), ("sym", "s/t", ".."), ("file", "t/ESCAPED.txt", "pwned")],
     "symbolic link to '..'"),
    ("chained-deeper", [("dir", "d", b""), ("sym", "d/s", ".."), ("sym", "u", "d/s/d/s/.."),
                        ("file", "u/ESCAPED.txt", "pwned")], "symbolic link to 'd/s/d/s/..'"),
    ("write-through-link", [("sym", "a", "."), ("sym", "b", "a/a/a"), ("sym", "b/c", "../x")],
     "symbolic link to '../x'"),
    ("hardlink-via-symlink", [("sym", "s", "."), ("hard", "h", "s/../escaped.txt")], "hard link"),
    ("loop", [("sym", "p", "q"), ("sym", "q", "p"), ("file", "p/escaped.txt", "pwned")], "loop"),
    ("backslash", [("file", "..\\escaped.txt", "pwned")], "backslash"),
    ("file-over-root", [("file", ".", "pwned")], "over the target folder"),
]


@pytest.mark.parametrize("without_filter", [False, True], ids=["with-data-filter", "without-data-filter"])
@pytest.mark.parametrize("label,members,problem", MALICIOUS, ids=[m[0] for m in MALICIOUS])
def test_malicious_archives_are_refused(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        label: str, members: list[tuple[str, str, bytes | str]], problem: str,
                                        without_filter: bool) -> None:
    if without_filter:  # as on Python 3.10.11 and older 3.11: our own check is all there is
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    (tmp_path / "evil").mkdir()
    archive = _tar(tmp_path / "evil" / "model.tar.gz", members)
    before = {p for p in tmp_path.rglob("*")}
    ws_before = {p for p in ws.path.rglob("*")}
    with pytest.raises(UsageError, match=f"refusing to unpack model.tar.gz.*{re.escape(problem)}"):
        Model.register(ws, archive, "evil")
    assert Model.list(ws) == []  # no version recorded
    created = {p for p in tmp_path.rglob("*")} - before
    assert not [p for p in created if "escaped" in p.name.lower() or p.name == "outside"]
    assert not os.path.exists("/tmp/parallelrun-escaped.txt")
    # No model folder, not even an empty one, and no staging folder: the workspace is as it was.
    assert not (ws.path / "models" / "evil").exists()
    assert {p for p in ws.path.rglob("*")} - ws_before <= {ws.path / "models"}


@pytest.mark.parametrize("without_filter", [False, True], ids=["with-data-filter", "without-data-filter"])
def test_links_that_stay_inside_are_unpacked(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             without_filter: bool) -> None:
    if without_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = _tar(tmp_path / "ok.tar.gz", [
        ("dir", "d", b""), ("file", "d/w.bin", "w"), ("sym", "s", "."), ("sym", "d/up", ".."),
        ("sym", "latest", "s/d/up/d/w.bin"), ("file", "./b.txt", "b"), ("hard", "h", "d/w.bin")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+ warns when no filter is given
        root = Path(Model.register(ws, archive, "inside").path)
    assert (root / "latest").read_text() == "w" and (root / "h").read_text() == "w"
    assert (root / "b.txt").read_text() == "b"
    assert sorted(p.name for p in (ws.path / "models").iterdir() if p.name.startswith(".")) == []


def test_a_failed_copy_leaves_no_model_folder(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot unpack"):
        Model.register(ws, _write(tmp_path / "broken.tar.gz", b"not a tar archive"), "broken")
    assert not (ws.path / "models" / "broken").exists()
    assert Model.list(ws, "broken") == []


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
