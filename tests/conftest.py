"""Shared fixtures.

Storage servers (session-scoped, loopback only, random ports):

- ``azurite``: Azure Blob emulator from npm. Installed once into ``<repo>/.cache/azurite`` with
  ``npm install --prefix .cache/azurite azurite@3`` when not there (or use ``azurite-blob`` on PATH);
  skipped only when npm itself is missing. Connect with the well-known development account below.
- ``moto_s3``: moto's standalone S3 server (``moto[server]``), in a thread of the test process.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# One BLAS/OpenMP thread in every process the tests start (make_data.py's training, drivers, workers):
# the suite runs several processes at once on a 2-core machine, where each extra OpenBLAS thread only
# spins. The mnist example's make_data.py used 28.8 s of CPU with the default and 12.4 s with 1, at load
# ~20. What a user sets wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Ctrl-C reaches the processes the tests start, as in a terminal. A non-interactive shell starts a
# background job (`make test &`, a CI runner) with SIGINT ignored, and an ignored SIGINT is inherited:
# Python then installs no KeyboardInterrupt handler, and a test that presses Ctrl-C on a driver waits for
# it in vain (the v2 Ctrl-C test hung 90 s that way). Restoring the handler here gives every child the
# default disposition; test_records.py starts a driver with SIGINT ignored on purpose, by itself.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from doc_commands import documented_azurite_command  # noqa: E402  (tests/ is on sys.path)


# --- background pipeline drivers -----------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _stop_background_drivers() -> Iterator[None]:
    """Every test ends the background pipeline drivers it started (``Experiment.submit``).

    A driver still running when pytest exits would be reported as ``ResourceWarning: subprocess N is
    still running`` and keep working in a deleted temp folder. A finished driver is reaped; a running one
    is asked to stop (SIGTERM: it cancels its steps, as ``runs cancel`` does) and killed if it does not.
    """
    yield
    experiment = sys.modules.get("parallelrun.workspace.experiment")
    drivers = getattr(experiment, "_DRIVERS", None)
    if not drivers:
        return
    for proc in list(drivers):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        drivers.remove(proc)

# --- Azurite / moto ------------------------------------------------------------------------------------
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published development key (https://learn.microsoft.com/azure/storage/common/storage-use-azurite).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class BlobServer:
    endpoint: str  # http://127.0.0.1:<port>/devstoreaccount1
    account_name: str = AZURITE_ACCOUNT
    account_key: str = AZURITE_KEY

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={self.account_name};AccountKey={self.account_key};"
                f"BlobEndpoint={self.endpoint};")


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key_id: str = "testing-key-id"
    secret_access_key: str = "testing-secret-access-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float, log: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text() if log else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port} within {timeout:.0f} s")


def _azurite_binary() -> str | None:
    local = REPO / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    found = shutil.which("azurite-blob")
    if found:
        return found
    if shutil.which("npm") is None:
        return None
    done = subprocess.run(["npm", "install", "--prefix", str(REPO / ".cache" / "azurite"), "--no-audit",
                           "--no-fund", "azurite@3"], timeout=600, capture_output=True, text=True)
    if done.returncode != 0 or not local.exists():
        pytest.fail(f"installing Azurite failed (npm exited {done.returncode}):\n{done.stderr[-3000:]}")
    return str(local)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BlobServer]:
    pytest.importorskip("adlfs", reason="install the azure extra: pip install 'parallelrun[azure]'")
    binary = _azurite_binary()
    if binary is None:
        pytest.skip("Azurite needs npm (Node.js) to install: npm install --prefix .cache/azurite azurite@3")
    port = free_port()
    location = tmp_path_factory.mktemp("azurite")
    log = location / "azurite.log"
    documented = documented_azurite_command()
    args = [binary]
    values = {"--blobPort": str(port), "--location": str(location)}
    skip = False
    for a in documented[1:]:
        if skip:
            skip = False
            continue
        args.append(a)
        if a in values:
            args.append(values[a])
            skip = True
    assert {"--blobPort", "--location"} <= set(args), documented
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, proc, 60, log)
        yield BlobServer(f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Server]:
    pytest.importorskip("s3fs", reason="install the s3 extra: pip install 'parallelrun[s3]'")
    server_mod = pytest.importorskip("moto.server", reason="install moto's server: pip install 'moto[server]'")
    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        _wait_for_port(port, None, 30, None)
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
