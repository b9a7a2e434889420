"""Entra login side of the emulator: discovery, token endpoint, MSAL, API bearer checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import msal
import pytest
import requests

from reconciler.sandbox.defender import DefenderEmulator


def token_form(emu: DefenderEmulator, **overrides: str) -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
        "scope": emu.scope,
    }
    form.update(overrides)
    return form


def test_openid_configuration_points_back_at_the_emulator(
    emu: DefenderEmulator, http: httpx.Client
) -> None:
    doc = http.get(f"/{emu.tenant_id}/v2.0/.well-known/openid-configuration").json()
    base = f"https://127.0.0.1:{emu.port}/{emu.tenant_id}"
    assert doc["token_endpoint"] == f"{base}/oauth2/v2.0/token"
    assert doc["authorization_endpoint"] == f"{base}/oauth2/v2.0/authorize"
    assert doc["issuer"] == f"{base}/v2.0"
    assert "device_authorization_endpoint" in doc and "jwks_uri" in doc


def test_openid_configuration_unknown_tenant(emu: DefenderEmulator, http: httpx.Client) -> None:
    response = http.get("/not-a-tenant/v2.0/.well-known/openid-configuration")
    assert response.status_code == 400
    assert response.json()["error_codes"] == [90002]


def test_instance_discovery_is_served(emu: DefenderEmulator, http: httpx.Client) -> None:
    doc = http.get("/common/discovery/instance", params={"api-version": "1.1"}).json()
    assert doc["tenant_discovery_endpoint"].endswith("/v2.0/.well-known/openid-configuration")
    assert emu.counts()["discovery"] == 1


def test_token_success_shape(emu: DefenderEmulator, http: httpx.Client) -> None:
    emu.token_lifetime = 1234
    response = http.post(f"/{emu.tenant_id}/oauth2/v2.0/token", data=token_form(emu))
    assert response.status_code == 200
    payload = response.json()
    assert payload["token_type"] == "Bearer"
    assert payload["expires_in"] == 1234
    assert payload["access_token"]
    assert response.headers["cache-control"] == "no-store, no-cache"
    record = emu.requests[-1]
    assert record.endpoint == "token" and record.client_id == emu.client_id
    assert "client_secret" not in record.body  # the log never keeps the secret


@pytest.mark.parametrize(
    ("overrides", "tenant", "status", "error", "code"),
    [
        ({"client_secret": "wrong"}, None, 401, "invalid_client", 7000215),
        ({"scope": "https://vault.azure.net/.default"}, None, 400, "invalid_scope", 70011),
        (
            {"client_id": "22222222-2222-4222-8222-222222222222"},
            None,
            400,
            "unauthorized_client",
            700016,
        ),
        ({"grant_type": "password"}, None, 400, "unsupported_grant_type", 70003),
        ({}, "other-tenant", 400, "invalid_request", 90002),
    ],
    ids=["wrong-secret", "wrong-scope", "unknown-client", "wrong-grant", "unknown-tenant"],
)
def test_token_errors(
    emu: DefenderEmulator,
    http: httpx.Client,
    overrides: dict[str, str],
    tenant: str | None,
    status: int,
    error: str,
    code: int,
) -> None:
    response = http.post(
        f"/{tenant or emu.tenant_id}/oauth2/v2.0/token", data=token_form(emu, **overrides)
    )
    assert response.status_code == status
    payload = response.json()
    assert payload["error"] == error
    assert payload["error_codes"] == [code]
    assert payload["error_description"].startswith(f"AADSTS{code}:")


def test_token_v1_with_resource(emu: DefenderEmulator, http: httpx.Client) -> None:
    form = token_form(emu, resource="https://api.securitycenter.microsoft.com")
    del form["scope"]
    response = http.post(f"/{emu.tenant_id}/oauth2/token", data=form)
    assert response.status_code == 200
    assert response.json()["expires_in"] == "3599"  # v1 sends strings
    form["resource"] = "https://example.com"
    assert http.post(f"/{emu.tenant_id}/oauth2/token", data=form).status_code == 400


def test_token_accepts_http_basic_credentials(emu: DefenderEmulator, http: httpx.Client) -> None:
    form = {"grant_type": "client_credentials", "scope": emu.scope}
    response = http.post(
        f"/{emu.tenant_id}/oauth2/v2.0/token",
        data=form,
        auth=(emu.client_id, emu.client_secret),
    )
    assert response.status_code == 200


class _VerifyingSession(requests.Session):
    """Forces the emulator CA on every request, as MSAL's http_client."""

    def __init__(self, ca_file: str) -> None:
        super().__init__()
        self.trust_env = False
        self.ca_file = ca_file

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs["verify"] = self.ca_file
        return super().request(method, url, *args, **kwargs)


def _msal_app(emu: DefenderEmulator, secret: str) -> Any:
    return msal.ConfidentialClientApplication(
        emu.client_id,
        client_credential=secret,
        authority=f"{emu.login_url}/{emu.tenant_id}",
        instance_discovery=False,
        http_client=_VerifyingSession(emu.ca_file),
    )


def test_msal_gets_a_token_and_caches_it(emu: DefenderEmulator) -> None:
    app = _msal_app(emu, emu.client_secret)
    first = app.acquire_token_for_client(scopes=[emu.scope])
    assert "access_token" in first, first
    second = app.acquire_token_for_client(scopes=[emu.scope])
    assert second["access_token"] == first["access_token"]
    assert emu.counts()["token"] == 1
    assert emu.counts()["openid"] == 1


def test_msal_wrong_secret_returns_invalid_client(emu: DefenderEmulator) -> None:
    result = _msal_app(emu, "not-the-secret").acquire_token_for_client(scopes=[emu.scope])
    assert result.get("error") == "invalid_client"
    assert 7000215 in result.get("error_codes", [])


def test_msal_token_works_on_the_api(emu: DefenderEmulator, http: httpx.Client) -> None:
    token = _msal_app(emu, emu.client_secret).acquire_token_for_client(scopes=[emu.scope])
    response = http.get(
        "/api/indicators", headers={"Authorization": f"Bearer {token['access_token']}"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer not-a-token", "Basic abc"],
    ids=["missing", "empty", "unknown", "wrong-scheme"],
)
def test_api_rejects_bad_bearer(
    emu: DefenderEmulator, http: httpx.Client, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = http.get("/api/indicators", headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "Unauthorized"
    assert len(error["target"]) == 36


def test_token_expires_on_the_emulator_clock(
    emu: DefenderEmulator, http: httpx.Client, get_token: Callable[[], str], clock: Any
) -> None:
    emu.token_lifetime = 600
    headers = {"Authorization": f"Bearer {get_token()}"}
    clock.advance(599)
    assert http.get("/api/indicators", headers=headers).status_code == 200
    clock.advance(1)
    response = http.get("/api/indicators", headers=headers)
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


def test_created_by_comes_from_the_token(
    emu: DefenderEmulator, api: httpx.Client, body: Callable[..., dict[str, Any]]
) -> None:
    row = api.post("/api/indicators", json=body()).json()
    assert row["createdBy"] == emu.client_id
    assert emu.requests[-1].client_id == emu.client_id


def _bearer(http: httpx.Client, emu: DefenderEmulator, scope: str | None = None) -> dict[str, str]:
    form = token_form(emu, scope=scope or emu.scope)
    token = http.post(f"/{emu.tenant_id}/oauth2/v2.0/token", data=form).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def test_token_for_the_new_api_host_is_refused_by_the_api(
    emu: DefenderEmulator, http: httpx.Client
) -> None:
    headers = _bearer(http, emu, "https://api.security.microsoft.com/.default")
    response = http.get("/api/indicators", headers=headers)
    assert response.status_code == 403
    assert "audience" in response.json()["error"]["message"]


def test_missing_roles_is_forbidden(emu: DefenderEmulator, http: httpx.Client) -> None:
    emu.roles = ("Machine.Read.All",)
    response = http.get("/api/indicators", headers=_bearer(http, emu))
    assert response.status_code == 403
    assert response.json()["error"]["message"].startswith("Missing application roles.")


def test_read_all_may_list_but_not_write(
    emu: DefenderEmulator, http: httpx.Client, body: Callable[..., dict[str, Any]]
) -> None:
    emu.roles = ("Ti.Read.All",)
    headers = _bearer(http, emu)
    assert http.get("/api/indicators", headers=headers).status_code == 200
    assert http.post("/api/indicators", json=body(), headers=headers).status_code == 403


def test_read_write_sees_and_changes_only_its_own(
    emu: DefenderEmulator, http: httpx.Client, body: Callable[..., dict[str, Any]]
) -> None:
    portal = emu.add_indicator(indicatorType="FileSha1", indicatorValue="a" * 40, action="Block")
    emu.roles = ("Ti.ReadWrite",)
    headers = _bearer(http, emu)
    own = http.post("/api/indicators", json=body(indicatorValue="b" * 40), headers=headers).json()
    listed = http.get("/api/indicators", headers=headers).json()["value"]
    assert [row["id"] for row in listed] == [own["id"]]
    assert http.post("/api/indicators", json=body(), headers=headers).status_code == 403
    assert http.delete(f"/api/indicators/{portal['id']}", headers=headers).status_code == 403
    batch = {"IndicatorIds": [own["id"], portal["id"]]}
    assert http.post("/api/indicators/BatchDelete", json=batch, headers=headers).status_code == 403
    assert len(emu.indicators()) == 2
    assert http.delete(f"/api/indicators/{own['id']}", headers=headers).status_code == 204
