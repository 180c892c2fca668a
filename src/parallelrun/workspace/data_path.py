"""Paths inside a datastore: ``DataPath`` (``datastore.path("mnist/**/*.png")``, Azure's class) and
``clean_relative``, the one normalisation of such a path (forward slashes, no leading '/' or './', never
'..', so a path stays inside its datastore)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    from .datastore import Datastore


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


def clean_relative(path: str | os.PathLike[str]) -> str:
    """Normalise a path inside a datastore: forward slashes, no leading '/' or './', no '..'."""
    text = str(path).replace("\\", "/").strip()
    parts = [p for p in PurePosixPath(text).parts if p not in ("/", ".")]
    if ".." in parts:
        raise UsageError(f"datastore path {str(path)!r} contains '..'; paths stay inside their datastore")
    return "/".join(parts)
