"""A ParallelRunStep whose PipelineData lives on a Blob datastore (Azurite): its workers write the rows
there themselves. Nothing is written locally and nothing is uploaded after the step (the pipeline driver,
which runs the step, moves a few KB while the workers send the whole output), a PythonScriptStep after it
reads the rows (downloaded for it), and a second submit reuses the step by a server-side copy."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from pipeline_helpers import make_project, score_step

from parallelrun.runs import RunStore
from parallelrun.workspace import Datastore
from parallelrun.workspace.experiment import Experiment
from parallelrun.workspace.pipeline import Pipeline
from parallelrun.workspace.steps import PipelineData, PythonScriptStep
from store_proxy import CountingProxy

ROW = 64 * 1024  # a ~64 KB row per item: 24 items, ~1.5 MB of output

BIG_ROWS = f'''
import os

def init():
    pass

def run(mini_batch):
    return [os.path.basename(p) + " " + "y" * {ROW} for p in mini_batch]
'''

# Reads the scores (a local path: downloaded for it) and writes one line per row: its first word.
COUNT = '''
import argparse, os
parser = argparse.ArgumentParser()
parser.add_argument("--scores", required=True)
parser.add_argument("--output", required=True)
args = parser.parse_args()
os.makedirs(args.output, exist_ok=True)
rows = open(os.path.join(args.scores, "parallel_run_step.txt")).read().splitlines()
with open(os.path.join(args.output, "names.txt"), "w") as f:
    f.write("\\n".join(r.split(" ", 1)[0] for r in rows) + "\\n")
'''


def _blob_names(azurite: Any, container: str) -> list[str]:
    from azure.storage.blob import BlobServiceClient

    cc = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)
    return sorted(b.name for b in cc.list_blobs())


def _read_blob(azurite: Any, container: str, name: str) -> bytes:
    from azure.storage.blob import BlobServiceClient

    cc = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)
    return bytes(cc.download_blob(name).readall())


@pytest.mark.azure
@pytest.mark.timeout(240)
def test_parallel_step_writes_its_pipeline_data_on_the_blob_datastore_directly(azurite: Any, tmp_path: Path) -> None:
    proxy = CountingProxy(int(urlparse(azurite.endpoint).port or 0))
    try:
        project = make_project(tmp_path, files=24)
        project.write_script("big.py", BIG_ROWS)
        project.write_script("count.py", COUNT)
        container = f"pd{uuid.uuid4().hex[:10]}"
        blob = Datastore.register_azure_blob_container(
            project.ws, "blob", container, azurite.account_name, account_key=azurite.account_key,
            endpoint=f"http://127.0.0.1:{proxy.port}/{azurite.account_name}", create_if_not_exists=True)
        scores = PipelineData("scores", datastore=blob)
        score = score_step(project, inputs=[project.dataset()], output=scores, script="big.py",
                           mini_batch_size=4, process_count_per_node=2)
        names = PipelineData("names")  # on the workspace's default (local) datastore
        count = PythonScriptStep("count.py", source_directory=str(project.scripts), name="count",
                                 inputs=[scores], outputs=[names], arguments=["--scores", scores, "--output", names])
        run = Experiment(project.ws, "direct").submit(Pipeline(project.ws, [score, count]))
        assert run.wait_for_completion(show_output=False, timeout_seconds=180) == "Completed"

        score_run, count_run = run.get_steps()
        prefix = f"azureml/{run.id}/score/scores"
        want = [f"item{i:03d}.txt" for i in range(24)]
        # Every row once, in input order, in the container; no part left beside it.
        data = _read_blob(azurite, container, f"{prefix}/parallel_run_step.txt")
        assert [ln.split(" ", 1)[0] for ln in data.decode().splitlines()] == want
        assert [n for n in _blob_names(azurite, container) if n.startswith(prefix)] == [
            f"{prefix}/parallel_run_step.txt"]
        ref = score_run.get_output_data("scores")
        assert (ref.datastore_name, ref.path_on_datastore) == ("blob", prefix)
        assert ref.local_path == f"az://{container}/{prefix}"

        # Written directly: no local copy, no upload step; the driver moved a few KB of the output's ~1.5 MB.
        pipeline_dir = RunStore(project.ws.path).runs_dir / run.id
        assert not (pipeline_dir / "outputs" / "score").exists()
        log = (pipeline_dir / "logs" / "pipeline.txt").read_text()
        assert "output scores: uploaded" not in log, log
        # Counted until the step after it started (that step's input is then downloaded, by this driver).
        driver_pid = RunStore(project.ws.path).get(run.id).driver_pid
        assert driver_pid and proxy.opened_by(driver_pid) >= 1
        next_started = RunStore(project.ws.path).get(count_run.id).started
        down, up = proxy.moved_by(driver_pid, until=next_started)
        _, workers_up = proxy.moved_by_others(driver_pid, until=next_started)
        assert workers_up >= len(data) and up < len(data) // 10 and down < len(data) // 10, (up, down, workers_up)

        # The step after it read the rows (downloaded for it, since it needs a local path).
        out = Path(count_run.get_output_data("names").local_path) / "names.txt"
        assert out.read_text().split() == want

        # Submitted again: the step is reused, its rows copied on the store into the new run's folder.
        again = Experiment(project.ws, "direct").submit(Pipeline(project.ws, [score, count]))
        assert again.wait_for_completion(show_output=False, timeout_seconds=120) == "Completed"
        score2, count2 = again.get_steps()
        assert score2.is_reused and count2.is_reused
        data2 = _read_blob(azurite, container, f"azureml/{again.id}/score/scores/parallel_run_step.txt")
        assert data2 == data
    finally:
        proxy.close()
