"""The intermediate data that connects pipeline steps, as in Azure ML SDK v1: PipelineData, and its newer
form OutputFileDatasetConfig (with a destination, and read back as a tabular dataset).

A step that lists one in its outputs writes it; a step that lists it in its inputs (or side inputs, or
arguments) reads it, and so runs after the producer. Where the folder is decided when the pipeline is
compiled (``pipeline.py``); nothing here touches storage.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import JobSpecError

_DATA_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PipelineData:
    """An intermediate folder: written by the step that lists it in its outputs, read by the steps that
    list it in their inputs (which therefore run after the producer).

    The folder is ``azureml/<pipeline run id>/<step name>/<name>`` on ``datastore`` (default: the
    workspace's default datastore). ``output_path_on_compute`` and ``output_mode`` are accepted for
    compatibility; the local executor writes straight into the folder.
    """

    def __init__(self, name: str, datastore: Any = None, output_name: str | None = None,
                 output_mode: str = "mount", output_path_on_compute: str | None = None,
                 is_directory: bool | None = None, **_azure_only: Any) -> None:
        if not isinstance(name, str) or not _DATA_NAME_RE.match(name):
            raise JobSpecError([f"name: {name!r} is not a valid PipelineData name; use letters, digits and "
                                "underscores, starting with a letter. Example: PipelineData('scores')"],
                               type(self).__name__)
        self.name = name
        self.datastore = datastore
        self.output_name = output_name or name
        self.output_mode = output_mode
        self.output_path_on_compute = output_path_on_compute
        self.is_directory = is_directory
        self._producer: Any = None  # the step that lists this in its outputs
        self._tabular: dict[str, Any] | None = None

    # Azure's consumption helpers: all of them mean "the folder, read by the consumer".
    def as_dataset(self) -> PipelineData:
        return self

    def as_mount(self) -> PipelineData:
        return self

    def as_download(self, path_on_compute: str | None = None) -> PipelineData:
        return self

    def as_input(self, name: str | None = None) -> PipelineData:
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class _TabularPipelineData:
    """``OutputFileDatasetConfig.read_delimited_files()``: the folder's files read as a TabularDataset."""

    def __init__(self, data: PipelineData, options: dict[str, Any]) -> None:
        self.data = data
        self.options = options
        self.name = data.name

    def as_input(self, name: str | None = None) -> _TabularPipelineData:
        return self


class OutputFileDatasetConfig(PipelineData):
    """Azure's newer intermediate output. ``destination=(datastore, "path/{run-id}/{output-name}")``
    chooses where it is written; ``{run-id}`` is the pipeline run's id."""

    _count = 0

    def __init__(self, name: str | None = None, destination: tuple[Any, str] | None = None,
                 source: str | None = None, partition_format: str | None = None) -> None:
        if name is None:
            OutputFileDatasetConfig._count += 1
            name = f"output_{OutputFileDatasetConfig._count}"
        datastore, path = destination if destination else (None, None)
        self.destination_path: str | None = path
        super().__init__(name, datastore=datastore)

    def read_delimited_files(self, include_path: bool = False, separator: str = ",", header: bool = True,
                             **_azure_only: Any) -> _TabularPipelineData:
        return _TabularPipelineData(self, {"separator": separator, "header": header, "format": None})

    def read_parquet_files(self, **_azure_only: Any) -> _TabularPipelineData:
        return _TabularPipelineData(self, {"format": "parquet"})

    def register_on_complete(self, name: str, description: str | None = None,
                             tags: dict[str, str] | None = None) -> OutputFileDatasetConfig:
        self.register_as = name
        return self
