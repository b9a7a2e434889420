"""Indicators API of the emulator: submit/upsert, validation, import, delete, BatchDelete, quota."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from reconciler.sandbox.defender import FIELD_ORDER, DefenderEmulator

Body = Callable[..., dict[str, Any]]


def test_submit_returns_the_stored_entity_in_real_field_order(
    emu: DefenderEmulator, api: httpx.Client, body: Body
) -> None:
    response = api.post("/api/indicators", json=body())
    assert response.status_code == 200
    assert response.headers["odata-version"] == "4.0"
    assert response.headers["content-type"].startswith("application/json; odata.metadata=minimal")
    row = response.json()
    assert row.pop("@odata.context").endswith("/api/$metadata#Indicators/$entity")
    assert tuple(row) == FIELD_ORDER
    assert row["id"] == "1"
    assert row["createdByDisplayName"] == emu.app_name
    assert row["createdBySource"] == "PublicApi"
    assert row["creationTimeDateTimeUtc"] == "2026-01-01T00:00:00Z"
    assert row["lastUpdateTime"] == row["creationTimeDateTimeUtc"]
    assert row["lastUpdatedBy"] is None
    assert row["expirationTime"] == "2030-01-01T00:00:00Z"
    assert row["rbacGroupIds"] == [] and row["category"] == 1
    assert emu.get("1") == row


def test_ids_increase_as_strings(emu: DefenderEmulator, api: httpx.Client, body: Body) -> None:
    ids = [
        api.post("/api/indicators", json=body(indicatorValue=c * 40)).json()["id"] for c in "abc"
    ]
    assert ids == ["1", "2", "3"]


def test_same_key_updates_and_keeps_application(
    emu: DefenderEmulator, api: httpx.Client, body: Body, clock: Any
) -> None:
    first = api.post("/api/indicators", json=body()).json()
    clock.advance(10.5)
    second = api.post(
        "/api/indicators", json=body(title="new title", application="someone-else")
    ).json()
    assert second["id"] == first["id"]
    assert second["title"] == "new title"
    assert second["application"] == "opencti"  # honoured on create only
    assert second["lastUpdateTime"] == "2026-01-01T00:00:10.5Z"
    assert second["creationTimeDateTimeUtc"] == first["creationTimeDateTimeUtc"]
    assert second["lastUpdatedBy"] == emu.client_id
    assert len(emu.indicators()) == 1


def test_update_resets_omitted_optional_fields(api: httpx.Client, body: Body) -> None:
    api.post("/api/indicators", json=body(recommendedActions="patch"))
    row = api.post("/api/indicators", json=body()).json()
    assert row["recommendedActions"] is None


def test_different_action_makes_a_second_indicator(
    emu: DefenderEmulator, api: httpx.Client, body: Body
) -> None:
    one = api.post("/api/indicators", json=body(action="Block")).json()
    two = api.post("/api/indicators", json=body(action="Warn")).json()
    assert one["id"] != two["id"]
    assert [row["action"] for row in emu.indicators()] == ["Block", "Warn"]


def test_upsert_key_is_configurable() -> None:
    emulator = DefenderEmulator(tls=False, upsert_key=("indicatorType", "indicatorValue"))
    with emulator, httpx.Client(base_url=emulator.url) as client:
        token = client.post(
            f"/{emulator.tenant_id}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": emulator.client_id,
                "client_secret": emulator.client_secret,
                "scope": emulator.scope,
            },
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        base = {
            "indicatorValue": "evil.example.com",
            "indicatorType": "DomainName",
            "title": "t",
            "description": "d",
        }
        client.post("/api/indicators", json={**base, "action": "Block"}, headers=headers)
        row = client.post("/api/indicators", json={**base, "action": "Warn"}, headers=headers)
        assert row.json()["action"] == "Warn"
        assert len(emulator.indicators()) == 1
        assert emulator.url.startswith("http://")


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"indicatorValue": None}, "MissingRequiredParameter"),
        ({"title": None}, "MissingRequiredParameter"),
        ({"description": ""}, "MissingRequiredParameter"),
        ({"action": None}, "MissingRequiredParameter"),
        ({"indicatorValue": ""}, "InvalidInput"),
        ({"indicatorType": "Sha1"}, "InvalidInput"),
        ({"action": "block"}, "InvalidInput"),
        ({"severity": "Critical"}, "InvalidInput"),
        ({"indicatorValue": "abc"}, "InvalidHashValue"),
        ({"indicatorValue": "g" * 40}, "InvalidHashValue"),
        ({"indicatorType": "FileSha256"}, "InvalidHashValue"),
        ({"indicatorType": "IpAddress", "indicatorValue": "10.1.2.3"}, "InvalidIpAddress"),
        ({"indicatorType": "IpAddress", "indicatorValue": "8.8.8.0/24"}, "InvalidIpAddress"),
        ({"indicatorType": "IpAddress", "indicatorValue": "2001:db8::1"}, "InvalidIpAddress"),
        ({"indicatorType": "IpAddress", "indicatorValue": "300.1.1.1"}, "InvalidIpAddress"),
        ({"indicatorType": "DomainName", "indicatorValue": "not a domain"}, "InvalidDomainName"),
        ({"indicatorType": "DomainName", "indicatorValue": "*.evil.com"}, "InvalidDomainName"),
        ({"indicatorType": "Url", "indicatorValue": "ftp://evil.com/x"}, "InvalidUrl"),
        ({"indicatorType": "Url", "indicatorValue": "http://bad host/x"}, "InvalidUrl"),
        (
            {
                "indicatorType": "Url",
                "indicatorValue": "https://evil.com/x",
                "action": "BlockAndRemediate",
            },
            "InvalidInput",
        ),
        ({"action": "Audit", "generateAlert": False}, "InvalidInput"),
        ({"educateUrl": "https://help.example.com"}, "InvalidInput"),
        ({"expirationTime": "2025-12-31T23:59:59Z"}, "InvalidInput"),
        ({"expirationTime": "tomorrow"}, "InvalidInput"),
        ({"IndicatorValue": "b" * 40}, "InvalidRequestBody"),
        ({"colour": "red"}, "InvalidRequestBody"),
        ({"generateAlert": "yes"}, "InvalidRequestBody"),
        ({"rbacGroupNames": "Group A"}, "InvalidRequestBody"),
    ],
    ids=lambda value: str(value) if isinstance(value, str) else None,
)
def test_validation_codes(
    emu: DefenderEmulator, api: httpx.Client, body: Body, overrides: dict[str, Any], code: str
) -> None:
    response = api.post("/api/indicators", json=body(**overrides))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["target"]
    assert emu.indicators() == []


def test_empty_value_message_is_the_real_one(api: httpx.Client, body: Body) -> None:
    error = api.post("/api/indicators", json=body(indicatorValue="")).json()["error"]
    assert error["message"] == "Recieved an empty indicator value."


def test_malformed_json_is_invalid_request_body(api: httpx.Client) -> None:
    response = api.post(
        "/api/indicators", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.json()["error"]["code"] == "InvalidRequestBody"


@pytest.mark.parametrize(
    ("kind", "value", "action"),
    [
        ("FileMd5", "d41d8cd98f00b204e9800998ecf8427e", "BlockAndRemediate"),
        ("FileSha256", "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", "Warn"),
        ("CertificateThumbprint", "b" * 40, "Allowed"),
        ("IpAddress", "8.8.8.8", "Block"),
        ("IpAddress", "203.0.113.7", "Block"),
        ("IpAddress", "2001:4860:4860:0:0:0:0:8888", "Warn"),
        ("DomainName", "evil.example.com", "Block"),
        ("DomainName", "xn--bcher-kva.example", "Allowed"),
        ("Url", "https://evil.example.com/path?q=1", "Block"),
        ("Url", "evil.example.com/path", "Warn"),
    ],
)
def test_valid_values_are_accepted(
    api: httpx.Client, body: Body, kind: str, value: str, action: str
) -> None:
    response = api.post(
        "/api/indicators", json=body(indicatorType=kind, indicatorValue=value, action=action)
    )
    assert response.status_code == 200, response.text


def test_private_ip_allowed_when_public_only_is_off(
    emu: DefenderEmulator, api: httpx.Client, body: Body
) -> None:
    emu.public_ips_only = False
    response = api.post(
        "/api/indicators", json=body(indicatorType="IpAddress", indicatorValue="10.0.0.1")
    )
    assert response.status_code == 200


def test_lenient_casing_maps_property_names_and_enums(
    emu: DefenderEmulator, api: httpx.Client
) -> None:
    emu.strict_casing = False
    payload = {
        "IndicatorValue": "evil.example.com",
        "INDICATORTYPE": "domainname",
        "action": "block",
        "Title": "t",
        "Description": "d",
        "unknownThing": 1,
    }
    row = api.post("/api/indicators", json=payload).json()
    assert (row["indicatorType"], row["action"]) == ("DomainName", "Block")


def test_educate_url_and_undocumented_fields_are_kept(api: httpx.Client, body: Body) -> None:
    row = api.post(
        "/api/indicators",
        json=body(
            indicatorType="Url",
            indicatorValue="https://evil.example.com/x",
            educateUrl="https://help.example.com",
            externalId="ext-1",
            mitreTechniques=["T1566"],
            id="99",
            rbacGroupNames=["Group A"],
        ),
    ).json()
    assert row["educateUrl"] == "https://help.example.com"
    assert row["externalId"] == "ext-1" and row["mitreTechniques"] == ["T1566"]
    assert row["rbacGroupNames"] == ["Group A"]
    assert row["id"] == "1"  # a sent id does not choose the stored id


# ---------------------------------------------------------------- import


def test_import_reports_per_item_in_input_order(
    emu: DefenderEmulator, api: httpx.Client, body: Body
) -> None:
    items = [
        body(indicatorValue="a" * 40),
        body(indicatorValue="not-a-hash"),
        body(indicatorType="DomainName", indicatorValue="evil.example.com"),
        body(indicatorValue="a" * 40, title="again"),  # same key: updates the first
    ]
    response = api.post("/api/indicators/import", json={"Indicators": items})
    assert response.status_code == 200
    results = response.json()["value"]
    assert [r["isFailed"] for r in results] == [False, True, False, False]
    assert results[0]["id"] == results[3]["id"] == "1"
    assert results[1]["id"] is None
    assert results[1]["indicator"] == "not-a-hash"
    assert results[1]["failureReason"].startswith("InvalidHashValue")
    assert results[2] == {
        "id": "2",
        "indicator": "evil.example.com",
        "isFailed": False,
        "failureReason": None,
    }
    assert emu.get("1")["title"] == "again"


def test_import_over_500_is_rejected(emu: DefenderEmulator, api: httpx.Client, body: Body) -> None:
    items = [body(indicatorValue=f"{i:040x}") for i in range(501)]
    response = api.post("/api/indicators/import", json={"Indicators": items})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "MaximumBatchSizeExceeded"
    assert "Received: 501, allowed: 500" in error["message"]
    assert emu.indicators() == []
    ok = api.post("/api/indicators/import", json={"Indicators": items[:500]})
    assert ok.status_code == 200 and len(emu.indicators()) == 500


def test_import_wrapper_is_case_sensitive(api: httpx.Client, body: Body) -> None:
    response = api.post("/api/indicators/import", json={"indicators": [body()]})
    assert response.json()["error"]["code"] == "InvalidRequestBody"


# ---------------------------------------------------------------- delete


def test_delete_by_id(emu: DefenderEmulator, api: httpx.Client, body: Body) -> None:
    ident = api.post("/api/indicators", json=body()).json()["id"]
    response = api.delete(f"/api/indicators/{ident}")
    assert response.status_code == 204 and response.content == b""
    assert emu.indicators() == []
    missing = api.delete(f"/api/indicators/{ident}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NotFound"


def _three(api: httpx.Client, body: Body) -> list[str]:
    return [
        api.post("/api/indicators", json=body(indicatorValue=c * 40)).json()["id"] for c in "abc"
    ]


def test_batch_delete_all_found(emu: DefenderEmulator, api: httpx.Client, body: Body) -> None:
    ids = _three(api, body)
    response = api.post("/api/indicators/BatchDelete", json={"IndicatorIds": ids[:2]})
    assert response.status_code == 204
    assert [row["id"] for row in emu.indicators()] == [ids[2]]


def test_batch_delete_lower_case_path(emu: DefenderEmulator, api: httpx.Client, body: Body) -> None:
    ids = _three(api, body)
    assert api.post("/api/indicators/batchDelete", json={"IndicatorIds": ids}).status_code == 204
    assert emu.counts()["batch_delete"] == 1


@pytest.mark.parametrize(("atomic", "left"), [(True, 3), (False, 1)], ids=["atomic", "partial"])
def test_batch_delete_unknown_id(
    emu: DefenderEmulator, api: httpx.Client, body: Body, atomic: bool, left: int
) -> None:
    emu.batch_delete_atomic = atomic
    ids = _three(api, body)
    response = api.post("/api/indicators/BatchDelete", json={"IndicatorIds": [*ids[:2], "999"]})
    assert response.status_code == 404
    assert "999" in response.json()["error"]["message"]
    assert len(emu.indicators()) == left


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"IndicatorIds": []}, "InvalidInput"),
        ({"IndicatorIds": [str(i) for i in range(1, 502)]}, "MaximumBatchSizeExceeded"),
        ({"IndicatorIds": ["abc"]}, "InvalidInput"),
        ({"indicatorIds": ["1"]}, "InvalidRequestBody"),
        ({}, "MissingRequiredParameter"),
    ],
    ids=["empty", "over-500", "bad-id", "wrong-case", "missing"],
)
def test_batch_delete_bad_requests(api: httpx.Client, payload: Any, code: str) -> None:
    response = api.post("/api/indicators/BatchDelete", json=payload)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


# ---------------------------------------------------------------- quota, expiry, helpers


def test_quota_caps_creates_not_updates(
    emu: DefenderEmulator, api: httpx.Client, body: Body
) -> None:
    emu.quota = 2
    emu.add_indicator(indicatorType="DomainName", indicatorValue="portal.example.com")
    api.post("/api/indicators", json=body())
    over = api.post("/api/indicators", json=body(indicatorValue="b" * 40))
    assert over.status_code == 400
    assert over.json()["error"]["code"] == "IndicatorsLimitExceeded"
    assert api.post("/api/indicators", json=body(title="update")).status_code == 200
    result = api.post(
        "/api/indicators/import", json={"Indicators": [body(indicatorValue="c" * 40)]}
    ).json()["value"][0]
    assert result["isFailed"] and result["failureReason"].startswith("IndicatorsLimitExceeded")


def test_expired_indicators_are_purged(
    emu: DefenderEmulator, api: httpx.Client, body: Body, clock: Any
) -> None:
    api.post("/api/indicators", json=body(expirationTime="2026-01-01T00:30:00Z"))
    api.post("/api/indicators", json=body(indicatorValue="b" * 40, expirationTime=None))
    assert len(api.get("/api/indicators").json()["value"]) == 2
    clock.advance(1799)
    assert len(api.get("/api/indicators").json()["value"]) == 2
    clock.advance(1)
    values = api.get("/api/indicators").json()["value"]
    assert [row["indicatorValue"] for row in values] == ["b" * 40]
    assert len(emu.indicators(include_expired=True)) == 1  # purged, not just hidden
    again = api.post("/api/indicators", json=body(expirationTime="2026-02-01T00:00:00Z")).json()
    assert again["id"] == "3"  # a fresh indicator, not an update of the expired one


def test_state_helpers_simulate_the_portal(emu: DefenderEmulator, clock: Any) -> None:
    row = emu.add_indicator(
        indicatorType="Url", indicatorValue="https://x.example.com/", action="Warn"
    )
    assert row["createdBySource"] == "Portal" and row["application"] is None
    clock.advance(5)
    edited = emu.update_indicator(row["id"], title="edited")
    assert edited["title"] == "edited"
    assert edited["lastUpdateTime"] == "2026-01-01T00:00:05Z"
    assert edited["lastUpdatedBy"] == "admin@contoso.com"
    with pytest.raises(ValueError, match="exists"):
        emu.add_indicator(
            indicatorType="Url", indicatorValue="https://x.example.com/", action="Warn"
        )
    assert emu.delete_indicator(row["id"]) is True
    assert emu.get(row["id"]) is None
    assert emu.delete_indicator(row["id"]) is False


def test_unknown_route_is_not_found(api: httpx.Client) -> None:
    response = api.get("/api/indicators/1")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"
