"""Fixtures for the desired-state source: a fake OpenCTI with a 20,000-indicator dataset."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.opencti import OpenCTIEmulator

TOKEN = "s3cr3t-opencti-token-4242"


@pytest.fixture(scope="module")
def big_dataset() -> list[dict[str, Any]]:
    return generate_indicators(20_000, seed=7)


@pytest.fixture(scope="module")
def big_emulator(big_dataset: list[dict[str, Any]]) -> Iterator[OpenCTIEmulator]:
    """One shared fake for the 20k tests; tests that change knobs restore them."""
    with OpenCTIEmulator(token=TOKEN, stream_id="big-stream") as emu:
        emu.load(big_dataset)
        yield emu


@pytest.fixture
def emulator() -> Iterator[OpenCTIEmulator]:
    """A small fake per test (200 indicators)."""
    with OpenCTIEmulator(token=TOKEN) as emu:
        emu.load(generate_indicators(200, seed=3))
        yield emu
