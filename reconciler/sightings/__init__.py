"""Sightings: the alerts our indicators raise in Defender become OpenCTI sightings.

- ``hits``: an alert's evidence → the OpenCTI indicators it is a hit of (pure);
- ``job``: one pass (alerts since the checkpoint → hits → sightings → checkpoint), behind the
  ``AlertSource`` (``reconciler.defender.graph``) and ``SightingSink``
  (``reconciler.opencti.sightings``) seams.
"""

from reconciler.sightings.hits import Hit, evidence_keys, match_hits, read_alert
from reconciler.sightings.job import (
    AlertSource,
    Checkpoint,
    CheckpointStore,
    FileCheckpoint,
    MemoryCheckpoint,
    SightingSink,
    SightingsJob,
    SightingsReport,
    SinkOutcome,
)

__all__ = [
    "AlertSource",
    "Checkpoint",
    "CheckpointStore",
    "FileCheckpoint",
    "Hit",
    "MemoryCheckpoint",
    "SightingSink",
    "SightingsJob",
    "SightingsReport",
    "SinkOutcome",
    "evidence_keys",
    "match_hits",
    "read_alert",
]
