"""values.schema.json: Helm refuses to render bad values, naming the key; good ones pass.
The schema also agrees with the reconciler's own config model (enums, keys)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reconciler.config import ENV_VARS, IGNORABLE_FIELDS, SECRET_KEYS
from reconciler.config.policy import EXCLUSION_KEYS, MATCH_KEYS, RULE_KEYS, RULE_TYPES
from reconciler.model import Action
from tests.chart.support import CHART_DIR, VALUE_SETS, ChartRenderer, helm

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))

BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("action-typo", {"config": {"microsoft_defender_intel": {"action": "Blok"}}}, "action"),
    ("negative-interval", {"config": {"reconciler": {"interval_seconds": -1}}}, "interval"),
    ("interval-below-10", {"config": {"reconciler": {"interval_seconds": 5}}}, "interval"),
    ("unknown-top-level-key", {"replicas": 2}, "replicas"),
    ("unknown-config-key", {"config": {"reconciler": {"dryrun": True}}}, "dryrun"),
    ("unknown-section", {"config": {"defender": {}}}, "defender"),
    ("token-in-config", {"config": {"opencti": {"token": "t0ken"}}}, "token"),
    (
        "client-secret-in-config",
        {"config": {"microsoft_defender_intel": {"client_secret": "s3cret"}}},
        "client_secret",
    ),
    ("bool-as-string", {"config": {"reconciler": {"dry_run": "yes"}}}, "dry_run"),
    ("ratio-above-one", {"config": {"reconciler": {"max_delete_ratio": 1.5}}}, "ratio"),
    ("quota-above-limit", {"config": {"reconciler": {"quota": 20000}}}, "quota"),
    ("http-port-off", {"config": {"reconciler": {"http_port": 0}}}, "http_port"),
    ("log-format", {"config": {"reconciler": {"log_format": "xml"}}}, "log_format"),
    ("log-level", {"config": {"connector": {"log_level": "trace"}}}, "log_level"),
    ("ignore-action", {"config": {"reconciler": {"ignore_fields": ["action"]}}}, "ignore"),
    ("url-scheme", {"config": {"opencti": {"url": "opencti:8080"}}}, "url"),
    (
        "relative-resource",
        {"config": {"microsoft_defender_intel": {"resource_path": "api"}}},
        "resource",
    ),
    ("adopt-tags-string", {"config": {"microsoft_defender_intel": {"adopt_tags": "a,b"}}}, "adopt"),
    ("relative-state-path", {"config": {"reconciler": {"state_path": "state.json"}}}, "state_path"),
    (
        "two-ca-sources",
        {"caBundle": {"existingConfigMap": "a", "existingSecret": "b"}},
        "caBundle",
    ),
    ("secret-name", {"existingSecret": "Not_A_Name"}, "existingSecret"),
    ("privilege-escalation", {"securityContext": {"allowPrivilegeEscalation": True}}, "allow"),
    ("writable-root", {"securityContext": {"readOnlyRootFilesystem": False}}, "readOnly"),
    ("root-pod", {"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
    ("cron-schedule", {"cronJob": {"enabled": True, "schedule": "daily"}}, "schedule"),
    ("extra-env-secret", {"extraEnv": [{"name": "OPENCTI_TOKEN", "value": "x"}]}, "extraEnv"),
    (
        "rule-action-typo",
        {"config": {"policy": {"rules": [{"name": "r", "action": "Blok"}]}}},
        "action",
    ),
    ("rule-unknown-key", {"config": {"policy": {"rules": [{"name": "r", "acton": "x"}]}}}, "acton"),
    ("rule-without-name", {"config": {"policy": {"rules": [{"action": "Block"}]}}}, "name"),
    ("rule-named-default", {"config": {"policy": {"rules": [{"name": "default"}]}}}, "name"),
    (
        "rule-type-typo",
        {"config": {"policy": {"rules": [{"name": "r", "match": {"types": ["IP"]}}]}}},
        "types",
    ),
    ("on-revoke-keep", {"config": {"policy": {"on_revoke": "keep"}}}, "on_revoke"),
    (
        "exclusion-bad-hash",
        {"config": {"policy": {"exclusions": [{"name": "e", "hashes": ["abc"]}]}}},
        "hashes",
    ),
]

GOOD_VALUES: list[tuple[str, dict[str, Any]]] = [
    ("defaults", {}),
    ("all-enabled", VALUE_SETS["all-enabled"]),
    ("action-block", {"config": {"microsoft_defender_intel": {"action": "Block"}}}),
    ("action-unset", {"config": {"microsoft_defender_intel": {"action": ""}}}),
    ("cron-macro", {"cronJob": {"enabled": True, "schedule": "@daily"}}),
    ("ignore-two", {"config": {"reconciler": {"ignore_fields": ["title", "externalId"]}}}),
    (
        "policy",
        {
            "config": {
                "policy": {
                    "rules": [
                        {
                            "name": "partners",
                            "match": {"labels": ["partner"], "score_max": 79, "types": ["Url"]},
                            "action": "score",
                            "severity": "Low",
                        },
                        {"name": "internal", "match": {"markings": ["TLP:RED"]}, "deploy": False},
                    ],
                    "on_revoke": "audit",
                    "skip_label": "no-defender",
                    "exclusions": [{"name": "own", "cidrs": ["203.0.113.0/24"]}],
                }
            }
        },
    ),
]


@pytest.mark.parametrize(
    ("values", "names"), [(v, n) for _, v, n in BAD_VALUES], ids=[i for i, _, _ in BAD_VALUES]
)
def test_schema_rejects_bad_values(
    render: ChartRenderer, values: dict[str, Any], names: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        render(values)
    assert names in str(caught.value)


@pytest.mark.parametrize("values", [v for _, v in GOOD_VALUES], ids=[i for i, _ in GOOD_VALUES])
def test_schema_accepts_good_values(chart: Any, values: dict[str, Any]) -> None:
    chart.validate_schema(chart.merge_values(values))


def test_bad_value_error_does_not_echo_secrets(render: ChartRenderer) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        render({"secrets": {"openctiToken": "t0ken-value"}, "config": {"opencti": {"x": 1}}})
    assert "t0ken-value" not in str(caught.value)


def test_schema_sections_match_the_config_model() -> None:
    sections = SCHEMA["properties"]["config"]["properties"]
    keys = {f"{s}.{k}" for s, body in sections.items() for k in body["properties"]}
    assert keys == set(ENV_VARS) - set(SECRET_KEYS)
    for body in [SCHEMA, SCHEMA["properties"]["config"], *sections.values()]:
        assert body["additionalProperties"] is False


def test_schema_enums_match_the_config_model() -> None:
    sections = SCHEMA["properties"]["config"]["properties"]
    action = sections["microsoft_defender_intel"]["properties"]["action"]["enum"]
    assert [a for a in action if a] == [a.value for a in Action]
    ignore = sections["reconciler"]["properties"]["ignore_fields"]["items"]["enum"]
    assert ignore == list(IGNORABLE_FIELDS)
    rule = sections["policy"]["properties"]["rules"]["items"]["properties"]
    assert rule["match"]["properties"]["types"]["items"]["enum"] == list(RULE_TYPES)
    assert rule["action"]["enum"] == [*(a.value for a in Action), "score"]
    assert set(rule) == set(RULE_KEYS)
    assert set(rule["match"]["properties"]) == set(MATCH_KEYS)
    exclusion = sections["policy"]["properties"]["exclusions"]["items"]["properties"]
    assert set(exclusion) == set(EXCLUSION_KEYS)


def test_required_settings_must_be_present() -> None:
    sections = SCHEMA["properties"]["config"]["properties"]
    required = {f"{s}.{k}" for s, body in sections.items() for k in body.get("required", [])}
    assert {
        "opencti.url",
        "connector.id",
        "connector.live_stream_id",
        "microsoft_defender_intel.tenant_id",
        "microsoft_defender_intel.client_id",
    } <= required
