"""Write-back: each OpenCTI indicator shows whether it is deployed in Defender, and why not.

- ``status``: a run's outcome per OpenCTI indicator (deployed, or not and why);
- ``references``: how a status looks in OpenCTI (external references) and the edits to get
  there;
- ``sync``: ``WriteBack``, which writes only what changed, through the ``ReferenceStore`` seam.

Pure: the OpenCTI calls live in ``reconciler.opencti.writeback``.
"""

from reconciler.writeback.references import (
    NOT_DEPLOYED,
    SOURCE_NAME,
    Attached,
    Edits,
    Reference,
    ReferenceStyle,
    Restamps,
    diff,
    marker_of,
    restamp_row,
    strip_marker,
    with_marker,
)
from reconciler.writeback.status import Deployment, Refusal, Status, deployment_statuses
from reconciler.writeback.sync import (
    Readback,
    ReferenceStore,
    StoreOutcome,
    SyncReport,
    WriteBack,
)

__all__ = [
    "NOT_DEPLOYED",
    "SOURCE_NAME",
    "Attached",
    "Deployment",
    "Edits",
    "Readback",
    "Reference",
    "ReferenceStore",
    "ReferenceStyle",
    "Refusal",
    "Restamps",
    "Status",
    "StoreOutcome",
    "SyncReport",
    "WriteBack",
    "deployment_statuses",
    "diff",
    "marker_of",
    "restamp_row",
    "strip_marker",
    "with_marker",
]
