"""The ``policy`` section: ``PolicySection`` (its keys, env vars, defaults and descriptions, like
the other sections) and the parsers of its two structured keys, ``policy.rules`` (a list of
rules) and ``policy.exclusions`` (a list of named exclusions), read from YAML lists or, in their
env vars, from JSON arrays.

The parsers check each entry's keys, types, names and enum values and return it in a normal
form (plain dicts and lists, so the chart's values round-trip), with errors that name
the rule or exclusion (``rule #2 'partners': unknown key 'acton'; did you mean action?``).
What only the mapping can judge (a combination of settings, a CIDR, a domain) is checked when
``reconciler.wiring`` builds the mapping policy, which names the rule the same way.

Must not: know the other sections, read a file or the environment, or import the mapping.
"""

from __future__ import annotations

import difflib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict

from reconciler.config.values import Names, _lower, _setting, _show
from reconciler.model import OBSERVABLE_TYPES, Action, IndicatorType, Severity

__all__ = [
    "EXCLUSION_KEYS",
    "MATCH_KEYS",
    "RULE_KEYS",
    "RULE_TYPES",
    "PolicySection",
    "_parse_exclusions",
    "_parse_rules",
]

#: Keys of one rule, of its ``match`` and of one exclusion.
RULE_KEYS = (
    "name",
    "match",
    "deploy",
    "action",
    "severity",
    "generate_alert",
    "rbac_group_names",
    "recommended_actions",
    "expire_time",
)
MATCH_KEYS = ("labels", "markings", "authors", "score_min", "score_max", "types", "pattern_types")
EXCLUSION_KEYS = ("name", "cidrs", "domains", "url_prefixes", "hashes")
#: What a rule's ``match.types`` accepts: Defender indicator types, then OpenCTI observable types.
RULE_TYPES: tuple[str, ...] = (
    *(t.value for t in IndicatorType if t is not IndicatorType.CERTIFICATE_THUMBPRINT),
    *(t for t in OBSERVABLE_TYPES if t != "Url"),
)
_BY_SCORE = "score"
_RESERVED = "default"
_LISTS = ("labels", "markings", "authors", "types", "pattern_types")


class _EntryError(ValueError):
    """One bad entry; the message already names it."""


def _load_list(value: Any, what: str) -> list[Any]:
    """A YAML list, or JSON text holding one (an env var); ``None``/empty = no entries."""
    if value is None:
        return []
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg} at position {exc.pos})") from None
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise ValueError(f"must be a list of {what}, not {type(value).__name__}")
    return value


def _strings(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]  # one name for a list of one: a common slip, harmless
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _EntryError(f"{where} must be a list of strings")
    return [v.strip() for v in value if v.strip()]


def _unknown(keys: Any, allowed: tuple[str, ...], where: str) -> None:
    for key in keys:
        if str(key) not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else f"; accepted: {', '.join(allowed)}"
            raise _EntryError(f"{where}: unknown key {str(key)!r}{hint}")


def _named(entries: list[Any], kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, entry) of each entry: every entry a mapping with a unique, non-empty name."""
    seen: set[str] = set()
    out: list[tuple[str, dict[str, Any]]] = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise ValueError(f"{kind} #{number} must be a mapping, not {type(entry).__name__}")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{kind} #{number} needs a name")
        label = f"{kind} #{number} {name.strip()!r}"
        if name.strip() in seen:
            raise ValueError(f"{label}: another {kind} has the same name")
        seen.add(name.strip())
        out.append((label, entry))
    return out


def _parse_rules(value: Any) -> tuple[dict[str, Any], ...]:
    """``policy.rules``: each rule checked and normalised (see the module docstring)."""
    rules: list[dict[str, Any]] = []
    for label, entry in _named(_load_list(value, "rules"), "rule"):
        try:
            rules.append(_rule(entry, label))
        except _EntryError as exc:
            raise ValueError(str(exc)) from None
    _check_reachable(rules)
    return tuple(rules)


def _rule(entry: dict[str, Any], label: str) -> dict[str, Any]:
    _unknown(entry, RULE_KEYS, label)
    name = str(entry["name"]).strip()
    if name == _RESERVED:
        raise _EntryError(f"{label}: the name {_RESERVED!r} is kept for the default rule")
    rule: dict[str, Any] = {"name": name}
    if entry.get("match") is not None:
        rule["match"] = _match(entry["match"], label)
    for flag in ("deploy", "generate_alert"):
        if entry.get(flag) is not None:
            if not isinstance(entry[flag], bool):
                raise _EntryError(f"{label}: {flag} must be true or false")
            rule[flag] = entry[flag]
    if entry.get("action") is not None:
        rule["action"] = _choice(entry["action"], [*(a.value for a in Action), _BY_SCORE], label)
    if entry.get("severity") is not None:
        choices = [*(s.value for s in Severity), _BY_SCORE]
        rule["severity"] = _choice(entry["severity"], choices, label, "severity")
    if entry.get("rbac_group_names") is not None:
        rule["rbac_group_names"] = _strings(entry["rbac_group_names"], f"{label}: rbac_group_names")
    if entry.get("recommended_actions") is not None:
        if not isinstance(entry["recommended_actions"], str):
            raise _EntryError(f"{label}: recommended_actions must be a string")
        rule["recommended_actions"] = entry["recommended_actions"]
    if entry.get("expire_time") is not None:
        days = entry["expire_time"]
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise _EntryError(f"{label}: expire_time must be a whole number of days >= 0")
        rule["expire_time"] = days
    return rule


def _choice(value: Any, choices: list[str], label: str, what: str = "action") -> str:
    """``value`` spelt as in ``choices`` (compared case-insensitively)."""
    if isinstance(value, str):
        for choice in choices:
            if choice.lower() == value.strip().lower():
                return choice
    raise _EntryError(f"{label}: {what} {_show(value)} is not one of {', '.join(choices)}")


def _match(value: Any, label: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _EntryError(f"{label}: match must be a mapping of conditions")
    _unknown(value, MATCH_KEYS, f"{label}: match")
    out: dict[str, Any] = {}
    for key in _LISTS:
        if value.get(key) is not None:
            items = _strings(value[key], f"{label}: match.{key}")
            if items:
                out[key] = items
    if "types" in out:
        out["types"] = [_type(t, label) for t in out["types"]]
    for key in ("score_min", "score_max"):
        score = value.get(key)
        if score is None:
            continue
        if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 100:
            raise _EntryError(f"{label}: match.{key} must be a whole number from 0 to 100")
        out[key] = score
    if out.get("score_min", 0) > out.get("score_max", 100):
        raise _EntryError(f"{label}: match.score_min is above match.score_max")
    return out


def _type(name: str, label: str) -> str:
    for known in RULE_TYPES:
        if known.casefold() == name.casefold():
            return known
    raise _EntryError(f"{label}: match.types {name!r} is not one of {', '.join(RULE_TYPES)}")


def _check_reachable(rules: list[dict[str, Any]]) -> None:
    """A rule without conditions matches everything: rules after it could never match."""
    for i, rule in enumerate(rules[:-1]):
        if not rule.get("match"):
            later = ", ".join(repr(r["name"]) for r in rules[i + 1 :])
            raise ValueError(
                f"rule #{i + 1} {rule['name']!r} has no match conditions, so it matches "
                f"everything and the rules after it ({later}) can never match; put it last"
            )


def _parse_exclusions(value: Any) -> tuple[dict[str, Any], ...]:
    """``policy.exclusions``: each exclusion checked and normalised."""
    out: list[dict[str, Any]] = []
    for label, entry in _named(_load_list(value, "exclusions"), "exclusion"):
        try:
            _unknown(entry, EXCLUSION_KEYS, label)
            exclusion: dict[str, Any] = {"name": str(entry["name"]).strip()}
            for key in EXCLUSION_KEYS[1:]:
                if entry.get(key) is not None:
                    items = _strings(entry[key], f"{label}: {key}")
                    if items:
                        exclusion[key] = items
        except _EntryError as exc:
            raise ValueError(str(exc)) from None
        if len(exclusion) == 1:
            raise ValueError(f"{label}: lists nothing ({', '.join(EXCLUSION_KEYS[1:])})")
        out.append(exclusion)
    return tuple(out)


Retirement = Annotated[Literal["delete", "audit"], BeforeValidator(_lower)]
Rules = Annotated[tuple[dict[str, Any], ...], BeforeValidator(_parse_rules)]
Exclusions = Annotated[tuple[dict[str, Any], ...], BeforeValidator(_parse_exclusions)]


class PolicySection(BaseModel):
    """``policy:`` — what gets deployed, how, and what never is: rules, revocation and expiry,
    exclusions, the opt-out label. The ``microsoft_defender_intel`` indicator keys (action,
    passive_only, rbac_group_names, recommended_actions, generate_alert, expire_time) are the
    default rule, tried after ``rules``."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)  # as sections'

    rules: Rules = _setting(
        (),
        "Rules tried in order before the default rule (the microsoft_defender_intel keys); the "
        "first whose match conditions hold decides a value: its action, severity, "
        "generate_alert, rbac_group_names, recommended_actions, expire_time, or deploy: false. "
        "What a rule leaves unset comes from the default rule. See the README's policy section.",
        env="POLICY_RULES",
        accepted="a YAML list of rules (a JSON array in the env var)",
    )
    on_revoke: Retirement = _setting(
        "delete",
        "What a revoked OpenCTI indicator does to its Defender indicators: delete them, or keep "
        "them as Audit with an alert (un-revoking restores the rule's action).",
        env="POLICY_ON_REVOKE",
        accepted="one of delete, audit",
    )
    on_expire: Retirement = _setting(
        "delete",
        "What an expired indicator (valid_until or its rule's expire_time passed) does: delete "
        "its Defender indicators, or keep them as Audit with an alert and no expiry.",
        env="POLICY_ON_EXPIRE",
        accepted="one of delete, audit",
    )
    skip_label: str | None = _setting(
        None,
        "An OpenCTI label that keeps an indicator out of Defender (reason opted_out; an owned "
        "copy is deleted), e.g. no-defender; compared case-insensitively.",
        env="POLICY_SKIP_LABEL",
        accepted="a label name",
    )
    exclusions: Exclusions = _setting(
        (),
        "Named lists of values never deployed whatever OpenCTI or a rule says (reason "
        "excluded; an owned copy is deleted): cidrs, domains (suffixes), url_prefixes, hashes.",
        env="POLICY_EXCLUSIONS",
        accepted="a YAML list of exclusions (a JSON array in the env var)",
    )
    known_rbac_groups: Names = _setting(
        (),
        "The Defender device group names rules may use; when set, a rule or the default rule "
        "naming another group fails at start (the indicators API cannot list device groups).",
        env="POLICY_KNOWN_RBAC_GROUPS",
        accepted="a list (comma-separated in env vars)",
    )
