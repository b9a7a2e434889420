"""The planner: one behaviour per test, tables with readable ids."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.errors import ConfigError
from reconciler.model import (
    IndicatorKey,
    IndicatorType,
    Skipped,
    SkipReason,
)
from reconciler.plan import (
    Change,
    ChangeKind,
    Plan,
    PlanPolicy,
    build_plan,
    fingerprint_owned,
    foreign_identity,
)
from tests.plan.factories import as_map, desired, golden_plan, owned

C, U, R, D, E, S = (
    ChangeKind.CREATE,
    ChangeKind.UPDATE,
    ChangeKind.REPLACE,
    ChangeKind.DELETE,
    ChangeKind.EXPIRE,
    ChangeKind.SKIP,
)


def actions(plan: Plan) -> list[tuple[str, str, str | None, str]]:
    return [
        (c.kind.value, c.key.value if c.key else "", c.defender_id, c.reason) for c in plan.changes
    ]


def guard(plan: Plan, name: str) -> Any:
    return next(g for g in plan.guards if g.name == name)


# -- create / unchanged --------------------------------------------------------------------


def test_create_when_not_in_defender() -> None:
    d = desired("203.0.113.45")
    plan = build_plan(as_map(d), [])
    (change,) = plan.changes
    assert change.kind is C
    assert change.key == d.key
    assert change.defender_id is None
    assert change.after == d.to_body()
    assert change.before is None
    assert change.reason == "not_in_defender"
    assert change.opencti_ids == ("indicator--203.0.113.45",)


def test_equal_indicator_is_unchanged_and_plan_empty() -> None:
    d = desired()
    plan = build_plan(as_map(d), [owned("1", d)])
    assert plan.changes == ()
    assert plan.unchanged == 1
    assert plan.is_empty
    assert plan.summary == {
        "create": 0,
        "update": 0,
        "replace": 0,
        "delete": 0,
        "expire": 0,
        "skip": 0,
        "unchanged": 1,
    }


def test_skips_alone_keep_plan_empty() -> None:
    s = Skipped(opencti_id="x", reason=SkipReason.INVALID_VALUE, detail="bad")
    plan = build_plan({}, [], skipped=[s])
    assert plan.summary["skip"] == 1
    assert plan.is_empty


def test_accepts_an_iterable_of_desired() -> None:
    d = desired()
    assert build_plan([d], []).changes == build_plan(as_map(d), []).changes


# -- update per managed field --------------------------------------------------------------

# (field, desired override, owned wire override)
FIELD_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("severity", {"severity": "High"}, {"severity": "Low"}),
    ("title", {"title": "new"}, {"title": "old"}),
    ("description", {"description": "new"}, {"description": "old"}),
    (
        "expirationTime",
        {"expiration_time": "2026-04-01T00:00:00Z"},
        {"expirationTime": "2026-03-01T00:00:00Z"},
    ),
    ("expirationTime", {"expiration_time": None}, {"expirationTime": "2026-03-01T00:00:00Z"}),
    ("rbacGroupNames", {"rbac_group_names": ("SOC", "IR")}, {"rbacGroupNames": ["SOC"]}),
    ("recommendedActions", {"recommended_actions": "isolate"}, {}),
    ("generateAlert", {"generate_alert": False}, {"generateAlert": True}),
    ("educateUrl", {"educate_url": "https://intranet.example/why"}, {}),
    ("externalId", {"external_id": "indicator--new"}, {"externalId": "indicator--old"}),
]


@pytest.mark.parametrize(
    ("field", "want", "have"),
    FIELD_CASES,
    ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(FIELD_CASES)],
)
def test_update_on_each_managed_field(
    field: str, want: dict[str, Any], have: dict[str, Any]
) -> None:
    d = desired(**want)
    plan = build_plan(as_map(d), [owned("5", desired(), **have)])
    (change,) = plan.changes
    assert change.kind is U
    assert change.fields == (field,)
    assert change.defender_id == "5"
    assert change.reason == "fields_changed"
    assert change.after == d.to_body()
    assert change.before is not None
    assert change.before["indicatorValue"] == d.indicator_value
    assert "id" not in change.before
    assert "lastUpdateTime" not in change.before


def test_rbac_group_order_is_not_a_change() -> None:
    d = desired(rbac_group_names=("b", "a"))
    plan = build_plan(as_map(d), [owned("1", d, rbacGroupNames=["a", "b"])])
    assert plan.changes == ()


def test_server_fields_are_not_a_change() -> None:
    d = desired()
    other = owned("1", d, lastUpdateTime="2030-01-01T00:00:00Z", createdBy="someone", version=9)
    assert build_plan(as_map(d), [other]).is_empty


def test_several_fields_listed_in_managed_order() -> None:
    d = desired(title="new", severity="High")
    plan = build_plan(as_map(d), [owned("1", desired(), title="old", severity="Low")])
    assert plan.changes[0].fields == ("severity", "title")


# -- ignore_fields -------------------------------------------------------------------------


def test_ignore_fields_suppresses_update() -> None:
    d = desired(rbac_group_names=("SOC",))
    have = owned("1", d, rbacGroupNames=["Tier2"])
    plan = build_plan(as_map(d), [have], policy=PlanPolicy(ignore_fields=("rbacGroupNames",)))
    assert plan.is_empty
    assert plan.unchanged == 1


def test_ignored_field_keeps_owned_value_when_another_field_updates() -> None:
    d = desired(rbac_group_names=("SOC",), severity="High")
    have = owned("1", d, rbacGroupNames=["Tier2"], severity="Low")
    plan = build_plan(as_map(d), [have], policy=PlanPolicy(ignore_fields=("rbacGroupNames",)))
    (change,) = plan.changes
    assert change.fields == ("severity",)
    assert change.after is not None
    assert change.after["rbacGroupNames"] == ["Tier2"]
    assert change.after["severity"] == "High"


@pytest.mark.parametrize("bad", ["action", "indicatorValue", "nonsense"])
def test_ignore_fields_rejects_identity_and_unknown(bad: str) -> None:
    with pytest.raises(ConfigError, match=bad):
        PlanPolicy(ignore_fields=(bad,))


# -- replace -------------------------------------------------------------------------------


def test_replace_on_action_change() -> None:
    d = desired(action="Block")
    plan = build_plan(as_map(d), [owned("7", d, action="Audit")])
    (change,) = plan.changes
    assert change.kind is R
    assert change.defender_id == "7"
    assert change.reason == "action_changed"
    assert change.fields == ("action",)
    assert change.before is not None and change.before["action"] == "Audit"
    assert change.after == d.to_body()


def test_replace_lists_other_changed_fields_too() -> None:
    d = desired(action="Block", severity="High")
    plan = build_plan(as_map(d), [owned("7", d, action="Audit", severity="Low")])
    assert plan.changes[0].fields == ("action", "severity")


# -- delete / expire -----------------------------------------------------------------------


def test_delete_when_not_in_opencti() -> None:
    gone = owned("3", desired("gone.example", "DomainName"))
    plan = build_plan({}, [gone], policy=PlanPolicy(allow_mass_delete=True))
    (change,) = plan.changes
    assert (change.kind, change.defender_id, change.reason) == (D, "3", "not_in_opencti")
    assert change.after is None
    assert change.before is not None and change.before["indicatorValue"] == "gone.example"


@pytest.mark.parametrize("reason", [SkipReason.REVOKED, SkipReason.EXPIRED], ids=str)
def test_expire_when_revoked_or_expired(reason: SkipReason) -> None:
    keep = desired("keep.example", "DomainName")
    old = desired("old.example", "DomainName")
    why = Skipped(opencti_id="indicator--old", reason=reason, key=old.key, detail="d")
    plan = build_plan(
        as_map(keep),
        [owned("1", keep), owned("2", old)],
        skipped=[why],
        expired_keys={old.key: why},
    )
    (change,) = plan.changes
    assert change.kind is E
    assert change.reason == reason.value
    assert change.defender_id == "2"
    assert change.opencti_ids == ("indicator--old",)
    assert change.detail == "d"
    # The expired indicator is shown once, as the expire change, not again as a skip.
    assert plan.summary["skip"] == 0


def test_expired_key_still_desired_by_another_indicator_is_kept() -> None:
    d = desired("both.example", "DomainName")
    why = Skipped(opencti_id="indicator--rev", reason=SkipReason.REVOKED, key=d.key)
    plan = build_plan(as_map(d), [owned("1", d)], skipped=[why], expired_keys={d.key: why})
    assert [c.kind for c in plan.changes] == [S]
    assert plan.unchanged == 1


def test_revoked_without_owned_copy_is_only_a_skip() -> None:
    key = IndicatorKey(IndicatorType.URL, "https://x.test/")
    why = Skipped(opencti_id="indicator--r", reason=SkipReason.REVOKED, key=key)
    plan = build_plan({}, [], skipped=[why], expired_keys={key: why})
    assert actions(plan) == [("skip", "https://x.test/", None, "revoked")]


# -- duplicates ----------------------------------------------------------------------------

DUP_CASES = [
    pytest.param(["10", "9"], {}, "9", ["10"], id="two-copies-lowest-id-kept"),
    pytest.param(["30", "4", "200"], {}, "4", ["30", "200"], id="three-copies-lowest-id-kept"),
    pytest.param(
        ["1", "2"], {"1": {"action": "Audit"}}, "2", ["1"], id="same-action-preferred-over-lower-id"
    ),
    pytest.param(["10", "9", "100"], {"9": {"title": "x"}}, "9", ["10", "100"], id="kept-updated"),
]


@pytest.mark.parametrize(("ids", "tweaks", "kept", "deleted"), DUP_CASES)
def test_duplicates_keep_one(
    ids: list[str], tweaks: dict[str, dict[str, Any]], kept: str, deleted: list[str]
) -> None:
    d = desired()
    copies = [owned(i, d, **tweaks.get(i, {})) for i in ids]
    plan = build_plan(as_map(d), copies)
    dups = [c for c in plan.changes if c.reason == "duplicate"]
    assert sorted(c.defender_id or "" for c in dups) == sorted(deleted)
    assert all(c.kind is D for c in dups)
    assert kept not in {c.defender_id for c in dups}
    others = [c for c in plan.changes if c.reason != "duplicate"]
    assert all(c.defender_id == kept for c in others)


def test_duplicates_without_same_action_replace_lowest_and_delete_rest() -> None:
    d = desired(action="Block")
    plan = build_plan(as_map(d), [owned("8", d, action="Audit"), owned("6", d, action="Warn")])
    assert actions(plan) == [
        ("replace", d.indicator_value, "6", "action_changed"),
        ("delete", d.indicator_value, "8", "duplicate"),
    ]


# -- quota ---------------------------------------------------------------------------------


def test_quota_cut_ranks_by_score_then_updated_at_then_key() -> None:
    items = [
        desired("192.0.2.1", score=90),
        desired("192.0.2.2", score=50, updated_at="2026-02-01T00:00:00Z"),
        desired("192.0.2.3", score=50, updated_at="2026-01-01T00:00:00Z"),
        desired("192.0.2.4", score=50, updated_at=None),
        desired("192.0.2.6", score=10, updated_at="2026-01-01T00:00:00Z"),
        desired("192.0.2.5", score=10, updated_at="2026-01-01T00:00:00Z"),
    ]
    for free, kept in [
        (1, {"1"}),
        (2, {"1", "2"}),
        (3, {"1", "2", "3"}),
        (4, {"1", "2", "3", "4"}),
        (5, {"1", "2", "3", "4", "5"}),
    ]:
        plan = build_plan(as_map(*items), [], policy=PlanPolicy(quota=free))
        created = {c.key.value.rsplit(".", 1)[1] for c in plan.changes if c.kind is C and c.key}
        assert created == kept, free
        skipped = [c for c in plan.changes if c.kind is S]
        assert len(skipped) == len(items) - free
        assert {c.reason for c in skipped} == {"quota"}
        assert plan.quota.desired == len(items)


def test_quota_owned_copy_over_quota_is_deleted() -> None:
    high, low = desired("192.0.2.1", score=90), desired("192.0.2.2", score=10)
    plan = build_plan(
        as_map(high, low), [owned("1", low)], policy=PlanPolicy(quota=1, max_delete_ratio=1)
    )
    assert actions(plan) == [
        ("create", "192.0.2.1", None, "not_in_defender"),
        ("delete", "192.0.2.2", "1", "quota"),
        ("skip", "192.0.2.2", None, "quota"),
    ]
    assert plan.quota.used_after == 1


def test_non_owned_count_reduces_room() -> None:
    items = [desired(f"192.0.2.{i}", score=i) for i in range(1, 6)]
    plan = build_plan(as_map(*items), [], non_owned_count=14_997)
    assert plan.summary["create"] == 3
    assert plan.summary["skip"] == 2
    assert plan.quota.free == 3
    assert plan.quota.used_after == 15_000
    assert plan.quota.non_owned == 14_997


def test_no_room_at_all() -> None:
    plan = build_plan(as_map(desired()), [], non_owned_count=20_000)
    assert plan.quota.free == 0
    assert [c.kind for c in plan.changes] == [S]


# -- guards --------------------------------------------------------------------------------


def many_owned(n: int, prefix: str = "198.18") -> list[Any]:
    return [owned(str(i + 1), desired(f"{prefix}.{i // 250}.{i % 250}")) for i in range(n)]


def test_empty_desired_guard() -> None:
    plan = build_plan({}, many_owned(2))
    g = guard(plan, "empty_desired")
    assert g.triggered and g.blocked
    assert "--allow-mass-delete" in g.message
    assert plan.deletes_blocked
    # Guards report; the deletes stay in the plan for review, apply holds them back.
    assert plan.summary["delete"] == 2


def test_max_deletes_guard() -> None:
    plan = build_plan({}, many_owned(6), policy=PlanPolicy(max_deletes=5, max_delete_ratio=1.0))
    g = guard(plan, "max_deletes")
    assert (g.triggered, g.blocked, g.limit, g.actual) == (True, True, 5, 6)
    assert "--allow-mass-delete" in g.message


def test_max_deletes_at_limit_passes() -> None:
    keep = desired("keep.example", "DomainName")
    plan = build_plan(
        as_map(keep),
        [owned("999", keep), *many_owned(5)],
        policy=PlanPolicy(max_deletes=5, max_delete_ratio=1),
    )
    assert not plan.deletes_blocked


RATIO_CASES = [
    pytest.param(20, 11, True, id="11-of-20-over-half"),
    pytest.param(20, 10, False, id="10-of-20-exactly-half"),
    pytest.param(3, 2, False, id="small-tenant-under-min-deletes"),
    pytest.param(12, 10, True, id="min-deletes-reached"),
]


@pytest.mark.parametrize(("total", "gone", "triggered"), RATIO_CASES)
def test_max_delete_ratio_guard(total: int, gone: int, triggered: bool) -> None:
    current = many_owned(total)
    keep = {i.key: desired(i.indicator_value) for i in current[gone:]}
    plan = build_plan(keep, current)
    assert plan.summary["delete"] == gone
    g = guard(plan, "max_delete_ratio")
    assert g.triggered is triggered
    assert plan.deletes_blocked is triggered


def test_override_keeps_guard_triggered_but_not_blocked() -> None:
    plan = build_plan({}, many_owned(3), policy=PlanPolicy(allow_mass_delete=True))
    g = guard(plan, "empty_desired")
    assert g.triggered and not g.blocked
    assert not plan.deletes_blocked


def test_replace_does_not_count_as_delete_for_guards() -> None:
    items = [desired(f"192.0.2.{i}") for i in range(20)]
    plan = build_plan(
        as_map(*items), [owned(str(i), d, action="Audit") for i, d in enumerate(items)]
    )
    assert plan.summary["replace"] == 20
    assert not plan.deletes_blocked


def test_scoped_plan_skips_whole_set_guards() -> None:
    # A stream event for a deleted indicator: the scope's desired side is empty.
    current = many_owned(12)
    plan = build_plan({}, current, scoped=True, policy=PlanPolicy(max_deletes=20))
    assert plan.summary["delete"] == 12
    assert not plan.deletes_blocked
    assert "scoped" in guard(plan, "empty_desired").message
    tight = build_plan({}, current, scoped=True, policy=PlanPolicy(max_deletes=5))
    assert guard(tight, "max_deletes").blocked


# -- incomplete read -----------------------------------------------------------------------


def test_incomplete_read_drops_destructive_changes() -> None:
    new, upd, rep = desired("192.0.2.1"), desired("192.0.2.2"), desired("192.0.2.3")
    gone = desired("192.0.2.4")
    plan = build_plan(
        as_map(new, upd, rep),
        [owned("2", upd, title="old"), owned("3", rep, action="Audit"), owned("4", gone)],
        complete=False,
        policy=PlanPolicy(allow_mass_delete=True),
    )
    assert [c.kind for c in plan.changes] == [C, U]
    g = guard(plan, "incomplete_read")
    assert g.triggered and g.blocked and g.actual == 2
    assert plan.deletes_blocked  # no override for a partial read
    assert not plan.complete


# -- determinism, fingerprints, round trip -------------------------------------------------


def test_shuffled_inputs_give_identical_plan() -> None:

    base = golden_plan()
    items = [desired(f"192.0.2.{i}", score=i % 3) for i in range(30)]
    current = [owned(str(100 - i), d, title=f"t{i % 2}") for i, d in enumerate(items[:20])]
    current += [owned(str(200 + i), desired(f"198.51.100.{i}")) for i in range(5)]
    reference = build_plan(as_map(*items), current, policy=PlanPolicy(quota=25))
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(items)
        rng.shuffle(current)
        again = build_plan(as_map(*items), current, policy=PlanPolicy(quota=25))
        assert again == reference
        assert again.to_dict() == reference.to_dict()
    assert base == golden_plan()


def test_changes_sorted_by_action_then_key() -> None:
    plan = build_plan(
        as_map(
            desired("b.example", "DomainName"),
            desired("192.0.2.1"),
            desired("a.example", "DomainName"),
        ),
        [owned("5", desired("z.example", "DomainName")), owned("4", desired("192.0.2.9"))],
        policy=PlanPolicy(allow_mass_delete=True),
    )
    assert [(c.kind.value, c.key.value if c.key else "") for c in plan.changes] == [
        ("create", "a.example"),
        ("create", "b.example"),
        ("create", "192.0.2.1"),
        ("delete", "z.example"),
        ("delete", "192.0.2.9"),
    ]


def test_fingerprint_changes_when_an_owned_indicator_changes() -> None:
    d = desired()
    a = fingerprint_owned([owned("1", d)])
    assert a == fingerprint_owned([owned("1", d)])
    assert a != fingerprint_owned([owned("1", d, severity="Low")])
    assert a != fingerprint_owned([owned("2", d)])
    assert a != fingerprint_owned([owned("1", d), owned("2", desired("192.0.2.1"))])
    plan = build_plan(as_map(d), [owned("1", d)])
    assert plan.fingerprint == a
    # Server-side bookkeeping alone does not make a plan stale.
    assert a == fingerprint_owned([owned("1", d, lastUpdateTime="2031-01-01T00:00:00Z")])


def test_desired_fingerprint_tracks_desired_side() -> None:
    d = desired()
    a = build_plan(as_map(d), []).desired_fingerprint
    assert a == build_plan(as_map(desired()), []).desired_fingerprint
    assert a != build_plan(as_map(desired(title="other")), []).desired_fingerprint


def test_to_dict_from_dict_round_trip(sample_plan: Plan) -> None:
    import json

    data = json.loads(json.dumps(sample_plan.to_dict()))
    again = Plan.from_dict(data)
    assert again == sample_plan
    assert again.summary == sample_plan.summary
    assert again.deletes_blocked == sample_plan.deletes_blocked


def test_a_plan_saved_before_rules_existed_still_loads(sample_plan: Plan) -> None:
    data = sample_plan.to_dict()
    for change in data["changes"]:
        del change["rule"]
    again = Plan.from_dict(data)
    assert {c.rule for c in again.changes} == {""}
    assert [c.key for c in again.changes] == [c.key for c in sample_plan.changes]
    assert any(c.rule for c in sample_plan.changes)  # the sample does name rules


def test_from_dict_refuses_other_version(sample_plan: Plan) -> None:
    data = sample_plan.to_dict() | {"format_version": "2"}
    with pytest.raises(ValueError, match="format_version"):
        Plan.from_dict(data)


def test_skip_without_key_round_trips() -> None:
    s = Skipped(opencti_id="indicator--x", reason=SkipReason.UNSUPPORTED_PATTERN, detail="yara")
    plan = build_plan({}, [], skipped=[s])
    (change,) = plan.changes
    assert change == Change(
        S, None, opencti_ids=("indicator--x",), reason="unsupported_pattern", detail="yara"
    )
    assert change.to_dict()["indicatorType"] is None
    assert Plan.from_dict(plan.to_dict()) == plan


# -- keys another application holds ----------------------------------------------------------


@pytest.mark.parametrize(
    ("held", "expected"),
    [
        pytest.param(
            ("DomainName", "shared.example"),
            [(S, None, "held_by_other_application")],
            id="same-type-and-value",
        ),
        pytest.param(
            ("Url", "shared.example"),
            [(C, None, "not_in_defender")],
            id="other-type",
        ),
        pytest.param(
            ("DomainName", "other.example"),
            [(C, None, "not_in_defender")],
            id="other-value",
        ),
    ],
)
def test_key_held_by_another_application(
    held: tuple[str, str], expected: list[tuple[ChangeKind, str | None, str]]
) -> None:
    """Held whatever the other indicator's action: if Defender upserts on (type, value), an
    import would rewrite it (the upsert key is not documented)."""
    d = desired("shared.example", "DomainName")
    plan = build_plan(as_map(d), [], held_by_others={held: "'Portal' (action Audit)"})
    assert [(c.kind, c.defender_id, c.reason) for c in plan.changes] == expected


def test_held_key_compares_value_case_insensitively_and_takes_no_quota() -> None:
    d = desired("shared.example", "DomainName")
    other = desired("other.example", "DomainName")
    ident = foreign_identity("DomainName", "SHARED.Example")
    assert ident is not None
    plan = build_plan(
        as_map(d, other), [], held_by_others={ident: "'Portal'"}, policy=PlanPolicy(quota=1)
    )
    assert actions(plan) == [
        ("create", "other.example", None, "not_in_defender"),
        ("skip", "shared.example", None, "held_by_other_application"),
    ]
    skip = plan.changes[1]
    assert "'Portal'" in skip.detail and skip.opencti_ids == d.opencti_ids
    assert plan.quota.desired == 1


def test_owned_copy_of_a_held_key_is_deleted_not_rewritten() -> None:
    d = desired("shared.example", "DomainName")
    ours = owned("9", d, action="Audit")
    ident = foreign_identity("DomainName", "shared.example")
    assert ident is not None
    plan = build_plan(as_map(d), [ours], held_by_others={ident: "'Portal'"})
    assert actions(plan) == [
        ("delete", "shared.example", "9", "held_by_other_application"),
        ("skip", "shared.example", None, "held_by_other_application"),
    ]
    assert not any(g.blocked for g in plan.guards)


@pytest.mark.parametrize(
    "parts",
    [(None, "x"), ("DomainName", ""), ("DomainName", 3)],
    ids=["no-type", "empty-value", "non-string-value"],
)
def test_foreign_identity_of_an_incomplete_row_is_none(parts: tuple[Any, Any]) -> None:
    assert foreign_identity(*parts) is None


# -- tolerant reading of owned rows ----------------------------------------------------------


@pytest.mark.parametrize(
    ("held_action", "wire", "expected"),
    [
        pytest.param("Audit", {}, [], id="alias-same-fields-unchanged"),
        pytest.param(
            "Audit", {"title": "edited"}, [(U, "Audit")], id="alias-update-keeps-spelling"
        ),
        pytest.param("Warn", {}, [(R, "Alert")], id="another-action-replaced"),
    ],
)
def test_an_action_alias_is_the_same_action(
    held_action: str, wire: dict[str, Any], expected: list[tuple[ChangeKind, str]]
) -> None:
    """We send the seed's ``Alert``; Defender may answer ``Audit`` (its current name)."""
    d = desired("alias.example", "DomainName", action="Alert")
    ours = owned("7", d, action=held_action, **wire)
    plan = build_plan(as_map(d), [ours])
    assert [(c.kind, (c.after or {}).get("action")) for c in plan.changes] == expected


def test_of_two_alias_copies_the_exact_spelling_is_kept() -> None:
    d = desired("alias.example", "DomainName", action="Alert")
    plan = build_plan(as_map(d), [owned("5", d, action="Audit"), owned("9", d)])
    assert actions(plan) == [("delete", "alias.example", "5", "duplicate")]


def test_an_owned_row_of_an_unknown_type_is_deleted_not_fatal() -> None:
    d = desired("x.example", "DomainName")
    odd = owned("4", d, indicatorType="CloudThing", indicatorValue="x.example")
    plan = build_plan({}, [odd], policy=PlanPolicy(ratio_min_deletes=5))
    (change,) = plan.changes
    assert (change.kind, change.key, change.defender_id) == (D, None, "4")
    assert "CloudThing" in change.detail and change.before is not None
    assert Plan.from_dict(plan.to_dict()) == plan


def test_an_unknown_action_or_severity_differs_from_desired() -> None:
    d = desired("x.example", "DomainName")
    plan = build_plan(as_map(d), [owned("4", d, action="FutureBlock", severity="Extreme")])
    assert actions(plan) == [("replace", "x.example", "4", "action_changed")]


@pytest.mark.parametrize(
    ("moved_seconds", "tolerance", "updated"),
    [(30, 3600.0, False), (3600, 3600.0, False), (3601, 3600.0, True), (30, 0.0, True)],
)
def test_an_expiry_within_the_tolerance_is_left_as_it_is(
    moved_seconds: int, tolerance: float, updated: bool
) -> None:
    """The write-back's own edits move ``updated_at`` (the expiry's base) by seconds: that
    must not rewrite the indicator in Defender; a real move still does."""
    base = datetime(2026, 4, 1, tzinfo=UTC)
    want = desired(expiration_time=base + timedelta(seconds=moved_seconds))
    have = owned("1", desired(expiration_time=base))
    plan = build_plan([want], [have], policy=PlanPolicy(expiry_tolerance_seconds=tolerance))
    kinds = [c.kind for c in plan.changes]
    assert kinds == ([ChangeKind.UPDATE] if updated else [])
