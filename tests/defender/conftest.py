"""Fixtures for the Defender client tests: a fresh emulator per test on a shared fake clock,
clients and token providers pointed at it, and valid indicator bodies."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reconciler.clock import FakeClock
from reconciler.defender import BearerAuth, DefenderClient, TokenProvider
from reconciler.sandbox.defender import DefenderEmulator


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emu(clock: FakeClock) -> Iterator[DefenderEmulator]:
    with DefenderEmulator(clock=clock, seed=0) as server:
        yield server


def provider_for(server: DefenderEmulator, **overrides: Any) -> TokenProvider:
    options: dict[str, Any] = {
        "tenant_id": server.tenant_id,
        "client_id": server.client_id,
        "client_secret": server.client_secret,
        "login_url": server.login_url,
        "scope": server.scope,
        "ca_bundle": server.ca_file,
    }
    options.update(overrides)
    return TokenProvider(**options)


ProviderFactory = Callable[..., TokenProvider]
Connect = Callable[..., DefenderClient]
ClientFactory = Callable[..., DefenderClient]


@pytest.fixture
def make_provider(emu: DefenderEmulator, clock: FakeClock) -> ProviderFactory:
    """Token providers for ``emu``; keyword arguments override the emulator's credentials."""

    def factory(**overrides: Any) -> TokenProvider:
        overrides.setdefault("clock", clock)
        return provider_for(emu, **overrides)

    return factory


@pytest.fixture
def connect(clock: FakeClock) -> Iterator[Connect]:
    """``connect(server, provider=None, **client_kwargs)``: a client for any emulator, closed
    at the end of the test."""
    made: list[DefenderClient] = []

    def factory(
        server: DefenderEmulator, provider: TokenProvider | None = None, **kwargs: Any
    ) -> DefenderClient:
        provider = provider or provider_for(server, clock=clock)
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("verify", server.ca_file)
        kwargs.setdefault("seed", 7)
        client = DefenderClient(server.url, BearerAuth(provider), **kwargs)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


@pytest.fixture
def make_client(emu: DefenderEmulator, connect: Connect) -> ClientFactory:
    """Clients for ``emu``; keyword arguments go to ``DefenderClient`` (``provider=`` too)."""
    return lambda **kwargs: connect(emu, **kwargs)


@pytest.fixture
def client(make_client: ClientFactory) -> DefenderClient:
    return make_client()


BodyFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def make_body() -> BodyFactory:
    """Valid import/submit bodies: ``make_body(i)`` is a FileSha256 indicator unique per ``i``."""

    def factory(i: int, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "indicatorValue": hashlib.sha256(str(i).encode()).hexdigest(),
            "indicatorType": "FileSha256",
            "action": "Block",
            "title": f"indicator {i}",
            "description": "from the client tests",
            "severity": "High",
            "application": "opencti",
            "generateAlert": True,
        }
        body.update(fields)
        return body

    return factory
