"""The one place that reads ``Settings``: builds every component with plain, typed arguments.

Owns the translation of the validated configuration into the policies (``Ownership``,
``MappingPolicy``, ``PlanPolicy``, ``ControllerOptions``) and the concrete adapters (OpenCTI
source, Defender client and its token provider, stream consumer, position store, the
``Engine``). Nothing else in the package reads a settings section; the CLI and ``checks``
call these builders. Must not plan, map or do I/O itself beyond constructing clients (which
connect lazily).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from reconciler import defaults
from reconciler.clock import Clock
from reconciler.config import ENV_VARS, Settings
from reconciler.controller import ControllerOptions
from reconciler.defender.auth import BearerAuth, TokenProvider
from reconciler.defender.client import DefenderClient, Timeouts
from reconciler.defender.graph import GraphAlerts
from reconciler.defender.lifecycle import LifecycleNotice, LifecycleWatch
from reconciler.defender.rejections import RejectionMemory
from reconciler.engine import Engine
from reconciler.errors import ConfigError
from reconciler.logs import configure_logging
from reconciler.mapping import BY_SCORE, Exclusion, MappingPolicy, Retire, Rule, RuleMatch
from reconciler.model import Action, Ownership, Severity
from reconciler.opencti.filters import UnusableFilterError, validate_group
from reconciler.opencti.sightings import OpenCTISightings
from reconciler.opencti.source import OpenCTISource
from reconciler.opencti.writeback import OpenCTIReferences
from reconciler.plan import PlanPolicy
from reconciler.sightings import CheckpointStore, FileCheckpoint, MemoryCheckpoint, SightingsJob
from reconciler.writeback import ReferenceStyle, WriteBack

if TYPE_CHECKING:  # the stream modules pull in pycti's state store lazily
    from reconciler.leader import LeaseElector, LeaseOptions
    from reconciler.opencti.state import PositionStore
    from reconciler.opencti.stream import StatusCallback, StreamConsumer, StreamEvent

__all__ = [
    "configure_logs",
    "controller_options",
    "defender_client",
    "graph_alerts",
    "lease_elector",
    "lease_options",
    "mapping_policy",
    "open_engine",
    "open_sightings",
    "opencti_source",
    "ownership",
    "plan_policy",
    "position_store",
    "reference_style",
    "sightings_interval",
    "stream_consumer",
    "tenant",
    "write_back",
]


def configure_logs(settings: Settings) -> None:
    """Log level and format from the settings; every secret registered for redaction."""
    configure_logging(
        settings.connector.log_level,
        settings.reconciler.log_format,
        secrets=settings.secrets(),
        tenant=settings.reconciler.tenant,
    )


# -- policies ----------------------------------------------------------------------------------


def ownership(settings: Settings) -> Ownership:
    mdi = settings.microsoft_defender_intel
    return Ownership(mdi.ownership_tag, tuple(mdi.adopt_tags))


def mapping_policy(settings: Settings) -> MappingPolicy:
    """The mapping policy: the ``microsoft_defender_intel`` keys as the default rule, the
    ``policy`` section's rules, revocation and expiry, exclusions and opt-out label. A rule or
    exclusion the mapping refuses, or an RBAC group outside ``policy.known_rbac_groups``, is a
    ``ConfigError`` naming it."""
    mdi, pol = settings.microsoft_defender_intel, settings.policy
    rules = tuple(_rule(raw) for raw in pol.rules)
    _check_rbac_groups(rules, tuple(mdi.rbac_group_names), tuple(pol.known_rbac_groups))
    try:
        exclusions = tuple(_exclusion(raw) for raw in pol.exclusions)
        return MappingPolicy(
            ownership_tag=mdi.ownership_tag,
            expire_days=mdi.expire_time,
            action=mdi.action,
            passive_only=mdi.passive_only,
            rbac_group_names=tuple(mdi.rbac_group_names),
            recommended_actions=mdi.recommended_actions or None,
            generate_alert=mdi.generate_alert,
            educate_url=mdi.educate_url,
            rules=rules,
            on_revoke=Retire(pol.on_revoke),
            on_expire=Retire(pol.on_expire),
            skip_label=pol.skip_label,
            exclusions=exclusions,
        )
    except ValueError as exc:
        key = "exclusions" if str(exc).startswith("exclusion") else "rules"
        raise ConfigError(f"policy.{key} ({ENV_VARS['policy.' + key]}): {exc}") from None


def _rule(raw: Mapping[str, Any]) -> Rule:
    """One ``policy.rules`` entry (already checked by the settings) as a mapping ``Rule``."""
    match = raw.get("match") or {}
    try:
        return Rule(
            name=raw["name"],
            match=RuleMatch(
                labels=tuple(match.get("labels", ())),
                markings=tuple(match.get("markings", ())),
                authors=tuple(match.get("authors", ())),
                score_min=match.get("score_min"),
                score_max=match.get("score_max"),
                types=tuple(match.get("types", ())),
                pattern_types=tuple(match.get("pattern_types", ())),
            ),
            deploy=raw.get("deploy", True),
            action=_by_score(raw.get("action"), Action),
            severity=_by_score(raw.get("severity"), Severity),
            generate_alert=raw.get("generate_alert"),
            rbac_group_names=_tuple_or_none(raw.get("rbac_group_names")),
            recommended_actions=raw.get("recommended_actions"),
            expire_days=raw.get("expire_time"),
        )
    except ValueError as exc:
        where = "" if str(exc).startswith("rule ") else f"rule {raw['name']!r}: "
        raise ConfigError(f"policy.rules ({ENV_VARS['policy.rules']}): {where}{exc}") from None


_Enum = TypeVar("_Enum", Action, Severity)


def _by_score(value: Any, enum: type[_Enum]) -> _Enum | Literal["score"] | None:
    if value is None:
        return None
    return BY_SCORE if value == BY_SCORE else enum(value)


def _tuple_or_none(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _exclusion(raw: Mapping[str, Any]) -> Exclusion:
    return Exclusion(
        name=raw["name"],
        cidrs=tuple(raw.get("cidrs", ())),
        domains=tuple(raw.get("domains", ())),
        url_prefixes=tuple(raw.get("url_prefixes", ())),
        hashes=tuple(raw.get("hashes", ())),
    )


def _check_rbac_groups(
    rules: tuple[Rule, ...], default_groups: tuple[str, ...], known: tuple[str, ...]
) -> None:
    """With ``policy.known_rbac_groups`` set, every group a rule (or the default rule) names
    must be one of them (Defender's indicators API cannot list device groups to check)."""
    if not known:
        return
    folded = {k.casefold() for k in known}
    named = [(f"rule {r.name!r}", r.rbac_group_names or ()) for r in rules]
    named.append(("the default rule (microsoft_defender_intel.rbac_group_names)", default_groups))
    for who, groups in named:
        bad = [g for g in groups if g.casefold() not in folded]
        if bad:
            raise ConfigError(
                f"policy.rules ({ENV_VARS['policy.rules']}): {who} names RBAC group "
                f"{bad[0]!r}, which is not one of policy.known_rbac_groups ({', '.join(known)})"
            )


def plan_policy(settings: Settings) -> PlanPolicy:
    rec = settings.reconciler
    return PlanPolicy(
        quota=rec.quota,
        max_deletes=rec.max_deletes,
        max_delete_ratio=rec.max_delete_ratio,
        ignore_fields=tuple(rec.ignore_fields),
    )


def controller_options(settings: Settings) -> ControllerOptions:
    rec = settings.reconciler
    return ControllerOptions(
        interval_seconds=float(rec.interval_seconds),
        http_port=rec.http_port,
        stream_id=str(settings.connector.live_stream_id),
    )


def tenant(settings: Settings) -> str | None:
    """The tenant name logs and metrics carry (None: no label)."""
    return settings.reconciler.tenant


def lease_options(settings: Settings, *, identity: str | None = None) -> LeaseOptions | None:
    """The leader election's settings, None when it is off. Raises ``ConfigError`` for
    timings under which a lost lease could be taken over before its holder stops."""
    from reconciler.leader import (
        LeaseOptions,
        check_timings,
        default_identity,
        lease_namespace,
    )

    rec = settings.reconciler
    if not rec.leader_election:
        return None
    check_timings(rec.lease_duration_seconds, rec.renew_deadline_seconds, rec.retry_period_seconds)
    name = rec.lease_name or (
        f"{defaults.LEASE_NAME}-{rec.tenant}" if rec.tenant else defaults.LEASE_NAME
    )
    return LeaseOptions(
        name=name,
        namespace=lease_namespace(rec.lease_namespace),
        identity=identity or default_identity(),
        lease_duration=rec.lease_duration_seconds,
        renew_deadline=rec.renew_deadline_seconds,
        retry_period=rec.retry_period_seconds,
        api_url=rec.kubernetes_api_url,
        token_file=rec.kubernetes_token_file,
    )


def lease_elector(settings: Settings) -> LeaseElector | None:
    """The Lease elector when leader election is on (``kubernetes_asyncio`` is imported only
    when it starts)."""
    from reconciler.leader import LeaseElector

    options = lease_options(settings)
    return LeaseElector(options) if options is not None else None


# -- adapters ----------------------------------------------------------------------------------


def _required(settings: Settings, *dotted: str) -> None:
    from reconciler.config import ENV_VARS

    missing = [f"{k} ({ENV_VARS[k]})" for k in dotted if settings.get(k) is None]
    if missing:
        raise ConfigError("required settings missing: " + ", ".join(missing))


def opencti_source(settings: Settings) -> OpenCTISource:
    _required(settings, "opencti.url", "opencti.token", "connector.live_stream_id")
    octi = settings.opencti
    assert octi.url is not None and octi.token is not None  # checked just above
    override = octi.listing_filters
    if override is not None:
        try:  # the same validation as the stream's filters, reported as a config problem
            validate_group(override, "opencti.listing_filters")
        except UnusableFilterError as exc:
            raise ConfigError(f"opencti.listing_filters (OPENCTI_LISTING_FILTERS): {exc}") from None
    return OpenCTISource(
        octi.url,
        octi.token.get_secret_value(),
        str(settings.connector.live_stream_id),
        ssl_verify=octi.ssl_verify,
        listing_override=override,
    )


def defender_client(
    settings: Settings,
    *,
    clock: Clock | None = None,
    on_token: Callable[[str], None] | None = None,
    on_call: Callable[[str, int | None], None] | None = None,
    on_lifecycle: Callable[[LifecycleNotice], None] | None = None,
) -> DefenderClient:
    """The Defender client with its own token provider (closed with the client), the
    configured timeouts, and the memory of refused bodies."""
    mdi = settings.microsoft_defender_intel
    ca = str(mdi.ca_bundle) if mdi.ca_bundle else None
    provider = _token_provider(settings, mdi.scope, clock=clock, on_token=on_token)
    hours = settings.reconciler.rejected_retry_hours
    return DefenderClient(
        mdi.base_url,
        BearerAuth(provider),
        resource_path=mdi.resource_path,
        clock=clock,
        verify=ca or True,
        timeouts=Timeouts(connect=mdi.connect_timeout, read=mdi.read_timeout),
        on_call=on_call,
        token_provider=provider,
        rejections=RejectionMemory(hours * 3600.0, clock=clock),
        lifecycle=LifecycleWatch(on_lifecycle),
    )


@contextmanager
def open_engine(
    settings: Settings,
    *,
    clock: Clock | None = None,
    on_token: Callable[[str], None] | None = None,
    on_call: Callable[[str, int | None], None] | None = None,
    on_lifecycle: Callable[[LifecycleNotice], None] | None = None,
    long_lived: bool = False,
) -> Iterator[Engine]:
    """Yield an ``Engine`` wired to the configured OpenCTI and Defender; closes clients.
    ``long_lived`` (the service): the engine remembers each full read for the next."""
    client = defender_client(
        settings, clock=clock, on_token=on_token, on_call=on_call, on_lifecycle=on_lifecycle
    )
    source = opencti_source(settings)
    try:
        yield Engine(
            source=source,
            defender=client,
            mapping_policy=mapping_policy(settings),
            plan_policy=plan_policy(settings),
            ownership=ownership(settings),
            dry_run=settings.reconciler.dry_run,
            churn_runs=settings.reconciler.churn_runs,
            remember=long_lived,
            clock=clock,
            write_back=write_back(settings, source, clock=clock),
        )
    finally:
        client.close()


@contextmanager
def open_sightings(
    settings: Settings, engine: Engine, *, clock: Clock
) -> Iterator[SightingsJob | None]:
    """The sightings job (``None`` when ``reconciler.sightings`` is off or in dry-run mode):
    Graph alerts read with a token of the same app registration for ``graph_url``, written
    through the engine's OpenCTI client; its checkpoint next to ``state_path`` when set."""
    rec = settings.reconciler
    if not rec.sightings or rec.dry_run or not isinstance(engine.source, OpenCTISource):
        yield None
        return
    alerts = graph_alerts(settings, clock=clock)
    style = reference_style(settings)
    checkpoint: CheckpointStore = (
        FileCheckpoint(rec.state_path.with_name(rec.state_path.stem + ".sightings.json"))
        if rec.state_path is not None
        else MemoryCheckpoint()
    )
    try:
        yield SightingsJob(
            alerts=alerts,
            sink=OpenCTISightings(engine.source, style.source_name, clock=clock),
            checkpoint=checkpoint,
            owned=engine.owned_keys,
            clock=clock,
        )
    finally:
        alerts.close()


def _token_provider(
    settings: Settings,
    scope: str,
    *,
    clock: Clock | None = None,
    on_token: Callable[[str], None] | None = None,
) -> TokenProvider:
    """Client-credentials tokens of the configured app registration for ``scope``."""
    prefix = "microsoft_defender_intel."
    _required(settings, *(prefix + k for k in ("tenant_id", "client_id", "client_secret")))
    mdi = settings.microsoft_defender_intel
    assert mdi.tenant_id and mdi.client_id and mdi.client_secret  # checked just above
    return TokenProvider(
        tenant_id=mdi.tenant_id,
        client_id=mdi.client_id,
        client_secret=mdi.client_secret.get_secret_value(),
        login_url=mdi.login_url,
        scope=scope,
        ca_bundle=str(mdi.ca_bundle) if mdi.ca_bundle else None,
        clock=clock,
        on_token=on_token,
    )


def graph_alerts(settings: Settings, *, clock: Clock | None = None) -> GraphAlerts:
    """The Graph alerts reader: a token of the same app registration for ``graph_scope``."""
    mdi = settings.microsoft_defender_intel
    ca = str(mdi.ca_bundle) if mdi.ca_bundle else None
    provider = _token_provider(settings, mdi.graph_scope, clock=clock)
    return GraphAlerts(mdi.graph_url, BearerAuth(provider), verify=ca or True, clock=clock)


def sightings_interval(settings: Settings) -> float:
    return float(settings.reconciler.sightings_interval_seconds)


def reference_style(settings: Settings) -> ReferenceStyle:
    """How deployment statuses look in OpenCTI: our source name (with the tenant's name when
    one is set, so the references of two tenants never mix) and the portal links."""
    tenant_name = settings.reconciler.tenant
    name = "Microsoft Defender for Endpoint" + (f" ({tenant_name})" if tenant_name else "")
    return ReferenceStyle(
        source_name=name,
        tenant_id=settings.microsoft_defender_intel.tenant_id,
        tenant_name=tenant_name,
    )


def write_back(
    settings: Settings, source: OpenCTISource, *, clock: Clock | None = None
) -> WriteBack:
    """The write-back of deployment statuses. Always made, and its ``Restamps`` applied to
    every row the source reads: any reconciler's write-back (another tenant's, an earlier
    run's) may have moved an indicator's updated_at, and the expiry must not follow. It writes
    only when ``reconciler.write_back`` is on and not in dry-run mode."""
    style = reference_style(settings)
    enabled = settings.reconciler.write_back and not settings.reconciler.dry_run
    store = OpenCTIReferences(source, style.source_name, clock=clock)
    back = WriteBack(store, style, enabled=enabled)
    source.row_hook = back.restamps
    return back


def position_store(settings: Settings) -> PositionStore:
    """``reconciler.state_path`` when set, else the connector's state in OpenCTI."""
    from reconciler.opencti.state import FileStore, OpenCTIConnectorStore

    if settings.reconciler.state_path:
        return FileStore(settings.reconciler.state_path)
    _required(settings, "opencti.url", "opencti.token", "connector.id")
    octi, conn = settings.opencti, settings.connector
    assert octi.url is not None and octi.token is not None and conn.id is not None
    return OpenCTIConnectorStore(
        octi.url,
        octi.token.get_secret_value(),
        conn.id,
        connector_name=conn.name,
        ssl_verify=octi.ssl_verify,
    )


def stream_consumer(
    settings: Settings,
    *,
    on_events: Callable[[list[StreamEvent]], None],
    on_status: StatusCallback | None = None,
    clock: Clock | None = None,
) -> StreamConsumer:
    """The live-stream consumer of the configured stream, with its position store."""
    from reconciler.opencti.stream import StreamConsumer

    _required(settings, "opencti.url", "opencti.token", "connector.live_stream_id")
    octi, conn = settings.opencti, settings.connector
    assert octi.url is not None and octi.token is not None
    return StreamConsumer(
        octi.url,
        octi.token.get_secret_value(),
        str(conn.live_stream_id),
        on_events=on_events,
        state=position_store(settings),
        listen_delete=conn.live_stream_listen_delete,
        no_dependencies=conn.live_stream_no_dependencies,
        ssl_verify=octi.ssl_verify,
        on_status=on_status,
        clock=clock,
    )
