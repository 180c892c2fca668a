"""The S3 datastore: a bucket on S3 or an S3-compatible server (MinIO, moto), through s3fs
(``pip install 'parallelrun[s3]'``). Without keys, s3fs's usual credential chain applies."""

from __future__ import annotations

from typing import Any

from ..data.storage import url_to_fs
from ..errors import UsageError
from .datastore import Datastore, register_backend


@register_backend
class S3Datastore(Datastore):
    """An S3 bucket (``Datastore.register_s3_bucket``)."""

    datastore_type = "S3"
    protocol = "s3"

    @classmethod
    def _describe(cls, **arguments: Any) -> tuple[dict[str, Any], dict[str, str | None]]:
        key, secret = arguments.get("access_key_id"), arguments.get("secret_access_key")
        if bool(key) != bool(secret):
            raise UsageError("register_s3_bucket: give both access_key_id and secret_access_key, or neither")
        definition = {"bucket_name": arguments["bucket_name"], "endpoint_url": arguments.get("endpoint_url"),
                      "region": arguments.get("region"), "credential": "access_key" if key else None}
        return definition, {"access_key_id": key, "secret_access_key": secret}

    def _where(self) -> str:
        return f"bucket={self.bucket_name!r}"

    def storage_options(self) -> dict[str, dict[str, Any]]:
        d, s = self._definition, self._secrets()
        opts: dict[str, Any] = {}
        if s.get("access_key_id"):
            opts["key"], opts["secret"] = s["access_key_id"], s["secret_access_key"]
        client = {k: v for k, v in (("endpoint_url", d.get("endpoint_url")), ("region_name", d.get("region"))) if v}
        if client:
            opts["client_kwargs"] = client
        return {"s3": opts}

    def _create_root(self) -> None:
        fs, root = self._fs()
        with self._errors("creating the container/bucket"):
            if fs.exists(root):
                return
            if self._definition.get("region") in (None, "us-east-1"):
                # s3fs sends LocationConstraint whenever a region is set, which S3 refuses for us-east-1
                # (the default location): create the bucket through a client without the region.
                opts = self.storage_options()
                opts["s3"] = {**opts["s3"], "client_kwargs": {
                    k: v for k, v in opts["s3"].get("client_kwargs", {}).items() if k != "region_name"}}
                fs, root = url_to_fs(self.url(""), opts)
            fs.mkdir(root)
