"""Graph alerts on the emulator: hits raised by the Python and HTTP hooks, their evidence, and
``GET /v1.0/security/alerts_v2`` with $filter, $top, $skip, $count, $orderby and nextLink paging
under each switch."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from reconciler.sandbox.defender import GRAPH_SCOPE, DefenderEmulator
from reconciler.sandbox.defender.alerts import domain_has_device

ALERTS = "/v1.0/security/alerts_v2"
T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
SHA1 = "A" * 40
SHA256 = "b" * 64
MD5 = "c" * 32


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


@pytest.fixture
def graph(g: DefenderEmulator, http: httpx.Client) -> Iterator[httpx.Client]:
    """A client with a Graph token."""
    form = {
        "grant_type": "client_credentials",
        "client_id": g.client_id,
        "client_secret": g.client_secret,
        "scope": GRAPH_SCOPE,
    }
    token = http.post(f"/{g.tenant_id}/oauth2/v2.0/token", data=form).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=g.url, verify=g.ca_file, headers=headers, timeout=10) as client:
        yield client


def _hits(emu: DefenderEmulator, count: int, start: datetime = T0) -> list[dict[str, Any]]:
    """``count`` IpAddress hits one minute apart."""
    return [
        emu.raise_hit("IpAddress", f"203.0.113.{n}", at=start + timedelta(minutes=n))
        for n in range(count)
    ]


def _ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [alert["id"] for alert in response.json()["value"]]


def _listed(graph: httpx.Client, **params: str) -> httpx.Response:
    return graph.get(ALERTS, params=params)


def _bad_request(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "BadRequest"
    assert "innerError" in error
    return str(error["message"])


def _types(alert: dict[str, Any]) -> list[str]:
    return [item["@odata.type"].rsplit(".", 1)[-1] for item in alert["evidence"]]


# --------------------------------------------------------------------------- raise_hit


def test_raise_hit_builds_a_graph_alert(g: DefenderEmulator) -> None:
    alert = g.raise_hit("Url", "https://bad.example/payload", at=T0)
    assert alert["id"].startswith("da") and "_" in alert["id"]
    assert alert["providerAlertId"] == alert["id"]
    assert alert["incidentId"].isdigit()
    assert alert["status"] == "new" and alert["severity"] == "medium"
    assert alert["serviceSource"] == "microsoftDefenderForEndpoint"
    assert alert["detectionSource"] == "customTi"
    assert alert["tenantId"] == g.tenant_id
    assert alert["alertWebUrl"] == (
        f"https://security.microsoft.com/alerts/{alert['id']}?tid={g.tenant_id}"
    )
    assert alert["incidentWebUrl"].endswith(f"/incidents/{alert['incidentId']}?tid={g.tenant_id}")
    assert alert["title"] == "https://bad.example/payload detected"
    assert alert["description"] and alert["category"]
    for name in (
        "createdDateTime",
        "lastUpdateDateTime",
        "firstActivityDateTime",
        "lastActivityDateTime",
    ):
        assert alert[name] == "2026-11-29T10:00:00Z"
    assert _types(alert) == ["deviceEvidence", "urlEvidence"]
    device, url = alert["evidence"]
    assert url["url"] == "https://bad.example/payload"
    assert device["deviceDnsName"] == "device-1"
    assert len(device["mdeDeviceId"]) == 40 and len(device["azureAdDeviceId"]) == 36
    assert device["osPlatform"]
    for item in alert["evidence"]:
        assert {"createdDateTime", "verdict", "remediationStatus", "roles"} <= set(item)
    assert g.alerts() == [alert]


def test_raise_hit_uses_the_clock_and_naive_times_are_utc(g: DefenderEmulator, clock: Any) -> None:
    clock.advance(90)
    assert g.raise_hit("IpAddress", "203.0.113.9")["createdDateTime"] == "2026-01-01T00:01:30Z"
    naive = g.raise_hit("IpAddress", "203.0.113.9", at=datetime(2026, 3, 1, 12, 0))
    assert naive["lastUpdateDateTime"] == "2026-03-01T12:00:00Z"


@pytest.mark.parametrize(
    ("kind", "value", "algorithm"),
    [("FileSha1", SHA1, "sha1"), ("FileSha256", SHA256, "sha256"), ("FileMd5", MD5, "md5")],
)
def test_file_hits_carry_file_and_hash_evidence(
    g: DefenderEmulator, kind: str, value: str, algorithm: str
) -> None:
    alert = g.raise_hit(kind, value, device="Laptop-7.contoso.com")
    assert _types(alert) == ["deviceEvidence", "fileEvidence", "fileHashEvidence"]
    device, file_item, hash_item = alert["evidence"]
    assert device["deviceDnsName"] == "laptop-7.contoso.com"
    details = file_item["fileDetails"]
    assert details[algorithm] == value.lower()  # Defender reports hashes in lower case
    assert len(details["sha1"]) == 40 and len(details["sha256"]) == 64
    assert ("md5" in details) is (algorithm == "md5")
    assert details["fileName"] and details["filePath"] and details["fileSize"] > 0
    assert hash_item["algorithm"] == algorithm and hash_item["value"] == value.lower()
    assert file_item["mdeDeviceId"] == device["mdeDeviceId"]


def test_ip_hit_carries_ip_evidence(g: DefenderEmulator) -> None:
    alert = g.raise_hit("IpAddress", "198.51.100.7", device="SRV-2")
    assert _types(alert) == ["deviceEvidence", "ipEvidence"]
    assert alert["evidence"][1]["ipAddress"] == "198.51.100.7"
    assert alert["evidence"][0]["deviceDnsName"] == "srv-2"


def test_domain_hits_carry_a_url_and_sometimes_the_device(g: DefenderEmulator) -> None:
    names = [f"host{n}.example" for n in range(40)]
    with_device = next(name for name in names if domain_has_device(name))
    alone = next(name for name in names if not domain_has_device(name))
    first = g.raise_hit("DomainName", with_device)
    assert _types(first) == ["deviceEvidence", "urlEvidence"]
    assert first["evidence"][1]["url"] == f"http://{with_device}/"
    second = g.raise_hit("DomainName", alone.upper())
    assert _types(second) == ["urlEvidence"]
    assert second["evidence"][0]["url"] == f"http://{alone}/"
    assert g.raise_hit("DomainName", alone)["evidence"] == second["evidence"]  # stable


def test_hit_takes_title_severity_from_the_matching_indicator(g: DefenderEmulator) -> None:
    g.add_indicator(
        indicatorType="FileSha256",
        indicatorValue=SHA256.upper(),
        action="Block",
        title="OpenCTI: bad file",
        description="from OpenCTI",
        severity="High",
    )
    alert = g.raise_hit("FileSha256", SHA256)
    assert alert["title"] == "OpenCTI: bad file"
    assert alert["description"] == "from OpenCTI"
    assert alert["severity"] == "high"
    assert alert["evidence"][1]["remediationStatus"] == "prevented"


def test_raise_hit_with_a_known_id_updates_that_alert(g: DefenderEmulator) -> None:
    first = g.raise_hit("IpAddress", "203.0.113.1", at=T0, alert_id="da1_1")
    second = g.raise_hit("IpAddress", "203.0.113.2", at=T0)
    again = g.raise_hit(
        "IpAddress", "203.0.113.1", device="OTHER", at=T0 + timedelta(hours=1), alert_id="da1_1"
    )
    assert again["id"] == "da1_1" and again["incidentId"] == first["incidentId"]
    assert again["createdDateTime"] == "2026-11-29T10:00:00Z"
    assert again["lastUpdateDateTime"] == again["lastActivityDateTime"] == "2026-11-29T11:00:00Z"
    assert [item.get("deviceDnsName") for item in again["evidence"]] == ["device-1", None, "other"]
    assert [alert["id"] for alert in g.alerts()] == ["da1_1", second["id"]]  # keeps its place


def test_update_alert_and_clear(g: DefenderEmulator, clock: Any) -> None:
    alert = g.raise_hit("IpAddress", "203.0.113.1")
    clock.advance(60)
    updated = g.update_alert(alert["id"], status="resolved")
    assert updated["status"] == "resolved"
    assert updated["lastUpdateDateTime"] == "2026-01-01T00:01:00Z"
    with pytest.raises(KeyError):
        g.update_alert("no-such-alert", status="resolved")
    returned = g.alerts()
    returned[0]["status"] = "changed"  # copies
    assert g.alerts()[0]["status"] == "resolved"
    g.clear_alerts()
    assert g.alerts() == []


def test_unsupported_hit_type_is_refused(g: DefenderEmulator) -> None:
    with pytest.raises(ValueError, match="indicator_type"):
        g.raise_hit("CertificateThumbprint", "a" * 40)


def test_reset_forgets_alerts(g: DefenderEmulator) -> None:
    g.raise_hit("IpAddress", "203.0.113.1")
    g.reset()
    assert g.alerts() == []


# --------------------------------------------------------------------------- HTTP hook


def test_http_hook_raises_a_hit(g: DefenderEmulator, http: httpx.Client) -> None:
    response = http.post(
        "/_test/hits",
        json={
            "indicatorType": "FileSha1",
            "indicatorValue": SHA1,
            "device": "WS-9",
            "at": "2026-11-29T10:00:00Z",
        },
    )
    assert response.status_code == 201, response.text
    alert = response.json()
    assert alert["createdDateTime"] == "2026-11-29T10:00:00Z"
    assert alert["evidence"][0]["deviceDnsName"] == "ws-9"
    assert g.alerts() == [alert]
    assert g.requests[-1].endpoint == "test_hits" and g.requests[-1].status == 201
    minimal = http.post("/_TEST/hits", json={"indicatorType": "Url", "indicatorValue": "x.example"})
    assert minimal.status_code == 201
    assert minimal.json()["evidence"][0]["deviceDnsName"] == "device-1"


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"indicatorType": "Nope", "indicatorValue": "x"},
        {"indicatorType": "Url"},
        {"indicatorType": "Url", "indicatorValue": "x.example", "device": 3},
        {"indicatorType": "Url", "indicatorValue": "x.example", "at": "yesterday"},
    ],
    ids=["not-object", "bad-type", "no-value", "bad-device", "bad-at"],
)
def test_http_hook_refuses_bad_bodies(g: DefenderEmulator, http: httpx.Client, body: Any) -> None:
    response = http.post("/_test/hits", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidInput"
    assert g.alerts() == []


def test_http_hook_ignores_faults(g: DefenderEmulator, http: httpx.Client) -> None:
    g.force_responses("test_hits", [503])
    body = {"indicatorType": "IpAddress", "indicatorValue": "203.0.113.5"}
    assert http.post("/_test/hits", json=body).status_code == 201


# --------------------------------------------------------------------------- listing, $filter


def test_listing_returns_the_alerts_in_the_order_raised(
    g: DefenderEmulator, graph: httpx.Client
) -> None:
    late = g.raise_hit("IpAddress", "203.0.113.1", at=T0 + timedelta(hours=1))
    early = g.raise_hit("IpAddress", "203.0.113.2", at=T0)
    response = graph.get(ALERTS)
    assert _ids(response) == [late["id"], early["id"]]
    assert response.json()["value"][0] == late
    assert "@odata.nextLink" not in response.json() and "@odata.count" not in response.json()


@pytest.mark.parametrize(
    ("clause", "expected"),
    [
        ("createdDateTime ge 2026-11-29T10:02:00Z", [2, 3, 4]),
        ("createdDateTime gt 2026-11-29T10:02:00Z", [3, 4]),
        ("createdDateTime le 2026-11-29T10:01:00Z", [0, 1]),
        ("createdDateTime lt 2026-11-29T10:01:00Z", [0]),
        ("createdDateTime eq 2026-11-29T10:03:00Z", [3]),
        ("createdDateTime eq 2026-11-29T11:03:00+01:00", [3]),
        (
            "createdDateTime ge 2026-11-29T10:01:00.5Z and createdDateTime lt 2026-11-29T10:04:00Z",
            [2, 3],
        ),
        (
            "(createdDateTime ge 2026-11-29T10:01:00Z) and "
            "(lastUpdateDateTime le 2026-11-29T10:01:00Z)",
            [1],
        ),
        ("lastUpdateDateTime gt 2026-11-29T10:03:00Z", [4]),
        (
            "createdDateTime ge 2026-11-29T10:00:00Z and detectionSource eq 'customTi'",
            [0, 1, 2, 3, 4],
        ),
        ("serviceSource eq 'microsoftDefenderForEndpoint'", [0, 1, 2, 3, 4]),
        ("serviceSource eq 'microsoftDefenderForOffice365'", []),
        ("status eq 'new' and severity eq 'medium'", [0, 1, 2, 3, 4]),
    ],
)
def test_filter_on_times_and_sources(
    g: DefenderEmulator, graph: httpx.Client, clause: str, expected: list[int]
) -> None:
    ids = [alert["id"] for alert in _hits(g, 5)]
    assert _ids(_listed(graph, **{"$filter": clause})) == [ids[n] for n in expected]


def test_filter_on_detection_source_accepted_or_refused(
    g: DefenderEmulator, graph: httpx.Client
) -> None:
    custom = g.raise_hit("IpAddress", "203.0.113.1", at=T0)
    g.raise_hit("IpAddress", "203.0.113.2", at=T0, detection_source="antivirus")
    clause = "detectionSource eq 'customTi'"
    assert _ids(_listed(graph, **{"$filter": clause})) == [custom["id"]]
    g.graph_detection_source_filter = "refused"
    message = _bad_request(_listed(graph, **{"$filter": clause}))
    assert message.startswith("Invalid filter clause")
    assert "'detectionSource'" in message and "not supported" in message
    both = f"createdDateTime ge 2026-01-01T00:00:00Z and {clause}"
    _bad_request(_listed(graph, **{"$filter": both}))
    assert len(_ids(_listed(graph, **{"$filter": "createdDateTime ge 2026-01-01T00:00:00Z"}))) == 2


@pytest.mark.parametrize(
    "clause",
    [
        "createdDateTime ge '2026-11-29T10:00:00Z'",
        "createdDateTime ge 2026-11-29T10:00:00",
        "createdDateTime ge 2026-11-29",
        "createdDateTime ne 2026-11-29T10:00:00Z",
        "createdDateTime ge 2026-11-29T10:00:00Z or status eq 'new'",
        "not status eq 'new'",
        "title eq 'x'",
        "createddatetime ge 2026-11-29T10:00:00Z",
        "status ge 'new'",
        "status eq new",
        "contains(title, 'x')",
        "createdDateTime ge",
        "(status eq 'new'",
    ],
)
def test_invalid_filters_are_bad_requests(
    g: DefenderEmulator, graph: httpx.Client, clause: str
) -> None:
    assert _bad_request(_listed(graph, **{"$filter": clause})).startswith("Invalid filter clause")


def test_unsupported_query_options(g: DefenderEmulator, graph: httpx.Client) -> None:
    assert "$orderby" in _bad_request(_listed(graph, **{"$orderby": "createdDateTime"}))
    assert "$select" in _bad_request(_listed(graph, **{"$select": "id"}))
    for name, value in (("$top", "0"), ("$top", "x"), ("$skip", "-1"), ("$count", "yes")):
        _bad_request(_listed(graph, **{name: value}))


def test_orderby_when_accepted(g: DefenderEmulator, graph: httpx.Client) -> None:
    ids = [alert["id"] for alert in _hits(g, 3)]
    g.graph_orderby = "accepted"
    assert _ids(_listed(graph, **{"$orderby": "createdDateTime desc"})) == ids[::-1]
    assert _ids(_listed(graph, **{"$orderby": "createdDateTime"})) == ids
    assert _ids(_listed(graph, **{"$orderby": "status asc,createdDateTime desc"})) == ids[::-1]
    _bad_request(_listed(graph, **{"$orderby": "evidence desc"}))
    _bad_request(_listed(graph, **{"$orderby": "createdDateTime sideways"}))


# --------------------------------------------------------------------------- paging


def test_top_skip_and_count(g: DefenderEmulator, graph: httpx.Client) -> None:
    ids = [alert["id"] for alert in _hits(g, 5)]
    page = _listed(graph, **{"$top": "2", "$skip": "1", "$count": "true"}).json()
    assert [alert["id"] for alert in page["value"]] == ids[1:3]
    assert page["@odata.count"] == 5
    filtered = _listed(
        graph, **{"$filter": "createdDateTime ge 2026-11-29T10:03:00Z", "$count": "true"}
    ).json()
    assert filtered["@odata.count"] == 2 and len(filtered["value"]) == 2
    assert "@odata.count" not in _listed(graph, **{"$count": "false"}).json()
    assert _ids(_listed(graph, **{"$skip": "9"})) == []


def test_next_link_walks_every_page(g: DefenderEmulator, graph: httpx.Client) -> None:
    ids = [alert["id"] for alert in _hits(g, 5)]
    clause = "createdDateTime ge 2026-11-29T10:00:00Z and detectionSource eq 'customTi'"
    url: str | None = f"{ALERTS}?$filter={clause}&$top=2&$count=true"
    seen: list[str] = []
    links: list[str] = []
    while url is not None:
        response = graph.get(url)
        assert response.status_code == 200, response.text
        payload = response.json()
        assert payload["@odata.count"] == 5
        seen += [alert["id"] for alert in payload["value"]]
        url = payload.get("@odata.nextLink")
        if url is not None:
            links.append(url)
    assert seen == ids
    assert len(links) == 2
    query = parse_qs(urlsplit(links[-1]).query)
    assert links[-1].startswith(f"{g.url}{ALERTS}?")
    assert query["$skip"] == ["4"] and query["$top"] == ["2"] and query["$filter"] == [clause]
    assert g.counts()["alerts"] == 3


def test_default_page_size_and_missing_next_link(g: DefenderEmulator, graph: httpx.Client) -> None:
    ids = [alert["id"] for alert in _hits(g, 5)]
    g.graph_default_top = 3
    first = graph.get(ALERTS).json()
    assert [alert["id"] for alert in first["value"]] == ids[:3]
    assert parse_qs(urlsplit(first["@odata.nextLink"]).query) == {"$skip": ["3"]}
    assert _ids(graph.get(first["@odata.nextLink"])) == ids[3:]
    g.graph_next_link = "missing"
    missing = _listed(graph, **{"$count": "true"}).json()
    assert len(missing["value"]) == 3 and missing["@odata.count"] == 5
    assert "@odata.nextLink" not in missing
    assert _ids(_listed(graph, **{"$skip": "3"})) == ids[3:]  # the client must page itself


def test_top_over_the_maximum_is_capped_or_refused(
    g: DefenderEmulator, graph: httpx.Client
) -> None:
    ids = [alert["id"] for alert in _hits(g, 5)]
    g.graph_max_top = 2
    capped = _listed(graph, **{"$top": "4"})
    assert _ids(capped) == ids[:2]
    query = parse_qs(urlsplit(capped.json()["@odata.nextLink"]).query)
    assert query == {"$top": ["4"], "$skip": ["2"]}
    assert _ids(_listed(graph)) == ids[:2]  # the default page is capped too
    g.graph_top_over_max = "error"
    message = _bad_request(_listed(graph, **{"$top": "4"}))
    assert "'2'" in message and "'4'" in message
    assert _ids(_listed(graph, **{"$top": "2"})) == ids[:2]


def test_skip_over_the_limit_is_refused(g: DefenderEmulator, graph: httpx.Client) -> None:
    _hits(g, 3)
    assert len(_ids(_listed(graph, **{"$skip": "5000"}))) == 0
    g.graph_max_skip = 2
    assert len(_ids(_listed(graph, **{"$skip": "2"}))) == 1
    message = _bad_request(_listed(graph, **{"$skip": "3"}))
    assert "Skip" in message and "'3'" in message
