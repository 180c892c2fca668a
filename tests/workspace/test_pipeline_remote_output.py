"""A ParallelRunStep whose PipelineData lives on a remote datastore (Azurite, moto's S3): its workers
write the rows there themselves. Nothing is written locally and nothing is uploaded after the step (the
pipeline driver, which runs the step, moves a few KB while the workers send the whole output). A
PythonScriptStep after it reads the rows from a downloaded copy, a ParallelRunStep reads them by URL, and
a second submit reuses all three steps, the rows copied server-side."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from pipeline_helpers import make_project, output_rows, score_step

from parallelrun.errors import JobFailedError
from parallelrun.runs import RunStore
from parallelrun.workspace import Datastore
from parallelrun.workspace.experiment import Experiment
from parallelrun.workspace.pipeline import Pipeline
from parallelrun.workspace.steps import PipelineData, PythonScriptStep
from store_proxy import CountingProxy

BIG_ROWS = '''
import os

ROW = int(os.environ["ROW_BYTES"])

def init():
    pass

def run(mini_batch):
    return [os.path.basename(p) + " " + "y" * ROW for p in mini_batch]
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

# A ParallelRunStep reading the scores where they are (its input is the datastore URL, not a local copy).
LINES = '''
import os

def init():
    pass

def run(mini_batch):
    return [f"{os.path.basename(p)}: {sum(1 for _ in open(p))}" for p in mini_batch]
'''


@dataclass
class Store:
    """A remote datastore behind a counting proxy, and how the test reads it (straight, not proxied)."""

    datastore: Any
    proxy: CountingProxy
    names: Callable[[], list[str]]
    read: Callable[[str], bytes]


def _azure(azurite: Any, ws: Any) -> Store:
    from azure.storage.blob import BlobServiceClient

    proxy = CountingProxy(int(urlparse(azurite.endpoint).port or 0))
    container = f"pd{uuid.uuid4().hex[:10]}"
    ds = Datastore.register_azure_blob_container(
        ws, "remote", container, azurite.account_name, account_key=azurite.account_key,
        endpoint=f"http://127.0.0.1:{proxy.port}/{azurite.account_name}", create_if_not_exists=True)
    cc = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)
    return Store(ds, proxy, lambda: sorted(b.name for b in cc.list_blobs()),
                 lambda name: bytes(cc.download_blob(name).readall()))


def _s3(moto_s3: Any, ws: Any) -> Store:
    import boto3

    proxy = CountingProxy(int(urlparse(moto_s3.endpoint_url).port or 0))
    bucket = f"pd{uuid.uuid4().hex[:10]}"
    ds = Datastore.register_s3_bucket(
        ws, "remote", bucket, access_key_id=moto_s3.access_key_id, secret_access_key=moto_s3.secret_access_key,
        endpoint_url=f"http://127.0.0.1:{proxy.port}", region="us-east-1", create_if_not_exists=True)
    client = boto3.client("s3", endpoint_url=moto_s3.endpoint_url, region_name="us-east-1",
                          aws_access_key_id=moto_s3.access_key_id, aws_secret_access_key=moto_s3.secret_access_key)
    return Store(ds, proxy,
                 lambda: sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])),
                 lambda name: bytes(client.get_object(Bucket=bucket, Key=name)["Body"].read()))


# Azure: 24 rows of 64 KB (6 batches of 4 staged as blocks). S3: 8 rows of 1.5 MB, so that each batch's part
# (6 MB) is over S3's 5 MB minimum and copied server-side (smaller ones are uploaded by the assembly's helper
# processes, not by the driver either: tests/outputs/test_compose_helpers.py).
@pytest.mark.slow  # 12-16 s each (a pipeline run against Azurite or moto): CI runs them (make test-slow)
@pytest.mark.timeout(240)
@pytest.mark.parametrize(("kind", "items", "row"), [
    pytest.param("azure", 24, 64 * 1024, marks=pytest.mark.azure),
    pytest.param("s3", 8, 1536 * 1024, marks=pytest.mark.s3),
])
def test_parallel_step_writes_its_pipeline_data_on_the_remote_datastore_directly(
        kind: str, items: int, row: int, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    project = make_project(tmp_path, files=items)
    project.write_script("big.py", BIG_ROWS)
    project.write_script("count.py", COUNT)
    project.write_script("lines.py", LINES)
    store = _azure(request.getfixturevalue("azurite"), project.ws) if kind == "azure" else _s3(
        request.getfixturevalue("moto_s3"), project.ws)
    proxy = store.proxy
    try:
        scores = PipelineData("scores", datastore=store.datastore)
        score = score_step(project, inputs=[project.dataset()], output=scores, script="big.py",
                           mini_batch_size=4, process_count_per_node=2, environment_variables={"ROW_BYTES": str(row)})
        names = PipelineData("names")  # on the workspace's default (local) datastore
        count = PythonScriptStep("count.py", source_directory=str(project.scripts), name="count",
                                 inputs=[scores], outputs=[names], arguments=["--scores", scores, "--output", names])
        lines = score_step(project, inputs=[scores], name="lines", script="lines.py")
        run = Experiment(project.ws, "direct").submit(Pipeline(project.ws, [score, count, lines]))
        assert run.wait_for_completion(show_output=False, timeout_seconds=180) == "Completed"

        score_run, count_run, lines_run = run.get_steps()
        prefix = f"azureml/{run.id}/score/scores"
        want = [f"item{i:03d}.txt" for i in range(items)]
        # Every row once, in input order, on the datastore; no part left beside it.
        data = store.read(f"{prefix}/parallel_run_step.txt")
        assert [ln.split(" ", 1)[0] for ln in data.decode().splitlines()] == want
        assert [n for n in store.names() if n.startswith(prefix)] == [f"{prefix}/parallel_run_step.txt"]
        ref = score_run.get_output_data("scores")
        assert (ref.datastore_name, ref.path_on_datastore) == ("remote", prefix)
        assert ref.local_path == store.datastore.url(prefix)

        # Written directly: no local copy, no upload step.
        pipeline_dir = RunStore(project.ws.path).runs_dir / run.id
        assert not (pipeline_dir / "outputs" / "score").exists()
        log = (pipeline_dir / "logs" / "pipeline.txt").read_text()
        assert "output scores: uploaded" not in log, log
        # The pipeline driver runs the step; it moved a few KB of the output until the step after it started
        # (that step's input is then downloaded, by this driver, since the script needs a local path).
        driver_pid = RunStore(project.ws.path).get(run.id).driver_pid
        assert driver_pid and proxy.opened_by(driver_pid) >= 1
        next_started = RunStore(project.ws.path).get(count_run.id).started
        down, up = proxy.moved_by(driver_pid, until=next_started)
        _, workers_up = proxy.moved_by_others(driver_pid, until=next_started)
        assert workers_up >= len(data) and up < len(data) // 10 and down < len(data) // 10, (up, down, workers_up)

        # The steps after it read the rows: the script from a downloaded copy, the ParallelRunStep by URL.
        out = Path(count_run.get_output_data("names").local_path) / "names.txt"
        assert out.read_text().split() == want
        assert output_rows(lines_run, "lines_out") == [f"parallel_run_step.txt: {items}"]
        assert lines_run.record.spec["inputs"][0]["path"] == store.datastore.url(prefix)

        # Submitted again: the step is reused, its rows copied on the store into the new run's folder, and
        # the step after it too (the rows' fingerprint is the same).
        again = Experiment(project.ws, "direct").submit(Pipeline(project.ws, [score, count, lines]))
        assert again.wait_for_completion(show_output=False, timeout_seconds=120) == "Completed"
        assert [s.is_reused for s in again.get_steps()] == [True, True, True]
        assert store.read(f"azureml/{again.id}/score/scores/parallel_run_step.txt") == data
    finally:
        proxy.close()


# 0.3 s per item; each worker notes the mini-batches it finishes (to count what ran again after a resume).
SLOW = '''
import os, time

def init():
    os.makedirs(os.environ["MARKS"], exist_ok=True)

def run(mini_batch, context):
    time.sleep(0.3 * len(mini_batch))
    open(os.path.join(os.environ["MARKS"], f"batch-{context.minibatch_index}-{os.getpid()}"), "w").close()
    return [os.path.basename(p) for p in mini_batch]
'''


@pytest.mark.azure
@pytest.mark.slow  # ~14 s; CI runs it (make test-slow)
@pytest.mark.timeout(240)
def test_pipeline_driver_killed_mid_step_resumes_into_the_blob_exactly_once(azurite: Any, tmp_path: Path) -> None:
    """kill -9 of the pipeline driver while the workers stage blocks of the blob, then resume: every row
    once, in order, in the one blob (the blocks staged before the kill are adopted or discarded)."""
    project = make_project(tmp_path, files=12)
    project.write_script("slow.py", SLOW)
    store = _azure(azurite, project.ws)
    marks = tmp_path / "marks"
    try:
        step = score_step(project, inputs=[project.dataset()], output=PipelineData("scores", datastore=store.datastore),
                          script="slow.py", mini_batch_size=2, process_count_per_node=2,
                          environment_variables={"MARKS": str(marks)})
        run = Experiment(project.ws, "killed").submit(Pipeline(project.ws, [step]))
        deadline = time.monotonic() + 90
        while len(list(marks.glob("batch-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(list(marks.glob("batch-*"))) >= 2, "no mini-batch finished within 90 s"
        os.kill(run.record.driver_pid, signal.SIGKILL)
        with pytest.raises(JobFailedError, match="interrupted"):
            run.wait_for_completion(show_output=False, timeout_seconds=30)
        done_before = len({p.name.split("-")[1] for p in marks.glob("batch-*")})
        prefix = f"azureml/{run.id}/score/scores"
        assert [n for n in store.names() if n.startswith(prefix)] == []  # nothing committed yet

        run.resume()
        assert run.wait_for_completion(show_output=False, timeout_seconds=150) == "Completed"
        rows = store.read(f"{prefix}/parallel_run_step.txt").decode().splitlines()
        assert rows == [f"item{i:03d}.txt" for i in range(12)]
        assert [n for n in store.names() if n.startswith(prefix)] == [f"{prefix}/parallel_run_step.txt"]
        ran = Counter(p.name.split("-")[1] for p in marks.glob("batch-*"))
        # Only what had not finished ran again (a batch running at the kill may run twice: its part may be lost).
        assert len(ran) == 6 and sum(ran.values()) <= 6 + (6 - done_before) + 2, (ran, done_before)
        assert not (RunStore(project.ws.path).runs_dir / run.id / "outputs").exists()
    finally:
        store.proxy.close()
