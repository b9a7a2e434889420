"""The one definition of every default the settings and the policies share.

``reconciler.config`` declares its fields with these values and the policy dataclasses
(``MappingPolicy``, ``PlanPolicy``, ``Ownership``) take them as their defaults, so a default
is written once. Constants only: no imports from the rest of the package, no logic.
"""

from __future__ import annotations

__all__ = [
    "CHURN_RUNS",
    "CONNECT_TIMEOUT",
    "EXPIRE_DAYS",
    "EXPIRY_TOLERANCE_SECONDS",
    "INTERVAL_SECONDS",
    "LEASE_DURATION",
    "LEASE_NAME",
    "MAX_DELETES",
    "MAX_DELETE_RATIO",
    "OWNERSHIP_TAG",
    "QUOTA",
    "RATIO_MIN_DELETES",
    "READ_TIMEOUT",
    "REJECTED_RETRY_HOURS",
    "RENEW_DEADLINE",
    "RETRY_PERIOD",
]

#: Defender ``application`` value marking the indicators this reconciler owns.
OWNERSHIP_TAG = "opencti"
#: Longest lifetime of a deployed indicator, in days from its OpenCTI timestamp (0 = no cap).
EXPIRE_DAYS = 30
#: An owned expiry this close (seconds) to the desired one is not rewritten.
EXPIRY_TOLERANCE_SECONDS = 3600.0
#: Active indicators a Defender tenant holds (shared with every other tool).
QUOTA = 15000
#: Most deletes (and expires) one run applies without an explicit override.
MAX_DELETES = 1000
#: Largest share of the owned indicators one run deletes without an explicit override.
MAX_DELETE_RATIO = 0.5
#: The ratio guard only triggers from this many deletes on (small tenants churn).
RATIO_MIN_DELETES = 10
#: Seconds between two scheduled full reconciles.
INTERVAL_SECONDS = 300
#: Seconds to wait for a connection to the Defender API.
CONNECT_TIMEOUT = 10.0
#: Seconds to wait for a Defender answer (an import of 500 can take Defender tens of seconds).
READ_TIMEOUT = 120.0
#: Hours a body Defender refused is not sent again (0 = send it again on every run).
REJECTED_RETRY_HOURS = 12.0
#: Consecutive full runs planning the very same change for a key before it is held back.
CHURN_RUNS = 3
#: Leader election (a Kubernetes Lease), controller-runtime's timings: seconds a lease is valid
#: without renewal, seconds the leader keeps retrying a renewal, seconds between two attempts.
LEASE_DURATION = 15.0
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
#: Name of the Lease when none is configured (``-<tenant>`` is appended when a tenant is set).
LEASE_NAME = "opencti-defender-reconciler"
