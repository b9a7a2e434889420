"""The desired state kept per OpenCTI indicator, so a stream event re-plans only what it touches.

A full reconcile fills the index from the whole listing. A scoped reconcile re-reads some
OpenCTI ids through the stream's filters (``refresh``): each one read replaces that
indicator's mapping result, each one absent (outside the filters, deleted, merged away) is
removed, and the keys affected are reported: the keys it maps to now plus the keys it mapped
to before (a pattern edit moves an indicator to new values). The merged desired state for
those keys alone is then computed with the same merge as a full run, so a key still wanted by
another OpenCTI indicator stays (its ``externalId`` moves to the new winner) and a scoped plan
equals the matching slice of a full plan.

Pure: no I/O, no clock (``now`` is an argument).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from reconciler.mapping import (
    DesiredState,
    MappingPolicy,
    MappingResult,
    OpenCTIIndicator,
    map_indicator,
    merge_results,
)
from reconciler.model import IndicatorKey, Skipped

__all__ = ["DesiredIndex"]


def _keys(result: MappingResult) -> set[IndicatorKey]:
    keys = {d.key for d in result.desired}
    keys.update(s.key for s in result.skipped if s.key is not None)
    return keys


class DesiredIndex:
    """Mapping results by OpenCTI id, with a reverse index key → contributing ids."""

    def __init__(self, policy: MappingPolicy) -> None:
        self.policy = policy
        self._results: dict[str, MappingResult] = {}
        self._read_skips: dict[str, Skipped] = {}
        self._by_key: dict[IndicatorKey, set[str]] = {}
        self.loaded = False

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
        for item in indicators:
            self.add(item, now=now)
        return self.finish()

    def begin(self) -> None:
        """Start a rebuild (a full read adds what it reads, then calls ``finish``)."""
        self._results.clear()
        self._read_skips.clear()
        self._by_key.clear()
        self.loaded = False

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

    def finish(self) -> DesiredState:
        """End a rebuild; returns the full desired state."""
        self.loaded = True
        return self.full_state()

    def upsert(self, indicator: OpenCTIIndicator, *, now: datetime) -> set[IndicatorKey]:
        """Replace one indicator's mapping; returns the keys affected (before and after).

        An event that changes nothing in the desired state (a replay, or an update of a field
        the mapping does not use) affects no key: stream replays cost no Defender call, and
        drift on those keys is the scheduled full reconcile's job."""
        result = map_indicator(indicator, self.policy, now)
        if self._results.get(indicator.id) == result:
            return set()
        before = self._drop(indicator.id)
        self._read_skips.pop(indicator.id, None)
        self._set(indicator.id, result)
        return before | _keys(result)

    def remove(self, opencti_id: str) -> set[IndicatorKey]:
        """Forget one indicator (it left the stream's scope); returns the keys it affected."""
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

    def full_state(self) -> DesiredState:
        """The merged desired state of everything indexed (what a full run plans against)."""
        return merge_results(self._results.values(), extra_skips=self._read_skips.values())

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
