"""``DefenderEmulator``: the facade of the Defender emulator, its knobs and lifecycle.

Owns the emulator's configuration (plain attributes, changeable while it runs), its state
objects (store, alerts, issued tokens, rate limiter, fault injector, request log), the test hooks
raising hits (alerts served by Graph) and starting/stopping the server; the work itself lives in
the modules that own it (``routing``, ``login``, ``api``, ``graph``, ``alerts``, ``store``,
``limits``, ``server``). See the package docstring for the documented choices.
"""

from __future__ import annotations

import collections
import copy
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from loguru import logger

from reconciler.sandbox.defender import routing
from reconciler.sandbox.defender.alerts import (
    CUSTOM_TI,
    Alert,
    AlertList,
    build_alert,
    matching_indicator,
)
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
from reconciler.sandbox.defender.graph import (
    DEFAULT_TOP,
    DETECTION_SOURCE_FILTER,
    NEXT_LINK,
    ORDERBY,
    TOP_OVER_MAX,
)
from reconciler.sandbox.defender.lifecycle import DEFAULT_SUNSET, check_sunset
from reconciler.sandbox.defender.limits import FaultInjector, Faults, RateLimiter
from reconciler.sandbox.defender.login import (
    ALERT_READ_ALL,
    GRAPH_SCOPE,
    READ_WRITE_ALL,
    SCOPE,
    TOKEN_FORMATS,
    Token,
)
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

    ``graph=True`` also serves Microsoft Graph's ``GET /v1.0/security/alerts_v2`` on the same
    port (base URL ``emu.url``; token scope ``GRAPH_SCOPE``, roles ``graph_roles``) and the HTTP
    test hook ``POST /_test/hits``; the ``graph_*`` keywords select its undocumented behaviours.
    ``raise_hit`` adds an alert (any time, Graph served or not).
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
        graph: bool = True,
        graph_roles: tuple[str, ...] = (ALERT_READ_ALL,),
        graph_detection_source_filter: str = "accepted",
        graph_next_link: str = "present",
        graph_default_top: int = DEFAULT_TOP,
        graph_max_top: int = DEFAULT_TOP,
        graph_top_over_max: str = "cap",
        graph_max_skip: int | None = None,
        graph_orderby: str = "refused",
        graph_rate_limit_per_minute: int | None = None,
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
        #: serve Microsoft Graph (alerts_v2, Graph tokens, ``POST /_test/hits``)
        self.graph = graph
        #: application roles of Graph tokens (captured when issued)
        self.graph_roles = tuple(graph_roles)
        self.graph_detection_source_filter = _choice(
            "graph_detection_source_filter", graph_detection_source_filter, DETECTION_SOURCE_FILTER
        )
        self.graph_next_link = _choice("graph_next_link", graph_next_link, NEXT_LINK)
        self.graph_default_top = graph_default_top
        self.graph_max_top = graph_max_top
        self.graph_top_over_max = _choice("graph_top_over_max", graph_top_over_max, TOP_OVER_MAX)
        self.graph_max_skip = graph_max_skip
        self.graph_orderby = _choice("graph_orderby", graph_orderby, ORDERBY)
        self.graph_rate_limit_per_minute = graph_rate_limit_per_minute
        self.cert_dir = Path(cert_dir) if cert_dir is not None else None
        self.ca_file = ""
        self.requests: list[RequestRecord] = []

        self._store = Store(self.upsert_key, self.echo == "equivalent")
        self._alerts = AlertList()
        self._lock = threading.RLock()  # guards _store, _alerts and _tokens
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

    @property
    def graph_url(self) -> str:
        """Graph base (the root, like ``https://graph.microsoft.com``): this same server."""
        return self.url

    @property
    def graph_scope(self) -> str:
        """The scope a client requests for a Graph token (v1: resource without ``/.default``)."""
        return GRAPH_SCOPE

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

    # ---------------------------------------------------------------- alerts (hits)

    def raise_hit(
        self,
        indicator_type: str,
        value: str,
        *,
        device: str = "DEVICE-1",
        at: datetime | None = None,
        alert_id: str | None = None,
        detection_source: str = CUSTOM_TI,
    ) -> Alert:
        """A device hit ``value``: add the Graph alert (see ``alerts``) and return a copy.

        ``at`` (naive means UTC; default the clock's now) is its creation, update and activity
        time. Title, description and severity come from the tenant's matching indicator, if
        any. An existing ``alert_id`` is hit again: its update and last activity times move
        to ``at`` (when later) and new evidence is added; it keeps its place in the list."""
        moment = self.clock.now() if at is None else at
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        with self._lock:
            self._store.purge(self.clock.now())
            row = matching_indicator(self._store.rows.values(), indicator_type, value)
            existing = self._alerts.get(alert_id) if alert_id is not None else None
            if existing is not None:
                ident, incident = existing["id"], existing["incidentId"]
            elif alert_id is not None:
                ident, incident = alert_id, self._alerts.new_ids(moment, value)[1]
            else:
                ident, incident = self._alerts.new_ids(moment, f"{indicator_type}|{value}")
            alert = build_alert(
                alert_id=ident,
                incident_id=incident,
                tenant_id=self.tenant_id,
                indicator_type=indicator_type,
                value=value,
                device=device,
                at=moment,
                detection_source=detection_source,
                indicator=row,
            )
            if existing is not None:
                alert = self._alerts.merge(existing, alert)
            else:
                self._alerts.add(alert)
            return copy.deepcopy(alert)

    def alerts(self) -> list[Alert]:
        """Copies of the alerts, in the order they were raised."""
        with self._lock:
            return self._alerts.snapshot()

    def update_alert(self, alert_id: str, **fields: Any) -> Alert:
        """Edit an alert as the portal would (e.g. ``status="resolved"``); its
        ``lastUpdateDateTime`` becomes the clock's now unless given. KeyError when unknown."""
        stamp = format_timestamp(self.clock.now())
        with self._lock:
            return copy.deepcopy(self._alerts.edit(alert_id, fields, stamp))

    def clear_alerts(self) -> None:
        with self._lock:
            self._alerts.clear()

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
        """A fresh tenant: no rows (ids restart at 1), alerts, tokens, faults, forced statuses,
        hook, log or spent rate budget. Knob attributes keep their current values."""
        self.clear()
        self.clear_alerts()
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
