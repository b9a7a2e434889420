"""The shape of the configuration: the five section models (``opencti``, ``connector``,
``microsoft_defender_intel``, ``reconciler``, ``policy``) with every key's env var, default,
what it accepts and its description (``policy`` is declared in the ``policy`` module);
``Settings``, the whole validated configuration; the tables derived from the sections
(``ENV_VARS``, ``REQUIRED_KEYS``, ``SECRET_KEYS``, ``settings_reference``) and the pycti keys a
seed connector's configuration may carry, accepted and ignored.

Must not: read a file or the environment, decide precedence, word the ``ConfigError`` (the
``loading`` module does all three), log, or show a secret's value (``redacted`` masks them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
)

from reconciler import defaults
from reconciler.config.policy import PolicySection
from reconciler.config.values import (
    _BOOL_WORDS,
    _LOG_LEVELS,
    Flag,
    JsonObject,
    LogFormat,
    LogLevel,
    Names,
    NonEmpty,
    Url,
    _check_file,
    _check_ignorable,
    _check_path,
    _parse_action,
    _setting,
    _show,
)
from reconciler.model import IGNORABLE_FIELDS, Action

#: What a secret is shown as in ``Settings.redacted()``.
MASK = "********"

# Keys pycti's OpenCTIConnectorHelper reads that this service does not use; a seed config.yml
# may carry them, so they are accepted and ignored instead of being reported as typos.
_PYCTI_KEYS: dict[str, frozenset[str]] = {
    "opencti": frozenset({"json_logging", "custom_headers"}),
    "connector": frozenset(
        {
            "type",
            "scope",
            "confidence_level",
            "update_existing_data",
            "live_stream_with_inferences",
            "live_stream_recover_iso_date",
            "live_stream_start_timestamp",
            "live_stream_topic",
            "auto_create_service_account",
            "duration_period",
            "run_and_terminate",
            "expose_metrics",
            "metrics_port",
            "listen_protocol",
            "listen_protocol_api_port",
            "listen_protocol_api_path",
            "listen_protocol_api_ssl",
            "listen_protocol_api_uri",
            "queue_protocol",
            "queue_threshold",
            "send_to_queue",
            "send_to_directory",
            "send_to_directory_path",
            "send_to_directory_retention",
            "send_to_s3",
            "auto",
            "auto_update",
            "enrichment_resolution",
            "only_contextual",
            "playbook_compatible",
            "validate_before_import",
            "xtm_one_intent",
        }
    ),
}


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)


class OpenCTISection(_Section):
    """``opencti:`` — where the OpenCTI platform is and how to authenticate to it."""

    url: Url | None = _setting(
        None,
        "Base URL of the OpenCTI platform (GraphQL at <url>/graphql, stream at <url>/stream).",
        env="OPENCTI_URL",
        accepted="an http(s) URL",
        required=True,
    )
    token: SecretStr | None = _setting(
        None,
        "API token of the OpenCTI user the reconciler reads as. Secret: set it from an env var "
        "or a Kubernetes secret, not in the file.",
        env="OPENCTI_TOKEN",
        accepted="a string",
        required=True,
        secret=True,
    )
    ssl_verify: Flag = _setting(
        False,
        "Verify the OpenCTI TLS certificate (as pycti; also used for the stream request).",
        env="OPENCTI_SSL_VERIFY",
        accepted=f"a boolean ({_BOOL_WORDS})",
    )
    listing_filters: JsonObject | None = _setting(
        None,
        "A FilterGroup (OpenCTI's JSON filter format) that replaces the live stream's filters "
        "for listing the desired indicators, when the stream's use a key the indicators "
        "listing cannot apply exactly; validated the same way (the stream still triggers).",
        env="OPENCTI_LISTING_FILTERS",
        accepted="a JSON object (a FilterGroup)",
    )


class ConnectorSection(_Section):
    """``connector:`` — the identity this service registers with OpenCTI and its live stream."""

    id: NonEmpty | None = _setting(
        None,
        "Unique id (a UUIDv4) of this connector instance in OpenCTI.",
        env="CONNECTOR_ID",
        accepted="a non-empty string (a UUIDv4)",
        required=True,
    )
    name: NonEmpty = _setting(
        "OpenCTI Defender Reconciler",
        "Connector name shown in OpenCTI.",
        env="CONNECTOR_NAME",
        accepted="a non-empty string",
    )
    live_stream_id: NonEmpty | None = _setting(
        None,
        "Id of the OpenCTI live stream whose filters define the desired indicators.",
        env="CONNECTOR_LIVE_STREAM_ID",
        accepted="a non-empty string",
        required=True,
    )
    live_stream_listen_delete: Flag = _setting(
        True,
        "Receive delete events from the live stream.",
        env="CONNECTOR_LIVE_STREAM_LISTEN_DELETE",
        accepted=f"a boolean ({_BOOL_WORDS})",
    )
    live_stream_no_dependencies: Flag = _setting(
        True,
        "Ask the stream not to send dependencies (true unless syncing two OpenCTI platforms).",
        env="CONNECTOR_LIVE_STREAM_NO_DEPENDENCIES",
        accepted=f"a boolean ({_BOOL_WORDS})",
    )
    log_level: LogLevel = _setting(
        "error",
        "Log verbosity (warn = warning).",
        env="CONNECTOR_LOG_LEVEL",
        accepted=f"one of {', '.join(_LOG_LEVELS)}",
    )


class DefenderSection(_Section):
    """``microsoft_defender_intel:`` — the Entra ID app, the Defender API and indicator fields."""

    tenant_id: NonEmpty | None = _setting(
        None,
        "Entra ID (Azure AD) tenant id.",
        env="MICROSOFT_DEFENDER_INTEL_TENANT_ID",
        accepted="a non-empty string",
        required=True,
    )
    client_id: NonEmpty | None = _setting(
        None,
        "Application (client) id of the Entra ID app with Ti.ReadWrite.All.",
        env="MICROSOFT_DEFENDER_INTEL_CLIENT_ID",
        accepted="a non-empty string",
        required=True,
    )
    client_secret: SecretStr | None = _setting(
        None,
        "Client secret of that app. Secret: set it from an env var or a Kubernetes secret.",
        env="MICROSOFT_DEFENDER_INTEL_CLIENT_SECRET",
        accepted="a string",
        required=True,
        secret=True,
    )
    login_url: Url = _setting(
        "https://login.microsoft.com",
        "Entra ID login (authority) host.",
        env="MICROSOFT_DEFENDER_INTEL_LOGIN_URL",
        accepted="an http(s) URL",
    )
    base_url: Url = _setting(
        "https://api.securitycenter.microsoft.com",
        "Defender for Endpoint API base URL.",
        env="MICROSOFT_DEFENDER_INTEL_BASE_URL",
        accepted="an http(s) URL",
    )
    resource_path: Annotated[str, AfterValidator(_check_path)] = _setting(
        "/api/indicators",
        "Path of the indicators resource under base_url.",
        env="MICROSOFT_DEFENDER_INTEL_RESOURCE_PATH",
        accepted="a path starting with '/'",
    )
    expire_time: int = _setting(
        defaults.EXPIRE_DAYS,
        "Longest lifetime of a deployed indicator, in days from its OpenCTI timestamp "
        "(0 = no cap).",
        env="MICROSOFT_DEFENDER_INTEL_EXPIRE_TIME",
        accepted="a whole number of days >= 0",
        ge=0,
    )
    action: Annotated[Action | None, BeforeValidator(_parse_action)] = _setting(
        None,
        "Fixed action for every indicator; not set = by OpenCTI score (>=60 Block, 30-59 Alert, "
        "1-29 Warn, 0 Audit).",
        env="MICROSOFT_DEFENDER_INTEL_ACTION",
        accepted=f"one of {', '.join(a.value for a in Action)}",
    )
    passive_only: Flag = _setting(
        False,
        "Deploy every indicator as Audit (silent mode, no user notification).",
        env="MICROSOFT_DEFENDER_INTEL_PASSIVE_ONLY",
        accepted=f"a boolean ({_BOOL_WORDS})",
    )
    scope: Url = _setting(
        "https://api.securitycenter.microsoft.com/.default",
        "OAuth scope requested for Defender API tokens.",
        env="MICROSOFT_DEFENDER_INTEL_SCOPE",
        accepted="an http(s) URL",
    )
    graph_url: Url = _setting(
        "https://graph.microsoft.com",
        "Microsoft Graph, where the alerts raised by our indicators are read "
        "(/v1.0/security/alerts_v2; tokens for <graph_url>/.default, application permission "
        "SecurityAlert.Read.All). GCC High: https://graph.microsoft.us.",
        env="MICROSOFT_DEFENDER_INTEL_GRAPH_URL",
        accepted="an http(s) URL",
    )
    graph_scope: Url = _setting(
        "https://graph.microsoft.com/.default",
        "OAuth scope requested for Microsoft Graph tokens (sightings). GCC High: "
        "https://graph.microsoft.us/.default.",
        env="MICROSOFT_DEFENDER_INTEL_GRAPH_SCOPE",
        accepted="an http(s) URL",
    )
    ca_bundle: Annotated[Path, AfterValidator(_check_file)] | None = _setting(
        None,
        "PEM file of CA certificates trusted for the login and API hosts (not set = system trust).",
        env="MICROSOFT_DEFENDER_INTEL_CA_BUNDLE",
        accepted="the path of an existing PEM file",
    )
    ownership_tag: NonEmpty = _setting(
        defaults.OWNERSHIP_TAG,
        "Defender 'application' value marking indicators this reconciler owns; it only ever "
        "changes or deletes those.",
        env="MICROSOFT_DEFENDER_INTEL_OWNERSHIP_TAG",
        accepted="a non-empty string",
    )
    adopt_tags: Names = _setting(
        (),
        "Other 'application' values whose indicators are taken over (e.g. 'OpenCTI Microsoft "
        "Defender Intel', written by the old stream connector).",
        env="MICROSOFT_DEFENDER_INTEL_ADOPT_TAGS",
        accepted="a list (comma-separated in env vars)",
    )
    rbac_group_names: Names = _setting(
        (),
        "Defender device groups the indicators apply to (empty = all).",
        env="MICROSOFT_DEFENDER_INTEL_RBAC_GROUP_NAMES",
        accepted="a list (comma-separated in env vars)",
    )
    recommended_actions: str | None = _setting(
        None,
        "Text of the 'recommended actions' on alerts raised by the indicators.",
        env="MICROSOFT_DEFENDER_INTEL_RECOMMENDED_ACTIONS",
        accepted="a string",
    )
    generate_alert: Flag = _setting(
        True,
        "Whether matches raise an alert (generateAlert).",
        env="MICROSOFT_DEFENDER_INTEL_GENERATE_ALERT",
        accepted=f"a boolean ({_BOOL_WORDS})",
    )
    educate_url: Url | None = _setting(
        None,
        "Link shown to users on Warn/Block pages (educateUrl).",
        env="MICROSOFT_DEFENDER_INTEL_EDUCATE_URL",
        accepted="an http(s) URL",
    )
    connect_timeout: float = _setting(
        defaults.CONNECT_TIMEOUT,
        "Seconds to wait for a connection to the Defender API or the login host.",
        env="MICROSOFT_DEFENDER_INTEL_CONNECT_TIMEOUT",
        accepted="a number of seconds from 1 to 300",
        ge=1.0,
        le=300.0,
    )
    read_timeout: float = _setting(
        defaults.READ_TIMEOUT,
        "Seconds to wait for a Defender API answer (an import of 500 indicators can take "
        "tens of seconds; a write that times out is retried, which is safe).",
        env="MICROSOFT_DEFENDER_INTEL_READ_TIMEOUT",
        accepted="a number of seconds from 1 to 600",
        ge=1.0,
        le=600.0,
    )


class ReconcilerSection(_Section):
    """``reconciler:`` — the sync loop: schedule, safety guards, quota, metrics, logs."""

    interval_seconds: int = _setting(
        defaults.INTERVAL_SECONDS,
        "Seconds between two scheduled full reconciles.",
        env="RECONCILER_INTERVAL_SECONDS",
        accepted="a whole number of seconds >= 10",
        ge=10,
    )
    dry_run: Flag = _setting(
        False,
        "Plan and report but never write to Defender.",
        env="RECONCILER_DRY_RUN",
        accepted=f"a boolean ({_BOOL_WORDS})",
    )
    max_deletes: int = _setting(
        defaults.MAX_DELETES,
        "Most deletes one run may do without an explicit override.",
        env="RECONCILER_MAX_DELETES",
        accepted="a whole number >= 0",
        ge=0,
    )
    max_delete_ratio: float = _setting(
        defaults.MAX_DELETE_RATIO,
        "Largest share of the owned indicators one run may delete without an override.",
        env="RECONCILER_MAX_DELETE_RATIO",
        accepted="a number from 0 to 1",
        ge=0.0,
        le=1.0,
    )
    quota: int = _setting(
        defaults.QUOTA,
        "Active indicators allowed in the tenant (Defender's limit, shared with other tools).",
        env="RECONCILER_QUOTA",
        accepted=f"a whole number from 1 to {defaults.QUOTA}",
        ge=1,
        le=defaults.QUOTA,
    )
    ignore_fields: Annotated[Names, AfterValidator(_check_ignorable)] = _setting(
        (),
        "Managed fields left out of the comparison (differences there are not updates).",
        env="RECONCILER_IGNORE_FIELDS",
        accepted=f"a list of: {', '.join(IGNORABLE_FIELDS)}",
    )
    http_port: int = _setting(
        9095,
        "TCP port of the metrics and health endpoints.",
        env="RECONCILER_HTTP_PORT",
        accepted="a port number from 0 to 65535",
        ge=0,
        le=65535,
    )
    log_format: LogFormat = _setting(
        "auto",
        "Log format: text, JSON lines, or auto (text on a terminal, else JSON).",
        env="RECONCILER_LOG_FORMAT",
        accepted="one of auto, text, json",
    )
    state_path: Path | None = _setting(
        None,
        "File where the live-stream position is kept between restarts (not set = in the "
        "connector's state in OpenCTI, like pycti stream connectors).",
        env="RECONCILER_STATE_PATH",
        accepted="a file path",
    )
    rejected_retry_hours: float = _setting(
        defaults.REJECTED_RETRY_HOURS,
        "Hours an indicator body Defender refused is not sent again (it is reported with the "
        "refusal meanwhile; an edited indicator is sent at once; 0 = retry on every run).",
        env="RECONCILER_REJECTED_RETRY_HOURS",
        accepted="a number of hours >= 0",
        ge=0.0,
    )
    churn_runs: int = _setting(
        defaults.CHURN_RUNS,
        "Consecutive full reconciles that plan the very same change for a key before it is "
        "held back and reported as unconverged instead of rewritten again (0 = never).",
        env="RECONCILER_CHURN_RUNS",
        accepted="a whole number >= 0",
        ge=0,
    )
    tenant: NonEmpty | None = _setting(
        None,
        "Name of the Defender tenant this process serves (one release can run several): every "
        "log line carries it (tenant=...) and every metric as its 'tenant' label (not set = "
        "no label).",
        env="RECONCILER_TENANT",
        accepted="a non-empty string",
    )
    write_back: Flag = _setting(
        True,
        "Show each indicator's deployment in OpenCTI after every run: an external reference "
        "per Defender indicator holding it, or one saying why it is not deployed (needs an "
        "OpenCTI token allowed to edit knowledge).",
        env="RECONCILER_WRITE_BACK",
        accepted=f"a boolean ({_BOOL_WORDS})",
    )
    sightings: Flag = _setting(
        True,
        "Read the Defender alerts our indicators raise (Microsoft Graph) and record each hit "
        "in OpenCTI as a sighting of the indicator.",
        env="RECONCILER_SIGHTINGS",
        accepted=f"a boolean ({_BOOL_WORDS})",
    )
    sightings_interval_seconds: int = _setting(
        300,
        "Seconds between two reads of new alerts (sightings).",
        env="RECONCILER_SIGHTINGS_INTERVAL_SECONDS",
        accepted="a whole number of seconds >= 10",
        ge=10,
    )
    leader_election: Flag = _setting(
        False,
        "Run several replicas with one writer: only the holder of a Kubernetes Lease "
        "(coordination.k8s.io/v1) reconciles, follows the stream and writes; the others wait "
        "to take over (the Helm chart turns it on when replicaCount > 1).",
        env="RECONCILER_LEADER_ELECTION",
        accepted=f"a boolean ({_BOOL_WORDS})",
    )
    lease_name: NonEmpty | None = _setting(
        None,
        f"Name of the Lease (not set = {defaults.LEASE_NAME}, plus -<tenant> when a tenant "
        "is set; the Helm chart names it after the release).",
        env="RECONCILER_LEASE_NAME",
        accepted="a non-empty string (a Kubernetes object name)",
    )
    lease_namespace: NonEmpty | None = _setting(
        None,
        "Namespace of the Lease (not set = the pod's own namespace in a cluster, else 'default').",
        env="RECONCILER_LEASE_NAMESPACE",
        accepted="a non-empty string (a Kubernetes namespace)",
    )
    lease_duration_seconds: float = _setting(
        defaults.LEASE_DURATION,
        "Seconds a Lease stays valid without renewal: how long the other replicas wait "
        "before taking over from a leader that stopped renewing. Must exceed "
        "renew_deadline_seconds + 2 x retry_period_seconds.",
        env="RECONCILER_LEASE_DURATION_SECONDS",
        accepted="a number of seconds from 2 to 600",
        ge=2.0,
        le=600.0,
    )
    renew_deadline_seconds: float = _setting(
        defaults.RENEW_DEADLINE,
        "Seconds the leader keeps trying to renew before it stops writing and steps down; "
        "it writes only while its last successful renewal is younger than this.",
        env="RECONCILER_RENEW_DEADLINE_SECONDS",
        accepted="a number of seconds from 1 to 600 (over 1.2 x retry_period_seconds)",
        ge=1.0,
        le=600.0,
    )
    retry_period_seconds: float = _setting(
        defaults.RETRY_PERIOD,
        "Seconds between two attempts to acquire or renew the Lease; also the timeout of "
        "each request to the Kubernetes API.",
        env="RECONCILER_RETRY_PERIOD_SECONDS",
        accepted="a number of seconds from 1 to 60",
        ge=1.0,
        le=60.0,
    )
    kubernetes_api_url: Url | None = _setting(
        None,
        "Kubernetes API server for the Lease (not set = the in-cluster service account's "
        "API server, token and CA; set it, with kubernetes_token_file, outside a cluster or "
        "against the sandbox's Lease emulator).",
        env="RECONCILER_KUBERNETES_API_URL",
        accepted="an http(s) URL",
    )
    kubernetes_token_file: Path | None = _setting(
        None,
        "File holding the bearer token sent to kubernetes_api_url (not set = none).",
        env="RECONCILER_KUBERNETES_TOKEN_FILE",
        accepted="a file path",
    )

    @field_validator(
        "interval_seconds",
        "max_deletes",
        "quota",
        "http_port",
        "churn_runs",
        "sightings_interval_seconds",
        mode="before",
    )
    @classmethod
    def _whole(cls, value: Any) -> Any:
        # pydantic reads the bool True as 1; a boolean here is always a mistake.
        if isinstance(value, bool):
            raise ValueError(f"{_show(value)} is not a whole number")
        return value


_SECTIONS: dict[str, type[BaseModel]] = {
    "opencti": OpenCTISection,
    "connector": ConnectorSection,
    "microsoft_defender_intel": DefenderSection,
    "reconciler": ReconcilerSection,
    "policy": PolicySection,
}


def _extra(section: str, key: str) -> dict[str, Any]:
    extra = _SECTIONS[section].model_fields[key].json_schema_extra
    assert isinstance(extra, dict)
    return extra


#: Dotted key → env var name, in declaration order (used by README and Helm chart).
ENV_VARS: dict[str, str] = {
    f"{section}.{key}": str(_extra(section, key)["env"])
    for section, model in _SECTIONS.items()
    for key in model.model_fields
}
#: Keys that must be set unless ``load_settings(require=False)``.
REQUIRED_KEYS: tuple[str, ...] = tuple(k for k in ENV_VARS if _extra(*k.split(".", 1))["required"])
#: Keys holding secrets: never shown, masked in ``redacted()``, fed to the log redaction.
SECRET_KEYS: tuple[str, ...] = tuple(k for k in ENV_VARS if _extra(*k.split(".", 1))["secret"])


def settings_reference() -> list[dict[str, Any]]:
    """One row per key, in declaration order, for the README table and the Helm chart:
    key, env, default (None when required or unset), required, secret, accepted, description."""
    rows: list[dict[str, Any]] = []
    for dotted, env_var in ENV_VARS.items():
        section, key = dotted.split(".", 1)
        field = _SECTIONS[section].model_fields[key]
        extra = _extra(section, key)
        default = field.default
        rows.append(
            {
                "key": dotted,
                "env": env_var,
                "default": list(default) if isinstance(default, tuple) else default,
                "required": bool(extra["required"]),
                "secret": bool(extra["secret"]),
                "accepted": str(extra["accepted"]),
                "description": field.description or "",
            }
        )
    return rows


class Settings(BaseModel):
    """The whole configuration, validated. Build it with ``load_settings``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    opencti: OpenCTISection = Field(default_factory=OpenCTISection)
    connector: ConnectorSection = Field(default_factory=ConnectorSection)
    microsoft_defender_intel: DefenderSection = Field(default_factory=DefenderSection)
    reconciler: ReconcilerSection = Field(default_factory=ReconcilerSection)
    policy: PolicySection = Field(default_factory=PolicySection)

    def get(self, dotted: str) -> Any:
        """The value of a dotted key such as ``reconciler.dry_run``."""
        section, key = dotted.split(".", 1)
        return getattr(getattr(self, section), key)

    def redacted(self) -> dict[str, Any]:
        """A JSON-safe dict of every setting with secrets shown as ``********`` (unset: None)."""
        data = self.model_dump(mode="json")
        for dotted in SECRET_KEYS:
            section, key = dotted.split(".", 1)
            data[section][key] = MASK if self.get(dotted) is not None else None
        return data

    def secrets(self) -> list[str]:
        """The non-empty secret strings (OpenCTI token, client secret) for log redaction."""
        values = (self.get(k) for k in SECRET_KEYS)
        return [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]
