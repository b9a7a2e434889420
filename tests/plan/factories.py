"""Factories for plan and report tests: desired and owned indicators, and one fixed plan that
holds every action, guards and skips (the golden-file plan)."""

from __future__ import annotations

from typing import Any

from reconciler.model import (
    DefenderIndicator,
    DesiredIndicator,
    IndicatorKey,
    IndicatorType,
    Skipped,
    SkipReason,
)
from reconciler.plan import Plan, PlanPolicy, build_plan


def desired(value: str = "203.0.113.45", type_: str = "IpAddress", **kw: Any) -> DesiredIndicator:
    base: dict[str, Any] = {
        "indicator_type": type_,
        "indicator_value": value,
        "action": "Block",
        "severity": "High",
        "title": f"OpenCTI: {value}",
        "description": "Malicious infrastructure",
        "application": "opencti",
        "external_id": f"indicator--{value}",
        "expiration_time": "2026-04-01T00:00:00Z",
        "generate_alert": True,
        "rbac_group_names": ("SOC",),
        "score": 50,
        "updated_at": "2026-01-01T00:00:00Z",
        "opencti_ids": (f"indicator--{value}",),
    }
    base.update(kw)
    return DesiredIndicator(**base)


def owned(defender_id: str, like: DesiredIndicator, **wire: Any) -> DefenderIndicator:
    """An owned Defender indicator equal to ``like`` unless ``wire`` fields say otherwise."""
    raw: dict[str, Any] = {
        **like.to_body(),
        "id": defender_id,
        "createdBySource": "PublicApi",
        "lastUpdateTime": "2026-01-02T03:04:05.1234567Z",
    }
    raw.update(wire)
    return DefenderIndicator.from_raw(raw)


def as_map(*items: DesiredIndicator) -> dict[IndicatorKey, DesiredIndicator]:
    return {d.key: d for d in items}


def golden_plan(*, allow_mass_delete: bool = False) -> Plan:
    """Every action, a triggered guard (ratio), mapping skips, a quota cut, a long value, and
    the policy's rules: rule names, an Audit kept for a revoked indicator, an excluded owned
    copy deleted, an opted-out and a deploy-false skip."""
    create_ip = desired("203.0.113.45", score=80, rule="block-high-scores")
    create_url = desired(
        "https://evil.example/download?id=" + "a" * 150,
        "Url",
        opencti_ids=("indicator--u1", "indicator--u2", "indicator--u3", "indicator--u4"),
        score=70,
    )
    update_dom = desired("evil.example", "DomainName", severity="High", score=90, rule="default")
    replace_url = desired("https://x.test/a", "Url", action="Block", score=60)
    # Revoked under on_revoke: audit: the owned Block copy is replaced by an Audit one.
    kept_audit = desired(
        "kept.example",
        "DomainName",
        action="Audit",
        score=95,
        rule="partners",
        note="revoked in OpenCTI (policy.on_revoke: audit): kept as Audit",
    )
    keep = [desired(f"198.51.100.{i}", score=40) for i in range(1, 4)]
    cut = desired("192.0.2.99", score=1, updated_at="2025-01-01T00:00:00Z")
    cut_owned_src = desired("192.0.2.98", score=2)

    items = [create_ip, create_url, update_dom, replace_url, kept_audit, *keep, cut, cut_owned_src]
    owned_list = [
        owned(
            "42",
            update_dom,
            severity="Medium",
            expirationTime="2026-03-01T00:00:00Z",
            description="Old | text with `ticks`",
            rbacGroupNames=["Tier2"],
        ),
        owned("7", replace_url, action="Audit"),
        owned("8", kept_audit, action="Block"),
        owned("14", desired("203.0.113.7")),
        *[owned(str(100 + i), d) for i, d in enumerate(keep)],
        owned("101", keep[0], title="a stale duplicate"),
        owned(
            "9",
            desired(
                "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "FileSha256"
            ),
        ),
        owned("10", desired("gone.example", "DomainName")),
        owned("11", desired("revoked.example", "DomainName")),
        owned("12", desired("198.51.100.200")),
        owned("13", cut_owned_src),
    ]
    revoked_key = IndicatorKey(IndicatorType.DOMAIN_NAME, "revoked.example")
    expired_key = IndicatorKey(IndicatorType.IP_ADDRESS, "198.51.100.200")
    excluded_key = IndicatorKey(IndicatorType.IP_ADDRESS, "203.0.113.7")
    expired_keys = {
        excluded_key: Skipped(
            opencti_id="indicator--own",
            reason=SkipReason.EXCLUDED,
            detail="203.0.113.7 is covered by 203.0.113.0/24 (exclusion 'own-network')",
            key=excluded_key,
            rule="own-network",
        ),
        revoked_key: Skipped(
            opencti_id="indicator--rev", reason=SkipReason.REVOKED, key=revoked_key, name="Rev"
        ),
        expired_key: Skipped(
            opencti_id="indicator--exp",
            reason=SkipReason.EXPIRED,
            detail="valid_until 2025-12-01T00:00:00Z passed",
            key=expired_key,
        ),
    }
    skipped = [
        *expired_keys.values(),
        Skipped(
            opencti_id="indicator--e1", reason=SkipReason.UNSUPPORTED_TYPE, detail="email-addr"
        ),
        Skipped(opencti_id="indicator--e2", reason=SkipReason.UNSUPPORTED_TYPE, detail="mutex"),
        Skipped(
            opencti_id="indicator--o1",
            reason=SkipReason.OPTED_OUT,
            detail="carries the label 'no-defender' (policy.skip_label)",
            key=IndicatorKey(IndicatorType.DOMAIN_NAME, "opted.example"),
        ),
        Skipped(
            opencti_id="indicator--n1",
            reason=SkipReason.NOT_DEPLOYED_BY_RULE,
            detail="rule 'internal-only' says deploy: false",
            key=IndicatorKey(IndicatorType.URL, "https://ours.example/x"),
            rule="internal-only",
        ),
        Skipped(
            opencti_id="indicator--v1",
            reason=SkipReason.INVALID_VALUE,
            detail="not a domain: 'bad|value'",
            name="Bad one",
        ),
        *[
            Skipped(
                opencti_id=f"indicator--p{i}", reason=SkipReason.PRIVATE_IP, detail=f"10.0.0.{i}"
            )
            for i in range(5)
        ],
    ]
    return build_plan(
        as_map(*items),
        owned_list,
        skipped=skipped,
        expired_keys=expired_keys,
        non_owned_count=14_992,
        policy=PlanPolicy(
            quota=15_000,
            max_delete_ratio=0.3,
            ratio_min_deletes=3,
            allow_mass_delete=allow_mass_delete,
        ),
    )
