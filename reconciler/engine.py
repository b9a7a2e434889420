"""Every reconcile, full or scoped, goes through here: read → map → plan → guards → apply.

- ``reconcile_full`` (the scheduled run, ``reconciler apply``): list every indicator the
  stream's filters select, map them, list Defender, plan, apply.
- ``reconcile_ids`` (the live stream): a stream event only says *which* OpenCTI indicators to
  look at again. Those ids are re-read from OpenCTI through the stream's own filters, mapped by
  the same code as the full run and planned for the keys they affect (the keys they map to now
  and the keys they mapped to before, from the ``DesiredIndex``). An id the filters exclude
  contributes nothing; one that is gone or revoked is handled exactly as the full run would.
  The event's payload is never used as desired state.
- ``explain`` (``reconciler plan --explain VALUE``): the full plan, then what OpenCTI, the
  policy and Defender say about one value (see ``reconciler.explain``).

This module orchestrates I/O behind the ``DesiredSource`` / ``DefenderReader`` seams; the
decisions live in ``mapping`` and ``plan`` (pure), the rendering in ``report``. It reads no
settings: ``wiring`` builds it with typed policies.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from loguru import logger

from reconciler.apply import ApplyResult, DefenderWriter, apply_plan
from reconciler.clock import Clock, SystemClock
from reconciler.errors import ReconcilerError, StalePlanError
from reconciler.explain import DefenderRow, Explanation
from reconciler.gcpause import paused_gc
from reconciler.mapping import (
    DesiredState,
    MappingPolicy,
    indicator_from_graphql,
    keys_for,
    trace_indicator,
)
from reconciler.model import (
    DefenderIndicator,
    DesiredIndicator,
    IndicatorKey,
    Ownership,
    RawIndicator,
    Skipped,
    format_datetime,
)
from reconciler.owned import ActualState, OwnedMemo, raw_key, split_owned
from reconciler.plan import (
    Change,
    ChangeKind,
    ChurnState,
    Plan,
    PlanPolicy,
    Reason,
    build_plan,
    fingerprint_owned,
    hold_churning,
)
from reconciler.reading import PrioritySource, ReadStats, as_row, read_within_quota
from reconciler.scope import DesiredIndex
from reconciler.writeback import SyncReport, WriteBack, deployment_statuses

__all__ = ["ActualState", "DefenderReader", "DesiredSource", "Engine", "Outcome"]

_T = TypeVar("_T")


class DesiredSource(PrioritySource, Protocol):
    """Where desired indicators come from (``OpenCTISource`` satisfies it): the listing in
    priority order for a full run (``reading``), and a re-read by ids for a scoped run. Every
    read applies the stream's filters and is whole or raises."""


class DefenderReader(DefenderWriter, Protocol):
    """Reads and writes Defender (``DefenderClient`` satisfies it)."""

    def list_indicators(
        self, odata_filter: str | None = None, *, page_size: int = 10000
    ) -> list[RawIndicator]: ...

    def iter_indicators(
        self, odata_filter: str | None = None, *, page_size: int = 10000
    ) -> Iterator[RawIndicator]: ...


@dataclass(frozen=True)
class Outcome:
    """What one reconcile did: its plan, what apply did (``None`` when nothing was to be
    written), and the mapping skips of a full run (for metrics; empty for scoped runs)."""

    plan: Plan
    result: ApplyResult | None
    skipped: tuple[Skipped, ...] = ()
    scoped: bool = False
    #: What the write-back to OpenCTI did (``None``: off, dry-run, or nothing to look at).
    write_back: SyncReport | None = None


#: Rows per Defender listing page: half of what the API allows, so one page of raw JSON next
#: to what is already parsed stays small (a 15,000 tenant costs 3 list calls, not 2).
LISTING_PAGE = 5000

#: Indicators re-read at once after write-back moves were recalled.
_RECALL_PART = 500


class Engine:
    """Reads both sides, plans and applies; owns the desired index the scoped runs use and
    the tenant counts (owned, others) that give a scoped plan its quota room.

    Not thread-safe: the caller (the controller's lock, or a one-shot CLI) runs one reconcile
    at a time."""

    def __init__(
        self,
        *,
        source: DesiredSource,
        defender: DefenderReader,
        mapping_policy: MappingPolicy,
        plan_policy: PlanPolicy,
        ownership: Ownership,
        dry_run: bool = False,
        churn_runs: int = 0,
        remember: bool = False,
        clock: Clock | None = None,
        write_back: WriteBack | None = None,
    ) -> None:
        """``write_back``: shows each run's outcome on the OpenCTI indicators (not in dry-run
        mode). ``churn_runs``: consecutive full runs planning the same change for a key before it
        is held back (``plan.hold_churning``; 0 = off, and always off in dry-run mode, where
        nothing is written and every run plans the same). ``remember``: keep what a full run
        read for the next one (unchanged rows are not parsed and mapped again, an unchanged
        tenant is not planned again): for a long-lived service; a one-shot command has no
        next run and saves the memory."""
        self.source = source
        self.defender = defender
        self.mapping_policy = mapping_policy
        self.plan_policy = plan_policy
        self.ownership = ownership
        self.dry_run = dry_run
        self.churn_runs = 0 if dry_run else churn_runs
        self.churn = ChurnState()
        self.clock: Clock = clock or SystemClock()
        self.index = DesiredIndex(mapping_policy, remember=remember)
        self.remember = remember
        #: Owned indicators in Defender: from the last full listing, kept up to date by every
        #: apply since (what the plans intended, less nothing: the next full run re-reads).
        self.owned_total = 0
        #: Indicators of other applications, from the last full listing.
        self.non_owned = 0
        #: What the last full read of OpenCTI did (``None`` before the first).
        self.last_read: ReadStats | None = None
        self._owned_memo: OwnedMemo = {}
        self._last_plan: tuple[_PlanInputs, Plan] | None = None
        self._last_full: tuple[Plan, DesiredState, ActualState] | None = None
        self.write_back = write_back
        #: Our Defender indicators as of the last full read, and the keys written since (with
        #: their OpenCTI ids): what a Defender alert may be a hit of (``owned_keys``).
        self.last_owned: tuple[DefenderIndicator, ...] | None = None
        self._written_keys: dict[IndicatorKey, tuple[str, ...]] = {}
        self._owned_view: (
            tuple[tuple[DefenderIndicator, ...], dict[IndicatorKey, str | None]] | None
        ) = None
        #: The inputs of the last full write-back that left nothing to retry.
        self._wb_last: tuple[_PlanInputs, tuple[Change, ...]] | None = None

    # -- reading -------------------------------------------------------------------------
    def read_desired(
        self,
        actual: ActualState | None = None,
        *,
        progress: Callable[[str], None] | None = None,
    ) -> DesiredState:
        """Read OpenCTI within the free room ``actual`` leaves (read from Defender when not
        given), map, and refill the desired index (see ``reading``)."""
        if actual is None:
            actual = self.read_actual()
        on_page = None
        if progress is not None:
            report = progress

            def on_page(n: int) -> None:
                report(f"reading OpenCTI indicators: {n:,}")

            report("reading OpenCTI indicators")
        self.last_read = read_within_quota(
            self.source,
            self.index,
            free=max(0, self.plan_policy.quota - actual.non_owned_count),
            held=actual.held_by_others.keys(),
            owned=actual.owned,
            now=self.clock.now(),
            on_page=on_page,
        )
        stats = self.last_read
        logger.info(
            "read {:,} OpenCTI indicators{}{}",
            stats.read,
            f" of {stats.matching:,} matching" if stats.matching is not None else "",
            f"; stopped at score {stats.cut_score} once the free room was filled"
            if stats.stopped
            else "",
        )
        return self.index.full_state()

    def read_actual(self) -> ActualState:
        """List every active Defender indicator (one pass) and split owned from the rest."""
        # Row by row: only one page of raw JSON is alive next to the parsed models.
        memo = self._owned_memo if self.remember else None
        return split_owned(self._listing(), self.ownership, memo=memo)

    def _listing(self) -> Iterator[RawIndicator]:
        """Every active Defender indicator, row by row, in pages of ``LISTING_PAGE``."""
        return self.defender.iter_indicators(page_size=LISTING_PAGE)

    def read_actual_for(self, keys: Iterable[IndicatorKey]) -> ActualState:
        """What Defender holds for ``keys`` (a scoped run): the owned indicators holding them,
        the other applications' identities, and exact counts of everything else.

        It reads the whole listing (one call per 5,000 rows: three for a full tenant) and keeps
        what it needs, rather than filtering by value on the server: a value filter would have
        to match every form Defender may answer with (hash case, IPv6 notation), ``or`` on this
        endpoint is undocumented, and long URLs in a query string exceed common URL limits. The
        listing is correct under every one of those behaviours and costs a bounded number of
        calls whatever the number of keys."""
        wanted = frozenset(keys)
        memo = self._owned_memo if self.remember else None
        state = split_owned(self._listing(), self.ownership, wanted, memo=memo)
        self.non_owned = state.non_owned_count
        self.owned_total = len(state.owned) + state.owned_outside
        return state

    def owned_keys(self) -> Mapping[IndicatorKey, tuple[str, ...]] | None:
        """Each key one of our Defender indicators holds (as of the last full read, plus what
        was written since) → the OpenCTI ids behind it: its ``externalId`` and every id the
        desired index maps to it. ``None`` before the first full read. A view: the ids are
        worked out per key looked up (a sightings pass looks up a handful)."""
        owned = self.last_owned
        if owned is None:
            return None
        if self._owned_view is None or self._owned_view[0] is not owned:
            by_key = {ind.key: ind.external_id for ind in owned if ind.key is not None}
            self._owned_view = (owned, by_key)
        return _OwnedKeys(self._owned_view[1], dict(self._written_keys), self.index)

    # -- planning ------------------------------------------------------------------------
    def plan(
        self,
        *,
        allow_mass_delete: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> Plan:
        """A full plan: everything the stream's filters select vs everything we own.
        ``progress`` gets a short text at each step (the CLI shows it as a spinner)."""
        plan, desired, actual = self._plan_full(allow_mass_delete, progress)
        self._last_full = (plan, desired, actual)
        return plan

    def write_back_for(self, plan: Plan, result: ApplyResult | None) -> SyncReport | None:
        """The write-back after ``apply`` of a plan made by ``plan()`` in this process (the
        one-shot ``reconciler apply``); ``None`` for any other plan (a saved one: what OpenCTI
        held when it was made is not known here) or with the write-back off."""
        last = self._last_full
        if last is None or last[0] is not plan:
            return None
        return self._write_back(plan, last[1], last[2], result)

    def _plan_full(
        self, allow_mass_delete: bool, progress: Callable[[str], None] | None
    ) -> tuple[Plan, DesiredState, ActualState]:
        with paused_gc():  # reading and planning only; see reconciler.gcpause
            # Defender first: its free room bounds how much of OpenCTI is read.
            if progress is not None:
                progress("reading Defender indicators")
            actual = self.read_actual()
            self.non_owned = actual.non_owned_count
            self.owned_total = len(actual.owned)
            self.last_owned = actual.owned
            self._written_keys = {}
            desired = self.read_desired(actual, progress=progress)
            if progress is not None:
                progress("planning")
            policy = self.plan_policy
            if allow_mass_delete and not policy.allow_mass_delete:
                policy = replace(policy, allow_mass_delete=True)
            not_read = self.last_read.not_read if self.last_read is not None else 0
            inputs = _PlanInputs(desired, actual, policy, not_read)
            if self._last_plan is not None and inputs.same_as(self._last_plan[0]):
                plan = self._last_plan[1]  # both sides are what they were: the same plan
            else:
                if self._recall_moves(desired, actual):  # the expiry must not follow our edits
                    del inputs, desired  # the merge before the recall: freed before the next
                    desired = self.index.full_state()
                    inputs = _PlanInputs(desired, actual, policy, not_read)
                plan = self._build_full(desired, actual, policy, not_read)
                if self.remember:
                    self._last_plan = (inputs, plan)
        _log_plan("plan", plan)
        return plan, desired, actual

    def _build_full(
        self, desired: DesiredState, actual: ActualState, policy: PlanPolicy, not_read: int
    ) -> Plan:
        return build_plan(
            desired.desired,
            actual.owned,
            skipped=desired.skipped,
            expired_keys=desired.expired_keys,
            non_owned_count=actual.non_owned_count,
            held_by_others=actual.held_by_others,
            policy=policy,
            complete=True,
            not_read=not_read,
        )

    def _recall_moves(self, desired: DesiredState, actual: ActualState) -> bool:
        """Before planning: a write-back edit may have moved an indicator's ``updated_at``,
        the expiry's base and what picks the newest of two indicators with one value or of a
        score tie at the quota's cut. For the indicators whose plan would not be "unchanged"
        (an expiry differing from the owned one, a key to create, an owned key to remove),
        read the marks on their references and, for the moves learned, re-read them (the
        source undoes the moves). Whether anything was learned. Cheap where nothing differs
        (the steady state): no call at all."""
        if self.write_back is None:
            return False
        owned: dict[IndicatorKey | None, DefenderIndicator] = {}
        for ind in actual.owned:
            owned.setdefault(ind.key, ind)
        ids: set[str] = set()
        for key, d in desired.desired.items():
            copy = owned.get(key)
            if copy is None or copy.essence().get("expirationTime") != _expiry(d):
                ids.update(d.opencti_ids)
        ids.update(
            ind.external_id
            for ind in actual.owned
            if ind.external_id and ind.key not in desired.desired
        )
        if not ids:
            return False
        wanted = sorted(ids)
        try:
            learned = self.write_back.recall(wanted)
        except ReconcilerError as exc:
            logger.warning("write-back marks not read ({}); planning as read", exc)
            return False
        if not learned:
            return False
        now = self.clock.now()
        for start in range(0, len(wanted), _RECALL_PART):  # in parts: memory stays bounded
            part = wanted[start : start + _RECALL_PART]
            self.index.reread(self.source.read_ids(part, as_row), now=now)
        return True

    def plan_ids(self, opencti_ids: Iterable[str]) -> Plan | None:
        """A scoped plan for the keys ``opencti_ids`` affect (see the module docstring), or
        ``None`` when they affect none, or before the first full read (which covers them)."""
        scoped = self._plan_scoped(opencti_ids)
        return scoped[0] if scoped is not None else None

    def _plan_scoped(
        self, opencti_ids: Iterable[str]
    ) -> tuple[Plan, DesiredState, ActualState, list[str]] | None:
        wanted = sorted({i for i in opencti_ids if i})
        if not wanted:
            return None
        if not self.index.loaded:
            logger.info("stream events before the first full reconcile; left to it")
            return None
        found = self.source.read_ids(wanted, indicator_from_graphql)
        affected = self.index.refresh(wanted, found, now=self.clock.now())
        if not affected:
            return None
        desired = self.index.state_for(affected)
        actual = self.read_actual_for(affected)
        # Other tools' indicators and our own outside the scope take quota room the scoped
        # keys cannot use.
        plan = build_plan(
            desired.desired,
            actual.owned,
            skipped=desired.skipped,
            expired_keys=desired.expired_keys,
            non_owned_count=actual.non_owned_count + actual.owned_outside,
            held_by_others=actual.held_by_others,
            policy=self.plan_policy,
            complete=True,
            scoped=True,
        )
        _log_plan(f"scoped plan ({len(wanted)} ids, {len(affected)} keys)", plan)
        return plan, desired, actual, wanted

    def explain(self, value: str) -> Explanation:
        """``plan --explain``: the full plan, then for ``value`` its contributing OpenCTI
        indicators (re-read by id through the stream's filters) with the rule trace of each,
        every Defender row holding it, and the plan's changes for it. Writes nothing."""
        keys = keys_for(value)
        if not keys:
            raise ReconcilerError(f"{value!r} is not an IP address, domain, URL or file hash")
        plan, _, _ = self._plan_full(False, None)
        ids = sorted({i for key in keys for i in self.index.ids_for(key)})
        found = self.source.read_ids(ids, indicator_from_graphql) if ids else []
        now = self.clock.now()
        wanted = frozenset(keys)
        rows = []
        for row in self._listing():
            key = raw_key(row)
            if key in wanted:
                assert key is not None
                rows.append(DefenderRow.of(key, row, self.ownership.owns(row.get("application"))))
        return Explanation(
            value=value,
            keys=keys,
            indicators=tuple(
                trace_indicator(i, wanted, self.mapping_policy, now)
                for i in found
                if not isinstance(i, Skipped)
            ),
            unreadable=tuple(i for i in found if isinstance(i, Skipped)),
            rows=tuple(rows),
            changes=tuple(c for c in plan.changes if c.key in wanted),
            not_read=plan.quota.not_read,
        )

    # -- reconciling -----------------------------------------------------------------------
    def reconcile_full(
        self,
        *,
        on_batch: Callable[[str, int], None] | None = None,
        before_write: Callable[[str], None] | None = None,
    ) -> Outcome:
        """Plan everything and apply it (nothing written in dry-run mode). A key planned with
        the same change in ``churn_runs`` consecutive full runs is held back and reported.
        ``on_batch`` / ``before_write``: called after / before each write call (``apply``)."""
        plan, desired, actual = self._plan_full(False, None)
        plan, self.churn = hold_churning(plan, self.churn, self.churn_runs)
        if self.churn.held:
            held = [c for c in plan.changes if c.reason == Reason.UNCONVERGED.value]
            logger.warning(
                "{} keys keep getting the same change and are held back (unconverged), e.g. {}",
                self.churn.held,
                ", ".join(str(c.key) for c in held[:5]),
            )
        result = self._apply_counted(plan, on_batch, before_write)
        report = self._write_back(plan, desired, actual, result)
        return Outcome(plan, result, desired.skipped, write_back=report)

    def reconcile_ids(
        self,
        opencti_ids: Iterable[str],
        *,
        on_batch: Callable[[str, int], None] | None = None,
        before_write: Callable[[str], None] | None = None,
    ) -> Outcome | None:
        """Re-read ``opencti_ids`` and apply the scoped plan; ``None`` when nothing to plan."""
        scoped = self._plan_scoped(opencti_ids)
        if scoped is None:
            return None
        plan, desired, actual, wanted = scoped
        result = self._apply_counted(plan, on_batch, before_write)
        report = self._write_back(plan, desired, actual, result, only=wanted)
        return Outcome(plan, result, scoped=True, write_back=report)

    def _write_back(
        self,
        plan: Plan,
        desired: DesiredState,
        actual: ActualState,
        result: ApplyResult | None,
        *,
        only: Collection[str] | None = None,
    ) -> SyncReport | None:
        """Show each covered OpenCTI indicator's deployment in OpenCTI (``writeback``); not in
        dry-run mode. A full run whose inputs and plan are those of the last one, whose
        write-back left nothing to retry, skips even the statuses (the steady state)."""
        if self.write_back is None or not self.write_back.enabled or self.dry_run:
            return None
        marker = None
        if only is None:
            not_read = self.last_read.not_read if self.last_read is not None else 0
            marker = (_PlanInputs(desired, actual, self.plan_policy, not_read), plan.changes)
            last = self._wb_last
            if (
                last is not None
                and result is None
                and not self.write_back.has_forgotten
                and marker[0].same_as(last[0])
                and last[1] == plan.changes
            ):
                return None
        statuses, live = deployment_statuses(
            desired=desired.desired.values(),
            owned=actual.owned,
            plan=plan,
            result=result,
            only=only,
        )
        report = self.write_back.sync(statuses, live)
        if only is None:
            clean = not report.failed and report.error is None
            self._wb_last = marker if clean else None
        return report

    def _apply_counted(
        self,
        plan: Plan,
        on_batch: Callable[[str, int], None] | None,
        before_write: Callable[[str], None] | None = None,
    ) -> ApplyResult | None:
        """Apply a non-empty plan and keep ``owned_total`` what the plan leaves."""
        if plan.is_empty:
            return None
        outside = self.owned_total - plan.owned_count
        result = self.apply(plan, on_batch=on_batch, before_write=before_write)
        if not self.dry_run:
            self.owned_total = outside + plan.quota.planned_owned_after
            for change, _ in result.written:
                if change.key is not None:
                    self._written_keys[change.key] = change.opencti_ids
        return result

    def apply(
        self,
        plan: Plan,
        *,
        allow_mass_delete: bool = False,
        on_batch: Callable[[str, int], None] | None = None,
        before_write: Callable[[str], None] | None = None,
    ) -> ApplyResult:
        """Execute ``plan`` (counted only, in dry-run mode)."""
        result = apply_plan(
            plan,
            self.defender,
            allow_mass_delete=allow_mass_delete,
            dry_run=self.dry_run,
            on_batch=on_batch,
            before_write=before_write,
        )
        logger.info("{}", result.summary())
        return result

    def check_fresh(self, plan: Plan, actual: ActualState | None = None) -> None:
        """Refuse a saved plan when Defender's owned indicators changed since it was made."""
        actual = actual if actual is not None else self.read_actual()
        now_fp = fingerprint_owned(actual.owned)
        if now_fp != plan.fingerprint:
            raise StalePlanError(
                "saved plan is stale: the indicators this reconciler owns in Defender changed "
                "since the plan was made; run `reconciler plan` again"
            )


@dataclass(frozen=True)
class _PlanInputs:
    """What a full plan is a pure function of; ``same_as`` compares by identity where the
    memories of a steady state hand back the very same objects (cheap, never a false hit)."""

    desired: DesiredState
    actual: ActualState
    policy: PlanPolicy
    not_read: int

    def same_as(self, other: _PlanInputs) -> bool:
        mine, theirs = self.actual, other.actual
        return (
            self.desired is other.desired
            and self.policy == other.policy
            and self.not_read == other.not_read
            and mine.non_owned_count == theirs.non_owned_count
            and mine.held_by_others == theirs.held_by_others
            and len(mine.owned) == len(theirs.owned)
            and all(a is b for a, b in zip(mine.owned, theirs.owned, strict=True))
        )


class _OwnedKeys(Mapping[IndicatorKey, tuple[str, ...]]):
    """``Engine.owned_keys``: our keys and the OpenCTI ids behind each, worked out on lookup."""

    def __init__(
        self,
        by_key: Mapping[IndicatorKey, str | None],
        written: Mapping[IndicatorKey, tuple[str, ...]],
        index: DesiredIndex,
    ) -> None:
        self._by_key, self._written, self._index = by_key, written, index

    def __getitem__(self, key: IndicatorKey) -> tuple[str, ...]:
        if key not in self._by_key and key not in self._written:
            raise KeyError(key)
        ids = set(self._index.ids_for(key)) | set(self._written.get(key, ()))
        external = self._by_key.get(key)
        if external:
            ids.add(external)
        return tuple(sorted(ids))

    def __iter__(self) -> Iterator[IndicatorKey]:
        yield from self._by_key
        yield from (k for k in self._written if k not in self._by_key)

    def __len__(self) -> int:
        return len(self._by_key) + sum(1 for k in self._written if k not in self._by_key)


def _expiry(d: DesiredIndicator) -> str | None:
    return format_datetime(d.expiration_time)


#: Writes of a plan named in the log (the plan report has them all).
_LOGGED_WRITES = 10


def _log_plan(what: str, plan: Plan) -> None:
    """The plan's counts; when it writes, its first writes too (what the service changed is in
    the log, not only how much)."""
    counts = ", ".join(f"{n} {kind}" for kind, n in plan.summary.items() if n)
    writes = [c for c in plan.changes if c.kind is not ChangeKind.SKIP]
    if not writes:
        logger.info("{}: {}", what, counts or "nothing")
        return
    shown = "; ".join(_write_line(c) for c in writes[:_LOGGED_WRITES])
    more = f"; and {len(writes) - _LOGGED_WRITES} more" if len(writes) > _LOGGED_WRITES else ""
    logger.info("{}: {} ({}{})", what, counts, shown, more)


def _write_line(change: Change) -> str:
    key = f"{change.key.type.value} {change.key.value}" if change.key else "(no key)"
    why = f" ({change.reason})" if change.reason else ""
    ids = f" [OpenCTI {', '.join(change.opencti_ids)}]" if change.opencti_ids else ""
    return f"{change.kind.value} {key}{why}{ids}"
