"""How a deployment status looks in OpenCTI, and the edits that bring an indicator there.

A status becomes external references on the indicator, all with one ``source_name`` (ours:
"Microsoft Defender for Endpoint", with the tenant's name when one is set), so they are told
apart from everything else on the indicator and removable by us alone:

- one per Defender indicator holding one of its values: ``external_id`` = the Defender id,
  ``url`` = the indicator in the Defender portal, ``description`` = type, value, action, expiry;
- one ``not-deployed:<OpenCTI id>`` reference listing each reason a value is not deployed.

``diff`` compares what an indicator should carry with the references of ours it carries now
(matched on ``external_id``) and returns the edits: create and attach, patch, detach (and
delete the reference object when nothing else can be using it). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from reconciler.writeback.status import Status

__all__ = [
    "NOT_DEPLOYED",
    "Attached",
    "Edits",
    "Reference",
    "ReferenceStyle",
    "diff",
]

#: ``external_id`` prefix of the "not deployed" reference (followed by the OpenCTI id).
NOT_DEPLOYED = "not-deployed:"

#: Portal page of the custom indicators, by Defender indicator type.
_PORTAL_TAB = {
    "FileSha1": "file",
    "FileSha256": "file",
    "FileMd5": "file",
    "CertificateThumbprint": "certificate",
    "IpAddress": "ip",
    "DomainName": "url",
    "Url": "url",
}


@dataclass(frozen=True, slots=True)
class Reference:
    """An external reference as we want it on one indicator."""

    external_id: str
    url: str | None
    description: str


@dataclass(frozen=True, slots=True)
class Attached:
    """One of our external references attached to an indicator now (as OpenCTI answered)."""

    id: str
    external_id: str | None
    url: str | None
    description: str | None


@dataclass(frozen=True)
class ReferenceStyle:
    """How references are written: their ``source_name``, the portal they link to, and the
    tenant (named in the text; its id in the portal link)."""

    source_name: str = "Microsoft Defender for Endpoint"
    portal_url: str = "https://security.microsoft.com"
    tenant_id: str | None = None
    tenant_name: str | None = None

    def render(self, opencti_id: str, status: Status) -> tuple[Reference, ...]:
        """The references ``status`` shows on the indicator ``opencti_id`` (sorted)."""
        where = f"Microsoft Defender for Endpoint{self._tenant_text()}"
        refs = [
            Reference(
                d.defender_id,
                self.portal_link(d.defender_id, d.indicator_type),
                f"Deployed to {where}: {d.indicator_type} {d.value}, action {d.action}, "
                f"expires {d.expires or 'never'}.",
            )
            for d in status.deployed
        ]
        if status.not_deployed:
            reasons = "; ".join(
                (f"{r.value}: " if r.value else "")
                + r.reason
                + (f" ({r.detail})" if r.detail else "")
                for r in status.not_deployed
            )
            refs.append(
                Reference(
                    f"{NOT_DEPLOYED}{opencti_id}", None, f"Not deployed to {where}: {reasons}"
                )
            )
        return tuple(sorted(refs, key=lambda r: r.external_id))

    def portal_link(self, defender_id: str, indicator_type: str) -> str:
        tab = _PORTAL_TAB.get(indicator_type, "file")
        link = (
            f"{self.portal_url.rstrip('/')}/securitysettings/endpoints/custom_ti_indicators/"
            f"{tab}?indicatorId={quote(defender_id, safe='')}"
        )
        return link + (f"&tid={quote(self.tenant_id, safe='')}" if self.tenant_id else "")

    def _tenant_text(self) -> str:
        return f" (tenant {self.tenant_name})" if self.tenant_name else ""


@dataclass
class Edits:
    """What to do in OpenCTI, per kind; each item names the indicator it is for."""

    #: (indicator id, reference to create, or find by its identity, and attach)
    attach: list[tuple[str, Reference]] = field(default_factory=list)
    #: (indicator id, attached reference id, what it must become)
    patch: list[tuple[str, str, Reference]] = field(default_factory=list)
    #: (indicator id, attached reference id, delete the reference object as well)
    detach: list[tuple[str, str, bool]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.attach) + len(self.patch) + len(self.detach)

    def extend(self, other: Edits) -> None:
        self.attach.extend(other.attach)
        self.patch.extend(other.patch)
        self.detach.extend(other.detach)


def diff(
    opencti_id: str,
    want: Sequence[Reference],
    have: Sequence[Attached],
    live_ids: Container[str],
) -> Edits:
    """The edits that make ``have`` (our references on the indicator now) equal ``want``.

    A reference is matched on ``external_id``; a second one with the same ``external_id`` is
    detached. A detached reference object is deleted too when no other indicator can be using
    it: a "not deployed" one (named after this indicator), or one whose Defender id is not in
    ``live_ids`` (the Defender indicator is gone). A Defender indicator holding the value of
    several OpenCTI indicators is one reference object shared by them: it stays while live."""
    edits = Edits()
    wanted = {r.external_id: r for r in want}
    seen: set[str] = set()
    for ref in have:
        target = wanted.get(ref.external_id or "")
        if target is None or (ref.external_id in seen):
            eid = ref.external_id or ""
            owned_alone = eid.startswith(NOT_DEPLOYED) or eid not in live_ids
            edits.detach.append((opencti_id, ref.id, owned_alone and eid not in seen))
            continue
        seen.add(target.external_id)
        if (ref.url or None) != target.url or (ref.description or "") != target.description:
            edits.patch.append((opencti_id, ref.id, target))
    edits.attach.extend((opencti_id, r) for r in want if r.external_id not in seen)
    return edits
