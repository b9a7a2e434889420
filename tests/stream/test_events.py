"""The event view's internal ids (``StreamEvent.opencti_ids``), envelope decoding, and the
tuning knobs' defaults and validation."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.opencti.events import decode_event
from reconciler.opencti.stream import STIX_EXT_OCTI, StreamEvent, StreamTuning


def _stix(internal_id: str | None, kind: str = "indicator") -> dict[str, Any]:
    obj: dict[str, Any] = {"type": kind, "id": f"{kind}--{internal_id or 'none'}"}
    if internal_id is not None:
        obj["extensions"] = {STIX_EXT_OCTI: {"id": internal_id, "type": kind}}
    return obj


def _event(name: str, data: dict[str, Any], envelope: dict[str, Any] | None = None) -> StreamEvent:
    return StreamEvent(id="1-0", event=name, data=data, envelope=envelope or {"data": data})


@pytest.mark.parametrize("name", ["create", "update", "delete"])
def test_opencti_ids_of_a_plain_event_is_its_own_id(name: str) -> None:
    data = _stix("own-1")
    envelope = {"data": data, "context": {"sources": [_stix("ignored-unless-merge")]}}
    event = _event(name, data, envelope)
    assert event.opencti_ids == ("own-1",)
    assert event.opencti_id == "own-1"


def test_opencti_ids_of_a_merge_adds_the_absorbed_objects_sorted() -> None:
    data = _stix("m-target")
    sources = [_stix("z-absorbed"), _stix("a-absorbed"), _stix(None), _stix("m-target")]
    envelope = {"data": data, "context": {"patch": [], "sources": sources}}
    assert _event("merge", data, envelope).opencti_ids == ("a-absorbed", "m-target", "z-absorbed")


def test_opencti_ids_without_any_internal_id_is_empty() -> None:
    data = {"type": "indicator"}
    assert _event("merge", data, {"data": data, "context": {"sources": [{}]}}).opencti_ids == ()


@pytest.mark.parametrize(
    "envelope",
    [
        {},
        {"context": None},
        {"context": "sources"},
        {"context": {"sources": None}},
        {"context": {"sources": {"id": "x"}}},
        {"context": {"sources": ["x", 3, None, [], {"extensions": "x"}]}},
        {"context": {"sources": [{"extensions": {STIX_EXT_OCTI: {"id": 7}}}]}},
        {"context": {"sources": [{"extensions": {STIX_EXT_OCTI: {"id": ""}}}]}},
    ],
    ids=[
        "no-context",
        "null-context",
        "string-context",
        "null-sources",
        "dict-sources",
        "junk-sources",
        "non-string-id",
        "empty-id",
    ],
)
def test_opencti_ids_of_a_malformed_merge_keeps_the_own_id(envelope: dict[str, Any]) -> None:
    data = _stix("own-1")
    assert _event("merge", data, envelope).opencti_ids == ("own-1",)


def test_opencti_ids_never_raises_on_a_non_dict_envelope() -> None:
    data = _stix("own-1")
    event = StreamEvent(id="1-0", event="merge", data=data, envelope=[1, 2])  # type: ignore[arg-type]
    assert event.opencti_ids == ("own-1",)


def test_decode_event_keeps_the_envelope() -> None:
    event = decode_event("5-1", "merge", '{"data": {"type": "indicator"}, "context": {"a": 1}}')
    assert event == StreamEvent(
        id="5-1",
        event="merge",
        data={"type": "indicator"},
        envelope={"data": {"type": "indicator"}, "context": {"a": 1}},
    )


@pytest.mark.parametrize("raw", ["{", "[]", '{"data": []}', '{"type": "indicator"}', "null"])
def test_decode_event_rejects_malformed_envelopes(raw: str) -> None:
    with pytest.raises(ValueError):
        decode_event("5-1", "create", raw)


def test_tuning_defaults_and_validation() -> None:
    tuning = StreamTuning()
    assert (tuning.backoff_base, tuning.backoff_cap, tuning.heartbeat_timeout) == (1.0, 60.0, 45.0)
    assert (tuning.batch_window, tuning.batch_max, tuning.max_buffer) == (1.0, 500, 5000)
    assert (tuning.handler_attempts, tuning.handler_retry_delay) == (3, 1.0)
    assert (tuning.connect_timeout, tuning.save_interval) == (10.0, 1.0)
    with pytest.raises(ValueError, match="batch_max"):
        StreamTuning(batch_max=0)
