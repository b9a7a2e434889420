"""The reconciler's configuration: one pydantic model, read from a YAML file and env vars.

Owns: the ``Settings`` model (sections ``opencti``, ``connector``, ``microsoft_defender_intel``,
``reconciler``), the env var name of every key (``ENV_VARS``, the seed connector's names kept
exactly), precedence (CLI overrides > env var > YAML file > default), parsing of env strings
(booleans, comma lists, empty = unset), and one ``ConfigError`` naming every bad key.
Must not: log, open network connections, or put a secret's value in a message.

Why not pydantic-settings: its env names are derived from the model (``OPENCTI__URL`` style)
and its errors do not say which source a value came from; the seed's ``SECTION_KEY`` names and
an error that names file/env per key are the contract here, and a 40-line merge does both.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from reconciler import defaults
from reconciler.errors import ConfigError, excerpt
from reconciler.model import IGNORABLE_FIELDS, Action

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ENV_VARS",
    "IGNORABLE_FIELDS",
    "MASK",
    "REQUIRED_KEYS",
    "SECRET_KEYS",
    "ConnectorSection",
    "DefenderSection",
    "OpenCTISection",
    "ReconcilerSection",
    "Settings",
    "load_settings",
    "settings_reference",
]

#: Read when ``load_settings`` gets no path and the file exists in the working directory.
DEFAULT_CONFIG_FILE = "config.yml"

#: What a secret is shown as in ``Settings.redacted()``.
MASK = "********"

_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_BOOL_WORDS = "true/false/yes/no/1/0"
_LOG_LEVELS = ("debug", "info", "warn", "warning", "error")

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


# -- value parsers (run before pydantic's own type checks) --------------------------------------


def _parse_bool(value: Any) -> Any:
    """Accept real booleans, 0/1 and the words true/false/yes/no (any case); refuse the rest,
    so a typo like ``ture`` is an error instead of pydantic's looser reading."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"{_show(value)} is not a boolean ({_BOOL_WORDS})")


def _split_list(value: Any) -> Any:
    """A comma-separated string (env var or YAML) or a YAML list → tuple of non-blank strings."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return value  # let pydantic name the type problem
    return tuple(str(item).strip() for item in items if str(item).strip())


def _check_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{_show(value)} is not an http(s) URL")
    return value.strip().rstrip("/")


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{_show(value)} is not a path starting with '/'")
    return value


def _check_file(value: Path) -> Path:
    if not value.is_file():
        raise ValueError(f"{_show(str(value))} is not an existing file")
    return value


def _check_non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("an empty string is not allowed")
    return value.strip()


def _parse_action(value: Any) -> Any:
    """Match an action name case-insensitively (``block`` → ``Block``)."""
    if isinstance(value, str):
        for action in Action:
            if action.value.lower() == value.strip().lower():
                return action
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _check_ignorable(value: tuple[str, ...]) -> tuple[str, ...]:
    bad = [item for item in value if item not in IGNORABLE_FIELDS]
    if bad:
        shown = ", ".join(_show(b) for b in bad)
        verb = "is" if len(bad) == 1 else "are"
        raise ValueError(f"{shown} {verb} not one of {', '.join(IGNORABLE_FIELDS)}")
    return value


def _show(value: Any) -> str:
    """A value as quoted in an error: repr, cut short (never used for secrets)."""
    return excerpt(repr(value), 80)


Flag = Annotated[bool, BeforeValidator(_parse_bool)]
Names = Annotated[tuple[str, ...], BeforeValidator(_split_list)]
Url = Annotated[str, AfterValidator(_check_url)]
NonEmpty = Annotated[str, AfterValidator(_check_non_empty)]
LogLevel = Annotated[Literal["debug", "info", "warn", "warning", "error"], BeforeValidator(_lower)]
LogFormat = Annotated[Literal["auto", "text", "json"], BeforeValidator(_lower)]


def _setting(
    default: Any,
    meaning: str,
    *,
    env: str,
    accepted: str,
    required: bool = False,
    secret: bool = False,
    **constraints: Any,
) -> Any:
    """A field with its env var, what it accepts (quoted in errors), and a description that
    says meaning, default and env var (read by the README and Helm chart generators)."""
    if required:
        shown = "required"
    elif default is None:
        shown = "default: not set"
    elif isinstance(default, tuple):
        shown = f"default: {', '.join(default) or 'empty list'}"
    else:
        shown = f"default: {default}"
    return Field(
        default=default,
        description=f"{meaning} Accepts {accepted}; {shown}; env {env}.",
        json_schema_extra={
            "env": env,
            "accepted": accepted,
            "required": required,
            "secret": secret,
        },
        **constraints,
    )


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

    @field_validator("interval_seconds", "max_deletes", "quota", "http_port", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        # pydantic reads the bool True as 1; a boolean here is always a mistake.
        if isinstance(value, bool):
            raise ValueError(f"{_show(value)} is not a whole number")
        return value


_SECTIONS: dict[str, type[_Section]] = {
    "opencti": OpenCTISection,
    "connector": ConnectorSection,
    "microsoft_defender_intel": DefenderSection,
    "reconciler": ReconcilerSection,
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


# -- loading -----------------------------------------------------------------------------------


def load_settings(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    require: bool = True,
) -> Settings:
    """Read the YAML file (``path``, else ``./config.yml`` when present), apply env vars
    (``env``, else ``os.environ``) and ``overrides`` (dotted keys; ``None`` values are
    skipped), validate, and return the settings.

    Raises ``ConfigError`` naming every problem at once. With ``require=False`` the required
    keys may stay unset (``None``), for commands that need only part of the configuration."""
    env = os.environ if env is None else env
    problems: list[tuple[int, str]] = []
    file_label = ""
    document: dict[str, Any] = {}
    file_path = _resolve_path(path)
    if file_path is not None:
        file_label = f"file {file_path.name}"
        document = _read_yaml(file_path)
        problems += _unknown_keys(document, file_label)

    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for dotted, env_name in ENV_VARS.items():
        section, key = dotted.split(".", 1)
        raw_section = document.get(section)
        file_value = raw_section.get(key) if isinstance(raw_section, dict) else None
        if not _unset(file_value):
            values[dotted], origin[dotted] = file_value, file_label
        env_value = env.get(env_name)
        if env_value is not None and env_value.strip():
            values[dotted], origin[dotted] = env_value.strip(), "env"
    for dotted, value in (overrides or {}).items():
        if dotted not in ENV_VARS:
            problems.append((len(ENV_VARS), f"  {dotted} (override): unknown key"))
        elif value is not None:
            values[dotted], origin[dotted] = value, "override"

    nested: dict[str, dict[str, Any]] = {section: {} for section in _SECTIONS}
    for dotted, value in values.items():
        section, key = dotted.split(".", 1)
        nested[section][key] = value

    settings: Settings | None = None
    try:
        settings = Settings.model_validate(nested)
    except ValidationError as exc:
        problems += _describe(exc, values, origin)
    if require:
        order = list(ENV_VARS)
        for dotted in REQUIRED_KEYS:
            if dotted not in values:
                line = f"  {dotted} ({ENV_VARS[dotted]}): required, not set"
                problems.append((order.index(dotted), line))
    if problems or settings is None:
        raise ConfigError(_summary(problems, values))
    return settings


def _unset(value: Any) -> bool:
    """A YAML key left empty (``key:``) or ``""`` means "use the default", like an empty env."""
    return value is None or (isinstance(value, str) and not value.strip())


def _resolve_path(path: str | Path | None) -> Path | None:
    if path is None:
        default = Path(DEFAULT_CONFIG_FILE)
        return default if default.is_file() else None
    return Path(path)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read config file {path}: not UTF-8 text") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # str(exc) quotes the offending line, which may hold a secret: use the position only.
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"cannot parse config file {path}: {where}: {problem}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(
            f"config file {path} must be a mapping of sections "
            f"({', '.join(_SECTIONS)}), not {type(document).__name__}"
        )
    return document


def _unknown_keys(document: dict[str, Any], label: str) -> list[tuple[int, str]]:
    """Every key of the file that is not a setting (nor a pycti key we knowingly ignore)."""
    last = len(ENV_VARS)
    problems: list[tuple[int, str]] = []
    for section, body in document.items():
        name = str(section)
        if name not in _SECTIONS:
            hint = _did_you_mean(name, list(_SECTIONS))
            problems.append((last, f"  {name} (from {label}): unknown section{hint}"))
            continue
        if body is None:
            continue
        if not isinstance(body, dict):
            problems.append((last, f"  {name} (from {label}): must be a mapping of keys"))
            continue
        known = _SECTIONS[name].model_fields
        for key in body:
            if str(key) in known or str(key) in _PYCTI_KEYS.get(name, ()):
                continue
            hint = _did_you_mean(str(key), list(known))
            problems.append((last, f"  {name}.{key} (from {label}): unknown key{hint}"))
    return problems


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _describe(
    exc: ValidationError, values: dict[str, Any], origin: dict[str, str]
) -> list[tuple[int, str]]:
    """One line per bad key: key, env var, source, and what was wrong / what is accepted."""
    order = list(ENV_VARS)
    lines: dict[str, tuple[int, str]] = {}
    for error in exc.errors():
        loc = error["loc"]
        dotted = ".".join(str(part) for part in loc[:2])
        if dotted in lines or dotted not in ENV_VARS:
            continue
        extra = _extra(*dotted.split(".", 1))
        if extra["secret"]:
            reason = f"the value is not {extra['accepted']}"  # never echo a secret
        elif error["type"] == "value_error":
            reason = str(error["ctx"]["error"])
        else:
            reason = f"{_show(values.get(dotted, error['input']))} is not {extra['accepted']}"
        source = origin.get(dotted, "default")
        line = f"  {dotted} ({ENV_VARS[dotted]}, from {source}): {reason}"
        lines[dotted] = (order.index(dotted), line)
    return list(lines.values())


def _summary(problems: list[tuple[int, str]], values: dict[str, Any]) -> str:
    count = len(problems)
    text = f"invalid configuration ({count} problem{'s' if count != 1 else ''}):\n"
    text += "\n".join(line for _, line in sorted(problems))
    # Belt and braces: no secret may leak through a quoted value of another key.
    for dotted in SECRET_KEYS:
        secret = values.get(dotted)
        if isinstance(secret, SecretStr):
            secret = secret.get_secret_value()
        if isinstance(secret, str) and secret.strip():
            text = text.replace(secret.strip(), MASK)
    return text
