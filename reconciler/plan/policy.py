"""The planner's knobs: ``PlanPolicy`` (quota, delete guards, fields never corrected).

It validates its own values and nothing else; it must not read settings, files or the
environment (``reconciler.wiring`` builds it from the settings; tests build it directly).
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.defaults import (
    EXPIRY_TOLERANCE_SECONDS,
    MAX_DELETE_RATIO,
    MAX_DELETES,
    QUOTA,
    RATIO_MIN_DELETES,
)
from reconciler.errors import ConfigError
from reconciler.model import IGNORABLE_FIELDS

__all__ = ["PlanPolicy"]


@dataclass(frozen=True)
class PlanPolicy:
    """Knobs of the planner: quota, delete guards, fields never corrected."""

    quota: int = QUOTA
    max_deletes: int = MAX_DELETES
    max_delete_ratio: float = MAX_DELETE_RATIO
    ignore_fields: tuple[str, ...] = ()
    #: Lifts the mass-deletion guards (``apply --allow-mass-delete``), never from settings.
    allow_mass_delete: bool = False
    #: The ratio guard needs at least this many deletes to trigger (small tenants churn).
    ratio_min_deletes: int = RATIO_MIN_DELETES
    #: An owned expiry this close (seconds) to the desired one is left as it is: the
    #: write-back's own edits move an indicator's ``updated_at`` (the expiry's base) by
    #: seconds, which must not rewrite every indicator in Defender (0 = exact).
    expiry_tolerance_seconds: float = EXPIRY_TOLERANCE_SECONDS

    def __post_init__(self) -> None:
        unknown = [f for f in self.ignore_fields if f not in IGNORABLE_FIELDS]
        if unknown:
            raise ConfigError(
                f"reconciler.ignore_fields: {', '.join(sorted(unknown))} cannot be ignored; "
                f"allowed: {', '.join(IGNORABLE_FIELDS)} (action is identity, never ignored)"
            )
        if (
            self.quota < 0
            or self.max_deletes < 0
            or self.expiry_tolerance_seconds < 0
            or not 0 <= self.max_delete_ratio <= 1
        ):
            raise ConfigError(
                "reconciler.quota and reconciler.max_deletes must be >= 0 and "
                "reconciler.max_delete_ratio between 0 and 1"
            )
