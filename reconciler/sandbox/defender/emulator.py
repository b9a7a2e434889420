"""``DefenderEmulator``: the facade of the Defender emulator, its knobs and lifecycle.

Owns the emulator's configuration (plain attributes, changeable while it runs), its state
objects (store, issued tokens, rate limiter, fault injector, request log) and starting/stopping
the server; the work itself lives in the modules that own it (``routing``, ``login``, ``api``,
``store``, ``limits``, ``server``). See the package docstring for the documented choices.
"""

from __future__ import annotations

import collections
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from loguru import logger

from reconciler.sandbox.defender import routing
from reconciler.sandbox.defender.api import DEFAULT_PAGE_SIZE
from reconciler.sandbox.defender.core import (
    API_ENDPOINTS,
    EmulatorClock,
    RawIndicator,
    RealClock,
    RequestRecord,
    format_timestamp,
)
from reconciler.sandbox.defender.forms import DEFAULT_DENY_VALUES, ECHO_MODES
from reconciler.sandbox.defender.lifecycle import DEFAULT_SUNSET, check_sunset
from reconciler.sandbox.defender.limits import FaultInjector, Faults, RateLimiter
from reconciler.sandbox.defender.login import READ_WRITE_ALL, SCOPE, TOKEN_FORMATS, Token
from reconciler.sandbox.defender.odata import ODATA_MODES
from reconciler.sandbox.defender.server import Certificates, Server
from reconciler.sandbox.defender.store import Store, copy_row, int_id
from reconciler.sandbox.http import Response, serve_in_thread, stop_serving

BATCH_REJECTIONS = ("per_item", "whole_batch")
# What ``strict=True`` / ``make_strict()`` / ``--all-strict`` turn on.
STRICT_PRESET: dict[str, Any] = {
    "upsert_key": ("indicatorType", "indicatorValue"),
    "batch_rejection": "whole_batch",
    "echo": "equivalent",
    "odata": "strict",
    "deprecation": True,
}


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


class DefenderEmulator:
    """A local Defender for Endpoint tenant: login + Indicators API on one HTTPS port.

    Use as a context manager or call ``start()``/``stop()``. Every knob below is a plain
    attribute that may be changed while the server runs. MSAL (client-credentials grant)::

        with DefenderEmulator() as emu:
            app = msal.ConfidentialClientApplication(
                emu.client_id, client_credential=emu.client_secret,
                authority=f"{emu.login_url}/{emu.tenant_id}", instance_discovery=False,
                http_client=session_that_verifies_with(emu.ca_file))
            token = app.acquire_token_for_client(scopes=[emu.scope])["access_token"]
            httpx.get(f"{emu.url}/api/indicators", verify=emu.ca_file,
                      headers={"Authorization": f"Bearer {token}"})

    ``rate_limit_scale`` multiplies every documented limit (0.1 -> import allows 3 calls a minute);
    ``page_size`` is the page used without ``$top``; ``public_ips_only``, ``roles``,
    ``batch_delete_atomic``, ``upsert_key``, ``batch_rejection``, ``deny_values``, ``echo``,
    ``odata`` (with ``odata_node_limit`` and ``url_limit``), ``deprecation``, ``sunset``,
    ``retired`` and ``token_format`` select the UNCONFIRMED behaviours listed in the package
    docstring. ``strict=True`` applies ``STRICT_PRESET`` over the other keywords (see
    ``make_strict``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = True,
        tenant_id: str = "00000000-0000-4000-8000-000000000001",
        client_id: str = "11111111-1111-4111-8111-111111111111",
        client_secret: str = "emulator-secret",
        extra_clients: dict[str, str] | None = None,
        app_name: str = "OpenCTI Defender Reconciler",
        token_lifetime: int = 3599,
        clock: EmulatorClock | None = None,
        rate_limits: bool = True,
        strict_casing: bool = True,
        seed: int = 0,
        quota: int = 15000,
        upsert_key: tuple[str, ...] = ("indicatorType", "indicatorValue", "action"),
        batch_delete_atomic: bool = True,
        cert_dir: str | Path | None = None,
        public_ips_only: bool = True,
        rate_limit_scale: float = 1.0,
        page_size: int = DEFAULT_PAGE_SIZE,
        scope: str = SCOPE,
        roles: tuple[str, ...] = (READ_WRITE_ALL,),
        batch_rejection: str = "per_item",
        deny_values: tuple[str, ...] = DEFAULT_DENY_VALUES,
        echo: str = "as_sent",
        odata: str = "lenient",
        odata_node_limit: int = 100,
        url_limit: int = 2048,
        deprecation: bool = False,
        sunset: str | None = DEFAULT_SUNSET,
        retired: bool = False,
        token_format: str = "jwt",
        strict: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        #: more applications registered in the tenant: client id → secret (all with the same
        #: roles; the request log tells them apart by ``client_id``)
        self.extra_clients: dict[str, str] = dict(extra_clients or {})
        self.app_name = app_name
        self.token_lifetime = token_lifetime
        self.clock: EmulatorClock = clock if clock is not None else RealClock()
        self.rate_limits = rate_limits
        self.rate_limit_scale = rate_limit_scale
        self.strict_casing = strict_casing
        self.public_ips_only = public_ips_only
        self.seed = seed
        self.quota = quota
        self.batch_delete_atomic = batch_delete_atomic
        self.page_size = page_size
        self.scope = scope
        self.roles = tuple(roles)
        self.upsert_key = tuple(upsert_key)
        self.batch_rejection = _choice("batch_rejection", batch_rejection, BATCH_REJECTIONS)
        self.deny_values = tuple(deny_values)
        self.echo = _choice("echo", echo, ECHO_MODES)
        self.odata = _choice("odata", odata, ODATA_MODES)
        self.odata_node_limit = odata_node_limit
        self.url_limit = url_limit
        self.deprecation = deprecation
        self.sunset = check_sunset(sunset)
        self.retired = retired
        self.token_format = _choice("token_format", token_format, TOKEN_FORMATS)
        self.cert_dir = Path(cert_dir) if cert_dir is not None else None
        self.ca_file = ""
        self.requests: list[RequestRecord] = []

        self._store = Store(self.upsert_key, self.echo == "equivalent")
        self._lock = threading.RLock()  # guards _store and _tokens
        self._log_lock = threading.Lock()  # guards requests
        self._tokens: dict[str, Token] = {}
        self._token_key = secrets.token_bytes(32)  # signs the JWT-shaped access tokens
        self._limiter = RateLimiter()
        self._injector = FaultInjector(seed)
        self._certificates = Certificates()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        if strict:
            self.make_strict()

    def make_strict(self) -> DefenderEmulator:
        """Turn on every strict variant at once (``STRICT_PRESET``); usable while running."""
        for name, value in STRICT_PRESET.items():
            setattr(self, name, value)
        return self

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> DefenderEmulator:
        """Bind, write the CA file (TLS), serve in a daemon thread; return self."""
        if self._server is not None:
            return self
        context = None
        if self.tls:
            context, self.ca_file = self._certificates.server_context(self.cert_dir)
        self._server = Server((self.host, self.port), self, context)
        self.port = int(self._server.server_address[1])
        self._thread = serve_in_thread(self._server, f"defender-emulator:{self.port}")
        logger.debug("defender emulator listening on {}", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, close open connections, remove a temporary certificate folder."""
        server, self._server = self._server, None
        if server is None:
            return
        stop_serving(server, self._thread)
        self._certificates.remove_own_dir()

    def __enter__(self) -> DefenderEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """API base, e.g. ``https://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def login_url(self) -> str:
        """Login host; the MSAL authority is ``f"{login_url}/{tenant_id}"``."""
        return self.url

    @property
    def authority(self) -> str:
        return f"{self.login_url}/{self.tenant_id}"

    # ---------------------------------------------------------------- state helpers

    def add_indicator(self, **fields: Any) -> RawIndicator:
        """Insert a row directly (default: portal-made); skips validation and the quota."""
        stamp = format_timestamp(self.clock.now())
        with self._lock:
            return self._configured_store().add_portal_row(fields, stamp)

    def indicators(self, include_expired: bool = False) -> list[RawIndicator]:
        """Snapshot of stored rows in id order (active only unless ``include_expired``)."""
        with self._lock:
            if not include_expired:
                self._store.purge(self.clock.now())
            return [copy_row(row) for row in self._store.rows.values()]

    def get(self, id: str | int) -> RawIndicator | None:
        with self._lock:
            self._store.purge(self.clock.now())
            row = self._store.rows.get(int_id(id))
            return copy_row(row) if row is not None else None

    def update_indicator(self, id: str | int, **fields: Any) -> RawIndicator:
        """Simulate a portal edit; ``lastUpdatedBy`` defaults to a portal user."""
        with self._lock:
            store = self._current_store()
            return store.edit_portal_row(id, fields, format_timestamp(self.clock.now()))

    def delete_indicator(self, id: str | int) -> bool:
        with self._lock:
            return self._store.remove(int_id(id))

    def clear(self) -> None:
        """Forget every indicator (ids keep increasing, as in a real tenant)."""
        with self._lock:
            self._store.clear()

    # ---------------------------------------------------------------- knobs

    def set_faults(
        self,
        *,
        p429: float = 0.0,
        p500: float = 0.0,
        p503: float = 0.0,
        p_drop: float = 0.0,
        latency: float = 0.0,
        retry_after: int = 1,
        endpoints: list[str] | tuple[str, ...] | set[str] | None = None,
        p_timeout: float = 0.0,
        stall: float = 1.0,
    ) -> None:
        """Random faults per matching request; re-seeds the RNG so a run is reproducible.

        ``p_timeout``: the request waits ``stall`` seconds and is then served normally (a client
        with a shorter timeout gives up first, while the write still happens, late)."""
        chosen = frozenset(endpoints) if endpoints is not None else API_ENDPOINTS
        faults = Faults(p429, p500, p503, p_drop, latency, retry_after, chosen, p_timeout, stall)
        self._injector.configure(faults, self.seed)

    def force_responses(self, endpoint: str, statuses: list[int], retry_after: int = 1) -> None:
        """The next requests to ``endpoint`` get these statuses in order (0 drops the socket)."""
        self._injector.force(endpoint, statuses, retry_after)

    def on_request(self, hook: Callable[[str, str, str], None] | None) -> None:
        """Call ``hook(endpoint, method, path)`` before handling each request (None clears)."""
        self._injector.hook = hook

    def reset_rate_limits(self) -> None:
        self._limiter.reset()

    def reset(self) -> None:
        """A fresh tenant: no rows (ids restart at 1), tokens, faults, forced statuses, hook,
        log or spent rate budget. Knob attributes keep their current values."""
        self.clear()
        with self._lock:
            self._store.next_id = 1
            self._tokens.clear()
        self._injector.clear_forced()
        self.set_faults()
        self.on_request(None)
        self.reset_log()
        self.reset_rate_limits()

    # ---------------------------------------------------------------- log

    def counts(self) -> collections.Counter[str]:
        with self._log_lock:
            return collections.Counter(record.endpoint for record in self.requests)

    def reset_log(self) -> None:
        with self._log_lock:
            self.requests.clear()

    # ---------------------------------------------------------------- requests

    def _configured_store(self) -> Store:
        """The store indexed by the current ``upsert_key`` and ``echo`` (caller holds the lock)."""
        self._store.configure(tuple(self.upsert_key), self.echo == "equivalent")
        return self._store

    def _current_store(self) -> Store:
        """The configured store without expired rows (the caller holds the lock)."""
        store = self._configured_store()
        store.purge(self.clock.now())
        return store

    def _handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response:
        """Answer one request (called by the server's handler threads)."""
        return routing.handle(self, method, raw_path, headers, body)
