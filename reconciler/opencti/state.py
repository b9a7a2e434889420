"""Where the live-stream position lives across restarts.

Owns the ``PositionStore`` seam and its three implementations:

- ``FileStore``: a small JSON file ``{"start_from": "<id>", "updated": "<iso>"}``, written
  atomically (temp file + ``os.replace``); used when ``reconciler.state_path`` is set.
- ``MemoryStore``: in-process only (tests, ``--once`` runs); records every save.
- ``OpenCTIConnectorStore``: the position kept in OpenCTI's own connector state, the way pycti's
  stream connectors keep theirs: the connector is registered (``registerConnector``, type
  ``STREAM``) and its ``connector_state`` JSON string ``{"start_from": ...}`` is read from the
  answer; saves are sent with ``pingConnector`` at most every ``min_interval`` seconds, plus on
  ``flush()``. It never calls ``deleteConnector`` (that would drop the stored state).

Must not: read the stream, decide what a position means, or crash its caller on I/O failure
beyond raising ``SourceError`` (the consumer logs it and retries on the next save). Never logs
the token.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from loguru import logger

from reconciler.clock import Clock, SystemClock
from reconciler.errors import SourceError, excerpt

__all__ = ["FileStore", "MemoryStore", "OpenCTIConnectorStore", "PositionStore"]


class PositionStore(Protocol):
    """Keeps the last fully handled stream position (an SSE id such as ``1700000000000-0``)."""

    def load(self) -> str | None:
        """The stored position, or None when there is none (first run)."""
        ...

    def save(self, position: str) -> None:
        """Remember ``position``; may defer the write (see ``flush``)."""
        ...

    def flush(self) -> None:
        """Write any deferred position now (called on shutdown)."""
        ...


class MemoryStore:
    """A position kept in memory only; ``saved`` lists every position saved, in order."""

    def __init__(self, initial: str | None = None) -> None:
        self._position = initial
        self._lock = threading.Lock()
        self.saved: list[str] = []
        self.flushes = 0

    def load(self) -> str | None:
        with self._lock:
            return self._position

    def save(self, position: str) -> None:
        with self._lock:
            self._position = position
            self.saved.append(position)

    def flush(self) -> None:
        with self._lock:
            self.flushes += 1


class FileStore:
    """A position in a JSON file, replaced atomically so a crash never leaves half a file."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Clock | None = None) -> None:
        self.path = Path(path)
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()

    def load(self) -> str | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SourceError(f"cannot read stream state file {self.path}: {exc}") from exc
        try:
            doc = json.loads(text)
        except ValueError:
            # A damaged file only costs a replay, which is harmless: start afresh.
            logger.warning("stream state file {} is not JSON; starting afresh", self.path)
            return None
        position = doc.get("start_from") if isinstance(doc, dict) else None
        return position if isinstance(position, str) and position else None

    def save(self, position: str) -> None:
        doc = {"start_from": position, "updated": self._clock.now().isoformat()}
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(
                    prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
                )
                try:
                    with os.fdopen(fd, "w", encoding="utf-8") as fh:
                        json.dump(doc, fh)
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.replace(tmp, self.path)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
            except OSError as exc:
                raise SourceError(f"cannot write stream state file {self.path}: {exc}") from exc

    def flush(self) -> None:
        """Nothing is deferred: every save is already on disk."""


#: What pycti reports about a stream connector in ``pingConnector`` (``ConnectorInfo``).
_CONNECTOR_INFO: dict[str, Any] = {
    "run_and_terminate": False,
    "buffering": False,
    "queue_threshold": 500.0,
    "queue_messages_size": 0.0,
    "next_run_datetime": None,
    "last_run_datetime": None,
}

ApiFactory = Callable[[], Any]


class OpenCTIConnectorStore:
    """The position kept in OpenCTI's connector state, registered and pinged through pycti.

    Nothing touches the network until the first ``load``/``save``. A ``save`` pings at most
    every ``min_interval`` seconds; a skipped one is sent by a later ``save`` or by ``flush``.
    A failed ping keeps the position pending, so the next ``save``/``flush`` retries it.
    """

    def __init__(
        self,
        url: str,
        token: str,
        connector_id: str,
        *,
        connector_name: str = "OpenCTI Defender reconciler",
        scope: str = "Indicator",
        ssl_verify: bool | str = False,
        min_interval: float = 10.0,
        request_timeout: int = 10,
        clock: Clock | None = None,
        api_factory: ApiFactory | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._token = token
        self.connector_id = connector_id
        self._name = connector_name
        self._scope = scope
        self._ssl_verify = ssl_verify
        self.min_interval = min_interval
        self._timeout = request_timeout
        self._clock = clock or SystemClock()
        self._api_factory = api_factory
        self._api: Any = None
        self._lock = threading.RLock()
        self._state: dict[str, Any] | None = None  # None until registered
        self._dirty = False
        self._last_ping: float | None = None

    def load(self) -> str | None:
        with self._lock:
            state = self._register()
            position = state.get("start_from") or state.get("connectorLastEventId")
            return position if isinstance(position, str) and position else None

    def save(self, position: str) -> None:
        with self._lock:
            state = self._register()
            if state.get("start_from") != position:
                state["start_from"] = position
                self._dirty = True
            now = self._clock.monotonic()
            if self._dirty and (
                self._last_ping is None or now - self._last_ping >= self.min_interval
            ):
                self._ping()

    def flush(self) -> None:
        with self._lock:
            if self._state is not None and self._dirty:
                self._ping()

    # -- internals ------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._api is None:
            try:
                if self._api_factory is not None:
                    self._api = self._api_factory()
                else:
                    # Imported here: pycti takes over a second to import and is only needed
                    # when this store is really used.
                    from pycti import OpenCTIApiClient

                    self._api = OpenCTIApiClient(
                        self._url,
                        self._token,
                        log_level="error",
                        ssl_verify=self._ssl_verify,
                        requests_timeout=self._timeout,
                        perform_health_check=False,  # registerConnector checks as much
                        json_logging=False,
                    )
                    from reconciler.opencti.source import quiet_pycti

                    quiet_pycti()
            except Exception as exc:
                raise self._error("cannot reach OpenCTI", exc) from exc
        return self._api

    def _register(self) -> dict[str, Any]:
        if self._state is not None:
            return self._state
        api = self._client()
        try:
            from pycti.connector.opencti_connector import OpenCTIConnector

            connector = OpenCTIConnector(
                connector_id=self.connector_id,
                connector_name=self._name,
                connector_type="STREAM",
                scope=self._scope,
                auto=False,
                only_contextual=False,
                playbook_compatible=False,
                auto_update=False,
                enrichment_resolution="none",
            )
            answer = api.connector.register(connector)
        except Exception as exc:
            raise self._error("registerConnector failed", exc) from exc
        self._state = _parse_state(answer.get("connector_state") if answer else None)
        logger.info(
            "registered stream connector {} (stored position: {})",
            self.connector_id,
            self._state.get("start_from") or "none",
        )
        return self._state

    def _ping(self) -> None:
        assert self._state is not None
        sent = dict(self._state)
        try:
            answer = self._client().connector.ping(self.connector_id, sent, dict(_CONNECTOR_INFO))
        except Exception as exc:
            raise self._error("pingConnector failed", exc) from exc
        self._dirty = False
        self._last_ping = self._clock.monotonic()
        remote = _parse_state(answer.get("connector_state") if answer else None)
        if remote != sent:
            # pycti adopts the platform's value (how "reset state" in the UI works); we do too,
            # so the next start resumes from what the platform says.
            logger.warning("connector state of {} was changed on the platform", self.connector_id)
            self._state = remote

    def _error(self, what: str, exc: Exception) -> SourceError:
        text = str(exc).replace(self._token, "***") if self._token else str(exc)
        message = excerpt(text)
        return SourceError(f"OpenCTI connector state: {what}: {type(exc).__name__}: {message}")


def _parse_state(raw: object) -> dict[str, Any]:
    """The connector state JSON string as a dict; empty for null/""/"null"/garbage."""
    if isinstance(raw, dict):
        return dict(raw)
    if not isinstance(raw, str) or not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return dict(value) if isinstance(value, dict) else {}
