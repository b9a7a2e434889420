"""wiring: the one place that reads Settings builds typed policies and working adapters."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler import wiring
from reconciler.clock import FakeClock
from reconciler.config import load_settings
from reconciler.errors import ConfigError
from reconciler.mapping import MappingPolicy
from reconciler.model import Action, Ownership
from reconciler.plan import PlanPolicy
from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.opencti import OpenCTIEmulator
from tests.e2e.support import settings_for


def settings(**overrides: Any) -> Any:
    return load_settings(None, env={}, overrides=overrides, require=False)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param({}, MappingPolicy(), id="defaults"),
        pytest.param(
            {
                "microsoft_defender_intel.ownership_tag": "tag",
                "microsoft_defender_intel.expire_time": "7",
                "microsoft_defender_intel.action": "block",
                "microsoft_defender_intel.passive_only": True,
                "microsoft_defender_intel.rbac_group_names": "b, a,,a",
                "microsoft_defender_intel.recommended_actions": "call SOC",
                "microsoft_defender_intel.generate_alert": False,
                "microsoft_defender_intel.educate_url": "https://x.example/",
            },
            MappingPolicy(
                ownership_tag="tag",
                expire_days=7,
                action=Action.BLOCK,
                passive_only=True,
                rbac_group_names=("a", "b"),
                recommended_actions="call SOC",
                generate_alert=False,
                educate_url="https://x.example",
            ),
            id="all-set",
        ),
        pytest.param(
            {"microsoft_defender_intel.rbac_group_names": ["x"]},
            MappingPolicy(rbac_group_names=("x",)),
            id="yaml-list",
        ),
    ],
)
def test_mapping_policy(overrides: dict[str, Any], expected: MappingPolicy) -> None:
    assert wiring.mapping_policy(settings(**overrides)) == expected


def test_plan_policy_and_ownership() -> None:
    s = settings(
        **{
            "reconciler.quota": 900,
            "reconciler.max_deletes": 5,
            "reconciler.max_delete_ratio": 0.25,
            "reconciler.ignore_fields": "title, description",
            "microsoft_defender_intel.ownership_tag": "octi-prod",
            "microsoft_defender_intel.adopt_tags": "OpenCTI Microsoft Defender Intel",
        }
    )
    assert wiring.plan_policy(s) == PlanPolicy(
        quota=900, max_deletes=5, max_delete_ratio=0.25, ignore_fields=("title", "description")
    )
    assert wiring.ownership(s) == Ownership("octi-prod", ("OpenCTI Microsoft Defender Intel",))
    assert wiring.plan_policy(settings()) == PlanPolicy()
    assert wiring.ownership(settings()) == Ownership()


def test_defaults_are_defined_once() -> None:
    """The policies' own defaults are the settings' defaults."""
    s = settings()
    assert wiring.mapping_policy(s) == MappingPolicy()
    assert wiring.plan_policy(s) == PlanPolicy()
    assert wiring.ownership(s) == Ownership()


def test_defender_client_works_and_reports_tokens_and_calls() -> None:
    with DefenderEmulator() as defender, OpenCTIEmulator() as opencti:
        s = settings_for(defender, opencti)
        tokens: list[str] = []
        calls: list[tuple[str, int | None]] = []
        clock = FakeClock()
        with wiring.defender_client(
            s, clock=clock, on_token=tokens.append, on_call=lambda e, st: calls.append((e, st))
        ) as client:
            assert client.list_indicators() == []
            client.probe_token()
        assert len(tokens) == 1
        assert calls == [("list", 200)]
        source = wiring.opencti_source(s)
        assert source.stream_filters() is None
        assert opencti.token not in repr(source)


def test_missing_credentials_are_named_with_their_env_var() -> None:
    s = settings(**{"microsoft_defender_intel.tenant_id": "t"})
    with pytest.raises(ConfigError, match=r"client_id \(MICROSOFT_DEFENDER_INTEL_CLIENT_ID\)"):
        wiring.defender_client(s)
    with pytest.raises(ConfigError, match=r"opencti\.url \(OPENCTI_URL\)"):
        wiring.opencti_source(s)
