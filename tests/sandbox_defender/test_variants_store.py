"""Behaviour variants of the emulator that shape what is stored: the upsert key, an import
refused item by item or as a whole (with the deny list) and the "equivalent" echo; each switch
in both positions, over real sockets, switched on the running module server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.defender.forms import equivalent_action

Body = Callable[..., dict[str, Any]]
TYPE_VALUE = ("indicatorType", "indicatorValue")
TYPE_VALUE_ACTION = ("indicatorType", "indicatorValue", "action")
DOMAIN = {"indicatorType": "DomainName", "indicatorValue": "evil.example.com"}


def imported(api: httpx.Client, *items: dict[str, Any]) -> httpx.Response:
    return api.post("/api/indicators/import", json={"Indicators": list(items)})


def results(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return list(response.json()["value"])


# --------------------------------------------------------------------------- upsert key


@pytest.mark.parametrize(
    ("key", "rows_after"),
    [(TYPE_VALUE, [("1", "Warn")]), (TYPE_VALUE_ACTION, [("1", "Block"), ("2", "Warn")])],
    ids=["type-value", "type-value-action"],
)
def test_submit_with_another_action(
    emu: DefenderEmulator,
    api: httpx.Client,
    body: Body,
    key: tuple[str, ...],
    rows_after: list[tuple[str, str]],
) -> None:
    emu.upsert_key = key
    first = api.post("/api/indicators", json=body(**DOMAIN, action="Block")).json()
    second = api.post("/api/indicators", json=body(**DOMAIN, action="Warn")).json()
    assert first["id"] == "1"
    assert second["id"] == rows_after[-1][0]
    assert [(row["id"], row["action"]) for row in emu.indicators()] == rows_after


def test_type_value_import_updates_in_place_and_answers_the_same_id(
    emu: DefenderEmulator, api: httpx.Client, body: Body
) -> None:
    emu.upsert_key = TYPE_VALUE
    created = results(imported(api, body(**DOMAIN, action="Block")))[0]
    again = results(imported(api, body(**DOMAIN, action="Warn", application="someone-else")))
    landed = {"indicator": "evil.example.com", "isFailed": False, "failureReason": None}
    assert again == [{"id": created["id"], **landed}]
    (row,) = emu.indicators()
    assert (row["id"], row["action"], row["application"]) == (created["id"], "Warn", "opencti")
    assert row["lastUpdatedBy"] == emu.client_id


def test_changing_the_key_while_running_keeps_the_oldest_row_for_a_shared_key(
    emu: DefenderEmulator, api: httpx.Client, body: Body
) -> None:
    api.post("/api/indicators", json=body(**DOMAIN, action="Block"))
    api.post("/api/indicators", json=body(**DOMAIN, action="Warn"))
    emu.upsert_key = TYPE_VALUE
    row = api.post("/api/indicators", json=body(**DOMAIN, action="Allowed")).json()
    assert row["id"] == "1"
    assert [(r["id"], r["action"]) for r in emu.indicators()] == [("1", "Allowed"), ("2", "Warn")]


# --------------------------------------------------------------------------- rejection mode

DENIED = [
    ("DomainName", "microsoft.com"),
    ("DomainName", "WindowsUpdate.COM"),
    ("Url", "https://login.microsoftonline.com/common/oauth2"),
]


@pytest.mark.parametrize(("kind", "value"), DENIED)
def test_per_item_fails_the_denied_item_and_lands_the_others(
    emu: DefenderEmulator, api: httpx.Client, body: Body, kind: str, value: str
) -> None:
    answer = results(
        imported(
            api,
            body(indicatorValue="a" * 40),
            body(indicatorType=kind, indicatorValue=value),
            body(indicatorValue="b" * 40),
        )
    )
    assert [item["isFailed"] for item in answer] == [False, True, False]
    assert answer[1]["id"] is None and answer[1]["indicator"] == value
    assert answer[1]["failureReason"].startswith("InvalidInput: ")
    assert value in answer[1]["failureReason"]
    assert [row["indicatorValue"] for row in emu.indicators()] == ["a" * 40, "b" * 40]


@pytest.mark.parametrize(("kind", "value"), DENIED)
def test_whole_batch_refuses_the_call_naming_the_value_and_stores_nothing(
    emu: DefenderEmulator, api: httpx.Client, body: Body, kind: str, value: str
) -> None:
    emu.batch_rejection = "whole_batch"
    response = imported(
        api,
        body(indicatorValue="a" * 40),
        body(indicatorType=kind, indicatorValue=value),
        body(indicatorValue="b" * 40),
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "InvalidInput"
    assert value in error["message"]
    assert emu.indicators() == []


def test_whole_batch_refuses_any_invalid_item_with_its_code(
    emu: DefenderEmulator, api: httpx.Client, body: Body
) -> None:
    emu.batch_rejection = "whole_batch"
    response = imported(api, body(indicatorValue="a" * 40), body(indicatorValue="not-a-hash"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidHashValue"
    assert "'not-a-hash' (item 1)" in response.json()["error"]["message"]
    assert emu.indicators() == []


def test_per_item_reports_an_invalid_item_and_lands_the_others(
    emu: DefenderEmulator, api: httpx.Client, body: Body
) -> None:
    answer = results(imported(api, body(indicatorValue="a" * 40), body(indicatorValue="x")))
    assert [item["isFailed"] for item in answer] == [False, True]
    assert answer[1]["failureReason"].startswith("InvalidHashValue: ")
    assert len(emu.indicators()) == 1


def test_whole_batch_undoes_the_items_applied_before_a_late_failure(
    emu: DefenderEmulator, api: httpx.Client, body: Body
) -> None:
    """The quota fails the third item after two were applied: the call leaves no trace."""
    emu.batch_rejection = "whole_batch"
    api.post("/api/indicators", json=body(indicatorValue="a" * 40, title="before"))
    emu.quota = 2
    response = imported(
        api,
        body(indicatorValue="a" * 40, title="changed"),
        body(indicatorValue="b" * 40),
        body(indicatorValue="c" * 40),
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "IndicatorsLimitExceeded"
    assert "'" + "c" * 40 + "' (item 2)" in response.json()["error"]["message"]
    assert [(row["indicatorValue"], row["title"]) for row in emu.indicators()] == [
        ("a" * 40, "before")
    ]


@pytest.mark.parametrize("mode", ["per_item", "whole_batch"])
def test_submit_refuses_a_denied_value_in_both_modes(
    emu: DefenderEmulator, api: httpx.Client, body: Body, mode: str
) -> None:
    emu.batch_rejection = mode
    response = api.post(
        "/api/indicators", json=body(indicatorType="DomainName", indicatorValue="Microsoft.com")
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidInput"
    assert "Microsoft.com" in response.json()["error"]["message"]
    assert emu.indicators() == []


def test_an_empty_deny_list_accepts_every_value(
    emu: DefenderEmulator, api: httpx.Client, body: Body
) -> None:
    emu.deny_values = ()
    spec = body(indicatorType="DomainName", indicatorValue="microsoft.com")
    assert api.post("/api/indicators", json=spec).status_code == 200


def test_a_subdomain_or_lookalike_is_not_denied(api: httpx.Client, body: Body) -> None:
    for value in ("docs.microsoft.com", "microsoft.com.evil.example"):
        spec = body(indicatorType="DomainName", indicatorValue=value)
        assert api.post("/api/indicators", json=spec).status_code == 200, value


# --------------------------------------------------------------------------- echo forms

ECHOES = [
    # (type, sent value, sent action, stored value, stored action) under "equivalent"
    ("FileSha256", "ab" * 32, "Block", "AB" * 32, "Block"),
    ("FileMd5", "0f" * 16, "AlertAndBlock", "0F" * 16, "BlockAndRemediate"),
    ("FileSha1", "c" * 40, "Alert", "C" * 40, "Audit"),
    (
        "IpAddress",
        "2001:4860:4860:0000:0000:0000:0000:8888",
        "Block",
        "2001:4860:4860::8888",
        "Block",
    ),
    ("IpAddress", "203.0.113.7", "Alert", "203.0.113.7", "Audit"),
    ("DomainName", "evil.example.com", "Warn", "EVIL.EXAMPLE.COM", "Warn"),
    ("Url", "https://evil.example.com/Path", "Block", "https://evil.example.com/Path", "Block"),
]


@pytest.mark.parametrize(("kind", "sent", "action", "stored", "stored_action"), ECHOES)
@pytest.mark.parametrize("echo", ["as_sent", "equivalent"])
def test_listing_shows_the_echo_form(
    emu: DefenderEmulator,
    api: httpx.Client,
    body: Body,
    echo: str,
    kind: str,
    sent: str,
    action: str,
    stored: str,
    stored_action: str,
) -> None:
    emu.echo = echo
    answer = results(imported(api, body(indicatorType=kind, indicatorValue=sent, action=action)))
    expected = (stored, stored_action) if echo == "equivalent" else (sent, action)
    assert answer[0]["indicator"] == expected[0]
    (row,) = api.get("/api/indicators").json()["value"]
    assert (row["indicatorValue"], row["action"]) == expected


@pytest.mark.parametrize(("kind", "sent", "action", "stored", "stored_action"), ECHOES)
def test_equivalent_reimport_of_the_sent_form_updates_the_same_row(
    emu: DefenderEmulator,
    api: httpx.Client,
    body: Body,
    kind: str,
    sent: str,
    action: str,
    stored: str,
    stored_action: str,
) -> None:
    emu.echo = "equivalent"
    spec = body(indicatorType=kind, indicatorValue=sent, action=action)
    first = results(imported(api, spec))[0]
    again = results(imported(api, {**spec, "title": "second"}))[0]
    assert again["id"] == first["id"]
    (row,) = emu.indicators()
    assert (row["indicatorValue"], row["action"], row["title"]) == (
        stored,
        stored_action,
        "second",
    )


def test_equivalent_alert_updates_the_stored_audit_row(
    emu: DefenderEmulator, api: httpx.Client, body: Body
) -> None:
    emu.echo = "equivalent"
    audit = api.post("/api/indicators", json=body(action="Audit")).json()
    answer = results(imported(api, body(action="Alert", title="via alias")))
    assert answer[0]["id"] == audit["id"]
    assert [(row["action"], row["title"]) for row in emu.indicators()] == [("Audit", "via alias")]


def test_as_sent_keeps_case_variants_and_aliases_apart(
    emu: DefenderEmulator, api: httpx.Client, body: Body
) -> None:
    imported(api, body(indicatorValue="a" * 40), body(indicatorValue="A" * 40))
    audit, alert = (body(indicatorValue="b" * 40, action=name) for name in ("Audit", "Alert"))
    imported(api, audit, alert)
    assert len(emu.indicators()) == 4


def test_equivalent_matches_the_key_of_a_row_stored_before_the_switch(
    emu: DefenderEmulator, api: httpx.Client, body: Body
) -> None:
    first = api.post("/api/indicators", json=body(indicatorValue="d" * 40)).json()
    emu.echo = "equivalent"
    again = api.post("/api/indicators", json=body(indicatorValue="D" * 40)).json()
    assert again["id"] == first["id"]
    assert [row["indicatorValue"] for row in emu.indicators()] == ["D" * 40]


@pytest.mark.parametrize(("echo", "matches"), [("as_sent", 0), ("equivalent", 1)])
def test_filter_eq_on_value_ignores_case_only_when_equivalent(
    emu: DefenderEmulator, api: httpx.Client, body: Body, echo: str, matches: int
) -> None:
    emu.echo = echo
    api.post("/api/indicators", json=body(indicatorType="DomainName", indicatorValue="Bad.Example"))
    response = api.get("/api/indicators", params={"$filter": "indicatorValue eq 'bad.EXAMPLE'"})
    assert response.status_code == 200
    assert len(response.json()["value"]) == matches


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("Url", "Block"),
        ("IpAddress", "Block"),
        ("DomainName", "Block"),
        ("FileSha1", "BlockAndRemediate"),
        ("CertificateThumbprint", "AlertAndBlock"),
    ],
)
def test_alert_and_block_alias_per_type(kind: str, expected: str) -> None:
    assert equivalent_action(kind, "AlertAndBlock") == expected
