"""The ``policy`` section: rules and exclusions from YAML and from JSON env vars, errors that
name the rule, the checks only the mapping can make (reported at start by ``wiring``), the
RBAC group names, and the commented examples of config.example.yml."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import wiring
from reconciler.config import load_settings
from reconciler.errors import ConfigError
from reconciler.mapping import (
    BY_SCORE,
    DEFAULT_RULE,
    Exclusion,
    MappingPolicy,
    Retire,
    Rule,
    RuleMatch,
)
from reconciler.model import Action, Severity

ROOT = Path(__file__).resolve().parents[2]


def load(
    policy: dict[str, Any] | None = None, env: dict[str, str] | None = None, **sections: Any
) -> Any:
    return load_settings(
        None,
        env=env or {},
        overrides={f"policy.{k}": v for k, v in (policy or {}).items()}
        | {f"{s}.{k}": v for s, body in sections.items() for k, v in body.items()},
        require=False,
    )


def test_rules_from_yaml_become_mapping_rules(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(
        """
policy:
  rules:
    - name: partners
      match:
        labels: partner
        markings: [TLP:AMBER]
        score_min: 10
        score_max: 90
        types: [ipaddress, domain-name]
      action: alert
      severity: SCORE
      generate_alert: true
      rbac_group_names: [Servers]
      recommended_actions: ""
      expire_time: 7
    - name: rest
      deploy: false
  on_revoke: Audit
  skip_label: no-defender
  exclusions:
    - name: own
      cidrs: [203.0.113.0/24]
      domains: [example.org]
      url_prefixes: ["https://x.example/"]
      hashes: []
microsoft_defender_intel:
  rbac_group_names: [All]
""",
        encoding="utf-8",
    )
    settings = load_settings(path, env={}, require=False)
    policy = wiring.mapping_policy(settings)
    assert policy.rules == (
        Rule(
            "partners",
            RuleMatch(
                labels=("partner",),
                markings=("TLP:AMBER",),
                score_min=10,
                score_max=90,
                types=("IpAddress", "Domain-Name"),
            ),
            action=Action.ALERT,
            severity=BY_SCORE,
            generate_alert=True,
            rbac_group_names=("Servers",),
            recommended_actions="",
            expire_days=7,
        ),
        Rule("rest", deploy=False),
    )
    assert policy.on_revoke is Retire.AUDIT and policy.on_expire is Retire.DELETE
    assert policy.skip_label == "no-defender"
    assert policy.exclusions == (
        Exclusion(
            "own",
            cidrs=("203.0.113.0/24",),
            domains=("example.org",),
            url_prefixes=("https://x.example/",),
        ),
    )
    assert [o.rule for o in policy.rule_book.outcomes] == ["partners", "rest", DEFAULT_RULE]


def test_no_policy_is_the_seed_mapping() -> None:
    assert wiring.mapping_policy(load()) == MappingPolicy()


def test_rules_from_the_env_var_as_json() -> None:
    env = {
        "POLICY_RULES": '[{"name": "low", "match": {"score_max": 29}, "severity": "informational"}]'
    }
    policy = wiring.mapping_policy(load(env=env))
    assert policy.rules == (Rule("low", RuleMatch(score_max=29), severity=Severity.INFORMATIONAL),)


BAD_RULES: list[tuple[str, Any, str]] = [
    (
        "unknown-key",
        [{"name": "p", "acton": "Block"}],
        r"rule #1 'p': unknown key 'acton'; did you mean action\?",
    ),
    (
        "unknown-match-key",
        [{"name": "p", "match": {"label": ["x"]}}],
        r"rule #1 'p': match: unknown key 'label'; did you mean labels\?",
    ),
    ("no-name", [{"action": "Block"}], r"rule #1 needs a name"),
    ("not-a-mapping", ["Block"], r"rule #1 must be a mapping"),
    (
        "same-name",
        [{"name": "a", "match": {"labels": ["x"]}}, {"name": "a"}],
        r"rule #2 'a': another rule has the same name",
    ),
    (
        "reserved-name",
        [{"name": "default"}],
        r"rule #1 'default': the name 'default' is kept for the default rule",
    ),
    (
        "catch-all-first",
        [{"name": "all"}, {"name": "b", "match": {"labels": ["x"]}}],
        r"rule #1 'all' has no match conditions.*\('b'\) can never match",
    ),
    (
        "bad-action",
        [{"name": "p", "action": "Blok"}],
        r"rule #1 'p': action 'Blok' is not one of Warn, Block.*score",
    ),
    (
        "bad-severity",
        [{"name": "p", "severity": "Urgent"}],
        r"rule #1 'p': severity 'Urgent' is not one of",
    ),
    (
        "bad-type",
        [{"name": "p", "match": {"types": ["IP"]}}],
        r"rule #1 'p': match.types 'IP' is not one of .*IpAddress",
    ),
    (
        "score-range",
        [{"name": "p", "match": {"score_min": 120}}],
        r"match.score_min must be a whole number from 0 to 100",
    ),
    (
        "score-order",
        [{"name": "p", "match": {"score_min": 80, "score_max": 20}}],
        r"match.score_min is above match.score_max",
    ),
    (
        "expire-negative",
        [{"name": "p", "expire_time": -1}],
        r"expire_time must be a whole number of days >= 0",
    ),
    ("deploy-not-bool", [{"name": "p", "deploy": "no"}], r"deploy must be true or false"),
    (
        "labels-not-strings",
        [{"name": "p", "match": {"labels": [1]}}],
        r"match.labels must be a list of strings",
    ),
    ("not-a-list", {"name": "p"}, r"must be a list of rules"),
    ("bad-json", "[{", r"not valid JSON"),
]


@pytest.mark.parametrize(
    ("rules", "message"), [(r, m) for _, r, m in BAD_RULES], ids=[i for i, _, _ in BAD_RULES]
)
def test_bad_rules_fail_naming_the_rule(rules: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({"rules": rules})
    text = str(caught.value)
    assert "policy.rules (POLICY_RULES, from override): " in text
    assert re.search(message, text), text


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            {"name": "p", "deploy": False, "action": "Block"},
            "rule 'p': deploy: false deploys nothing",
        ),
        (
            {"name": "p", "action": "Audit", "generate_alert": False},
            "rule 'p': action Audit always raises",
        ),
    ],
    ids=["deploy-false-with-action", "audit-without-alert"],
)
def test_invalid_combinations_fail_at_start_naming_the_rule(
    rule: dict[str, Any], message: str
) -> None:
    settings = load({"rules": [rule]})  # the shape is right...
    with pytest.raises(ConfigError, match=re.escape(f"policy.rules (POLICY_RULES): {message}")):
        wiring.mapping_policy(settings)  # ...the combination is not: refused when the run starts


def test_unknown_rbac_group_fails_naming_the_rule() -> None:
    rules = [{"name": "servers", "match": {"labels": ["s"]}, "rbac_group_names": ["Severs"]}]
    settings = load({"rules": rules, "known_rbac_groups": ["Servers", "Workstations"]})
    with pytest.raises(
        ConfigError,
        match=r"rule 'servers' names RBAC group 'Severs', which is not one of "
        r"policy.known_rbac_groups \(Servers, Workstations\)",
    ):
        wiring.mapping_policy(settings)


def test_unknown_rbac_group_of_the_default_rule() -> None:
    settings = load(
        {"known_rbac_groups": ["Servers"]},
        microsoft_defender_intel={"rbac_group_names": ["Laptops"]},
    )
    with pytest.raises(
        ConfigError,
        match=r"the default rule \(microsoft_defender_intel.rbac_group_names\) "
        r"names RBAC group 'Laptops'",
    ):
        wiring.mapping_policy(settings)


def test_known_rbac_groups_compare_case_insensitively_and_are_optional() -> None:
    rules = [{"name": "s", "match": {"labels": ["s"]}, "rbac_group_names": ["servers"]}]
    wiring.mapping_policy(load({"rules": rules, "known_rbac_groups": ["Servers"]}))
    wiring.mapping_policy(load({"rules": [{**rules[0], "rbac_group_names": ["Anything"]}]}))


@pytest.mark.parametrize(
    ("exclusions", "message", "at_start"),
    [
        (
            [{"name": "e", "cidr": ["10.0.0.0/8"]}],
            r"exclusion #1 'e': unknown key 'cidr'; did you mean cidrs\?",
            False,
        ),
        ([{"name": "e"}], r"exclusion #1 'e': lists nothing", False),
        ([{"cidrs": ["10.0.0.0/8"]}], r"exclusion #1 needs a name", False),
        (
            [{"name": "e", "cidrs": ["10.0.0.300/8"]}],
            r"exclusion 'e': not a CIDR range or IP address: '10.0.0.300/8'",
            True,
        ),
        (
            [{"name": "e", "hashes": ["xyz"]}],
            r"exclusion 'e': not an MD5, SHA-1 or SHA-256 hash",
            True,
        ),
    ],
)
def test_bad_exclusions_fail_naming_them(exclusions: Any, message: str, at_start: bool) -> None:
    if not at_start:
        with pytest.raises(
            ConfigError, match=r"policy.exclusions \(POLICY_EXCLUSIONS, from override\): " + message
        ):
            load({"exclusions": exclusions})
        return
    settings = load({"exclusions": exclusions})
    with pytest.raises(ConfigError, match=r"policy.exclusions \(POLICY_EXCLUSIONS\): " + message):
        wiring.mapping_policy(settings)


def test_check_command_reports_a_bad_rule(tmp_path: Path) -> None:
    from io import StringIO

    from reconciler.checks import run_checks

    path = tmp_path / "config.yml"
    required = {
        "opencti": {"url": "http://127.0.0.1:9", "token": "t"},
        "connector": {"id": "6f0f4b9e-2b1c-4c51-9d5f-0d5f3c1c2a10", "live_stream_id": "s"},
        "microsoft_defender_intel": {"tenant_id": "t", "client_id": "c", "client_secret": "s"},
        "policy": {"rules": [{"name": "p", "deploy": False, "action": "Block"}]},
    }
    path.write_text(yaml.safe_dump(required), encoding="utf-8")
    out = StringIO()
    assert run_checks(path, out=out) == 1
    assert "rule 'p': deploy: false deploys nothing" in out.getvalue()


def _commented_block(text: str, key: str) -> Any:
    """The YAML example commented out (``#   - ...`` lines after an "e.g.") above ``key: []``."""
    lines = text.splitlines()
    end = next(i for i, line in enumerate(lines) if line.strip() == f"{key}: []")
    start = max(i for i in range(end) if "e.g." in lines[i].lower())
    example: list[str] = []
    for line in lines[start + 1 : end]:
        body = line.lstrip()
        if not body.startswith("#   "):
            break
        example.append(body[1:])
    return yaml.safe_load("\n".join(example))


@pytest.mark.parametrize(
    "where", ["config.example.yml", "helm/opencti-defender-reconciler/values.yaml"]
)
def test_commented_examples_are_valid(where: str) -> None:
    text = (ROOT / where).read_text(encoding="utf-8")
    rules = _commented_block(text, "rules")
    exclusions = _commented_block(text, "exclusions")
    assert rules and exclusions
    settings = load({"rules": rules, "exclusions": exclusions})
    policy = wiring.mapping_policy(settings)
    assert len(policy.rules) == len(rules) and len(policy.exclusions) == len(exclusions)
