"""The OpenCTI side of the sightings: one sighting per indicator and tenant, counting alerts.

Where an indicator was seen is the tenant, as a ``System`` identity ("Microsoft Defender for
Endpoint", plus the tenant's name), made once (``identityAdd`` finds it again by name). Each
counted alert is an external reference of the sighting (the alert's id and its portal link):
the set of alerts already counted is read back from the platform, so an alert is counted once
whatever was lost locally.

Per pass, for the indicators with hits: read their sightings by this identity (batched by
``fromId``), keep the alerts not linked yet, create their references, then either patch the
sighting (``attribute_count`` = old count + new alerts, first/last seen widened, references
attached) or create it (``stixSightingRelationshipAdd`` with the count: the platform refuses a
null count, and its own upsert would replace a count rather than add to it, so we never rely
on it). Must not decide what a hit is (``reconciler.sightings`` does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.clock import Clock
from reconciler.errors import SourceError
from reconciler.opencti.mutations import Mutations, Op, attach_reference
from reconciler.opencti.source import OpenCTISource
from reconciler.sightings import Hit, SinkOutcome

__all__ = ["OpenCTISightings"]

_READ = """query SightingsOf($filters: FilterGroup, $first: Int, $after: ID) {
  stixSightingRelationships(filters: $filters, first: $first, after: $after) {
    edges { node { id attribute_count first_seen last_seen from { id } to { id }
      externalReferences { edges { node { id source_name external_id } } } } }
    pageInfo { hasNextPage endCursor }
  }
}"""


@dataclass
class _Existing:
    id: str
    count: int
    first_seen: str | None
    last_seen: str | None
    alerts: set[str]


def _stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")


class OpenCTISightings:
    """``SightingSink`` over the platform's GraphQL API."""

    def __init__(
        self,
        source: OpenCTISource,
        identity_name: str,
        *,
        reference_source: str = "Microsoft Defender for Endpoint alert",
        batch: int = 100,
        calls_per_minute: int = 1200,
        clock: Clock | None = None,
    ) -> None:
        self.source = source
        self.identity_name = identity_name
        self.reference_source = reference_source
        self.mutations = Mutations(
            source, batch=batch, calls_per_minute=calls_per_minute, clock=clock
        )
        self._identity: str | None = None
        self.reads = 0

    def identity(self) -> str:
        """The id of the identity sightings are recorded at (made on first use)."""
        if self._identity is None:
            failed: dict[str, str] = {}
            spec = {
                "type": "System",
                "name": self.identity_name,
                "description": "Endpoints protected by Microsoft Defender for Endpoint; "
                "sightings here are hits of custom indicators deployed by "
                "opencti-defender-reconciler.",
            }
            (answer,) = self.mutations.run(
                [
                    Op(
                        "@a: identityAdd(input: $@vinput) { id }",
                        {"input": ("IdentityAddInput!", spec)},
                        "identity",
                    )
                ],
                failed,
            )
            if not isinstance(answer, dict) or not answer.get("id"):
                raise SourceError(
                    f"OpenCTI: the identity {self.identity_name!r} for sightings could not be "
                    f"made: {failed.get('identity', 'no id answered')}"
                )
            self._identity = str(answer["id"])
        return self._identity

    def record(self, hits: Mapping[str, Sequence[Hit]]) -> SinkOutcome:
        outcome = SinkOutcome()
        calls_before = self.mutations.calls + self.reads
        where = self.identity()
        existing = self._existing(sorted(hits), where)
        todo: list[tuple[str, list[Hit]]] = []
        for oid in sorted(hits):
            known = existing.get(oid)
            linked = known.alerts if known is not None else set()
            new = [h for h in _unique(hits[oid]) if h.alert_id not in linked]
            if new:
                todo.append((oid, new))
        # References of the new alerts, one per alert (the same alert on two indicators is one
        # reference object: the platform finds it again by its url or id).
        alerts = {h.alert_id: h for _, new in todo for h in new}
        order = sorted(alerts)
        answers = self.mutations.run([self._reference(alerts[a], a) for a in order], outcome.failed)
        ref_ids = {
            a: str(ans["id"])
            for a, ans in zip(order, answers, strict=True)
            if isinstance(ans, dict) and ans.get("id")
        }
        ops: list[Op] = []
        counted: dict[str, int] = {}
        for oid, new in todo:
            refs = [ref_ids[h.alert_id] for h in new if h.alert_id in ref_ids]
            if len(refs) < len(new):
                outcome.failed.setdefault(oid, "an alert reference could not be made")
                continue
            known = existing.get(oid)
            first = _stamp(min(h.first_seen for h in new))
            last = _stamp(max(h.last_seen for h in new))
            if known is None:
                ops.append(self._create(oid, where, len(new), first, last, refs))
            else:
                first = min(first, known.first_seen or first)
                last = max(last, known.last_seen or last)
                ops.append(_patch(known.id, oid, known.count + len(new), first, last))
                ops.extend(attach_reference(known.id, r, oid, sighting=True) for r in refs)
            counted[oid] = len(new)
        self.mutations.run(ops, outcome.failed)
        outcome.added = {oid: n for oid, n in counted.items() if oid not in outcome.failed}
        outcome.calls = self.mutations.calls + self.reads - calls_before
        return outcome

    def _existing(self, oids: Sequence[str], where: str) -> dict[str, _Existing]:
        """This identity's sightings of ``oids`` (the latest one per indicator), with the
        ids of the alerts each counts."""
        found: dict[str, _Existing] = {}
        for start in range(0, len(oids), 100):
            part = list(oids[start : start + 100])
            filters = {
                "mode": "and",
                "filters": [
                    {"key": ["fromId"], "values": part, "operator": "eq", "mode": "or"},
                    {"key": ["toId"], "values": [where], "operator": "eq", "mode": "or"},
                ],
                "filterGroups": [],
            }
            after: str | None = None
            while True:
                result = self.source.graphql(
                    _READ, {"filters": filters, "first": 500, "after": after}, "sightings read"
                )
                self.reads += 1
                listing = (result.get("data") or {}).get("stixSightingRelationships")
                if not isinstance(listing, dict):
                    raise SourceError("OpenCTI answered no sightings to the sightings read")
                for edge in listing.get("edges") or []:
                    self._keep(edge.get("node") or {}, found)
                info = listing.get("pageInfo") or {}
                if not info.get("hasNextPage") or not info.get("endCursor"):
                    break
                after = str(info["endCursor"])
        return found

    def _keep(self, node: dict[str, Any], found: dict[str, _Existing]) -> None:
        oid = str((node.get("from") or {}).get("id"))
        refs = node.get("externalReferences") or {}
        edges = refs.get("edges") if isinstance(refs, dict) else refs
        alerts = {
            str((e.get("node") or e).get("external_id"))
            for e in edges or []
            if isinstance(e, dict)
            and (e.get("node") or e).get("source_name") == self.reference_source
        }
        count = node.get("attribute_count")
        entry = _Existing(
            str(node.get("id")),
            int(count) if isinstance(count, int | str) and str(count).isdigit() else 0,
            node.get("first_seen"),
            node.get("last_seen"),
            alerts,
        )
        known = found.get(oid)
        if known is None:
            found[oid] = entry
            return
        # Several sightings (the platform opens a new one after ~30 days): alerts counted by
        # any of them are counted; new ones go on the latest.
        merged = known.alerts | alerts
        if (entry.last_seen or "") > (known.last_seen or ""):
            found[oid] = entry
        found[oid].alerts = merged

    def _reference(self, hit: Hit, alert_id: str) -> Op:
        spec: dict[str, Any] = {
            "source_name": self.reference_source,
            "external_id": alert_id,
            "description": (hit.title or "Defender alert")
            + (f" on {', '.join(hit.devices)}" if hit.devices else ""),
        }
        if hit.url:
            spec["url"] = hit.url
        return Op(
            "@a: externalReferenceAdd(input: $@vinput) { id }",
            {"input": ("ExternalReferenceAddInput!", spec)},
            alert_id,
        )

    def _create(
        self, oid: str, where: str, count: int, first: str, last: str, refs: list[str]
    ) -> Op:
        spec = {
            "fromId": oid,
            "toIds": [where],
            "attribute_count": count,
            "first_seen": first,
            "last_seen": last,
            "x_opencti_negative": False,
            "confidence": 100,
            "description": "Hits of this indicator on endpoints, from the alerts Microsoft "
            "Defender for Endpoint raised (each linked as an external reference).",
            "externalReferences": refs,
        }
        return Op(
            "@a: stixSightingRelationshipAdd(input: $@vinput) { id }",
            {"input": ("StixSightingRelationshipAddInput!", spec)},
            oid,
        )


def _patch(sighting_id: str, oid: str, count: int, first: str, last: str) -> Op:
    return Op(
        "@a: stixSightingRelationshipEdit(id: $@vid) { fieldPatch(input: $@vinput) { id } }",
        {
            "id": ("ID!", sighting_id),
            "input": (
                "[EditInput]!",
                [
                    {"key": "attribute_count", "value": [str(count)]},
                    {"key": "first_seen", "value": [first]},
                    {"key": "last_seen", "value": [last]},
                ],
            ),
        },
        oid,
    )


def _unique(hits: Sequence[Hit]) -> list[Hit]:
    seen: set[str] = set()
    out = []
    for h in hits:
        if h.alert_id not in seen:
            seen.add(h.alert_id)
            out.append(h)
    return out
