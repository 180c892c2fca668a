"""A counting TCP proxy in front of a storage server (Azurite, moto): which process moved how many bytes.

Tests point a job at the proxy instead of the server. Each connection is attributed, when it is accepted,
to the process that opened it (its socket's inode looked up in ``/proc/net/tcp`` and that process's
``/proc/<pid>/fd``), so a test can assert that the driver process received (and sent) only a few bytes
while its workers moved the whole output: the output was composed without passing through the driver.

Loopback only, one thread per direction of each connection; everything stops with ``close()``.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import Counter
from pathlib import Path


def _inode_of_client(client_port: int, server_port: int) -> str | None:
    """The inode of the client-side socket 127.0.0.1:client_port -> :server_port (Linux only)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, remote, inode = cols[1], cols[2], cols[9]
            if int(local.rsplit(":", 1)[1], 16) == client_port and int(remote.rsplit(":", 1)[1], 16) == server_port:
                return inode
    return None


def _holds(pid: int, inode: str) -> bool:
    target = f"socket:[{inode}]"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


class CountingProxy:
    """Forwards 127.0.0.1:<port> to ``upstream_port``; counts bytes per (who, direction).

    ``who`` is ``"watched"`` for connections opened by the process ``watch(pid)`` names, else ``"other"``
    (``"unknown"`` when the socket could not be found; a test should count that against the driver).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.watched_pid: int | None = None
        self.bytes: Counter[tuple[str, str]] = Counter()  # (who, "down" | "up") -> bytes
        self.connections: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._closed = False
        self._socks: list[socket.socket] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def watch(self, pid: int) -> None:
        with self._lock:
            self.watched_pid = pid
            self.bytes.clear()
            self.connections.clear()

    def _who(self, client_port: int) -> str:
        pid = self.watched_pid
        if pid is None:
            return "other"
        inode = _inode_of_client(client_port, self.port)
        if inode is None:
            return "unknown"
        return "watched" if _holds(pid, inode) else "other"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, (_, client_port) = self.listener.accept()
            except OSError:
                return
            who = self._who(client_port)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections[who] += 1
                self._socks += [client, upstream]
            for src, dst, way in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(target=self._pipe, args=(src, dst, who, way), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, who: str, way: str) -> None:
        try:
            while True:
                data = src.recv(256 * 1024)
                if not data:
                    break
                with self._lock:
                    self.bytes[(who, way)] += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            for s in self._socks:
                s.close()
