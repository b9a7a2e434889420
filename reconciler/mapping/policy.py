"""The mapping policy: what mapping needs from the configuration, typed and immutable.

Owns ``MappingPolicy``. Built once by ``reconciler.wiring`` from the settings (the only place
that reads them); tests build it directly. Must not do I/O, read a clock, or read settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.defaults import EXPIRE_DAYS, OWNERSHIP_TAG
from reconciler.model import Action

__all__ = ["MappingPolicy"]


@dataclass(frozen=True)
class MappingPolicy:
    """The configuration mapping needs. ``rbac_group_names`` is kept sorted and unique (so
    the desired side never differs by the order groups were listed in)."""

    ownership_tag: str = OWNERSHIP_TAG  # the ``application`` written on every indicator
    expire_days: int = EXPIRE_DAYS  # 0 = no cap
    action: Action | None = None  # fixed action, else score-based
    passive_only: bool = False  # forces Audit
    rbac_group_names: tuple[str, ...] = ()
    recommended_actions: str | None = None
    generate_alert: bool = True
    educate_url: str | None = None
    reject_private_ips: bool = True

    def __post_init__(self) -> None:
        if self.expire_days < 0:
            raise ValueError("expire_days must be >= 0 (0 = no cap)")
        groups = tuple(sorted({g.strip() for g in self.rbac_group_names if g.strip()}))
        object.__setattr__(self, "rbac_group_names", groups)
