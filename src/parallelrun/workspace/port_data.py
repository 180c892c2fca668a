"""A step run's outputs, as Azure ML SDK v1 hands them out: ``StepRun.get_output_data(name)`` gives a
PortDataReference (the output folder, the datastore and path it belongs to) that downloads in Azure's
layout."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..runs import RunRecord, RunStore
from .datastore import Datastore


def pipeline_data_of(workspace: Any, rec: RunRecord) -> dict[str, dict[str, Any]]:
    """Where each PipelineData of the step run's pipeline lives (``pipeline.json``'s ``data``)."""
    if not rec.parent:
        return {}
    doc = RunStore(workspace.path).runs_dir / rec.parent / "pipeline.json"
    try:
        return dict(json.loads(doc.read_text()).get("data", {}))
    except (OSError, ValueError):
        return {}


class PortDataReference:
    """A step's output folder. ``download(local_path)`` copies it to
    ``<local_path>/<path_on_datastore>`` (Azure's layout) and returns that folder."""

    def __init__(self, workspace: Any, name: str, local_path: str, datastore_name: str | None,
                 path_on_datastore: str | None) -> None:
        self.workspace = workspace
        self.name = name
        self.local_path = local_path
        self.datastore_name = datastore_name
        self.path_on_datastore = path_on_datastore or name

    @property
    def datastore(self) -> Any:
        return Datastore.get(self.workspace, self.datastore_name) if self.datastore_name else None

    def download(self, local_path: str | os.PathLike[str], overwrite: bool = False,
                 show_progress: bool = True) -> str:
        dest = Path(local_path).expanduser().resolve() / self.path_on_datastore
        src = Path(self.local_path)
        if src.is_dir():
            if dest.exists() and not overwrite and any(dest.iterdir()):
                raise UsageError(f"{dest} already exists and is not empty; pass overwrite=True")
            shutil.copytree(src, dest, dirs_exist_ok=True)
            n = sum(1 for p in dest.rglob("*") if p.is_file())
        elif self.datastore is not None:
            n = self.datastore.download(Path(local_path), prefix=self.path_on_datastore, overwrite=overwrite,
                                        show_progress=False)
        else:
            raise UsageError(f"the output {self.name!r} is no longer at {src}")
        if show_progress:
            print(f"Downloaded {n} file(s) of output {self.name!r} to {dest}")
        return str(dest)

    def __repr__(self) -> str:
        return (f"PortDataReference(name={self.name!r}, datastore={self.datastore_name!r}, "
                f"path_on_datastore={self.path_on_datastore!r})")
