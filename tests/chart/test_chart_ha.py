"""The chart's high availability and tenants: replicas > 1 turn leader election on (RollingUpdate,
a Role for the Lease, a PodDisruptionBudget, anti-affinity, the token mounted), each tenant is
a Deployment of its own whose settings reach the reconciler, and the values refuse a tenant
without a name or with a duplicate name. (Strict validation of these manifests against every
Kubernetes version runs in test_chart_render over the "ha" and "tenants" value sets.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.config import load_settings
from tests.chart.support import (
    FULLNAME,
    HA,
    NAMESPACE,
    TENANT_NAMES,
    TENANTS,
    ChartRenderer,
    helm,
    tenant,
)

ELECTION_ENV = {
    "RECONCILER_LEADER_ELECTION": "true",
    "RECONCILER_LEASE_NAME": FULLNAME,
    "RECONCILER_LEASE_NAMESPACE": NAMESPACE,
}


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return dict(deployment["spec"]["template"]["spec"])


def test_one_replica_keeps_a_single_writer_without_kubernetes_access(
    render: ChartRenderer,
) -> None:
    rendered = render()
    deployment = rendered.one("Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not {"Role", "RoleBinding", "PodDisruptionBudget"} & {
        m["kind"] for m in rendered.manifests
    }
    assert pod_spec(deployment)["automountServiceAccountToken"] is False
    assert "affinity" not in pod_spec(deployment)
    assert not ELECTION_ENV.keys() & rendered.env().keys()


def test_three_replicas_run_leader_election(render: ChartRenderer) -> None:
    rendered = render(HA)
    deployment = rendered.one("Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert pod_spec(deployment)["automountServiceAccountToken"] is True
    assert ELECTION_ENV.items() <= rendered.env().items()
    assert "RECONCILER_TENANT" not in rendered.env()


def test_the_role_grants_the_lease_and_nothing_else(render: ChartRenderer) -> None:
    rendered = render(HA)
    role, binding = rendered.one("Role"), rendered.one("RoleBinding")
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [FULLNAME],
            "verbs": ["get", "update"],
        },
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = rendered.one("ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    assert pod_spec(rendered.one("Deployment"))["serviceAccountName"] == account
    assert not render({**HA, "rbac": {"create": False}}).has("Role")


def test_disruption_budget_and_anti_affinity_keep_a_follower(render: ChartRenderer) -> None:
    rendered = render(HA)
    deployment = rendered.one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    budget = rendered.one("PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"] == deployment["spec"]["selector"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    [term] = pod_spec(deployment)["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["weight"] == 100
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"] == deployment["spec"]["selector"]

    hard = pod_spec(render({**HA, "podAntiAffinity": "hard"}).one("Deployment"))["affinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in hard["podAntiAffinity"]
    assert "affinity" not in pod_spec(render({**HA, "podAntiAffinity": "none"}).one("Deployment"))
    own = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    mine = pod_spec(render({**HA, "affinity": own}).one("Deployment"))["affinity"]
    assert mine == own  # the values' own anti-affinity wins


def test_leader_election_with_one_replica_rolls_without_a_budget(render: ChartRenderer) -> None:
    rendered = render({"config": {"reconciler": {"leader_election": True}}})
    assert rendered.one("Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"
    assert rendered.has("Role") and not rendered.has("PodDisruptionBudget")
    assert rendered.env()["RECONCILER_LEASE_NAME"] == FULLNAME


def test_a_configured_lease_name_is_used_and_granted(render: ChartRenderer) -> None:
    rendered = render({**HA, "config": {"reconciler": {"lease_name": "my-lease"}}})
    assert "RECONCILER_LEASE_NAME" not in rendered.env()  # config.yml carries it
    assert rendered.config_yml()["reconciler"]["lease_name"] == "my-lease"
    assert rendered.one("Role")["rules"][1]["resourceNames"] == ["my-lease"]


def test_notes_say_who_writes(render: ChartRenderer) -> None:
    assert "Recreate: never more than one writer" in render().notes
    notes = render(TENANTS).notes
    for name in TENANT_NAMES:
        assert f"deploy/{FULLNAME}-{name} (tenant {name})" in notes
    assert "leader election on Lease" in notes and '"following"' in notes


# -- tenants -----------------------------------------------------------------------------------


def by_tenant(rendered: Any, kind: str) -> dict[str, dict[str, Any]]:
    """The tenants' objects of ``kind`` by tenant name (their tenant label)."""
    return {
        m["metadata"]["labels"]["opencti-defender-reconciler/tenant"]: m for m in rendered.all(kind)
    }


def test_each_tenant_is_a_workload_of_its_own(render: ChartRenderer) -> None:
    rendered = render(TENANTS)
    deployments = by_tenant(rendered, "Deployment")
    assert sorted(deployments) == sorted(TENANT_NAMES)
    selectors = [d["spec"]["selector"]["matchLabels"] for d in deployments.values()]
    for name, deployment in deployments.items():
        assert deployment["metadata"]["name"] == f"{FULLNAME}-{name}"
        assert selectors.count(deployment["spec"]["selector"]["matchLabels"]) == 1
        env = rendered.env(deployment)
        assert env["RECONCILER_TENANT"] == name
        assert env["MICROSOFT_DEFENDER_INTEL_TENANT_ID"] == f"{name}-tenant-id"
        assert env["MICROSOFT_DEFENDER_INTEL_CLIENT_ID"] == f"{name}-client-id"
        assert env["CONNECTOR_ID"] == f"{name}-connector-id"
        assert env["MICROSOFT_DEFENDER_INTEL_CLIENT_SECRET"] == {
            "name": f"{name}-defender",
            "key": "client-secret",
        }
        assert env["RECONCILER_LEASE_NAME"] == f"{FULLNAME}-{name}"
    assert deployments["contoso"]["spec"]["replicas"] == 2
    assert deployments["tailspin"]["spec"]["replicas"] == 3
    budgets = rendered.all("PodDisruptionBudget")
    assert sorted(b["metadata"]["name"] for b in budgets) == [
        f"{FULLNAME}-{n}" for n in sorted(TENANT_NAMES)
    ]
    [role] = rendered.all("Role")
    assert role["rules"][1]["resourceNames"] == [f"{FULLNAME}-{n}" for n in TENANT_NAMES]
    # One metrics Service in front of every tenant's pods (each sample says its tenant).
    selector = rendered.one("Service")["spec"]["selector"]
    for deployment in deployments.values():
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_a_tenants_settings_reach_the_reconciler(render: ChartRenderer, tmp_path: Path) -> None:
    rendered = render(TENANTS)
    deployment = by_tenant(rendered, "Deployment")["tailspin"]
    config_file = tmp_path / "config.yml"
    config_file.write_text(rendered.one("ConfigMap")["data"]["config.yml"], encoding="utf-8")
    env = {
        k: v if isinstance(v, str) else f"secret:{v['name']}/{v['key']}"
        for k, v in rendered.env(deployment).items()
    }
    env["OPENCTI_TOKEN"] = "token"
    settings = load_settings(config_file, env=env, require=False)
    assert settings.get("reconciler.tenant") == "tailspin"
    assert settings.get("microsoft_defender_intel.client_id") == "tailspin-client-id"
    assert settings.get("connector.live_stream_id") == "stream-tailspin"
    assert settings.get("microsoft_defender_intel.ownership_tag") == "opencti-tailspin"
    assert settings.get("reconciler.quota") == 5000
    assert settings.get("reconciler.dry_run") is True  # the tenant's own extraEnv
    assert settings.get("reconciler.leader_election") is True
    assert settings.get("reconciler.lease_name") == f"{FULLNAME}-tailspin"
    assert settings.get("policy.on_revoke") == "audit"
    assert settings.get("policy.skip_label") == "no-defender"
    assert [rule["name"] for rule in settings.get("policy.rules")] == ["partners-alert"]
    assert tuple(settings.get("policy.known_rbac_groups")) == ("Servers", "Workstations")
    contoso = by_tenant(rendered, "Deployment")["contoso"]
    assert not [k for k in rendered.env(contoso) if k.startswith("POLICY_")]  # shared policy
    secret = settings.get("microsoft_defender_intel.client_secret").get_secret_value()
    assert secret == "secret:tailspin-defender/client-secret"


def test_a_single_replica_tenant_needs_no_lease(render: ChartRenderer) -> None:
    rendered = render({"tenants": [tenant("solo")]})
    deployment = rendered.one("Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not rendered.has("Role") and not rendered.has("PodDisruptionBudget")
    assert rendered.env()["RECONCILER_TENANT"] == "solo"


BAD_TENANTS: list[tuple[str, list[dict[str, Any]], str]] = [
    ("no-name", [{k: v for k, v in tenant("x").items() if k != "name"}], "name"),
    ("empty-name", [tenant("")], "name"),
    ("name-not-a-dns-label", [tenant("Contoso_EU")], "name"),
    ("same-entry-twice", [tenant("contoso"), tenant("contoso")], "tenants"),
    ("no-client-secret", [{**tenant("x"), "clientSecret": None}], "clientSecret"),
    (
        "no-connector-id",
        [{k: v for k, v in tenant("x").items() if k != "connectorId"}],
        "connector",
    ),
    ("unknown-key", [{**tenant("x"), "tenant_id": "t"}], "tenant_id"),
    ("policy-value", [{**tenant("x"), "policy": {"on_revoke": "keep"}}], "on_revoke"),
]


@pytest.mark.parametrize(
    ("tenants", "named"), [(t, n) for _, t, n in BAD_TENANTS], ids=[i for i, _, _ in BAD_TENANTS]
)
def test_the_schema_refuses_a_bad_tenant(
    render: ChartRenderer, tenants: list[dict[str, Any]], named: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        render({"tenants": tenants})
    assert named in str(caught.value)


def test_a_duplicate_tenant_name_is_refused(render: ChartRenderer) -> None:
    # Same name, different settings: JSON Schema cannot compare list items by one key, so the
    # chart refuses it while rendering (helm install, upgrade and template fail, naming it).
    twins = [tenant("contoso"), tenant("contoso", clientId="other-client")]
    with pytest.raises(helm.HelmError) as caught:
        render({"tenants": twins})
    assert 'duplicate tenant name "contoso"' in str(caught.value)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"replicaCount": 0}, "replicaCount"),
        ({"podAntiAffinity": "maybe"}, "podAntiAffinity"),
        ({"podDisruptionBudget": {"maxUnavailable": 0}}, "maxUnavailable"),
        ({"config": {"reconciler": {"lease_namespace": "Not A Namespace"}}}, "lease_namespace"),
    ],
    ids=["no-replicas", "anti-affinity-word", "budget-zero", "lease-namespace"],
)
def test_the_schema_refuses_bad_ha_values(
    render: ChartRenderer, values: dict[str, Any], named: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        render(values)
    assert named in str(caught.value)


def test_each_tenant_keeps_its_own_stream_position_file(render: ChartRenderer) -> None:
    values = {**TENANTS, "config": {"reconciler": {"state_path": "/data/state.json"}}}
    rendered = render(values)
    paths = {
        name: rendered.env(deployment)["RECONCILER_STATE_PATH"]
        for name, deployment in by_tenant(rendered, "Deployment").items()
    }
    assert paths == {name: f"/data/{name}-state.json" for name in TENANT_NAMES}
    assert "RECONCILER_STATE_PATH" not in render({"config": values["config"]}).env()
