"""End to end over sockets: a policy file applied to a mixed dataset (generated indicators plus
partner, TLP:RED, opted-out, own-network and revocable ones) converges; an exclusion of the
tenant's own range keeps a new address out and removes an owned one; a revoked indicator under
``on_revoke: audit`` becomes Audit and gets its rule's action back when un-revoked; ``plan
--explain`` tells why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.opencti import OpenCTIEmulator
from tests.e2e.support import TODAY, Sandbox, write_config

OWN_RANGE = "203.0.113.0/24"
POLICY: dict[str, Any] = {
    "policy__rules": [
        {
            "name": "partner-feeds-warn-only",
            "match": {"authors": ["Partner CERT"]},
            "action": "Warn",
            "severity": "Low",
        },
        {"name": "red-stays-home", "match": {"markings": ["TLP:RED"]}, "deploy": False},
        {"name": "c2-block", "match": {"labels": ["c2-confirmed"]}, "action": "Block"},
    ],
    "policy__on_revoke": "audit",
    "policy__skip_label": "no-defender",
    "policy__exclusions": [{"name": "own-network", "cidrs": [OWN_RANGE]}],
}


def ip_indicator(opencti: OpenCTIEmulator, ip: str, **fields: Any) -> str:
    record = opencti.create_indicator(
        pattern=f"[ipv4-addr:value = '{ip}']", name=ip, score=fields.pop("score", 85), **fields
    )
    return str(record["id"])


def plan_json(sandbox: Sandbox) -> dict[str, Any]:
    res = sandbox.cli("plan", "--output", "json")
    assert res.code == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def change_for(doc: dict[str, Any], value: str) -> list[tuple[str, str | None, str, str]]:
    """(kind, action, reason, rule) of every change of ``value``."""
    out = []
    for c in doc["changes"]:
        if c["indicatorValue"] == value:
            body = c["after"] or c["before"] or {}
            out.append((c["action"], body.get("action"), c["reason"], c["rule"]))
    return out


def row_for(sandbox: Sandbox, value: str) -> list[dict[str, Any]]:
    return [r for r in sandbox.owned() if r["indicatorValue"] == value]


def converge(sandbox: Sandbox) -> None:
    res = sandbox.cli("apply")
    assert res.code == 0, res.stdout + res.stderr
    again = sandbox.cli("plan", "--detailed-exitcode")
    assert again.code == 0, again.stdout


def test_policy_file_on_a_mixed_dataset_converges(tmp_path: Path) -> None:
    with DefenderEmulator(rate_limits=True) as defender, OpenCTIEmulator() as opencti:
        opencti.load(generate_indicators(400, seed=21, now=TODAY))
        owned_own = ip_indicator(opencti, "203.0.113.10")
        ip_indicator(opencti, "91.200.0.1", created_by="Partner CERT")
        ip_indicator(opencti, "91.200.0.2", markings=["TLP:RED"])
        ip_indicator(opencti, "91.200.0.3", labels=["no-defender"])
        revocable = ip_indicator(opencti, "91.200.0.4", labels=["c2-confirmed"], score=20)
        config = write_config(tmp_path / "config.yml", defender, opencti)
        sandbox = Sandbox(defender, opencti, config)

        # Before the policy: the seed's mapping deploys all of them.
        converge(sandbox)
        for value in ("203.0.113.10", "91.200.0.1", "91.200.0.2", "91.200.0.3"):
            assert [r["action"] for r in row_for(sandbox, value)] == ["Block"], value
        assert [r["action"] for r in row_for(sandbox, "91.200.0.4")] == ["Warn"]  # score 20

        # The policy file: the plan says what each rule does, and names the rule.
        write_config(config, defender, opencti, **POLICY)
        ip_indicator(opencti, "203.0.113.20")  # inside the own range, never deployed
        doc = plan_json(sandbox)
        assert change_for(doc, "203.0.113.10") == [("delete", "Block", "excluded", "own-network")]
        assert change_for(doc, "203.0.113.20") == [("skip", None, "excluded", "own-network")]
        assert change_for(doc, "91.200.0.1") == [
            ("replace", "Warn", "action_changed", "partner-feeds-warn-only")
        ]
        assert change_for(doc, "91.200.0.2") == [
            ("delete", "Block", "not_deployed_by_rule", "red-stays-home")
        ]
        assert change_for(doc, "91.200.0.3") == [("delete", "Block", "opted_out", "")]
        assert change_for(doc, "91.200.0.4") == [("replace", "Block", "action_changed", "c2-block")]
        excluded = next(c for c in doc["changes"] if c["indicatorValue"] == "203.0.113.10")
        assert excluded["detail"] == (
            "203.0.113.10 is covered by 203.0.113.0/24 (exclusion 'own-network')"
        )
        assert excluded["opencti_ids"] == [owned_own]
        text = sandbox.cli("plan").stdout
        assert "rule: partner-feeds-warn-only" in text and "reason: excluded" in text

        converge(sandbox)
        assert row_for(sandbox, "203.0.113.10") == [] and row_for(sandbox, "203.0.113.20") == []
        assert [(r["action"], r["severity"]) for r in row_for(sandbox, "91.200.0.1")] == [
            ("Warn", "Low")
        ]
        assert row_for(sandbox, "91.200.0.2") == [] and row_for(sandbox, "91.200.0.3") == []

        # Revoked under on_revoke: audit: kept, as Audit with an alert.
        opencti.revoke_indicator(revocable)
        doc = plan_json(sandbox)
        assert change_for(doc, "91.200.0.4") == [("replace", "Audit", "action_changed", "c2-block")]
        [change] = [c for c in doc["changes"] if c["indicatorValue"] == "91.200.0.4"]
        assert "revoked in OpenCTI (policy.on_revoke: audit): kept as Audit" in change["detail"]
        converge(sandbox)
        [row] = row_for(sandbox, "91.200.0.4")
        assert (row["action"], row["generateAlert"]) == ("Audit", True)

        # Un-revoked: its rule's action comes back.
        opencti.update_indicator(revocable, revoked=False)
        assert change_for(plan_json(sandbox), "91.200.0.4") == [
            ("replace", "Block", "action_changed", "c2-block")
        ]
        converge(sandbox)
        assert [r["action"] for r in row_for(sandbox, "91.200.0.4")] == ["Block"]

        # Why is this address not in Defender?
        res = sandbox.cli("plan", "--explain", "203.0.113.20")
        assert res.code == 0, res.stderr
        assert "skipped: excluded — 203.0.113.20 is covered by 203.0.113.0/24" in res.stdout
        assert "Defender: no row holds it." in res.stdout
        assert "decided by: exclusion own-network, before any rule" in res.stdout
        res = sandbox.cli("plan", "--explain", "91.200.0.1")
        assert "decided by: rule partner-feeds-warn-only" in res.stdout
        assert "→ partner-feeds-warn-only: author: has partner cert" in res.stdout
        assert "(owned)" in res.stdout
        res = sandbox.cli("plan", "--explain", "not a value")
        assert res.code == 1
        assert "'not a value' is not an IP address, domain, URL or file hash" in res.stderr
