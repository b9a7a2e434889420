"""From a Defender alert to the OpenCTI indicators it is a hit of.

An alert (Microsoft Graph ``alerts_v2``) carries evidence: files with their hashes, IP
addresses, URLs, devices. Each piece of evidence gives the Defender keys it can match (a URL
also its domain), in canonical form; a key one of our Defender indicators holds names the
OpenCTI indicators behind it (its ``externalId``, and every id merged into it). An alert
matching nothing we own is no hit of ours. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from reconciler.mapping import canonical_value
from reconciler.model import IndicatorKey, IndicatorType

__all__ = ["Hit", "evidence_keys", "match_hits", "read_alert"]

_HASHES = {
    "sha1": IndicatorType.FILE_SHA1,
    "sha256": IndicatorType.FILE_SHA256,
    "md5": IndicatorType.FILE_MD5,
}


@dataclass(frozen=True, slots=True)
class Hit:
    """One alert, as much of it as a sighting shows."""

    alert_id: str
    url: str | None
    title: str
    updated: datetime  # lastUpdateDateTime (else createdDateTime): what windows select on
    first_seen: datetime
    last_seen: datetime
    devices: tuple[str, ...]
    keys: frozenset[IndicatorKey]


def _when(alert: Mapping[str, Any], *names: str) -> datetime | None:
    for name in names:
        raw = alert.get(name)
        if isinstance(raw, str) and raw:
            try:
                return datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                continue
    return None


def read_alert(alert: Mapping[str, Any]) -> Hit | None:
    """The hit an alert is (``None``: no id or no date: it cannot be counted exactly once)."""
    ident = alert.get("id")
    created = _when(alert, "createdDateTime")
    if not isinstance(ident, str) or not ident or created is None:
        return None
    updated = _when(alert, "lastUpdateDateTime") or created
    first = _when(alert, "firstActivityDateTime") or created
    last = _when(alert, "lastActivityDateTime") or first
    evidence = alert.get("evidence")
    items = [e for e in evidence if isinstance(e, dict)] if isinstance(evidence, list) else []
    devices = sorted(
        {
            str(e.get("deviceDnsName") or e.get("mdeDeviceId"))
            for e in items
            if str(e.get("@odata.type", "")).endswith("deviceEvidence")
            and (e.get("deviceDnsName") or e.get("mdeDeviceId"))
        }
    )
    url = alert.get("alertWebUrl")
    title = alert.get("title")
    return Hit(
        ident,
        url if isinstance(url, str) and url else None,
        title if isinstance(title, str) else "",
        updated,
        min(first, last),
        max(first, last),
        tuple(devices),
        frozenset(k for e in items for k in evidence_keys(e)),
    )


def evidence_keys(evidence: Mapping[str, Any]) -> Iterable[IndicatorKey]:
    """The canonical Defender keys one piece of evidence can match."""
    kind = str(evidence.get("@odata.type", "")).rsplit(".", 1)[-1]
    if kind == "fileEvidence":
        details = evidence.get("fileDetails")
        if isinstance(details, dict):
            for name, itype in _HASHES.items():
                yield from _key(itype, details.get(name))
    elif kind == "fileHashEvidence":
        algorithm = _HASHES.get(str(evidence.get("algorithm", "")).lower())
        if algorithm is not None:
            yield from _key(algorithm, evidence.get("value"))
    elif kind == "ipEvidence":
        yield from _key(IndicatorType.IP_ADDRESS, evidence.get("ipAddress"))
    elif kind == "urlEvidence":
        url = evidence.get("url")
        yield from _key(IndicatorType.URL, url)
        if isinstance(url, str):
            host = urlsplit(url if "//" in url else f"//{url}").hostname
            yield from _key(IndicatorType.DOMAIN_NAME, host)


def _key(itype: IndicatorType, value: object) -> Iterable[IndicatorKey]:
    if isinstance(value, str) and value.strip():
        yield IndicatorKey(itype, canonical_value(itype, value))


def match_hits(
    hits: Iterable[Hit], owned: Mapping[IndicatorKey, tuple[str, ...]]
) -> dict[str, list[Hit]]:
    """The hits of each OpenCTI indicator (``owned``: key → OpenCTI ids behind our Defender
    indicator holding it); an alert counts once per indicator whatever its evidence."""
    out: dict[str, list[Hit]] = {}
    for hit in hits:
        ids = {oid for key in hit.keys for oid in owned.get(key, ())}
        for oid in sorted(ids):
            out.setdefault(oid, []).append(hit)
    return out
