"""Compute targets: where a step's workers run. ``local`` (this machine) always exists; a Ray cluster is
registered with ``ComputeTarget.create(ws, name, RayCompute(address=...))``.

``ComputeTarget.compute`` is the engine's ``compute`` field (``local``, ``ray``, ``ray://host:port``,
``host:port``). There is no AmlCompute: a cluster is a Ray cluster you start yourself.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import UsageError
from ._catalog import not_found
from .workspace import Workspace, register_asset

LOCAL = "local"
_ADDRESS_RE = re.compile(r"^(auto|ray://[\w.\-]+:\d+|[\w.\-]+:\d+)$")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{1,31}$")


@dataclass(frozen=True)
class LocalCompute:
    """This machine: workers are local processes (``process_count_per_node`` of them)."""

    type = "local"

    def engine_compute(self) -> str:
        return "local"


#: RayCompute keyword options, passed to the Ray executor as the job spec's ``ray`` field
RAY_OPTIONS = ("namespace", "runtime_env")


@dataclass(frozen=True)
class RayCompute:
    """A Ray cluster. ``address=None`` starts (or joins) a local Ray; else ``ray://host:port`` (Ray Client),
    ``host:port`` (a head node's GCS address) or ``auto``. Keyword options reach the Ray executor:
    ``namespace`` (the Ray namespace of the job) and ``runtime_env`` (a Ray runtime_env dict: working_dir,
    pip, env_vars, ...; the job's environment_variables are merged into its env_vars and win)."""

    address: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    type = "ray"

    def __init__(self, address: str | None = None, **options: Any) -> None:
        if address is not None and not _ADDRESS_RE.match(address):
            raise UsageError(f"RayCompute address {address!r} is invalid; use ray://host:port, host:port or auto "
                             "(or no address for a local Ray)")
        unknown = sorted(set(options) - set(RAY_OPTIONS))
        if unknown:
            raise UsageError(f"RayCompute got unknown option(s) {', '.join(unknown)}; it takes "
                             f"{', '.join(RAY_OPTIONS)} (e.g. RayCompute(address, namespace='team-a', "
                             "runtime_env={'pip': ['rapidfuzz']}))")
        if "runtime_env" in options and not isinstance(options["runtime_env"], dict):
            raise UsageError(f"RayCompute runtime_env must be a dict such as {{'pip': ['rapidfuzz']}}, not "
                             f"{type(options['runtime_env']).__name__}")
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "options", dict(options))

    def engine_compute(self) -> str:
        return self.address or "ray"

    def engine_fields(self) -> dict[str, Any]:
        """The job spec fields for this target: ``compute`` and, with options, ``ray``."""
        fields: dict[str, Any] = {"compute": self.engine_compute()}
        if self.options:
            fields["ray"] = {k: v for k, v in self.options.items() if v is not None}
        return fields

    def __hash__(self) -> int:
        return hash((self.address, repr(sorted(self.options.items()))))


ComputeConfig = LocalCompute | RayCompute


class ComputeTarget:
    """A named compute target. ``ComputeTarget(ws, name)`` retrieves one; ``ws.compute_targets`` lists them."""

    name: str
    config: ComputeConfig
    workspace: Workspace

    def __init__(self, workspace: Workspace, name: str) -> None:
        targets = ComputeTarget._all(workspace)
        if name not in targets:
            raise not_found("compute_targets", name, list(targets), workspace.path)
        self.__dict__.update(targets[name].__dict__)

    @staticmethod
    def create(workspace: Workspace, name: str, config: ComputeConfig) -> ComputeTarget:
        """Register ``config`` under ``name``; registering the same config again returns it."""
        if not isinstance(config, (LocalCompute, RayCompute)):
            raise UsageError(
                f"ComputeTarget.create takes LocalCompute() or RayCompute(address=...), not "
                f"{type(config).__name__}. There is no AmlCompute here: run on this machine (LocalCompute) or on "
                "a Ray cluster you start (RayCompute)."
            )
        if not _NAME_RE.match(name or ""):
            raise UsageError(f"compute target name {name!r} is invalid: 2-32 letters, digits, '-' or '_', "
                             "starting with a letter (e.g. 'ray-cluster')")
        if name == LOCAL and not isinstance(config, LocalCompute):
            raise UsageError("the name 'local' is reserved for this machine; choose another name")
        definition = _to_json(config)
        row = workspace.catalog.get_named("compute_targets", name)
        if row is not None and row["definition"] != definition:
            raise UsageError(f"a compute target named {name!r} already exists with a different configuration; "
                             f"delete it first (ComputeTarget(ws, {name!r}).delete()) or choose another name")
        if name != LOCAL:
            workspace.catalog.put_named("compute_targets", name, config.type, definition)
        return ComputeTarget._make(workspace, name, config)

    def delete(self) -> None:
        if self.name == LOCAL:
            raise UsageError("the 'local' compute target cannot be deleted")
        self.workspace.catalog.delete_named("compute_targets", self.name)

    def wait_for_completion(self, show_output: bool = False, **_: Any) -> None:
        """Nothing to provision locally; kept so Azure scripts run unchanged."""

    @property
    def type(self) -> str:
        return self.config.type

    @property
    def compute(self) -> str:
        """The engine's ``compute`` field for this target."""
        return self.config.engine_compute()

    def __repr__(self) -> str:
        return f"ComputeTarget(name={self.name!r}, config={self.config!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ComputeTarget) and (other.name, other.config) == (self.name, self.config)

    def __hash__(self) -> int:
        return hash((self.name, self.config))

    @staticmethod
    def _make(ws: Workspace, name: str, config: ComputeConfig) -> ComputeTarget:
        t = ComputeTarget.__new__(ComputeTarget)
        t.workspace, t.name, t.config = ws, name, config
        return t

    @staticmethod
    def _all(ws: Workspace) -> dict[str, ComputeTarget]:
        out = {LOCAL: ComputeTarget._make(ws, LOCAL, LocalCompute())}
        for row in ws.catalog.list_named("compute_targets"):
            out[row["name"]] = ComputeTarget._make(ws, row["name"], _from_json(row["type"], row["definition"]))
        return out


def _to_json(config: ComputeConfig) -> dict[str, Any]:
    return asdict(config) if isinstance(config, RayCompute) else {}


def _from_json(type: str, d: dict[str, Any]) -> ComputeConfig:
    if type == "ray":
        return RayCompute(d.get("address"), **(d.get("options") or {}))
    return LocalCompute()


register_asset("compute_targets", ComputeTarget._all)
