"""A million generated indicators over real sockets, through pycti: paging by score and by
date in pages of 5,000, exact ``globalCount`` for filtered listings, scoped reads by ids, and
the emulator's memory. Page times are recorded as test properties; the bound asserted is
generous (the measured figure is well under a second on a quiet machine)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.sandbox.dataset import label_id
from reconciler.sandbox.opencti import OpenCTIEmulator, Population

from .cases import flt, group
from .conftest import TOKEN

N = 1_000_000
PAGE = 5000
ATTRIBUTES = """id standard_id created_at revoked x_opencti_score
x_opencti_main_observable_type objectLabel { id value }"""
GENEROUS = 10.0  # seconds for one page of 5,000; measured well under 1 s


@pytest.fixture(scope="module")
def emu() -> Iterator[OpenCTIEmulator]:
    with OpenCTIEmulator(token=TOKEN) as emulator:
        emulator.load_generated(N, seed=7)
        yield emulator


@pytest.fixture(scope="module")
def api(emu: OpenCTIEmulator) -> Any:
    from pycti import OpenCTIApiClient

    return OpenCTIApiClient(emu.url, TOKEN, log_level="error")


@pytest.fixture(scope="module")
def population(emu: OpenCTIEmulator) -> Population:
    pop = emu._store.population
    assert pop is not None
    return pop


def pages(api: Any, count: int, **kw: Any) -> Iterator[tuple[list[dict[str, Any]], Any, float]]:
    """The first ``count`` pages: entities, pageInfo, seconds taken."""
    after = None
    for _ in range(count):
        started = time.perf_counter()
        result = api.indicator.list(
            first=PAGE, after=after, withPagination=True, customAttributes=ATTRIBUTES, **kw
        )
        yield result["entities"], result["pagination"], time.perf_counter() - started
        after = result["pagination"]["endCursor"]


def test_a_million_pages_by_score(api: Any, record_property: Any) -> None:
    seen: set[str] = set()
    scores: list[int] = []
    timings = []
    for entities, info, seconds in pages(api, 4, orderBy="x_opencti_score", orderMode="desc"):
        timings.append(round(seconds, 3))
        assert len(entities) == PAGE and info["globalCount"] == N and info["hasNextPage"]
        ids = [e["id"] for e in entities]
        assert not seen & set(ids)
        seen |= set(ids)
        scores += [e["x_opencti_score"] for e in entities]
    record_property("score_page_seconds", timings)
    assert scores == sorted(scores, reverse=True) and scores[0] == 100
    assert max(timings) < GENEROUS, timings


def test_ascending_scores_put_the_missing_ones_last(api: Any, population: Population) -> None:
    missing = sum(1 for code in population.columns["score"] if code == 255)
    (entities, _, _), *_ = pages(api, 1, orderBy="x_opencti_score", orderMode="asc", filters=None)
    assert [e["x_opencti_score"] for e in entities] == [0] * PAGE
    nil = api.indicator.list(
        filters=group(flt(["x_opencti_score"], [], "nil")), first=1, withPagination=True
    )
    assert nil["pagination"]["globalCount"] == missing > 0


def stream_like_filter() -> dict[str, Any]:
    """What the reconciler sends: entity_type = Indicator AND the stream's filters."""
    stream = group(
        flt(["x_opencti_score"], ["30"], "gte"),
        flt(["x_opencti_score"], ["59"], "lte"),
        flt(["objectLabel"], [label_id("c2")]),
        flt(["revoked"], ["false"]),
        flt(["x_opencti_main_observable_type"], ["IPv4-Addr", "Domain-Name"]),
    )
    return group(flt(["entity_type"], ["Indicator"]), groups=[stream])


def counted(population: Population) -> int:
    """The stream-like filter counted column by column, without the fake's masks."""
    c2 = {c for c, part in enumerate(population.codes["labels"]) if "c2" in part["labels"]}
    kinds = {
        c
        for c, part in enumerate(population.codes["kind"])
        if part["main_observable_type"] in ("IPv4-Addr", "Domain-Name")
    }
    columns = (population.columns[name] for name in ("score", "labels", "revoked", "kind"))
    return sum(
        1
        for score, labels, revoked, kind in zip(*columns, strict=True)
        if 30 <= score <= 59 and labels in c2 and not revoked and kind in kinds
    )


def test_a_filtered_million_by_date(api: Any, population: Population, record_property: Any) -> None:
    want = counted(population)
    dates: list[str] = []
    timings = []
    for entities, info, seconds in pages(
        api, 3, filters=stream_like_filter(), orderBy="created_at", orderMode="asc"
    ):
        timings.append(round(seconds, 3))
        assert info["globalCount"] == want and len(entities) == PAGE
        for e in entities:
            assert 30 <= e["x_opencti_score"] <= 59 and not e["revoked"]
            assert "c2" in {label["value"] for label in e["objectLabel"]}
            assert e["x_opencti_main_observable_type"] in ("IPv4-Addr", "Domain-Name")
        dates += [e["created_at"] for e in entities]
    record_property("filtered_page_seconds", timings)
    assert dates == sorted(dates)
    assert max(timings) < GENEROUS, timings


def test_a_scoped_read_of_500_ids(api: Any, population: Population) -> None:
    chosen = [population.record(i) for i in range(0, N, N // 500)]
    values = [r["id"] if n % 2 else r["standard_id"] for n, r in enumerate(chosen)]
    scoped = group(flt(["ids"], values), groups=[stream_like_filter()])
    found = api.indicator.list(filters=scoped, getAll=True, first=PAGE, customAttributes="id")
    want = {
        r["id"]
        for r in chosen
        if r["score"] is not None
        and 30 <= r["score"] <= 59
        and "c2" in r["labels"]
        and not r["revoked"]
        and r["main_observable_type"] in ("IPv4-Addr", "Domain-Name")
    }
    assert {n["id"] for n in found} == want


MEMORY_PROBE = """
import json, resource, urllib.request
from reconciler.sandbox.opencti import OpenCTIEmulator
emu = OpenCTIEmulator(token="t").start()
emu.load_generated(1_000_000, seed=7)
query = ("query I($first: Int, $after: ID, $orderBy: IndicatorsOrdering, $orderMode: "
         "OrderingMode) { indicators(first: $first, after: $after, orderBy: $orderBy, "
         "orderMode: $orderMode) { edges { node { id name pattern x_opencti_score } } "
         "pageInfo { endCursor globalCount } } }")
for order in (("x_opencti_score", "desc"), ("created_at", "asc"), ("updated_at", "desc")):
    after = None
    for _ in range(3):
        variables = {"first": 5000, "after": after, "orderBy": order[0], "orderMode": order[1]}
        request = urllib.request.Request(
            emu.url + "/graphql",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={"Authorization": "Bearer t", "Content-Type": "application/json"},
        )
        body = json.loads(urllib.request.urlopen(request, timeout=60).read())
        after = body["data"]["indicators"]["pageInfo"]["endCursor"]
emu.stop()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_a_million_fits_in_little_memory(record_property: Any) -> None:
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    peak_mb = int(done.stdout.split()[-1])
    record_property("peak_rss_mb", peak_mb)
    assert peak_mb < 1024
