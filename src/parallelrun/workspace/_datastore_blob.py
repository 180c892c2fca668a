"""The Azure Blob datastore: a container, through adlfs (``pip install 'parallelrun[azure]'``).

Credentials: an account key, a SAS token or a connection string (or none, for a public container). A
non-default endpoint (Azurite, sovereign clouds) is reachable through adlfs only with a connection
string, so one is built from the parts when needed.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from .datastore import Datastore, register_backend

_AZURE_DEFAULT_SUFFIX = "core.windows.net"


@register_backend
class AzureBlobDatastore(Datastore):
    """An Azure Blob container (``Datastore.register_azure_blob_container``)."""

    datastore_type = "AzureBlob"
    protocol = "az"

    @classmethod
    def _describe(cls, **arguments: Any) -> tuple[dict[str, Any], dict[str, str | None]]:
        connection_string = arguments.get("connection_string")
        cs_fields = _parse_connection_string(connection_string) if connection_string else {}
        account = arguments.get("account_name") or cs_fields.get("accountname")
        if not account:
            raise UsageError("register_azure_blob_container needs account_name (or a connection string holding "
                             "AccountName=...)")
        blob_endpoint = cs_fields.get("blobendpoint") or _blob_endpoint(account, arguments.get("endpoint"),
                                                                        arguments.get("protocol"))
        account_key, sas_token = arguments.get("account_key"), arguments.get("sas_token")
        credential = ("connection_string" if connection_string else "account_key" if account_key
                      else "sas_token" if sas_token else None)
        definition = {"container_name": arguments["container_name"], "account_name": account,
                      "endpoint": blob_endpoint, "credential": credential}
        return definition, {"account_key": account_key, "sas_token": sas_token,
                            "connection_string": connection_string}

    def _where(self) -> str:
        return f"container={self.container_name!r}, account={self.account_name!r}"

    def storage_options(self) -> dict[str, dict[str, Any]]:
        d, s = self._definition, self._secrets()
        opts: dict[str, Any] = {"account_name": d["account_name"]}
        endpoint = d.get("endpoint")
        if s.get("connection_string"):
            opts["connection_string"] = s["connection_string"]
        elif endpoint:
            # adlfs reaches a non-default endpoint (Azurite, sovereign clouds) only via a connection string.
            scheme = endpoint.split("://", 1)[0]
            cs = f"DefaultEndpointsProtocol={scheme};AccountName={d['account_name']};BlobEndpoint={endpoint};"
            if s.get("account_key"):
                cs += f"AccountKey={s['account_key']};"
            elif s.get("sas_token"):
                cs += f"SharedAccessSignature={s['sas_token'].lstrip('?')};"
            opts["connection_string"] = cs
        elif s.get("account_key"):
            opts["account_key"] = s["account_key"]
        elif s.get("sas_token"):
            opts["sas_token"] = s["sas_token"]
        else:
            opts["anon"] = True
        return {"az": opts}


def _parse_connection_string(cs: str) -> dict[str, str]:
    """The non-secret fields of an Azure connection string (lower-cased keys), for the catalog."""
    fields = {}
    for part in cs.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip().lower() in ("accountname", "blobendpoint"):
            fields[key.strip().lower()] = value.strip()
    return fields


def _blob_endpoint(account: str, endpoint: str | None, protocol: str | None) -> str | None:
    if (not endpoint or endpoint == _AZURE_DEFAULT_SUFFIX) and protocol in (None, "https"):
        return None
    if endpoint and "://" in endpoint:
        return endpoint.rstrip("/")
    return f"{protocol or 'https'}://{account}.blob.{endpoint or _AZURE_DEFAULT_SUFFIX}"
