"""One reconcile pass, wired: read OpenCTI (desired) and Defender (actual), map, plan, apply.

The CLI (``plan``/``apply``), the scheduled full run and the stream's scoped runs all go
through here, so they share mapping, plan, guards and apply. This module orchestrates I/O;
the decisions live in ``mapping`` and ``plan`` (pure), the rendering in ``report``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from loguru import logger
from pydantic import ValidationError

from reconciler.apply import ApplyResult, DefenderWriter, apply_plan
from reconciler.clock import Clock, SystemClock
from reconciler.defender.client import odata_quote
from reconciler.errors import ListingError, StalePlanError
from reconciler.gcpause import paused_gc
from reconciler.mapping import (
    DesiredState,
    MappingPolicy,
    OpenCTIIndicator,
    build_desired,
    indicator_from_graphql,
)
from reconciler.model import DefenderIndicator, IndicatorKey, RawIndicator, Skipped
from reconciler.plan import (
    ForeignIdentity,
    Plan,
    PlanPolicy,
    build_plan,
    fingerprint_owned,
    foreign_identity,
)

__all__ = ["ActualState", "DefenderReader", "DesiredSource", "Engine", "split_owned"]

_T = TypeVar("_T")


class DesiredSource(Protocol):
    """Where desired indicators come from (``OpenCTISource`` satisfies it)."""

    def read_indicators(
        self,
        parse: Callable[[dict[str, Any]], _T],
        *,
        on_page: Callable[[int], None] | None = None,
    ) -> list[_T]: ...


class DefenderReader(DefenderWriter, Protocol):
    """Reads and writes Defender (``DefenderClient`` satisfies it)."""

    def list_indicators(
        self, odata_filter: str | None = None, *, page_size: int = 10000
    ) -> list[RawIndicator]: ...

    def iter_indicators(
        self, odata_filter: str | None = None, *, page_size: int = 10000
    ) -> Iterator[RawIndicator]: ...


@dataclass(frozen=True)
class ActualState:
    """What Defender holds: the indicators we own, how many others use the quota, and the
    identities other applications hold (``held_by_others``, see ``foreign_identity``): an
    import of one of those would rewrite someone else's indicator."""

    owned: tuple[DefenderIndicator, ...]
    non_owned_count: int
    held_by_others: Mapping[ForeignIdentity, str] = field(default_factory=dict)


def split_owned(rows: Iterable[RawIndicator], tags: Sequence[str]) -> ActualState:
    """Partition a full listing into owned indicators (``application`` in ``tags``) and a count
    of the rest. An owned row we cannot parse makes the listing unusable (never a hole)."""
    wanted = set(tags)
    owned: list[DefenderIndicator] = []
    held: dict[ForeignIdentity, str] = {}
    others = 0
    for row in rows:
        if row.get("application") in wanted:
            try:
                owned.append(DefenderIndicator.from_raw(row))
            except ValidationError as exc:
                raise ListingError(
                    f"owned indicator id={row.get('id')!r} could not be read "
                    f"({exc.error_count()} invalid fields); nothing acted on"
                ) from exc
        else:
            others += 1
            ident = foreign_identity(
                row.get("indicatorType"), row.get("indicatorValue"), row.get("action")
            )
            if ident is not None:
                held.setdefault(ident, str(row.get("application") or "(no application)"))
    return ActualState(tuple(owned), others, held)


class Engine:
    """Reads both sides, plans and applies, with the policies built from settings."""

    def __init__(
        self,
        *,
        source: DesiredSource,
        defender: DefenderReader,
        mapping_policy: MappingPolicy,
        plan_policy: PlanPolicy,
        ownership_tags: Sequence[str],
        clock: Clock | None = None,
    ) -> None:
        self.source = source
        self.defender = defender
        self.mapping_policy = mapping_policy
        self.plan_policy = plan_policy
        self.ownership_tags = tuple(ownership_tags)
        self.clock: Clock = clock or SystemClock()

    @classmethod
    def from_settings(
        cls,
        cfg: Any,
        *,
        source: DesiredSource,
        defender: DefenderReader,
        clock: Clock | None = None,
    ) -> Engine:
        mdi = cfg.microsoft_defender_intel
        return cls(
            source=source,
            defender=defender,
            mapping_policy=MappingPolicy.from_settings(cfg),
            plan_policy=PlanPolicy.from_settings(cfg),
            ownership_tags=(mdi.ownership_tag, *mdi.adopt_tags),
            clock=clock,
        )

    # -- reading -------------------------------------------------------------------------
    def read_desired(
        self, *, now: datetime | None = None, progress: Callable[[str], None] | None = None
    ) -> DesiredState:
        """List OpenCTI (all pages or an error) and map to the desired state."""
        on_page = None
        if progress is not None:
            report = progress

            def on_page(n: int) -> None:
                report(f"reading OpenCTI indicators: {n:,}")

            report("reading OpenCTI indicators")
        parsed = self.source.read_indicators(indicator_from_graphql, on_page=on_page)
        if progress is not None:
            progress(f"mapping {len(parsed):,} OpenCTI indicators")
        return self.desired_from(parsed, now=now)

    def desired_from(
        self, indicators: Iterable[OpenCTIIndicator | Skipped], *, now: datetime | None = None
    ) -> DesiredState:
        when = now if now is not None else self.clock.now()
        return build_desired(indicators, self.mapping_policy, now=when)

    def read_actual(self) -> ActualState:
        """List every active Defender indicator (one pass) and split owned from the rest."""
        # Row by row: only one page of raw JSON is alive next to the parsed models.
        return split_owned(self.defender.iter_indicators(), self.ownership_tags)

    # -- planning ------------------------------------------------------------------------
    def plan(
        self,
        *,
        desired: DesiredState | None = None,
        actual: ActualState | None = None,
        allow_mass_delete: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> Plan:
        """A full plan: desired state vs everything we own. ``progress`` gets a short text
        at each step (the CLI shows it as a spinner on a terminal)."""
        with paused_gc():
            return self._plan(desired, actual, allow_mass_delete, progress)

    def _plan(
        self,
        desired: DesiredState | None,
        actual: ActualState | None,
        allow_mass_delete: bool,
        progress: Callable[[str], None] | None,
    ) -> Plan:
        desired = desired if desired is not None else self.read_desired(progress=progress)
        if actual is None:
            if progress is not None:
                progress("reading Defender indicators")
            actual = self.read_actual()
        if progress is not None:
            progress("planning")
        policy = self.plan_policy
        if allow_mass_delete and not policy.allow_mass_delete:
            policy = _with_override(policy)
        plan = build_plan(
            desired.desired,
            actual.owned,
            skipped=desired.skipped,
            expired_keys=desired.expired_keys,
            non_owned_count=actual.non_owned_count,
            held_by_others=actual.held_by_others,
            policy=policy,
            complete=True,
        )
        counts = ", ".join(f"{n} {action}" for action, n in plan.summary.items() if n)
        logger.info("plan: {}", counts or "nothing")
        return plan

    def read_actual_for(self, keys: Iterable[IndicatorKey], *, chunk: int = 40) -> ActualState:
        """The owned indicators holding ``keys`` (a scoped run), read by value in small OData
        filters; ``non_owned_count`` counts only the non-owned rows seen for those values."""
        wanted = set(keys)
        values = sorted({k.value for k in wanted})
        rows: list[RawIndicator] = []
        for i in range(0, len(values), chunk):
            part = values[i : i + chunk]
            odata = " or ".join(f"indicatorValue eq {odata_quote(v)}" for v in part)
            rows.extend(self.defender.list_indicators(odata))
        state = split_owned(rows, self.ownership_tags)
        owned = tuple(i for i in state.owned if i.key in wanted)
        return ActualState(owned, state.non_owned_count, state.held_by_others)

    def apply(
        self,
        plan: Plan,
        *,
        allow_mass_delete: bool = False,
        dry_run: bool = False,
        on_batch: Callable[[str, int], None] | None = None,
    ) -> ApplyResult:
        result = apply_plan(
            plan,
            self.defender,
            allow_mass_delete=allow_mass_delete,
            dry_run=dry_run,
            on_batch=on_batch,
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


def _with_override(policy: PlanPolicy) -> PlanPolicy:
    from dataclasses import replace

    return replace(policy, allow_mass_delete=True)


def owned_by_external_id(
    owned: Iterable[DefenderIndicator],
) -> Mapping[str, list[DefenderIndicator]]:
    """Index owned indicators by the OpenCTI id in ``externalId`` (used by scoped runs)."""
    index: dict[str, list[DefenderIndicator]] = {}
    for ind in owned:
        if ind.external_id:
            index.setdefault(ind.external_id, []).append(ind)
    return index
