"""Behaviour variants of the emulator around the API itself: OData strictness (``or``, the node
limit, the URL limit), the lifecycle headers and retirement, JWT-shaped tokens, the strict preset
and the command-line flags of every variant; over real sockets where a server is involved."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from reconciler.sandbox.defender import (
    DEFAULT_DENY_VALUES,
    STRICT_PRESET,
    DefenderEmulator,
    emulator_options,
    main,
)

Body = Callable[..., dict[str, Any]]
SIMPLE = "indicatorValue eq 'evil.example.com'"


def listed(api: httpx.Client, expression: str) -> httpx.Response:
    return api.get("/api/indicators", params={"$filter": expression})


def nested_nots(nodes: int) -> str:
    """A filter of exactly ``nodes`` parse-tree nodes: ``not`` x (nodes - 3) over one ``eq``."""
    return "not " * (nodes - 3) + "(title eq 't')"


def target_of_length(length: int, path: str = "/api/indicators") -> str:
    """A request target of exactly ``length`` characters (an ignored query parameter pads it)."""
    prefix = f"{path}?$top=5&pad="
    return prefix + "x" * (length - len(prefix))


# --------------------------------------------------------------------------- OData


@pytest.mark.parametrize(
    ("mode", "expression", "status"),
    [
        ("lenient", SIMPLE, 200),
        ("strict", SIMPLE, 200),
        ("lenient", f"{SIMPLE} or title eq 't'", 200),
        ("strict", f"{SIMPLE} or title eq 't'", 400),
        ("lenient", nested_nots(101), 200),
        ("strict", nested_nots(100), 200),
        ("strict", nested_nots(101), 400),
        ("strict", "contains(title, 'a') and not startswith(title, 'b')", 200),
    ],
    ids=[
        "lenient-eq",
        "strict-eq",
        "lenient-or",
        "strict-or",
        "lenient-101-nodes",
        "strict-100-nodes",
        "strict-101-nodes",
        "strict-functions",
    ],
)
def test_filter_per_odata_mode(
    emu: DefenderEmulator, api: httpx.Client, mode: str, expression: str, status: int
) -> None:
    emu.odata = mode
    response = listed(api, expression)
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"]["code"] == "ODataError"


def test_strict_node_limit_message_and_knob(emu: DefenderEmulator, api: httpx.Client) -> None:
    emu.odata = "strict"
    emu.odata_node_limit = 5
    response = listed(api, nested_nots(6))
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(
        "The node count limit of '5' has been exceeded."
    )
    assert listed(api, nested_nots(5)).status_code == 200


def test_strict_or_is_refused_even_inside_parentheses(
    emu: DefenderEmulator, api: httpx.Client
) -> None:
    emu.odata = "strict"
    response = listed(api, f"title eq 'x' and ({SIMPLE} or title eq 'y')")
    assert response.status_code == 400
    assert "'or'" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("mode", "length", "status"),
    [("strict", 2048, 200), ("strict", 2049, 414), ("lenient", 2049, 200)],
)
def test_url_limit_applies_only_when_strict(
    emu: DefenderEmulator, api: httpx.Client, mode: str, length: int, status: int
) -> None:
    emu.odata = mode
    response = api.get(target_of_length(length))
    assert len(emu.requests[-1].path) == length
    assert response.status_code == status
    assert emu.requests[-1].status == status
    assert emu.requests[-1].endpoint == "list"
    if status == 414:
        assert len(response.content) < 300
        assert "too long" in response.text.lower()


def test_url_limit_covers_every_endpoint_and_is_a_knob(
    emu: DefenderEmulator, http: httpx.Client
) -> None:
    emu.odata = "strict"
    emu.url_limit = 100
    assert http.get(target_of_length(101, "/common/discovery/instance")).status_code == 414
    assert http.get(target_of_length(100, "/common/discovery/instance")).status_code == 200
    assert [record.status for record in emu.requests] == [414, 200]


# --------------------------------------------------------------------------- lifecycle

LIFECYCLE_HEADERS = ("deprecation", "sunset", "link")


def test_no_lifecycle_headers_by_default(api: httpx.Client) -> None:
    response = api.get("/api/indicators")
    assert response.status_code == 200
    assert not {name for name in LIFECYCLE_HEADERS if name in response.headers}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/indicators", 200),
        ("DELETE", "/api/indicators/999", 404),
        ("POST", "/api/indicators/BatchDelete", 400),
    ],
)
def test_deprecation_headers_on_every_api_answer(
    emu: DefenderEmulator, api: httpx.Client, method: str, path: str, status: int
) -> None:
    emu.deprecation = True
    response = api.request(method, path, json={} if method == "POST" else None)
    assert response.status_code == status
    assert response.headers["deprecation"] == "@1768435200"  # 2026-01-15T00:00:00Z
    assert response.headers["sunset"] == "Mon, 01 Feb 2027 00:00:00 GMT"
    assert 'rel="deprecation"' in response.headers["link"]
    assert response.headers["link"].startswith("<https://learn.microsoft.com/")


def test_deprecation_without_sunset_and_never_on_login(
    emu: DefenderEmulator, api: httpx.Client, get_token: Callable[[], str], http: httpx.Client
) -> None:
    emu.deprecation = True
    emu.sunset = None
    response = api.get("/api/indicators")
    assert "deprecation" in response.headers and "link" in response.headers
    assert "sunset" not in response.headers
    get_token()
    login = http.get("/common/discovery/instance")
    assert not {name for name in LIFECYCLE_HEADERS if name in login.headers}


def test_sunset_must_be_a_date() -> None:
    with pytest.raises(ValueError, match="sunset"):
        DefenderEmulator(sunset="next year")


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("GET", "/api/indicators", None),
        ("POST", "/api/indicators", {}),
        ("POST", "/api/indicators/import", {"Indicators": []}),
        ("DELETE", "/api/indicators/1", None),
        ("POST", "/api/indicators/BatchDelete", {"IndicatorIds": ["1"]}),
    ],
)
def test_retired_api_answers_410_gone(
    emu: DefenderEmulator, api: httpx.Client, method: str, path: str, payload: Any
) -> None:
    emu.retired = True
    response = api.request(method, path, json=payload)
    assert response.status_code == 410
    error = response.json()["error"]
    assert error["code"] == "Gone"
    assert error["message"].startswith("This API has been retired")


def test_retired_still_issues_tokens_and_unretiring_serves_again(
    emu: DefenderEmulator, api: httpx.Client, get_token: Callable[[], str]
) -> None:
    emu.retired = True
    assert get_token()
    assert api.get("/api/indicators").status_code == 410
    emu.retired = False
    assert api.get("/api/indicators").status_code == 200


# --------------------------------------------------------------------------- tokens


def decoded(segment: str) -> dict[str, Any]:
    assert "=" not in segment
    value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    assert isinstance(value, dict)
    return value


def test_access_token_is_a_jwt_with_roles_and_audience(
    emu: DefenderEmulator, get_token: Callable[[], str], clock: Any
) -> None:
    emu.roles = ("Ti.ReadWrite", "Ti.Read.All")
    token = get_token()
    header, payload, signature = token.split(".")
    assert decoded(header)["typ"] == "JWT"
    claims = decoded(payload)
    assert claims["aud"] == "https://api.securitycenter.microsoft.com"
    assert claims["roles"] == ["Ti.ReadWrite", "Ti.Read.All"]
    assert claims["tid"] == emu.tenant_id
    assert claims["appid"] == claims["azp"] == emu.client_id
    issued = int(clock.now().timestamp())
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (issued, issued, issued + 3599)
    assert signature and "=" not in signature


def test_jwt_keeps_the_roles_of_issue_time_and_is_honoured_by_the_whole_string(
    emu: DefenderEmulator, http: httpx.Client, get_token: Callable[[], str]
) -> None:
    token = get_token()
    emu.roles = ()
    assert decoded(token.split(".")[1])["roles"] == ["Ti.ReadWrite.All"]
    headers = {"Authorization": f"Bearer {token}"}
    assert http.get("/api/indicators", headers=headers).status_code == 200
    forged = token.rsplit(".", 1)[0] + "." + "A" * 43  # same claims, another signature
    refused = http.get("/api/indicators", headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 401


def test_v1_endpoint_issues_a_jwt_for_the_resource(
    emu: DefenderEmulator, http: httpx.Client
) -> None:
    response = http.post(
        f"/{emu.tenant_id}/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
            "resource": "https://api.securitycenter.microsoft.com",
        },
    )
    assert response.status_code == 200
    claims = decoded(response.json()["access_token"].split(".")[1])
    assert claims["aud"] == "https://api.securitycenter.microsoft.com"


def test_opaque_tokens_on_request(
    emu: DefenderEmulator, http: httpx.Client, get_token: Callable[[], str]
) -> None:
    emu.token_format = "opaque"
    token = get_token()
    assert token.startswith("emu.") and token.count(".") == 1
    headers = {"Authorization": f"Bearer {token}"}
    assert http.get("/api/indicators", headers=headers).status_code == 200


# --------------------------------------------------------------------------- strict preset


def test_strict_keyword_turns_on_every_strict_variant() -> None:
    emulator = DefenderEmulator(strict=True)
    assert emulator.upsert_key == ("indicatorType", "indicatorValue")
    assert (emulator.batch_rejection, emulator.echo, emulator.odata) == (
        "whole_batch",
        "equivalent",
        "strict",
    )
    assert emulator.deprecation is True
    assert {name: getattr(emulator, name) for name in STRICT_PRESET} == STRICT_PRESET


def test_make_strict_on_a_running_emulator(
    emu: DefenderEmulator, api: httpx.Client, body: Body
) -> None:
    assert emu.make_strict() is emu
    api.post("/api/indicators", json=body(indicatorValue="e" * 40, action="Block"))
    answer = api.post(
        "/api/indicators/import",
        json={"Indicators": [body(indicatorValue="e" * 40, action="Warn")]},
    )
    assert answer.headers["deprecation"] == "@1768435200"
    assert [(row["indicatorValue"], row["action"]) for row in emu.indicators()] == [
        ("E" * 40, "Warn")
    ]
    assert listed(api, f"{SIMPLE} or {SIMPLE}").status_code == 400


def test_unknown_variant_value_is_refused() -> None:
    with pytest.raises(ValueError, match="echo"):
        DefenderEmulator(echo="sometimes")


# --------------------------------------------------------------------------- command line

DEFAULTS = {
    "upsert_key": ("indicatorType", "indicatorValue", "action"),
    "batch_rejection": "per_item",
    "deny_values": DEFAULT_DENY_VALUES,
    "echo": "as_sent",
    "odata": "lenient",
    "odata_node_limit": 100,
    "url_limit": 2048,
    "deprecation": False,
    "sunset": "2027-02-01",
    "retired": False,
    "token_format": "jwt",
    "batch_delete_atomic": True,
}


@pytest.mark.parametrize(
    ("argv", "changed"),
    [
        ([], {}),
        (["--upsert-key", "type-value"], {"upsert_key": ("indicatorType", "indicatorValue")}),
        (["--upsert-key", "type-value-action"], {}),
        (["--batch-rejection", "whole-batch"], {"batch_rejection": "whole_batch"}),
        (["--deny-values", ""], {"deny_values": ()}),
        (["--deny-values", "a.example, b.example"], {"deny_values": ("a.example", "b.example")}),
        (["--echo", "equivalent"], {"echo": "equivalent"}),
        (
            ["--odata", "strict", "--odata-node-limit", "50", "--url-limit", "999"],
            {"odata": "strict", "odata_node_limit": 50, "url_limit": 999},
        ),
        (["--deprecation"], {"deprecation": True}),
        (["--deprecation", "--sunset", ""], {"deprecation": True, "sunset": None}),
        (["--sunset", "2028-06-30"], {"sunset": "2028-06-30"}),
        (["--retired"], {"retired": True}),
        (["--token-format", "opaque"], {"token_format": "opaque"}),
        (["--batch-delete-non-atomic"], {"batch_delete_atomic": False}),
        (["--all-strict"], STRICT_PRESET),
        (["--all-strict", "--retired"], {**STRICT_PRESET, "retired": True}),
    ],
)
def test_cli_flags_set_the_variants(argv: list[str], changed: dict[str, Any]) -> None:
    emulator = DefenderEmulator(**emulator_options(argv))  # built, not started
    expected = {**DEFAULTS, **changed}
    assert {name: getattr(emulator, name) for name in expected} == expected


def test_cli_refuses_an_unknown_choice(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        emulator_options(["--echo", "sometimes"])
    assert exited.value.code == 2
    assert "--echo" in capsys.readouterr().err


def test_main_serves_with_the_flags_and_prints_the_variants() -> None:
    out, stop = io.StringIO(), threading.Event()
    argv = ["--port", "0", "--no-tls", "--all-strict", "--token-format", "opaque"]
    thread = threading.Thread(target=main, args=(argv,), kwargs={"stop": stop, "out": out})
    thread.start()
    deadline = time.monotonic() + 10
    while "base_url" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=5)
    text = out.getvalue()
    assert "upsert_key=indicatorType+indicatorValue" in text
    assert "echo=equivalent" in text and "odata=strict" in text
    assert "token_format=opaque" in text and "batch_rejection=whole_batch" in text
