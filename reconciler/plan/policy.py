"""The planner's knobs: ``PlanPolicy`` (quota, delete guards, fields never corrected).

It validates its own values and nothing else; it must not read files or the environment (the
caller hands it settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler.errors import ConfigError
from reconciler.model import IGNORABLE_FIELDS

__all__ = ["PlanPolicy"]


@dataclass(frozen=True)
class PlanPolicy:
    """Knobs of the planner: quota, delete guards, fields never corrected."""

    quota: int = 15000
    max_deletes: int = 1000
    max_delete_ratio: float = 0.5
    ignore_fields: tuple[str, ...] = ()
    allow_mass_delete: bool = False
    #: The ratio guard needs at least this many deletes to trigger (small tenants churn).
    ratio_min_deletes: int = 10

    def __post_init__(self) -> None:
        unknown = [f for f in self.ignore_fields if f not in IGNORABLE_FIELDS]
        if unknown:
            raise ConfigError(
                f"reconciler.ignore_fields: {', '.join(sorted(unknown))} cannot be ignored; "
                f"allowed: {', '.join(IGNORABLE_FIELDS)} (action is identity, never ignored)"
            )
        if self.quota < 0 or self.max_deletes < 0 or not 0 <= self.max_delete_ratio <= 1:
            raise ConfigError(
                "reconciler.quota and reconciler.max_deletes must be >= 0 and "
                "reconciler.max_delete_ratio between 0 and 1"
            )

    @classmethod
    def from_settings(cls, cfg: Any) -> PlanPolicy:
        """Build from ``cfg.reconciler`` (duck-typed: ``quota``, ``max_deletes``,
        ``max_delete_ratio``, ``ignore_fields``; missing attributes keep the defaults)."""
        section = getattr(cfg, "reconciler", cfg)
        base = cls()
        return cls(
            quota=int(getattr(section, "quota", base.quota)),
            max_deletes=int(getattr(section, "max_deletes", base.max_deletes)),
            max_delete_ratio=float(getattr(section, "max_delete_ratio", base.max_delete_ratio)),
            ignore_fields=tuple(getattr(section, "ignore_fields", ()) or ()),
            allow_mass_delete=bool(getattr(section, "allow_mass_delete", False)),
            ratio_min_deletes=int(getattr(section, "ratio_min_deletes", base.ratio_min_deletes)),
        )
