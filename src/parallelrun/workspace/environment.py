"""Environments: the Python packages a step's workers need, built into a virtual environment.

An environment without packages means "the current interpreter" (``python_executable`` returns None).
With packages, ``python_executable(ws)`` builds ``<workspace>/envs/<hash>/`` once (with uv, or venv +
pip where uv is missing: see ``_venv.py``) and reuses it while the hash of the spec is unchanged.

Docker and Spark settings are accepted so Azure code runs unchanged, but the local executor uses neither
containers nor Spark: setting one warns once per environment and section.

``PARALLELRUN_ENVIRONMENT=current`` makes every environment run in the current interpreter (nothing is
built), for Azure code whose pinned packages no longer install on this Python.
"""

from __future__ import annotations

import builtins
import copy
import hashlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml

from ..errors import UsageError
from ._venv import EnvironmentBuildError, build
from .workspace import Workspace, register_asset

__all__ = ["CondaDependencies", "Environment", "EnvironmentBuildError", "DEFAULT_CPU_IMAGE", "DEFAULT_GPU_IMAGE"]

_IGNORED_WARNING = {
    "docker": ("Environment {name!r}: docker settings are ignored because the local executor does not use "
               "containers; workers are local processes, and packages come from the environment's pip "
               "packages (a virtual environment)."),
    "spark": ("Environment {name!r}: spark settings are ignored because parallelrun does not run Spark; "
              "the environment's pip packages are installed into a virtual environment instead."),
}
# Azure's base images (azureml.core.runconfig), kept so code that sets them runs; no image is used here.
DEFAULT_CPU_IMAGE = "mcr.microsoft.com/azureml/base:intelmpi2018.3-ubuntu16.04"
DEFAULT_GPU_IMAGE = "mcr.microsoft.com/azureml/base-gpu:intelmpi2018.3-cuda10.0-cudnn7-ubuntu16.04"
CURRENT_ENV_VAR = "PARALLELRUN_ENVIRONMENT"
# The Azure SDK's own packages are replaced by parallelrun's shim inside workers; installing them is pointless.
_SKIPPED_PREFIXES = ("azureml-", "azureml_", "azureml.")


class CondaDependencies:
    """The packages of an environment. Conda packages are installed with pip under the same names."""

    def __init__(self, pip_packages: list[str] | None = None, conda_packages: list[str] | None = None,
                 python_version: str | None = None, pip_options: list[str] | None = None) -> None:
        self._pip = list(pip_packages or [])
        self._conda = list(conda_packages or [])
        self._pip_options = list(pip_options or [])
        self.python_version = python_version

    @staticmethod
    def create(pip_packages: list[str] | None = None, conda_packages: list[str] | None = None,
               python_version: str | None = None, pin_sdk_version: bool = True,
               pip_indexurl: str | None = None) -> CondaDependencies:
        options = [f"--index-url={pip_indexurl}"] if pip_indexurl else []
        return CondaDependencies(pip_packages, conda_packages, python_version, options)

    @property
    def pip_packages(self) -> list[str]:
        return list(self._pip)

    @property
    def conda_packages(self) -> list[str]:
        return list(self._conda)

    @property
    def pip_options(self) -> list[str]:
        return list(self._pip_options)

    def add_pip_package(self, pip_package: str) -> None:
        if pip_package not in self._pip:
            self._pip.append(pip_package)

    def add_conda_package(self, conda_package: str) -> None:
        if conda_package not in self._conda:
            self._conda.append(conda_package)

    def remove_pip_package(self, pip_package: str) -> None:
        self._pip = [p for p in self._pip if p != pip_package]

    def to_dict(self) -> dict[str, Any]:
        return {"pip_packages": self._pip, "conda_packages": self._conda, "pip_options": self._pip_options,
                "python_version": self.python_version}

    def __repr__(self) -> str:
        return f"CondaDependencies(pip_packages={self._pip!r}, conda_packages={self._conda!r})"


class PythonSection:
    def __init__(self) -> None:
        self.conda_dependencies = CondaDependencies()
        self.user_managed_dependencies = False
        self.interpreter_path: str | None = None


class _IgnoredSection:
    """Settings accepted for compatibility; setting any field warns (once per environment) that it is ignored.
    Unset fields read as None (or their Azure default)."""

    _KIND = ""
    _DEFAULTS: dict[str, Any] = {}

    def __init__(self, owner: Environment) -> None:
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_values", dict(self._DEFAULTS))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._values.get(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._values[name] = value
        self._owner._warn_ignored(self._KIND)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)


class DockerSection(_IgnoredSection):
    """``env.docker``: no containers are used locally."""

    _KIND = "docker"
    _DEFAULTS = {"enabled": False, "base_image": None}


class SparkSection(_IgnoredSection):
    """``env.spark`` (``repositories``, ``packages``, ``precache_packages``): no Spark is used locally."""

    _KIND = "spark"
    _DEFAULTS = {"repositories": [], "packages": [], "precache_packages": True}


class Environment:
    """What the workers run with. ``Environment(name)`` then set ``env.python.conda_dependencies``."""

    def __init__(self, name: str) -> None:
        if not name:
            raise UsageError("Environment(name) needs a name, e.g. Environment('scoring-env')")
        self.name = name
        self.version: int | None = None
        self.python = PythonSection()
        self.environment_variables: dict[str, str] = {}
        self._warned: set[str] = set()
        self.docker = DockerSection(self)
        self.spark = SparkSection(self)

    def _warn_ignored(self, kind: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(_IGNORED_WARNING[kind].format(name=self.name), UserWarning, stacklevel=3)

    def __deepcopy__(self, memo: dict[int, Any]) -> Environment:
        new = Environment.__new__(Environment)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            if k not in ("docker", "spark"):
                new.__dict__[k] = copy.deepcopy(v, memo)
        for kind, section in (("docker", DockerSection), ("spark", SparkSection)):
            new.__dict__[kind] = section(new)
            new.__dict__[kind]._values.update(copy.deepcopy(self.__dict__[kind]._values, memo))
        return new

    # --- constructors ---------------------------------------------------------------------------------
    @staticmethod
    def from_pip_requirements(name: str, file_path: str | os.PathLike[str]) -> Environment:
        """An environment whose pip packages are a requirements file's lines (``-r`` includes inlined;
        option lines such as ``--index-url`` kept as pip options)."""
        packages, options = _read_requirements(Path(file_path).expanduser().resolve(), depth=0)
        env = Environment(name)
        env.python.conda_dependencies = CondaDependencies(packages, pip_options=options)
        return env

    @staticmethod
    def from_conda_specification(name: str, file_path: str | os.PathLike[str]) -> Environment:
        """An environment from a conda ``environment.yml``: its pip section and its conda packages."""
        p = Path(file_path).expanduser().resolve()
        if not p.is_file():
            raise UsageError(f"conda specification {p} does not exist")
        data = yaml.safe_load(p.read_text()) or {}
        conda: list[str] = []
        pip: list[str] = []
        python_version: str | None = None
        for dep in data.get("dependencies") or []:
            if isinstance(dep, dict):
                pip.extend(str(x) for x in dep.get("pip") or [])
            elif str(dep).split("=")[0].strip() == "python":
                python_version = str(dep).partition("=")[2].lstrip("=") or None
            elif str(dep).split("=")[0].strip() != "pip":
                conda.append(str(dep))
        env = Environment(name)
        env.python.conda_dependencies = CondaDependencies(pip, conda, python_version)
        return env

    # --- catalog --------------------------------------------------------------------------------------
    def register(self, workspace: Workspace) -> Environment:
        """Register this definition: a new version when it differs from the latest, else the latest."""
        definition = self._definition()
        with workspace.catalog.connect(write=True) as db:
            row = db.execute("SELECT version, definition FROM environments WHERE name = ? ORDER BY version DESC "
                             "LIMIT 1", (self.name,)).fetchone()
            if row is not None and json.loads(row["definition"]) == definition:
                version = int(row["version"])
            else:
                version = workspace.catalog.add_version(db, "environments", self.name, {"definition": definition})
        return Environment.get(workspace, self.name, version)

    @staticmethod
    def get(workspace: Workspace, name: str, version: int | str | None = None) -> Environment:
        row = workspace.catalog.lookup("environments", name, None if version is None else int(version))
        env = Environment._from_definition(row["definition"])
        env.version = int(row["version"])
        return env

    @staticmethod
    def list(workspace: Workspace) -> dict[str, Environment]:
        return {n: Environment.get(workspace, n) for n in workspace.catalog.names("environments")}

    def _definition(self) -> dict[str, Any]:
        return {"name": self.name, "python": self.python.conda_dependencies.to_dict(),
                "user_managed_dependencies": bool(self.python.user_managed_dependencies),
                "interpreter_path": self.python.interpreter_path,
                "environment_variables": {str(k): str(v) for k, v in self.environment_variables.items()},
                "docker": self.docker.to_dict(), "spark": self.spark.to_dict()}

    @staticmethod
    def _from_definition(d: dict[str, Any]) -> Environment:
        env = Environment(d["name"])
        p = d.get("python") or {}
        env.python.conda_dependencies = CondaDependencies(p.get("pip_packages"), p.get("conda_packages"),
                                                          p.get("python_version"), p.get("pip_options"))
        env.python.user_managed_dependencies = bool(d.get("user_managed_dependencies"))
        env.python.interpreter_path = d.get("interpreter_path")
        env.environment_variables = dict(d.get("environment_variables") or {})
        env.docker._values.update(d.get("docker") or {})  # stored settings: no second warning
        env.spark._values.update(d.get("spark") or {})
        return env

    def __repr__(self) -> str:
        v = f", version={self.version}" if self.version is not None else ""
        return f"Environment(name={self.name!r}{v}, pip_packages={self.packages()!r})"

    # --- building -------------------------------------------------------------------------------------
    def packages(self) -> builtins.list[str]:
        """What gets installed: pip packages, then conda packages (by the same name), without azureml-*."""
        deps = self.python.conda_dependencies
        names = [*deps.pip_packages, *deps.conda_packages]
        return [p for p in names if not p.strip().lower().startswith(_SKIPPED_PREFIXES)]

    def spec_hash(self) -> str:
        """The hash naming the venv: the sorted packages, pip options and the base interpreter."""
        spec = {"packages": sorted(self.packages()), "options": self.python.conda_dependencies.pip_options,
                "python": [sys.executable, list(sys.version_info[:3])]}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def fingerprint(self) -> str:
        """What changes the workers' behaviour (packages, options, variables, interpreter), for step reuse;
        the name, version and ignored docker settings do not count."""
        d = self._definition()
        keep = {k: d[k] for k in ("python", "user_managed_dependencies", "interpreter_path",
                                  "environment_variables")}
        keep["packages"] = sorted(self.packages())
        # ``PARALLELRUN_ENVIRONMENT=current`` runs the step in this interpreter without its packages: not
        # the same workers as the built venv, so a run made one way is not reused for the other.
        if os.environ.get(CURRENT_ENV_VAR, "").strip().lower() == "current":
            keep["current_interpreter"] = sys.executable
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]

    def python_executable(self, ws: Workspace) -> str | None:
        """The interpreter workers should run: None for the current one (no packages, or
        ``user_managed_dependencies`` with no ``interpreter_path``, or ``$PARALLELRUN_ENVIRONMENT=current``);
        else the venv, built on first use."""
        if os.environ.get(CURRENT_ENV_VAR, "").strip().lower() == "current":
            if self.packages():
                warnings.warn(f"Environment {self.name!r}: {CURRENT_ENV_VAR}=current, so its packages "
                              f"({', '.join(self.packages())}) are not installed; workers use {sys.executable}",
                              UserWarning, stacklevel=2)
            return None
        if self.python.user_managed_dependencies:
            return self.python.interpreter_path
        if not self.packages():
            return None
        wanted = self.python.conda_dependencies.python_version
        here = f"{sys.version_info[0]}.{sys.version_info[1]}"
        if wanted and not here.startswith(str(wanted)) and not str(wanted).startswith(here):
            warnings.warn(f"Environment {self.name!r} asks for Python {wanted}; workers use this interpreter's "
                          f"Python {here} (the venv is built on it)", UserWarning, stacklevel=2)
        return str(build(ws.path / "envs", self.spec_hash(), self.packages(),
                         self.python.conda_dependencies.pip_options))


def _read_requirements(path: Path, depth: int) -> tuple[list[str], list[str]]:
    if not path.is_file():
        raise UsageError(f"requirements file {path} does not exist")
    if depth > 10:
        raise UsageError(f"requirements file {path}: -r includes nest more than 10 deep")
    packages, options = [], []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r", "--requirement")):
            target = line[len("--requirement"):] if line.startswith("--requirement") else line[2:]
            more, opts = _read_requirements((path.parent / target.lstrip("= ").strip()).resolve(), depth + 1)
            packages += more
            options += opts
        elif line.startswith("-"):
            options.append(line)
        else:
            packages.append(line)
    return packages, options


register_asset("environments", Environment.list)
