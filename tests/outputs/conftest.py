"""Fixtures: ``backend`` runs a test against a local folder, Azurite and moto's S3 server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from output_backends import Backend


def _local(tmp_path: Path) -> Backend:
    return Backend("local", str(tmp_path / "out"))


def _azure(azurite: Any) -> Backend:
    from azure.storage.blob import BlobServiceClient

    container = f"c{uuid.uuid4().hex[:12]}"
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container)
    return Backend("azure", f"az://{container}/out", {"connection_string": azurite.connection_string})


def _s3(moto_s3: Any) -> Backend:
    import boto3

    bucket = f"b{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_s3.endpoint_url, region_name="us-east-1",
                 aws_access_key_id=moto_s3.access_key_id,
                 aws_secret_access_key=moto_s3.secret_access_key).create_bucket(Bucket=bucket)
    opts = {"key": moto_s3.access_key_id, "secret": moto_s3.secret_access_key,
            "client_kwargs": {"endpoint_url": moto_s3.endpoint_url, "region_name": "us-east-1"}}
    return Backend("s3", f"s3://{bucket}/out", opts)


@pytest.fixture(params=["local", "azure", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        yield _local(tmp_path)
    elif request.param == "azure":
        yield _azure(request.getfixturevalue("azurite"))
    else:
        yield _s3(request.getfixturevalue("moto_s3"))


@pytest.fixture
def azure_backend(azurite: Any) -> Backend:
    return _azure(azurite)


@pytest.fixture
def s3_backend(moto_s3: Any) -> Backend:
    return _s3(moto_s3)
