"""The shell commands of README.md and docs/, executed as written (extracted from the Markdown).

- README's "Using it" block: every ``parallelrun ...`` line runs, in a job folder, with ``RUN_ID``
  replaced by a real run's id; each exits 0.
- docs/tutorial.md's ``parallelrun ... -w tutorial-ws`` lines run against a workspace of that name.
- Azurite is installed and started one way everywhere: the same ``npm install --prefix ...`` line and
  the same ``azurite-blob`` flags in every document; the ``azurite`` fixture starts it with the
  tutorial's own command line (``tests/conftest.py``), and a test talks to it with azure-storage-blob.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from doc_commands import REPO, documented_azurite_command, install_azurite_command

sys.path.insert(0, str(REPO / "tests" / "engine"))
from engine_helpers import ECHO, make_job  # noqa: E402

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _blocks(doc: Path, lang: str = "") -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", doc.read_text(encoding="utf-8"), re.S | re.M)


def parallelrun_lines(block: str) -> list[str]:
    """The ``parallelrun`` commands of a block, as a shell would run them: comments dropped, ``[--opt]``
    (optional parts) dropped, ``a | b`` (two commands on one line) split into two."""
    out = []
    for raw in block.replace("\\\n", " ").splitlines():
        line = raw.split(" # ", 1)[0].strip()
        if not line.startswith("parallelrun "):
            continue
        line = re.sub(r"\s*\[[^\]]*\]", "", line)
        for part in line.split(" | "):
            part = part.strip()
            out.append(part if part.startswith("parallelrun ") else f"parallelrun {part}")
    return out


def _shell(cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def _using_it_block() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Using it", 1)[1]
    return re.findall(r"^```\n(.*?)^```", section, re.S | re.M)[0]


def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    lines = parallelrun_lines(_using_it_block())
    assert len(lines) >= 9, lines
    job = make_job(tmp_path, ECHO, n_files=60)  # 20 mini-batches: `debug --batch 17` exists
    first = _shell("parallelrun run job.yml --quiet", tmp_path)
    assert first.returncode == 0, first.stderr
    run_id = next(p.name for p in (tmp_path / ".parallelrun" / "runs").iterdir())
    for cmd in lines:
        res = _shell(cmd.replace("RUN_ID", run_id), tmp_path)
        assert res.returncode == 0, f"{cmd}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
        assert "Traceback" not in res.stderr, cmd
    assert (tmp_path / "job.schema.json").stat().st_size > 1000  # `schema > job.schema.json`
    assert job.lines()


def test_tutorial_shell_commands_run_as_written(tmp_path: Path) -> None:
    lines = [c for b in _blocks(REPO / "docs" / "tutorial.md", "bash") for c in parallelrun_lines(b)]
    assert any("runs list" in c for c in lines), lines
    make_job(tmp_path, ECHO)
    assert _shell("parallelrun run job.yml -w tutorial-ws --quiet", tmp_path).returncode == 0
    run_id = next(p.name for p in (tmp_path / "tutorial-ws" / "runs").iterdir())
    for cmd in lines:
        res = _shell(cmd.replace("RUN_ID", run_id), tmp_path)
        assert res.returncode == 0, f"{cmd}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"


def test_azurite_installed_and_started_one_way_everywhere() -> None:
    install = install_azurite_command()
    start = documented_azurite_command()
    assert install == shlex.split("npm install --prefix .cache/azurite azurite@3")
    assert {"--skipApiVersionCheck", "--disableTelemetry"} <= set(start)
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        assert "npm install -g azurite" not in text, doc
        for line in text.replace("\\\n", " ").splitlines():
            if re.match(r"^npm install .*azurite", line):
                assert shlex.split(line.split(" #", 1)[0]) == install, (doc, line)
            if "azurite-blob " in line and not line.lstrip().startswith(("`", "#")) and "--blobPort" in line:
                argv = [a for a in shlex.split(line.split(" #", 1)[0]) if a != "&"]
                assert argv == start, (doc, line)
    # the CI script installs it the same way
    assert "--prefix .cache/azurite azurite@3" in (REPO / ".ci" / "run").read_text()


@pytest.mark.azure
def test_documented_azurite_command_serves_the_current_sdk(azurite) -> None:
    """The tutorial's flags are enough for the installed azure-storage-blob (its API version may be newer
    than Azurite's: that is what --skipApiVersionCheck is for)."""
    blob = pytest.importorskip("azure.storage.blob")
    svc = blob.BlobServiceClient(account_url=azurite.endpoint, credential={"account_name": azurite.account_name,
                                                                          "account_key": azurite.account_key})
    container = svc.create_container("docs-check")
    container.upload_blob("hello.txt", b"hi")
    assert container.download_blob("hello.txt").readall() == b"hi"
