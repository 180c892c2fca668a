"""The seed tutorial, line for line: Azure's "Run batch inference on large amounts of data" runs on parallelrun.

``seed/azure-batch-inference-tutorial.tr.md`` is the tutorial this project started from, byte for byte
(Azure's docs in a machine translation; the code blocks are Azure's own). This test extracts its code
blocks and runs them as one program. Every line is kept verbatim except what ``MAPPED`` lists, and those
mappings are the ones docs/migrating-from-azureml.md documents:

- the imports (``azureml.*`` -> ``parallelrun``);
- the compute-target block (there is no AmlCompute to provision: a local compute target instead);
- the storage account details: the tutorial reads Azure's public ``pipelinedata`` account, here an Azurite
  container seeded with digit images rendered locally and a model trained locally (there is no network).

What the tutorial leaves to its notebook, the test provides as the notebook would have: a workspace
config, ``scripts_folder`` holding the entry-script block saved as ``digit_identification.py``, and, since
TF 1.13 cannot be installed on this Python, ``seed/tensorflow.py`` (TF 1's graph API over the local model)
next to it, with ``PARALLELRUN_ENVIRONMENT=current`` so the step runs in this interpreter instead of building
the tutorial's ``tensorflow==1.13.1`` environment.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SEED_DIR = Path(__file__).resolve().parent / "seed"
SEED = SEED_DIR / "azure-batch-inference-tutorial.tr.md"
SHARED_SEED = Path("/work/shared/seed/000_6ed027d449033460.txt")
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
IMAGE_COUNT = 40

# Each Azure import line and what it becomes. The tutorial uses PipelineData without importing it; it comes
# with Dataset.
IMPORTS = {
    "from azureml.core import Datastore": "from parallelrun import Datastore",
    "from azureml.core import Workspace": "from parallelrun import Workspace",
    "from azureml.core.dataset import Dataset": "from parallelrun import Dataset, PipelineData",
    "from azureml.core.model import Model": "from parallelrun import Model",
    "from azureml.core.environment import Environment": "from parallelrun import Environment",
    "from azureml.core.conda_dependencies import CondaDependencies": "from parallelrun import CondaDependencies",
    "from azureml.core.runconfig import DEFAULT_GPU_IMAGE": "from parallelrun.workspace import DEFAULT_GPU_IMAGE",
    "from azureml.contrib.pipeline.steps import ParallelRunConfig": "from parallelrun import ParallelRunConfig",
    "from azureml.contrib.pipeline.steps import ParallelRunStep": "from parallelrun import ParallelRunStep",
    "from azureml.pipeline.core import Pipeline": "from parallelrun import Pipeline",
    "from azureml.core.experiment import Experiment": "from parallelrun import Experiment",
    "from azureml.widgets import RunDetails": "from parallelrun import RunDetails",
}

# The compute block, as docs/migrating-from-azureml.md gives it: the same name, a local target.
COMPUTE_BLOCK = '''\
import os
from parallelrun import ComputeTarget, LocalCompute

compute_name = os.environ.get("AML_COMPUTE_CLUSTER_NAME", "cpu-cluster")
compute_target = ComputeTarget.create(ws, compute_name, LocalCompute())
'''


def seed_blocks() -> list[str]:
    blocks = BLOCK.findall(SEED.read_text(encoding="utf-8"))
    assert len(blocks) == 13, f"expected the seed's 13 python blocks, found {len(blocks)}"
    return blocks


def _mapped(block: str, endpoint: str, account_key: str) -> str:
    """One block with its imports and account details mapped; every other line untouched."""
    lines = []
    for line in block.splitlines():
        if line.strip() in IMPORTS:
            line = line.replace(line.strip(), IMPORTS[line.strip()])
        elif line.strip() == 'account_name="pipelinedata",':
            line = line.replace('account_name="pipelinedata",', f'account_name="devstoreaccount1", '
                                f'account_key={account_key!r}, endpoint={endpoint!r},')
        elif line.startswith('url="https://pipelinedata.blob.core.windows.net/'):
            line = line.replace("https://pipelinedata.blob.core.windows.net", endpoint)
        lines.append(line)
    return "\n".join(lines) + "\n"


def tutorial_program(endpoint: str, account_key: str) -> tuple[str, str]:
    """(the notebook program, the entry script) from the seed's blocks."""
    blocks = seed_blocks()
    entry_script = blocks[6]
    assert "def run(mini_batch):" in entry_script and "from azureml.core import Model" in entry_script
    assert "AmlCompute.provisioning_configuration" in blocks[3]
    program = []
    for i, block in enumerate(blocks):
        if i == 3:
            program.append(COMPUTE_BLOCK)
        elif i == 6:
            continue  # the entry script: saved as scripts/digit_identification.py, unchanged
        else:
            program.append(_mapped(block, endpoint, account_key))
    return "\n".join(program), entry_script


def test_seed_copy_is_the_shared_seed() -> None:
    if not SHARED_SEED.exists():
        pytest.skip("the shared seed folder is not on this machine")
    assert SEED.read_bytes() == SHARED_SEED.read_bytes()


def test_only_imports_compute_and_account_lines_are_mapped() -> None:
    """The spec is the seed: every non-import line of every block (but the compute block) runs verbatim."""
    program, entry_script = tutorial_program("http://127.0.0.1:1/devstoreaccount1", "KEY")
    compile(program, "tutorial.py", "exec")
    kept = program.splitlines()
    for i, block in enumerate(seed_blocks()):
        if i in (3, 6):
            continue
        for line in block.splitlines():
            if line.strip() in IMPORTS or "pipelinedata" in line:
                continue
            assert line in kept, f"block {i}: {line!r} is not run verbatim"
    assert "batch_env.spark.precache_packages = False" in kept
    assert entry_script == seed_blocks()[6]


# --- the data the tutorial downloads, made locally -------------------------------------------------------

def _digits() -> tuple[list[np.ndarray], np.ndarray]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = []
    for pixels in digits.data:
        small = Image.fromarray((pixels.reshape(8, 8) * (255 / 16)).round().astype(np.uint8), mode="L")
        images.append(np.asarray(small.resize((28, 28), Image.Resampling.BILINEAR)))
    return images, digits.target


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _model_tarball(images: list[np.ndarray], labels: np.ndarray) -> bytes:
    """``mnist-tf.model.meta`` + ``mnist-tf.model``, the names the tutorial's script loads, in a tar.gz."""
    from sklearn.linear_model import LogisticRegression

    x = np.stack([im.reshape(-1) for im in images]).astype(np.float32) / 255.0
    clf = LogisticRegression(max_iter=300).fit(x[IMAGE_COUNT:], labels[IMAGE_COUNT:])  # held out: the images
    weights = io.BytesIO()
    np.savez(weights, coef=clf.coef_.astype(np.float32), intercept=clf.intercept_.astype(np.float32))
    meta = json.dumps({"input": "network/X:0", "output": "network/output/MatMul:0"}).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("mnist-tf.model.meta", meta), ("mnist-tf.model", weights.getvalue())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


CONTAINERS = (("sampledata", None), ("mnist-model", "blob"))  # the tutorial's names; the model one is public


@pytest.fixture
def seeded_azurite(azurite):  # type: ignore[no-untyped-def]
    """Azurite is shared by the session and other tests use these container names too: start empty, and
    leave nothing behind."""
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string)

    def drop() -> None:
        for name, _ in CONTAINERS:
            container = service.get_container_client(name)
            if container.exists():
                container.delete_container()

    drop()
    try:
        yield azurite
    finally:
        drop()


def _seed_azurite(azurite, labels_out: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    from azure.storage.blob import BlobServiceClient

    images, labels = _digits()
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    for name, public in CONTAINERS:
        service.get_container_client(name).create_container(public_access=public)
    sample = service.get_container_client("sampledata")
    for i in range(IMAGE_COUNT):
        name = f"digit_{i:03d}.png"
        sample.upload_blob(f"mnist/{name}", _png(images[i]), overwrite=True)
        labels_out[name] = int(labels[i])
    model = service.get_container_client("mnist-model")
    model.upload_blob("mnist-tf.tar.gz", _model_tarball(images, labels), overwrite=True)


@pytest.mark.azure
@pytest.mark.timeout(420)
def test_seed_tutorial_runs_against_azurite(seeded_azurite, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    azurite = seeded_azurite
    labels: dict[str, int] = {}
    _seed_azurite(azurite, labels)
    program, entry_script = tutorial_program(azurite.endpoint, azurite.account_key)

    # What the notebook had before the tutorial's first block: a workspace, and the scripts folder.
    from parallelrun import Workspace

    Workspace.create(tmp_path / ".parallelrun")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "digit_identification.py").write_text(entry_script)
    (scripts / "tensorflow.py").write_text((SEED_DIR / "tensorflow.py").read_text())
    script = tmp_path / "tutorial.py"
    script.write_text('scripts_folder = "scripts"\n' + program)

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PARALLELRUN_ENVIRONMENT": "current"}
    done = subprocess.run([sys.executable, "-W", "always::UserWarning", str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=400)
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, f"--- stdout\n{out[-6000:]}\n--- stderr\n{err[-6000:]}"

    # What the reader sees: the run completed; settings without meaning here were announced, not fatal.
    assert "PipelineRun Status: Completed" in out, out[-3000:]
    assert "StepRun(batch-mnist) Status: Completed" in out, out[-3000:]
    assert "spark settings are ignored" in err, err[-3000:]
    assert "docker settings are ignored" in err, err[-3000:]
    assert "node_count=4 has no meaning on local compute" in err, err[-3000:]
    assert "PARALLELRUN_ENVIRONMENT=current, so its packages (tensorflow==1.13.1, pillow) are not installed" in err
    assert "40 succeeded, 0 failed" in out, out[-3000:]

    # The result file, read as Azure's batch-inference notebook reads it.
    from parallelrun import Experiment

    ws = Workspace(tmp_path / ".parallelrun")
    (pipeline_run,) = list(Experiment(ws, "digit_identification").get_runs())
    assert pipeline_run.get_status() == "Completed"
    batch_run = next(iter(pipeline_run.get_children()))
    batch_output = batch_run.get_output_data("inferences")
    batch_output.download(local_path=str(tmp_path / "inference-results"))
    result_file = tmp_path / "inference-results" / batch_output.path_on_datastore / "parallel_run_step.txt"
    df = pd.read_csv(result_file, delimiter=":", header=None)
    df.columns = ["Filename", "Prediction"]
    assert df.shape[0] == IMAGE_COUNT
    assert sorted(df["Filename"]) == sorted(labels)
    correct = sum(labels[f] == int(p) for f, p in zip(df["Filename"], df["Prediction"], strict=True))
    assert correct >= 0.8 * IMAGE_COUNT, df
