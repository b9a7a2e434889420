"""The policy, from OpenCTI indicators to the plan: rules (labels, markings, authors, scores,
types, pattern types, order), exclusions, the opt-out label, revocation and expiry policies.

One table: each row is a policy, the OpenCTI indicators (GraphQL listing nodes, read by the real
reader, so markings and author come the way the listing gives them), what Defender already
holds, and the expected plan, one line per change: (change kind, key, action, reason, rule)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from reconciler.mapping import (
    BY_SCORE,
    Exclusion,
    MappingPolicy,
    Retire,
    Rule,
    RuleMatch,
    build_desired,
    indicator_from_graphql,
)
from reconciler.model import Action, DefenderIndicator, Severity
from reconciler.plan import Plan, build_plan

NOW = datetime(2026, 3, 1, tzinfo=UTC)
UPDATED = "2026-02-20T10:00:00Z"
AMBER = (
    "f0a1c1f2-0000-4000-8000-00000000a3b3",
    "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
)
PARTNER_ID = "7e1c0d52-0000-4000-8000-0000000000aa"

OBSERVABLE = {
    "ip": ("IPv4-Addr", "ipv4-addr:value"),
    "ip6": ("IPv6-Addr", "ipv6-addr:value"),
    "domain": ("Domain-Name", "domain-name:value"),
    "host": ("Hostname", "hostname:value"),
    "url": ("Url", "url:value"),
}


def node(
    value: str,
    kind: str = "ip",
    *,
    ident: str | None = None,
    score: int | None = 80,
    labels: tuple[str, ...] = (),
    markings: tuple[str, ...] = (),
    author: str | None = None,
    revoked: bool = False,
    valid_until: str | None = None,
    updated_at: str = UPDATED,
    pattern_type: str = "stix",
    hashes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A GraphQL listing node as pycti returns it for the reconciler's selection."""
    if hashes is not None:
        observables = [
            {
                "type": "StixFile",
                "value": None,
                "hashes": [{"algorithm": a, "hash": h} for a, h in hashes.items()],
            }
        ]
        pattern = "[file:hashes.'SHA-256' = '" + next(iter(hashes.values())) + "']"
    else:
        obs_type, path = OBSERVABLE[kind]
        observables = [{"type": obs_type, "value": value, "hashes": None}]
        pattern = f"[{path} = '{value}']"
    marking_nodes = [
        {"id": AMBER[0], "standard_id": AMBER[1], "definition": m}
        if m == "TLP:AMBER"
        else {"id": f"id-{m}", "standard_id": f"marking-definition--{m}", "definition": m}
        for m in markings
    ]
    return {
        "id": ident or f"octi-{value}",
        "standard_id": f"indicator--{value}",
        "entity_type": "Indicator",
        "name": value,
        "pattern_type": pattern_type,
        "pattern": pattern,
        "x_opencti_score": score,
        "revoked": revoked,
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": valid_until,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": updated_at,
        "objectLabel": [{"id": f"l-{v}", "value": v} for v in labels],
        "objectMarking": marking_nodes,
        "createdBy": {"id": PARTNER_ID, "standard_id": "identity--partner", "name": author}
        if author
        else None,
        "x_opencti_main_observable_type": observables[0]["type"],
        "x_opencti_observable_values": observables,
    }


def owned(ident: str, kind: str, value: str, action: str, **fields: Any) -> DefenderIndicator:
    """An owned Defender indicator (its other fields need not match: updates are not the point
    of these rows, only the change kind and its reason)."""
    raw = {
        "id": ident,
        "indicatorType": kind,
        "indicatorValue": value,
        "action": action,
        "application": "opencti",
        "title": value,
        "severity": "High",
        "generateAlert": True,
        **fields,
    }
    return DefenderIndicator.from_raw(raw)


Line = tuple[str, str, str | None, str, str]


def lines(plan: Plan) -> list[Line]:
    """The plan, one line per change: (kind, key, action, reason, rule)."""
    out: list[Line] = []
    for c in plan.changes:
        body = c.after or c.before or {}
        out.append((c.kind.value, str(c.key), body.get("action"), c.reason, c.rule))
    return out


@dataclass
class Case:
    id: str
    nodes: list[dict[str, Any]]
    expected: list[Line]
    policy: dict[str, Any] = field(default_factory=dict)
    owned: list[DefenderIndicator] = field(default_factory=list)


PARTNERS = Rule("partners", RuleMatch(labels=("partner",)), action=Action.WARN)
AMBER_AUDIT = Rule("amber-audit", RuleMatch(markings=("tlp:amber",)), action=Action.AUDIT)
PARTNER_CERT = Rule("partner-cert", RuleMatch(authors=("Partner CERT",)), action=Action.ALERT)
OWN = Exclusion(
    "own-network",
    cidrs=("203.0.113.0/24", "2001:db8:1::/48"),
    domains=("example.org",),
    url_prefixes=("https://intranet.example.net/",),
    hashes=("44d88612fea8a8f36de82e1278abb02f",),
)
SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

CASES = [
    Case(
        "no-rules-score-table",
        [node("45.1.1.1", score=80), node("45.1.1.2", score=40)],
        [
            ("create", "IpAddress:45.1.1.1", "Block", "not_in_defender", "default"),
            ("create", "IpAddress:45.1.1.2", "Alert", "not_in_defender", "default"),
        ],
    ),
    Case(
        "label-match",
        [node("45.1.1.1", labels=("partner",)), node("45.1.1.2", labels=("c2",))],
        [
            ("create", "IpAddress:45.1.1.1", "Warn", "not_in_defender", "partners"),
            ("create", "IpAddress:45.1.1.2", "Block", "not_in_defender", "default"),
        ],
        {"rules": (PARTNERS,)},
    ),
    Case(
        "label-case-insensitive",
        [node("45.1.1.1", labels=("Partner",))],
        [("create", "IpAddress:45.1.1.1", "Warn", "not_in_defender", "partners")],
        {"rules": (PARTNERS,)},
    ),
    Case(
        "marking-by-definition",
        [node("45.1.1.1", markings=("TLP:AMBER",)), node("45.1.1.2", markings=("TLP:GREEN",))],
        [
            ("create", "IpAddress:45.1.1.1", "Audit", "not_in_defender", "amber-audit"),
            ("create", "IpAddress:45.1.1.2", "Block", "not_in_defender", "default"),
        ],
        {"rules": (AMBER_AUDIT,)},
    ),
    Case(
        "marking-by-stix-id",
        [node("45.1.1.1", markings=("TLP:AMBER",))],
        [("create", "IpAddress:45.1.1.1", "Warn", "not_in_defender", "by-id")],
        {"rules": (Rule("by-id", RuleMatch(markings=(AMBER[1],)), action=Action.WARN),)},
    ),
    Case(
        "author-by-name",
        [node("45.1.1.1", author="Partner CERT"), node("45.1.1.2", author="CIRCL")],
        [
            ("create", "IpAddress:45.1.1.1", "Alert", "not_in_defender", "partner-cert"),
            ("create", "IpAddress:45.1.1.2", "Block", "not_in_defender", "default"),
        ],
        {"rules": (PARTNER_CERT,)},
    ),
    Case(
        "author-by-id",
        [node("45.1.1.1", author="Partner CERT")],
        [("create", "IpAddress:45.1.1.1", "Warn", "not_in_defender", "by-id")],
        {"rules": (Rule("by-id", RuleMatch(authors=(PARTNER_ID,)), action=Action.WARN),)},
    ),
    Case(
        "score-range-inclusive",
        [node("45.1.1.1", score=50), node("45.1.1.2", score=79), node("45.1.1.3", score=80)],
        [
            ("create", "IpAddress:45.1.1.1", "Warn", "not_in_defender", "middling"),
            ("create", "IpAddress:45.1.1.2", "Warn", "not_in_defender", "middling"),
            ("create", "IpAddress:45.1.1.3", "Block", "not_in_defender", "default"),
        ],
        {"rules": (Rule("middling", RuleMatch(score_min=50, score_max=79), action=Action.WARN),)},
    ),
    Case(
        "missing-score-is-zero",
        [node("45.1.1.1", score=None)],
        [("create", "IpAddress:45.1.1.1", "Block", "not_in_defender", "unscored")],
        {"rules": (Rule("unscored", RuleMatch(score_max=0), action=Action.BLOCK),)},
    ),
    Case(
        "defender-type",
        [node("45.1.1.1"), node("evil.test", "domain")],
        [
            ("create", "DomainName:evil.test", "Block", "not_in_defender", "default"),
            ("create", "IpAddress:45.1.1.1", "Audit", "not_in_defender", "ips-audit"),
        ],
        {"rules": (Rule("ips-audit", RuleMatch(types=("IpAddress",)), action=Action.AUDIT),)},
    ),
    Case(
        "opencti-observable-type",
        [node("a.evil.test", "host"), node("b.evil.test", "domain")],
        [
            ("create", "DomainName:a.evil.test", "Warn", "not_in_defender", "hostnames"),
            ("create", "DomainName:b.evil.test", "Block", "not_in_defender", "default"),
        ],
        {"rules": (Rule("hostnames", RuleMatch(types=("Hostname",)), action=Action.WARN),)},
    ),
    Case(
        "pattern-type",
        [node("45.1.1.1")],
        [("create", "IpAddress:45.1.1.1", "Warn", "not_in_defender", "stix-only")],
        {"rules": (Rule("stix-only", RuleMatch(pattern_types=("STIX",)), action=Action.WARN),)},
    ),
    Case(
        "first-match-wins",
        [node("45.1.1.1", labels=("partner",), author="Partner CERT")],
        [("create", "IpAddress:45.1.1.1", "Alert", "not_in_defender", "partner-cert")],
        {"rules": (PARTNER_CERT, PARTNERS)},
    ),
    Case(
        "first-match-wins-other-order",
        [node("45.1.1.1", labels=("partner",), author="Partner CERT")],
        [("create", "IpAddress:45.1.1.1", "Warn", "not_in_defender", "partners")],
        {"rules": (PARTNERS, PARTNER_CERT)},
    ),
    Case(
        "all-conditions-must-hold",
        [node("45.1.1.1", labels=("partner",), score=20)],
        [("create", "IpAddress:45.1.1.1", "Warn", "not_in_defender", "default")],
        {"rules": (Rule("x", RuleMatch(labels=("partner",), score_min=50), action=Action.AUDIT),)},
    ),
    Case(
        "rule-by-score-over-fixed-default",
        [node("45.1.1.1", score=10, labels=("scored",)), node("45.1.1.2", score=10)],
        [
            ("create", "IpAddress:45.1.1.1", "Warn", "not_in_defender", "scored"),
            ("create", "IpAddress:45.1.1.2", "Block", "not_in_defender", "default"),
        ],
        {
            "action": Action.BLOCK,
            "rules": (Rule("scored", RuleMatch(labels=("scored",)), action=BY_SCORE),),
        },
    ),
    Case(
        "passive-only-default-rule-with-own-action",
        [node("45.1.1.1", labels=("c2",)), node("45.1.1.2")],
        [
            ("create", "IpAddress:45.1.1.1", "Block", "not_in_defender", "c2"),
            ("create", "IpAddress:45.1.1.2", "Audit", "not_in_defender", "default"),
        ],
        {
            "passive_only": True,
            "rules": (Rule("c2", RuleMatch(labels=("c2",)), action=Action.BLOCK),),
        },
    ),
    Case(
        "block-and-remediate-on-network-is-block",
        [node("evil.test", "domain", labels=("x",))],
        [("create", "DomainName:evil.test", "Block", "not_in_defender", "remediate")],
        {
            "rules": (
                Rule("remediate", RuleMatch(labels=("x",)), action=Action.BLOCK_AND_REMEDIATE),
            )
        },
    ),
    Case(
        "deploy-false-skips-and-deletes-owned",
        [node("45.1.1.1", markings=("TLP:RED",)), node("45.1.1.2", markings=("TLP:RED",))],
        [
            ("delete", "IpAddress:45.1.1.2", "Block", "not_deployed_by_rule", "red-stays-home"),
            ("skip", "IpAddress:45.1.1.1", None, "not_deployed_by_rule", "red-stays-home"),
        ],
        {"rules": (Rule("red-stays-home", RuleMatch(markings=("TLP:RED",)), deploy=False),)},
        [owned("2", "IpAddress", "45.1.1.2", "Block")],
    ),
    Case(
        "exclusion-cidr-skips-and-deletes-owned",
        [node("203.0.113.5"), node("203.0.113.6"), node("45.1.1.1")],
        [
            ("create", "IpAddress:45.1.1.1", "Block", "not_in_defender", "default"),
            ("delete", "IpAddress:203.0.113.6", "Block", "excluded", "own-network"),
            ("skip", "IpAddress:203.0.113.5", None, "excluded", "own-network"),
        ],
        {"exclusions": (OWN,)},
        [owned("6", "IpAddress", "203.0.113.6", "Block")],
    ),
    Case(
        "exclusion-wins-over-every-rule",
        [node("203.0.113.5", labels=("c2",))],
        [("skip", "IpAddress:203.0.113.5", None, "excluded", "own-network")],
        {
            "exclusions": (OWN,),
            "rules": (Rule("c2", RuleMatch(labels=("c2",)), action=Action.BLOCK),),
        },
    ),
    Case(
        "exclusion-ipv6-cidr",
        [node("2001:db8:1::5", "ip6"), node("2001:db8:2::5", "ip6")],
        [
            (
                "create",
                "IpAddress:2001:0db8:0002:0000:0000:0000:0000:0005",
                "Block",
                "not_in_defender",
                "default",
            ),
            (
                "skip",
                "IpAddress:2001:0db8:0001:0000:0000:0000:0000:0005",
                None,
                "excluded",
                "own-network",
            ),
        ],
        {"exclusions": (OWN,)},
    ),
    Case(
        "exclusion-domain-suffix-on-label-boundary",
        [node("www.example.org", "domain"), node("badexample.org", "domain")],
        [
            ("create", "DomainName:badexample.org", "Block", "not_in_defender", "default"),
            ("skip", "DomainName:www.example.org", None, "excluded", "own-network"),
        ],
        {"exclusions": (OWN,)},
    ),
    Case(
        "exclusion-url-prefix-and-url-host",
        [
            node("http://intranet.example.net/login", "url"),
            node("https://cdn.example.org/x.js", "url"),
            node("https://intranet.example.com/login", "url"),
        ],
        [
            (
                "create",
                "Url:https://intranet.example.com/login",
                "Block",
                "not_in_defender",
                "default",
            ),
            ("skip", "Url:http://intranet.example.net/login", None, "excluded", "own-network"),
            ("skip", "Url:https://cdn.example.org/x.js", None, "excluded", "own-network"),
        ],
        {"exclusions": (OWN,)},
    ),
    Case(
        "exclusion-by-another-hash-of-the-file",
        [node("f", hashes={"SHA-256": SHA256, "MD5": "44D88612FEA8A8F36DE82E1278ABB02F"})],
        [("skip", f"FileSha256:{SHA256}", None, "excluded", "own-network")],
        {"exclusions": (OWN,)},
    ),
    Case(
        "opt-out-label-skips-and-deletes-owned",
        [node("45.1.1.1", labels=("No-Defender",)), node("45.1.1.2", labels=("no-defender",))],
        [
            ("delete", "IpAddress:45.1.1.2", "Block", "opted_out", ""),
            ("skip", "IpAddress:45.1.1.1", None, "opted_out", ""),
        ],
        {"skip_label": "no-defender"},
        [owned("2", "IpAddress", "45.1.1.2", "Block")],
    ),
    Case(
        "on-revoke-delete-expires-owned",
        [node("45.1.1.1", revoked=True)],
        [("expire", "IpAddress:45.1.1.1", "Block", "revoked", "")],
        {},
        [owned("1", "IpAddress", "45.1.1.1", "Block")],
    ),
    Case(
        "on-revoke-audit-replaces-with-audit",
        [node("45.1.1.1", revoked=True, labels=("partner",)), node("45.1.1.2", revoked=True)],
        [
            ("create", "IpAddress:45.1.1.2", "Audit", "not_in_defender", "default"),
            ("replace", "IpAddress:45.1.1.1", "Audit", "action_changed", "partners"),
        ],
        {"on_revoke": Retire.AUDIT, "rules": (PARTNERS,)},
        [owned("1", "IpAddress", "45.1.1.1", "Warn")],
    ),
    Case(
        "un-revoked-gets-its-rule-action-back",
        [node("45.1.1.1", labels=("partner",))],
        [("replace", "IpAddress:45.1.1.1", "Warn", "action_changed", "partners")],
        {"on_revoke": Retire.AUDIT, "rules": (PARTNERS,)},
        [owned("1", "IpAddress", "45.1.1.1", "Audit")],
    ),
    Case(
        "on-expire-delete-expires-owned",
        [node("45.1.1.1", valid_until="2026-02-01T00:00:00Z")],
        [("expire", "IpAddress:45.1.1.1", "Block", "expired", "")],
        {},
        [owned("1", "IpAddress", "45.1.1.1", "Block")],
    ),
    Case(
        "on-expire-audit-keeps-as-audit",
        [node("45.1.1.1", valid_until="2026-02-01T00:00:00Z")],
        [("replace", "IpAddress:45.1.1.1", "Audit", "action_changed", "default")],
        {"on_expire": Retire.AUDIT},
        [owned("1", "IpAddress", "45.1.1.1", "Block")],
    ),
    Case(
        "rule-expire-time-shorter-than-default",
        [node("45.1.1.1", labels=("short",)), node("45.1.1.2")],
        [
            ("create", "IpAddress:45.1.1.2", "Block", "not_in_defender", "default"),
            ("skip", "IpAddress:45.1.1.1", None, "expired", ""),
        ],
        {"rules": (Rule("short", RuleMatch(labels=("short",)), expire_days=3),)},
    ),
    Case(
        "merge-highest-score-wins-with-its-rule",
        [
            node("45.1.1.1", ident="a", score=40, labels=("partner",)),
            node("45.1.1.1", ident="b", score=90),
        ],
        [
            ("create", "IpAddress:45.1.1.1", "Block", "not_in_defender", "default"),
            ("skip", "IpAddress:45.1.1.1", None, "superseded", ""),
        ],
        {"rules": (PARTNERS,)},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_policy_table(case: Case) -> None:
    policy = MappingPolicy(**case.policy)
    read = [indicator_from_graphql(n) for n in case.nodes]
    state = build_desired(read, policy, NOW)
    plan = build_plan(
        state.desired, case.owned, skipped=state.skipped, expired_keys=state.expired_keys
    )
    assert lines(plan) == case.expected


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 20


def test_rule_fields_reach_the_body() -> None:
    rule = Rule(
        "servers",
        RuleMatch(labels=("servers",)),
        severity=Severity.LOW,
        generate_alert=False,
        rbac_group_names=("Servers", "Clusters", "Servers"),
        recommended_actions="Call the SOC",
        expire_days=20,
    )
    policy = MappingPolicy(
        rbac_group_names=("All",), recommended_actions="default text", rules=(rule,)
    )
    state = build_desired(
        [indicator_from_graphql(node("45.1.1.1", labels=("servers",)))], policy, NOW
    )
    body = next(iter(state.desired.values())).to_body()
    assert body["severity"] == "Low"
    assert body["generateAlert"] is False
    assert body["rbacGroupNames"] == ["Clusters", "Servers"]
    assert body["recommendedActions"] == "Call the SOC"
    assert body["expirationTime"] == "2026-03-12T10:00:00Z"  # updated_at + 20 days


def test_rule_inherits_what_it_does_not_set() -> None:
    policy = MappingPolicy(
        rbac_group_names=("All",),
        recommended_actions="default text",
        generate_alert=False,
        rules=(Rule("warn", RuleMatch(labels=("w",)), action=Action.WARN),),
    )
    state = build_desired([indicator_from_graphql(node("45.1.1.1", labels=("w",)))], policy, NOW)
    body = next(iter(state.desired.values())).to_body()
    assert (body["action"], body["rbacGroupNames"], body["recommendedActions"]) == (
        "Warn",
        ["All"],
        "default text",
    )
    assert body["generateAlert"] is False
    assert body["severity"] == "High"  # by score


def test_kept_as_audit_says_why_and_drops_an_expired_expiry() -> None:
    policy = MappingPolicy(on_revoke=Retire.AUDIT, on_expire=Retire.AUDIT)
    read = [
        indicator_from_graphql(node("45.1.1.1", revoked=True, valid_until="2026-02-01T00:00:00Z"))
    ]
    [spec] = build_desired(read, policy, NOW).desired.values()
    assert spec.action is Action.AUDIT and spec.generate_alert is True
    assert spec.expiration_time is None
    assert "revoked in OpenCTI (policy.on_revoke: audit)" in spec.note
    assert "expired at 2026-02-01T00:00:00Z (policy.on_expire: audit)" in spec.note
