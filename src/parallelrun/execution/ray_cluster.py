"""The cluster side of the Ray backend: connecting, a private instance's lifecycle, placement, runtime_env.

The Ray executor (``ray_executor.py``) owns the transport (actors, calls, results); this module owns
everything about the cluster those actors run on:

- **Connecting** (``compute``): ``ray`` starts a private local instance sized for the job unless
  ``RAY_ADDRESS`` is set; ``auto`` joins a running cluster; ``host:port`` and ``ray://host:port`` connect
  there, failing fast (exit code 2) when nothing answers. Ray (2.5x-2.60) turns token authentication on
  for a cluster started while ``~/.ray/auth_token`` exists, but a driver that connects by explicit address
  only sends the token when ``RAY_AUTH_MODE=token``; so when that variable is unset, a token is there and
  the GCS refuses a call without it, token mode is switched on for this process.
- **A private instance** lives in its own temporary folder, recorded in the run folder
  (``ray_instance.json``), and is watched by a small watchdog process in its own session: if the driver
  dies without stopping the instance (kill -9, OOM), the watchdog stops every process that has that
  folder in its command line or among its open files (Ray's own reaper misses the agents that the raylet
  starts), then removes the folder. Processes of other Ray instances on the machine are never touched.
- **Placement**: each actor reserves ``cpus_per_process``, ``gpus_per_process``, ``memory_per_process``
  and the job's custom ``resources``. Before any actor is created the request is checked against the
  alive nodes' totals, so a job that no node can ever host fails at once naming the missing resource and
  what the cluster has, instead of waiting forever in Ray's queue.
- **runtime_env**: the job-level runtime_env (``ray.init``) carries the user's ``ray.runtime_env``
  (RayCompute's option) and, for a remote cluster through Ray Client, the uploaded job folder and
  parallelrun itself; each actor's runtime_env adds the job's ``environment_variables`` (they win over
  ``runtime_env.env_vars``), parallelrun's source folder on ``PYTHONPATH`` and an Environment's interpreter.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import JobSpecError, MissingExtraError, UsageError

if TYPE_CHECKING:
    from ..config import JobSpec
    from .worker import WorkerConfig

#: set to 1 (or 0) to force (or forbid) shipping the job folder and parallelrun through runtime_env
UPLOAD_ENV = "PARALLELRUN_RAY_UPLOAD"
#: in the run folder: the private Ray instance of the current (or last) driver
INSTANCE_FILE = "ray_instance.json"
#: seconds between two looks of the watchdog at the driver
WATCH_EVERY = 0.5
#: runtime_env keys that name local folders Ray uploads; only the job-level runtime_env uploads them
_UPLOADED_KEYS = ("working_dir", "py_modules", "excludes")


def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise MissingExtraError("ray", "ray", "the Ray backend") from e
    return ray


# --- placement -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    """What one worker (actor) reserves on its node."""

    cpus: float
    gpus: float = 0.0
    memory: int = 0  # bytes; 0 = no reservation
    resources: tuple[tuple[str, float], ...] = ()

    @staticmethod
    def of(spec: JobSpec) -> Placement:
        memory = 0
        if spec.memory_per_process is not None:
            from ..data.tabular import parse_size

            memory = parse_size(spec.memory_per_process)
        return Placement(spec.cpus_per_process, spec.gpus_per_process, memory,
                         tuple(sorted(spec.resources.items())))

    def actor_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.memory:
            opts["memory"] = self.memory
        if self.resources:
            opts["resources"] = dict(self.resources)
        return opts

    def demand(self, actors: int) -> dict[str, float]:
        """Ray resource name -> amount, for ``actors`` workers on one node."""
        need = {"CPU": self.cpus * actors, "GPU": self.gpus * actors, "memory": float(self.memory * actors),
                **{k: v * actors for k, v in self.resources}}
        return {k: v for k, v in need.items() if v > 0}

    def missing(self, node: dict[str, Any], actors: int) -> list[str]:
        """The resources ``node`` (a ``ray.nodes()`` entry) lacks for ``actors`` workers; [] if they fit."""
        have = node.get("Resources", {})
        return [k for k, v in self.demand(actors).items() if have.get(k, 0) + 1e-9 < v]

    def fits(self, node: dict[str, Any], actors: int) -> bool:
        return not self.missing(node, actors)

    def describe(self, actors: int) -> str:
        return ", ".join(f"{_name(k)} {_amount(k, v)}" for k, v in self.demand(actors).items())


def _name(resource: str) -> str:
    return {"CPU": "CPU", "GPU": "GPU", "memory": "memory"}.get(resource, repr(resource))


def _amount(resource: str, value: float) -> str:
    return f"{value / 2**30:.1f} GiB" if resource in ("memory", "object_store_memory") else f"{value:g}"


def node_summary(node: dict[str, Any]) -> str:
    """``127.0.0.1: CPU 2, GPU 0, memory 15.4 GiB, 'accelerator_type:T4' 1`` (no Ray-internal entries)."""
    res = node.get("Resources", {})
    keys = ["CPU", "GPU", "memory", *sorted(k for k in res if k not in ("CPU", "GPU", "memory", "object_store_memory")
                                            and not k.startswith("node:"))]
    return f"{node.get('NodeManagerAddress', '?')}: " + ", ".join(f"{_name(k)} {_amount(k, res.get(k, 0))}"
                                                                 for k in keys)


def alive_nodes(ray: Any) -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def pick_nodes(ray: Any, spec: JobSpec, placement: Placement, where: str) -> list[str]:
    """``node_count`` alive nodes with room for ``process_count_per_node`` workers, the driver's first.

    Raises JobSpecError (exit code 2) when the cluster has too few nodes, or too few that can ever host
    the workers (judged on the nodes' totals: resources held by other jobs are waited for, as Ray does).
    """
    alive = alive_nodes(ray)
    if len(alive) < spec.node_count:
        raise JobSpecError([
            f"node_count: {spec.node_count} asks for {spec.node_count} nodes "
            f"({spec.node_count} x process_count_per_node {spec.process_count_per_node} workers), but "
            f"the Ray cluster at {where} has {len(alive)} alive node(s). Add nodes or lower node_count."
        ], source="job spec (Ray backend)")
    per_node = spec.process_count_per_node
    fitting = [n for n in alive if placement.fits(n, per_node)]
    if len(fitting) < spec.node_count:
        sizes = "; ".join(node_summary(n) for n in alive)
        if not any(placement.fits(n, 1) for n in alive):
            lacking = sorted({k for n in alive for k in placement.missing(n, 1)})
            absent = [k for k in lacking if not any(n.get("Resources", {}).get(k) for n in alive)]
            names = [_name(k) for k in (absent or lacking)]
            what = " and ".join(names) + (" are" if len(names) > 1 else " is")
            raise JobSpecError([
                f"no node of the Ray cluster at {where} can host even one worker: each asks for "
                f"{placement.describe(1)}, and {what} " + ("on no node" if absent else "short on every node")
                + f" (nodes: {sizes}). Lower cpus_per_process / gpus_per_process / memory_per_process, drop "
                "the resources the cluster lacks, or add a node that has them."
            ], source="job spec (Ray backend)")
        raise JobSpecError([
            f"node_count: {spec.node_count} with process_count_per_node: {per_node} needs "
            f"{spec.node_count} node(s) with room for {placement.describe(per_node)}; the Ray cluster at "
            f"{where} has {len(fitting)} such node(s) (nodes: {sizes}). Lower process_count_per_node or "
            "cpus_per_process (e.g. 0.5), or add nodes."
        ], source="job spec (Ray backend)")
    try:
        mine = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - Ray Client has no local node
        mine = None
    fitting.sort(key=lambda n: (n["NodeID"] != mine, -n["Resources"].get("CPU", 0), n["NodeID"]))
    return [n["NodeID"] for n in fitting[: spec.node_count]]


# --- connection ------------------------------------------------------------------------------------------
class RayCluster:
    """The executor's connection to Ray: connect, placement, runtime_env, disconnect (and the private
    instance's life when ``compute: ray`` has no address)."""

    def __init__(self, ray: Any, cfg: WorkerConfig, spec: JobSpec) -> None:
        self.ray = ray
        self.cfg = cfg
        self.spec = spec
        self.address = address_of(spec.compute)
        self.upload = wants_upload(self.address)
        self.placement = Placement.of(spec)
        self.options = spec.ray.model_dump() if spec.ray is not None else {"namespace": None, "runtime_env": {}}
        self.shipped_root: str | None = None
        self.dashboard_url: str | None = None
        self.private: PrivateInstance | None = None
        self._started_ray = False
        self._joined_session = False
        self._set_auth_mode = False
        self._hosts: dict[str, str] = {}
        self._log = logging.getLogger(f"parallelrun.driver.{Path(cfg.log_dir).parent.name}")

    @property
    def where(self) -> str:
        return self.address or "this machine"

    def connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            self._joined_session = True  # the caller's own Ray session: use it, and leave it open at the end
            return
        kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": "WARNING"}
        job_env = self.job_runtime_env()
        if job_env:
            kwargs["runtime_env"] = job_env
        if self.options.get("namespace"):
            kwargs["namespace"] = self.options["namespace"]
        if self.address is None:
            if self.spec.node_count > 1:
                raise JobSpecError([
                    f"node_count: {self.spec.node_count} needs a Ray cluster, but compute: ray without "
                    "RAY_ADDRESS starts a one-node Ray instance on this machine. Point the job at a cluster "
                    "(compute: ray://HEAD:10001, compute: auto, or RAY_ADDRESS) or set node_count: 1."
                ], source="job spec (Ray backend)")
            # A private instance sized for the job: process_count_per_node actors fit even on few cores,
            # as with the local executor; the job's custom resources are declared so that they fit too.
            need = math.ceil(self.spec.process_count_per_node * self.spec.cpus_per_process)
            self.private = PrivateInstance.start(Path(self.cfg.log_dir).parent)
            kwargs.update(address="local", num_cpus=max(os.cpu_count() or 1, need), include_dashboard=False,
                          _temp_dir=self.private.temp_dir)
        else:
            kwargs["address"] = self.address
            check_reachable(self.address, self.spec.compute)
            self._set_auth_mode = use_token_if_wanted(self.address)
        try:
            context = ray.init(**kwargs)
        except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError, OSError...
            self._cleanup()
            what = f"connect to the Ray cluster at {self.address}" if self.address else "start a local Ray instance"
            raise UsageError(
                f"cannot {what} (compute: {self.spec.compute}): {type(e).__name__}: {e}\n"
                "Start one with `ray start --head` and use its address (host:6379 from this machine, "
                "ray://host:10001 from elsewhere), or run with --compute local. If the cluster uses token "
                "authentication, put its token in ~/.ray/auth_token (or RAY_AUTH_TOKEN_PATH) on this machine."
            ) from e
        self._started_ray = True
        url = getattr(context, "dashboard_url", None)
        if url:
            self.dashboard_url = url if "://" in url else f"http://{url}"
            print(f"Ray dashboard: {self.dashboard_url}", file=sys.stderr, flush=True)
        self._log.info("connected to Ray at %s%s%s", self.where,
                       " (token authentication from the local token file)" if self._set_auth_mode else "",
                       f"; Ray dashboard: {self.dashboard_url}" if self.dashboard_url else "")

    def disconnect(self) -> None:
        if self._started_ray:
            self._started_ray = False
            try:
                self.ray.shutdown()
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass
        self._cleanup()

    def _cleanup(self) -> None:
        if self.private is not None:
            self.private.stop()
            self.private = None
        if self._set_auth_mode:
            self._set_auth_mode = False
            _set_auth_mode(None)

    # --- placement ----------------------------------------------------------------------------------------
    def alive_nodes(self) -> list[dict[str, Any]]:
        return alive_nodes(self.ray)

    def fits(self, node: dict[str, Any], actors: int) -> bool:
        return self.placement.fits(node, actors)

    def pick_nodes(self) -> list[str]:
        return pick_nodes(self.ray, self.spec, self.placement, self.where)

    def actor_options(self) -> dict[str, Any]:
        """Keyword arguments for ``ActorClass.options``: resources and runtime_env."""
        return {**self.placement.actor_options(), "runtime_env": self.actor_runtime_env()}

    def placed(self, worker: str, node_id: str, handle: Any) -> tuple[str, str | None]:
        """Record where a worker's actor was placed (driver.txt); returns (node address, actor id)."""
        host, actor = self.node_address(node_id), actor_id(handle)
        self._log.info("worker %s is Ray actor %s on node %s (%s)", worker, actor, host, node_id)
        return host, actor

    def node_address(self, node_id: str) -> str:
        """The IP address of a node (for ``runs show`` and the dashboard); its id's start if unknown."""
        if node_id not in self._hosts:
            self._hosts = {n["NodeID"]: str(n.get("NodeManagerAddress") or "") for n in self.ray.nodes()}
        return self._hosts.get(node_id) or node_id[:12]

    # --- runtime_env --------------------------------------------------------------------------------------
    def job_runtime_env(self) -> dict[str, Any]:
        """The user's runtime_env, plus the job folder and parallelrun for a remote cluster (Ray Client)."""
        user = dict(self.options.get("runtime_env") or {})
        user.pop("env_vars", None)  # per actor, merged with the job's variables
        if not self.upload:
            return user
        if self.cfg.python:
            raise UsageError(
                f"this job's Environment runs in the virtual environment {self.cfg.python}, which exists only on "
                f"this machine, but compute: {self.spec.compute} is a remote Ray cluster. Install the packages "
                "on the cluster's nodes (or in its image) and run without the Environment, or use a Ray address "
                "on this machine."
            )
        if "working_dir" in user:
            raise UsageError(
                f"runtime_env working_dir {user['working_dir']!r} and the job folder parallelrun uploads to "
                f"the remote cluster {self.spec.compute} would both be the workers' working_dir. Drop "
                f"working_dir from runtime_env (the job folder is shipped), or set {UPLOAD_ENV}=0."
            )
        import parallelrun

        source, job_dir = Path(self.cfg.source_directory), Path(self.cfg.working_dir)
        root = job_dir if _inside(source, job_dir) else source
        self.shipped_root = str(root)
        excludes = [".git", "__pycache__", ".parallelrun", ".venv", *user.pop("excludes", [])]
        for p in (self.cfg.output_dir, str(Path(self.cfg.log_dir).parent)):
            if _inside(Path(p), root):
                excludes.append("/" + str(Path(p).relative_to(root)))
        return {**user, "working_dir": str(root), "excludes": excludes,
                "py_modules": [*user.get("py_modules", []), str(Path(parallelrun.__file__).parent)]}

    def actor_runtime_env(self) -> dict[str, Any]:
        env: dict[str, Any] = {"env_vars": self.env_vars()}
        if self._joined_session:
            # The caller's Ray session was initialised without our job-level runtime_env: what Ray can
            # apply per actor goes here; local folders to upload cannot.
            user = dict(self.options.get("runtime_env") or {})
            uploads = [k for k in _UPLOADED_KEYS if k in user]
            if uploads:
                raise UsageError(
                    f"runtime_env {', '.join(uploads)} needs Ray to upload local folders when it connects, but Ray "
                    "was already initialised by this process. Call ray.shutdown() first, or pass them to your "
                    "own ray.init(runtime_env=...)."
                )
            user.pop("env_vars", None)
            env.update(user)
        if self.cfg.python and not self.upload:
            # An Environment's venv (built on this machine, on the driver's interpreter, so it sees the
            # same Ray): the actor's worker process runs that interpreter, as local workers do.
            env["py_executable"] = self.cfg.python
        return env

    def env_vars(self) -> dict[str, str]:
        """runtime_env env_vars, then the job's environment_variables (which win), from process start
        (OMP_NUM_THREADS must precede imports); and this parallelrun on the path so that actors run the
        driver's version of it."""
        user = (self.options.get("runtime_env") or {}).get("env_vars") or {}
        env = {**{str(k): str(v) for k, v in user.items()}, **self.cfg.environment_variables}
        if not self.upload:
            import parallelrun

            src = str(Path(parallelrun.__file__).resolve().parent.parent)
            env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "${PYTHONPATH}")])
        return env


def actor_id(handle: Any) -> str | None:
    """The Ray actor id of a handle (hex), as the Ray dashboard shows it."""
    try:
        return str(handle._actor_id.hex())  # no public accessor on the handle in Ray 2.x
    except Exception:  # noqa: BLE001 - another Ray version
        return None


# --- token authentication --------------------------------------------------------------------------------
def token_available() -> bool:
    """Whether Ray would find an authentication token: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def use_token_if_wanted(address: str) -> bool:
    """Send the local token when the cluster at ``address`` wants one (Ray itself does so only for ``auto``).

    Only when RAY_AUTH_MODE is unset (an explicit choice is respected) and a token is there. A GCS address
    is asked first: a driver in token mode also demands the token from the cluster's calls back into it,
    so token mode against a cluster without authentication breaks actor creation; and a cluster that
    wants a token we do not have is refused at once (Ray would retry for about 20 s, then report a
    generic "Failed to connect"). Returns True if token mode was switched on here, so that
    ``disconnect`` restores the unset state.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if address == "auto" or (mode or "").lower() == "token":
        return False
    if address.startswith("ray://"):
        # Through Ray Client nothing calls back into this process: the token is harmless when not needed.
        if mode is None and token_available():
            _set_auth_mode("token")
            return True
        return False
    if not gcs_wants_token(address):
        return False
    if mode is None and token_available():
        _set_auth_mode("token")
        return True
    why = (f"RAY_AUTH_MODE={mode} tells Ray not to send it" if mode is not None else
           "no token was found here (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")
    raise UsageError(
        f"the Ray cluster at {address} uses token authentication, but {why}. Copy the cluster's token "
        "(`ray get-auth-token` on its head node) to ~/.ray/auth_token on this machine"
        + (" and unset RAY_AUTH_MODE." if mode is not None else ".")
    )


def gcs_wants_token(address: str, timeout: float = 5.0) -> bool:
    """Whether the GCS at ``host:port`` refuses a call without a token (gRPC UNAUTHENTICATED)."""
    try:
        import grpc  # Ray's own dependency
    except ImportError:
        return False
    channel = grpc.insecure_channel(address)
    try:
        # An empty request is a valid GetClusterIdRequest; raw bytes spare us Ray's generated stubs.
        channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId")(b"", timeout=timeout)
        return False
    except grpc.RpcError as e:
        return bool(e.code() == grpc.StatusCode.UNAUTHENTICATED)
    finally:
        channel.close()


def _set_auth_mode(mode: str | None) -> None:
    if mode is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = mode
    try:
        # Ray caches its configuration (read from the environment) when it is imported; re-read it, as
        # Ray's own ``_enable_token_auth`` does.
        from ray._raylet import Config  # type: ignore[attr-defined]

        Config.initialize("")
    except Exception:  # noqa: BLE001 - another Ray version: the environment variable is all we can set
        pass


# --- addresses -------------------------------------------------------------------------------------------
def address_of(compute: str) -> str | None:
    """What to pass to ``ray.init(address=...)``; None = start a private local instance."""
    if compute == "ray":
        return os.environ.get("RAY_ADDRESS") or None
    return compute  # auto, ray://host:port, host:port


def check_reachable(address: str, compute: str, timeout: float = 5.0) -> None:
    """Fail fast on an address where nothing listens: ``ray.init`` would retry for a long time."""
    if address == "auto":
        return
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = hostport.rpartition(":")
    if not port.isdigit():
        return  # let Ray parse (and reject) it
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as e:
        raise UsageError(
            f"cannot connect to the Ray cluster at {address} (compute: {compute}): nothing answers there ({e}).\n"
            "Start one with `ray start --head` and use its address (host:6379 from this machine, "
            "ray://host:10001 from elsewhere), or run with --compute local."
        ) from e


def wants_upload(address: str | None) -> bool:
    """Ship files through runtime_env only to a Ray Client address on another machine (or when forced)."""
    forced = os.environ.get(UPLOAD_ENV)
    if forced in ("0", "1"):
        return forced == "1"
    if not address or not address.startswith("ray://"):
        return False
    host = address[len("ray://"):].rsplit(":", 1)[0].strip("[]")
    return not _is_this_machine(host)


def _is_this_machine(host: str) -> bool:
    if host in ("localhost", "", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    try:
        mine = set(socket.gethostbyname_ex(socket.gethostname())[2])
        return bool(mine & set(socket.gethostbyname_ex(host)[2]))
    except OSError:
        return False


def _inside(p: Path, root: Path) -> bool:
    try:
        p.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


# --- a private instance and its watchdog -----------------------------------------------------------------
@dataclass
class PrivateInstance:
    """A Ray instance started for one driver, in its own temporary folder, watched by a watchdog."""

    temp_dir: str
    run_dir: Path
    watchdog: subprocess.Popen[bytes] | None = None

    @staticmethod
    def start(run_dir: Path) -> PrivateInstance:
        """Stop what an earlier driver of this run left behind, then create the folder and the watchdog."""
        reap_recorded(run_dir)
        # Short: Ray's Unix socket paths under it must stay below ~107 characters.
        base = os.environ.get("RAY_TMPDIR") or "/tmp"
        os.makedirs(base, exist_ok=True)
        temp_dir = tempfile.mkdtemp(prefix="prinst-", dir=base)
        inst = PrivateInstance(temp_dir, run_dir)
        import parallelrun

        src = str(Path(parallelrun.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
        inst.watchdog = subprocess.Popen(
            [sys.executable, "-c", "from parallelrun.execution.ray_cluster import _watch_main; _watch_main()",
             str(os.getpid()), str(_create_time(os.getpid())), temp_dir],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True,  # outlives the driver, and is not in the group Ray's reaper kills
        )
        _atomic_json(run_dir / INSTANCE_FILE, {"temp_dir": temp_dir, "driver_pid": os.getpid(),
                                               "watchdog_pid": inst.watchdog.pid})
        return inst

    def stop(self) -> None:
        """After ``ray.shutdown()``: stop what is left of the instance, the watchdog, and the folder."""
        reap(self.temp_dir)
        if self.watchdog is not None:
            self.watchdog.terminate()
            try:
                self.watchdog.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()
                self.watchdog.wait(timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        try:
            (self.run_dir / INSTANCE_FILE).unlink()
        except OSError:
            pass


def reap_recorded(run_dir: Path) -> None:
    """Stop a private instance recorded in ``run_dir`` whose driver is gone (its watchdog died too)."""
    try:
        rec = json.loads((run_dir / INSTANCE_FILE).read_text())
    except (OSError, ValueError):
        return
    pid = rec.get("driver_pid")
    if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
        return  # another live driver: not ours to stop
    temp_dir = rec.get("temp_dir")
    if isinstance(temp_dir, str) and temp_dir:
        reap(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def instance_processes(temp_dir: str) -> list[Any]:
    """Every process of the instance in ``temp_dir``: the folder in its command line or its open files."""
    import psutil

    root = os.path.abspath(temp_dir)
    prefix = root + os.sep
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if p.pid == os.getpid():
            continue
        try:
            args = p.info["cmdline"] or []
            if any(prefix in a or a.endswith(root) for a in args) or any(
                    f.path.startswith(prefix) for f in p.open_files()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def reap(temp_dir: str, grace: float = 2.0, rounds: int = 3) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds, every process of the instance; returns how many."""
    import psutil

    total = 0
    for _ in range(rounds):  # a raylet may start a worker while we stop the others
        procs = instance_processes(temp_dir)
        if not procs:
            break
        total += len(procs)
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=grace)
    return total


def _watch_main() -> None:
    """The watchdog: ``<driver pid> <driver create time> <temp dir>``. Reaps the instance when the driver
    is gone; exits quietly on SIGTERM (the driver stopped the instance itself) or when the folder is gone."""
    pid, created, temp_dir = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while os.path.isdir(temp_dir):
        if not _alive(pid, created):
            reap(temp_dir)
            shutil.rmtree(temp_dir, ignore_errors=True)
            return
        time.sleep(WATCH_EVERY)


def _create_time(pid: int) -> float:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


def _alive(pid: int, created: float = 0.0) -> bool:
    """``pid`` runs and is the same process (same start time; pids are reused), not a zombie."""
    import psutil

    try:
        p = psutil.Process(pid)
        if created and abs(p.create_time() - created) > 0.01:
            return False
        return bool(p.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)
