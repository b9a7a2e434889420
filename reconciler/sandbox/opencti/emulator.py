"""``OpenCTIEmulator``: the facade of the fake OpenCTI, its data methods, knobs and lifecycle.

Owns the configuration (plain attributes), the state objects shared by the other modules under
one condition (``_cond``): the record store (with the external references), the identities and
sightings, the stream's event log, the listing and mutation failures, the mutation counts, the
connector states and the request log; starting and stopping the server; the Python helpers
tests use to read and change that state (as an analyst would in the UI: with the same events).
The work lives in the modules that own it (``store``, ``writeback``, ``stream``, ``graphql``,
``server``).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from reconciler.sandbox.dataset import label_id
from reconciler.sandbox.http import serve_in_thread, stop_serving
from reconciler.sandbox.opencti import stream, writeback
from reconciler.sandbox.opencti.core import STATUS_BY_NAME, FilterGroup, Record
from reconciler.sandbox.opencti.entities import Identities, Sightings, reference_view
from reconciler.sandbox.opencti.graphql import MutationFailures, PageFailures
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
        reference_edits_move_updated_at: bool = True,
    ) -> None:
        self.host = host
        #: Whether attaching or detaching an external reference moves the indicator's
        #: ``updated_at`` and ``modified`` (undocumented: the reconciler must be right either way).
        self.reference_edits_move_updated_at = reference_edits_move_updated_at
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
        self._mutation_failures = MutationFailures()
        self._mutation_counts: Counter[str] = Counter()
        self._identities = Identities()
        self._sightings = Sightings()
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
            record = new_record(fields, stream.key_date(key), self._rng)
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
            after = changed_record(before, fields, stream.key_date(key))
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
        """Delete and emit ``delete`` carrying the last full object (its sightings go first,
        each with its own ``delete``; its external references stay)."""
        with self._cond:
            if self._store.get(indicator_id) is None:
                raise KeyError(f"no indicator {indicator_id}")
            writeback.drop_sightings_of(self, indicator_id)
            removed = self._store.remove(indicator_id)
            assert removed is not None
            before, stix = removed
            key = self._stream.next_key()
            message = f"deletes a Indicator `{before['name']}`"
            stream.emit(self, key, "delete", before, None, message=message, stix_text=stix)

    # --- write-back ----------------------------------------------------------------------------

    def external_references(self, indicator_id: str) -> list[dict[str, Any]]:
        """The references attached to an indicator (any of its ids), in attachment order:
        ``{id, source_name, external_id, url, description}``; KeyError for no indicator."""
        with self._cond:
            record = self._store.resolve(indicator_id)
            if record is None:
                raise KeyError(f"no indicator {indicator_id}")
            refs = self._store.references.by_id
            ids = record.get("external_references") or []
            return [reference_view(refs[i]) for i in ids if i in refs]

    def all_external_references(self) -> list[dict[str, Any]]:
        """Every external reference the platform holds, oldest first (same shape)."""
        with self._cond:
            return [reference_view(r) for r in self._store.references.by_id.values()]

    def attach_reference(self, indicator_id: str, **fields: Any) -> dict[str, Any]:
        """Upsert a reference from ``source_name``, ``external_id``, ``url``, ``description``
        and attach it to an indicator, as ``externalReferenceAdd`` then ``relationAdd`` do
        (same events); the reference. ``GraphQLError`` as the API would answer."""
        with self._cond:
            ref = writeback.add_reference(self, fields)
            writeback.attach_reference(self, indicator_id, ref["id"])
            return reference_view(self._store.references.by_id[ref["id"]])

    def detach_reference(self, indicator_id: str, ref_id: str) -> bool:
        """Detach a reference from an indicator as ``relationDelete`` does; whether it was
        attached (not attached: no change, no event)."""
        return writeback.detach_reference(self, indicator_id, ref_id)[1]

    def identities(self) -> list[dict[str, Any]]:
        """Identities made through ``identityAdd``, oldest first:
        ``{id, standard_id, entity_type, name, description}``."""
        with self._cond:
            keys = ("id", "standard_id", "entity_type", "name", "description")
            return [{k: i.get(k) for k in keys} for i in self._identities.by_id.values()]

    def sightings(self) -> list[dict[str, Any]]:
        """Sightings, oldest first: ``{id, standard_id, from_id, to_id, attribute_count,
        first_seen, last_seen, description, confidence, x_opencti_negative,
        external_references}`` (references as :meth:`external_references` shows them)."""
        with self._cond:
            return [writeback.sighting_view(self, s) for s in self._sightings.by_id.values()]

    def mutation_count(self, field: str | None = None) -> int:
        """Mutation root fields executed (failed ones included), of one root field name or all
        (connector bookkeeping, ``registerConnector``/``pingConnector``, included)."""
        with self._cond:
            if field is None:
                return sum(self._mutation_counts.values())
            return self._mutation_counts[field]

    # --- knobs ----------------------------------------------------------------------------------

    def fail_page(self, n: int, message: str = "Simulated listing failure") -> None:
        """The n-th (1-based) subsequent ``indicators`` request answers a GraphQL error."""
        with self._cond:
            self._page_failures.fail_page(n, message)

    def fail_after_pages(self, n: int, message: str = "Simulated listing failure") -> None:
        """Every ``indicators`` request after the next ``n`` answers a GraphQL error."""
        with self._cond:
            self._page_failures.fail_after(n, message)

    def fail_mutations(
        self, field_name: str, n: int, message: str = "Simulated mutation failure"
    ) -> None:
        """The next ``n`` executions of the mutation root field ``field_name`` (for example
        ``externalReferenceAdd``) answer a GraphQL error (``DATABASE_ERROR``) under their alias;
        the other root fields of the same document still run. ``n = 0`` cancels."""
        with self._cond:
            self._mutation_failures.fail(field_name, n, message)

    def clear_failures(self) -> None:
        """Cancel pending listing and mutation failures."""
        with self._cond:
            self._page_failures.clear()
            self._mutation_failures.clear()

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
