"""Domain values shared by every layer: indicator types, actions, severities, the desired and
the actual Defender indicator, and the key that identifies one.

Data only: no I/O, no imports from the rest of the package. ``Raw*`` names are wire dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, NamedTuple, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from reconciler.defaults import OWNERSHIP_TAG

__all__ = [
    "IGNORABLE_FIELDS",
    "MANAGED_FIELDS",
    "OBSERVABLE_TYPES",
    "SERVER_FIELDS",
    "Action",
    "DefenderIndicator",
    "DesiredIndicator",
    "IndicatorKey",
    "IndicatorType",
    "Ownership",
    "RawIndicator",
    "Severity",
    "SkipReason",
    "Skipped",
    "canonical_action",
    "format_datetime",
    "parse_datetime",
]

RawIndicator = dict[str, Any]


class IndicatorType(StrEnum):
    """Defender ``indicatorType`` values."""

    FILE_SHA1 = "FileSha1"
    FILE_SHA256 = "FileSha256"
    FILE_MD5 = "FileMd5"
    CERTIFICATE_THUMBPRINT = "CertificateThumbprint"
    IP_ADDRESS = "IpAddress"
    DOMAIN_NAME = "DomainName"
    URL = "Url"


#: OpenCTI observable types the mapping can deploy, as OpenCTI spells them (a policy rule may
#: match on these or on an ``IndicatorType``).
OBSERVABLE_TYPES: tuple[str, ...] = (
    "IPv4-Addr",
    "IPv6-Addr",
    "Domain-Name",
    "Hostname",
    "Url",
    "StixFile",
    "Artifact",
)


class Action(StrEnum):
    """Defender ``action`` values (``Alert``/``AlertAndBlock`` are legacy but still accepted)."""

    WARN = "Warn"
    BLOCK = "Block"
    AUDIT = "Audit"
    ALERT = "Alert"
    ALERT_AND_BLOCK = "AlertAndBlock"
    BLOCK_AND_REMEDIATE = "BlockAndRemediate"
    ALLOWED = "Allowed"


class Severity(StrEnum):
    """Defender ``severity`` values."""

    INFORMATIONAL = "Informational"
    LOW = "Low"
    MEDIUM = "Medium"
    HIGH = "High"


class IndicatorKey(NamedTuple):
    """What identifies one desired indicator: (indicatorType, canonical indicatorValue)."""

    type: IndicatorType
    value: str

    def __str__(self) -> str:
        return f"{self.type.value}:{self.value}"


@dataclass(frozen=True, slots=True)
class Ownership:
    """Which Defender indicators are ours: ``application`` equal to ``tag`` or to one of
    ``adopt_tags`` (taken over from an older tool), compared after stripping and case-folding.

    This is the only ownership rule: the full listing, the scoped reads and the planner all ask
    ``owns``. Case-insensitive because Defender's echo of ``application`` is not documented to
    keep the case we sent (tolerant reader); the flip side, a foreign tool writing the same word
    in another case, is avoided by choosing a distinctive tag. Indicators we create carry
    ``tag`` exactly as configured."""

    tag: str = OWNERSHIP_TAG
    adopt_tags: tuple[str, ...] = ()
    _folded: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.tag.strip():
            raise ValueError("the ownership tag must not be empty")
        # Asked once per listed row: fold the tags once.
        object.__setattr__(self, "_folded", frozenset(t.strip().casefold() for t in self.tags))

    @property
    def tags(self) -> tuple[str, ...]:
        """Our tag first, then the adopted ones."""
        return (self.tag, *self.adopt_tags)

    def owns(self, application: object) -> bool:
        """True when an indicator with this ``application`` value is ours to change or delete."""
        return isinstance(application, str) and application.strip().casefold() in self._folded


#: Wire names of the fields the reconciler manages and compares (besides the key).
MANAGED_FIELDS: tuple[str, ...] = (
    "action",
    "severity",
    "title",
    "description",
    "expirationTime",
    "generateAlert",
    "rbacGroupNames",
    "recommendedActions",
    "educateUrl",
    "externalId",
)

#: Managed fields ``reconciler.ignore_fields`` may name: every one but ``action``, which is
#: part of Defender's identity of an indicator and so never ignorable.
IGNORABLE_FIELDS: tuple[str, ...] = tuple(f for f in MANAGED_FIELDS if f != "action")

#: Wire names Defender manages itself; never compared, never sent.
SERVER_FIELDS: tuple[str, ...] = (
    "id",
    "createdBy",
    "createdByDisplayName",
    "createdBySource",
    "creationTimeDateTimeUtc",
    "lastUpdateTime",
    "lastUpdatedBy",
    "rbacGroupIds",
    "category",
    "version",
    "certificateInfo",
)


def parse_datetime(value: str | datetime | None) -> datetime | None:
    """Parse an ISO-8601 timestamp (``Z`` or offset, up to 7 fractional digits) to aware UTC,
    truncated to whole seconds (Defender's resolution). ``None``/empty stays ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            # Fast path (Python 3.11+ reads ``Z`` and 7 fractional digits natively).
            dt = datetime.fromisoformat(value)
        except ValueError:
            dt = _parse_lenient(value)
    if dt.tzinfo is UTC:
        return dt if dt.microsecond == 0 else dt.replace(microsecond=0)
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC, microsecond=0)
    if dt.utcoffset():
        dt = dt.astimezone(UTC)
    return dt.replace(tzinfo=UTC, microsecond=0)


def _parse_lenient(value: str) -> datetime:
    """What ``fromisoformat`` refuses: surrounding blanks, a lowercase ``z``, more than six
    fractional digits on older parsers."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        text = head + ("." + digits[:6] if digits else "") + rest[i:]
    return datetime.fromisoformat(text)


_M = TypeVar("_M", bound=BaseModel)
_FIELD_SETS: dict[frozenset[str], set[str]] = {}


def trusted_model(cls: type[_M], fields: set[str], values: dict[str, Any]) -> _M:
    """An instance of ``cls`` holding ``values`` as is, without validation.

    For hot paths whose ``values`` already hold every field of ``cls`` with the type and normal
    form validation would give (enums, whole-second UTC datetimes, tuples). What pydantic's own
    ``model_construct`` ends with, minus its per-field default handling (which made it slower
    than validating), and ``fields`` is shared by every instance as its set of fields set instead
    of a ~0.7 KB set each (pydantic copies it before any change). A caller proves equivalence in
    a test (see ``tests/mapping``: each built instance equals its validated twin).
    """
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", fields)
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def format_datetime(value: datetime | None) -> str | None:
    """Render a timestamp the way we send it to Defender: ``YYYY-MM-DDTHH:MM:SSZ``."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


class _Wire(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_enum_values=False,
    )


class DesiredIndicator(_Wire):
    """One Defender indicator as OpenCTI says it should be (built by ``mapping``).

    The wire fields are exactly what is sent; ``score``, ``updated_at``, ``opencti_ids``,
    ``rule`` and ``note`` are metadata for merging, quota priority and reports and never leave
    the process.
    """

    indicator_type: IndicatorType
    indicator_value: str
    action: Action
    severity: Severity
    title: str
    description: str
    application: str
    external_id: str
    expiration_time: datetime | None = None
    generate_alert: bool = True
    rbac_group_names: tuple[str, ...] = ()
    recommended_actions: str | None = None
    educate_url: str | None = None

    score: int = Field(default=0, exclude=True)
    updated_at: datetime | None = Field(default=None, exclude=True)
    opencti_ids: tuple[str, ...] = Field(default=(), exclude=True)
    #: The name of the policy rule that produced this spec (shown in plans, never sent).
    rule: str = Field(default="", exclude=True)
    #: Why the spec departs from its rule (revoked or expired, kept as Audit by the policy).
    note: str = Field(default="", exclude=True)

    @field_validator("expiration_time", "updated_at", mode="before")
    @classmethod
    def _dt(cls, v: Any) -> datetime | None:
        return parse_datetime(v)

    @property
    def key(self) -> IndicatorKey:
        return IndicatorKey(self.indicator_type, self.indicator_value)

    def to_body(self) -> RawIndicator:
        """The JSON body for ``POST /api/indicators`` or one item of ``/import``."""
        body: RawIndicator = {
            "indicatorValue": self.indicator_value,
            "indicatorType": self.indicator_type.value,
            "action": self.action.value,
            "title": self.title,
            "description": self.description,
            "severity": self.severity.value,
            "application": self.application,
            "externalId": self.external_id,
            "generateAlert": self.generate_alert,
            "rbacGroupNames": list(self.rbac_group_names),
        }
        if self.expiration_time is not None:
            body["expirationTime"] = format_datetime(self.expiration_time)
        if self.recommended_actions is not None:
            body["recommendedActions"] = self.recommended_actions
        if self.educate_url is not None:
            body["educateUrl"] = self.educate_url
        return body

    def essence(self) -> dict[str, Any]:
        """The managed fields, normalised for comparison with ``DefenderIndicator.essence``."""
        return {
            "action": self.action.value,
            "severity": self.severity.value,
            "title": self.title,
            "description": self.description,
            "expirationTime": format_datetime(self.expiration_time),
            "generateAlert": self.generate_alert,
            "rbacGroupNames": sorted(self.rbac_group_names),
            "recommendedActions": self.recommended_actions or None,
            "educateUrl": self.educate_url or None,
            "externalId": self.external_id,
        }


def _known(enum: type[StrEnum]) -> dict[str, StrEnum]:
    return {member.value.casefold(): member for member in enum}


_KNOWN_TYPES = _known(IndicatorType)
_KNOWN_ACTIONS = _known(Action)
_KNOWN_SEVERITIES = _known(Severity)


def _tolerant(known: dict[str, StrEnum], required: bool) -> Any:
    """A before-validator: a known name (any case, surrounding blanks) becomes the member, any
    other non-empty text is kept as text (a value Microsoft added or renamed), so one row a
    portal user edited never makes a whole listing unreadable."""

    def parse(value: Any) -> Any:
        if isinstance(value, str) and value.strip():
            return known.get(value.strip().casefold(), value.strip())
        if value is None and not required:
            return None
        raise ValueError(f"expected a name, got {type(value).__name__}")

    return parse


#: Legacy action names Defender may answer with, and the current action each stands for:
#: ``Alert`` is ``Audit`` with an alert; ``AlertAndBlock`` is ``Block`` (network types) or
#: ``BlockAndRemediate`` (files). Compared through ``canonical_action`` on both sides, an alias
#: seen on read never causes churn.
_NETWORK = frozenset({"IpAddress", "DomainName", "Url"})


def canonical_action(indicator_type: str, action: str) -> str:
    """The current action name ``action`` stands for on an indicator of ``indicator_type``."""
    if action == "Alert":
        return "Audit"
    if action == "AlertAndBlock":
        return "Block" if indicator_type in _NETWORK else "BlockAndRemediate"
    return action


def _text(value: StrEnum | str | None) -> str | None:
    return value.value if isinstance(value, StrEnum) else value


class DefenderIndicator(_Wire):
    """One indicator as Defender holds it (parsed from a listing row).

    Tolerant reader: ``indicator_type``, ``action`` and ``severity`` are the enum member when
    the name is known, else the text Defender sent; such a row simply differs from every
    desired indicator (an unknown type has no ``key`` at all). Only a row without an ``id`` or
    a value cannot be read."""

    id: str
    indicator_type: Annotated[IndicatorType | str, BeforeValidator(_tolerant(_KNOWN_TYPES, True))]
    indicator_value: str
    action: Annotated[Action | str, BeforeValidator(_tolerant(_KNOWN_ACTIONS, True))]
    severity: Annotated[
        Severity | str | None, BeforeValidator(_tolerant(_KNOWN_SEVERITIES, False))
    ] = None
    title: str | None = None
    description: str | None = None
    application: str | None = None
    external_id: str | None = None
    expiration_time: datetime | None = None
    generate_alert: bool | None = None
    rbac_group_names: tuple[str, ...] = ()
    recommended_actions: str | None = None
    educate_url: str | None = None
    created_by: str | None = None
    created_by_source: str | None = None
    creation_time_date_time_utc: datetime | None = None
    last_update_time: datetime | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, v: Any) -> str:
        return str(v)

    @field_validator(
        "expiration_time", "creation_time_date_time_utc", "last_update_time", mode="before"
    )
    @classmethod
    def _dt(cls, v: Any) -> datetime | None:
        return parse_datetime(v)

    @field_validator("rbac_group_names", mode="before")
    @classmethod
    def _groups(cls, v: Any) -> tuple[str, ...]:
        if v is None:
            return ()
        if isinstance(v, str):
            return tuple(p.strip() for p in v.split(",") if p.strip())
        return tuple(v)

    @classmethod
    def from_raw(cls, raw: RawIndicator) -> DefenderIndicator:
        """Parse a listing row; raises ``pydantic.ValidationError`` on a row we cannot use."""
        parsed = cls.model_validate(raw)
        # Rows of one listing set the same fields: share one set (see ``trusted_model``).
        given = parsed.__pydantic_fields_set__
        shared = _FIELD_SETS.setdefault(frozenset(given), given)
        object.__setattr__(parsed, "__pydantic_fields_set__", shared)
        return parsed

    @property
    def key(self) -> IndicatorKey | None:
        """The key, or ``None`` for an indicator type this code does not know."""
        if isinstance(self.indicator_type, IndicatorType):
            return IndicatorKey(self.indicator_type, self.indicator_value)
        return None

    @property
    def type_name(self) -> str:
        return str(_text(self.indicator_type))

    def essence(self) -> dict[str, Any]:
        """The managed fields, normalised like ``DesiredIndicator.essence`` (an unknown enum
        name as its text)."""
        return {
            "action": _text(self.action),
            "severity": _text(self.severity),
            "title": self.title,
            "description": self.description,
            "expirationTime": format_datetime(self.expiration_time),
            "generateAlert": self.generate_alert,
            "rbacGroupNames": sorted(self.rbac_group_names),
            "recommendedActions": self.recommended_actions or None,
            "educateUrl": self.educate_url or None,
            "externalId": self.external_id,
        }


class SkipReason(StrEnum):
    """Stable reason strings for an OpenCTI indicator (or one of its values) that is not
    deployed. Used in plans, reports and metrics; never renamed once released."""

    UNSUPPORTED_TYPE = "unsupported_type"  # email, mutex, CIDR, ... no Defender type
    UNSUPPORTED_PATTERN = "unsupported_pattern"  # YARA, Sigma, Snort, ... not a STIX pattern
    INVALID_PATTERN = "invalid_pattern"  # STIX pattern that does not parse
    INVALID_VALUE = "invalid_value"  # value fails the syntax Defender accepts
    PRIVATE_IP = "private_ip"  # non-public address; Defender accepts only public IPs
    NO_VALUE = "no_value"  # nothing deployable in the indicator at all
    REVOKED = "revoked"  # revoked in OpenCTI (owned copies are expired)
    EXPIRED = "expired"  # valid_until / expiry cap already passed (owned copies expired)
    QUOTA = "quota"  # over the 15,000-indicator room; lowest priority dropped
    SUPERSEDED = "superseded"  # merged into a higher-priority indicator with the same key
    EXCLUDED = "excluded"  # the value is in a policy exclusion (owned copies deleted)
    OPTED_OUT = "opted_out"  # the indicator carries the policy's skip label (copies deleted)
    NOT_DEPLOYED_BY_RULE = "not_deployed_by_rule"  # its policy rule says deploy: false


class Skipped(BaseModel):
    """An OpenCTI indicator, or one value of it, that will not be deployed, and why.

    ``key`` is set when the Defender key is known (revoked/expired/quota, and the policy's
    excluded/opted_out/not_deployed_by_rule), so the plan can remove an owned copy of that key
    (an ``expire`` change for revoked/expired, a ``delete`` for the policy's reasons)."""

    model_config = ConfigDict(frozen=True)

    opencti_id: str
    reason: SkipReason
    detail: str = ""
    key: IndicatorKey | None = None
    name: str | None = None
    #: The policy entry that decided: a rule's name, or an exclusion's (reason ``excluded``).
    rule: str | None = None
