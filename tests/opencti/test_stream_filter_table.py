"""Realistic live-stream filters through the product's own listing: for each, the desired
indicators are exactly what the stream selects (the stream's first-run recovery shows it).

The table (``tests/sandbox_opencti/cases.py``) is written in plain Python over the records,
without the fake or the product; here each stream filter is set on the live stream and the
reconciler's ``OpenCTISource`` lists through it (``entity_type = Indicator`` AND the stream's
filters, documented renames only), over pycti and real sockets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.opencti.source import OpenCTISource
from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.opencti import OpenCTIEmulator
from tests.sandbox_opencti.cases import CASES, Case, expected


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return generate_indicators(400, seed=21)


@pytest.fixture(scope="module")
def emulator(records: list[dict[str, Any]]) -> Iterator[OpenCTIEmulator]:
    with OpenCTIEmulator() as emu:
        emu.load(records)
        yield emu


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_desired_set_is_what_the_stream_selects(
    emulator: OpenCTIEmulator, records: list[dict[str, Any]], case: Case
) -> None:
    want = expected(case, records)
    assert 0 < len(want) < len(records), "the dataset should exercise this filter"
    emulator.stream_filters = case.filters(records)
    try:
        source = OpenCTISource(emulator.url, emulator.token, emulator.stream_id, page_size=150)
        listed = {row["id"] for row in source.list_indicators()}
    finally:
        emulator.stream_filters = None
    assert listed == want


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 15
