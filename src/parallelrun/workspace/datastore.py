"""Datastores: named storage locations (a local folder, an Azure Blob container, an S3 bucket).

A datastore turns a path inside it into an fsspec URL (``az://container/...``, ``s3://bucket/...`` or an
absolute local path) plus the ``storage_options`` the engine passes to its workers, keyed by protocol as
``parallelrun.data.storage.url_to_fs`` expects. Its credentials live in the workspace's ``secrets.json``
and are read only when ``storage_options()`` is called: a Datastore object never holds them, so they
cannot leak through its repr, its pickle or a run record.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..data.storage import url_to_fs
from ..errors import MissingExtraError, ParallelRunError, UsageError
from ._secrets import redact
from .workspace import Workspace, register_asset

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,254}$")
_AZURE_DEFAULT_SUFFIX = "core.windows.net"


@dataclass(frozen=True)
class DataPath:
    """A path inside a datastore: ``datastore.path("mnist/")``. Globs (``*``, ``**``) are allowed."""

    datastore: Datastore
    path_on_datastore: str

    @property
    def url(self) -> str:
        """The fsspec URL (or absolute local path) of this path."""
        return self.datastore.url(self.path_on_datastore)

    def storage_options(self) -> dict[str, dict[str, Any]]:
        return self.datastore.storage_options()

    def as_mount(self) -> DataPath:
        """Accepted for Azure compatibility: locally, mounting and downloading are the same thing."""
        return self

    def as_download(self, path_on_compute: str | None = None) -> DataPath:
        return self

    def __str__(self) -> str:
        return f"{self.datastore.name}/{self.path_on_datastore}"

    def __repr__(self) -> str:
        return f"DataPath(datastore={self.datastore.name!r}, path_on_datastore={self.path_on_datastore!r})"


class Datastore:
    """A registered storage location. ``Datastore(ws, name)`` or ``Datastore.get(ws, name)`` retrieves one.

    ``datastore_type`` is ``"Local"``, ``"AzureBlob"`` or ``"S3"``.
    """

    name: str
    datastore_type: str
    workspace: Workspace
    _definition: dict[str, Any]

    def __init__(self, workspace: Workspace, name: str | None = None) -> None:
        found = Datastore.get(workspace, name) if name else workspace.get_default_datastore()
        self.__dict__.update(found.__dict__)

    # --- registration ---------------------------------------------------------------------------------
    @staticmethod
    def register_azure_blob_container(
        workspace: Workspace,
        datastore_name: str,
        container_name: str,
        account_name: str | None,
        account_key: str | None = None,
        sas_token: str | None = None,
        endpoint: str | None = None,
        overwrite: bool = False,
        connection_string: str | None = None,
        create_if_not_exists: bool = False,
        *,
        protocol: str | None = None,
        skip_validation: bool = False,
        blob_cache_timeout: int | None = None,
        grant_workspace_access: bool = False,
        subscription_id: str | None = None,
        resource_group: str | None = None,
    ) -> Datastore:
        """Register an Azure Blob container (adlfs).

        ``endpoint`` is either a full blob endpoint URL (``http://127.0.0.1:10000/devstoreaccount1`` for
        Azurite) or, as in Azure's SDK, the storage suffix (``core.windows.net``, ``core.chinacloudapi.cn``,
        reached over ``protocol``, default https). Credentials: an account key, a SAS token or a connection
        string (or none for a public container). The keyword-only arguments after ``create_if_not_exists``
        are Azure's and accepted so scripts run unchanged; apart from ``protocol`` they have no effect here.
        """
        cs_fields = _parse_connection_string(connection_string) if connection_string else {}
        account = account_name or cs_fields.get("accountname")
        if not account:
            raise UsageError("register_azure_blob_container needs account_name (or a connection string holding "
                             "AccountName=...)")
        blob_endpoint = cs_fields.get("blobendpoint") or _blob_endpoint(account, endpoint, protocol)
        credential = ("connection_string" if connection_string else "account_key" if account_key
                      else "sas_token" if sas_token else None)
        definition = {"container_name": container_name, "account_name": account, "endpoint": blob_endpoint,
                      "credential": credential}
        secrets = {"account_key": account_key, "sas_token": sas_token, "connection_string": connection_string}
        ds = Datastore._register(workspace, datastore_name, "AzureBlob", definition, secrets, overwrite)
        if create_if_not_exists:
            ds._create_root()
        return ds

    @staticmethod
    def register_s3_bucket(
        workspace: Workspace,
        datastore_name: str,
        bucket_name: str,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        overwrite: bool = False,
        create_if_not_exists: bool = False,
    ) -> Datastore:
        """Register an S3 bucket (s3fs). Without keys, s3fs's usual credential chain applies (environment
        variables, ~/.aws). ``endpoint_url`` points at an S3-compatible server (MinIO, moto)."""
        if bool(access_key_id) != bool(secret_access_key):
            raise UsageError("register_s3_bucket: give both access_key_id and secret_access_key, or neither")
        definition = {"bucket_name": bucket_name, "endpoint_url": endpoint_url, "region": region,
                      "credential": "access_key" if access_key_id else None}
        secrets = {"access_key_id": access_key_id, "secret_access_key": secret_access_key}
        ds = Datastore._register(workspace, datastore_name, "S3", definition, secrets, overwrite)
        if create_if_not_exists:
            ds._create_root()
        return ds

    @staticmethod
    def register_local(workspace: Workspace, name: str, path: str | os.PathLike[str], overwrite: bool = False,
                       create_if_not_exists: bool = True) -> Datastore:
        """Register a local folder (absolute or relative to the current folder) as a datastore."""
        root = Path(path).expanduser().resolve()
        if root.exists() and not root.is_dir():
            raise UsageError(f"register_local: {root} is a file; a local datastore is a folder")
        if not root.exists():
            if not create_if_not_exists:
                raise UsageError(f"register_local: the folder {root} does not exist")
            root.mkdir(parents=True)
        return Datastore._register(workspace, name, "Local", {"root": str(root)}, {}, overwrite)

    @staticmethod
    def get(workspace: Workspace, datastore_name: str) -> Datastore:
        return Datastore._from_row(workspace, workspace.catalog.lookup("datastores", datastore_name))

    @staticmethod
    def get_default(workspace: Workspace) -> Datastore:
        return workspace.get_default_datastore()

    def unregister(self) -> None:
        """Remove the datastore from the catalog and its credentials from the secrets file (not the data)."""
        if self.name == self.workspace.catalog.get_meta("default_datastore"):
            raise UsageError(f"{self.name!r} is the default datastore; set another default first "
                             "(ws.set_default_datastore(name))")
        self.workspace.catalog.delete_named("datastores", self.name)
        self.workspace._secrets.delete(self.name)

    @staticmethod
    def _register(ws: Workspace, name: str, type: str, definition: dict[str, Any],
                  secrets: dict[str, str | None], overwrite: bool) -> Datastore:
        if not _NAME_RE.match(name or ""):
            raise UsageError(f"datastore name {name!r} is invalid: use letters, digits, '_' and '-' "
                             "(e.g. 'images_blob')")
        existing = ws.catalog.get_named("datastores", name)
        if existing is not None and not overwrite:
            same = (existing["type"] == type and existing["definition"] == definition
                    and ws._secrets.get(name) == {k: v for k, v in secrets.items() if v})
            if not same:
                raise UsageError(f"a datastore named {name!r} is already registered with a different "
                                 "configuration; pass overwrite=True to replace it, or choose another name")
            return Datastore._from_row(ws, existing)
        # Secrets first: a catalog entry must never point at credentials that are not there yet.
        ws._secrets.set(name, secrets)
        Datastore._put(ws, name, type, definition)
        return Datastore.get(ws, name)

    @staticmethod
    def _put(ws: Workspace, name: str, type: str, definition: dict[str, Any]) -> None:
        ws.catalog.put_named("datastores", name, type, definition)

    @staticmethod
    def _from_row(ws: Workspace, row: dict[str, Any]) -> Datastore:
        ds = Datastore.__new__(Datastore)
        ds.name, ds.datastore_type, ds.workspace = row["name"], row["type"], ws
        ds._definition = dict(row["definition"])
        if "relative_to_workspace" in ds._definition:  # the default datastore moves with its workspace
            ds._definition["root"] = str(ws.path / ds._definition["relative_to_workspace"])
        return ds

    # --- description ----------------------------------------------------------------------------------
    @property
    def protocol(self) -> str:
        return {"AzureBlob": "az", "S3": "s3"}.get(self.datastore_type, "file")

    @property
    def container_name(self) -> str | None:
        return self._definition.get("container_name")

    @property
    def account_name(self) -> str | None:
        return self._definition.get("account_name")

    @property
    def bucket_name(self) -> str | None:
        return self._definition.get("bucket_name")

    @property
    def endpoint(self) -> str | None:
        return self._definition.get("endpoint") or self._definition.get("endpoint_url")

    @property
    def root(self) -> str | None:
        """The folder of a local datastore."""
        return self._definition.get("root")

    def __repr__(self) -> str:
        where = {"AzureBlob": f"container={self.container_name!r}, account={self.account_name!r}",
                 "S3": f"bucket={self.bucket_name!r}", "Local": f"root={self.root!r}"}.get(self.datastore_type, "")
        if self.endpoint:
            where += f", endpoint={self.endpoint!r}"
        cred = self._definition.get("credential")
        return (f"Datastore(name={self.name!r}, type={self.datastore_type!r}, {where}"
                + (f", credential={cred}: stored in secrets.json" if cred else "") + ")")

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Datastore) and (other.workspace, other.name) == (self.workspace, self.name)

    def __hash__(self) -> int:
        return hash((self.workspace, self.name))

    # --- paths and credentials ------------------------------------------------------------------------
    def path(self, path: str = "", data_reference_name: str | None = None) -> DataPath:
        """A path inside this datastore (``"mnist/"``, ``"images/**/*.png"``)."""
        return DataPath(self, clean_relative(path))

    def url(self, relative: str = "") -> str:
        """The fsspec URL of ``relative`` (``az://container/rel``, ``s3://bucket/rel``) or, for a local
        datastore, its absolute path."""
        rel = clean_relative(relative)
        if self.datastore_type == "Local":
            return str(Path(self.root or ".") / rel) if rel else str(self.root)
        base = f"{self.protocol}://{self.container_name or self.bucket_name}"
        return f"{base}/{rel}" if rel else base

    def storage_options(self) -> dict[str, dict[str, Any]]:
        """The engine's ``storage_options`` for this datastore, keyed by protocol. Holds credentials:
        pass it to ``run_job`` or a filesystem, never print or persist it."""
        d, s = self._definition, self.workspace._secrets.get(self.name)
        if self.datastore_type == "AzureBlob":
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
        if self.datastore_type == "S3":
            opts = {}
            if s.get("access_key_id"):
                opts["key"], opts["secret"] = s["access_key_id"], s["secret_access_key"]
            client = {k: v for k, v in (("endpoint_url", d.get("endpoint_url")), ("region_name", d.get("region")))
                      if v}
            if client:
                opts["client_kwargs"] = client
            return {"s3": opts}
        return {}

    def _fs(self) -> tuple[Any, str]:
        """(fsspec filesystem, root path inside it) for this datastore."""
        with self._errors("connecting"):
            return url_to_fs(self.url(""), self.storage_options())

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Translate third-party storage errors into ours, with every secret of the workspace masked."""
        try:
            yield
        except (ParallelRunError, MissingExtraError):
            raise
        except Exception as e:
            text = redact(f"{type(e).__name__}: {e}", self.workspace._secrets.values())
            where = self.url("") if self.datastore_type != "Local" else self.root
            # ``from None``: the original exception's text may quote a credential (a connection string).
            raise UsageError(f"{what} on datastore {self.name!r} ({where}) failed: {text}. Check the "
                             "datastore's endpoint and credentials (re-register it with overwrite=True to fix "
                             "them) and that the container or bucket exists.") from None

    def _create_root(self) -> None:
        fs, root = self._fs()
        with self._errors("creating the container/bucket"):
            if fs.exists(root):
                return
            if self.datastore_type == "S3" and self._definition.get("region") in (None, "us-east-1"):
                # s3fs sends LocationConstraint whenever a region is set, which S3 refuses for us-east-1
                # (the default location): create the bucket through a client without the region.
                opts = self.storage_options()
                opts["s3"] = {**opts["s3"], "client_kwargs": {
                    k: v for k, v in opts["s3"].get("client_kwargs", {}).items() if k != "region_name"}}
                fs, root = url_to_fs(self.url(""), opts)
            fs.mkdir(root)

    # --- transfer -------------------------------------------------------------------------------------
    def upload(self, src_dir: str | os.PathLike[str], target_path: str | None = None, overwrite: bool = False,
               show_progress: bool = True) -> DataPath:
        """Upload the files under ``src_dir`` (recursively) to ``target_path`` in this datastore.

        Files that already exist are skipped unless ``overwrite``. Returns the DataPath of ``target_path``.
        """
        src = Path(src_dir).expanduser().resolve()
        if not src.is_dir():
            raise UsageError(f"upload: {src} is not a folder; use upload_files([...]) for single files")
        files = [(str(p), p.relative_to(src).as_posix()) for p in sorted(src.rglob("*")) if p.is_file()]
        return self._upload(files, target_path, overwrite, show_progress)

    def upload_files(self, files: Iterable[str | os.PathLike[str]], target_path: str | None = None,
                     overwrite: bool = False, show_progress: bool = True,
                     relative_root: str | None = None) -> DataPath:
        """Upload the given files to ``target_path``: by file name, or by their path relative to
        ``relative_root`` when given."""
        pairs = []
        for f in files:
            p = Path(f).expanduser().resolve()
            if not p.is_file():
                raise UsageError(f"upload_files: {p} is not a file")
            rel = p.relative_to(Path(relative_root).resolve()).as_posix() if relative_root else p.name
            pairs.append((str(p), rel))
        return self._upload(pairs, target_path, overwrite, show_progress)

    def _upload(self, files: list[tuple[str, str]], target_path: str | None, overwrite: bool,
                show_progress: bool) -> DataPath:
        target = clean_relative(target_path or "")
        dests = [f"{target}/{rel}" if target else rel for _, rel in files]
        existing = set() if overwrite else set(self._list(target))
        todo = [(src, d) for (src, _), d in zip(files, dests, strict=True) if d not in existing]
        if self.datastore_type == "Local":
            for src, d in todo:
                dest = Path(self.url(d))
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)
        elif todo:
            fs, root = self._fs()
            with self._errors("uploading"):
                fs.put([s for s, _ in todo], [f"{root}/{d}" for _, d in todo])
        if show_progress:
            print(f"Uploaded {len(todo)} file(s) to {self.name}/{target}"
                  + (f", skipped {len(files) - len(todo)} already there (overwrite=False)"
                     if len(todo) < len(files) else ""))
        return self.path(target)

    def download(self, target_path: str | os.PathLike[str], prefix: str | None = None, overwrite: bool = False,
                 show_progress: bool = True) -> int:
        """Download the files whose path starts with ``prefix`` (all files when None) into ``target_path``,
        keeping their paths inside the datastore. Existing local files are kept unless ``overwrite``.
        Returns the number of files downloaded."""
        target = Path(target_path).expanduser().resolve()
        pre = (prefix or "").lstrip("/")
        folder = pre.rsplit("/", 1)[0] if "/" in pre else ""
        names = [n for n in self._list(clean_relative(folder)) if n.startswith(pre)]
        todo = [n for n in names if overwrite or not (target / n).exists()]
        for n in todo:
            (target / n).parent.mkdir(parents=True, exist_ok=True)
        if self.datastore_type == "Local":
            for n in todo:
                shutil.copy2(self.url(n), target / n)
        elif todo:
            fs, root = self._fs()
            with self._errors("downloading"):
                fs.get([f"{root}/{n}" for n in todo], [str(target / n) for n in todo])
        if show_progress:
            print(f"Downloaded {len(todo)} file(s) from {self.name}/{pre} to {target}")
        return len(todo)

    def _list(self, folder: str) -> list[str]:
        """Paths (relative to the datastore root) of every file under ``folder``, sorted."""
        if self.datastore_type == "Local":
            top = Path(self.root or ".")
            base = top / folder if folder else top
            if not base.is_dir():
                return []
            return sorted(p.relative_to(top).as_posix() for p in base.rglob("*") if p.is_file())
        fs, root = self._fs()
        with self._errors("listing"):
            start = f"{root}/{folder}" if folder else root
            found = fs.find(start, detail=True)
        return sorted(k[len(root) + 1:] for k, v in found.items() if v.get("type", "file") == "file")


def clean_relative(path: str | os.PathLike[str]) -> str:
    """Normalise a path inside a datastore: forward slashes, no leading '/' or './', no '..'."""
    text = str(path).replace("\\", "/").strip()
    parts = [p for p in PurePosixPath(text).parts if p not in ("/", ".")]
    if ".." in parts:
        raise UsageError(f"datastore path {str(path)!r} contains '..'; paths stay inside their datastore")
    return "/".join(parts)


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


register_asset("datastore", Datastore.get)
register_asset("datastores", lambda ws: {row["name"]: Datastore._from_row(ws, row)
                                         for row in ws.catalog.list_named("datastores")})
