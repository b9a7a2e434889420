"""The SSE parser and the event view, from tables."""

from __future__ import annotations

import pytest

from reconciler.opencti.stream import STIX_EXT_OCTI, SSEMessage, SSEParser, StreamEvent, id_millis

CASES = [
    pytest.param(
        ["id: 1-0", "event: create", 'data: {"a": 1}', ""],
        [SSEMessage("1-0", "create", '{"a": 1}', None)],
        id="one-message",
    ),
    pytest.param(
        ["id: 2-0", "event: update", "data: {", 'data: "a": 1}', ""],
        [SSEMessage("2-0", "update", '{\n"a": 1}', None)],
        id="multi-line-data-joined-with-newline",
    ),
    pytest.param(
        [": keep-alive", "", "id:3-1", "event:heartbeat", 'data:"x"', ""],
        [SSEMessage("3-1", "heartbeat", '"x"', None)],
        id="comment-ignored-and-no-space-after-colon",
    ),
    pytest.param(
        ["event: connected", 'data: {"lastEventId": "5-0"}', ""],
        [SSEMessage(None, "connected", '{"lastEventId": "5-0"}', None)],
        id="message-without-id",
    ),
    pytest.param(
        ["retry: 200", "", "retry: soon", "data: x", ""],
        [SSEMessage(None, "message", "", 200), SSEMessage(None, "message", "x", None)],
        id="retry-digits-only-default-event-name",
    ),
    pytest.param(
        ["id: 4-0", "data:  two spaces", "data", ""],
        [SSEMessage("4-0", "message", " two spaces\n", None)],
        id="only-one-leading-space-stripped-and-bare-field",
    ),
    pytest.param(
        ["id: 6-0", "event: create", "", "", "id: 7-0", "event: delete", ""],
        [SSEMessage("6-0", "create", "", None), SSEMessage("7-0", "delete", "", None)],
        id="id-does-not-carry-over-and-extra-blank-lines",
    ),
    pytest.param(
        ["id: 8-0", "event: create", "data: x"],
        [],
        id="incomplete-message-not-dispatched",
    ),
]


@pytest.mark.parametrize(("lines", "expected"), CASES)
def test_parse(lines: list[str], expected: list[SSEMessage]) -> None:
    assert SSEParser().parse(lines) == expected


def test_event_view_reads_internal_id_and_type() -> None:
    data = {"type": "indicator", "extensions": {STIX_EXT_OCTI: {"id": "internal-1"}}}
    event = StreamEvent(id="1-0", event="create", data=data, envelope={"data": data})
    assert event.opencti_id == "internal-1"
    assert event.is_indicator


@pytest.mark.parametrize(
    "data",
    [{"type": "identity"}, {"type": "indicator", "extensions": {"other": {"id": "x"}}}],
    ids=["no-extensions", "other-extension-only"],
)
def test_event_view_without_internal_id(data: dict[str, object]) -> None:
    assert StreamEvent(id="1-0", event="create", data=data, envelope={}).opencti_id is None


@pytest.mark.parametrize(
    ("position", "millis"),
    [("1700000000000-3", 1700000000000), ("0-0", 0), ("abc", None), (None, None)],
)
def test_id_millis(position: str | None, millis: int | None) -> None:
    assert id_millis(position) == millis
