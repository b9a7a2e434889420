"""Fixtures for the Helm chart tests: the chart, loaded once, and a renderer over it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.chart.support import CHART_DIR, ChartRenderer, helm


@pytest.fixture(scope="session")
def chart() -> Iterator[Any]:
    loaded = helm.Chart.load(str(CHART_DIR))
    try:
        yield loaded
    finally:
        loaded.close()


@pytest.fixture(scope="session")
def render(chart: Any) -> ChartRenderer:
    return ChartRenderer(chart)
