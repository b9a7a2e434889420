"""OpenCTI live-stream events: what an object event is (``StreamEvent``), how its JSON envelope
is decoded, and the small facts read off it (internal ids, stream-id timestamps).

Owns: the event vocabulary (``DATA_EVENTS``, ``STIX_EXT_OCTI``), decoding one event's
``data`` text into a ``StreamEvent`` (``decode_event``), and the read-only views on it. Must
not: do I/O, log, keep state, or decide what an event means for Defender (the controller does
a scoped reconcile per batch).

Dispatch is on the SSE event name (``create``/``update``/``delete``/``merge``), never on the
envelope ``type``. An envelope is a JSON object whose ``data`` is the complete STIX object
(for a delete: its last state); anything else is malformed. Only indicators
(``is_indicator``) are handed to the reconciler; every other object is skipped by the reader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DATA_EVENTS",
    "STIX_EXT_OCTI",
    "StreamEvent",
    "decode_event",
    "id_millis",
]

#: OpenCTI's STIX property extension (holds the internal id, score, detection ...).
STIX_EXT_OCTI = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba"

#: Fields any edit moves (STIX ``modified``, the extension's ``updated_at``).
_EDIT_STAMPS = frozenset({"modified", "updated_at"})

#: SSE event names that carry an object.
DATA_EVENTS = frozenset({"create", "update", "delete", "merge"})


def _internal_id(stix: object) -> str | None:
    """The OpenCTI internal id held by a STIX object's property extension, or None."""
    if not isinstance(stix, dict):
        return None
    extensions = stix.get("extensions")
    if isinstance(extensions, dict):
        octi = extensions.get(STIX_EXT_OCTI)
        if isinstance(octi, dict):
            value = octi.get("id")
            if isinstance(value, str) and value:
                return value
    return None


@dataclass(frozen=True)
class StreamEvent:
    """One object event from the live stream, as handed to ``on_events``."""

    id: str
    """SSE id (the stream position, ``<epoch-ms>-<seq>``)."""
    event: str
    """SSE event name: create, update, delete or merge. Dispatch on this, not envelope type."""
    data: dict[str, Any]
    """The complete STIX object (for delete: its last state)."""
    envelope: dict[str, Any]
    """The whole parsed envelope (``context.patch``/``reverse_patch``, ``origin`` ...)."""

    @property
    def opencti_id(self) -> str | None:
        """OpenCTI internal id from the property extension, or None when absent."""
        return _internal_id(self.data)

    @property
    def opencti_ids(self) -> tuple[str, ...]:
        """Every OpenCTI internal id this event asks the reconciler to look at again, sorted.

        The object's own id and, for a ``merge``, the ids of the objects it absorbed
        (``envelope["context"]["sources"]``, STIX objects carrying the same extension; those
        without an id are skipped). A malformed envelope yields what can be read, never raises.
        """
        found: set[str] = set()
        own = self.opencti_id
        if own is not None:
            found.add(own)
        if self.event == "merge":
            context = self.envelope.get("context") if isinstance(self.envelope, dict) else None
            sources = context.get("sources") if isinstance(context, dict) else None
            if isinstance(sources, list):
                for source in sources:
                    absorbed = _internal_id(source)
                    if absorbed is not None:
                        found.add(absorbed)
        return tuple(sorted(found))

    @property
    def references_only(self) -> bool:
        """An ``update`` whose patch changes only the object's external references (and the
        timestamps that move with any edit): nothing the mapping reads, so no reason to
        reconcile Defender. The write-back's own edits are such updates. An update without a
        readable patch is not (never raises)."""
        if self.event != "update" or not isinstance(self.envelope, dict):
            return False
        context = self.envelope.get("context")
        patch = context.get("patch") if isinstance(context, dict) else None
        if not isinstance(patch, list) or not patch:
            return False
        for op in patch:
            path = op.get("path") if isinstance(op, dict) else None
            if not isinstance(path, str):
                return False
            parts = path.strip("/").split("/")
            if parts[0] != "external_references" and parts[-1] not in _EDIT_STAMPS:
                return False
        return True

    @property
    def is_indicator(self) -> bool:
        """True for STIX indicators, the only objects the reconciler acts on (never raises on
        a malformed object)."""
        return isinstance(self.data, dict) and self.data.get("type") == "indicator"


def decode_event(position: str, name: str, raw: str) -> StreamEvent:
    """The event carried by one data message; ``ValueError`` when its envelope is malformed
    (not JSON, not an object, or without an object under ``data``)."""
    envelope = json.loads(raw)
    data = envelope.get("data") if isinstance(envelope, dict) else None
    if not isinstance(data, dict):
        raise ValueError("no object in the event envelope")
    return StreamEvent(id=position, event=name, data=data, envelope=envelope)


def id_millis(position: str | None) -> int | None:
    """Epoch milliseconds of a stream id ``<ms>-<seq>``, None when it has another shape."""
    if not position:
        return None
    head = position.split("-", 1)[0]
    return int(head) if head.isdigit() else None
