"""The cluster side of the Ray backend: connecting, token authentication, placement, runtime_env.

The Ray executor (``ray_executor.py``, with ``ray_calls.py``) owns the actors and the calls to them; this
module owns everything about the cluster those actors run on:

- **Connecting** (``compute``): ``ray`` starts a private local instance sized for the job unless
  ``RAY_ADDRESS`` is set; ``auto`` joins a running cluster; ``host:port`` and ``ray://host:port`` connect
  there, failing fast (exit code 2) when nothing answers. Ray (2.5x-2.60) turns token authentication on
  for a cluster started while ``~/.ray/auth_token`` exists, but a driver that connects by explicit address
  only sends the token when ``RAY_AUTH_MODE=token``; so when that variable is unset, a token is there and
  the GCS refuses a call without it, token mode is switched on for this process.
- **A private instance** (``ray_instance.py``) lives in its own folder, watched by a watchdog process
  that stops it when the driver dies without doing so.
- **Placement** (``ray_placement.py``): each actor reserves ``cpus_per_process``, ``gpus_per_process``,
  ``memory_per_process`` and custom ``resources``; no node fitting fails at once; nodes that join are added.
- **runtime_env** (``ray_runtime_env.py``): the job-level runtime_env (``ray.init``) carries the user's
  ``ray.runtime_env`` (RayCompute's option, its relative paths taken from the job folder) and, for a
  remote cluster through Ray Client, the uploaded job folder and parallelrun itself; each actor's
  runtime_env adds the job's ``environment_variables`` (they win over ``runtime_env.env_vars``),
  parallelrun's source folder on ``PYTHONPATH`` and an Environment's interpreter.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import JobSpecError, MissingExtraError, UsageError
from . import ray_runtime_env as rte
from .ray_instance import PrivateInstance
from .ray_placement import JOIN_EVERY, Placement, alive_nodes, joinable_nodes, pick_nodes
from .ray_runtime_env import UPLOAD_ENV

if TYPE_CHECKING:
    from ..config import JobSpec
    from .worker import WorkerConfig



def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise MissingExtraError("ray", "ray", "the Ray backend") from e
    return ray


# --- connection ------------------------------------------------------------------------------------------
class RayCluster:
    """The executor's connection to Ray: connect, placement, runtime_env, disconnect (and the private
    instance's life when ``compute: ray`` has no address)."""

    join_every = JOIN_EVERY  # seconds between two looks for nodes that joined (elastic clusters)

    def __init__(self, ray: Any, cfg: WorkerConfig, spec: JobSpec) -> None:
        self.ray = ray
        self.cfg = cfg
        self.spec = spec
        self.address = address_of(spec.compute)
        self.upload = wants_upload(self.address)
        self.placement = Placement.of(spec)
        self.options = spec.ray.model_dump() if spec.ray is not None else {"namespace": None, "runtime_env": {}}
        # relative local paths in it are the job folder's, like every path of the job spec
        self.runtime_env = rte.resolve_paths(self.options.get("runtime_env") or {}, cfg.working_dir)
        self.shipped_root: str | None = None
        self.dashboard_url: str | None = None
        self.private: PrivateInstance | None = None
        self._started_ray = False
        self._joined_session = False
        self._set_auth_mode = False
        self._hosts: dict[str, str] = {}
        self.log = logging.getLogger(f"parallelrun.driver.{Path(cfg.log_dir).parent.name}")

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
            if self.private is not None:
                # The instance's processes inherit this environment: with parallelrun's folder on their
                # PYTHONPATH, actors need no runtime_env of their own and take the workers Ray starts ahead.
                with _environ("PYTHONPATH", rte.with_source_path(os.environ.get("PYTHONPATH"))):
                    context = ray.init(**kwargs)
            else:
                context = ray.init(**kwargs)
        except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError, OSError...
            # A failed init can leave Ray half-connected, and the process's next ray.init would then fail
            # with a bare AssertionError (tests/ray/test_ray_connect_failure.py): reset it.
            try:
                ray.shutdown()
            except Exception:  # noqa: BLE001 - resetting anyway
                pass
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
        self.log.info("connected to Ray at %s%s%s", self.where,
                       " (token authentication from the local token file)" if self._set_auth_mode else "",
                       f"; Ray dashboard: {self.dashboard_url}" if self.dashboard_url else "")

    def disconnect(self) -> None:
        """End this driver's Ray session (if it started it) and stop a private instance.

        Synchronous, although Ray's core worker takes about 0.3 s to shut down: on a thread, overlapping the
        run's final merge, it killed the process now and then (exit code 1, nothing printed), as Ray
        objects dropped by the main thread meanwhile call into the core worker being torn down.
        """
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

    def pick_nodes(self) -> list[str]:
        nodes = pick_nodes(self.ray, self.spec, self.placement, self.where)
        if len(nodes) < self.spec.node_count:
            self.log.info("starting on %d node(s) of node_count %d: nodes that join the cluster are added as "
                           "they come", len(nodes), self.spec.node_count)
        return nodes

    def joinable(self, used: dict[str, int]) -> list[str]:
        """Nodes that joined to use now (elastic clusters; ``used``: node id -> our index, every node used)."""
        nodes = joinable_nodes(self.alive_nodes(), used, self.placement, self.spec.process_count_per_node,
                               self.spec.node_count)
        for k, n in enumerate(nodes):
            self.log.info("node %s (%s) joined the cluster: it becomes node%d", self.node_address(n), n, len(used) + k)
        return nodes

    def actor_options(self) -> dict[str, Any]:
        """Keyword arguments for ``ActorClass.options``: resources and runtime_env (left out when empty: an
        actor with a runtime_env of its own never takes a worker Ray started ahead)."""
        env = self.actor_runtime_env()
        return {**self.placement.actor_options(), **({"runtime_env": env} if env else {})}

    def placed(self, worker: str, node_id: str, handle: Any) -> tuple[str, str | None]:
        """Record where a worker's actor was placed (driver.txt); returns (node address, actor id)."""
        host, actor = self.node_address(node_id), actor_id(handle)
        self.log.info("worker %s is Ray actor %s on node %s (%s)", worker, actor, host, node_id)
        return host, actor

    def node_address(self, node_id: str) -> str:
        """The IP address of a node (for ``runs show`` and the dashboard); its id's start if unknown."""
        if node_id not in self._hosts:
            self._hosts = {n["NodeID"]: str(n.get("NodeManagerAddress") or "") for n in self.ray.nodes()}
        return self._hosts.get(node_id) or node_id[:12]

    # --- runtime_env (rules and merging in ray_runtime_env.py) --------------------------------------------
    def job_runtime_env(self) -> dict[str, Any]:
        """The user's runtime_env, plus the job folder and parallelrun for a remote cluster (Ray Client)."""
        env, self.shipped_root = rte.job_runtime_env(
            self.runtime_env, python=self.cfg.python, upload=self.upload, compute=self.spec.compute,
            source_directory=self.cfg.source_directory, working_dir=self.cfg.working_dir,
            excluded=[self.cfg.output_dir, str(Path(self.cfg.log_dir).parent)])
        return env

    def actor_runtime_env(self) -> dict[str, Any]:
        return rte.actor_runtime_env(self.runtime_env, python=self.cfg.python, upload=self.upload,
                                     joined_session=self._joined_session,
                                     environment_variables=self.cfg.environment_variables,
                                     path_set=self.private is not None)

    def env_vars(self) -> dict[str, str]:
        """runtime_env env_vars, then the job's environment_variables (which win); see ray_runtime_env."""
        return rte.env_vars(self.runtime_env, self.cfg.environment_variables, upload=self.upload,
                            path_set=self.private is not None)


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """``os.environ[name]`` set to ``value`` for the block (what processes started meanwhile inherit)."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


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
    try:
        # Ray also caches the token it loaded. Left in place after token mode is switched off, the next
        # driver of this process (a later run on a cluster without authentication, or a private
        # instance) keeps demanding it from the cluster's calls back into it: those fail with "Missing
        # authorization header", and Ray then destroys every actor the driver creates ("all references
        # to the actor were removed"). Dropped as Ray's own reset_auth_token_state does.
        from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]

        AuthenticationTokenLoader.instance().reset_cache()
    except Exception:  # noqa: BLE001 - another Ray version: nothing cached to drop
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
