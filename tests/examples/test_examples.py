"""Run each example end to end through the CLI, at a small size, in a scratch copy of its folder."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

# The examples need the `examples` extra; say so rather than fail with an import error in a subprocess.
for _module in ("sklearn", "skl2onnx", "onnxruntime", "PIL"):
    pytest.importorskip(_module, reason="install the examples extra: pip install -e '.[examples]'")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _copy_example(name: str, tmp_path: Path) -> Path:
    """Copy an example's sources (not any data, models or output made by hand) into tmp_path."""
    folder = tmp_path / name
    shutil.copytree(
        EXAMPLES / name, folder, ignore=shutil.ignore_patterns("data", "models", "out", "__pycache__")
    )
    return folder


def _python(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python ARGS` in cwd and require exit code 0, showing its output if not."""
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, (
        f"python {' '.join(args)} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    return result


def _run_job(folder: Path, tmp_path: Path) -> None:
    """Run the example's job.yml through the CLI, with a workspace of its own."""
    _python(
        folder,
        "-m", "parallelrun", "run", "job.yml",
        "--workspace", str(tmp_path / "ws"),
        "--quiet",
        "--set", "process_count_per_node=2",
    )  # fmt: skip


@pytest.mark.slow  # ~14 s (trains and converts a model); the iris example runs in `make test`; CI runs both
@pytest.mark.timeout(300)
def test_mnist_classifies_every_image_once(tmp_path: Path) -> None:
    folder = _copy_example("mnist", tmp_path)
    # 23 images in mini-batches of 5: the last mini-batch is a short one.
    _python(folder, "make_data.py", "--count", "23")

    _run_job(folder, tmp_path)

    output = folder / "out" / "digits" / "parallel_run_step.txt"
    lines = output.read_text().splitlines()
    names = Counter(line.split(":")[0] for line in lines)
    expected = sorted(path.name for path in (folder / "data" / "digits").iterdir())
    assert len(expected) == 23
    assert sorted(names) == expected, "every image appears in the output"
    assert all(count == 1 for count in names.values()), f"duplicated: {names.most_common(3)}"
    assert all(re.fullmatch(r"digit_\d{5}\.png: \d", line) for line in lines), lines[:5]
    result = _python(folder, "check_accuracy.py", "--output", str(output), "--min", "0.8")
    assert "of 23 images" in result.stdout


@pytest.mark.timeout(300)
def test_iris_scores_every_row_once(tmp_path: Path) -> None:
    folder = _copy_example("iris", tmp_path)
    # 600 rows are about 15 KB of CSV: several 4 KB mini-batches.
    _python(folder, "make_data.py", "--repeat", "4")

    _run_job(folder, tmp_path)

    output = folder / "out" / "iris" / "parallel_run_step.txt"
    source = pd.read_csv(folder / "data" / "iris.csv")
    scored = pd.read_csv(output, sep=" ", header=None, names=["row", "predicted", "probability"])
    assert len(source) == 600
    assert len(scored) == len(source)
    assert sorted(scored["row"]) == list(range(len(source))), "each row is scored exactly once"
    assert scored["probability"].between(0, 1).all()
    joined = source.join(scored.set_index("row"))
    assert (joined["predicted"] == joined["label"]).mean() > 0.9
