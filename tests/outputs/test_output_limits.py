"""An output that cannot hold the plan stops the run while planning, before the work is done.

An Azure one-file output is one blob of at most 50,000 committed blocks (one per mini-batch, plus a CSV
header or Parquet footer). The limit is lowered here (``_compose.AZURE_MAX_BLOCKS``) rather than planning
50,000 real mini-batches; the driver runs in the test process, so the lowered limit is the one it checks.
"""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from parallelrun import run_job
from parallelrun.errors import OutputError
from parallelrun.outputs import OutputLocation, _compose
from parallelrun.runs import RunStore

N_FILES = 40

SCRIPT = """
import os, time
def run(mini_batch):
    with open(os.environ["EXEC_LOG"], "a") as f:
        f.write(os.path.basename(mini_batch[0]) + "\\n")
    time.sleep(0.2)
    return [os.path.basename(p) for p in mini_batch]
"""


def test_the_limit_is_the_azure_one_file_layouts_only() -> None:
    az = OutputLocation(url="az://c/out", protocol="az")
    assert az.batch_limit(layout="file") == _compose.AZURE_MAX_BLOCKS - 1
    assert az.batch_limit(layout="dataset") is None
    assert OutputLocation(url="s3://b/out", protocol="s3").batch_limit(layout="file") is None
    assert OutputLocation(url="/tmp/out", protocol="file").batch_limit(layout="file") is None
    az.check_batch_count(_compose.AZURE_MAX_BLOCKS - 1, layout="file", file_name="x.txt")  # at the limit: fine
    with pytest.raises(OutputError, match=r"50000 planned so far.*at most 49999 mini-batches.*"
                                          r"larger mini_batch_size.*output_layout: dataset"):
        az.check_batch_count(_compose.AZURE_MAX_BLOCKS, layout="file", file_name="x.txt")


@pytest.mark.azure
@pytest.mark.timeout(120)
@pytest.mark.parametrize("layout", ["file", pytest.param("dataset", marks=pytest.mark.slow)])  # dataset: ~8 s
def test_an_azure_one_file_output_with_too_many_batches_stops_while_planning(
        azurite: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    from azure.storage.blob import BlobServiceClient

    container = f"c{uuid.uuid4().hex[:12]}"
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container)
    monkeypatch.setattr(_compose, "AZURE_MAX_BLOCKS", 11)  # at most 10 mini-batches; the job plans 40
    root = tmp_path / "job"
    (root / "data").mkdir(parents=True)
    for i in range(N_FILES):
        (root / "data" / f"f{i:03d}.txt").write_text(f"{i}\n")
    (root / "scripts").mkdir()
    (root / "scripts" / "entry.py").write_text(textwrap.dedent(SCRIPT))
    log = tmp_path / "exec.log"
    spec = {"name": "limit", "entry_script": "entry.py", "source_directory": "scripts",
            "inputs": [{"type": "file", "path": "data"}], "output": f"az://{container}/out",
            "output_layout": layout, "mini_batch_size": 1, "process_count_per_node": 2,
            "output_action": "append_row", "run_invocation_timeout": 30,
            "environment_variables": {"EXEC_LOG": str(log)}}
    (root / "job.yml").write_text(yaml.safe_dump(spec))
    opts = {"az": {"connection_string": azurite.connection_string}}
    if layout == "dataset":  # no limit: the same plan runs to the end
        res = run_job(root / "job.yml", workspace=tmp_path / "ws", progress="quiet", storage_options=opts)
        assert res.status == "Completed"
        return
    with pytest.raises(OutputError) as info:
        run_job(root / "job.yml", workspace=tmp_path / "ws", progress="quiet", storage_options=opts)
    msg = str(info.value)
    assert f"az://{container}/out/parallel_run_step.txt" in msg
    assert "at most 10 mini-batches" in msg and "mini_batch_size" in msg and "output_layout: dataset" in msg
    ran = log.read_text().split() if log.exists() else []
    print(f"\n{len(ran)} mini-batches ran before the stop; {msg}")
    assert len(ran) <= 4, ran  # stopped before the work: at most what the first dispatch had started
    (run,) = RunStore(tmp_path / "ws").list()
    assert run.status == "Failed" and "at most 10 mini-batches" in (run.reason or "")
