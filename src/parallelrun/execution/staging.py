"""A worker's remote inputs: downloading a file batch's ``az://``, ``s3://`` ... files to local scratch space,
one batch ahead of the one running, and removing them once it has run.

The driver sends a worker its next batch while the current one runs; ``InputStage.offer`` hands it to a
background thread that downloads it, and ``local_paths`` then finds its files already local. At most one
batch is fetched ahead of the running one, so the disk holds at most two batches' inputs per worker.
Local paths are never copied. Runs inside the worker process: imports nothing the worker did not already
import (the storage layer only when a batch names a URL).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..data.batches import FileBatch, MiniBatch


def has_remote(batch: FileBatch) -> bool:
    """Whether the batch names a remote file (a URL) that must be downloaded before run() sees it."""
    # Asked twice per mini-batch (offer, process): a URL has "://", so local paths skip the regex and the
    # import; one search of the joined paths costs a fifth of a generator over them.
    if "://" not in "\0".join(batch.paths):
        return False
    from ..data.storage import is_url

    return any(is_url(p) for p in batch.paths)


class InputStage:
    """One worker's scratch space for downloaded inputs and its prefetch of the next batch's files.
    Thread-safe: ``offer`` is called by the inbox reader (or a Ray actor's other thread), the rest by the
    thread running the batches."""

    def __init__(self, agent_name: str, scratch_dir: str | None, storage_options: dict[str, Any]) -> None:
        self._agent_name = agent_name
        self._scratch_dir = scratch_dir
        self._storage_options = storage_options
        self._tmp_dir: Path | None = None
        self._tmp_lock = threading.Lock()  # the prefetch thread and the main thread may both download
        self._prefetch = _Prefetcher(self._download)

    def offer(self, batch: FileBatch, attempt: int) -> None:
        """A remote batch this worker will run soon: start downloading its files now."""
        self._prefetch.offer(batch, attempt)

    def local_paths(self, batch: FileBatch, attempt: int) -> list[str]:
        """The remote batch's files, local: from a download already started, or downloaded now."""
        return self._prefetch.take(batch, attempt)

    def release(self, batch: MiniBatch, attempt: int) -> None:
        """Remove this batch's downloads only: the next batch's may already be arriving next to them."""
        shutil.rmtree(self._batch_dir(batch, attempt), ignore_errors=True)

    def close(self) -> None:
        """Stop prefetching and remove the scratch space."""
        self._prefetch.close()
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)

    @property
    def _tmp(self) -> Path:
        """Scratch space for downloaded inputs, made on first use: under the run's folder when there is
        one (the driver removes ``<run>/tmp`` at the end, so a killed worker leaks nothing), else a temp dir."""
        with self._tmp_lock:
            if self._tmp_dir is None:
                if self._scratch_dir:
                    self._tmp_dir = Path(self._scratch_dir) / self._agent_name
                    self._tmp_dir.mkdir(parents=True, exist_ok=True)
                else:
                    self._tmp_dir = Path(tempfile.mkdtemp(prefix=f"parallelrun-{self._agent_name}-"))
            return self._tmp_dir

    def _batch_dir(self, batch: MiniBatch, attempt: int) -> Path:
        return self._tmp / f"batch{batch.index}-{attempt}"

    def _download(self, batch: FileBatch, attempt: int) -> list[str]:
        from ..data.storage import is_url, url_to_fs

        local = []
        dest = self._batch_dir(batch, attempt)
        dest.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(batch.paths):
            if not is_url(p):
                local.append(p)
                continue
            fs, inner = url_to_fs(p, self._storage_options)
            # Keep the file name (scripts often report it) but avoid collisions between folders.
            target = dest / f"{i:05d}" / os.path.basename(inner)
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get(inner, str(target))
            local.append(str(target))
        return local


class _Prefetcher:
    """Downloads the remote inputs of offered batches on one background thread, in the order offered, at
    most ``ahead`` batches ahead of those taken. Thread-safe: ``offer`` is called by the inbox reader,
    ``take`` by the thread running the batches."""

    def __init__(self, fetch: Any, ahead: int = 1) -> None:
        self._fetch = fetch  # (batch, attempt) -> list of local paths
        self._ahead = ahead
        self._lock = threading.Lock()
        self._offered: deque[tuple[FileBatch, int]] = deque()
        self._fetching: dict[tuple[int, int], Future[list[str]]] = {}
        self._pool: ThreadPoolExecutor | None = None
        # Taken before they were offered (on Ray, ``offer`` and ``run`` reach the actor on two threads, in
        # either order): their offer comes late and must not download them again, nor hold the slot.
        self._taken_early: set[tuple[int, int]] = set()

    def offer(self, batch: FileBatch, attempt: int) -> None:
        with self._lock:
            key = (batch.index, attempt)
            if key in self._taken_early:
                self._taken_early.discard(key)
                return
            self._offered.append((batch, attempt))
            self._pump()

    def take(self, batch: FileBatch, attempt: int) -> list[str]:
        """The batch's local paths: from a download already started, or downloaded now."""
        key = (batch.index, attempt)
        with self._lock:
            fut = self._fetching.pop(key, None)
            if fut is None:
                before = len(self._offered)
                self._offered = deque(x for x in self._offered if (x[0].index, x[1]) != key)
                if len(self._offered) == before:
                    self._taken_early.add(key)
            self._pump()  # this batch is taken: the next one may start downloading while it runs
        return fut.result() if fut is not None else self._fetch(batch, attempt)

    def _pump(self) -> None:
        while self._offered and len(self._fetching) < self._ahead:
            batch, attempt = self._offered.popleft()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="parallelrun-prefetch")
            self._fetching[(batch.index, attempt)] = self._pool.submit(self._fetch, batch, attempt)

    def close(self) -> None:
        with self._lock:
            self._offered.clear()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
