"""The ``indicators`` order and pages: sort keys, cursors, and pages merged from two sources.

Owns how the fake orders a listing as the platform does (the ordering field, then
``standard_id`` ascending; missing numbers and strings last in both directions, missing dates
first when ascending and last when descending, as the index sorts them with ``missing: 0``),
the cursors (the sort key of the row, base64 JSON, continued from by value like the index's
``search_after``: a row deleted or changed since does not shift the pages), and a page taken
from the explicit records (a sorted list) merged with a generated population (a mask in the
population's listing order: see ``population``). Must not evaluate filters or render rows.
"""

from __future__ import annotations

import base64
import bisect
import json
from array import array
from dataclasses import dataclass
from typing import Any

from reconciler.sandbox.opencti.core import GraphQLError, Record
from reconciler.sandbox.opencti.filters import DATE, NUMBER, STRING, date_ms
from reconciler.sandbox.opencti.population import Population

#: IndicatorsOrdering values the fake sorts on → (record field, how it compares).
ORDERINGS: dict[str, tuple[str, str]] = {
    "created_at": ("created_at", DATE),
    "updated_at": ("updated_at", DATE),
    "created": ("created", DATE),
    "modified": ("modified", DATE),
    "valid_from": ("valid_from", DATE),
    "valid_until": ("valid_until", DATE),
    "x_opencti_score": ("score", NUMBER),
    "confidence": ("confidence", NUMBER),
    "name": ("name", STRING),
    "pattern_type": ("pattern_type", STRING),
    "id": ("id", STRING),
    "_score": ("created_at", DATE),
}
_FIELD_TIME = {"created_at": "created", "valid_from": "created", "created": "created"}
_FIELD_TIME |= {"updated_at": "updated", "modified": "updated"}


class SortKey:
    """A row's place in a listing: its value (normalised), then its standard id ascending."""

    __slots__ = ("desc", "nulls_first", "std", "value")

    def __init__(self, value: Any, std: str, desc: bool, nulls_first: bool) -> None:
        self.value = value
        self.std = std
        self.desc = desc
        self.nulls_first = nulls_first

    def __lt__(self, other: SortKey) -> bool:
        """Whether this row comes before ``other`` in the listing."""
        a, b = self.value, other.value
        if a != b:
            if a is None:
                return self.nulls_first
            if b is None:
                return not self.nulls_first
            return bool(a > b) if self.desc else bool(a < b)
        return self.std < other.std

    def cursor(self) -> str:
        return base64.urlsafe_b64encode(json.dumps([self.value, self.std]).encode()).decode()


@dataclass(frozen=True)
class Sort:
    """One ordering: record field, comparison kind, direction."""

    field: str
    kind: str
    desc: bool

    @staticmethod
    def of(order_by: str, order_mode: str) -> Sort:
        field, kind = ORDERINGS[order_by]
        return Sort(field, kind, order_mode == "desc")

    def normalise(self, value: Any) -> Any:
        if value is None:
            return None
        if self.kind == DATE:
            return date_ms(value)
        if self.kind == STRING:
            return str(value).lower()
        return value

    def key(self, value: Any, std: str) -> SortKey:
        """The key of a row whose field holds ``value`` (already normalised)."""
        return SortKey(value, std, self.desc, self.kind == DATE and not self.desc)

    def record_key(self, record: Record) -> SortKey:
        return self.key(self.normalise(record.get(self.field)), record["standard_id"])

    def decode(self, cursor: str) -> SortKey:
        """The key a cursor continues after; GraphQLError when it is not one of ours."""
        try:
            value, std = json.loads(base64.urlsafe_b64decode(cursor.encode()).decode())
            expected = str if self.kind == STRING else (int, float)
            if not isinstance(std, str) or not (value is None or isinstance(value, expected)):
                raise TypeError(value)
        except (ValueError, TypeError) as exc:
            raise GraphQLError("Invalid cursor", "UNSUPPORTED_ERROR") from exc
        return self.key(value, std)


class PopulationOrder:
    """A population in one listing order: strided runs of indices, or a sorted permutation."""

    def __init__(self, population: Population, sort: Sort) -> None:
        self.population = population
        self.sort = sort
        self.runs: list[tuple[int, int, int]] = []  # (first index, count, step)
        self.perm: array[int] | None = None
        if sort.field == "score":
            self._score_runs()
        elif sort.field in _FIELD_TIME:
            self._time_runs()
        else:
            self._sorted()
        self.starts: list[int] = []
        total = 0
        for _, count, _ in self.runs:
            self.starts.append(total)
            total += count

    def _score_runs(self) -> None:
        pop = self.population
        bounds = [*pop.block_start, pop.n]
        blocks = [(bounds[k], bounds[k + 1] - bounds[k], 1) for k in range(len(bounds) - 1)]
        # Blocks run 100..0 then missing: descending is index order, ascending reverses scores.
        self.runs = [(0, pop.n, 1)] if self.sort.desc else [*blocks[-2::-1], blocks[-1]]

    def _time_runs(self) -> None:
        pop = self.population
        columns = range(min(pop.m, pop.n))
        if self.sort.desc:
            self.runs = [
                (p + (pop.column_length(p) - 1) * pop.m, pop.column_length(p), -pop.m)
                for p in reversed(columns)
            ]
        else:
            self.runs = [(p, pop.column_length(p), pop.m) for p in columns]

    def _sorted(self) -> None:
        """Other fields: one sort of every index (slow for millions, done once per order)."""
        pop, sort = self.population, self.sort
        column = next((c for c, ps in pop.codes.items() if sort.field in ps[0]), None)

        def value(i: int) -> Any:
            if column is not None:
                return sort.normalise(pop.codes[column][pop.columns[column][i]][sort.field])
            return sort.normalise(pop.record(i).get(sort.field))

        values = [value(i) for i in range(pop.n)]
        missing_low = sort.kind == DATE and not sort.desc
        placeholder = "" if sort.kind == STRING else 0
        if sort.desc or missing_low:
            keyed = [(v is not None, placeholder if v is None else v) for v in values]
        else:
            keyed = [(v is None, placeholder if v is None else v) for v in values]
        # Index order is standard_id order: a stable sort keeps it within equal values.
        self.perm = array("i", sorted(range(pop.n), key=keyed.__getitem__, reverse=sort.desc))
        self._values = values

    def __len__(self) -> int:
        return self.population.n

    def index_at(self, position: int) -> int:
        if self.perm is not None:
            return self.perm[position]
        run = bisect.bisect_right(self.starts, position) - 1
        first, _, step = self.runs[run]
        return first + (position - self.starts[run]) * step

    def key_at(self, position: int) -> SortKey:
        i = self.index_at(position)
        return self.sort.key(self.value(i), self.population.standard_id(i))

    def value(self, i: int) -> Any:
        pop, field = self.population, self.sort.field
        if self.perm is not None:
            return self._values[i]
        if field == "score":
            return pop.score_of(i)
        return pop.time_ms(_FIELD_TIME[field], i)

    def to_order(self, mask: bytes) -> bytes:
        """An index-order mask in this listing order."""
        if self.perm is not None:
            return bytes(map(mask.__getitem__, self.perm))
        pieces = []
        for first, count, step in self.runs:
            stop: int | None = first + count * step
            if stop is not None and stop < 0:
                stop = None
            pieces.append(mask[first:stop:step])
        return b"".join(pieces)

    def seek(self, after: SortKey) -> int:
        """The first position whose row comes after ``after``."""
        lo, hi = 0, len(self)
        while lo < hi:
            mid = (lo + hi) // 2
            if after < self.key_at(mid):
                hi = mid
            else:
                lo = mid + 1
        return lo


@dataclass
class Listing:
    """Matching rows in order: explicit ones (sorted keys, internal ids) and generated ones
    (``order_mask``: 1 where the row at that position of ``order`` matches)."""

    sort: Sort
    explicit_keys: list[SortKey]
    explicit_ids: list[str]
    order: PopulationOrder | None = None
    order_mask: bytes = b""

    @property
    def total(self) -> int:
        return len(self.explicit_ids) + (self.order_mask.count(1) if self.order else 0)


@dataclass
class Page:
    """Rows of one page: (key, internal id of an explicit record or index of a generated one)."""

    rows: list[tuple[SortKey, str | int]]
    has_next: bool
    has_previous: bool


def page(listing: Listing, after: SortKey | None, first: int) -> Page:
    """Up to ``first`` rows after the cursor key, in listing order, both sources merged."""
    order, mask = listing.order, listing.order_mask
    keys, ids = listing.explicit_keys, listing.explicit_ids
    g_pos = order.seek(after) if order is not None and after is not None else 0
    e_pos = bisect.bisect_right(keys, after) if after is not None else 0
    has_previous = e_pos > 0 or (order is not None and mask.count(1, 0, g_pos) > 0)
    g_next = mask.find(1, g_pos) if order is not None else -1
    g_key = order.key_at(g_next) if order is not None and g_next >= 0 else None
    rows: list[tuple[SortKey, str | int]] = []
    while len(rows) <= first:
        e_key = keys[e_pos] if e_pos < len(keys) else None
        if g_key is None and e_key is None:
            break
        if order is not None and g_key is not None and (e_key is None or g_key < e_key):
            rows.append((g_key, order.index_at(g_next)))
            g_next = mask.find(1, g_next + 1)
            g_key = order.key_at(g_next) if g_next >= 0 else None
        else:
            assert e_key is not None
            rows.append((e_key, ids[e_pos]))
            e_pos += 1
    return Page(rows[:first], len(rows) > first, has_previous)
