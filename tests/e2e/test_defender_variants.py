"""The product against every plausible Defender: each behaviour Microsoft does not document, one
emulator variant at a time and all the strict ones at once, over real sockets.

For each variant: a cold sync, a drift repair (portal edit, portal delete, stray owned row),
action changes, and a stream burst through the controller. After each, Defender equals the
desired state (a replan exits 0, twice in a row); during the action changes no owned indicator
of a still-desired key disappears (checked at every BatchDelete the emulator receives); and no
read was ever refused (no 400 or 414 on the list endpoint).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.controller import Controller
from reconciler.mapping import canonical_value
from reconciler.model import IndicatorType
from reconciler.opencti.stream import StreamEvent
from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.opencti import OpenCTIEmulator
from reconciler.wiring import controller_options, open_engine
from tests.e2e.support import Sandbox, load, settings_for, write_config

VARIANTS: dict[str, dict[str, Any]] = {
    "as-documented": {},
    "upsert-type-value": {"upsert_key": ("indicatorType", "indicatorValue")},
    "whole-batch-rejection": {"batch_rejection": "whole_batch"},
    "equivalent-echo": {"echo": "equivalent"},
    "strict-odata": {"odata": "strict"},
    "deprecation-headers": {"deprecation": True},
    "non-atomic-batch-delete": {"batch_delete_atomic": False},
    "all-strict": {"strict": True},
}


def key_of(row: dict[str, Any]) -> tuple[str, str]:
    kind = IndicatorType(row["indicatorType"])
    return (kind.value, canonical_value(kind, row["indicatorValue"]).casefold())


class CoverageWatch:
    """At every BatchDelete, which owned keys would be left without any owned row."""

    def __init__(self, defender: DefenderEmulator) -> None:
        self.defender = defender
        self.snapshots: list[list[dict[str, Any]]] = []

    def __call__(self, endpoint: str, method: str, path: str) -> None:
        if endpoint == "batch_delete":
            self.snapshots.append(self.defender.indicators())

    def uncovered(self, desired_keys: set[tuple[str, str]]) -> list[tuple[str, str]]:
        deletes = [r for r in self.defender.requests if r.endpoint == "batch_delete"]
        lost: list[tuple[str, str]] = []
        for snapshot, request in zip(self.snapshots, deletes, strict=False):
            gone = {str(i) for i in (request.body or {}).get("IndicatorIds", [])}
            owned = [r for r in snapshot if r.get("application") == "opencti"]
            before = {key_of(r) for r in owned}
            after = {key_of(r) for r in owned if str(r["id"]) not in gone}
            lost += sorted((before - after) & desired_keys)
        return lost


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sandbox]:
    options = VARIANTS[request.param]
    with DefenderEmulator(**options) as defender, OpenCTIEmulator() as opencti:
        config = write_config(tmp_path / "config.yml", defender, opencti)
        yield Sandbox(defender, opencti, config)


def converged(sandbox: Sandbox) -> None:
    for attempt in (1, 2):
        res = sandbox.cli("plan", "--detailed-exitcode", "--no-color")
        assert res.code == 0, f"replan {attempt}: exit {res.code}\n{res.stdout[-3000:]}"


def desired_keys(sandbox: Sandbox) -> set[tuple[str, str]]:
    return {key_of(r) for r in sandbox.owned()}


def test_converges_and_never_uncovers_a_key_under_every_variant(world: Sandbox) -> None:
    sandbox, defender, opencti = world, world.defender, world.opencti
    records = load(sandbox, 240, seed=5)

    # Cold sync.
    res = sandbox.cli("apply", "--no-color")
    assert res.code == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert len(sandbox.owned()) > 150
    converged(sandbox)

    # Drift in the portal: an edit, a delete, a stray owned row.
    owned = sorted(sandbox.owned(), key=lambda r: int(r["id"]))
    defender.update_indicator(owned[0]["id"], title="edited in the portal")
    defender.delete_indicator(owned[1]["id"])
    defender.add_indicator(
        indicatorValue="stray.badhost.net",
        indicatorType="DomainName",
        action="Block",
        title="left over",
        description="no longer in OpenCTI",
        application="opencti",
        severity="High",
        generateAlert=True,
    )
    res = sandbox.cli("apply", "--no-color")
    assert res.code == 0, res.stdout[-3000:] + res.stderr[-3000:]
    converged(sandbox)

    # Action changes (scores across the seed's thresholds), watched at every BatchDelete.
    live = {r["id"] for r in records if not r.get("revoked")}
    deployed = sorted({str(r["externalId"]) for r in sandbox.owned()} & live)
    for n, ident in enumerate(deployed[:24]):
        opencti.update_indicator(ident, score=(90, 45, 10)[n % 3])
    keys_before = desired_keys(sandbox)
    watch = CoverageWatch(defender)
    defender.on_request(watch)
    try:
        res = sandbox.cli("apply", "--no-color")
    finally:
        defender.on_request(None)
    assert res.code == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert watch.uncovered(keys_before & desired_keys(sandbox)) == []
    converged(sandbox)

    # A stream burst through the controller: the events are hints, OpenCTI is re-read.
    settings = settings_for(defender, opencti)
    with open_engine(settings) as engine:
        controller = Controller(controller_options(settings), engine=engine)
        assert controller.full_reconcile("startup") is True
        mark = len(opencti.events())
        for i in range(60):
            opencti.create_indicator(
                pattern=f"[domain-name:value = 'burst-{i}.badhost.net']", score=(20, 50, 90)[i % 3]
            )
        events = [
            StreamEvent(e["id"], e["event"], e["data"]["data"], e["data"])
            for e in opencti.events()[mark:]
        ]
        controller.handle_events(events)
    values = {r["indicatorValue"].casefold() for r in sandbox.owned()}
    assert {f"burst-{i}.badhost.net" for i in range(60)} <= values
    converged(sandbox)

    refused = [(r.endpoint, r.status) for r in defender.requests if r.status in (400, 414)]
    assert [r for r in refused if r[0] == "list"] == [], refused
