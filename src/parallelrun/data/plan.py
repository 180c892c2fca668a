"""Planning: turn a job's inputs into a lazy stream of mini-batch descriptors and an input fingerprint.

The fingerprint hashes every input's path, size and version (mtime or etag) as planning streams past
them; resume compares it with the journal's to refuse a run whose inputs changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import JobSpec
from ..errors import DatasetError
from .batches import FileBatch, MiniBatch
from .files import iter_files


class Plan:
    """A lazy plan. Iterate ``batches()`` once; ``fingerprint`` and totals are final afterwards."""

    def __init__(self, spec: JobSpec, base_dir: Path, storage_options: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.base_dir = base_dir
        self.storage_options = storage_options
        self._hash = hashlib.sha256()
        self.files = 0
        self.batch_count = 0
        self.items = 0
        self.nbytes = 0

    @property
    def fingerprint(self) -> str:
        return self._hash.hexdigest()[:16]

    def _files(self) -> Iterator[tuple[str, int]]:
        for inp in self.spec.inputs:
            yield from self._files_of(inp)

    def batches(self) -> Iterator[MiniBatch]:
        gen = self._file_batches() if self.spec.input_type == "file" else self._tabular_batches()
        for b in gen:
            self.batch_count += 1
            self.items += b.n_items
            self.nbytes += b.nbytes
            yield b
        if self.batch_count == 0:
            where = ", ".join(str(p) for i in self.spec.inputs for p in i.paths())
            raise DatasetError(
                f"the dataset is empty: {where} holds no {'file' if self.spec.input_type == 'file' else 'row'}"
                " to process. Check the input paths (they are relative to the job file's folder)."
            )

    def _file_batches(self) -> Iterator[FileBatch]:
        size = self.spec.batch_count
        paths: list[str] = []
        nbytes = 0
        index = 0
        for path, n in self._files():
            paths.append(path)
            nbytes += n
            if len(paths) == size:
                yield FileBatch(index, tuple(paths), nbytes)
                index += 1
                paths, nbytes = [], 0
        if paths:
            yield FileBatch(index, tuple(paths), nbytes)

    def _tabular_batches(self) -> Iterator[MiniBatch]:
        from .tabular import plan_tabular

        index = 0
        size = self.spec.batch_bytes
        for inp in self.spec.inputs:
            options: dict[str, Any] = {"header": inp.header, "encoding": inp.encoding}
            if inp.separator is not None:
                options["separator"] = inp.separator
            files = (p for p, _ in self._files_of(inp))
            for b in plan_tabular(files, size, format=inp.format, options=options, start_index=index,
                                  storage_options=self.storage_options):
                index = b.index + 1
                yield b

    def _files_of(self, inp: Any) -> Iterator[tuple[str, int]]:
        for entry in inp.paths():
            for path, size, version in iter_files(entry, self.base_dir, self.storage_options):
                self._hash.update(f"{path}\0{size}\0{version}\n".encode())
                self.files += 1
                yield path, size
