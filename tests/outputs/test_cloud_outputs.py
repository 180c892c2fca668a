"""Output to Azure Blob (Azurite) and S3 (moto) from the CLI, credentials in the environment only.

What a user checks, and what the issue promises: the result is in the store, every row once and in input
order, composed by the store from what the workers wrote (the driver process received and sent only a
few KB of the ~18 MB output: measured by a counting proxy that attributes each connection to the process
that opened it), nothing left under ``.parts/``, and the local disk (job folder, workspace, run folder
with its journal) holds no output bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from store_proxy import CountingProxy

ROW_BYTES = 1024 * 1024  # one row per item, ~1 MB: a batch of 6 is over S3's 5 MB part minimum
ITEMS, BATCH = 18, 6

SCRIPT = f'''
import os

def init():
    pass

def run(mini_batch):
    # One ~1 MB row per input file, starting with the file's name: the rows' order is checkable.
    return [os.path.basename(p) + " " + "x" * {ROW_BYTES} for p in mini_batch]
'''


def _job(root: Path, output: str) -> Path:
    (root / "data").mkdir(parents=True)
    for i in range(ITEMS):
        (root / "data" / f"f{i:03d}.txt").write_text(f"{i}\n")
    (root / "scripts").mkdir()
    (root / "scripts" / "score.py").write_text(textwrap.dedent(SCRIPT))
    spec = {"name": "cloudout", "entry_script": "score.py", "source_directory": "scripts",
            "inputs": [{"type": "file", "path": "data"}], "output": output, "mini_batch_size": BATCH,
            "process_count_per_node": 2, "output_action": "append_row", "run_invocation_timeout": 60}
    job = root / "job.yml"
    job.write_text(yaml.safe_dump(spec, sort_keys=False))
    return job


def _clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any storage credentials, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_STORAGE_", "AWS_"))}
    env.update(extra)
    return env


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture
def azure_store(azurite: Any) -> Iterator[tuple[str, dict[str, str], CountingProxy, Any]]:
    from azure.storage.blob import BlobServiceClient

    proxy = CountingProxy(int(urlparse(azurite.endpoint).port or 0))
    container = f"c{uuid.uuid4().hex[:12]}"
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container)
    conn = azurite.connection_string.replace(azurite.endpoint,
                                             f"http://127.0.0.1:{proxy.port}/{azurite.account_name}")
    env = _clean_env(AZURE_STORAGE_CONNECTION_STRING=conn)

    def read(name: str) -> tuple[bytes, list[str]]:
        cc = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)
        names = sorted(b.name for b in cc.list_blobs())
        return cc.download_blob(name).readall(), names

    try:
        yield f"az://{container}/results/embed", env, proxy, read
    finally:
        proxy.close()


@pytest.fixture
def s3_store(moto_s3: Any) -> Iterator[tuple[str, dict[str, str], CountingProxy, Any]]:
    import boto3

    proxy = CountingProxy(int(urlparse(moto_s3.endpoint_url).port or 0))
    bucket = f"b{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_s3.endpoint_url, region_name="us-east-1",
                          aws_access_key_id=moto_s3.access_key_id, aws_secret_access_key=moto_s3.secret_access_key)
    client.create_bucket(Bucket=bucket)
    # botocore reads the endpoint from AWS_ENDPOINT_URL, as the AWS CLI does: no storage_options needed.
    env = _clean_env(AWS_ACCESS_KEY_ID=moto_s3.access_key_id, AWS_SECRET_ACCESS_KEY=moto_s3.secret_access_key,
                     AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}")

    def read(name: str) -> tuple[bytes, list[str]]:
        listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return client.get_object(Bucket=bucket, Key=name)["Body"].read(), sorted(o["Key"] for o in listed)

    try:
        yield f"s3://{bucket}/results/embed", env, proxy, read
    finally:
        proxy.close()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("store", [pytest.param("azure_store", marks=pytest.mark.azure),
                                   pytest.param("s3_store", marks=pytest.mark.s3)])
def test_cli_output_to_an_object_store_is_composed_there_not_in_the_driver(
        store: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url, env, proxy, read = request.getfixturevalue(store)
    root = tmp_path / "job"
    job = _job(root, url)
    ws = tmp_path / "ws"
    driver = subprocess.Popen([sys.executable, "-m", "parallelrun", "run", str(job), "--workspace", str(ws), "--quiet"],
                              cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = driver.communicate(timeout=200)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(10)
    assert driver.returncode == 0, out + err

    # The result: one object, every row once and in input order, no part left behind.
    data, names = read("results/embed/parallel_run_step.txt")
    lines = data.decode().splitlines()
    assert [ln.split(" ", 1)[0] for ln in lines] == [f"f{i:03d}.txt" for i in range(ITEMS)]
    assert all(len(ln) == len("f000.txt ") + ROW_BYTES for ln in lines)
    assert names == ["results/embed/parallel_run_step.txt"]

    # Composed without passing through the driver: the workers uploaded the ~18 MB, the driver moved a few
    # KB (the probe, listings, the block list or the multipart calls). "unknown" counts against it.
    size = len(data)
    driver_down, driver_up = proxy.moved_by(driver.pid)
    _, workers_up = proxy.moved_by_others(driver.pid)
    print(f"\noutput {size} bytes; driver received {driver_down}, sent {driver_up} over "
          f"{proxy.opened_by(driver.pid)} connections; workers sent {workers_up}")
    assert proxy.opened_by(driver.pid) >= 1, "the driver's own connections were not seen: the check is blind"
    assert workers_up >= size
    assert driver_down < 256 * 1024 and driver_up < 256 * 1024, (driver_down, driver_up)

    # Local disk stays small: no output bytes in the job folder, the workspace or the run folder (journal
    # included), and no local folder named after the URL.
    assert not any(p.name.startswith(("az:", "s3:")) for p in tmp_path.rglob("*"))
    assert _tree_bytes(root) < 64 * 1024, sorted(str(p) for p in root.rglob("*"))
    assert _tree_bytes(ws) < 1024 * 1024, _tree_bytes(ws)


@pytest.mark.s3
@pytest.mark.timeout(120)
def test_csv_headers_on_s3_are_skipped_by_byte_range_without_reading_the_parts(
        moto_s3: Any, tmp_path: Path) -> None:
    """Each CSV part's header length travels in its name: the driver's one-file assembly skips every header
    but the first by byte range (server-side part copies) and reads no part's bytes."""
    import boto3
    import pandas as pd

    from parallelrun.outputs import OutputLocation, format_result

    bucket = f"b{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_s3.endpoint_url, region_name="us-east-1",
                 aws_access_key_id=moto_s3.access_key_id,
                 aws_secret_access_key=moto_s3.secret_access_key).create_bucket(Bucket=bucket)

    def location(endpoint: str) -> OutputLocation:
        opts = {"key": moto_s3.access_key_id, "secret": moto_s3.secret_access_key,
                "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
        return OutputLocation.parse(f"s3://{bucket}/out", storage_options=opts)

    # The workers' side, straight to the store: three parts over S3's 5 MB minimum (server-side copies).
    loc = location(moto_s3.endpoint_url)
    records = []
    with loc.part_writer(worker="w0", fmt="csv") as w:
        for b in range(3):
            frame = pd.DataFrame({"id": [f"b{b}-r{i}" for i in range(6)], "pad": ["x" * ROW_BYTES] * 6})
            result = format_result(frame, action="append_row", fmt="csv", batch_inputs=list(range(6)))
            records.append(w.write(batch=b, attempt=1, result=result))
    assert all(".h7." in r.name for r in records), [r.name for r in records]  # "id,pad\n"

    # The driver's side, through the counting proxy.
    proxy = CountingProxy(int(urlparse(moto_s3.endpoint_url).port or 0))
    try:
        out = location(f"http://127.0.0.1:{proxy.port}").assemble(records, file_name="all.csv", fmt="csv",
                                                                  state_dir=tmp_path / "state")
        down, up = proxy.moved_by(os.getpid())
    finally:
        proxy.close()
    assert out == f"s3://{bucket}/out/all.csv"
    data = loc.store.read("all.csv", 0, loc.store.size("all.csv") or 0)
    lines = data.decode().splitlines()
    assert lines[0] == "id,pad" and [ln.split(",")[0] for ln in lines[1:]] == \
        [f"b{b}-r{i}" for b in range(3) for i in range(6)]
    print(f"\nassembly of {len(data)} bytes: the driver received {down} bytes, sent {up}")
    assert down < 16 * 1024, down  # the multipart calls' answers only; reading a header was 64 KB per part
