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

import re
from collections.abc import Container, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from reconciler.writeback.status import Status

__all__ = [
    "NOT_DEPLOYED",
    "SOURCE_NAME",
    "Attached",
    "Edits",
    "Reference",
    "ReferenceStyle",
    "Restamps",
    "diff",
    "marker_of",
    "restamp_row",
    "strip_marker",
    "with_marker",
]

#: The source name of our references (plus `` (<tenant>)`` when a tenant is named).
SOURCE_NAME = "Microsoft Defender for Endpoint"

#: ``external_id`` prefix of the "not deployed" reference (followed by the OpenCTI id).
NOT_DEPLOYED = "not-deployed:"

#: The line a reference carries once our edit moved the indicator's ``updated_at`` (see
#: ``restamp_row``): the value our edit left and the value before any edit of ours.
_MARK = re.compile(r"\n*\(Status written at (\S+); the indicator was last updated at (\S+)\.\)$")

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

    source_name: str = SOURCE_NAME
    portal_url: str = "https://security.microsoft.com"
    tenant_id: str | None = None
    tenant_name: str | None = None

    def render(self, opencti_id: str, status: Status) -> tuple[Reference, ...]:
        """The references ``status`` shows on the indicator ``opencti_id`` (sorted)."""
        where = f"Microsoft Defender for Endpoint{self._tenant_text()}"
        refs = [
            Reference(
                d.defender_id,
                # The fragment makes the link, the reference's identity in OpenCTI, this
                # indicator's alone (the portal ignores it): never shared, so it can be
                # edited and deleted for this indicator without touching another.
                f"{self.portal_link(d.defender_id, d.indicator_type)}#opencti={opencti_id}",
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


def with_marker(description: str, before: str, ours: str) -> str:
    """``description`` with the marker: our edit left ``updated_at`` at ``ours``; it was
    ``before`` (the last update that was not ours)."""
    return (
        f"{strip_marker(description)}\n\n(Status written at {ours}; the indicator was last "
        f"updated at {before}.)"
    )


def marker_of(description: str | None) -> tuple[str, str] | None:
    """(the ``updated_at`` our edit left, the one before it) when ``description`` is marked."""
    found = _MARK.search(description or "")
    return (found.group(1), found.group(2)) if found else None


def strip_marker(description: str | None) -> str:
    return _MARK.sub("", description or "")


def restamp_row(row: MutableMapping[str, Any], family: str = SOURCE_NAME) -> None:
    """Undo, in one listing row, the ``updated_at`` move a write-back edit made: when the row's
    ``updated_at`` is the value a marked reference of the family (a source name starting with
    ``family``: every tenant's reconciler, whose edits move the same ``updated_at``) says its
    edit left, it becomes the value from before (an analyst's later edit changes
    ``updated_at`` again, and counts). ``externalReferences`` may be a connection or a list."""
    stamp = row.get("updated_at")
    refs = row.get("externalReferences")
    if not isinstance(stamp, str) or not refs:
        return
    items = refs.get("edges") if isinstance(refs, Mapping) else refs
    for item in items if isinstance(items, list) else ():
        node = item.get("node", item) if isinstance(item, Mapping) else None
        name = node.get("source_name") if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and isinstance(name, str) and name.startswith(family):
            mark = marker_of(node.get("description"))
            if mark is not None and mark[0] == stamp:
                row["updated_at"] = mark[1]
                return


class Restamps:
    """The ``updated_at`` moves write-back edits made, per OpenCTI id: (the value the edit
    left, the value before). Filled from our own marks as they are written and from the marks
    read back (``WriteBack.recall``); applied to every listing row read (``__call__``), so the
    expiry computed from ``updated_at`` never follows the write-back. Only moved indicators
    are held; a row whose ``updated_at`` changed since (an analyst's edit) is left as it is."""

    def __init__(self) -> None:
        self._moves: dict[str, tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self._moves)

    def learn(self, opencti_id: str, ours: str, before: str) -> bool:
        """Remember a move; whether it was new."""
        if self._moves.get(opencti_id) == (ours, before):
            return False
        self._moves[opencti_id] = (ours, before)
        return True

    def before(self, opencti_id: str, updated_at: str) -> str:
        """``updated_at`` with a remembered move undone (as it is when none applies)."""
        move = self._moves.get(opencti_id)
        return move[1] if move is not None and move[0] == updated_at else updated_at

    def __call__(self, row: MutableMapping[str, Any]) -> None:
        ident, stamp = row.get("id"), row.get("updated_at")
        if isinstance(ident, str) and isinstance(stamp, str) and ident in self._moves:
            row["updated_at"] = self.before(ident, stamp)


def diff(
    opencti_id: str,
    want: Sequence[Reference],
    have: Sequence[Attached],
    live_ids: Container[str],
) -> Edits:
    """The edits that make ``have`` (our references on the indicator now) equal ``want``.

    A reference is matched on ``external_id``; a second one with the same ``external_id`` is
    detached. A detached reference object is deleted too when it can be ours alone: a "not
    deployed" one (named after this indicator), or one whose link names this indicator (what
    ``render`` writes), or, from an older form, one whose Defender id is not in ``live_ids``."""
    edits = Edits()
    wanted = {r.external_id: r for r in want}
    seen: set[str] = set()
    for ref in have:
        target = wanted.get(ref.external_id or "")
        if target is None or (ref.external_id in seen):
            eid = ref.external_id or ""
            owned_alone = (
                eid.startswith(NOT_DEPLOYED)
                or (ref.url or "").endswith(f"#opencti={opencti_id}")
                or eid not in live_ids
            )
            edits.detach.append((opencti_id, ref.id, owned_alone and eid not in seen))
            continue
        seen.add(target.external_id)
        if (ref.url or None) != target.url or strip_marker(ref.description) != target.description:
            mark = _MARK.search(ref.description or "")
            if mark is not None:  # the text changes, the marker stays
                target = Reference(
                    target.external_id, target.url, target.description + mark.group(0)
                )
            edits.patch.append((opencti_id, ref.id, target))
    edits.attach.extend((opencti_id, r) for r in want if r.external_id not in seen)
    return edits
