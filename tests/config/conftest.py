"""Fixtures for the config and logging tests: a working directory without a config.yml."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory so ``load_settings(None)`` never finds a stray config.yml."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
