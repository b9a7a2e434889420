"""Fixtures for end-to-end tests: both sandbox servers and a config file pointing at them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.opencti import OpenCTIEmulator
from tests.e2e.support import Sandbox, write_config


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with DefenderEmulator(rate_limits=True) as defender, OpenCTIEmulator() as opencti:
        config = write_config(tmp_path / "config.yml", defender, opencti)
        yield Sandbox(defender, opencti, config)
