"""Fingerprints of both sides of a plan: sha256 over one line per indicator, order-independent.

``fingerprint_owned`` lets ``apply`` refuse a saved plan made from another owned set;
``fingerprint_desired`` records what the plan was made for. The line builders and ``digest``
are shared with the planner, which hashes the essences it has already computed rather than
computing them again. Pure: no I/O, no plan decisions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.model import MANAGED_FIELDS, DefenderIndicator, DesiredIndicator

__all__ = ["desired_line", "digest", "fingerprint_desired", "fingerprint_owned", "owned_line"]


def digest(items: Iterable[str]) -> str:
    """sha256 over the sorted lines, each followed by a newline."""
    h = hashlib.sha256()
    for item in sorted(items):
        h.update(item.encode())
        h.update(b"\n")
    return h.hexdigest()


def owned_line(ind: DefenderIndicator, essence: Mapping[str, Any]) -> str:
    """One owned indicator: id, key, application and managed fields (``essence`` is its own)."""
    # repr of str/bool/None/list values is stable and several times faster than json.dumps.
    return repr(
        (
            ind.id,
            ind.type_name,
            ind.indicator_value,
            ind.application,
            *(essence[f] for f in MANAGED_FIELDS),
        )
    )


def desired_line(d: DesiredIndicator, essence: Mapping[str, Any]) -> str:
    """One desired indicator: key, application and managed fields (``essence`` is its own)."""
    return repr(
        (
            d.indicator_type.value,
            d.indicator_value,
            d.application,
            *(essence[f] for f in MANAGED_FIELDS),
        )
    )


def fingerprint_owned(actual_owned: Iterable[DefenderIndicator]) -> str:
    """sha256 over the owned set (id, key, application, managed fields), order-independent.
    ``apply`` compares it with a fresh listing to refuse a stale saved plan."""
    return digest(owned_line(i, i.essence()) for i in actual_owned)


def fingerprint_desired(desired: Iterable[DesiredIndicator]) -> str:
    """sha256 over the desired set (key, application, managed fields), order-independent."""
    return digest(desired_line(d, d.essence()) for d in desired)
