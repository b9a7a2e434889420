"""The HTTP(S) side of the Defender emulator: its server, request handler and TLS material.

Owns binding the shared threaded server to the emulator, handing each request (any method) to
the emulator's pipeline, and the TLS setup: one trustme CA per emulator object (a restart keeps
the trust anchor, so a client configured with ``ca_file`` reconnects after an "outage"), a
server certificate for 127.0.0.1/localhost/::1 and the CA file written where the tests look.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.sandbox.http import EmulatorServer, Response, RoutedHandler

if TYPE_CHECKING:
    from reconciler.sandbox.defender.emulator import DefenderEmulator


class Server(EmulatorServer):
    def __init__(
        self, address: tuple[str, int], emulator: DefenderEmulator, tls: ssl.SSLContext | None
    ) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler, name="defender emulator", tls=tls)


class _Handler(RoutedHandler):
    server: Server

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        return self.server.emulator._handle(method, path, headers, body)


class Certificates:
    """The emulator's CA (made once) and, per start, a server TLS context and the CA file."""

    def __init__(self) -> None:
        self._authority: Any = None
        self._own_dir: Path | None = None

    def server_context(self, cert_dir: Path | None) -> tuple[ssl.SSLContext, str]:
        """A TLS context for the server and the path of the CA file written for clients."""
        import trustme  # third-party; only needed with TLS

        if self._authority is None:
            self._authority = trustme.CA()
        authority = self._authority
        server_cert = authority.issue_cert("127.0.0.1", "localhost", "::1")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.set_alpn_protocols(["http/1.1"])
        server_cert.configure_cert(context)
        if cert_dir is not None:
            directory = cert_dir
            directory.mkdir(parents=True, exist_ok=True)
        else:
            directory = Path(tempfile.mkdtemp(prefix="defender-emulator-"))
            self._own_dir = directory
        ca_path = directory / "ca.pem"
        authority.cert_pem.write_to_path(str(ca_path))
        return context, str(ca_path)

    def remove_own_dir(self) -> None:
        """Remove the temporary folder made when no ``cert_dir`` was given."""
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None
