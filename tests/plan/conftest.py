"""Fixtures for plan and report tests (the factories live in ``factories.py``)."""

from __future__ import annotations

import pytest

from reconciler.plan import Plan
from tests.plan.factories import golden_plan


@pytest.fixture
def sample_plan() -> Plan:
    """The fixed plan of the golden files: every action, a blocked guard, skips."""
    return golden_plan()
