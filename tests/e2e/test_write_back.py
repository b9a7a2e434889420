"""The write-back over real sockets: after a cold sync of 1,000 indicators every deployed one
carries its Defender id in OpenCTI and every not-deployed one its reason; a second run writes
nothing anywhere; a removed indicator loses its reference; the write-back's own stream events
(read from the fake OpenCTI's event log) cause no Defender write and no OpenCTI write."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.controller import Controller
from reconciler.engine import Outcome
from reconciler.opencti.events import decode_event
from reconciler.plan import ChangeKind
from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.opencti import OpenCTIEmulator
from reconciler.wiring import controller_options, open_engine
from reconciler.writeback import NOT_DEPLOYED
from tests.e2e.support import TODAY, settings_for

SOURCE = "Microsoft Defender for Endpoint"
QUOTA = 600  # below what the 1,000 want: some are not deployed for the quota


@pytest.fixture(params=[True, False], ids=["edits move updated_at", "edits keep updated_at"])
def world(request: pytest.FixtureRequest) -> Iterator[tuple[DefenderEmulator, OpenCTIEmulator]]:
    """Whether a reference edit moves the indicator's ``updated_at`` is not documented: every
    test runs under both answers."""
    moves = bool(request.param)
    with (
        DefenderEmulator() as defender,
        OpenCTIEmulator(reference_edits_move_updated_at=moves) as opencti,
    ):
        yield defender, opencti


def defender_writes(defender: DefenderEmulator) -> int:
    counts = defender.counts()
    return sum(counts.get(k, 0) for k in ("import", "batch_delete", "submit", "delete"))


def ours(opencti: OpenCTIEmulator, indicator_id: str) -> list[dict[str, Any]]:
    return [r for r in opencti.external_references(indicator_id) if r["source_name"] == SOURCE]


def reconcile(controller: Controller) -> Outcome:
    outcomes: list[Outcome] = []
    engine = controller.engine
    original = engine.reconcile_full

    def spy(**kw: Any) -> Outcome:
        outcome = original(**kw)
        outcomes.append(outcome)
        return outcome

    engine.reconcile_full = spy  # type: ignore[method-assign]
    try:
        assert controller.full_reconcile("schedule") is True
    finally:
        engine.reconcile_full = original  # type: ignore[method-assign]
    return outcomes[0]


def test_cold_sync_of_1000_shows_every_status_then_a_second_run_writes_nothing(world: Any) -> None:
    defender, opencti = world
    records = generate_indicators(1000, seed=3, now=TODAY)
    opencti.load(records)
    # Another team holds one of the values: ours must say so, never take it over.
    taken = next(
        r for r in records if r["main_observable_type"] == "Domain-Name" and not r["revoked"]
    )
    defender.add_indicator(
        indicatorType="DomainName",
        indicatorValue=taken["observable_values"][0]["value"],
        action="Block",
        application="other-team",
    )
    settings = settings_for(defender, opencti, **{"reconciler.quota": QUOTA})
    with open_engine(settings, long_lived=True) as engine:
        controller = Controller(controller_options(settings), engine=engine)
        first = reconcile(controller)
        assert first.write_back is not None and first.write_back.failed == 0

        # Every Defender indicator we own is shown on its OpenCTI indicator, by id.
        owned = [r for r in defender.indicators() if r.get("application") == "opencti"]
        assert len(owned) > 300
        for row in owned:
            refs = ours(opencti, row["externalId"])
            assert [r["external_id"] for r in refs if r["external_id"] == row["id"]] == [row["id"]]
            (ref,) = [r for r in refs if r["external_id"] == row["id"]]
            assert (
                row["action"] in ref["description"] and row["indicatorValue"] in ref["description"]
            )
            assert ref["url"] and f"indicatorId={row['id']}" in ref["url"]

        # Every OpenCTI indicator the plan did not deploy says why, in the plan's own words.
        deployed_ids = {row["externalId"] for row in owned}
        reasons: dict[str, set[str]] = {}
        for change in first.plan.changes:
            if change.kind is ChangeKind.SKIP and change.reason not in ("revoked", "expired"):
                for oid in change.opencti_ids:
                    reasons.setdefault(oid, set()).add(change.reason)
        # Superseded: its value is in Defender through another indicator, shown as deployed.
        superseded = {oid for oid, why in reasons.items() if why == {"superseded"}}
        assert superseded
        for oid in superseded:
            assert [r for r in ours(opencti, oid) if not r["external_id"].startswith(NOT_DEPLOYED)]
        not_deployed = {
            oid: why
            for oid, why in reasons.items()
            if oid not in deployed_ids and oid not in superseded
        }
        assert {"quota", "held_by_other_application", "unsupported_type"} <= set().union(
            *not_deployed.values()
        )
        for oid, why in not_deployed.items():
            found = [r for r in ours(opencti, oid) if r["external_id"].startswith(NOT_DEPLOYED)]
            assert len(found) == 1, (oid, why, ours(opencti, oid))
            (ref,) = found
            assert ref["external_id"] == f"{NOT_DEPLOYED}{oid}"
            for reason in why:
                assert reason in ref["description"], (oid, reason, ref["description"])

        # A second run: nothing changed, nothing is written, to OpenCTI or to Defender.
        mutations, writes = opencti.mutation_count(), defender_writes(defender)
        second = reconcile(controller)
        assert second.plan.is_empty
        assert opencti.mutation_count() == mutations
        assert defender_writes(defender) == writes


def test_own_events_cause_no_write_and_a_removed_indicator_loses_its_reference(world: Any) -> None:
    defender, opencti = world
    records = generate_indicators(200, seed=5, now=TODAY)
    opencti.load(records)
    settings = settings_for(defender, opencti)
    with open_engine(settings, long_lived=True) as engine:
        controller = Controller(controller_options(settings), engine=engine)
        seen = len(opencti.events())
        reconcile(controller)
        events = opencti.events()[seen:]
        assert events, "attaching references emits update events"
        assert all(e["event"] == "update" for e in events)

        # Hand the write-back's own events to the controller, as the stream would.
        mutations, writes = opencti.mutation_count(), defender_writes(defender)
        decoded = [decode_event(e["id"], e["event"], _text(e["data"])) for e in events]
        assert all(ev.references_only for ev in decoded)
        controller.handle_events(decoded)
        reconcile(controller)  # reads those indicators' references again: all equal
        assert defender_writes(defender) == writes
        assert opencti.mutation_count() == mutations

        # An analyst removes our reference: the event makes the next run put it back.
        row = next(r for r in defender.indicators() if r.get("application") == "opencti")
        (ref,) = [r for r in ours(opencti, row["externalId"]) if r["external_id"] == row["id"]]
        seen = len(opencti.events())
        assert opencti.detach_reference(row["externalId"], ref["id"])
        controller.handle_events(
            [decode_event(e["id"], e["event"], _text(e["data"])) for e in opencti.events()[seen:]]
        )
        reconcile(controller)
        assert row["id"] in [r["external_id"] for r in ours(opencti, row["externalId"])]
        # (The analyst's edit may move updated_at, and with it the expiry: a Defender update
        # there is the seed's expiry rule at work, not an echo.)

        # Revoked in OpenCTI: removed from Defender, its reference detached and deleted.
        opencti.revoke_indicator(row["externalId"])
        reconcile(controller)
        assert row["id"] not in {r["id"] for r in defender.indicators()}
        assert ours(opencti, row["externalId"]) == []
        assert row["id"] not in {r["external_id"] for r in opencti.all_external_references()}


def test_write_back_off_writes_nothing_to_opencti(world: Any) -> None:
    defender, opencti = world
    opencti.load(generate_indicators(50, seed=7, now=TODAY))
    settings = settings_for(defender, opencti, **{"reconciler.write_back": False})
    with open_engine(settings, long_lived=True) as engine:
        before = opencti.mutation_count()
        outcome = reconcile(Controller(controller_options(settings), engine=engine))
        assert outcome.write_back is None and outcome.result is not None
    assert opencti.mutation_count() == before


def test_a_failing_opencti_never_holds_back_defender_and_is_retried(world: Any) -> None:
    defender, opencti = world
    opencti.load(generate_indicators(60, seed=9, now=TODAY))
    settings = settings_for(defender, opencti)
    with open_engine(settings, long_lived=True) as engine:
        controller = Controller(controller_options(settings), engine=engine)
        opencti.fail_mutations("stixDomainObjectEdit", 1000)
        first = reconcile(controller)
        assert first.result is not None and first.result.ok
        assert first.write_back is not None and first.write_back.failed > 0
        opencti.clear_failures()
        second = reconcile(controller)
        assert second.write_back is not None and second.write_back.failed == 0
        row = next(r for r in defender.indicators() if r.get("application") == "opencti")
        assert row["id"] in [r["external_id"] for r in ours(opencti, row["externalId"])]


def _text(data: Any) -> str:
    return data if isinstance(data, str) else json.dumps(data)


def test_the_one_shot_apply_writes_back_and_a_second_one_only_reads(sandbox: Any) -> None:
    """``reconciler apply`` (a fresh process each time): the first writes the statuses; the
    second, remembering nothing, reads the references once and writes nothing anywhere."""
    sandbox.opencti.load(generate_indicators(80, seed=13, now=TODAY))
    first = sandbox.cli("apply", "--no-color")
    assert first.code == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "Write-back: " in first.stdout and " edits in " in first.stdout
    row = sandbox.owned()[0]
    assert row["id"] in [r["external_id"] for r in ours(sandbox.opencti, row["externalId"])]
    mutations, writes = sandbox.opencti.mutation_count(), defender_writes(sandbox.defender)
    second = sandbox.cli("apply", "--no-color", "-o", "json")
    assert second.code == 0, second.stdout[-2000:] + second.stderr[-2000:]
    doc = json.loads(second.stdout)
    assert doc["write_back"]["edits"] == 0 and doc["write_back"]["changed"] > 0
    assert sandbox.opencti.mutation_count() == mutations
    assert defender_writes(sandbox.defender) == writes
