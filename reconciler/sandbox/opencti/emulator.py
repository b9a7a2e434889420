"""``OpenCTIEmulator``: the facade of the fake OpenCTI, its data methods, knobs and lifecycle.

Owns the configuration (plain attributes), the state objects shared by the other modules under
one condition (``_cond``): the record store, the stream's event log, the listing failures, the
connector states and the request log; starting and stopping the server. The work lives in the
modules that own it (``store``, ``stream``, ``graphql``, ``server``).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from reconciler.sandbox.dataset import format_date, label_id
from reconciler.sandbox.http import serve_in_thread, stop_serving
from reconciler.sandbox.opencti import stream
from reconciler.sandbox.opencti.core import STATUS_BY_NAME, FilterGroup, Record
from reconciler.sandbox.opencti.graphql import PageFailures
from reconciler.sandbox.opencti.render import graphql_node, stix_object
from reconciler.sandbox.opencti.server import Server
from reconciler.sandbox.opencti.store import RecordStore, changed_record, new_record, normalise

_REQUEST_LOG_SIZE = 100_000


class OpenCTIEmulator:
    """A fake OpenCTI on 127.0.0.1; ``start()`` it (or use ``with``) and point pycti at ``url``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "opencti-token",
        stream_id: str = "stream-1",
        stream_filters: FilterGroup | None = None,
        heartbeat_interval: float = 0.5,
        retry_ms: int | None = 200,
        max_page_size: int = 5000,
        seed: int = 0,
        event_log_size: int = 100_000,
        capabilities: tuple[str, ...] = ("BYPASS",),
        stream_public: bool = False,
    ) -> None:
        self.host = host
        #: What the token's user may do (``me { capabilities }``): a non-public stream needs
        #: TAXIIAPI ("Access data sharing"), registering a connector CONNECTORAPI; BYPASS all.
        self.capabilities = tuple(capabilities)
        self.stream_public = stream_public
        self.port = port
        self.token = token
        self.stream_id = stream_id
        self.stream_filters = stream_filters
        self.stream_name = "Live indicators"
        self.heartbeat_interval = heartbeat_interval
        self.retry_ms = retry_ms
        self.max_page_size = max_page_size
        self.stream_enabled = True
        self.requests: list[dict[str, Any]] = []
        self.connector_states: dict[str, str | None] = {}
        self._rng = random.Random(seed)
        # One condition guards all state below; stream connections wait on it for new events.
        self._cond = threading.Condition(threading.RLock())
        self._store = RecordStore()
        self._stream = stream.EventLog(event_log_size)
        self._page_failures = PageFailures()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> OpenCTIEmulator:
        """Bind and serve in a daemon thread; returns self."""
        self._server = Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = serve_in_thread(self._server, "opencti-emulator")
        return self

    def stop(self) -> None:
        """Close stream connections and stop serving."""
        self.disconnect_streams()
        if self._server is not None:
            stop_serving(self._server, self._thread)
            self._server = None
        self._thread = None

    def __enter__(self) -> OpenCTIEmulator:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- data -----------------------------------------------------------------------------------

    def load(self, records: Iterable[Record]) -> None:
        """Bulk load dataset records (no stream events)."""
        with self._cond:
            self._store.load(records)

    def load_generated(self, n: int, *, seed: int = 0, now: datetime | None = None) -> None:
        """Serve ``n`` generated indicators made on demand from their index (no stream events):
        a million cost a few megabytes. Reproducible from ``seed`` and ``now`` (default: the
        dataset's fixed date); replaces an earlier population, keeps loaded and created
        records. Created, changed and deleted indicators work on top as usual."""
        with self._cond:
            self._store.load_generated(n, seed, now)

    def indicators(self) -> list[Record]:
        """Current records (copies; a generated population is made whole: slow when large)."""
        with self._cond:
            return [dict(r) for r in self._store]

    def indicator(self, indicator_id: str) -> Record | None:
        """One current record by internal id (a copy), or None."""
        with self._cond:
            record = self._store.get(indicator_id)
            return None if record is None else dict(record)

    def count(self) -> int:
        """How many indicators the platform holds now."""
        with self._cond:
            return self._store.count()

    def create_indicator(self, **fields: Any) -> Record:
        """Create an indicator (``pattern`` required) and emit a ``create`` event. Fields are
        record keys or their OpenCTI names (``x_opencti_score``…); the workflow status is
        ``status_id`` or ``x_opencti_workflow_id`` (a status id or template name)."""
        fields = normalise(fields)
        if "pattern" not in fields:
            raise ValueError("create_indicator needs a pattern")
        with self._cond:
            key = self._stream.next_key()
            record = new_record(fields, _key_date(key), self._rng)
            self._store.put(record)
            message = f"creates a Indicator `{record['name']}`"
            stream.emit(self, key, "create", None, record, message=message)
            return dict(record)

    def update_indicator(self, indicator_id: str, **fields: Any) -> Record:
        """Change fields and emit ``update`` (or ``create``/``delete`` when visibility changes)."""
        fields = normalise(fields)
        with self._cond:
            before = self._store.get(indicator_id)
            if before is None:
                raise KeyError(f"no indicator {indicator_id}")
            key = self._stream.next_key()
            after = changed_record(before, fields, _key_date(key))
            patch, reverse, message = stream.patches(before, after)
            self._store.put(after)
            stream.emit(
                self, key, "update", before, after, message=message, context=(patch, reverse)
            )
            return dict(after)

    def revoke_indicator(self, indicator_id: str) -> Record:
        """Set ``revoked = true`` (an update)."""
        return self.update_indicator(indicator_id, revoked=True)

    def delete_indicator(self, indicator_id: str) -> None:
        """Delete and emit ``delete`` carrying the last full object."""
        with self._cond:
            removed = self._store.remove(indicator_id)
            if removed is None:
                raise KeyError(f"no indicator {indicator_id}")
            before, stix = removed
            key = self._stream.next_key()
            message = f"deletes a Indicator `{before['name']}`"
            stream.emit(self, key, "delete", before, None, message=message, stix_text=stix)

    # --- knobs ----------------------------------------------------------------------------------

    def fail_page(self, n: int, message: str = "Simulated listing failure") -> None:
        """The n-th (1-based) subsequent ``indicators`` request answers a GraphQL error."""
        with self._cond:
            self._page_failures.fail_page(n, message)

    def fail_after_pages(self, n: int, message: str = "Simulated listing failure") -> None:
        """Every ``indicators`` request after the next ``n`` answers a GraphQL error."""
        with self._cond:
            self._page_failures.fail_after(n, message)

    def clear_failures(self) -> None:
        with self._cond:
            self._page_failures.clear()

    def disconnect_streams(self) -> None:
        """Close every open stream connection now; clients reconnect with ``Last-Event-ID``."""
        with self._cond:
            for conn in self._stream.connections:
                conn.close()
            self._cond.notify_all()

    def counts(self) -> dict[str, int]:
        """Requests served, by GraphQL root field or ``stream``."""
        with self._cond:
            return dict(Counter(r["field"] for r in self.requests))

    def events(self) -> list[dict[str, Any]]:
        """The stream's event log (after visibility translation): ``{id, event, data}``."""
        with self._cond:
            return [stream.describe(event) for event in self._stream.events]

    def open_streams(self) -> int:
        """Stream connections currently open."""
        with self._cond:
            return sum(1 for c in self._stream.connections if not c.closed)

    @staticmethod
    def label_id(value: str) -> str:
        return label_id(value)

    @staticmethod
    def status_id(name: str) -> str:
        """The id of the Indicator workflow status whose template is ``name`` (``APPROVED``)."""
        return STATUS_BY_NAME[name]

    @staticmethod
    def graphql_node(record: Record) -> dict[str, Any]:
        return graphql_node(record)

    @staticmethod
    def stix_object(record: Record) -> dict[str, Any]:
        return stix_object(record)

    # --- internals ------------------------------------------------------------------------------

    def _log_request(self, entry: dict[str, Any]) -> None:
        with self._cond:
            self.requests.append(entry)
            if len(self.requests) > _REQUEST_LOG_SIZE:  # a long-running demo must not grow forever
                del self.requests[: _REQUEST_LOG_SIZE // 2]


def _key_date(key: tuple[int, int]) -> str:
    """The record date of a change logged at stream id ``key`` (its wall-clock ms)."""
    return format_date(datetime.fromtimestamp(key[0] / 1000, UTC))
