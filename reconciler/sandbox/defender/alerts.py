"""The alerts of the Defender emulator: Graph ``microsoft.graph.security.alert`` objects of hits.

Owns the alert list (insertion order, looked up by id; an alert raised again under the same id is
updated in place), building an alert from a hit on a custom indicator (ids in the portal's
``da<ticks>_<n>`` style, the indicator's title, description and severity when the tenant holds a
matching indicator, the evidence the indicator type implies plus the device's) and editing an
alert as the portal would. Evidence per type: file hashes -> fileEvidence (the hit's hash, the
other hashes derived from it, lower case) and a fileHashEvidence; IpAddress -> ipEvidence; Url ->
urlEvidence; DomainName -> urlEvidence ``http://<domain>/``, with the device's evidence only for
some domains (decided by the domain's SHA-256: even first byte). The list does not lock: callers
hold the emulator's lock.
"""

from __future__ import annotations

import copy
import hashlib
import uuid
import zlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from reconciler.sandbox.defender.core import RawIndicator, format_timestamp, parse_timestamp

Alert = dict[str, Any]

HIT_TYPES = ("FileSha1", "FileSha256", "FileMd5", "IpAddress", "Url", "DomainName")
FILE_TYPES = {"FileSha1": "sha1", "FileSha256": "sha256", "FileMd5": "md5"}
SERVICE_SOURCE = "microsoftDefenderForEndpoint"
CUSTOM_TI = "customTi"
PORTAL = "https://security.microsoft.com"

_DETECTOR_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "defender-emulator/custom-ti"))
_EPOCH = datetime(1, 1, 1, tzinfo=UTC)
_BLOCKING = frozenset({"Block", "BlockAndRemediate", "AlertAndBlock"})
_FIRST_INCIDENT = 1000


def _ticks(moment: datetime) -> int:
    """.NET ticks (100 ns since 0001-01-01), as in the portal's alert ids."""
    delta = moment.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def _signed32(value: int) -> int:
    return value - (1 << 32) if value >= (1 << 31) else value


def _derived(value: str, algorithm: str) -> str:
    """A stable stand-in for a hash of the file the emulator does not have."""
    return hashlib.new(algorithm, f"defender-emulator:{value}".encode()).hexdigest()


def domain_has_device(domain: str) -> bool:
    """Whether a DomainName hit on ``domain`` carries the device's evidence too."""
    return hashlib.sha256(domain.lower().encode()).digest()[0] % 2 == 0


def matching_indicator(
    rows: Iterable[RawIndicator], indicator_type: str, value: str
) -> RawIndicator | None:
    """The first stored indicator of that type and value (compared case-insensitively)."""
    folded = value.casefold()
    for row in rows:
        if row.get("indicatorType") != indicator_type:
            continue
        stored = row.get("indicatorValue")
        if isinstance(stored, str) and stored.casefold() == folded:
            return row
    return None


class AlertList:
    """Alerts in insertion order; ids are unique."""

    def __init__(self) -> None:
        self.items: list[Alert] = []
        self._by_id: dict[str, Alert] = {}
        self._serial = 0

    def clear(self) -> None:
        self.items.clear()
        self._by_id.clear()

    def snapshot(self) -> list[Alert]:
        return copy.deepcopy(self.items)

    def get(self, alert_id: str) -> Alert | None:
        return self._by_id.get(alert_id)

    def new_ids(self, at: datetime, seed_text: str) -> tuple[str, str]:
        """A fresh alert id in the portal's style and a fresh incident id."""
        while True:
            self._serial += 1
            suffix = _signed32(zlib.crc32(f"{self._serial}|{seed_text}".encode()))
            alert_id = f"da{_ticks(at)}_{suffix}"
            if alert_id not in self._by_id:
                return alert_id, str(_FIRST_INCIDENT + self._serial)

    def add(self, alert: Alert) -> Alert:
        self.items.append(alert)
        self._by_id[alert["id"]] = alert
        return alert

    def merge(self, alert: Alert, hit: Alert) -> Alert:
        """The same alert hit again: later activity and update time, any new evidence."""
        for name in ("lastUpdateDateTime", "lastActivityDateTime"):
            if _moment(hit[name]) > _moment(alert[name]):
                alert[name] = hit[name]
        known = [_without_time(item) for item in alert["evidence"]]
        for item in hit["evidence"]:
            if _without_time(item) not in known:
                alert["evidence"].append(item)
        return alert

    def edit(self, alert_id: str, fields: Mapping[str, Any], stamp: str) -> Alert:
        """Set fields as the portal would; ``lastUpdateDateTime`` moves unless given."""
        alert = self._by_id.get(alert_id)
        if alert is None:
            raise KeyError(alert_id)
        alert.update(copy.deepcopy(dict(fields)))
        if "lastUpdateDateTime" not in fields:
            alert["lastUpdateDateTime"] = stamp
        alert["id"] = alert_id
        return alert


def _moment(text: Any) -> datetime:
    parsed = parse_timestamp(text) if isinstance(text, str) else None
    return parsed if parsed is not None else _EPOCH


def _without_time(evidence: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in evidence.items() if key != "createdDateTime"}


def _common(kind: str, stamp: str, verdict: str, status: str, roles: list[str]) -> Alert:
    return {
        "@odata.type": f"#microsoft.graph.security.{kind}",
        "createdDateTime": stamp,
        "verdict": verdict,
        "remediationStatus": status,
        "remediationStatusDetails": None,
        "roles": roles,
        "detailedRoles": [],
        "tags": [],
    }


def device_evidence(device: str, stamp: str) -> Alert:
    name = device.lower()
    return {
        **_common("deviceEvidence", stamp, "unknown", "none", []),
        "firstSeenDateTime": stamp,
        "mdeDeviceId": hashlib.sha1(name.encode()).hexdigest(),
        "azureAdDeviceId": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
        "deviceDnsName": name,
        "hostName": name.split(".")[0],
        "osPlatform": "Windows11",
        "osBuild": 22631,
        "version": "23H2",
        "healthStatus": "active",
        "riskScore": "medium",
        "rbacGroupId": 0,
        "rbacGroupName": None,
        "onboardingStatus": "onboarded",
        "defenderAvStatus": "updated",
        "loggedOnUsers": [],
        "ipInterfaces": [],
        "vmMetadata": None,
    }


def _entity_evidence(
    indicator_type: str, value: str, device: str, stamp: str, status: str
) -> list[Alert]:
    """The evidence of the matched entity (file, hash, IP or URL)."""
    if indicator_type in FILE_TYPES:
        algorithm = FILE_TYPES[indicator_type]
        digest = value.lower()
        details: dict[str, Any] = {
            "sha1": digest if algorithm == "sha1" else _derived(digest, "sha1"),
            "sha256": digest if algorithm == "sha256" else _derived(digest, "sha256"),
        }
        if algorithm == "md5":
            details["md5"] = digest
        details.update(
            fileName=f"{digest[:8]}.exe",
            filePath="C:\\Users\\Public\\Downloads",
            fileSize=4096 + int(digest[:4], 16),
            filePublisher=None,
            signer=None,
            issuer=None,
        )
        file_item = {
            **_common("fileEvidence", stamp, "malicious", status, []),
            "detectionStatus": "prevented" if status == "prevented" else "detected",
            "mdeDeviceId": hashlib.sha1(device.lower().encode()).hexdigest(),
            "fileDetails": details,
        }
        hash_item = {
            **_common("fileHashEvidence", stamp, "malicious", status, []),
            "algorithm": algorithm,
            "value": digest,
        }
        return [file_item, hash_item]
    if indicator_type == "IpAddress":
        return [
            {
                **_common("ipEvidence", stamp, "malicious", status, ["destination"]),
                "ipAddress": value,
                "countryLetterCode": None,
                "location": None,
                "stream": None,
            }
        ]
    url = value if indicator_type == "Url" else f"http://{value.lower()}/"
    return [{**_common("urlEvidence", stamp, "malicious", status, []), "url": url}]


def build_alert(
    *,
    alert_id: str,
    incident_id: str,
    tenant_id: str,
    indicator_type: str,
    value: str,
    device: str,
    at: datetime,
    detection_source: str,
    indicator: RawIndicator | None,
) -> Alert:
    """The Graph alert of one hit (``indicator``: the tenant's matching row, if any)."""
    if indicator_type not in HIT_TYPES:
        raise ValueError(
            f"indicator_type must be one of {', '.join(HIT_TYPES)}, not {indicator_type!r}"
        )
    stamp = format_timestamp(at)
    action = indicator.get("action") if indicator is not None else None
    status = "prevented" if action in _BLOCKING else "none"
    evidence: list[Alert] = []
    if indicator_type != "DomainName" or domain_has_device(value):
        evidence.append(device_evidence(device, stamp))
    evidence.extend(_entity_evidence(indicator_type, value, device, stamp, status))
    title = str(indicator.get("title") or "") if indicator is not None else ""
    description = str(indicator.get("description") or "") if indicator is not None else ""
    severity = str(indicator.get("severity") or "") if indicator is not None else ""
    return {
        "@odata.type": "#microsoft.graph.security.alert",
        "id": alert_id,
        "providerAlertId": alert_id,
        "incidentId": incident_id,
        "status": "new",
        "severity": severity.lower() or "medium",
        "classification": None,
        "determination": None,
        "serviceSource": SERVICE_SOURCE,
        "detectionSource": detection_source,
        "productName": "Microsoft Defender for Endpoint",
        "detectorId": _DETECTOR_ID,
        "tenantId": tenant_id,
        "title": title or f"{value} detected",
        "description": description
        or f"A custom indicator was matched: {indicator_type} {value} on {device}.",
        "recommendedActions": "",
        "category": "Malware" if indicator_type in FILE_TYPES else "SuspiciousActivity",
        "assignedTo": None,
        "alertWebUrl": f"{PORTAL}/alerts/{alert_id}?tid={tenant_id}",
        "incidentWebUrl": f"{PORTAL}/incidents/{incident_id}?tid={tenant_id}",
        "actorDisplayName": None,
        "threatDisplayName": None,
        "threatFamilyName": None,
        "mitreTechniques": [],
        "createdDateTime": stamp,
        "lastUpdateDateTime": stamp,
        "resolvedDateTime": None,
        "firstActivityDateTime": stamp,
        "lastActivityDateTime": stamp,
        "comments": [],
        "evidence": evidence,
        "systemTags": [],
        "additionalData": {},
    }
