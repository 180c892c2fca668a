"""Byte storage under an output location: one class per kind (a local folder, an fsspec filesystem).

Names are relative to the location (``.parts/part-00000001.a1.txt``). The local store uses the OS
directly (rename is atomic, files can be appended to); the fsspec store writes objects whole, which is
the atomic step on object stores.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import IO, Any


class LocalStore:
    """A folder on this machine's (or a shared) file system."""

    local = True

    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / name

    def mkdirs(self, name: str = "") -> None:
        self.path(name).mkdir(parents=True, exist_ok=True)

    def put(self, name: str, data: bytes) -> None:
        """Write ``name`` whole: a temporary name per process, then an atomic rename."""
        final = self.path(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def size(self, name: str) -> int | None:
        try:
            return self.path(name).stat().st_size
        except FileNotFoundError:
            return None

    def read(self, name: str, offset: int, length: int) -> bytes:
        with open(self.path(name), "rb") as f:
            f.seek(offset)
            return f.read(length)

    def open_read(self, name: str) -> IO[bytes]:
        return open(self.path(name), "rb")

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix)
        if not base.is_dir():
            return []
        return sorted(f"{prefix}/{p.name}" if prefix else p.name for p in base.iterdir() if p.is_file())

    def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def remove_dir(self, name: str) -> None:
        shutil.rmtree(self.path(name), ignore_errors=True)

    def rename(self, src: str, dst: str) -> None:
        os.replace(self.path(src), self.path(dst))

    def copy(self, src: str, dst: str) -> None:
        """A hard link when the file system allows it (no bytes copied), else a copy; atomic either way."""
        tmp = self.path(f"{dst}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        try:
            os.link(self.path(src), tmp)
        except OSError:
            shutil.copyfile(self.path(src), tmp)
        os.replace(tmp, self.path(dst))

    def free_bytes(self) -> int | None:
        p = self.root
        while not p.exists() and p != p.parent:
            p = p.parent
        return shutil.disk_usage(p).free

    def describe(self) -> str:
        return str(self.root)


class FsspecStore:
    """An fsspec filesystem (Azure Blob through adlfs, S3 through s3fs) rooted at ``root``."""

    local = False

    def __init__(self, fs: Any, root: str, url: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url

    def path(self, name: str) -> str:
        return f"{self.root}/{name}" if name else self.root

    def mkdirs(self, name: str = "") -> None:
        # Object stores have no folders; and s3fs/adlfs "makedirs" would create a missing bucket or container,
        # which is the user's to create (a typo in the URL must be an error, not a new bucket).
        pass

    def put(self, name: str, data: bytes) -> None:
        self.fs.pipe_file(self.path(name), data)

    def size(self, name: str) -> int | None:
        try:
            return int(self.fs.info(self.path(name))["size"])
        except FileNotFoundError:
            return None

    def read(self, name: str, offset: int, length: int) -> bytes:
        if length == 0:
            return b""
        return bytes(self.fs.cat_file(self.path(name), start=offset, end=offset + length))

    def open_read(self, name: str) -> IO[bytes]:
        f: IO[bytes] = self.fs.open(self.path(name), "rb")
        return f

    def list(self, prefix: str) -> list[str]:
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(self.path(prefix))
        except FileNotFoundError:
            return []
        start = len(self.root) + 1
        return sorted(str(p)[start:] for p in found)

    def remove(self, name: str) -> None:
        try:
            self.fs.rm_file(self.path(name))
        except FileNotFoundError:
            pass

    def remove_dir(self, name: str) -> None:
        for n in self.list(name):
            self.remove(n)

    def copy(self, src: str, dst: str) -> None:
        self.fs.copy(self.path(src), self.path(dst))

    def rename(self, src: str, dst: str) -> None:
        # Object stores have no rename: a server-side copy, then delete.
        self.fs.copy(self.path(src), self.path(dst))
        self.remove(src)

    def free_bytes(self) -> int | None:
        return None

    def describe(self) -> str:
        return self.url
