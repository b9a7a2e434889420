"""Views of a ``Plan``: Terraform-like text, versioned JSON, Markdown for tickets and PRs.

Renderers only display what ``plan`` decided: they never diff, call an API, read the clock or
decide anything. Each change shows the policy rule that produced it (``rule: <name>``, or
``exclusion: <name>`` for an excluded value) unless its detail already names it. The JSON is
``Plan.to_dict`` as is (``format_version`` "1"), validated by ``plan.schema.json`` shipped next
to this module. Large plans stay readable: changes are
grouped by change kind, each group cut after ``limit_per_kind`` with a count of what was left
out, skips are summarised by reason with a few examples.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from reconciler.plan import KIND_ORDER, OVERRIDE_FLAG, Change, ChangeKind, Plan

__all__ = [
    "PLAN_SCHEMA_PATH",
    "load_plan_schema",
    "render_json",
    "render_markdown",
    "render_text",
    "summary_line",
]

#: JSON Schema (Draft 2020-12) of ``render_json`` / ``Plan.to_dict``.
PLAN_SCHEMA_PATH = Path(__file__).with_name("plan.schema.json")

_TITLE = "OpenCTI → Defender plan"
_NO_CHANGES = "No changes. Defender matches OpenCTI."
_SKIP_EXAMPLES = 3
_MAX_IDS = 3

_MARKERS = {
    ChangeKind.CREATE: "+",
    ChangeKind.UPDATE: "~",
    ChangeKind.REPLACE: "-/+",
    ChangeKind.EXPIRE: "-",
    ChangeKind.DELETE: "-",
}
_VERBS = {
    ChangeKind.CREATE: "will be created",
    ChangeKind.UPDATE: "will be updated in place",
    ChangeKind.REPLACE: "will be replaced",
    ChangeKind.EXPIRE: "will be expired (deleted)",
    ChangeKind.DELETE: "will be deleted",
}
_GROUP_NOUNS = {
    ChangeKind.CREATE: "to create",
    ChangeKind.UPDATE: "to update",
    ChangeKind.REPLACE: "to replace",
    ChangeKind.EXPIRE: "to expire",
    ChangeKind.DELETE: "to delete",
}
_ANSI = {
    ChangeKind.CREATE: "32",  # green
    ChangeKind.UPDATE: "33",  # yellow
    ChangeKind.REPLACE: "35",  # magenta
    ChangeKind.EXPIRE: "31",  # red
    ChangeKind.DELETE: "31",  # red
}


def load_plan_schema() -> dict[str, Any]:
    """The JSON Schema of the JSON plan."""
    schema: dict[str, Any] = json.loads(PLAN_SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


# -- shared bits ---------------------------------------------------------------------------


def summary_line(plan: Plan) -> str:
    """``Plan: 12 to create, 3 to update, ... 5 skipped; quota 14,210/15,000`` (and how many
    matching indicators were left below the cut unread, when some were)."""
    s = plan.summary
    line = (
        f"Plan: {s['create']:,} to create, {s['update']:,} to update, "
        f"{s['replace']:,} to replace, {s['delete']:,} to delete, {s['expire']:,} to expire, "
        f"{s['skip']:,} skipped; quota {plan.quota.used_after:,}/{plan.quota.limit:,}"
    )
    if plan.quota.not_read:
        line += f"; {plan.quota.not_read:,} more matching indicators below the cut, not read"
    return line


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def _clip(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters, ellipsis when cut. Control characters are
    escaped: values come from OpenCTI and must not move the cursor or colour a terminal."""
    text = text.translate(_CONTROL)
    limit = max(limit, 8)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _value(value: Any) -> str:
    """One field value as JSON (quotes strings, shows null, escapes newlines)."""
    return json.dumps(value, ensure_ascii=False)


def _key_text(change: Change) -> str:
    if change.key is None and change.before:  # an owned row of an unknown indicator type
        return f"{change.before.get('indicatorType')} {change.before.get('indicatorValue')}"
    if change.key is None:
        return "(no Defender key)"
    return f"{change.key.type.value} {change.key.value}"


def _ids_text(ids: tuple[str, ...]) -> str:
    shown = ", ".join(ids[:_MAX_IDS])
    return shown + (f" (+{len(ids) - _MAX_IDS} more)" if len(ids) > _MAX_IDS else "")


def _rule_text(change: Change) -> str:
    """``rule: <name>`` (``exclusion: <name>`` for an excluded value), or "" when no rule
    decided or the detail already names it."""
    if not change.rule or f"{change.rule!r}" in change.detail:
        return ""
    what = "exclusion" if change.reason == "excluded" else "rule"
    return f"{what}: {change.rule}"


def _field_pairs(change: Change) -> list[tuple[str, Any, Any]]:
    before, after = change.before or {}, change.after or {}
    return [(f, before.get(f), after.get(f)) for f in change.fields]


def _skip_groups(plan: Plan) -> list[tuple[str, list[Change]]]:
    """Skips by reason, biggest group first, then by name (stable)."""
    groups: dict[str, list[Change]] = {}
    for change in plan.by_kind(ChangeKind.SKIP):
        groups.setdefault(change.reason, []).append(change)
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))


# -- text ----------------------------------------------------------------------------------


def render_text(
    plan: Plan, *, color: bool = False, width: int = 100, limit_per_kind: int | None = 50
) -> str:
    """Terraform-like text: one block per change, grouped by change kind, guards, summary line.

    ``color`` adds ANSI colours (the caller decides: TTY, ``NO_COLOR``, ``--no-color``);
    ``limit_per_kind`` caps each group (``None`` shows all)."""

    def paint(code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if color else text

    read = "complete read" if plan.complete else "INCOMPLETE read: nothing destructive planned"
    lines = [paint("1", f"{_TITLE} ({read}; {plan.unchanged:,} unchanged)"), ""]

    if plan.is_empty:
        lines += [_NO_CHANGES, ""]
    else:
        lines += [
            "Symbols: + create  ~ update  -/+ replace  - delete",
            "",
        ]
    for kind in KIND_ORDER:
        if kind is ChangeKind.SKIP:
            continue
        group = plan.by_kind(kind)
        shown = group if limit_per_kind is None else group[:limit_per_kind]
        for change in shown:
            lines += _text_block(change, paint, width)
        if len(group) > len(shown):
            lines += [
                f"  … {len(group) - len(shown):,} more {_GROUP_NOUNS[kind]} not shown "
                "(use --output json for all)",
                "",
            ]

    lines += _text_skips(plan, width)
    lines += _text_guards(plan, paint, width)
    lines.append(paint("1", summary_line(plan)))
    return "\n".join(lines) + "\n"


def _text_block(change: Change, paint: Callable[[str, str], str], width: int) -> list[str]:
    kind = change.kind
    marker = paint(_ANSI[kind], _MARKERS[kind].rjust(3))
    where = f" (id {change.defender_id})" if change.defender_id else ""
    head = f"{_VERBS[kind]}{where}"
    key = _clip(_key_text(change), width - len(head) - 6)
    lines = [f"  # {key} {head}"]

    body = change.after or change.before or {}  # what will be there, else what goes
    if kind is ChangeKind.REPLACE:
        old = (change.before or {}).get("action")
        new = (change.after or {}).get("action")
        tag = f"(action {old} → {new})"
    else:
        tag = f"({body.get('action')}, {body.get('severity')})"
    lines.append(f"{marker} {_clip(_key_text(change), width - len(tag) - 5)} {tag}")

    pairs = [p for p in _field_pairs(change) if p[0] != "action"]
    pad = max((len(name) for name, _, _ in pairs), default=0)
    for name, old_v, new_v in pairs:
        label = f"      {name}:".ljust(pad + 8)
        room = max((width - len(label) - 3) // 2, 8)
        lines.append(f"{label} {_clip(_value(old_v), room)} → {_clip(_value(new_v), room)}")

    if _rule_text(change):  # its own line: a long detail never cuts it off
        lines.append(_clip(f"      {_rule_text(change)}", width))
    note = f"reason: {change.reason}"
    if change.detail:
        note += f" — {change.detail}"
    if change.opencti_ids:
        note += f" · opencti: {_ids_text(change.opencti_ids)}"
    lines += [_clip(f"      {note}", width), ""]
    return lines


def _text_skips(plan: Plan, width: int) -> list[str]:
    groups = _skip_groups(plan)
    if not groups:
        return []
    total = sum(len(g) for _, g in groups)
    lines = [f"Skipped, not deployed ({total:,}):"]
    for reason, group in groups:
        lines.append(f"  {reason}: {len(group):,}")
        for change in group[:_SKIP_EXAMPLES]:
            parts = [] if change.key is None else [_key_text(change)]
            if change.opencti_ids:
                parts.append(f"opencti: {_ids_text(change.opencti_ids)}")
            if change.detail:
                parts.append(change.detail)
            if _rule_text(change):
                parts.append(_rule_text(change))
            lines.append(_clip("      " + " · ".join(parts), width))
        if len(group) > _SKIP_EXAMPLES:
            lines.append(f"      … {len(group) - _SKIP_EXAMPLES:,} more")
    return [*lines, ""]


def _text_guards(plan: Plan, paint: Callable[[str, str], str], width: int) -> list[str]:
    hit = [g for g in plan.guards if g.triggered]
    if not hit:
        return []
    lines = ["Guards:"]
    for g in hit:
        mark = paint("1;31", "!") if g.blocked else paint("33", "!")
        # Wrapped, never cut: the message names the override flag. Painted after wrapping so
        # a line break never splits an ANSI sequence.
        wrapped = textwrap.wrap(f"{g.name}: {g.message}", max(width - 4, 20))
        lines.append(f"  {mark} {wrapped[0]}")
        lines += [f"    {rest}" for rest in wrapped[1:]]
    return [*lines, ""]


# -- JSON ----------------------------------------------------------------------------------


def render_json(plan: Plan) -> str:
    """The machine plan: ``Plan.to_dict`` with a stable key order, indent 2."""
    return json.dumps(plan.to_dict(), indent=2, ensure_ascii=False) + "\n"


# -- Markdown ------------------------------------------------------------------------------

_MD_SPECIAL = str.maketrans(
    {
        "\\": "\\\\",
        "|": "\\|",
        "`": "\\`",
        "*": "\\*",
        "_": "\\_",
        "[": "\\[",
        "]": "\\]",
        "<": "&lt;",
        ">": "&gt;",
    }
)
_DETAILS_FROM = 10
_MD_CELL = 120


def _md(text: str, limit: int = _MD_CELL) -> str:
    """Escape for a Markdown table cell (pipes, backticks, emphasis, HTML; newlines and other
    control characters are shown as ``\\xNN`` by ``_clip``)."""
    return _clip(text, limit).translate(_MD_SPECIAL)


def render_markdown(plan: Plan, *, limit_per_kind: int | None = 100) -> str:
    """Markdown for a ticket or pull request: summary table, guards, one table per change kind
    (folded in ``<details>`` when long), skips by reason."""
    s = plan.summary
    q = plan.quota
    out = [f"## {_TITLE}", ""]
    if not plan.complete:
        out += [
            "> **Incomplete read**: a listing failed or was truncated; nothing destructive "
            "was planned.",
            "",
        ]
    if plan.is_empty:
        out += [f"**{_NO_CHANGES}**", ""]
    out += ["| action | count |", "|---|---:|"]
    out += [f"| {name} | {s[name]:,} |" for name in s]
    out += [
        "",
        f"**Quota:** {q.used_after:,} / {q.limit:,} after apply "
        f"(other tools {q.non_owned:,}, free room {q.free:,}, desired {q.desired:,}"
        + (f", {q.not_read:,} more below the cut not read" if q.not_read else "")
        + ")",
        "",
    ]

    hit = [g for g in plan.guards if g.triggered]
    if hit:
        out += ["### Guards", ""]
        for g in hit:
            state = "**blocked**" if g.blocked else "overridden"
            out.append(f"- ⚠️ `{g.name}` ({state}): {_md(g.message, 400)}")
        if any(g.blocked for g in hit):
            out += ["", f"Deletes are held back unless apply runs with `{OVERRIDE_FLAG}`."]
        out.append("")

    for kind in KIND_ORDER:
        if kind is ChangeKind.SKIP:
            continue
        group = plan.by_kind(kind)
        if group:
            out += _md_section(kind, group, limit_per_kind)
    out += _md_skips(plan)
    out += ["`" + summary_line(plan) + "`", ""]
    return "\n".join(out)


def _md_rows(changes: Iterable[Change]) -> list[str]:
    rows = ["| type | value | id | fields | reason | rule |", "|---|---|---|---|---|---|"]
    for c in changes:
        t = c.key.type.value if c.key else ""
        v = _md(c.key.value) if c.key else ""
        fields = ", ".join(
            f"{name}: {_value(old)} → {_value(new)}" for name, old, new in _field_pairs(c)
        )
        reason = f"`{c.reason}`" + (f" — {_md(c.detail, 200)}" if c.detail else "")
        cells = [t, v, c.defender_id or "", _md(fields, 200), reason, _md(c.rule, 80)]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _md_section(kind: ChangeKind, group: tuple[Change, ...], limit: int | None) -> list[str]:
    shown = group if limit is None else group[:limit]
    title = f"{len(group):,} {_GROUP_NOUNS[kind]}"
    out = [f"### {kind.value.capitalize()} ({len(group):,})", ""]
    table = _md_rows(shown)
    if len(group) > len(shown):
        table += ["", f"… {len(group) - len(shown):,} more not shown (see the JSON plan)."]
    if len(group) >= _DETAILS_FROM:
        out += [f"<details><summary>{title}</summary>", "", *table, "", "</details>"]
    else:
        out += table
    return [*out, ""]


def _skip_example(c: Change) -> str:
    parts = [_key_text(c)] if c.key else []
    parts += list(c.opencti_ids[:1])
    text = " ".join(parts)
    notes = [n for n in (c.detail, _rule_text(c)) if n]
    return f"{text} ({'; '.join(notes)})" if notes else text


def _md_skips(plan: Plan) -> list[str]:
    groups = _skip_groups(plan)
    if not groups:
        return []
    total = sum(len(g) for _, g in groups)
    out = [f"### Skipped ({total:,})", "", "| reason | count | examples |", "|---|---:|---|"]
    for reason, group in groups:
        examples = "; ".join(_md(_skip_example(c), 100) for c in group[:_SKIP_EXAMPLES])
        more = f" (+{len(group) - _SKIP_EXAMPLES:,} more)" if len(group) > _SKIP_EXAMPLES else ""
        out.append(f"| `{reason}` | {len(group):,} | {examples}{more} |")
    return [*out, ""]
