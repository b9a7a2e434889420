"""Builds the concrete adapters (OpenCTI source, Defender client, engine) from settings.

The only place that knows which classes implement the seams; the CLI and the controller call
it, tests may build the pieces themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from reconciler.clock import Clock
from reconciler.defender.client import DefenderClient
from reconciler.engine import Engine
from reconciler.opencti.source import OpenCTISource

__all__ = ["open_engine"]


@contextmanager
def open_engine(
    settings: Any,
    *,
    clock: Clock | None = None,
    on_token: Callable[[str], None] | None = None,
    on_call: Callable[[str, int | None], None] | None = None,
) -> Iterator[Engine]:
    """Yield an ``Engine`` wired to the configured OpenCTI and Defender; closes clients."""
    client = DefenderClient.from_settings(settings, clock=clock, on_token=on_token, on_call=on_call)
    try:
        source = OpenCTISource.from_settings(settings)
        yield Engine.from_settings(settings, source=source, defender=client, clock=clock)
    finally:
        client.close()
