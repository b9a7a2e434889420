"""Helpers for the Helm chart tests: a renderer returning parsed manifests, the value sets CI
renders (defaults and everything enabled), and strict manifest validation.

Rendering goes through helm-python-sdk (Helm's Go SDK as a shared library: no helm binary,
no cluster, no network); manifests are checked with kubernetes-validate's bundled schemas.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

__all__ = [
    "ALL_ENABLED",
    "CHART_DIR",
    "FULLNAME",
    "HA",
    "KUBE_VERSIONS",
    "NAMESPACE",
    "RELEASE",
    "ROOT",
    "TENANTS",
    "TENANT_NAMES",
    "VALUE_SETS",
    "ChartRenderer",
    "Rendered",
    "helm",
    "kubernetes_validate",
    "merge",
    "tenant",
    "validate_strict",
]

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "opencti-defender-reconciler"
RELEASE = "rel"
NAMESPACE = "reconciler"
FULLNAME = f"{RELEASE}-opencti-defender-reconciler"

#: Kubernetes versions every manifest is validated against (strict): the oldest the chart's
#: kubeVersion admits, a middle one, and the newest kubernetes-validate ships.
KUBE_VERSIONS = ("1.27.0", "1.31.0", "1.37.0")

#: Every optional feature switched on at once.
ALL_ENABLED: dict[str, Any] = {
    "config": {
        "opencti": {"url": "https://opencti.example.org"},
        "connector": {
            "id": "8a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d",
            "live_stream_id": "live-stream-1",
        },
        "microsoft_defender_intel": {"tenant_id": "tenant-1", "client_id": "client-1"},
        "reconciler": {"state_path": "/var/lib/reconciler/stream-state.json"},
    },
    "existingSecret": "reconciler-credentials",
    "caBundle": {"existingConfigMap": "corporate-ca", "key": "ca.pem"},
    "state": {"existingClaim": "reconciler-state"},
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
    "networkPolicy": {
        "enabled": True,
        "metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
        "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 4000}]}],
    },
    "cronJob": {"enabled": True, "timeZone": "Etc/UTC"},
    "imagePullSecrets": [{"name": "registry-credentials"}],
    "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.example.org:3128"}],
    "podAnnotations": {"example.org/team": "secops"},
    "podLabels": {"example.org/tier": "security"},
    "serviceAccount": {"annotations": {"example.org/owner": "secops"}},
    "service": {"annotations": {"example.org/scrape": "true"}},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
                        ]
                    }
                ]
            }
        }
    },
    "priorityClassName": "security-critical",
}

#: Three replicas: leader election, RollingUpdate, Role, PodDisruptionBudget, anti-affinity.
HA: dict[str, Any] = {"replicaCount": 3}

TENANT_NAMES = ("contoso", "fabrikam", "tailspin")


def tenant(name: str, **extra: Any) -> dict[str, Any]:
    """One entry of ``tenants`` with every required field."""
    return {
        "name": name,
        "tenantId": f"{name}-tenant-id",
        "clientId": f"{name}-client-id",
        "clientSecret": {"name": f"{name}-defender", "key": "client-secret"},
        "connectorId": f"{name}-connector-id",
        **extra,
    }


#: Three tenants on one OpenCTI, two replicas each (the last one with its own settings).
TENANTS: dict[str, Any] = {
    "replicaCount": 2,
    "tenants": [
        tenant("contoso"),
        tenant("fabrikam"),
        tenant(
            "tailspin",
            liveStreamId="stream-tailspin",
            ownershipTag="opencti-tailspin",
            quota=5000,
            replicaCount=3,
            policy={
                "on_revoke": "audit",
                "skip_label": "no-defender",
                "rules": [
                    {"name": "partners-alert", "match": {"score_max": 79}, "action": "Alert"}
                ],
                "known_rbac_groups": ["Servers", "Workstations"],
            },
            extraEnv=[{"name": "RECONCILER_DRY_RUN", "value": "true"}],
        ),
    ],
}

#: The value sets CI renders and validates.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "all-enabled": ALL_ENABLED,
    "ha": HA,
    "tenants": TENANTS,
    "ha-all-enabled": {**ALL_ENABLED, **TENANTS},
}


@dataclass(frozen=True)
class Rendered:
    """One render of the chart: parsed manifests in template order, plus NOTES.txt."""

    manifests: list[dict[str, Any]]
    notes: str

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]

    def has(self, kind: str) -> bool:
        return bool(self.all(kind))

    def config_yml(self) -> dict[str, Any]:
        """The config.yml document carried by the ConfigMap."""
        text = self.one("ConfigMap")["data"]["config.yml"]
        document = yaml.safe_load(text)
        assert isinstance(document, dict)
        return document

    def controller(self, deployment: dict[str, Any] | None = None) -> dict[str, Any]:
        """The (only, or given) Deployment's single container."""
        deployment = deployment or self.one("Deployment")
        containers = deployment["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        return dict(containers[0])

    def env(self, deployment: dict[str, Any] | None = None) -> dict[str, Any]:
        """The controller's env by name: a value, or the secretKeyRef."""
        return {
            e["name"]: e.get("value", e.get("valueFrom", {}).get("secretKeyRef"))
            for e in self.controller(deployment)["env"]
        }

    def pod_annotations(self) -> dict[str, str]:
        return dict(self.one("Deployment")["spec"]["template"]["metadata"]["annotations"])

    def secret_data(self) -> dict[str, str]:
        """The chart's own Secret, decoded."""
        data = self.one("Secret").get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``extra`` over a copy of ``base`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class ChartRenderer:
    """Renders the chart offline with given values, as an install into NAMESPACE."""

    def __init__(self, chart: Any) -> None:
        self.chart = chart

    def __call__(self, values: dict[str, Any] | None = None) -> Rendered:
        output = self.chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
        manifests: list[dict[str, Any]] = []
        notes = ""
        for name in sorted(output):
            if name.endswith("NOTES.txt"):
                notes = output[name]
                continue
            manifests += [doc for doc in yaml.safe_load_all(output[name]) if doc]
        return Rendered(manifests=manifests, notes=notes)


def validate_strict(manifest: dict[str, Any], version: str) -> None:
    """Validate one manifest against Kubernetes ``version``'s schema, rejecting unknown fields."""
    kubernetes_validate.validate(manifest, version, strict=True)
