"""The indicator store of the Defender emulator: rows, ids, the upsert key, expiry, the quota.

Owns rows in Defender's response shape (field order of real answers), integer ids handed out
in insertion order, the index by upsert key (indicatorType, indicatorValue, action by default;
compared exactly, or by equivalent form and case-insensitively; rebuilt when either changes, the
oldest row keeping a key two rows share), purging of expired rows, creation and update of rows by
the API (upsert), snapshots to undo a refused batch, and portal-made rows and edits for tests.
The store does not lock: callers hold the emulator's lock.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from reconciler.sandbox.defender.core import ApiError, RawIndicator, parse_timestamp
from reconciler.sandbox.defender.forms import folded_key

PORTAL_USER = "admin@contoso.com"

# Real response field order.
FIELD_ORDER = (
    "id",
    "indicatorValue",
    "indicatorType",
    "action",
    "createdBy",
    "severity",
    "category",
    "application",
    "educateUrl",
    "bypassDurationHours",
    "title",
    "description",
    "recommendedActions",
    "creationTimeDateTimeUtc",
    "expirationTime",
    "lastUpdateTime",
    "lastUpdatedBy",
    "rbacGroupNames",
    "rbacGroupIds",
    "notificationId",
    "notificationBody",
    "version",
    "mitreTechniques",
    "historicalDetection",
    "lookBackPeriod",
    "generateAlert",
    "additionalInfo",
    "createdByDisplayName",
    "externalId",
    "createdBySource",
    "certificateInfo",
)
# Kept from the first submission when an upsert updates a row.
KEPT_ON_UPDATE = frozenset(
    {
        "id",
        "createdBy",
        "creationTimeDateTimeUtc",
        "application",
        "version",
        "certificateInfo",
        "createdByDisplayName",
        "createdBySource",
    }
)


def copy_row(row: RawIndicator) -> RawIndicator:
    return {name: list(value) if isinstance(value, list) else value for name, value in row.items()}


def int_id(value: str | int) -> int:
    """A row id as an int; -1 (no row) when it is not a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


class Snapshot(NamedTuple):
    """The store's rows and indexes at one moment (ids handed out are not taken back)."""

    rows: dict[int, RawIndicator]
    by_key: dict[tuple[Any, ...], int]
    expiry: dict[int, datetime]
    heap: list[tuple[datetime, int]]


class Store:
    """Indicators by integer id (insertion = id order) plus an index by upsert key.

    Rows are never changed in place (an update stores a new dict), so a listing can serialise a
    snapshot of references outside the lock.
    """

    def __init__(self, key_fields: tuple[str, ...], equivalent: bool = False) -> None:
        self.key_fields = key_fields
        self.equivalent = equivalent
        self.rows: dict[int, RawIndicator] = {}
        self.by_key: dict[tuple[Any, ...], int] = {}
        self.expiry: dict[int, datetime] = {}
        self.heap: list[tuple[datetime, int]] = []
        self.next_id = 1

    def key(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        if self.equivalent:
            return folded_key(row, self.key_fields)
        return tuple(row.get(name) for name in self.key_fields)

    def configure(self, key_fields: tuple[str, ...], equivalent: bool) -> None:
        """Use this upsert key; the index is rebuilt (oldest row first) when it changes."""
        if (key_fields, equivalent) == (self.key_fields, self.equivalent):
            return
        self.key_fields, self.equivalent = key_fields, equivalent
        self.by_key = {}
        for ident, row in self.rows.items():
            self.by_key.setdefault(self.key(row), ident)

    def snapshot(self) -> Snapshot:
        return Snapshot(dict(self.rows), dict(self.by_key), dict(self.expiry), list(self.heap))

    def restore(self, saved: Snapshot) -> None:
        """Go back to a snapshot (rows are never changed in place, so copies are enough)."""
        self.rows, self.by_key = dict(saved.rows), dict(saved.by_key)
        self.expiry, self.heap = dict(saved.expiry), list(saved.heap)

    def new_id(self) -> int:
        ident = self.next_id
        self.next_id += 1
        return ident

    def put(self, ident: int, row: RawIndicator) -> None:
        old = self.rows.get(ident)
        if old is not None and self.by_key.get(self.key(old)) == ident:
            del self.by_key[self.key(old)]
        self.rows[ident] = row
        self.by_key[self.key(row)] = ident
        text = row.get("expirationTime")
        moment = parse_timestamp(text) if isinstance(text, str) else None
        if moment is None:
            self.expiry.pop(ident, None)
        else:
            self.expiry[ident] = moment
            heapq.heappush(self.heap, (moment, ident))

    def remove(self, ident: int) -> bool:
        row = self.rows.pop(ident, None)
        if row is None:
            return False
        if self.by_key.get(self.key(row)) == ident:
            del self.by_key[self.key(row)]
        self.expiry.pop(ident, None)
        return True

    def purge(self, now: datetime) -> None:
        """Delete every row whose expirationTime is not after ``now``."""
        while self.heap and self.heap[0][0] <= now:
            moment, ident = heapq.heappop(self.heap)
            if self.expiry.get(ident) == moment:
                self.remove(ident)

    def clear(self) -> None:
        self.rows.clear()
        self.by_key.clear()
        self.expiry.clear()
        self.heap.clear()

    def upsert(
        self,
        spec: Mapping[str, Any],
        *,
        client_id: str,
        app_name: str,
        stamp: str,
        quota: int,
        check_owner: Callable[[RawIndicator], None],
    ) -> RawIndicator:
        """Create or update by the upsert key (the caller has purged); the quota binds creation.

        An update replaces every mutable field with what was sent; ``KEPT_ON_UPDATE`` fields keep
        their first values. ``check_owner`` may refuse to touch another application's row."""
        existing = self.by_key.get(self.key(spec))
        if existing is not None:
            old = self.rows[existing]
            check_owner(old)
            fresh = new_row(spec, existing, client_id, app_name, stamp)
            row = {
                name: old[name] if name in KEPT_ON_UPDATE else fresh[name] for name in FIELD_ORDER
            }
            row["lastUpdatedBy"] = client_id
            self.put(existing, row)
            return row
        if len(self.rows) >= quota:
            raise ApiError(
                400,
                "IndicatorsLimitExceeded",
                f"The tenant already holds the maximum of {quota} active indicators.",
            )
        ident = self.new_id()
        row = new_row(spec, ident, client_id, app_name, stamp)
        self.put(ident, row)
        return row

    def add_portal_row(self, fields: Mapping[str, Any], stamp: str) -> RawIndicator:
        """Insert a portal-made row (no validation, no quota); ValueError on a bad field."""
        unknown = set(fields) - set(FIELD_ORDER)
        if unknown or "id" in fields:
            raise ValueError(f"cannot set fields {sorted(unknown | ({'id'} & set(fields)))}")
        for name in ("indicatorValue", "indicatorType"):
            if name not in fields:
                raise ValueError(f"add_indicator needs {name}")
        ident = self.next_id
        base = {
            "indicatorValue": fields["indicatorValue"],
            "indicatorType": fields["indicatorType"],
            "action": fields.get("action", "Block"),
            "title": "Portal indicator",
            "description": "Added in the portal",
        }
        row = new_row(base, ident, PORTAL_USER, "Admin", stamp)
        row.update(severity="Medium", createdBySource="Portal")
        row.update(fields)
        if self.key(row) in self.by_key:
            raise ValueError(f"an indicator with key {self.key(row)} exists")
        self.new_id()
        self.put(ident, row)
        return copy_row(row)

    def edit_portal_row(self, id: str | int, fields: Mapping[str, Any], stamp: str) -> RawIndicator:
        """A portal edit of a row (the caller has purged); KeyError when there is no such row."""
        if "id" in fields or set(fields) - set(FIELD_ORDER):
            raise ValueError(f"cannot set fields {sorted(fields)}")
        ident = int_id(id)
        old = self.rows.get(ident)
        if old is None:
            raise KeyError(f"no indicator {id}")
        row = dict(old)
        row["lastUpdateTime"] = stamp
        row["lastUpdatedBy"] = PORTAL_USER
        row.update(fields)
        owner = self.by_key.get(self.key(row))
        if owner is not None and owner != ident:
            raise ValueError(f"an indicator with key {self.key(row)} exists")
        self.put(ident, row)
        return copy_row(row)


def new_row(
    spec: Mapping[str, Any], ident: int, client_id: str, app_name: str, stamp: str
) -> RawIndicator:
    def pick(name: str, default: Any = None) -> Any:
        value = spec.get(name)
        return default if value is None else value

    return {
        "id": str(ident),
        "indicatorValue": spec["indicatorValue"],
        "indicatorType": spec["indicatorType"],
        "action": spec["action"],
        "createdBy": client_id,
        "severity": pick("severity", "Informational"),
        "category": pick("category", 1),
        "application": pick("application"),
        "educateUrl": pick("educateUrl"),
        "bypassDurationHours": pick("bypassDurationHours"),
        "title": spec["title"],
        "description": spec["description"],
        "recommendedActions": pick("recommendedActions"),
        "creationTimeDateTimeUtc": stamp,
        "expirationTime": pick("expirationTime"),
        "lastUpdateTime": stamp,
        "lastUpdatedBy": None,
        "rbacGroupNames": list(pick("rbacGroupNames", [])),
        "rbacGroupIds": [],
        "notificationId": pick("notificationId"),
        "notificationBody": pick("notificationBody"),
        "version": pick("version"),
        "mitreTechniques": list(pick("mitreTechniques", [])),
        "historicalDetection": bool(pick("historicalDetection", False)),
        "lookBackPeriod": pick("lookBackPeriod"),
        "generateAlert": bool(pick("generateAlert", False)),
        "additionalInfo": pick("additionalInfo"),
        "createdByDisplayName": app_name,
        "externalId": pick("externalId"),
        "createdBySource": "PublicApi",
        "certificateInfo": pick("certificateInfo"),
    }
