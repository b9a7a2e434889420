"""What every part of the fake OpenCTI shares: records, ids, the platform's constants, errors.

Owns the record and filter-group types, the deterministic internal ids of authors and markings,
the platform admin (creator of everything), the TLP markings, the Indicator workflow (statuses
and their templates), ``GraphQLError`` (with the platform's ``extensions.data``) and date
helpers. Must not know about HTTP, listings or the stream.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

from reconciler.sandbox.dataset import WORKFLOW, parse_date, status_id, status_template_id

Record = dict[str, Any]
FilterGroup = dict[str, Any]

#: The OpenCTI property extension of STIX objects (pycti ``STIX_EXT_OCTI``).
STIX_EXT_OCTI = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba"
PLATFORM_VERSION = "7.261026.0"

NAMESPACE = uuid.UUID("0d7f3a52-8c1e-4b9a-a6f2-5e3c9d1b7a44")
CREATOR_ID = "88ec0c6a-13ce-5e39-b486-354fe4a7084f"  # the platform admin, creator of everything
PARENT_TYPES = ("Indicator", "Stix-Domain-Object", "Stix-Core-Object", "Stix-Object")
TLP = {
    "TLP:CLEAR": ("marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9", "#ffffff", 1),
    "TLP:GREEN": ("marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da", "#2e7d32", 2),
    "TLP:AMBER": ("marking-definition--f88d31f6-486f-44da-b317-01333bde0b82", "#d84315", 3),
    "TLP:RED": ("marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed", "#c62828", 4),
}


class Status:
    """One status of the Indicator workflow: its id, order and template (id, name, colour)."""

    __slots__ = ("color", "id", "name", "order", "template_id")

    def __init__(self, name: str, color: str, order: int) -> None:
        self.id = status_id(name)
        self.template_id = status_template_id(name)
        self.name = name
        self.color = color
        self.order = order

    def graphql(self) -> dict[str, Any]:
        """The ``status`` field of a GraphQL node."""
        return {
            "id": self.id,
            "order": self.order,
            "template": {"id": self.template_id, "name": self.name, "color": self.color},
        }


#: The Indicator workflow by status id (statuses are what records point at).
STATUSES = {s.id: s for s in (Status(name, color, n) for n, (name, color) in enumerate(WORKFLOW))}
#: Status id by template name (NEW, APPROVED, ...).
STATUS_BY_NAME = {s.name: s.id for s in STATUSES.values()}


class GraphQLError(Exception):
    """A GraphQL error answered as HTTP 200 ``{"data": null, "errors": [...]}``; ``data`` is the
    platform's ``extensions.data`` (pycti shows it in the ``ValueError`` it raises)."""

    def __init__(
        self, message: str, code: str = "FUNCTIONAL_ERROR", data: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.data = data


def unsupported(message: str, **data: Any) -> GraphQLError:
    """The platform's ``UnsupportedError``: code ``UNSUPPORTED_ERROR``, HTTP status 500 in data."""
    return GraphQLError(
        message, "UNSUPPORTED_ERROR", {"http_status": 500, "genre": "BUSINESS", **data}
    )


def uuid5(kind: str, value: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{value}"))


@functools.lru_cache(maxsize=4096)
def author_id(name: str) -> str:
    """Deterministic internal id of an author identity."""
    return uuid5("identity", name)


@functools.lru_cache(maxsize=64)
def marking_id(name: str) -> str:
    """Deterministic internal id of a TLP marking definition."""
    return uuid5("marking", name)


def epoch_ms(iso: str) -> int:
    """Epoch milliseconds of an ISO date (ValueError when it is not one)."""
    return int(parse_date(iso).timestamp() * 1000)
