"""Fixtures for the Defender emulator tests: one server per module, reset for every test.

The clock is a tiny manual clock defined here (duck-typed like the emulator expects), so these
tests depend on nothing from ``reconciler`` but the emulator itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from reconciler.sandbox.defender import DEFAULT_DENY_VALUES, DEFAULT_SUNSET, DefenderEmulator

START = datetime(2026, 1, 1, tzinfo=UTC)


class ManualClock:
    """Moves only when told to."""

    def __init__(self, start: datetime = START) -> None:
        self._now = start
        self._mono = 1000.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds


@pytest.fixture(scope="module")
def server() -> Iterator[DefenderEmulator]:
    with DefenderEmulator(clock=ManualClock()) as emulator:
        yield emulator


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emu(server: DefenderEmulator, clock: ManualClock) -> DefenderEmulator:
    """The module's emulator, emptied, on a fresh manual clock, limits off, default knobs."""
    server.reset()
    server.clock = clock
    server.rate_limits = False
    server.rate_limit_scale = 1.0
    server.strict_casing = True
    server.public_ips_only = True
    server.quota = 15000
    server.batch_delete_atomic = True
    server.page_size = 10_000
    server.token_lifetime = 3599
    server.roles = ("Ti.ReadWrite.All",)
    server.upsert_key = ("indicatorType", "indicatorValue", "action")
    server.batch_rejection = "per_item"
    server.deny_values = DEFAULT_DENY_VALUES
    server.echo = "as_sent"
    server.odata = "lenient"
    server.odata_node_limit = 100
    server.url_limit = 2048
    server.deprecation = False
    server.sunset = DEFAULT_SUNSET
    server.retired = False
    server.token_format = "jwt"
    return server


@pytest.fixture
def http(emu: DefenderEmulator) -> Iterator[httpx.Client]:
    """A plain client trusting the emulator's CA, no token."""
    with httpx.Client(base_url=emu.url, verify=emu.ca_file, timeout=10) as client:
        yield client


@pytest.fixture
def get_token(emu: DefenderEmulator, http: httpx.Client) -> Callable[[], str]:
    def fetch() -> str:
        response = http.post(
            f"/{emu.tenant_id}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": emu.client_id,
                "client_secret": emu.client_secret,
                "scope": emu.scope,
            },
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    return fetch


@pytest.fixture
def api(emu: DefenderEmulator, get_token: Callable[[], str]) -> Iterator[httpx.Client]:
    """A client with a valid bearer token."""
    headers = {"Authorization": f"Bearer {get_token()}"}
    with httpx.Client(base_url=emu.url, verify=emu.ca_file, headers=headers, timeout=10) as c:
        yield c


def make_body(**overrides: Any) -> dict[str, Any]:
    """A valid submit body (FileSha1 Block); ``None`` values remove a field."""
    body: dict[str, Any] = {
        "indicatorValue": "a" * 40,
        "indicatorType": "FileSha1",
        "action": "Block",
        "title": "OpenCTI indicator",
        "description": "from tests",
        "application": "opencti",
        "severity": "High",
        "expirationTime": "2030-01-01T00:00:00Z",
        "generateAlert": True,
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


@pytest.fixture
def body() -> Callable[..., dict[str, Any]]:
    return make_body
