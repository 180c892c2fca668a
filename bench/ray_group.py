"""The Ray contenders, on one Ray head started as a user starts one: ``ray start --head``.

``parallelrun_ray`` is the whole ``parallelrun run job.yml --compute <head>`` command, as a user meets
it; ``ray_data`` is Ray Data's ``map_batches`` (``peers.run_ray_data``) in a fresh process that connects
with ``ray.init(address=<head>)``. Both run ``runs`` times, in rotating order, on the same head.

The head (:class:`BenchHead`): on 127.0.0.1, in a temporary folder of its own (which also keeps its
``ray_current_cluster`` file away from ``/tmp/ray``, so no ``address="auto"`` driver elsewhere on the
machine finds it), every port it listens on chosen free, ``--num-cpus`` = the benchmark's process
count, no dashboard (its process would keep using CPU while the contenders run). The environment is
left as it is: when Ray turns token authentication on (``~/.ray/auth_token`` exists), parallelrun finds
that out itself, and the Ray Data driver gets ``RAY_AUTH_MODE=token``, as its user would set it.
Stopping kills the process group of the ``ray start`` command (its own session: every daemon of this
head is in it), then any process still holding the head's folder (``ray_instance.reap``); other Ray
instances on the machine are never touched (``ray stop`` would stop them all).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .peers import Outcome, Work, ray_init, run_parallelrun, run_ray_data

#: Ray's object store, as the in-process instance the benchmark used before had it
OBJECT_STORE_BYTES = 2 * 1024**3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class BenchHead:
    """A running ``ray start --head``: its address, folder and the session leader of its processes."""

    address: str
    temp_dir: str
    pgid: int
    wants_token: bool = False

    @staticmethod
    def start(num_cpus: int, timeout: float = 180) -> BenchHead:
        """Start the head; raises RuntimeError with Ray's own output when it does not come up."""
        # Short: Ray's Unix socket paths under it must stay below ~107 characters.
        temp_dir = tempfile.mkdtemp(prefix="prbench-", dir="/tmp")
        port = free_port()
        cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--node-ip-address=127.0.0.1",
               f"--port={port}", f"--num-cpus={num_cpus}", f"--object-store-memory={OBJECT_STORE_BYTES}",
               "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}",
               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
               f"--metrics-export-port={free_port()}"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        head = BenchHead(f"127.0.0.1:{port}", temp_dir, proc.pid)
        try:
            out, _ = proc.communicate(timeout=timeout)
            if proc.returncode != 0:
                raise RuntimeError(f"`ray start --head` exited {proc.returncode}:\n{out[-3000:]}")
            head.wants_token = _wants_token(head.address)
        except BaseException:
            head.stop()
            raise
        return head

    def driver_env(self) -> dict[str, str]:
        """The environment of a plain Ray driver (Ray Data) that connects to this head by address."""
        env = dict(os.environ)
        if self.wants_token:
            env["RAY_AUTH_MODE"] = "token"  # what Ray's docs tell a user to set for such a cluster
        return env

    def stop(self) -> None:
        """Stop this head's processes (and only them), then remove its folder."""
        # SIGTERM first for a clean exit; gcs_server may ignore it, hence SIGKILL after a short wait.
        for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                break
            if _group_gone(self.pgid, wait):
                break
        from parallelrun.execution.ray_instance import reap

        reap(self.temp_dir)  # workers and agents that left the group (none expected; cheap to make sure)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


RAY_PEERS = ("ray_data", "parallelrun_ray")


def run_ray_group(work: Work, peers: list[str], runs: int,
                  on_run: Callable[[int, str, float], None] | None = None) -> dict[str, Any]:
    """Run the Ray contenders ``runs`` times each (rotating the order) on one Ray head of their own.

    The head is started (not timed) after the other contenders ran, because Ray's daemons keep using CPU
    while they are up and would slow every contender measured meanwhile; it is stopped at the end, also on
    an error. ``on_run(r, peer, seconds)`` hears of each run as it ends. Returns {peer: [seconds]} and
    {"errors": {peer: message}}.
    """
    out: dict[str, Any] = {p: [] for p in peers}
    errors: dict[str, str] = {}
    try:
        head = BenchHead.start(work.processes)
    except Exception as e:  # noqa: BLE001 - reported for every Ray contender, not fatal
        return {"errors": {p: f"no Ray head: {type(e).__name__}: {e}" for p in peers}}
    try:
        for r in range(runs):
            for peer in peers[r % len(peers):] + peers[:r % len(peers)]:
                if peer in errors:
                    continue
                try:
                    o = run_ray_data_on(work, head) if peer == "ray_data" else run_parallelrun(work, head.address)
                except Exception as e:  # noqa: BLE001 - reported, not fatal
                    errors[peer] = f"{type(e).__name__}: {e}"
                    continue
                if o.lines != work.items:
                    errors[peer] = f"wrote {o.lines} rows for {work.items} items"
                    continue
                out[peer].append(o.seconds)
                if on_run is not None:
                    on_run(r, peer, o.seconds)
    finally:
        head.stop()
    return {**out, "errors": errors}


def run_ray_data_on(work: Work, head: BenchHead) -> Outcome:
    """Ray Data in a fresh process connected to ``head``, timed as ``run_ray_data`` is: from building the
    pipeline on (interpreter start, imports and connecting are not timed, a conservative choice for
    parallelrun, whose whole command is)."""
    spec = work.scratch / "ray-data-work.pkl"
    spec.write_bytes(pickle.dumps((work, head.address)))
    done = subprocess.run([sys.executable, "-c", "import bench.ray_group as g; g._ray_data_main()", str(spec)],
                          capture_output=True, text=True, timeout=3600, cwd=work.scratch, env=head.driver_env())
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("BENCH-RAY-DATA "):
            got = json.loads(line[len("BENCH-RAY-DATA "):])
            return Outcome(got["seconds"], got["lines"], Path(got["output"]))
    raise RuntimeError(f"the Ray Data process exited {done.returncode}: {done.stderr[-1500:]}")


def _ray_data_main() -> None:
    import ray

    work, address = pickle.loads(Path(sys.argv[1]).read_bytes())
    ray_init(work.processes, address)
    try:
        o = run_ray_data(work)
    finally:
        ray.shutdown()
    print("BENCH-RAY-DATA " + json.dumps({"seconds": o.seconds, "lines": o.lines, "output": str(o.output)}),
          flush=True)


def _group_gone(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _wants_token(address: str) -> bool:
    """Whether the head refuses a driver without a token (parallelrun's own probe of the GCS)."""
    from parallelrun.execution.ray_cluster import gcs_wants_token

    return gcs_wants_token(address)
