"""Tokens: cached, refreshed on the clock, forced once after a 401, errors clear and secret-free,
and TLS pinned to the configured CA bundle whatever the environment says."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from reconciler.clock import FakeClock
from reconciler.defender import DefenderClient, TokenProvider
from reconciler.errors import AuthError, DefenderError, TransientError
from reconciler.sandbox.defender import DefenderEmulator


def test_one_token_serves_many_calls(emu: DefenderEmulator, client: DefenderClient) -> None:
    for _ in range(5):
        client.list_indicators()
    counts = emu.counts()
    assert counts["token"] == 1
    assert counts["list"] == 5


def test_token_refreshed_on_the_clock_before_expiry(
    emu: DefenderEmulator, clock: FakeClock, make_provider, make_client
) -> None:
    emu.token_lifetime = 5
    provider = make_provider()
    client = make_client(provider=provider)
    client.list_indicators()
    clock.advance(1)
    client.list_indicators()
    assert emu.counts()["token"] == 1
    clock.advance(10)  # past expiry on both clocks
    client.list_indicators()
    assert emu.counts()["token"] == 2
    # Refreshed ahead of time: the API never saw an expired token.
    assert [r.status for r in emu.requests if r.endpoint == "list"] == [200, 200, 200]


def test_401_forces_exactly_one_refresh(emu: DefenderEmulator, make_provider, make_client) -> None:
    # The emulator's clock moves but ours does not: our cached token looks fresh to us while the
    # API already considers it expired, so only the 401 path can recover.
    emu.token_lifetime = 5
    client = make_client(provider=make_provider(clock=FakeClock()))
    client.list_indicators()
    emu.clock.advance(10)
    client.list_indicators()
    assert emu.counts()["token"] == 2
    assert [r.status for r in emu.requests if r.endpoint == "list"] == [200, 401, 200]
    assert client.calls[("list", 200)] == 2


def test_on_token_hook_sees_each_new_token(emu: DefenderEmulator, make_provider) -> None:
    seen: list[str] = []
    provider = make_provider(on_token=seen.append)
    first = provider.token()
    assert provider.token() == first
    second = provider.token(force=True)
    assert seen == [first, second]
    assert first != second
    assert provider.acquired == 2


def test_wrong_secret_is_a_clear_auth_error_without_the_secret(
    emu: DefenderEmulator, make_provider, make_client
) -> None:
    secret = "not-the-secret-Zq81x"
    client = make_client(provider=make_provider(client_secret=secret))
    with pytest.raises(AuthError) as caught:
        client.list_indicators()
    message = str(caught.value)
    assert "invalid_client" in message or "7000215" in message
    assert emu.client_id in message
    assert secret not in message
    assert secret not in repr(caught.value)
    assert emu.counts()["list"] == 0


def test_unknown_tenant_is_an_auth_error(emu: DefenderEmulator, make_provider) -> None:
    with pytest.raises(AuthError):
        make_provider(tenant_id="00000000-0000-0000-0000-000000000000").token()


def test_login_host_down_is_transient(emu: DefenderEmulator, make_provider) -> None:
    provider = make_provider(login_url="https://127.0.0.1:9", timeout=2.0)
    with pytest.raises(TransientError):
        provider.token()


def test_repr_hides_the_secret(make_provider) -> None:
    provider = make_provider(client_secret="s3cr3t-value")
    assert "s3cr3t-value" not in repr(provider)


def _foreign_ca(tmp_path: Path) -> str:
    path = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


def test_ca_bundle_wins_over_ca_environment_variables(
    emu: DefenderEmulator, make_client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = _foreign_ca(tmp_path)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(name, other)
    client = make_client()
    assert client.list_indicators() == []
    assert emu.counts()["token"] == 1


def test_without_ca_bundle_the_environment_decides(
    emu: DefenderEmulator,
    make_provider,
    make_client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Control for the test above: the foreign CA really does break TLS when not overridden.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", _foreign_ca(tmp_path))
    provider: TokenProvider = make_provider(ca_bundle=None)
    with pytest.raises(DefenderError):
        provider.token()


@pytest.mark.parametrize("statuses", [[503], [429], [0], [500, 503, 0]], ids=str)
def test_token_endpoint_faults_are_retried(
    emu: DefenderEmulator, client: DefenderClient, statuses: list[int]
) -> None:
    emu.force_responses("token", statuses, retry_after=1)
    assert client.list_indicators() == []
    assert emu.counts()["token"] == len(statuses) + 1
    assert client.calls[("token", 0)] == len(statuses)
    assert client.calls[("list", 200)] == 1


def test_second_401_is_an_auth_error(emu: DefenderEmulator, client: DefenderClient) -> None:
    emu.force_responses("list", [401, 401])
    with pytest.raises(AuthError) as caught:
        client.list_indicators()
    assert caught.value.status == 401
    assert emu.counts()["token"] == 2  # the first token, then exactly one forced refresh
    assert emu.counts()["list"] == 2


def test_configured_ca_bundle_wins_through_settings_and_wiring(
    emu: DefenderEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path users take: ``microsoft_defender_intel.ca_bundle`` in the config, a foreign CA
    in every CA environment variable, the client built by ``open_engine``."""
    from reconciler.config import load_settings
    from reconciler.wiring import open_engine

    other = _foreign_ca(tmp_path)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(name, other)
    settings = load_settings(
        None,
        env={"MICROSOFT_DEFENDER_INTEL_CA_BUNDLE": emu.ca_file},
        overrides={
            "opencti.url": "http://127.0.0.1:9",
            "opencti.token": "unused-token",
            "connector.id": "c0ffee00-0000-4000-8000-00000000ca00",
            "connector.live_stream_id": "unused",
            "microsoft_defender_intel.tenant_id": emu.tenant_id,
            "microsoft_defender_intel.client_id": emu.client_id,
            "microsoft_defender_intel.client_secret": emu.client_secret,
            "microsoft_defender_intel.login_url": emu.login_url,
            "microsoft_defender_intel.base_url": emu.url,
        },
    )
    with open_engine(settings) as engine:
        assert engine.read_actual().owned == ()
    assert emu.counts()["token"] == 1 and emu.counts()["list"] == 1
