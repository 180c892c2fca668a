"""A counting TCP proxy in front of a storage server (Azurite, moto): which process moved how many bytes.

Tests point a job at the proxy instead of the server. Each connection is attributed, when it is accepted,
to the processes that hold its client socket (the socket's inode looked up in ``/proc/net/tcp``, then in
every ``/proc/<pid>/fd``), so a test can assert that the driver process received (and sent) only a few bytes
while its workers moved the whole output: the output was composed without passing through the driver.

Loopback only, one thread per direction of each connection; everything stops with ``close()``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
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


def _holders(inode: str) -> set[int]:
    """Every process with the socket open (a forked child may share its parent's)."""
    target = f"socket:[{inode}]"
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") == target:
                    found.add(int(entry))
                    break
            except OSError:
                continue
    return found


@dataclass
class Connection:
    holders: set[int]  # the processes that had the client socket open when it connected; empty: not found
    chunks: list[tuple[float, str, int]] = field(default_factory=list)  # (time.time(), "up" | "down", bytes)

    def moved(self, until: float | None) -> tuple[int, int]:
        """(bytes store -> client, bytes client -> store) forwarded before ``until`` (None: all)."""
        down = up = 0
        for t, way, n in self.chunks:
            if until is None or t < until:
                if way == "down":
                    down += n
                else:
                    up += n
        return down, up


class CountingProxy:
    """Forwards 127.0.0.1:<port> to ``upstream_port``, counting the bytes of each connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.connections: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._socks: list[socket.socket] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def moved_by(self, pid: int, until: float | None = None) -> tuple[int, int]:
        """(bytes received, bytes sent) before ``until`` over the connections ``pid`` held, or that no
        process could be found for (counted against it: a check that cannot see must not pass)."""
        with self._lock:
            return _sum(c.moved(until) for c in self.connections if pid in c.holders or not c.holders)

    def moved_by_others(self, pid: int, until: float | None = None) -> tuple[int, int]:
        """(bytes received, bytes sent) before ``until`` over connections of processes other than ``pid``."""
        with self._lock:
            return _sum(c.moved(until) for c in self.connections if c.holders and pid not in c.holders)

    def opened_by(self, pid: int) -> int:
        with self._lock:
            return sum(pid in c.holders for c in self.connections)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, (_, client_port) = self.listener.accept()
            except OSError:
                return
            inode = _inode_of_client(client_port, self.port)
            conn = Connection(_holders(inode) if inode else set())
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections.append(conn)
                self._socks += [client, upstream]
            for src, dst, way in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(target=self._pipe, args=(src, dst, conn, way), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, conn: Connection, way: str) -> None:
        try:
            while True:
                data = src.recv(256 * 1024)
                if not data:
                    break
                with self._lock:
                    conn.chunks.append((time.time(), way, len(data)))
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


def _sum(pairs: Iterable[tuple[int, int]]) -> tuple[int, int]:
    down = up = 0
    for d, u in pairs:
        down, up = down + d, up + u
    return down, up
