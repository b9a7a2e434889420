"""The chart lints clean, renders for every value set CI uses, every manifest validates strictly
against each Kubernetes version the chart claims, and the Deployment keeps its safety shape."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.support import (
    CHART_DIR,
    FULLNAME,
    KUBE_VERSIONS,
    NAMESPACE,
    VALUE_SETS,
    ChartRenderer,
    helm,
    kubernetes_validate,
    validate_strict,
)

# Kinds whose schema is not Kubernetes' own (CRDs); checked by hand below.
CRD_KINDS = {"ServiceMonitor"}
WARNING = 2  # helm lint severities: 1 info, 2 warning, 3 error


@pytest.mark.parametrize("value_set", list(VALUE_SETS), ids=list(VALUE_SETS))
def test_lint_is_clean_in_strict_mode(value_set: str) -> None:
    for version in KUBE_VERSIONS:
        report = helm.lint(
            str(CHART_DIR), VALUE_SETS[value_set], strict=True, kube_version=f"v{version}"
        )
        problems = [m for m in report["messages"] if m["severity"] >= WARNING]
        assert report["errors"] == [] and problems == [], report


def test_lint_reports_a_bad_value() -> None:
    report = helm.lint(str(CHART_DIR), {"config": {"microsoft_defender_intel": {"action": "Blok"}}})
    errors = [m for m in report["messages"] if m["severity"] > WARNING]
    assert errors, report
    assert any("action" in m["error"] for m in errors)


def test_chart_claims_the_versions_it_is_validated_against(chart: Any) -> None:
    # helm's own check of kubeVersion happens at install time against the live cluster; here
    # the claim and the validated versions must agree: the oldest validated is the floor.
    assert chart.metadata["kubeVersion"] == ">=1.27.0-0"
    versions = sorted(tuple(int(part) for part in v.split(".")) for v in KUBE_VERSIONS)
    assert versions[0] == (1, 27, 0)
    # validate() silently falls back to an older schema for an unshipped version: refuse that.
    assert set(KUBE_VERSIONS) <= set(_shipped_versions())


def _shipped_versions() -> list[str]:
    from kubernetes_validate.utils import all_versions

    return list(all_versions())


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", list(VALUE_SETS), ids=list(VALUE_SETS))
def test_every_manifest_validates_strictly(
    render: ChartRenderer, value_set: str, version: str
) -> None:
    rendered = render(VALUE_SETS[value_set])
    checked = []
    for manifest in rendered.manifests:
        if manifest["kind"] in CRD_KINDS:
            continue
        validate_strict(manifest, version)
        checked.append(manifest["kind"])
    assert {"Deployment", "ConfigMap", "Service", "ServiceAccount"} <= set(checked)


def test_strict_validation_catches_an_unknown_field(render: ChartRenderer) -> None:
    # Guard for the test above: a misspelled field must fail, or "validates" means nothing.
    deployment = render().one("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_strict(deployment, KUBE_VERSIONS[0])


def test_defaults_render_the_core_objects_only(render: ChartRenderer) -> None:
    kinds = sorted(m["kind"] for m in render().manifests)
    assert kinds == ["ConfigMap", "Deployment", "Secret", "Service", "ServiceAccount"]


def test_all_enabled_renders_every_optional_object(render: ChartRenderer) -> None:
    kinds = sorted(m["kind"] for m in render(VALUE_SETS["all-enabled"]).manifests)
    assert kinds == [
        "ConfigMap",
        "CronJob",
        "Deployment",
        "NetworkPolicy",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]


def test_every_object_is_named_labelled_and_namespaced(render: ChartRenderer) -> None:
    for manifest in render(VALUE_SETS["all-enabled"]).manifests:
        meta = manifest["metadata"]
        assert meta["namespace"] == NAMESPACE
        assert meta["name"].startswith(FULLNAME)
        assert meta["labels"]["app.kubernetes.io/instance"] == "rel"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_deployment_is_a_single_writer(render: ChartRenderer) -> None:
    spec = render().one("Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_controller_runs_the_run_command_with_probes(render: ChartRenderer) -> None:
    container = render().controller()
    assert container["args"] == ["run"]
    assert "command" not in container  # the image's ENTRYPOINT (reconciler) stays
    assert container["ports"] == [{"name": "http", "containerPort": 9095, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_http_port_moves_container_port(render: ChartRenderer) -> None:
    container = render({"config": {"reconciler": {"http_port": 9100}}}).controller()
    assert container["ports"][0]["containerPort"] == 9100


@pytest.mark.parametrize("value_set", list(VALUE_SETS), ids=list(VALUE_SETS))
def test_pods_meet_the_restricted_pod_security_standard(
    render: ChartRenderer, value_set: str
) -> None:
    rendered = render(VALUE_SETS[value_set])
    # The service account token only where leader election needs it (the Lease).
    pods = [
        (d["spec"]["template"]["spec"], d["spec"]["replicas"] > 1)
        for d in rendered.all("Deployment")
    ]
    pods += [
        (c["spec"]["jobTemplate"]["spec"]["template"]["spec"], False)
        for c in rendered.all("CronJob")
    ]
    for pod, elects in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is elects
        assert "hostNetwork" not in pod and "hostPID" not in pod
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["capabilities"] == {"drop": ["ALL"]}
            assert ctx["runAsNonRoot"] is True
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert "/tmp" in mounts  # the only writable place besides the state directory
        volume_kinds = {k for v in pod["volumes"] for k in v if k != "name"}
        assert volume_kinds <= {"configMap", "secret", "emptyDir", "persistentVolumeClaim"}


def test_service_account_mounts_no_token(render: ChartRenderer) -> None:
    rendered = render()
    account = rendered.one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


def test_metrics_service_targets_the_controller_port(render: ChartRenderer) -> None:
    rendered = render()
    service = rendered.one("Service")
    assert service["spec"]["ports"] == [
        {"name": "http-metrics", "port": 9095, "targetPort": "http", "protocol": "TCP"}
    ]
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_service_does_not_select_the_plan_job_pods(render: ChartRenderer) -> None:
    rendered = render(VALUE_SETS["all-enabled"])
    selector = rendered.one("Service")["spec"]["selector"]
    job_pod_labels = rendered.one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert not selector.items() <= job_pod_labels.items()


def test_service_monitor_shape(render: ChartRenderer) -> None:
    # A CRD: kubernetes-validate has no schema for it, so its shape is checked here.
    rendered = render(VALUE_SETS["all-enabled"])
    monitor = rendered.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    spec = monitor["spec"]
    assert set(spec) == {"selector", "namespaceSelector", "endpoints"}
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    service = rendered.one("Service")
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = spec["endpoints"]
    assert endpoint == {
        "port": service["spec"]["ports"][0]["name"],
        "path": "/metrics",
        "interval": "60s",
        "scrapeTimeout": "10s",
    }


def test_network_policy_allows_metrics_in_and_dns_https_out(render: ChartRenderer) -> None:
    rendered = render(VALUE_SETS["all-enabled"])
    policy = rendered.one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    [ingress] = policy["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"] == ALL_ENABLED_NETPOL["metricsFrom"]
    egress_ports = {
        (p["port"], p.get("protocol", "TCP")) for rule in policy["egress"] for p in rule["ports"]
    }
    assert {(53, "UDP"), (53, "TCP"), (443, "TCP"), (8080, "TCP"), (4000, "TCP")} <= egress_ports
    assert policy["egress"][-1]["to"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]


ALL_ENABLED_NETPOL: dict[str, Any] = VALUE_SETS["all-enabled"]["networkPolicy"]


def test_cron_job_runs_a_markdown_plan_on_schedule(render: ChartRenderer) -> None:
    rendered = render(VALUE_SETS["all-enabled"])
    cron = rendered.one("CronJob")["spec"]
    assert cron["schedule"] == "0 6 * * *"
    assert cron["timeZone"] == "Etc/UTC"
    assert cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    assert container["args"] == ["plan", "--output", "markdown"]
    # Same config and secrets as the controller.
    assert container["env"] == rendered.controller()["env"]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/etc/reconciler/config"}


def test_notes_say_how_to_see_the_plan_and_the_metrics(render: ChartRenderer) -> None:
    notes = render(VALUE_SETS["all-enabled"]).notes
    assert f"exec deploy/{FULLNAME} -- reconciler plan" in notes
    assert f"create job --from=cronjob/{FULLNAME}-plan" in notes
    assert f"port-forward svc/{FULLNAME} 9095:9095" in notes
    assert "/metrics" in notes
    assert "WARNING" not in notes  # every required setting is given in all-enabled


def test_notes_warn_about_empty_required_settings(render: ChartRenderer) -> None:
    notes = render().notes
    assert "WARNING" in notes
    for key in ("config.opencti.url", "config.connector.id", "secrets.openctiToken"):
        assert key in notes
