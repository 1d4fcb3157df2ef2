"""A pool of real TCP client connections, with health checks evicting dead ones.

The example starts a small echo server on 127.0.0.1 (an ephemeral port) and
keeps one client socket per backend name in a ``Pool``. Each client's
``ping()`` sends a probe and waits for its echo, with a socket timeout. Then
the server is killed: its sockets are closed, the next health check finds
every client dead and evicts it, and an acquire while the server is down
fails with ``FactoryError`` (its cause: connection refused). Once the server
is back on the same port, acquires simply connect again.

Run it: ``.venv/bin/python examples/tcp_clients.py``
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Hashable

import structlog

from pooler_actors import FactoryError, Pool

# Pool lifecycle events go to stderr, so stdout shows only the example's output.
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

SOCKET_TIMEOUT = 1.0  # seconds a connect, send or receive may take
PROBE = b"ping\n"


# --- a small echo server ------------------------------------------------------


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, EchoServer)
        server.track(self.request)
        try:
            while data := self.request.recv(4096):
                self.request.sendall(data)
        except OSError:
            pass  # killed under us


class EchoServer(socketserver.ThreadingTCPServer):
    """An echo server that, when killed, also drops every open connection."""

    allow_reuse_address = True  # restart on the same port at once
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _EchoHandler)
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def kill(self) -> None:
        self.shutdown()
        self.server_close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            with contextlib.suppress(OSError):  # already gone
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._thread.join()


# --- the pooled resource --------------------------------------------------------


class EchoClient:
    """One TCP connection to the echo server: the pooled resource."""

    def __init__(self, name: Hashable, address: tuple[str, int]) -> None:
        self.name = name
        self.sock = socket.create_connection(address, timeout=SOCKET_TIMEOUT)

    def call(self, text: str) -> str:
        payload = text.encode() + b"\n"
        self.sock.sendall(payload)
        return self._recv(len(payload)).decode().rstrip("\n")

    def ping(self) -> None:
        """Send a probe and wait for its echo; raise if the peer is gone."""
        self.sock.sendall(PROBE)
        if self._recv(len(PROBE)) != PROBE:
            raise ConnectionError("bad probe echo")

    def _recv(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))  # socket timeout applies
            if not chunk:
                raise ConnectionResetError("server closed the connection")
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def client_factory(address: tuple[str, int]) -> Callable[[Hashable], EchoClient]:
    def connect(name: Hashable) -> EchoClient:
        return EchoClient(name, address)

    return connect


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def main() -> None:
    server = EchoServer(("127.0.0.1", 0))
    address = ("127.0.0.1", server.port)
    backends = ["billing", "search", "users"]
    with Pool(
        client_factory(address),
        max_open_resources=3,
        health_check_interval=0.2,
        ping_timeout=2 * SOCKET_TIMEOUT,
        name="echo-clients",
    ) as pool:
        first = {name: pool.acquire(name, timeout=5) for name in backends}
        for name, client in first.items():
            print(f"{name}: {client.call(f'hello from {name}')}")
        print("open connections:", pool.stats().open_resources)

        server.kill()
        print("server killed")
        if not wait_until(lambda: pool.stats().open_resources == 0):
            raise SystemExit("health checks did not evict the dead sockets")
        stats = pool.stats()
        print(f"health checks evicted {stats.health_evictions} dead connections")

        try:
            pool.acquire("billing", timeout=5)
        except FactoryError as error:
            cause = type(error.__cause__).__name__
            print(f"acquire while the server is down: FactoryError ({cause})")

        server = EchoServer(address)  # back on the same port
        print("server restarted")
        again = pool.acquire("billing", timeout=5)
        print(f"billing: {again.call('hello again')}")
        print("reconnected with a new socket:", again is not first["billing"])
        print("open connections:", pool.stats().open_resources)
    server.kill()
    print("done")


if __name__ == "__main__":
    main()
