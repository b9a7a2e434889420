"""Reading the desired state within the quota: cost follows Defender's 15,000, not OpenCTI's size.

A platform may hold hundreds of thousands of indicators the stream selects; Defender holds at
most 15,000 (less what other tools use). ``read_within_quota`` reads OpenCTI in priority order
and stops once the free room is filled:

1. **By score, highest first** (``iter_by_priority``), mapping each page as it arrives. Each
   new deployable key counts, except keys another application holds (they take no room).
   When the count reaches the free room at score ``s``, reading stops there.
2. **The tie at ``s``, newest first** (``iter_score_tie``): the planner ranks equal scores by
   ``updated_at``, so the keys at ``s`` are read newest first until the room is filled,
   finishing the indicators that share the last ``updated_at``. Memory stays bounded even when
   a feed gives 100,000 indicators the same score.
3. **Owned keys not read**: an indicator we deployed that now sits below the cut, was revoked
   or expired, or left the stream is looked up by its OpenCTI id (our indicators' ``externalId``)
   through the same filters, so the planner sees why (``quota``, ``revoked``/``expired``,
   ``not_in_opencti``) exactly as if everything had been read. In a steady state every owned
   key is read in step 1 and this costs nothing.

What was not read is counted from the listing's ``globalCount`` and reported in the plan
(``quota.not_read``), never listed. Owns this reading strategy only; mapping, merging and
planning stay where they are (``scope``, ``mapping``, ``plan``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from reconciler.mapping import MappingResult
from reconciler.model import DefenderIndicator, IndicatorKey
from reconciler.plan import ForeignIdentity, foreign_identity
from reconciler.scope import DesiredIndex, RowRead

__all__ = ["Page", "PrioritySource", "ReadStats", "as_row", "read_within_quota"]

_T = TypeVar("_T")
FilterGroup = dict[str, Any]


class Page(Protocol):
    """One page of a listing (``opencti.source.Page``)."""

    @property
    def rows(self) -> list[dict[str, Any]]: ...

    @property
    def total(self) -> int | None: ...


class PrioritySource(Protocol):
    """The reads the bounded reader needs (``OpenCTISource`` satisfies it)."""

    def listing_filters(self) -> FilterGroup: ...

    def iter_by_priority(self, listing: FilterGroup) -> Iterator[Page]: ...

    def iter_score_tie(self, listing: FilterGroup, score: int | None) -> Iterator[Page]: ...

    def read_ids(
        self,
        ids: Iterable[str],
        parse: Callable[[dict[str, Any]], _T],
        *,
        listing: FilterGroup | None = None,
    ) -> list[_T]: ...


@dataclass(frozen=True)
class ReadStats:
    """What a bounded read did: how many indicators the filters match (``None``: the
    platform did not say), how many were read, the score the read stopped at (``None``: it
    read everything), and how many owned keys were looked up by id."""

    matching: int | None
    read: int
    cut_score: int | None
    stopped: bool
    looked_up: int

    @property
    def not_read(self) -> int:
        """Matching indicators below the cut that were never read."""
        return max(0, self.matching - self.read) if self.matching is not None else 0


def _count(
    result: MappingResult | None,
    into: set[IndicatorKey],
    counted: set[IndicatorKey],
    held: Collection[ForeignIdentity],
) -> None:
    """Add the new deployable keys of ``result`` to ``into`` (not those already ``counted``,
    nor those another application holds: they take no room)."""
    if result is None:
        return
    for d in result.desired:
        key = d.key
        if key in counted or key in into:
            continue
        if foreign_identity(key.type.value, key.value) in held:
            continue
        into.add(key)


def read_within_quota(
    source: PrioritySource,
    index: DesiredIndex,
    *,
    free: int,
    held: Collection[ForeignIdentity],
    owned: Iterable[DefenderIndicator],
    now: datetime,
    on_page: Callable[[int], None] | None = None,
) -> ReadStats:
    """Fill ``index`` with what the quota can hold (see the module docstring)."""
    listing = source.listing_filters()
    index.begin()
    try:
        seen: set[str] = set()

        def read(row: dict[str, Any]) -> RowRead:
            row_read = index.read_row(row, now=now)
            seen.add(row_read.opencti_id)
            return row_read

        matching, cut, above = _read_by_score(source, listing, free, held, read, on_page)
        if cut is not None:
            _finish_tie(source, listing, cut[0], above, free, held, read)
        looked_up = _look_up_owned(source, listing, index, owned, seen, read)
    except BaseException:
        index.abort()  # a partial read: the last complete index stays
        raise
    index.finish()
    return ReadStats(
        matching=matching,
        read=len(seen),
        cut_score=cut[0] if cut is not None else None,
        stopped=cut is not None,
        looked_up=looked_up,
    )


_Read = Callable[[dict[str, Any]], RowRead]


def _read_by_score(
    source: PrioritySource,
    listing: FilterGroup,
    free: int,
    held: Collection[ForeignIdentity],
    read_row: _Read,
    on_page: Callable[[int], None] | None,
) -> tuple[int | None, tuple[int | None] | None, set[IndicatorKey]]:
    """Step 1: (matching count, the score where the room filled or ``None``, the keys of the
    scores above it)."""
    above: set[IndicatorKey] = set()  # keys of the scores above the current one
    group: set[IndicatorKey] = set()  # keys of the current score
    group_score: int | None = None
    matching: int | None = None
    read = 0
    for page in source.iter_by_priority(listing):
        matching = page.total if matching is None else matching
        for row in page.rows:
            read += 1
            got = read_row(row)
            if got.skip is not None:
                continue
            if got.score != group_score:
                above |= group
                group, group_score = set(), got.score
            _count(got.result, group, above, held)
            if len(above) + len(group) >= free:
                return matching, (got.score,), above
        if on_page is not None:
            on_page(read)
    return matching, None, above


def _finish_tie(
    source: PrioritySource,
    listing: FilterGroup,
    score: int | None,
    above: set[IndicatorKey],
    free: int,
    held: Collection[ForeignIdentity],
    read_row: _Read,
) -> None:
    """Step 2: the indicators at the boundary score, newest first, until the room is filled,
    finishing those that share the last ``updated_at``."""
    tie: set[IndicatorKey] = set()
    filled_at: datetime | None = None
    filled = False
    for page in source.iter_score_tie(listing, score):
        for row in page.rows:
            got = read_row(row)
            if got.skip is not None:
                continue
            if filled and got.updated_at != filled_at:
                return
            _count(got.result, tie, above, held)
            if not filled and len(above) + len(tie) >= free:
                filled, filled_at = True, got.updated_at


def _look_up_owned(
    source: PrioritySource,
    listing: FilterGroup,
    index: DesiredIndex,
    owned: Iterable[DefenderIndicator],
    seen: set[str],
    read_row: _Read,
) -> int:
    """Step 3: the OpenCTI indicators behind owned keys nothing read so far contributes to;
    returns how many ids were looked up."""
    ids = {
        ind.external_id
        for ind in owned
        if ind.external_id
        and ind.external_id not in seen
        and (ind.key is None or not index.has_key(ind.key))
    }
    if not ids:
        return 0
    # Read as the listing rows are (``read_row``): a row unchanged since the last full read is
    # taken from memory, so a steady state that looks the same ids up every run stays steady.
    for row in source.read_ids(sorted(ids), as_row, listing=listing):
        read_row(row)
    return len(ids)


def as_row(row: dict[str, Any]) -> dict[str, Any]:
    """``read_ids``' conversion that keeps the raw listing row (to be read by the index)."""
    return row
