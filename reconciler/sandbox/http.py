"""HTTP plumbing shared by the emulators: a threaded loopback server and a request handler base.

Owns what both emulators need of ``http.server``: a ``ThreadingHTTPServer`` that sets
TCP_NODELAY on every accepted socket (without it each response waits ~40 ms for the client's
delayed ACK), optionally wraps it in TLS (handshake deferred to the connection's own thread),
keeps the open connections so ``stop`` can cut them; a handler that reads a body (length or
chunked), answers in one write (headers and body leave together) and logs through loguru; small
JSON and query helpers; running a server in a daemon thread and stopping it.

Must not: import anything from the rest of ``reconciler`` (see the package docstring) nor know
about either emulator's API.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from loguru import logger

__all__ = [
    "EmulatorHandler",
    "EmulatorServer",
    "Response",
    "RoutedHandler",
    "bearer_token",
    "json_bytes",
    "last_values",
    "serve_in_thread",
    "stop_serving",
]


def json_bytes(payload: Any) -> bytes:
    """Compact UTF-8 JSON, non-ASCII characters kept as they are."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def last_values(query: str) -> dict[str, str]:
    """A query string or form body as ``{name: last value}`` (blank values kept)."""
    return {key: values[-1] for key, values in parse_qs(query, keep_blank_values=True).items()}


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of an ``Authorization: Bearer …`` header (lower-case keys); "" when none."""
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@dataclass
class Response:
    """One answer; ``drop`` closes the connection without answering."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False


class EmulatorServer(ThreadingHTTPServer):
    """Threaded server on loopback; ``name`` prefixes its log lines."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        name: str,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.tls = tls
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        # Without TCP_NODELAY every response waits ~40 ms for the client's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            # Handshake later, in the connection's own thread, so a slow client blocks no one.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.connections_lock:
            self.connections.add(sock)
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut every open connection (keep-alive ones included), as a dying server would."""
        with self.connections_lock:
            open_now = list(self.connections)
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        logger.debug("{}: connection error from {}: {!r}", self.name, client_address, exc)


class EmulatorHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler: TLS handshake in its thread, body reading, one-write send."""

    protocol_version = "HTTP/1.1"
    server: EmulatorServer

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        logger.trace("{}: {}", self.server.name, format % args)

    def lower_headers(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    def read_body(self) -> bytes:
        """The request body (``Content-Length`` or chunked); ValueError when unreadable."""
        length = self.headers.get("Content-Length")
        if length:
            return self.rfile.read(int(length))
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return b""

    def send(self, response: Response) -> None:
        """Answer in one write, or drop the connection when ``response.drop``."""
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.request.shutdown(socket.SHUT_RDWR)
            return
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {response.status} {reason}", f"Date: {self.date_time_string()}"]
        if response.status != 204:
            lines.append(f"Content-Length: {len(response.body)}")
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # One write per response: headers and body leave together.
        self.wfile.write(head + (response.body if response.status != 204 else b""))


class RoutedHandler(EmulatorHandler):
    """A handler that reads every request (any method) and hands it whole to ``answer``: the
    emulator's pipeline decides, the handler only moves bytes."""

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        raise NotImplementedError

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        try:
            body = self.read_body()
        except ValueError:
            self.close_connection = True
            return
        self.send(self.answer(method, self.path, self.lower_headers(), body))


def serve_in_thread(server: EmulatorServer, name: str) -> threading.Thread:
    """Serve in a started daemon thread (``stop_serving`` waits up to one 50 ms poll)."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
    )
    thread.start()
    return thread


def stop_serving(server: EmulatorServer, thread: threading.Thread | None) -> None:
    """Stop accepting, cut open connections, close the socket, wait for the serving thread."""
    server.shutdown()
    server.close_connections()
    server.server_close()
    if thread is not None:
        thread.join(timeout=5)
