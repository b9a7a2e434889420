"""Microsoft Graph on the emulator: Graph tokens, audiences, roles, Graph's errors, the request
log, throttling, faults and the command line of the Graph switches."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from reconciler.sandbox.defender import (
    GRAPH_SCOPE,
    DefenderEmulator,
    describe,
    emulator_options,
    main,
)

ALERTS = "/v1.0/security/alerts_v2"


@pytest.fixture
def g(emu: DefenderEmulator) -> Iterator[DefenderEmulator]:
    """The module's emulator serving Graph, every Graph knob at its default."""
    emu.graph = True
    emu.graph_roles = ("SecurityAlert.Read.All",)
    emu.graph_detection_source_filter = "accepted"
    emu.graph_next_link = "present"
    emu.graph_default_top = 2000
    emu.graph_max_top = 2000
    emu.graph_top_over_max = "cap"
    emu.graph_max_skip = None
    emu.graph_orderby = "refused"
    emu.graph_rate_limit_per_minute = None
    yield emu
    emu.graph = False


def _form(emu: DefenderEmulator, scope: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
        "scope": scope,
    }


def _token(http: httpx.Client, emu: DefenderEmulator, scope: str = GRAPH_SCOPE) -> str:
    response = http.post(f"/{emu.tenant_id}/oauth2/v2.0/token", data=_form(emu, scope))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _graph_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    inner = error["innerError"]
    assert set(inner) == {"date", "request-id", "client-request-id"}
    assert inner["request-id"] == response.headers["request-id"]
    return dict(error)


# --------------------------------------------------------------------------- tokens


def test_graph_token_v2_has_the_graph_audience_and_graph_roles(
    g: DefenderEmulator, http: httpx.Client
) -> None:
    g.roles = ("Ti.ReadWrite.All",)
    claims = _claims(_token(http, g))
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["roles"] == ["SecurityAlert.Read.All"]
    assert claims["appid"] == g.client_id
    assert g.graph_scope == GRAPH_SCOPE == "https://graph.microsoft.com/.default"
    defender = _claims(_token(http, g, g.scope))
    assert defender["roles"] == ["Ti.ReadWrite.All"]  # Defender roles stay apart


def test_graph_token_v1_with_resource(g: DefenderEmulator, http: httpx.Client) -> None:
    form = _form(g, "")
    del form["scope"]
    form["resource"] = "https://graph.microsoft.com"
    response = http.post(f"/{g.tenant_id}/oauth2/token", data=form)
    assert response.status_code == 200
    assert response.json()["resource"] == "https://graph.microsoft.com"
    assert _claims(response.json()["access_token"])["aud"] == "https://graph.microsoft.com"


def test_graph_scope_is_refused_while_graph_is_off(
    emu: DefenderEmulator, http: httpx.Client
) -> None:
    assert emu.graph is False
    response = http.post(f"/{emu.tenant_id}/oauth2/v2.0/token", data=_form(emu, GRAPH_SCOPE))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert http.get(ALERTS).status_code == 404
    assert http.post("/_test/hits", json={}).status_code == 404


def test_graph_token_is_refused_by_the_indicators_api(
    g: DefenderEmulator, http: httpx.Client
) -> None:
    response = http.get("/api/indicators", headers=_bearer(_token(http, g)))
    assert response.status_code == 403
    assert "audience" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "scope",
    [
        "https://api.securitycenter.microsoft.com/.default",
        "https://api.security.microsoft.com/.default",
    ],
    ids=["defender-api", "new-api-host"],
)
def test_defender_tokens_are_refused_by_graph(
    g: DefenderEmulator, http: httpx.Client, scope: str
) -> None:
    headers = {**_bearer(_token(http, g, scope)), "client-request-id": "my-request-1"}
    response = http.get(ALERTS, headers=headers)
    error = _graph_error(response, 401, "InvalidAuthenticationToken")
    assert error["message"] == "Access token validation failure. Invalid audience."
    assert error["innerError"]["client-request-id"] == "my-request-1"
    assert response.headers["client-request-id"] == "my-request-1"
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert error["innerError"]["date"] == "2026-01-01T00:00:00"  # the emulator's clock


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "Access token is empty."),
        ("Bearer not-a-token", "Access token validation failure. Invalid JWT token."),
        ("Basic abc", "Access token is empty."),
    ],
    ids=["missing", "unknown", "wrong-scheme"],
)
def test_graph_rejects_bad_bearer(
    g: DefenderEmulator, http: httpx.Client, authorization: str | None, message: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    error = _graph_error(http.get(ALERTS, headers=headers), 401, "InvalidAuthenticationToken")
    assert error["message"] == message
    assert error["innerError"]["client-request-id"] == error["innerError"]["request-id"]


def test_graph_token_expires_on_the_clock(
    g: DefenderEmulator, http: httpx.Client, clock: Any
) -> None:
    g.token_lifetime = 600
    headers = _bearer(_token(http, g))
    clock.advance(599)
    assert http.get(ALERTS, headers=headers).status_code == 200
    clock.advance(1)
    error = _graph_error(http.get(ALERTS, headers=headers), 401, "InvalidAuthenticationToken")
    assert "expired" in error["message"]


def test_graph_token_without_alert_role_is_forbidden(
    g: DefenderEmulator, http: httpx.Client
) -> None:
    g.graph_roles = ("User.Read.All",)
    error = _graph_error(http.get(ALERTS, headers=_bearer(_token(http, g))), 403, "Forbidden")
    assert error["message"] == (
        "Missing application roles. API required roles: SecurityAlert.Read.All, "
        "SecurityAlert.ReadWrite.All. Application roles: User.Read.All."
    )


def test_graph_roles_are_captured_when_the_token_is_issued(
    g: DefenderEmulator, http: httpx.Client
) -> None:
    g.graph_roles = ("SecurityAlert.ReadWrite.All",)
    headers = _bearer(_token(http, g))
    g.graph_roles = ()
    assert http.get(ALERTS, headers=headers).status_code == 200
    assert _claims(_token(http, g))["roles"] == []
    assert http.get(ALERTS, headers=_bearer(_token(http, g))).status_code == 403


# --------------------------------------------------------------------------- shape, log


def test_alerts_answer_shape_and_request_log(g: DefenderEmulator, http: httpx.Client) -> None:
    token = _token(http, g)
    g.reset_log()
    response = http.get("/V1.0/Security/Alerts_V2", headers=_bearer(token))  # any case
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["odata-version"] == "4.0"
    assert response.json() == {
        "@odata.context": f"{g.url}/v1.0/$metadata#security/alerts_v2",
        "value": [],
    }
    record = g.requests[-1]
    assert record.endpoint == "alerts" and record.method == "GET" and record.status == 200
    assert record.client_id == g.client_id
    assert record.path == "/V1.0/Security/Alerts_V2"
    http.get(ALERTS)  # refused calls are logged too
    assert g.counts() == {"alerts": 2}
    assert g.requests[-1].status == 401


def test_unknown_graph_paths_and_methods(g: DefenderEmulator, http: httpx.Client) -> None:
    headers = _bearer(_token(http, g))
    error = _graph_error(http.get("/v1.0/security/alerts", headers=headers), 400, "BadRequest")
    assert error["message"] == "Resource not found for the segment 'alerts'."
    _graph_error(http.post(ALERTS, headers=headers, json={}), 405, "MethodNotAllowed")
    assert http.get("/api/indicators", headers=_bearer(_token(http, g, g.scope))).status_code == 200


# --------------------------------------------------------------------------- limits, faults


def test_graph_rate_limit_429_with_retry_after(
    g: DefenderEmulator, http: httpx.Client, clock: Any
) -> None:
    headers = _bearer(_token(http, g))
    assert [http.get(ALERTS, headers=headers).status_code for _ in range(5)] == [200] * 5
    g.graph_rate_limit_per_minute = 3
    g.reset_rate_limits()
    assert [http.get(ALERTS, headers=headers).status_code for _ in range(3)] == [200] * 3
    refused = http.get(ALERTS, headers=headers)
    error = _graph_error(refused, 429, "TooManyRequests")
    assert refused.headers["retry-after"] == "60"
    assert "Try again in 60 seconds" in error["message"]
    clock.advance(40)
    assert http.get(ALERTS, headers=headers).headers["retry-after"] == "20"
    clock.advance(20)
    assert http.get(ALERTS, headers=headers).status_code == 200
    assert http.get("/api/indicators", headers=_bearer(_token(http, g, g.scope))).status_code == 200
    assert [r.status for r in g.requests if r.endpoint == "alerts"][-6:] == [
        200,
        200,
        200,
        429,
        429,
        200,
    ]


def test_forced_and_random_faults_reach_graph_in_its_shape(
    g: DefenderEmulator, http: httpx.Client
) -> None:
    headers = _bearer(_token(http, g))
    g.force_responses("alerts", [503, 429], retry_after=7)
    first = http.get(ALERTS, headers=headers)
    _graph_error(first, 503, "ServiceUnavailable")
    assert first.headers["retry-after"] == "7"
    _graph_error(http.get(ALERTS, headers=headers), 429, "TooManyRequests")
    assert http.get(ALERTS, headers=headers).status_code == 200
    g.set_faults(p500=1.0)  # the default endpoints are the Indicators API's only
    assert http.get(ALERTS, headers=headers).status_code == 200
    g.set_faults(p500=1.0, endpoints=["alerts"])
    _graph_error(http.get(ALERTS, headers=headers), 500, "InternalServerError")
    g.set_faults()


# --------------------------------------------------------------------------- command line


def test_cli_graph_flags() -> None:
    defaults = DefenderEmulator(**emulator_options([]))
    assert defaults.graph is True
    assert DefenderEmulator(**emulator_options(["--no-graph"])).graph is False
    assert defaults.graph_roles == ("SecurityAlert.Read.All",)
    assert defaults.graph_rate_limit_per_minute is None
    argv = [
        "--graph-roles",
        "SecurityAlert.ReadWrite.All, X.Read",
        "--graph-detection-source-filter",
        "refused",
        "--graph-next-link",
        "missing",
        "--graph-default-top",
        "50",
        "--graph-max-top",
        "100",
        "--graph-top-over-max",
        "error",
        "--graph-max-skip",
        "500",
        "--graph-orderby",
        "accepted",
        "--graph-rate-limit-per-minute",
        "30",
    ]
    emulator = DefenderEmulator(**emulator_options(argv))
    assert {
        name: getattr(emulator, name)
        for name in (
            "graph",
            "graph_roles",
            "graph_detection_source_filter",
            "graph_next_link",
            "graph_default_top",
            "graph_max_top",
            "graph_top_over_max",
            "graph_max_skip",
            "graph_orderby",
            "graph_rate_limit_per_minute",
        )
    } == {
        "graph": True,
        "graph_roles": ("SecurityAlert.ReadWrite.All", "X.Read"),
        "graph_detection_source_filter": "refused",
        "graph_next_link": "missing",
        "graph_default_top": 50,
        "graph_max_top": 100,
        "graph_top_over_max": "error",
        "graph_max_skip": 500,
        "graph_orderby": "accepted",
        "graph_rate_limit_per_minute": 30,
    }


def test_unknown_graph_switch_value_is_refused() -> None:
    with pytest.raises(ValueError, match="graph_next_link"):
        DefenderEmulator(graph_next_link="sometimes")


def test_main_prints_the_graph_endpoint() -> None:
    out, stop = io.StringIO(), threading.Event()
    argv = ["--port", "0", "--no-tls", "--graph-next-link", "missing"]
    thread = threading.Thread(target=main, args=(argv,), kwargs={"stop": stop, "out": out})
    thread.start()
    deadline = time.monotonic() + 10
    while "base_url" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=5)
    text = out.getvalue()
    assert "/v1.0/security/alerts_v2" in text and "graph_next_link=missing" in text
    assert "/_test/hits" in text
    with DefenderEmulator(tls=False, graph=False) as plain:
        assert "Graph" not in describe(plain)
