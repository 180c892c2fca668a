"""``azureml.core.model.Model`` inside a parallelrun worker: ``Model.get_model_path(name, version=None)``
returns the local path of a model the step lists in ``models=`` (``$PARALLELRUN_MODELS``), or of a
model registered in the step's workspace when the step lists none."""

from __future__ import annotations

import os
import shutil
from typing import Any


class Model:
    """A registered model as an entry script sees it."""

    def __init__(self, workspace: Any = None, name: str | None = None, id: str | None = None,
                 version: int | None = None, **_ignored: Any) -> None:
        if id and not name:
            name, _, v = id.partition(":")
            version = int(v) if v else version
        if not name:
            raise TypeError("Model(workspace, name, version=None): name is required")
        self.name = name
        self.version = version
        self.path = Model.get_model_path(name, version)
        self.id = f"{name}:{version}" if version is not None else name

    @staticmethod
    def get_model_path(model_name: str, version: int | None = None, _workspace: Any = None) -> str:
        """The local path (file or folder) of a model, as it was registered."""
        # Imported here: the catalog's modules cost start-up time that scripts not asking for a model skip.
        from parallelrun.workspace.model import Model as _Registered

        return str(_Registered.get_model_path(model_name, version))

    def download(self, target_dir: str = ".", exist_ok: bool = False, **_ignored: Any) -> str:
        target = os.path.join(target_dir, os.path.basename(self.path.rstrip("/")))
        if os.path.exists(target) and not exist_ok:
            raise FileExistsError(f"{target} exists; pass exist_ok=True")
        if os.path.isdir(self.path):
            shutil.copytree(self.path, target, dirs_exist_ok=True)
        else:
            os.makedirs(target_dir, exist_ok=True)
            shutil.copy2(self.path, target)
        return target

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, version={self.version!r})"
