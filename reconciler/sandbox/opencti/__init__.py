"""A fake OpenCTI platform: GraphQL and live stream over real HTTP on 127.0.0.1.

Owns just enough of OpenCTI for pycti's ``OpenCTIApiClient`` and ``OpenCTIConnectorHelper``
(STREAM connector) to work against it unchanged: ``POST /graphql`` (``about``,
``registerConnector``, ``pingConnector``, ``deleteConnector``, ``streamCollection``,
``indicators``, ``indicator``) and ``GET /stream/{id}`` (server-sent events with ids, heartbeats,
``Last-Event-ID`` resume, first-run recovery, visibility translation against the stream filters).
GraphQL answers carry the top-level fields a query selects (sub-selections come whole), like
the real server; ``toStix`` nodes carry the same STIX rendering as the stream.
Built from OpenCTI's public documentation and pycti's observable behaviour, never from the
reconciler's code: it imports nothing from the rest of ``reconciler``. Test knobs fail listing
pages, drop stream connections and turn the stream off.

Clock: record dates of loaded datasets come from the dataset; indicators created or changed
through the emulator take the wall clock (like Redis stream ids), kept strictly increasing.

``stream_enabled = False`` makes new stream connections answer 410 (the platform's "stream
stopped"); it does not drop open ones — call :meth:`OpenCTIEmulator.disconnect_streams` for that.
pycti treats a 410 on reconnect like a dead server (it kills its process), so tests that flip it
must stop their listener first.

Modules: ``emulator`` (the ``OpenCTIEmulator`` facade: data methods, knobs, lifecycle),
``graphql`` (the resolver, listings, cursors, field selection), ``stream`` (event log, SSE
serving, recovery), ``store`` (records and rendering/listing caches), ``filters`` (FilterGroup
evaluation), ``render`` (GraphQL node, STIX object), ``server`` (HTTP routes), ``core`` (ids,
constants, ``GraphQLError``), ``cli`` (``main``).
"""

from reconciler.sandbox.opencti.cli import main
from reconciler.sandbox.opencti.core import (
    PLATFORM_VERSION,
    STIX_EXT_OCTI,
    FilterGroup,
    GraphQLError,
    Record,
    author_id,
    marking_id,
)
from reconciler.sandbox.opencti.emulator import OpenCTIEmulator
from reconciler.sandbox.opencti.filters import group_matches
from reconciler.sandbox.opencti.graphql import selected_fields
from reconciler.sandbox.opencti.render import graphql_node, stix_object

__all__ = [
    "PLATFORM_VERSION",
    "STIX_EXT_OCTI",
    "FilterGroup",
    "GraphQLError",
    "OpenCTIEmulator",
    "Record",
    "author_id",
    "graphql_node",
    "group_matches",
    "main",
    "marking_id",
    "selected_fields",
    "stix_object",
]
