"""The workspace: a folder holding the catalog, the secrets file, registered models, built environments
and the runs of the engine.

    <workspace>/
      parallelrun_workspace.json   marks the folder as a workspace (what ``Workspace.from_config`` finds)
      catalog.sqlite               datastores, datasets, models, environments, compute targets
      secrets.json                 datastore credentials, mode 0600 (only when some were given)
      datastores/default/          the default datastore ``workspaceblobstore``
      models/<name>/<version>/     registered model copies
      envs/<hash>/                 virtual environments built for Environments
      runs/<run_id>/               the engine's run records (``parallelrun.runs.RunStore``)

It is the same folder as the engine's ``--workspace`` (default ``./.parallelrun``), so the CLI and the
Python API see the same runs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..runs import DEFAULT_WORKSPACE
from ._catalog import Catalog
from ._secrets import SecretStore

if TYPE_CHECKING:
    from .compute import ComputeTarget
    from .dataset import FileDataset, TabularDataset
    from .datastore import Datastore
    from .environment import Environment
    from .model import Model

# How the workspace lists and gets its assets (fsspec's registry pattern): each asset module registers
# its functions when imported (the package's __init__ imports them all), so this module imports none of
# them and they can all import Workspace.
_ASSETS: dict[str, Callable[..., Any]] = {}


def register_asset(kind: str, fn: Callable[..., Any]) -> None:
    """``kind``: ``datastores``/``datasets``/``models``/``environments``/``compute_targets`` (a function of
    the workspace returning ``{name: object}``), or ``datastore`` (a function of the workspace and a name)."""
    _ASSETS[kind] = fn


def _asset(kind: str) -> Callable[..., Any]:
    try:
        return _ASSETS[kind]
    except KeyError:
        raise RuntimeError(f"no {kind} registered: import parallelrun.workspace (its __init__ registers "
                           "every asset module)") from None


CONFIG_FILE = "parallelrun_workspace.json"
DEFAULT_DATASTORE = "workspaceblobstore"
_FIND_LIMIT = 64  # parent folders searched by from_config: bounded even on odd mount setups


class Workspace:
    """A workspace folder. ``Workspace(path)`` opens one; ``Workspace.create(path)`` makes one.

    ``catalog`` is its :class:`~parallelrun.workspace._catalog.Catalog`; the asset classes look names up
    with ``catalog.lookup`` (one "not found / did you mean" message for every kind)."""

    def __init__(self, path: str | os.PathLike[str], *, _create: bool = False) -> None:
        p = Path(path).expanduser().resolve()
        if not p.is_dir():
            raise UsageError(
                f"there is no workspace at {p}. Create one with Workspace.create({str(path)!r}), or find an "
                "existing one with Workspace.from_config()."
            )
        self._path = p
        self.catalog = Catalog(p / "catalog.sqlite")
        self._secrets = SecretStore(p)
        if not (p / CONFIG_FILE).is_file() or not self.catalog.path.is_file():
            # Adopt a folder made by the engine alone (``parallelrun run`` creates ./.parallelrun/runs) or
            # an empty one; refuse to scatter workspace files into some unrelated folder given by mistake.
            if not (_create or (p / CONFIG_FILE).is_file() or (p / "runs").is_dir()
                    or p.name == DEFAULT_WORKSPACE or not any(p.iterdir())):
                raise UsageError(f"{p} is not a workspace (it has no {CONFIG_FILE}). Make it one with "
                                 f"Workspace.create({str(path)!r}), or open the right folder.")
            self._initialize()

    # --- creation and discovery -----------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str] = DEFAULT_WORKSPACE, exist_ok: bool = True) -> Workspace:
        """Create the workspace folder (and its parents), or open it when it exists and ``exist_ok``."""
        p = Path(path).expanduser().resolve()
        if (p / CONFIG_FILE).is_file() and not exist_ok:
            raise UsageError(f"a workspace already exists at {p}; open it with Workspace({str(path)!r}) "
                             "or pass exist_ok=True")
        p.mkdir(parents=True, exist_ok=True)
        return cls(p, _create=True)

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None) -> Workspace:
        """Find the workspace whose ``parallelrun_workspace.json`` is in ``path`` (default: the current
        folder) or one of its parents, directly or inside a ``.parallelrun/`` folder.

        ``path`` may also name the config file itself. With no ``path``, ``$PARALLELRUN_WORKSPACE`` (the
        engine's variable) wins when it names a workspace.
        """
        if path is None:
            env = os.environ.get("PARALLELRUN_WORKSPACE")
            if env and (Path(env) / CONFIG_FILE).is_file():
                return cls(env)
            start = Path.cwd()
        else:
            start = Path(path).expanduser().resolve()
            if start.is_file() and start.name == CONFIG_FILE:
                return cls(start.parent)
        searched = []
        folder = start
        for _ in range(_FIND_LIMIT):
            for candidate in (folder, folder / DEFAULT_WORKSPACE):
                if (candidate / CONFIG_FILE).is_file():
                    return cls(candidate)
            searched.append(str(folder))
            if folder.parent == folder:
                break
            folder = folder.parent
        raise UsageError(
            f"no {CONFIG_FILE} found in {start} or its parent folders (nor in a {DEFAULT_WORKSPACE}/ folder "
            f"there). Create a workspace with Workspace.create('{DEFAULT_WORKSPACE}') in your project folder, "
            "or pass the workspace folder: Workspace.from_config(path=...)."
        )

    def _initialize(self) -> None:
        p = self._path
        self.catalog.init()
        (p / "datastores" / "default").mkdir(parents=True, exist_ok=True)
        (p / "runs").mkdir(exist_ok=True)
        if self.catalog.get_named("datastores", DEFAULT_DATASTORE) is None:
            self.catalog.put_named("datastores", DEFAULT_DATASTORE, "Local", {
                "root": str(p / "datastores" / "default"), "relative_to_workspace": "datastores/default"})
        if self.catalog.get_meta("default_datastore") is None:
            self.catalog.set_meta("default_datastore", DEFAULT_DATASTORE)
        config = p / CONFIG_FILE
        if not config.is_file():
            tmp = config.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"workspace": p.name, "format": 1, "created": time.time()}, indent=2) + "\n")
            os.replace(tmp, config)

    # --- properties -----------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def name(self) -> str:
        return self._path.name

    @property
    def runs_dir(self) -> Path:
        """Where the engine keeps run records: ``<workspace>/runs``."""
        return self._path / "runs"

    @property
    def datastores(self) -> dict[str, Datastore]:
        return dict(_asset("datastores")(self))

    @property
    def compute_targets(self) -> dict[str, ComputeTarget]:
        return dict(_asset("compute_targets")(self))

    @property
    def datasets(self) -> dict[str, FileDataset | TabularDataset]:
        """The latest version of every registered dataset, by name."""
        return dict(_asset("datasets")(self))

    @property
    def models(self) -> dict[str, Model]:
        """The latest version of every registered model, by name."""
        return dict(_asset("models")(self))

    @property
    def environments(self) -> dict[str, Environment]:
        """The latest version of every registered environment, by name."""
        return dict(_asset("environments")(self))

    def get_default_datastore(self) -> Datastore:
        datastore: Datastore = _asset("datastore")(self, self.catalog.get_meta("default_datastore")
                                                   or DEFAULT_DATASTORE)
        return datastore

    def set_default_datastore(self, name: str) -> None:
        self.catalog.lookup("datastores", name)  # raises, naming the registered ones, when unknown
        self.catalog.set_meta("default_datastore", name)

    def __repr__(self) -> str:
        return f"Workspace({str(self._path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Workspace) and other._path == self._path

    def __hash__(self) -> int:
        return hash(self._path)
