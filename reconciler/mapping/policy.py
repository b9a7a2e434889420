"""The mapping policy: the configuration mapping needs, read once from settings, immutable.

Owns ``MappingPolicy`` and how it is read from settings (``from_settings`` raises
``ConfigError`` for an action or expiry it cannot use). Must not do I/O, read a clock, or know
how or where settings are loaded beyond the attribute names it reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler.errors import ConfigError
from reconciler.model import Action

__all__ = ["MappingPolicy"]


@dataclass(frozen=True)
class MappingPolicy:
    """The configuration mapping needs; built once from settings, immutable."""

    ownership_tag: str = "opencti"
    expire_days: int = 30  # 0 = no cap
    action: Action | None = None  # fixed action, else score-based
    passive_only: bool = False  # forces Audit
    rbac_group_names: tuple[str, ...] = ()
    recommended_actions: str | None = None
    generate_alert: bool = True
    educate_url: str | None = None
    reject_private_ips: bool = True

    @classmethod
    def from_settings(cls, cfg: Any) -> MappingPolicy:
        """Read ``cfg.microsoft_defender_intel.*`` (duck-typed); missing attributes keep the
        defaults. Raises ``ConfigError`` for an action or expiry we cannot use."""
        section = getattr(cfg, "microsoft_defender_intel", cfg)
        defaults = cls()
        tag = getattr(section, "ownership_tag", None) or defaults.ownership_tag
        expire = getattr(section, "expire_time", defaults.expire_days)
        try:
            expire_days = defaults.expire_days if expire is None else int(expire)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"microsoft_defender_intel.expire_time must be a whole number of days, "
                f"got {expire!r}"
            ) from exc
        if expire_days < 0:
            raise ConfigError("microsoft_defender_intel.expire_time must be >= 0 (0 = no cap)")
        groups_raw = getattr(section, "rbac_group_names", ()) or ()
        if isinstance(groups_raw, str):
            groups_raw = groups_raw.split(",")
        groups = tuple(sorted({str(g).strip() for g in groups_raw if str(g).strip()}))
        generate_alert = getattr(section, "generate_alert", True)
        return cls(
            ownership_tag=str(tag),
            expire_days=expire_days,
            action=_policy_action(getattr(section, "action", None)),
            passive_only=bool(getattr(section, "passive_only", False)),
            rbac_group_names=groups,
            recommended_actions=getattr(section, "recommended_actions", None) or None,
            generate_alert=True if generate_alert is None else bool(generate_alert),
            educate_url=getattr(section, "educate_url", None) or None,
            reject_private_ips=bool(getattr(section, "reject_private_ips", True)),
        )


def _policy_action(value: Any) -> Action | None:
    if value is None or isinstance(value, Action):
        return value
    text = str(getattr(value, "value", value)).strip()
    if text == "" or text.lower() in {"score", "auto", "none"}:
        return None
    for action in Action:
        if action.value.lower() == text.lower():
            return action
    allowed = ", ".join(a.value for a in Action)
    raise ConfigError(
        f"microsoft_defender_intel.action must be empty (score-based) or one of {allowed}, "
        f"got {text!r}"
    )
