"""The identity of another application's indicator: ``ForeignIdentity`` / ``foreign_identity``.

Defender's upsert key is not documented: (type, value, action) is observed, (type, value) is
plausible. Importing a key that matches another application's indicator under *either* rule
could rewrite that indicator, so the identity here is the looser one: type and value, the value
in canonical form and case-folded (value case is not documented either). What the planner does
with a desired key that matches (skip it, delete our copy) is the rule in ``planner``. No I/O,
no plan decisions.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ForeignIdentity", "foreign_identity"]

#: (indicatorType, canonical casefolded indicatorValue) of an indicator another application holds.
ForeignIdentity = tuple[str, str]


def foreign_identity(type_: Any, value: Any) -> ForeignIdentity | None:
    """The identity Defender's upsert could match, in the loosest comparison we must assume.
    ``value`` should already be canonical (``mapping.canonical_value``). ``None`` for a row
    missing a part."""
    if not (isinstance(type_, str) and type_.strip() and isinstance(value, str) and value.strip()):
        return None
    return (type_.strip(), value.strip().casefold())
