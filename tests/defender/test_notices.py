"""Pure pieces of the Defender adapter: lifecycle headers, the refused-bodies memory, the
roles claim of a token."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from reconciler.clock import FakeClock
from reconciler.defender.auth import token_roles
from reconciler.defender.lifecycle import LifecycleWatch, parse_deprecation, parse_sunset
from reconciler.defender.rejections import RejectionMemory


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("@1768435200", (True, datetime(2026, 1, 15, tzinfo=UTC))),
        ("true", (True, None)),
        ("false", (False, None)),
        ("Thu, 15 Jan 2026 00:00:00 GMT", (True, datetime(2026, 1, 15, tzinfo=UTC))),
        ("@soon", (True, None)),
        ("garbage", (True, None)),
    ],
    ids=["rfc9745", "draft-true", "false", "http-date", "bad-epoch", "unreadable"],
)
def test_deprecation_header_forms(header: str, expected: tuple[bool, datetime | None]) -> None:
    assert parse_deprecation(header) == expected


def test_sunset_header() -> None:
    assert parse_sunset("Mon, 01 Feb 2027 00:00:00 GMT") == datetime(2027, 2, 1, tzinfo=UTC)
    assert parse_sunset("not a date") is None


def test_each_endpoint_is_reported_once_with_its_dates() -> None:
    seen = []
    watch = LifecycleWatch(seen.append)
    headers = {
        "Deprecation": "@1768435200",
        "Sunset": "Mon, 01 Feb 2027 00:00:00 GMT",
        "Link": '<https://learn.microsoft.com/x>; rel="deprecation"',
    }
    for _ in range(3):
        watch.observe("list", 200, headers)
    watch.observe("import", 200, {})
    watch.observe("import", 410, {})
    assert [n.endpoint for n in seen] == ["list", "import"]
    listed, gone = seen
    assert listed.sunset == datetime(2027, 2, 1, tzinfo=UTC)
    assert listed.link == "https://learn.microsoft.com/x"
    assert "sunset 2027-02-01" in listed.describe()
    assert gone.gone and "410" in gone.describe()
    assert watch.notices == seen


def test_a_refused_body_is_remembered_by_content_until_it_expires() -> None:
    clock = FakeClock()
    memory = RejectionMemory(3600, clock=clock)
    body = {"indicatorValue": "microsoft.com", "indicatorType": "DomainName", "action": "Block"}
    memory.remember(body, "InvalidInput: refused")
    assert memory.reason(dict(reversed(body.items()))) == "InvalidInput: refused"
    assert memory.reason({**body, "title": "edited"}) is None  # another body: sent at once
    clock.advance(3601)
    assert memory.reason(body) is None
    assert len(memory) == 0


def test_a_memory_of_zero_hours_remembers_nothing() -> None:
    memory = RejectionMemory(0)
    memory.remember({"a": 1}, "no")
    assert memory.reason({"a": 1}) is None


def _jwt(payload: object) -> str:
    def part(obj: object) -> str:
        raw = json.dumps(obj).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(payload)}.c2ln"


@pytest.mark.parametrize(
    ("token", "roles"),
    [
        (
            _jwt({"roles": ["Ti.ReadWrite.All", "Machine.Read.All"]}),
            ("Ti.ReadWrite.All", "Machine.Read.All"),
        ),
        (_jwt({"aud": "x"}), ()),
        ("emu.opaque", None),
        ("a.%%%.c", None),
        (_jwt(["not", "a", "dict"]), None),
    ],
    ids=["roles", "no-roles-claim", "not-a-jwt", "bad-base64", "not-an-object"],
)
def test_token_roles(token: str, roles: tuple[str, ...] | None) -> None:
    assert token_roles(token) == roles
