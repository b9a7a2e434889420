"""Every configuration key travels from values.yaml to the reconciler: non-secret keys through
the ConfigMap's config.yml, the two secrets through env vars from a Secret (the chart's own or
existingSecret). Proven end to end by loading what the pod would see with the reconciler's own
``load_settings``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.config import ENV_VARS, SECRET_KEYS, Settings, load_settings
from tests.chart.support import (
    CHART_DIR,
    FULLNAME,
    ROOT,
    VALUE_SETS,
    ChartRenderer,
    Rendered,
    merge,
)

CONFIG_PATH = "/etc/reconciler/config/config.yml"
TOKEN = "opencti-token-4f1e9a"
CLIENT_SECRET = "client-secret-b7c2d0"
# Values key of each secret, and the env var it must reach.
SECRET_VALUES = {
    "opencti.token": ("openctiToken", "OPENCTI_TOKEN", TOKEN),
    "microsoft_defender_intel.client_secret": (
        "clientSecret",
        "MICROSOFT_DEFENDER_INTEL_CLIENT_SECRET",
        CLIENT_SECRET,
    ),
}


def flat_keys(document: dict[str, Any]) -> set[str]:
    """``{section: {key: ...}}`` → ``{"section.key", ...}``."""
    return {f"{s}.{k}" for s, body in document.items() for k in (body or {})}


def chart_defaults() -> dict[str, Any]:
    loaded = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def every_key_changed(ca_file: Path) -> dict[str, Any]:
    """A value for every non-secret key, each different from its default."""
    return {
        "opencti": {
            "url": "https://opencti.example.org:8443",
            "ssl_verify": True,
            "listing_filters": {
                "mode": "and",
                "filters": [{"key": ["revoked"], "values": ["false"], "operator": "eq"}],
                "filterGroups": [],
            },
        },
        "connector": {
            "id": "8a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d",
            "name": "Reconciler (prod)",
            "live_stream_id": "stream-42",
            "live_stream_listen_delete": False,
            "live_stream_no_dependencies": False,
            "log_level": "debug",
        },
        "microsoft_defender_intel": {
            "tenant_id": "tenant-7",
            "client_id": "client-7",
            "login_url": "https://login.microsoftonline.us",
            "base_url": "https://api-gov.securitycenter.microsoft.us",
            "resource_path": "/api/v2/indicators",
            "expire_time": 14,
            "action": "Block",
            "passive_only": True,
            "scope": "https://api-gov.securitycenter.microsoft.us/.default",
            "graph_url": "https://graph.microsoft.us",
            "graph_scope": "https://graph.microsoft.us/.default",
            "ca_bundle": str(ca_file),
            "ownership_tag": "opencti-prod",
            "adopt_tags": ["OpenCTI Microsoft Defender Intel", "legacy"],
            "rbac_group_names": ["Servers", "Workstations"],
            "recommended_actions": "Isolate the device and call the SOC.",
            "generate_alert": False,
            "educate_url": "https://intranet.example.org/security",
            "connect_timeout": 5.0,
            "read_timeout": 300.0,
        },
        "reconciler": {
            "interval_seconds": 120,
            "dry_run": True,
            "max_deletes": 25,
            "max_delete_ratio": 0.2,
            "quota": 9000,
            "ignore_fields": ["description", "severity"],
            "http_port": 9200,
            "log_format": "json",
            "state_path": "/var/lib/reconciler/state.json",
            "rejected_retry_hours": 1.5,
            "churn_runs": 5,
            "write_back": False,
            "sightings": False,
            "sightings_interval_seconds": 120,
            "tenant": "contoso",
            "leader_election": True,
            "lease_name": "reconciler-prod",
            "lease_namespace": "secops",
            "lease_duration_seconds": 30.0,
            "renew_deadline_seconds": 20.0,
            "retry_period_seconds": 3.0,
            "kubernetes_api_url": "https://kubernetes.example.org:6443",
            "kubernetes_token_file": "/var/run/secrets/lease/token",
        },
        "policy": {
            "rules": [
                {
                    "name": "partners",
                    "match": {"authors": ["Partner CERT"], "score_min": 10, "types": ["Url"]},
                    "action": "Alert",
                    "severity": "score",
                    "rbac_group_names": ["Servers"],
                    "expire_time": 7,
                },
                {"name": "no-files", "match": {"types": ["StixFile"]}, "deploy": False},
            ],
            "on_revoke": "audit",
            "on_expire": "audit",
            "skip_label": "no-defender",
            "exclusions": [
                {"name": "own", "cidrs": ["203.0.113.0/24"], "domains": ["example.org"]}
            ],
            "known_rbac_groups": ["Servers", "Workstations"],
        },
    }


def pod_env(rendered: Rendered, secret_data: dict[str, str]) -> dict[str, str]:
    """The controller's env as the kubelet would build it, secretKeyRefs resolved."""
    env: dict[str, str] = {}
    for item in rendered.controller()["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secret_data[ref["key"]]
    return env


def comparable(value: Any) -> Any:
    """A setting's value in the form it was written in values.yaml."""
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "value"):  # enums
        return value.value
    return value


def test_values_cover_every_config_key_except_secrets() -> None:
    keys = flat_keys(chart_defaults()["config"])
    assert keys == set(ENV_VARS) - set(SECRET_KEYS)
    assert set(SECRET_KEYS) == set(SECRET_VALUES)


def test_values_mirror_config_example_key_for_key() -> None:
    example_path = ROOT / "config.example.yml"
    example = yaml.safe_load(example_path.read_text(encoding="utf-8"))
    values = chart_defaults()["config"]
    assert flat_keys(values) == flat_keys(example) - set(SECRET_KEYS)
    assert list(values) == list(example)  # same section order, easy to compare by eye


def test_values_defaults_are_the_reconcilers_defaults() -> None:
    defaults = Settings()
    for section, body in chart_defaults()["config"].items():
        for key, value in body.items():
            expected = comparable(defaults.get(f"{section}.{key}"))
            if expected is None:
                assert value == "", f"{section}.{key}: empty means 'not set'"
            else:
                assert value == expected, f"{section}.{key}"


def test_every_key_reaches_the_reconciler(render: ChartRenderer, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    config = every_key_changed(ca_file)
    rendered = render(
        {
            "config": config,
            "secrets": {"openctiToken": TOKEN, "clientSecret": CLIENT_SECRET},
        }
    )
    # What the pod sees: config.yml at RECONCILER_CONFIG, the env from the Secret.
    env = pod_env(rendered, rendered.secret_data())
    assert env["RECONCILER_CONFIG"] == CONFIG_PATH
    config_file = tmp_path / "config.yml"
    config_file.write_text(rendered.one("ConfigMap")["data"]["config.yml"], encoding="utf-8")
    settings = load_settings(config_file, env=env)

    seen = set()
    for section, body in config.items():
        for key, value in body.items():
            assert comparable(settings.get(f"{section}.{key}")) == value, f"{section}.{key}"
            seen.add(f"{section}.{key}")
    for dotted, (_, _, secret) in SECRET_VALUES.items():
        assert comparable(settings.get(dotted)) == secret
        seen.add(dotted)
    assert seen == set(ENV_VARS)


def test_secrets_never_land_in_the_config_map(render: ChartRenderer) -> None:
    rendered = render({"secrets": {"openctiToken": TOKEN, "clientSecret": CLIENT_SECRET}})
    config_map = yaml.safe_dump(rendered.one("ConfigMap"))
    assert TOKEN not in config_map and CLIENT_SECRET not in config_map
    document = rendered.config_yml()
    assert "token" not in document["opencti"]
    assert "client_secret" not in document["microsoft_defender_intel"]
    # Nor anywhere else in clear text: only the Secret carries them, base64-encoded.
    for manifest in rendered.manifests:
        text = yaml.safe_dump(manifest)
        assert TOKEN not in text and CLIENT_SECRET not in text, manifest["kind"]
    assert rendered.secret_data() == {
        "OPENCTI_TOKEN": TOKEN,
        "MICROSOFT_DEFENDER_INTEL_CLIENT_SECRET": CLIENT_SECRET,
    }


def test_secret_env_points_at_the_charts_secret(render: ChartRenderer) -> None:
    rendered = render()
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in rendered.controller()["env"]
        if "valueFrom" in e
    }
    secret_name = rendered.one("Secret")["metadata"]["name"]
    assert refs == {
        "OPENCTI_TOKEN": {"name": secret_name, "key": "OPENCTI_TOKEN"},
        "MICROSOFT_DEFENDER_INTEL_CLIENT_SECRET": {
            "name": secret_name,
            "key": "MICROSOFT_DEFENDER_INTEL_CLIENT_SECRET",
        },
    }


def test_existing_secret_replaces_the_charts_secret(render: ChartRenderer) -> None:
    rendered = render(
        {
            "existingSecret": "vault-synced",
            "existingSecretKeys": {"openctiToken": "token", "clientSecret": "azure-secret"},
            "secrets": {"openctiToken": TOKEN, "clientSecret": CLIENT_SECRET},  # ignored
        }
    )
    assert not rendered.has("Secret")
    for manifest in rendered.manifests:
        text = yaml.safe_dump(manifest)
        assert TOKEN not in text and CLIENT_SECRET not in text
    expected = {
        "OPENCTI_TOKEN": {"name": "vault-synced", "key": "token"},
        "MICROSOFT_DEFENDER_INTEL_CLIENT_SECRET": {"name": "vault-synced", "key": "azure-secret"},
    }
    controller_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in rendered.controller()["env"]
        if "valueFrom" in e
    }
    assert controller_refs == expected


def test_existing_secret_also_feeds_the_plan_job(render: ChartRenderer) -> None:
    rendered = render(VALUE_SETS["all-enabled"])
    [container] = rendered.one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"
    ]
    names = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert names == {"reconciler-credentials"}


def test_ca_bundle_is_mounted_and_configured(render: ChartRenderer) -> None:
    for source, volume in (
        ({"existingConfigMap": "corporate-ca"}, {"configMap": {"name": "corporate-ca"}}),
        ({"existingSecret": "corporate-ca"}, {"secret": {"secretName": "corporate-ca"}}),
    ):
        rendered = render({"caBundle": {**source, "key": "ca.pem"}})
        assert rendered.config_yml()["microsoft_defender_intel"]["ca_bundle"] == (
            "/etc/reconciler/ca/ca.pem"
        )
        pod = rendered.one("Deployment")["spec"]["template"]["spec"]
        [ca_volume] = [v for v in pod["volumes"] if v["name"] == "ca-bundle"]
        [(kind, body)] = [(k, v) for k, v in ca_volume.items() if k != "name"]
        assert {kind: {k: body[k] for k in volume[kind]}} == volume
        assert body["items"] == [{"key": "ca.pem", "path": "ca.pem"}]
        mounts = {m["name"]: m for m in rendered.controller()["volumeMounts"]}
        assert mounts["ca-bundle"] == {
            "name": "ca-bundle",
            "mountPath": "/etc/reconciler/ca",
            "readOnly": True,
        }
        # Siblings, never nested: a mount point cannot be created inside a ConfigMap volume.
        assert mounts["config"]["mountPath"] == "/etc/reconciler/config"


def test_no_ca_bundle_by_default(render: ChartRenderer) -> None:
    rendered = render()
    assert rendered.config_yml()["microsoft_defender_intel"]["ca_bundle"] == ""
    assert "ca-bundle" not in {v["name"] for v in rendered.controller()["volumeMounts"]}


@pytest.mark.parametrize(
    ("state_path", "claim", "mount", "volume"),
    [
        ("", "", None, None),
        ("/var/lib/reconciler/state.json", "", "/var/lib/reconciler", "emptyDir"),
        ("/data/state.json", "reconciler-state", "/data", "persistentVolumeClaim"),
        ("/tmp/state.json", "", None, None),  # /tmp is writable already
    ],
    ids=["unset", "emptydir", "claim", "under-tmp"],
)
def test_state_directory_is_writable(
    render: ChartRenderer, state_path: str, claim: str, mount: str | None, volume: str | None
) -> None:
    rendered = render(
        {"config": {"reconciler": {"state_path": state_path}}, "state": {"existingClaim": claim}}
    )
    mounts = {m["name"]: m["mountPath"] for m in rendered.controller()["volumeMounts"]}
    volumes = {
        v["name"]: v for v in rendered.one("Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    assert mounts.get("state") == mount
    if volume is None:
        assert "state" not in volumes
    else:
        assert volume in volumes["state"]
        if claim:
            assert volumes["state"][volume] == {"claimName": claim}


def test_config_change_rolls_the_pod(render: ChartRenderer) -> None:
    base = render().pod_annotations()
    changed = render({"config": {"reconciler": {"dry_run": True}}}).pod_annotations()
    assert changed["checksum/config"] != base["checksum/config"]
    assert changed["checksum/secret"] == base["checksum/secret"]
    # Stable: the same values give the same checksums (no needless restarts).
    assert render().pod_annotations() == base


def test_secret_change_rolls_the_pod(render: ChartRenderer) -> None:
    base = render({"secrets": {"openctiToken": "a"}}).pod_annotations()
    changed = render({"secrets": {"openctiToken": "b"}}).pod_annotations()
    assert changed["checksum/secret"] != base["checksum/secret"]
    assert changed["checksum/config"] == base["checksum/config"]
    # existingSecret: the chart cannot see its content, but pointing elsewhere rolls the pod.
    one = render({"existingSecret": "one"}).pod_annotations()
    two = render({"existingSecret": "two"}).pod_annotations()
    assert one["checksum/secret"] != two["checksum/secret"]


def test_checksums_hash_the_rendered_objects(render: ChartRenderer) -> None:
    # The config checksum must follow the ConfigMap, not just some of the values.
    a = render({"caBundle": {"existingConfigMap": "ca-one"}}).pod_annotations()
    b = render({"caBundle": {"existingConfigMap": "ca-two"}}).pod_annotations()
    c = render({"caBundle": {"existingConfigMap": "ca-one", "key": "other.pem"}})
    assert a["checksum/config"] == b["checksum/config"]  # same config.yml content
    assert c.pod_annotations()["checksum/config"] != a["checksum/config"]  # ca_bundle path moved


def test_extra_env_is_appended_after_the_chart_env(render: ChartRenderer) -> None:
    extra = [{"name": "RECONCILER_DRY_RUN", "value": "true"}]
    env = render({"extraEnv": extra}).controller()["env"]
    assert env[-1] == extra[0]
    assert [e["name"] for e in env[:3]] == [
        "RECONCILER_CONFIG",
        "OPENCTI_TOKEN",
        "MICROSOFT_DEFENDER_INTEL_CLIENT_SECRET",
    ]


def test_config_file_loads_with_defaults_plus_required(
    render: ChartRenderer, tmp_path: Path
) -> None:
    # The everything-enabled set (with its state path and CA bundle path) yields a config.yml
    # the reconciler accepts once the CA file exists where the chart mounts it.
    values = merge(VALUE_SETS["all-enabled"], {"caBundle": {"existingConfigMap": ""}})
    rendered = render(values)
    config_file = tmp_path / "config.yml"
    config_file.write_text(rendered.one("ConfigMap")["data"]["config.yml"], encoding="utf-8")
    env = {"OPENCTI_TOKEN": TOKEN, "MICROSOFT_DEFENDER_INTEL_CLIENT_SECRET": CLIENT_SECRET}
    settings = load_settings(config_file, env=env)
    assert settings.get("opencti.url") == "https://opencti.example.org"
    assert str(settings.get("reconciler.state_path")) == "/var/lib/reconciler/stream-state.json"
    assert rendered.one("Deployment")["metadata"]["name"] == FULLNAME
