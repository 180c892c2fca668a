"""docs/tutorial.md, executed: its python blocks in order, in an empty folder, against Azurite.

A block opened with ```python file=PATH is a file the reader saves: it is written to PATH at that point.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import parallelrun

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
BLOCK = re.compile(r"^```python(?:[ \t]+file=(\S+))?[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)

# The names the tutorial imports from ``parallelrun``, and where they live.
NAMES = {
    "Workspace": "parallelrun.workspace.workspace", "Datastore": "parallelrun.workspace.datastore",
    "Dataset": "parallelrun.workspace.dataset", "Model": "parallelrun.workspace.model",
    "Environment": "parallelrun.workspace.environment", "LocalCompute": "parallelrun.workspace.compute",
    "ParallelRunConfig": "parallelrun.workspace.steps", "ParallelRunStep": "parallelrun.workspace.steps",
    "PipelineData": "parallelrun.workspace.steps", "Pipeline": "parallelrun.workspace.pipeline",
    "Experiment": "parallelrun.workspace.experiment",
}


def tutorial_script() -> str:
    """The tutorial as one program: file blocks become writes, python blocks run in order."""
    parts = []
    blocks = BLOCK.findall(TUTORIAL.read_text())
    assert len(blocks) >= 10, "the tutorial's code blocks were not found"
    for file_name, code in blocks:
        if file_name:
            parts.append(f"Path({file_name!r}).parent.mkdir(parents=True, exist_ok=True)\n"
                         f"Path({file_name!r}).write_text({code!r})\n")
        else:
            parts.append(code)
    return "from pathlib import Path\n" + "\n".join(parts)


def _preamble() -> str:
    """Until ``parallelrun/__init__.py`` exports the pipeline names, provide them (the test still runs
    the tutorial's own imports)."""
    missing = {n: m for n, m in NAMES.items() if not hasattr(parallelrun, n)}
    if not missing:
        return ""
    lines = ["import importlib, parallelrun"]
    lines += [f"parallelrun.{n} = importlib.import_module({m!r}).{n}" for n, m in missing.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.azure
@pytest.mark.timeout(420)
def test_tutorial_runs_end_to_end_against_azurite(azurite, tmp_path: Path) -> None:
    script = tmp_path / "tutorial.py"
    script.write_text(_preamble() + tutorial_script())
    env = {**os.environ, "AZURITE_BLOB_ENDPOINT": azurite.endpoint, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=400)
    out = done.stdout
    assert done.returncode == 0, f"--- stdout\n{out[-6000:]}\n--- stderr\n{done.stderr[-6000:]}"

    # What the reader sees.
    assert "PipelineRun Status: Completed" in out
    assert "StepRun(predict-digits-mnist) Status: Completed" in out
    scored = re.search(r"scored (\d+) images, accuracy ([\d.]+)%", out)
    assert scored and int(scored.group(1)) == 60 and float(scored.group(2)) > 80, out[-3000:]
    assert "60 succeeded, 0 failed" in out
    assert "reused: True" in out

    # The output went back to the blob container, where the step said.
    import fsspec

    fs = fsspec.filesystem("az", connection_string=azurite.connection_string)
    written = [p for p in fs.find("sampledata/azureml") if p.endswith("/predict-digits-mnist/inferences/mnist_outputs.txt")]
    assert len(written) == 2  # the run, and the rerun that reused it
    rows = fs.cat(written[0]).decode().splitlines()
    assert len(rows) == 60 and rows[0].startswith("digit_0000.png: ")
    # The account key lives only in the secrets file.
    ws = tmp_path / "tutorial-ws"
    holders = [p for p in ws.rglob("*") if p.is_file() and azurite.account_key.encode() in p.read_bytes()]
    assert [p.name for p in holders] == ["secrets.json"]
    assert azurite.account_key not in out + done.stderr


def test_tutorial_blocks_are_complete_programs() -> None:
    """Cheap check without Azurite: the extracted program compiles, and writes the entry script it runs."""
    source = tutorial_script()
    compile(source, "tutorial.py", "exec")
    assert "scripts/digit_identification.py" in source
    for name in NAMES:
        assert re.search(rf"from parallelrun import [^\n]*\b{name}\b", source), name
