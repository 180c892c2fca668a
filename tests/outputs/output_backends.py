"""The output backends every conformance test runs against: a local folder, Azurite, moto's S3 server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from parallelrun.outputs import OutputLocation


@dataclass
class Backend:
    name: str
    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def location(self, sub: str = "") -> OutputLocation:
        return OutputLocation.parse(f"{self.url}/{sub}" if sub else self.url, storage_options=self.storage_options)

    def read(self, loc: OutputLocation, name: str) -> bytes:
        """What a user reading the output would get (through fsspec, outside our code)."""
        import fsspec

        with fsspec.open(loc.join(name), "rb", **(loc.storage_options or {})) as f:
            return bytes(f.read())

    def names(self, loc: OutputLocation) -> list[str]:
        """Every file under the location, relative to it (hidden ones included)."""
        import fsspec

        fs, root = fsspec.core.url_to_fs(loc.url, **(loc.storage_options or {}))
        fs.invalidate_cache()
        try:
            found = fs.find(root)
        except FileNotFoundError:
            return []
        return sorted(str(p)[len(root.rstrip("/")) + 1:] for p in found)
