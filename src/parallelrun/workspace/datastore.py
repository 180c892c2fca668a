"""Datastores: named storage locations (a local folder, an Azure Blob container, an S3 bucket).

``Datastore`` holds what every kind shares (registration in the catalog, paths, upload, download,
listing through fsspec, error translation); each kind is a subclass in its own module, registered by its
``datastore_type`` (fsspec's pattern): ``LocalDatastore`` (``_datastore_local.py``),
``AzureBlobDatastore`` (``_datastore_blob.py``), ``S3Datastore`` (``_datastore_s3.py``). A new kind is one
new module and one line in ``tests/workspace/test_datastore_conformance.py``.

A path inside a datastore is a ``DataPath`` (``data_path.py``). A datastore turns a path inside it into an fsspec URL (``az://container/...``, ``s3://bucket/...`` or an
absolute local path) plus the ``storage_options`` the engine passes to its workers, keyed by protocol as
``parallelrun.data.storage.url_to_fs`` expects. Its credentials live in the workspace's ``secrets.json``
and are read only when ``storage_options()`` is called: a Datastore object never holds them, so they
cannot leak through its repr, its pickle or a run record.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..data.endpoint import EndpointUnreachable, check_endpoint
from ..data.endpoint import advice as endpoint_advice
from ..data.storage import url_to_fs
from ..data.storage_errors import redact
from ..errors import MissingExtraError, ParallelRunError, UsageError
from .data_path import DataPath, clean_relative
from .workspace import Workspace, register_asset

# DataPath and clean_relative are re-exported: they were always imported from here.
__all__ = ["DataPath", "Datastore", "backend", "clean_relative", "endpoint_remedy", "register_backend"]

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,254}$")


_BACKENDS: dict[str, type[Datastore]] = {}


def register_backend(cls: type[Datastore]) -> type[Datastore]:
    """Class decorator: make ``cls`` the implementation of datastores of type ``cls.datastore_type``."""
    _BACKENDS[cls.datastore_type] = cls
    return cls


def backend(datastore_type: str) -> type[Datastore]:
    try:
        return _BACKENDS[datastore_type]
    except KeyError:
        raise UsageError(f"unknown datastore type {datastore_type!r} (known: {', '.join(sorted(_BACKENDS))}); "
                         "was this workspace written by a newer parallelrun?") from None


class Datastore:
    """A registered storage location. ``Datastore(ws, name)`` or ``Datastore.get(ws, name)`` retrieves one
    (an instance of the subclass for its kind).

    ``datastore_type`` is ``"Local"``, ``"AzureBlob"`` or ``"S3"``.
    """

    datastore_type = ""
    protocol = "file"
    is_local = False  # a folder on this machine: written in place, never uploaded
    name: str
    workspace: Workspace
    _definition: dict[str, Any]

    def __new__(cls, workspace: Workspace | None = None, name: str | None = None) -> Datastore:
        if workspace is None:  # unpickling, or _from_row
            return super().__new__(cls)
        return Datastore.get(workspace, name) if name else workspace.get_default_datastore()

    def __init__(self, workspace: Workspace | None = None, name: str | None = None) -> None:
        """Nothing to do: ``__new__`` returned a datastore loaded from the catalog."""

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
        definition, secrets = backend("AzureBlob")._describe(
            container_name=container_name, account_name=account_name, account_key=account_key,
            sas_token=sas_token, endpoint=endpoint, connection_string=connection_string, protocol=protocol)
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
        definition, secrets = backend("S3")._describe(
            bucket_name=bucket_name, access_key_id=access_key_id, secret_access_key=secret_access_key,
            endpoint_url=endpoint_url, region=region)
        ds = Datastore._register(workspace, datastore_name, "S3", definition, secrets, overwrite)
        if create_if_not_exists:
            ds._create_root()
        return ds

    @staticmethod
    def register_local(workspace: Workspace, name: str, path: str | os.PathLike[str], overwrite: bool = False,
                       create_if_not_exists: bool = True) -> Datastore:
        """Register a local folder (absolute or relative to the current folder) as a datastore."""
        definition, secrets = backend("Local")._describe(path=path, create_if_not_exists=create_if_not_exists)
        return Datastore._register(workspace, name, "Local", definition, secrets, overwrite)

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
        ds = object.__new__(backend(row["type"]))
        ds.name, ds.workspace = row["name"], ws
        ds._definition = ds._loaded(ws, dict(row["definition"]))
        return ds

    # --- what each kind provides ----------------------------------------------------------------------
    @classmethod
    def _describe(cls, **arguments: Any) -> tuple[dict[str, Any], dict[str, str | None]]:
        """(the catalog definition, the secrets) of a registration's arguments; raises UsageError."""
        raise NotImplementedError

    def _loaded(self, ws: Workspace, definition: dict[str, Any]) -> dict[str, Any]:
        """The definition as read from the catalog, adjusted to this workspace (default: unchanged)."""
        return definition

    def _where(self) -> str:
        """The repr's description of the location (``bucket='b'``)."""
        raise NotImplementedError

    def storage_options(self) -> dict[str, dict[str, Any]]:
        """The engine's ``storage_options`` for this datastore, keyed by protocol. Holds credentials:
        pass it to ``run_job`` or a filesystem, never print or persist it."""
        raise NotImplementedError

    def _secrets(self) -> dict[str, str]:
        return self.workspace._secrets.get(self.name)

    # --- description ----------------------------------------------------------------------------------

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
        where = self._where()
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
        base = f"{self.protocol}://{self.container_name or self.bucket_name}"
        return f"{base}/{rel}" if rel else base

    def _fs(self) -> tuple[Any, str]:
        """(fsspec filesystem, root path inside it) for this datastore. Fails within seconds when nothing
        answers at its endpoint, rather than after the storage SDK's retries (``data/endpoint.py``)."""
        with self._errors("connecting"):
            options = self.storage_options()
            found = url_to_fs(self.url(""), options)  # first: a missing extra says which one to install
            check_endpoint(self.url(""), options)
            return found

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Translate third-party storage errors into ours, with every secret of the workspace masked."""
        try:
            yield
        except (ParallelRunError, MissingExtraError):
            raise
        except Exception as e:
            if isinstance(e, EndpointUnreachable):  # no request was made: credentials are not in question
                text, advice = str(e), endpoint_advice(endpoint_remedy())
            else:
                text = f"{type(e).__name__}: {e}"
                advice = ("Check the datastore's endpoint and credentials (re-register it with overwrite=True to "
                          "fix them) and that the container or bucket exists.")
            text = redact(text, self.workspace._secrets.values())
            # ``from None``: the original exception's text may quote a credential (a connection string).
            raise UsageError(f"{what} on datastore {self.name!r} ({self.url('')}) failed: {text}. {advice}") \
                from None

    def _create_root(self) -> None:
        fs, root = self._fs()
        with self._errors("creating the container/bucket"):
            if not fs.exists(root):
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
        if todo:
            self._put_files(todo)
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
        if todo:
            self._get_files([(n, target / n) for n in todo])
        if show_progress:
            print(f"Downloaded {len(todo)} file(s) from {self.name}/{pre} to {target}")
        return len(todo)

    def _put_files(self, pairs: list[tuple[str, str]]) -> None:
        """Copy local files to paths inside the datastore: ``[(local path, path on datastore)]``."""
        fs, root = self._fs()
        with self._errors("uploading"):
            fs.put([s for s, _ in pairs], [f"{root}/{d}" for _, d in pairs])

    def _get_files(self, pairs: list[tuple[str, Path]]) -> None:
        """Copy files of the datastore to local paths: ``[(path on datastore, local path)]``."""
        fs, root = self._fs()
        with self._errors("downloading"):
            fs.get([f"{root}/{n}" for n, _ in pairs], [str(t) for _, t in pairs])

    def _list(self, folder: str) -> list[str]:
        """Paths (relative to the datastore root) of every file under ``folder``, sorted."""
        fs, root = self._fs()
        with self._errors("listing"):
            start = f"{root}/{folder}" if folder else root
            found = fs.find(start, detail=True)
        return sorted(k[len(root) + 1:] for k, v in found.items() if v.get("type", "file") == "file")


def endpoint_remedy(then: str = "") -> str:
    """What changes a datastore's endpoint, said after ``data.endpoint.ADVICE`` when nothing answered there;
    ``then``: what to do next (run the pipeline again)."""
    return f"To change them, re-register the datastore with overwrite=True{', then ' + then if then else ''}."


register_asset("datastore", Datastore.get)
register_asset("datastores", lambda ws: {row["name"]: Datastore._from_row(ws, row)
                                         for row in ws.catalog.list_named("datastores")})
