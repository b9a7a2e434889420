"""Hits become sightings, over real sockets: Defender alerts read from the emulator's Graph
endpoint, sightings written to the fake OpenCTI. 50 hits on 20 indicators give exactly 20
sightings with the right counts; a replay after a restart adds nothing (with the checkpoint
file, and without it); an alert on a value we do not own adds nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.controller import Controller
from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.opencti import OpenCTIEmulator
from reconciler.wiring import controller_options, open_engine, open_sightings
from tests.e2e.support import TODAY, settings_for

#: Graph's undocumented answers: the sightings must be exact under each.
GRAPH: dict[str, dict[str, Any]] = {
    "graph as documented": {},
    "graph undocumented": {
        "graph_detection_source_filter": "refused",
        "graph_next_link": "missing",
        "graph_max_top": 7,
    },
}


@pytest.fixture(params=list(GRAPH), ids=list(GRAPH))
def world(request: pytest.FixtureRequest) -> Iterator[tuple[DefenderEmulator, OpenCTIEmulator]]:
    with DefenderEmulator(**GRAPH[request.param]) as defender, OpenCTIEmulator() as opencti:
        opencti.load(generate_indicators(120, seed=11, now=TODAY))
        yield defender, opencti


def _settings(defender: DefenderEmulator, opencti: OpenCTIEmulator, **extra: Any) -> Any:
    return settings_for(
        defender, opencti, **{"microsoft_defender_intel.graph_url": defender.graph_url, **extra}
    )


def _pass(settings: Any) -> Any:
    """A fresh process: engine, first full reconcile, one sightings pass."""
    with (
        open_engine(settings, long_lived=True) as engine,
        open_sightings(settings, engine, clock=engine.clock) as job,
    ):
        assert job is not None
        controller = Controller(controller_options(settings), engine=engine, sightings=job)
        assert controller.full_reconcile("startup") is True
        report = controller.run_sightings()
        assert report is not None and report.error is None, report
        return report


def _hits(defender: DefenderEmulator) -> tuple[dict[str, int], list[dict[str, Any]]]:
    owned = [r for r in defender.indicators() if r.get("application") == "opencti"]
    targets = owned[:20]
    at = datetime.now(UTC) - timedelta(minutes=30)
    expected: Counter[str] = Counter()
    for n in range(50):
        row = targets[n % 20]
        defender.raise_hit(
            row["indicatorType"],
            row["indicatorValue"],
            device=f"PC-{n}",
            at=at + timedelta(seconds=n),
        )
        expected[row["externalId"]] += 1
    return dict(expected), targets


@pytest.mark.parametrize("state", ["checkpoint file", "no state_path"])
def test_50_hits_on_20_indicators_give_20_sightings_and_a_replay_adds_nothing(
    world: Any, tmp_path: Path, state: str
) -> None:
    defender, opencti = world
    extra = (
        {"reconciler.state_path": str(tmp_path / "state.json")}
        if state == "checkpoint file"
        else {}
    )
    settings = _settings(defender, opencti, **extra)
    with open_engine(settings) as engine:  # deploy first, so there is something to hit
        assert Controller(controller_options(settings), engine=engine).full_reconcile() is True
    expected, _ = _hits(defender)
    # Hits that are not ours: a value no indicator of ours holds, another detection source.
    defender.raise_hit("IpAddress", "198.51.100.99", at=datetime.now(UTC) - timedelta(minutes=20))
    defender.raise_hit(
        "IpAddress",
        "198.51.100.98",
        at=datetime.now(UTC) - timedelta(minutes=20),
        detection_source="antivirus",
    )

    first = _pass(settings)
    sightings = opencti.sightings()
    assert len(sightings) == 20
    assert {s["from_id"]: s["attribute_count"] for s in sightings} == expected
    (identity,) = opencti.identities()
    assert {s["to_id"] for s in sightings} == {identity["id"]}
    assert "Microsoft Defender for Endpoint" in identity["name"]
    for s in sightings:
        links = [r for r in s["external_references"] if r["source_name"].endswith("alert")]
        assert len(links) == s["attribute_count"]
        assert all(r["url"].startswith("https://security.microsoft.com/alerts/") for r in links)
    assert (first.hits, first.counted, first.sightings) == (50, 50, 20)

    # A restart replays the same window: nothing is added.
    mutations = opencti.mutation_count()
    second = _pass(settings)
    assert second.counted == 0
    assert {s["from_id"]: s["attribute_count"] for s in opencti.sightings()} == expected
    assert len(opencti.sightings()) == 20
    if state == "checkpoint file":
        assert (tmp_path / "state.sightings.json").exists()
    # Nothing new to count: no sighting or reference mutation.
    assert opencti.mutation_count("stixSightingRelationshipAdd") == 20
    assert opencti.mutation_count() - mutations == opencti.mutation_count("identityAdd") - 1


def test_new_hits_add_to_the_existing_sighting(world: Any) -> None:
    defender, opencti = world
    settings = _settings(defender, opencti)
    with (
        open_engine(settings, long_lived=True) as engine,
        open_sightings(settings, engine, clock=engine.clock) as job,
    ):
        controller = Controller(controller_options(settings), engine=engine, sightings=job)
        assert controller.full_reconcile("startup") is True
        row = next(r for r in defender.indicators() if r.get("application") == "opencti")
        at = datetime.now(UTC) - timedelta(minutes=30)
        defender.raise_hit(row["indicatorType"], row["indicatorValue"], at=at)
        controller.run_sightings()
        for n in range(2):  # new alerts, in the overlap of the first pass's window
            when = datetime.now(UTC) - timedelta(seconds=5 + n)
            defender.raise_hit(row["indicatorType"], row["indicatorValue"], at=when)
        report = controller.run_sightings()
    assert report is not None and report.counted == 2
    (sighting,) = opencti.sightings()
    assert sighting["attribute_count"] == 3 and sighting["from_id"] == row["externalId"]


def test_sightings_off_reads_no_alert(world: Any) -> None:
    defender, opencti = world
    settings = _settings(defender, opencti, **{"reconciler.sightings": False})
    with (
        open_engine(settings) as engine,
        open_sightings(settings, engine, clock=engine.clock) as job,
    ):
        assert job is None
    assert defender.counts().get("alerts", 0) == 0
