"""A fake OpenCTI platform: GraphQL and live stream over real HTTP on 127.0.0.1.

Owns just enough of OpenCTI for pycti's ``OpenCTIApiClient`` and ``OpenCTIConnectorHelper``
(STREAM connector) to work against it unchanged: ``POST /graphql`` (``about``,
``registerConnector``, ``pingConnector``, ``deleteConnector``, ``streamCollection``,
``indicators``, ``indicator``) and ``GET /stream/{id}`` (server-sent events with ids, heartbeats,
``Last-Event-ID`` resume, first-run recovery, visibility translation against the stream filters).
GraphQL answers carry the top-level fields a query selects (sub-selections come whole), like
the real server; ``toStix`` nodes carry the same STIX rendering as the stream.
Write-back: mutation documents with many aliased root fields (partial failures answered per
alias) for external references (``externalReferenceAdd``, ``externalReferenceEdit``,
``stixDomainObjectEdit`` ``relationAdd``/``relationDelete``), identities (``identityAdd``) and
sightings (``stixSightingRelationshipAdd``, ``stixSightingRelationshipEdit``, the
``stixSightingRelationships`` listing), with their stream events.
Built from OpenCTI's public documentation and pycti's observable behaviour, never from the
reconciler's code: it imports nothing from the rest of ``reconciler``. Test knobs fail listing
pages and mutation root fields, drop stream connections and turn the stream off.

Clock: record dates of loaded datasets come from the dataset; indicators created or changed
through the emulator take the wall clock (like Redis stream ids), kept strictly increasing.

Scale: :meth:`OpenCTIEmulator.load_generated` serves a generated population (a million
indicators in a few megabytes, records made on demand from their index) under the loaded and
created ones; listings ordered by score or date page through it without sorting it.

``stream_enabled = False`` makes new stream connections answer 410 (the platform's "stream
stopped"); it does not drop open ones — call :meth:`OpenCTIEmulator.disconnect_streams` for that.
pycti treats a 410 on reconnect like a dead server (it kills its process), so tests that flip it
must stop their listener first.

Modules: ``emulator`` (the ``OpenCTIEmulator`` facade: data methods, knobs, lifecycle),
``graphql`` (the resolver, field selection), ``document`` (reading GraphQL documents),
``mutations`` (mutation root fields: inputs and answers), ``writeback`` (external references,
identities and sightings changed, with their events), ``entities`` (those objects and their
identities), ``listing`` (orderings, cursors, pages), ``stream`` (event log, SSE serving,
recovery), ``store`` (records over a population, caches), ``population`` (generated
indicators), ``filters`` (FilterGroup checks and evaluation, the platform's semantics),
``render`` (GraphQL nodes, STIX objects), ``server`` (HTTP routes), ``core`` (ids, constants,
workflow, ``GraphQLError``), ``cli`` (``main``).
"""

from reconciler.sandbox.opencti.cli import main
from reconciler.sandbox.opencti.core import (
    CREATOR_ID,
    PLATFORM_VERSION,
    STATUS_BY_NAME,
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
from reconciler.sandbox.opencti.population import Population
from reconciler.sandbox.opencti.render import graphql_node, stix_object

__all__ = [
    "CREATOR_ID",
    "PLATFORM_VERSION",
    "STATUS_BY_NAME",
    "STIX_EXT_OCTI",
    "FilterGroup",
    "GraphQLError",
    "OpenCTIEmulator",
    "Population",
    "Record",
    "author_id",
    "graphql_node",
    "group_matches",
    "main",
    "marking_id",
    "selected_fields",
    "stix_object",
]
