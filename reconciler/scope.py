"""The desired state kept per OpenCTI indicator, so a stream event re-plans only what it touches.

A full reconcile fills the index from the whole listing. A scoped reconcile re-reads some
OpenCTI ids through the stream's filters (``refresh``): each one read replaces that
indicator's mapping result, each one absent (outside the filters, deleted, merged away) is
removed, and the keys affected are reported: the keys it maps to now plus the keys it mapped
to before (a pattern edit moves an indicator to new values). The merged desired state for
those keys alone is then computed with the same merge as a full run, so a key still wanted by
another OpenCTI indicator stays (its ``externalId`` moves to the new winner) and a scoped plan
equals the matching slice of a full plan.

A full read goes through ``read_row``, which remembers each listing row's mapping between
full reads: a row whose fingerprint (``updated_at`` and the fields mapping reads most) is the
same as last time, and whose mapping cannot have changed with time (the earliest expiry of its
specs, each under its own policy rule, is still ahead), is not parsed and mapped again.
OpenCTI bumps ``updated_at`` on every change of an indicator, so this saves the bulk of a
steady-state no-op without changing any result.

Pure: no I/O, no clock (``now`` is an argument).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.mapping import (
    DesiredState,
    MappingPolicy,
    MappingResult,
    OpenCTIIndicator,
    indicator_from_graphql,
    map_indicator,
    merge_results,
)
from reconciler.model import IndicatorKey, Skipped

__all__ = ["DesiredIndex", "RowRead"]


@dataclass(frozen=True, slots=True)
class RowRead:
    """One listing row as a full read used it: its id, score and ``updated_at`` (the reading
    order), and its mapping result, or the skip of a row that could not be read."""

    opencti_id: str
    score: int | None
    updated_at: datetime | None
    result: MappingResult | None
    skip: Skipped | None = None


@dataclass(frozen=True, slots=True)
class _Memo:
    fingerprint: int
    read: RowRead
    #: The mapping holds until then (an indicator expires as time passes); None: for ever.
    until: datetime | None


def _fingerprint(row: Mapping[str, Any]) -> int:
    """A 64-bit hash of what identifies a row's version (kept instead of the row's strings, so
    the memory of a 15,000-row read stays small). Labels, markings and author too: policy
    rules match on them, and an author renamed in OpenCTI does not bump ``updated_at``."""
    author = row.get("createdBy")
    return hash(
        (
            row.get("updated_at"),
            row.get("x_opencti_score"),
            row.get("revoked"),
            row.get("valid_until"),
            row.get("pattern"),
            _refs(row.get("objectLabel")),
            _refs(row.get("objectMarking")),
            (author.get("id"), author.get("name")) if isinstance(author, dict) else author,
        )
    )


def _refs(value: Any) -> Any:
    """A list of referenced objects as a tuple of their ids and names (hashable, cheap)."""
    if not isinstance(value, list):
        return value
    return tuple(
        (v.get("id"), v.get("value") or v.get("definition") or v.get("name"))
        if isinstance(v, dict)
        else v
        for v in value
    )


def _holds_until(result: MappingResult, now: datetime) -> datetime | None:
    """When ``result`` stops being the mapping of its indicator as time passes: the earliest
    expiry of its specs (each under its own rule's ``expire_time``); ``None``: never."""
    ahead = [
        d.expiration_time
        for d in result.desired
        if d.expiration_time is not None and now < d.expiration_time
    ]
    return min(ahead) if ahead else None


def _keys(result: MappingResult) -> set[IndicatorKey]:
    keys = {d.key for d in result.desired}
    keys.update(s.key for s in result.skipped if s.key is not None)
    return keys


class DesiredIndex:
    """Mapping results by OpenCTI id, with a reverse index key → contributing ids."""

    def __init__(self, policy: MappingPolicy, *, remember: bool = True) -> None:
        """``remember``: keep each full read's rows for the next (``read_row``)."""
        self.policy = policy
        self.remember = remember
        self._results: dict[str, MappingResult] = {}
        self._read_skips: dict[str, Skipped] = {}
        self._by_key: dict[IndicatorKey, set[str]] = {}
        self._memo: dict[str, _Memo] = {}
        self._memo_next: dict[str, _Memo] = {}
        # The last merged state and the contents it was merged from (see ``full_state``).
        self._state: DesiredState | None = None
        self._state_of: tuple[dict[str, MappingResult], dict[str, Skipped]] = ({}, {})
        self.loaded = False
        # The last complete index while a rebuild runs (see ``begin``/``abort``).
        self._kept: (
            tuple[dict[str, MappingResult], dict[str, Skipped], dict[IndicatorKey, set[str]], bool]
            | None
        ) = None
        #: Rows of the last full read that were mapped again (the others came from memory).
        self.mapped = 0

    def __len__(self) -> int:
        return len(self._results)

    def __contains__(self, opencti_id: object) -> bool:
        return opencti_id in self._results

    # -- filling -------------------------------------------------------------------------
    def replace_all(
        self, indicators: Iterable[OpenCTIIndicator | Skipped], *, now: datetime
    ) -> DesiredState:
        """Rebuild from a complete listing; returns the full desired state."""
        self.begin()
        try:
            for item in indicators:
                self.add(item, now=now)
        except BaseException:
            self.abort()
            raise
        return self.finish()

    def begin(self) -> None:
        """Start a rebuild (a full read adds what it reads, then calls ``finish``, or ``abort``
        when the read fails). The last complete index is kept aside until then, so a failed
        read leaves the stream's scoped runs the index they had."""
        self._kept = (self._results, self._read_skips, self._by_key, self.loaded)
        self._results, self._read_skips, self._by_key = {}, {}, {}
        self._memo_next = {}
        self.mapped = 0
        self.loaded = False

    def abort(self) -> None:
        """End a failed rebuild: back to the last complete index (or none, if there was none)."""
        if self._kept is not None:
            self._results, self._read_skips, self._by_key, self.loaded = self._kept
            self._kept = None
        self._memo_next = {}

    def read_row(self, row: Mapping[str, Any], *, now: datetime) -> RowRead:
        """Add one listing row of a rebuild: parsed and mapped, or, when it is unchanged since
        the last full read and its mapping still holds at ``now``, taken from memory."""
        ident = row.get("id")
        memo = self._memo.get(ident) if isinstance(ident, str) and self.remember else None
        fingerprint = 0
        if self.remember:
            try:
                fingerprint = _fingerprint(row)
            except TypeError:  # a value that cannot be hashed: never remembered
                memo = None
        if (
            memo is not None
            and memo.fingerprint == fingerprint
            and (memo.until is None or now < memo.until)
        ):
            read = memo.read
            self._drop(read.opencti_id)
            if read.skip is not None:
                self._read_skips[read.opencti_id] = read.skip
            elif read.result is not None:
                self._set(read.opencti_id, read.result)
            self._memo_next[read.opencti_id] = memo
            return read
        self.mapped += 1
        item = indicator_from_graphql(row)
        result = self.add(item, now=now)
        if isinstance(item, Skipped):
            read = RowRead(item.opencti_id, None, None, None, item)
            until = None
        else:
            assert result is not None  # only an unreadable row maps to None
            read = RowRead(item.id, item.score, item.updated_at, result)
            until = _holds_until(result, now)
        if read.opencti_id and self.remember and fingerprint:
            self._memo_next[read.opencti_id] = _Memo(fingerprint, read, until)
        return read

    def add(self, item: OpenCTIIndicator | Skipped, *, now: datetime) -> MappingResult | None:
        """Add one indicator of a rebuild (again: replaced); returns its mapping result, or
        ``None`` for an indicator that could not be read (kept as a skip)."""
        if isinstance(item, Skipped):
            self._drop(item.opencti_id)
            self._read_skips[item.opencti_id] = item
            return None
        result = map_indicator(item, self.policy, now)
        self._drop(item.id)
        self._set(item.id, result)
        return result

    def reread(self, rows: Iterable[Mapping[str, Any]], *, now: datetime) -> None:
        """Rows of the finished rebuild read again (their ``updated_at`` corrected): indexed
        and remembered as that rebuild's own rows, so the next full read takes them from
        memory."""
        # The last merge is rebuilt after this anyway: dropping it frees each replaced result
        # at once instead of keeping the whole previous state alive to the end.
        self._state, self._state_of = None, ({}, {})
        pending, self._memo_next = self._memo_next, {}
        try:
            for row in rows:
                read = self.read_row(row, now=now)
                memo = self._memo_next.pop(read.opencti_id, None)
                if memo is not None:  # one at a time: the old entry is freed at once
                    self._memo[read.opencti_id] = memo
        finally:
            self._memo_next = pending

    def finish(self) -> DesiredState:
        """End a rebuild; returns the full desired state. What the rebuild read is what the
        next one may take from memory."""
        self._memo, self._memo_next = self._memo_next, {}
        self._kept = None
        self.loaded = True
        return self.full_state()

    def upsert(self, indicator: OpenCTIIndicator, *, now: datetime) -> set[IndicatorKey]:
        """Replace one indicator's mapping; returns the keys affected (before and after).

        An event that changes nothing in the desired state (a replay, or an update of a field
        the mapping does not use) affects no key: stream replays cost no Defender call, and
        drift on those keys is the scheduled full reconcile's job."""
        result = map_indicator(indicator, self.policy, now)
        self._memo.pop(indicator.id, None)  # re-read outside a full read: map it next time
        if self._results.get(indicator.id) == result:
            return set()
        before = self._drop(indicator.id)
        self._read_skips.pop(indicator.id, None)
        self._set(indicator.id, result)
        return before | _keys(result)

    def remove(self, opencti_id: str) -> set[IndicatorKey]:
        """Forget one indicator (it left the stream's scope); returns the keys it affected."""
        self._memo.pop(opencti_id, None)
        self._read_skips.pop(opencti_id, None)
        return self._drop(opencti_id)

    def refresh(
        self,
        ids: Iterable[str],
        indicators: Iterable[OpenCTIIndicator | Skipped],
        *,
        now: datetime,
    ) -> set[IndicatorKey]:
        """Apply a re-read of ``ids``: ``indicators`` is what OpenCTI returned for them under
        the stream's filters. Returns every key affected (before and after)."""
        absent = set(ids)
        affected: set[IndicatorKey] = set()
        for item in indicators:
            if isinstance(item, Skipped):
                absent.discard(item.opencti_id)
                affected |= self._drop(item.opencti_id)
                self._read_skips[item.opencti_id] = item
                continue
            absent.discard(item.id)
            affected |= self.upsert(item, now=now)
        for opencti_id in absent:
            affected |= self.remove(opencti_id)
        return affected

    def _set(self, opencti_id: str, result: MappingResult) -> None:
        self._results[opencti_id] = result
        for key in _keys(result):
            self._by_key.setdefault(key, set()).add(opencti_id)

    def _drop(self, opencti_id: str) -> set[IndicatorKey]:
        old = self._results.pop(opencti_id, None)
        if old is None:
            return set()
        keys = _keys(old)
        for key in keys:
            ids = self._by_key.get(key)
            if ids is not None:
                ids.discard(opencti_id)
                if not ids:
                    del self._by_key[key]
        return keys

    # -- reading -------------------------------------------------------------------------
    def has_key(self, key: IndicatorKey) -> bool:
        """Whether any indexed indicator maps to ``key`` (desired or skipped)."""
        return key in self._by_key

    def ids_for(self, key: IndicatorKey) -> frozenset[str]:
        """The OpenCTI ids of the indexed indicators that map to ``key`` (desired or skipped)."""
        return frozenset(self._by_key.get(key, ()))

    def full_state(self) -> DesiredState:
        """The merged desired state of everything indexed (what a full run plans against).

        When every indexed result is the very object it was at the last merge (a steady-state
        full read takes them from memory), that merge is returned again, unchanged."""
        if self._state is not None and self._unchanged_since_merge():
            return self._state
        self._state = merge_results(self._results.values(), extra_skips=self._read_skips.values())
        self._state_of = (dict(self._results), dict(self._read_skips))
        return self._state

    def _unchanged_since_merge(self) -> bool:
        results, skips = self._state_of
        if len(results) != len(self._results) or len(skips) != len(self._read_skips):
            return False
        now_results, now_skips = self._results, self._read_skips
        return all(now_results.get(k) is v for k, v in results.items()) and all(
            now_skips.get(k) is v for k, v in skips.items()
        )

    def state_for(self, keys: Iterable[IndicatorKey]) -> DesiredState:
        """The merged desired state restricted to ``keys`` (what a scoped run plans against)."""
        wanted = set(keys)
        ids: set[str] = set()
        for key in wanted:
            ids.update(self._by_key.get(key, ()))
        sliced = []
        for opencti_id in sorted(ids):
            result = self._results[opencti_id]
            sliced.append(
                MappingResult(
                    desired=tuple(d for d in result.desired if d.key in wanted),
                    skipped=tuple(s for s in result.skipped if s.key in wanted),
                )
            )
        return merge_results(sliced)
