"""The HTTP side of the fake OpenCTI: ``POST /graphql`` and ``GET /stream/{id}``.

Owns routing the two paths (anything else: 404), the bearer-token check of both, reading a
GraphQL body (invalid JSON: 400) and handing requests to ``graphql`` and ``stream``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from reconciler.sandbox.http import (
    EmulatorHandler,
    EmulatorServer,
    Response,
    bearer_token,
    json_bytes,
    last_values,
)
from reconciler.sandbox.opencti import graphql, stream

if TYPE_CHECKING:
    from reconciler.sandbox.opencti.emulator import OpenCTIEmulator


class Server(EmulatorServer):
    def __init__(self, address: tuple[str, int], emulator: OpenCTIEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler, name="opencti emulator")


class _Handler(EmulatorHandler):
    server: Server

    def _authorized(self) -> bool:
        return bearer_token(self.lower_headers()) == self.server.emulator.token

    def _send_json(self, status: int, body: str | bytes) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send(Response(status, data, [("Content-Type", "application/json; charset=utf-8")]))

    def do_POST(self) -> None:
        try:
            raw = self.read_body()
        except ValueError:
            self.close_connection = True
            return
        if urlsplit(self.path).path.rstrip("/") != "/graphql":
            self._send_json(404, json_bytes({"error": "not found"}))
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_json(400, graphql.error_json("Invalid JSON body", "BAD_USER_INPUT"))
            return
        self._send_json(200, graphql.execute(self.server.emulator, body, self._authorized()))

    def do_GET(self) -> None:
        emu = self.server.emulator
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/")
        if not path.startswith("/stream"):
            self._send_json(404, json_bytes({"error": "not found"}))
            return
        stream_id = path[len("/stream/") :] if path.startswith("/stream/") else ""
        headers = self.lower_headers()
        emu._log_request({"field": "stream", "path": parts.path, "headers": headers})
        status = stream.status(emu, stream_id, self._authorized())
        if status != 200:
            body = {"status": status, "error": "stream not available"}
            self._send_json(status, json_bytes(body))
            return
        stream.serve(emu, self, headers, last_values(parts.query))
