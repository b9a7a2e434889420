"""The answer to ``reconciler plan --explain VALUE``, as data (``Explanation``) and as text
(``render_explanation``): for one value, every OpenCTI indicator that contributes to it, the
policy rule each of its values gets and why, the Defender rows that hold the value, and the
plan's changes for it.

The engine gathers it (``Engine.explain``: the same reads and plan as ``reconciler plan``);
this module only holds and displays it. Must not read, plan, map or decide anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler.mapping import IndicatorTrace
from reconciler.model import IndicatorKey, RawIndicator, Skipped, format_datetime
from reconciler.plan import Change

__all__ = ["DefenderRow", "Explanation", "render_explanation"]


@dataclass(frozen=True)
class DefenderRow:
    """A Defender indicator holding the value (``key``: its canonical key), ours or another
    application's."""

    key: IndicatorKey
    id: str
    owned: bool
    application: str | None
    action: str | None
    severity: str | None
    external_id: str | None
    expiration_time: str | None

    @classmethod
    def of(cls, key: IndicatorKey, row: RawIndicator, owned: bool) -> DefenderRow:
        def text(name: str) -> str | None:
            value: Any = row.get(name)
            return None if value is None else str(value)

        return cls(
            key=key,
            id=str(row.get("id")),
            owned=owned,
            application=text("application"),
            action=text("action"),
            severity=text("severity"),
            external_id=text("externalId"),
            expiration_time=text("expirationTime"),
        )


@dataclass(frozen=True)
class Explanation:
    """Everything ``--explain`` shows for one value. ``not_read``: matching OpenCTI indicators a
    quota-bounded read left below the cut (one of them may hold the value too)."""

    value: str
    keys: tuple[IndicatorKey, ...]
    indicators: tuple[IndicatorTrace, ...]
    unreadable: tuple[Skipped, ...]
    rows: tuple[DefenderRow, ...]
    changes: tuple[Change, ...]
    not_read: int = 0


def render_explanation(explanation: Explanation) -> str:
    """The explanation as plain text (one section per key)."""
    e = explanation
    lines = [f"Explain {e.value!r}", ""]
    for key in e.keys:
        lines += _key_section(e, key)
    if e.unreadable:
        lines.append("OpenCTI indicators that could not be read:")
        lines += [f"  {s.opencti_id}: {s.detail}" for s in e.unreadable]
        lines.append("")
    if e.not_read:
        lines += [
            f"Note: {e.not_read:,} matching OpenCTI indicators were below the quota cut and not "
            "read; one of them may hold this value too.",
            "",
        ]
    return "\n".join(lines)


def _key_section(e: Explanation, key: IndicatorKey) -> list[str]:
    lines = [f"{key.type.value} {key.value}", ""]
    contributing = [i for i in e.indicators if any(v.key == key for v in i.values)]
    if not contributing:
        lines += ["  OpenCTI: no indicator the stream's filters select holds this value.", ""]
    for ind in contributing:
        lines += _indicator_lines(ind, key)
    rows = [r for r in e.rows if r.key == key]
    lines.append("  Defender rows holding it:" if rows else "  Defender: no row holds it.")
    for row in rows:
        whose = "owned" if row.owned else "another application"
        lines.append(
            f"    id {row.id}: {row.action}, {row.severity}, application {row.application!r} "
            f"({whose}), externalId {row.external_id}, expires {row.expiration_time or 'never'}"
        )
    changes = [c for c in e.changes if c.key == key]
    lines.append("  Plan:" if changes else "  Plan: no change (in sync, or nothing to deploy).")
    for change in changes:
        what = "exclusion" if change.reason == "excluded" else "rule"
        rule = f" · {what} {change.rule}" if change.rule else ""
        detail = f" — {change.detail}" if change.detail else ""
        lines.append(f"    {change.kind.value}: {change.reason}{detail}{rule}")
    return [*lines, ""]


def _indicator_lines(ind: IndicatorTrace, key: IndicatorKey) -> list[str]:
    facts = [
        f"score {ind.score if ind.score is not None else 'none'}",
        f"labels {', '.join(ind.labels) or 'none'}",
        f"markings {', '.join(ind.markings) or 'none'}",
        f"author {ind.author or 'none'}",
    ]
    if ind.revoked:
        facts.append("REVOKED")
    if ind.valid_until is not None:
        facts.append(f"valid until {format_datetime(ind.valid_until)}")
    name = f" {ind.name!r}" if ind.name else ""
    lines = [f"  OpenCTI indicator {ind.opencti_id}{name}", f"    {'; '.join(facts)}"]
    for value in ind.values:
        if value.key != key:
            continue
        lines.append(f"    value from {value.observable_type}: {value.outcome}")
        lines.append(f"    decided by: {value.decided_by}")
        lines.append("    rules tried (→ the value's rule, ✓ also matches, ✗ does not):")
        for trace in value.rules:
            mark = "→" if trace.chosen else ("✓" if trace.matched else "✗")
            lines.append(f"      {mark} {trace.rule}: {'; '.join(trace.why)}")
    return [*lines, ""]
