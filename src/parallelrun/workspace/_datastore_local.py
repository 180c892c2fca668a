"""The local datastore: a folder on this machine. Files are copied with the standard library; URLs are
absolute paths, and there are no storage options."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .datastore import Datastore, clean_relative, register_backend
from .workspace import Workspace


@register_backend
class LocalDatastore(Datastore):
    """A folder (``Datastore.register_local``); the workspace's default datastore is one."""

    datastore_type = "Local"
    protocol = "file"
    is_local = True

    @classmethod
    def _describe(cls, **arguments: Any) -> tuple[dict[str, Any], dict[str, str | None]]:
        path: str | os.PathLike[str] = arguments["path"]
        root = Path(path).expanduser().resolve()
        if root.exists() and not root.is_dir():
            raise UsageError(f"register_local: {root} is a file; a local datastore is a folder")
        if not root.exists():
            if not arguments.get("create_if_not_exists", True):
                raise UsageError(f"register_local: the folder {root} does not exist")
            root.mkdir(parents=True)
        return {"root": str(root)}, {}

    def _loaded(self, ws: Workspace, definition: dict[str, Any]) -> dict[str, Any]:
        if "relative_to_workspace" in definition:  # the default datastore moves with its workspace
            definition["root"] = str(ws.path / definition["relative_to_workspace"])
        return definition

    def _where(self) -> str:
        return f"root={self.root!r}"

    def url(self, relative: str = "") -> str:
        rel = clean_relative(relative)
        return str(Path(self.root or ".") / rel) if rel else str(self.root)

    def storage_options(self) -> dict[str, dict[str, Any]]:
        return {}

    def _create_root(self) -> None:
        Path(self.root or ".").mkdir(parents=True, exist_ok=True)

    def _put_files(self, pairs: list[tuple[str, str]]) -> None:
        for src, d in pairs:
            dest = Path(self.url(d))
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)

    def _get_files(self, pairs: list[tuple[str, Path]]) -> None:
        for n, target in pairs:
            shutil.copy2(self.url(n), target)

    def _list(self, folder: str) -> list[str]:
        top = Path(self.root or ".")
        base = top / folder if folder else top
        if not base.is_dir():
            return []
        return sorted(p.relative_to(top).as_posix() for p in base.rglob("*") if p.is_file())
