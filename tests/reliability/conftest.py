"""Fixtures for the reliability tests (chaos, crash-restart, bad input, secrets).

Helpers shared by the files live in ``support.py``; this file only keeps one test's global
logging setup (``configure_logging`` replaces every loguru sink) from leaking into the next:
tests that configure logging request ``plain_logging_after``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from loguru import logger


@pytest.fixture
def plain_logging_after() -> Iterator[None]:
    yield
    # The CLI and the secrets tests configure loguru process-wide; give later tests a plain
    # stderr sink back (no redaction patcher, default format).
    logger.remove()
    logger.configure(patcher=lambda record: None)
    logger.add(sys.stderr)
