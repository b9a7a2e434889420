"""The health and metrics HTTP endpoints of ``reconciler run``: ``/healthz``, ``/readyz``,
``/metrics``.

Owns the small threaded HTTP server and nothing else: what "healthy" and "ready" mean is
asked of the callables it is given (the controller's), and the metrics are rendered by
``Metrics``. Must not reconcile, read settings or block a request on a running reconcile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from loguru import logger

from reconciler.metrics import Metrics

__all__ = ["HealthServer", "Probe"]

#: A probe answers (ok, one-line reason).
Probe = Callable[[], tuple[bool, str]]


class HealthServer:
    """Serves the endpoints in a daemon thread until ``stop()``."""

    def __init__(self, *, health: Probe, readiness: Probe, metrics: Metrics) -> None:
        self.health = health
        self.readiness = readiness
        self.metrics = metrics
        self._server: ThreadingHTTPServer | None = None

    def start(self, host: str, port: int) -> int:
        """Bind and serve; returns the bound port (``port=0`` picks a free one)."""
        server = ThreadingHTTPServer((host, port), self._handler())
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
        bound = int(server.server_address[1])
        logger.info("health and metrics on http://{}:{}/ (healthz, readyz, metrics)", host, bound)
        return bound

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body = owner.metrics.render()
                    self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
                elif path in ("/healthz", "/readyz"):
                    ok, text = owner.health() if path == "/healthz" else owner.readiness()
                    self._send(200 if ok else 503, (text + "\n").encode(), "text/plain")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
