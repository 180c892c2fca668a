"""The engine bridge end to end: a dataset in Azure Blob (Azurite) or S3 (moto) becomes a job's inputs, and
the workers fetch the files themselves with the datastore's storage options."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import parallelrun
from parallelrun.config import JobSpec
from parallelrun.workspace import Dataset, Datastore, Workspace

SCRIPT = '''
import os

def init():
    global agent
    agent = os.environ["PARALLELRUN_AGENT_NAME"]

def run(mini_batch):
    rows = []
    for path in mini_batch:
        assert "://" not in path and os.path.isfile(path), path  # the worker downloaded it
        with open(path) as f:
            rows.append(f"{os.path.basename(path)} {f.read().strip()} {agent}")
    return rows
'''


def _diagnose(result: Any) -> str:
    """The summary and every log the run wrote, so a failure on CI explains itself."""
    parts = [result.summary()]
    for p in sorted(result.record.logs_dir.rglob("*.txt")):
        parts.append(f"--- {p.relative_to(result.record.logs_dir)}\n{p.read_text(errors='replace')[-3000:]}")
    return "\n".join(parts)


def _store(kind: str, ws: Workspace, request: pytest.FixtureRequest) -> Datastore:
    if kind == "azure":
        az = request.getfixturevalue("azurite")
        return Datastore.register_azure_blob_container(
            ws, "images", f"c{uuid.uuid4().hex[:12]}", az.account_name, account_key=az.account_key,
            endpoint=az.endpoint, create_if_not_exists=True)
    s3 = request.getfixturevalue("moto_s3")
    return Datastore.register_s3_bucket(
        ws, "images", f"b{uuid.uuid4().hex[:12]}", access_key_id=s3.access_key_id,
        secret_access_key=s3.secret_access_key, endpoint_url=s3.endpoint_url, create_if_not_exists=True)


@pytest.mark.parametrize("kind", [pytest.param("azure", marks=pytest.mark.azure),
                                  pytest.param("s3", marks=pytest.mark.s3)])
def test_run_job_reads_a_remote_file_dataset(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    n = 7 if kind == "azure" else 4
    ws = Workspace.create(tmp_path / "ws")
    store = _store(kind, ws, request)
    src = tmp_path / "src"
    for i in range(n):
        (src / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 2}" / f"img{i}.txt").write_text(f"content-{i}")
    store.upload(src, "x", show_progress=False)
    ds = Dataset.File.from_files(store.path("x/**")).register(ws, "images")

    entries, options = ds.as_named_input("images").to_input_specs(ws)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "score.py").write_text(SCRIPT)
    spec = JobSpec(name="remote-files", entry_script="score.py", inputs=entries, mini_batch_size=2,
                   process_count_per_node=2, output=str(tmp_path / "out"))
    result = parallelrun.run_job(spec, job_dir=job_dir, storage_options=options, workspace=ws.path,
                                 progress="quiet")
    assert result.ok, _diagnose(result)
    lines = Path(result.output_file or "").read_text().splitlines()
    seen = Counter(line.split()[0] for line in lines)
    assert seen == Counter({f"img{i}.txt": 1 for i in range(n)})  # every file exactly once
    assert sorted(line.split()[1] for line in lines) == sorted(f"content-{i}" for i in range(n))
    assert (ws.runs_dir / result.run_id / "run.json").is_file()
