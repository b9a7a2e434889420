"""The identity of another application's indicator: ``ForeignIdentity`` / ``foreign_identity``.

Defender upserts on (type, value, action); this module only says what that identity is for a
row, in the loosest comparison we must assume. What the planner does with a desired key that
matches one (skip it, delete our copy) is the rule in ``planner``. No I/O, no plan decisions.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ForeignIdentity", "foreign_identity"]

#: (indicatorType, casefolded indicatorValue, action) of an indicator another application holds.
ForeignIdentity = tuple[str, str, str]


def foreign_identity(type_: Any, value: Any, action: Any) -> ForeignIdentity | None:
    """The identity Defender's upsert would match, in the loosest comparison we must assume
    (value case is UNCONFIRMED, so case-insensitive). ``None`` for a row missing a part."""
    parts = (type_, value, action)
    if not all(isinstance(p, str) and p.strip() for p in parts):
        return None
    return (str(type_).strip(), str(value).strip().casefold(), str(action).strip())
