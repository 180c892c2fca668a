"""Credentials of registered datastores, kept apart from the catalog in ``<workspace>/secrets.json``.

The file is created with mode 0600 (owner read/write only) and rewritten atomically (a temporary file
in the same folder, then ``os.replace``) under an exclusive ``flock``, so concurrent registrations never
lose each other's entries. Nothing else in the workspace holds a secret: the catalog stores only that a
credential exists, reprs omit it, and errors raised at the storage boundary pass through ``data.storage_errors.redact``.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FILE_NAME = "secrets.json"


class SecretStore:
    """``{"datastores": {name: {field: value}}}`` in ``secrets.json``."""

    def __init__(self, workspace: Path) -> None:
        self.path = workspace / FILE_NAME
        self._lock_path = workspace / ".secrets.lock"

    def get(self, name: str) -> dict[str, str]:
        return dict(self._read().get("datastores", {}).get(name, {}))

    def set(self, name: str, values: dict[str, str | None]) -> None:
        clean = {k: v for k, v in values.items() if v}
        with self._locked():
            data = self._read()
            stores = data.setdefault("datastores", {})
            if clean:
                stores[name] = clean
            else:
                stores.pop(name, None)
            self._write(data)

    def delete(self, name: str) -> None:
        self.set(name, {})

    def values(self) -> list[str]:
        """Every secret value in the file (for redaction)."""
        return [v for entry in self._read().get("datastores", {}).values() for v in entry.values() if v]

    # --- file handling --------------------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        return json.loads(text) if text.strip() else {}

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{FILE_NAME}.tmp{os.getpid()}")
        # Created 0600 from the start: a umask or a crash must never leave a readable copy behind.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, json.dumps(data, indent=2, sort_keys=True).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for a few milliseconds by any writer
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
