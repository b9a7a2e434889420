"""The ``reconciler run`` process: build the controller from the settings, serve until told
to stop.

Owns the process lifecycle only: SIGTERM/SIGINT handling, the stoppable clock, building the
engine, the stream consumer (or, with leader election, the elector and a consumer per term)
and the controller through ``wiring``, and the orderly shutdown (exit code 0). Must not
reconcile or read a setting itself.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from loguru import logger

from reconciler import wiring
from reconciler.config import Settings
from reconciler.controller import Controller, StoppableClock
from reconciler.logs import add_secret
from reconciler.metrics import Metrics

if TYPE_CHECKING:
    from reconciler.opencti.stream import StreamConsumer

__all__ = ["run_service"]


def run_service(settings: Settings) -> int:
    """Build and run the controller until SIGTERM/SIGINT; returns the exit code (0). Raises the
    error that made the controller stop itself (an unusable stream filter)."""
    stop = threading.Event()
    clock = StoppableClock(stop)
    metrics = Metrics(tenant=wiring.tenant(settings))
    leadership = wiring.lease_elector(settings)  # None: leader election off

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("received {}; shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    options = wiring.controller_options(settings)
    with (
        wiring.open_engine(
            settings,
            clock=clock,
            on_token=add_secret,
            on_call=metrics.on_defender_call,
            on_lifecycle=metrics.on_lifecycle,
            long_lived=True,
        ) as engine,
        wiring.open_sightings(settings, engine, clock=clock) as sightings,
    ):
        controller = Controller(
            options,
            engine=engine,
            metrics=metrics,
            stop=stop,
            leadership=leadership,
            sightings=sightings,
            sightings_interval=wiring.sightings_interval(settings),
        )

        def consumer() -> StreamConsumer:
            return wiring.stream_consumer(
                settings, on_events=controller.handle_events, on_status=_stream_status(metrics)
            )

        if leadership is None:
            controller.consumer = consumer()
        else:
            controller.consumer_factory = consumer
        controller.start_http()
        controller.start()
        logger.info(
            "controller running: full reconcile every {} s, stream {}{}",
            int(options.interval_seconds),
            options.stream_id,
            " (dry-run: nothing is written)" if controller.dry_run else "",
        )
        stop.wait()
        controller.shutdown()
    if controller.fatal is not None:
        raise controller.fatal  # the CLI prints it and exits 1
    logger.info("stopped")
    return 0


def _stream_status(metrics: Metrics) -> Callable[[str, dict[str, Any]], None]:
    def on_status(kind: str, info: dict[str, Any]) -> None:
        if kind == "connected":
            metrics.stream_connected.set(1)
        elif kind == "disconnected":
            metrics.stream_connected.set(0)
        lag = info.get("lag") if isinstance(info, dict) else None
        if isinstance(lag, int | float):
            metrics.stream_lag.set(lag)

    return on_status
