"""OpenCTI indicator → Defender indicator specs: reading both OpenCTI renderings (a GraphQL
listing node, a stream event's STIX object) into one model, finding the deployable values
(``observable_values`` or a small STIX pattern parser), canonicalising and validating them,
score → action/severity, expiry, title/description/labels, and the deterministic merge of
several OpenCTI indicators that land on one Defender key.

Pure functions only: no I/O, no clock, no logging of data, never imports httpx, pycti or msal.
The readers and mappers are total: bad input becomes a ``Skipped`` with a stable reason, never
an exception (only ``parse_stix_pattern`` raises, its own ``PatternRejected``, and
``MappingPolicy.from_settings`` raises ``ConfigError``).

Decisions (each is a contract the tests pin):

- IPv6 values are written in the full exploded form with all eight groups
  (``ipaddress.IPv6Address(v).exploded``), as the Defender reference asks for "all eight groups".
- IPv4 values are the canonical dotted quad; leading zeros are rejected (``invalid_value``).
- A CIDR ``/32`` (IPv4) or ``/128`` (IPv6) is one host and is deployed as that address; every
  other prefix is ``unsupported_type`` ("CIDR ranges are not supported by Defender").
- Non-public addresses (RFC 1918, CGNAT, loopback, link-local, multicast, unspecified,
  reserved, unique-local, ...) are ``private_ip`` when ``reject_private_ips``. The documentation
  ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) are deliberately *not*
  rejected: examples and the sandbox use them, and Defender's own answer is unconfirmed.
- A file yields one Defender indicator: its strongest *valid* hash (SHA-256 > SHA-1 > MD5);
  only when no hash is valid is it ``invalid_value``; SHA-512-only is ``unsupported_type``.
- A network type (IpAddress, DomainName, Url) cannot take ``BlockAndRemediate``: a fixed
  ``BlockAndRemediate`` action is downgraded to ``Block`` for those types.
- ``passive_only`` forces ``Audit``; ``Audit`` always sends ``generateAlert: true``.
- ``title`` is cut to ``TITLE_LIMIT`` (200) characters and ``description`` to
  ``DESCRIPTION_LIMIT`` (1000); the description's last line ``Labels: opencti, ...`` is kept
  whole when the text has to be cut.
- ``expirationTime`` = the earlier of ``valid_until`` and ``updated_at`` (else ``created_at``) +
  ``expire_days`` days (0 = no cap); never derived from the current time. Only
  ``map_indicator(..., now=...)`` compares it with a clock value the caller passes.
- Domains: stripped, lower-cased, one trailing dot removed, IDN → punycode (``idna`` UTS46,
  falling back to Python's codec); a fully qualified name (at least one dot) is required.
- URLs are only stripped; they must be ``http(s)://...`` or ``host/path`` and hold no
  whitespace or control characters.
"""

from __future__ import annotations

import bisect
import contextlib
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from reconciler.errors import ConfigError
from reconciler.model import (
    Action,
    DesiredIndicator,
    IndicatorKey,
    IndicatorType,
    Severity,
    Skipped,
    SkipReason,
    parse_datetime,
    trusted_model,
)

__all__ = [
    "DESCRIPTION_LIMIT",
    "OCTI_EXTENSION",
    "TITLE_LIMIT",
    "DesiredState",
    "MappingPolicy",
    "MappingResult",
    "ObservableValue",
    "OpenCTIIndicator",
    "PatternRejected",
    "build_desired",
    "expiration_time",
    "indicator_from_graphql",
    "indicator_from_stix",
    "labels_line",
    "map_indicator",
    "merge_desired",
    "merge_results",
    "parse_stix_pattern",
    "score_action",
    "score_severity",
]

#: The OpenCTI property extension inside a stream event's STIX object.
OCTI_EXTENSION = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba"
#: Longest title we send (Defender does not document a limit; keeps portal lists readable).
TITLE_LIMIT = 200
#: Longest description we send, labels line included.
DESCRIPTION_LIMIT = 1000
#: First tag of the labels line, as the seed promised ("tagged opencti plus labels").
LABELS_PREFIX_TAG = "opencti"

_NETWORK_TYPES = frozenset({IndicatorType.IP_ADDRESS, IndicatorType.DOMAIN_NAME, IndicatorType.URL})


# --------------------------------------------------------------------------------------------
# Policy and models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MappingPolicy:
    """The configuration mapping needs; built once from settings, immutable."""

    ownership_tag: str = "opencti"
    expire_days: int = 30  # 0 = no cap
    action: Action | None = None  # fixed action, else score-based
    passive_only: bool = False  # forces Audit
    rbac_group_names: tuple[str, ...] = ()
    recommended_actions: str | None = None
    generate_alert: bool = True
    educate_url: str | None = None
    reject_private_ips: bool = True

    @classmethod
    def from_settings(cls, cfg: Any) -> MappingPolicy:
        """Read ``cfg.microsoft_defender_intel.*`` (duck-typed); missing attributes keep the
        defaults. Raises ``ConfigError`` for an action or expiry we cannot use."""
        section = getattr(cfg, "microsoft_defender_intel", cfg)
        defaults = cls()
        tag = getattr(section, "ownership_tag", None) or defaults.ownership_tag
        expire = getattr(section, "expire_time", defaults.expire_days)
        try:
            expire_days = defaults.expire_days if expire is None else int(expire)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"microsoft_defender_intel.expire_time must be a whole number of days, "
                f"got {expire!r}"
            ) from exc
        if expire_days < 0:
            raise ConfigError("microsoft_defender_intel.expire_time must be >= 0 (0 = no cap)")
        groups_raw = getattr(section, "rbac_group_names", ()) or ()
        if isinstance(groups_raw, str):
            groups_raw = groups_raw.split(",")
        groups = tuple(sorted({str(g).strip() for g in groups_raw if str(g).strip()}))
        generate_alert = getattr(section, "generate_alert", True)
        return cls(
            ownership_tag=str(tag),
            expire_days=expire_days,
            action=_policy_action(getattr(section, "action", None)),
            passive_only=bool(getattr(section, "passive_only", False)),
            rbac_group_names=groups,
            recommended_actions=getattr(section, "recommended_actions", None) or None,
            generate_alert=True if generate_alert is None else bool(generate_alert),
            educate_url=getattr(section, "educate_url", None) or None,
            reject_private_ips=bool(getattr(section, "reject_private_ips", True)),
        )


def _policy_action(value: Any) -> Action | None:
    if value is None or isinstance(value, Action):
        return value
    text = str(getattr(value, "value", value)).strip()
    if text == "" or text.lower() in {"score", "auto", "none"}:
        return None
    for action in Action:
        if action.value.lower() == text.lower():
            return action
    allowed = ", ".join(a.value for a in Action)
    raise ConfigError(
        f"microsoft_defender_intel.action must be empty (score-based) or one of {allowed}, "
        f"got {text!r}"
    )


@dataclass(frozen=True, slots=True)
class ObservableValue:
    """One value of an indicator, in OpenCTI naming (``IPv4-Addr``, ``StixFile``, ...).
    ``hashes`` keys are canonical (``MD5``, ``SHA-1``, ``SHA-256``, ``SHA-512``, other upper)."""

    type: str
    value: str | None = None
    hashes: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class OpenCTIIndicator:
    """The one normalised OpenCTI indicator, whichever rendering it was read from."""

    id: str
    standard_id: str | None = None
    name: str | None = None
    description: str | None = None
    pattern: str | None = None
    pattern_type: str | None = None
    score: int | None = None
    revoked: bool = False
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    labels: tuple[str, ...] = ()
    main_observable_type: str | None = None
    observable_values: tuple[ObservableValue, ...] = ()
    detection: bool | None = None


@dataclass(frozen=True, slots=True)
class MappingResult:
    """What one OpenCTI indicator maps to: Defender specs and per-value skips."""

    desired: tuple[DesiredIndicator, ...] = ()
    skipped: tuple[Skipped, ...] = ()


@dataclass(frozen=True)
class DesiredState:
    """The merged desired side of a reconcile.

    ``expired_keys`` holds keys that only revoked/expired indicators produce (never a key that
    is also desired), so the planner can expire owned copies."""

    desired: dict[IndicatorKey, DesiredIndicator]
    skipped: tuple[Skipped, ...]
    expired_keys: dict[IndicatorKey, Skipped]


# --------------------------------------------------------------------------------------------
# Tolerant readers
# --------------------------------------------------------------------------------------------


def _opt_str(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    return None


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and abs(value) < 1e12 else None
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d{1,12}", text):
            return int(text)
    return None


def _opt_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    return None


def _opt_dt(value: Any) -> datetime | None:
    if not isinstance(value, str | datetime):
        return None
    try:
        return parse_datetime(value)
    except (ValueError, TypeError, OverflowError):
        return None


def _canonical_hash_name(name: str) -> str:
    text = name.strip().strip("'\"").strip()
    compact = text.lower().replace("-", "").replace("_", "").replace(" ", "")
    return {"md5": "MD5", "sha1": "SHA-1", "sha256": "SHA-256", "sha512": "SHA-512"}.get(
        compact, text.upper()
    )


def _read_hashes(raw: Any) -> dict[str, str]:
    """Hashes as a dict ``{canonical algorithm: value}``, from the STIX object form
    (``{"SHA-256": ...}``) or the GraphQL list form (``[{algorithm, hash}]``)."""
    pairs: list[tuple[Any, Any]] = []
    if isinstance(raw, Mapping):
        pairs = list(raw.items())
    elif isinstance(raw, list | tuple):
        for item in raw:
            if isinstance(item, Mapping):
                pairs.append((item.get("algorithm"), item.get("hash")))
    hashes: dict[str, str] = {}
    for name, value in pairs:
        if isinstance(name, str) and isinstance(value, str) and value.strip():
            # First occurrence wins so that differently spelled duplicates stay deterministic.
            hashes.setdefault(_canonical_hash_name(name), value)
    return hashes


def _read_observable_values(raw: Any) -> tuple[ObservableValue, ...]:
    if not isinstance(raw, list | tuple):
        return ()
    values: list[ObservableValue] = []
    for item in raw:
        if not isinstance(item, Mapping):
            continue
        obs_type = _opt_str(item.get("type"))
        if not obs_type:
            continue
        values.append(
            ObservableValue(
                type=obs_type,
                value=_opt_str(item.get("value")),
                hashes=_read_hashes(item.get("hashes")),
            )
        )
    return tuple(values)


def _read_labels(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list | tuple):
        return ()
    labels: list[str] = []
    for item in raw:
        value = item.get("value") if isinstance(item, Mapping) else item
        if isinstance(value, str) and value.strip():
            labels.append(value.strip())
    return tuple(labels)


def _invalid_input(opencti_id: Any, detail: str, name: Any = None) -> Skipped:
    return Skipped(
        opencti_id=opencti_id if isinstance(opencti_id, str) else "",
        reason=SkipReason.NO_VALUE,
        detail=detail,
        name=name if isinstance(name, str) else None,
    )


def indicator_from_graphql(node: Mapping[str, Any]) -> OpenCTIIndicator | Skipped:
    """Read a pycti listing node (the reconciler's lean selection). Never raises."""
    try:
        return _from_graphql(node)
    except Exception as exc:  # totality: a shape we did not foresee is a skip, not a crash
        return _invalid_input("", f"unreadable GraphQL node: {type(exc).__name__}")


def _from_graphql(node: Any) -> OpenCTIIndicator | Skipped:
    if not isinstance(node, Mapping):
        return _invalid_input("", "GraphQL node is not an object")
    entity_type = node.get("entity_type")
    ident = node.get("id")
    if entity_type is not None and entity_type != "Indicator":
        return _invalid_input(ident, f"not an indicator: {entity_type!r}", node.get("name"))
    if not isinstance(ident, str) or not ident.strip():
        return _invalid_input("", "indicator without an OpenCTI id", node.get("name"))
    return OpenCTIIndicator(
        id=ident.strip(),
        standard_id=_opt_str(node.get("standard_id")),
        name=_opt_str(node.get("name")),
        description=_opt_str(node.get("description")),
        pattern=_opt_str(node.get("pattern")),
        pattern_type=_opt_str(node.get("pattern_type")),
        score=_opt_int(node.get("x_opencti_score")),
        revoked=_opt_bool(node.get("revoked")) or False,
        valid_from=_opt_dt(node.get("valid_from")),
        valid_until=_opt_dt(node.get("valid_until")),
        created_at=_opt_dt(node.get("created_at")),
        updated_at=_opt_dt(node.get("updated_at")),
        labels=_read_labels(node.get("objectLabel")),
        main_observable_type=_opt_str(node.get("x_opencti_main_observable_type")),
        observable_values=_read_observable_values(node.get("x_opencti_observable_values")),
        detection=_opt_bool(node.get("x_opencti_detection")),
    )


def indicator_from_stix(obj: Mapping[str, Any]) -> OpenCTIIndicator | Skipped:
    """Read a stream event's STIX 2.1 indicator (``data`` of the envelope) with the OpenCTI
    extension. Omitted fields take defaults. Never raises."""
    try:
        return _from_stix(obj)
    except Exception as exc:  # totality, see indicator_from_graphql
        return _invalid_input("", f"unreadable STIX object: {type(exc).__name__}")


def _from_stix(obj: Any) -> OpenCTIIndicator | Skipped:
    if not isinstance(obj, Mapping):
        return _invalid_input("", "STIX object is not an object")
    extensions = obj.get("extensions")
    ext_raw = extensions.get(OCTI_EXTENSION) if isinstance(extensions, Mapping) else None
    ext: Mapping[str, Any] = ext_raw if isinstance(ext_raw, Mapping) else {}
    stix_id = _opt_str(obj.get("id"))
    if obj.get("type") != "indicator":
        return _invalid_input(stix_id, f"not an indicator: {obj.get('type')!r}", obj.get("name"))
    ident = ext.get("id")
    if not isinstance(ident, str) or not ident.strip():
        return _invalid_input(stix_id, "indicator without an OpenCTI id", obj.get("name"))

    def pick(ext_key: str, top_key: str) -> Any:
        # The extension is authoritative; x_opencti_* top-level keys are older renderings.
        value = ext.get(ext_key)
        return obj.get(top_key) if value is None else value

    return OpenCTIIndicator(
        id=ident.strip(),
        standard_id=stix_id,
        name=_opt_str(obj.get("name")),
        description=_opt_str(obj.get("description")),
        pattern=_opt_str(obj.get("pattern")),
        pattern_type=_opt_str(obj.get("pattern_type")),
        score=_opt_int(pick("score", "x_opencti_score")),
        revoked=_opt_bool(obj.get("revoked")) or False,
        valid_from=_opt_dt(obj.get("valid_from")),
        valid_until=_opt_dt(obj.get("valid_until")),
        created_at=_opt_dt(ext.get("created_at")),
        updated_at=_opt_dt(ext.get("updated_at")),
        labels=_read_labels(obj.get("labels")),
        main_observable_type=_opt_str(
            pick("main_observable_type", "x_opencti_main_observable_type")
        ),
        observable_values=_read_observable_values(
            pick("observable_values", "x_opencti_observable_values")
        ),
        detection=_opt_bool(pick("detection", "x_opencti_detection")),
    )


# --------------------------------------------------------------------------------------------
# STIX pattern parser (tolerant, hand-written; only what mapping needs)
# --------------------------------------------------------------------------------------------


class PatternRejected(ValueError):
    """Raised by ``parse_stix_pattern`` when a pattern yields nothing deployable; ``reason`` is
    ``invalid_pattern`` (does not parse) or ``unsupported_pattern`` (parses, cannot deploy)."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class PatternError(ValueError):
    """Internal: the pattern does not parse (→ ``invalid_pattern``)."""


class _Unsupported(Exception):
    """Internal: the pattern parses but cannot be deployed (→ ``unsupported_pattern``)."""


@dataclass(frozen=True)
class _Comparison:
    obj_type: str
    path: tuple[str, ...]
    op: str
    negated: bool
    value: str


_Dnf = list[list[_Comparison]]
_MAX_CONJUNCTS = 1000
_KEYWORDS_OBS = ("OR", "AND", "FOLLOWEDBY")
_QUALIFIERS = ("WITHIN", "START", "REPEATS")
_OPS = ("<=", ">=", "!=", "<>", "==", "=", "<", ">")
_WORD_OPS = ("LIKE", "MATCHES", "IN", "ISSUBSET", "ISSUPERSET")
_RE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RE_PREFIXED_STRING = re.compile(r"([thb])'")
_RE_LITERAL = re.compile(r"[+-]?\d+(\.\d+)?|true|false", re.IGNORECASE)
_RE_OBJECT_TYPE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*")
_RE_INDEX = re.compile(r"\[\s*(\*|\d+)\s*\]")
_RE_PROPERTY = re.compile(r"[A-Za-z0-9_\-]+")


class _Parser:
    """Recursive descent over the STIX 2.1 pattern grammar, producing a DNF of comparisons.
    Structures we cannot deploy (qualifiers, FOLLOWEDBY, AND across observations, operators
    other than ``=``) are parsed fully, then reported as unsupported."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.unsupported: list[str] = []

    # -- lexical helpers --
    def _ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _peek(self, token: str) -> bool:
        self._ws()
        return self.text.startswith(token, self.pos)

    def _expect(self, token: str) -> None:
        if not self._peek(token):
            raise PatternError(f"expected {token!r} at offset {self.pos}")
        self.pos += len(token)

    def _peek_word(self) -> str | None:
        self._ws()
        m = _RE_WORD.match(self.text, self.pos)
        return m.group(0) if m else None

    def _keyword(self, *words: str) -> str | None:
        word = self._peek_word()
        if word is not None and word.upper() in words:
            end = self.pos + len(word)
            # An object type such as ``or-thing:value`` is not a keyword.
            if end < len(self.text) and self.text[end] in "-:":
                return None
            self.pos = end
            return word.upper()
        return None

    def _string(self) -> str:
        self._expect("'")
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if ch == "'":
                self.pos += 1
                return "".join(out)
            out.append(ch)
            self.pos += 1
        raise PatternError("unterminated string literal")

    def _literal(self) -> str:
        self._ws()
        if self._peek("'"):
            return self._string()
        m = _RE_PREFIXED_STRING.match(self.text, self.pos)
        if m:
            self.pos += 1
            return self._string()
        m = _RE_LITERAL.match(self.text, self.pos)
        if m:
            self.pos = m.end()
            return m.group(0)
        raise PatternError(f"expected a literal at offset {self.pos}")

    # -- grammar --
    def parse(self) -> _Dnf:
        self._ws()
        if not self.text.strip():
            raise PatternError("empty pattern")
        dnf = self._obs_or()
        self._ws()
        if self.pos != len(self.text):
            raise PatternError(f"unexpected text at offset {self.pos}")
        return dnf

    def _obs_or(self) -> _Dnf:
        dnf = self._obs_and()
        while self._keyword("OR"):
            dnf = dnf + self._obs_and()
            self._limit(dnf)
        return dnf

    def _obs_and(self) -> _Dnf:
        dnf = self._obs_seq()
        while self._keyword("AND"):
            self._obs_seq()
            self.unsupported.append("AND between observations")
        return dnf

    def _obs_seq(self) -> _Dnf:
        dnf = self._obs_atom()
        while self._keyword("FOLLOWEDBY"):
            self._obs_atom()
            self.unsupported.append("FOLLOWEDBY")
        return dnf

    def _obs_atom(self) -> _Dnf:
        if self._peek("["):
            self.pos += 1
            dnf = self._cmp_or()
            self._expect("]")
        elif self._peek("("):
            self.pos += 1
            dnf = self._obs_or()
            self._expect(")")
        else:
            raise PatternError(f"expected '[' at offset {self.pos}")
        while (qualifier := self._keyword(*_QUALIFIERS)) is not None:
            self._qualifier(qualifier)
            self.unsupported.append(f"qualifier {qualifier}")
        return dnf

    def _qualifier(self, qualifier: str) -> None:
        if qualifier == "WITHIN":
            self._literal()
            if self._keyword("SECONDS") is None:
                raise PatternError("WITHIN needs SECONDS")
        elif qualifier == "START":
            self._literal()
            if self._keyword("STOP") is None:
                raise PatternError("START needs STOP")
            self._literal()
        else:
            self._literal()
            if self._keyword("TIMES") is None:
                raise PatternError("REPEATS needs TIMES")

    def _cmp_or(self) -> _Dnf:
        dnf = self._cmp_and()
        while self._keyword("OR"):
            dnf = dnf + self._cmp_and()
            self._limit(dnf)
        return dnf

    def _cmp_and(self) -> _Dnf:
        dnf = self._cmp_atom()
        while self._keyword("AND"):
            right = self._cmp_atom()
            self._limit_size(len(dnf) * len(right))
            dnf = [left + r for left in dnf for r in right]
        return dnf

    def _cmp_atom(self) -> _Dnf:
        if self._peek("("):
            self.pos += 1
            dnf = self._cmp_or()
            self._expect(")")
            return dnf
        if self._keyword("EXISTS"):
            self._path()
            self.unsupported.append("EXISTS")
            return [[]]
        return [[self._comparison()]]

    def _comparison(self) -> _Comparison:
        obj_type, path = self._path()
        negated = self._keyword("NOT") is not None
        self._ws()
        op = next((o for o in _OPS if self.text.startswith(o, self.pos)), None)
        if op is not None:
            self.pos += len(op)
            value = self._literal()
        else:
            word = self._keyword(*_WORD_OPS)
            if word is None:
                raise PatternError(f"expected a comparison operator at offset {self.pos}")
            op = word
            if word == "IN":
                self._expect("(")
                value = self._literal()
                while self._peek(","):
                    self.pos += 1
                    self._literal()
                self._expect(")")
            else:
                value = self._literal()
        return _Comparison(obj_type, path, op, negated, value)

    def _path(self) -> tuple[str, tuple[str, ...]]:
        self._ws()
        m = _RE_OBJECT_TYPE.match(self.text, self.pos)
        if not m:
            raise PatternError(f"expected an object path at offset {self.pos}")
        obj_type = m.group(0).lower()
        self.pos = m.end()
        if not self.text.startswith(":", self.pos):
            raise PatternError(f"expected ':' after object type at offset {self.pos}")
        self.pos += 1
        parts = [self._path_component()]
        while self.pos < len(self.text) and self.text[self.pos] in ".[":
            if self.text[self.pos] == ".":
                self.pos += 1
                parts.append(self._path_component())
            else:
                m = _RE_INDEX.match(self.text, self.pos)
                if not m:
                    break  # not an index: leave it to the caller (e.g. a stray bracket)
                self.pos = m.end()
                parts.append(f"[{m.group(1)}]")
        return obj_type, tuple(parts)

    def _path_component(self) -> str:
        if self.text.startswith("'", self.pos):
            return self._string()
        m = _RE_PROPERTY.match(self.text, self.pos)
        if not m:
            raise PatternError(f"expected a property name at offset {self.pos}")
        self.pos = m.end()
        return m.group(0)

    def _limit(self, dnf: _Dnf) -> None:
        self._limit_size(len(dnf))

    def _limit_size(self, size: int) -> None:
        # An AND of ORs multiplies out; refuse before building something huge.
        if size > _MAX_CONJUNCTS:
            raise _Unsupported(f"more than {_MAX_CONJUNCTS} alternatives")


_STIX_TO_OPENCTI = {
    "ipv4-addr": "IPv4-Addr",
    "ipv6-addr": "IPv6-Addr",
    "domain-name": "Domain-Name",
    "hostname": "Hostname",
    "url": "Url",
    "file": "StixFile",
    "artifact": "Artifact",
    "email-addr": "Email-Addr",
    "mac-addr": "Mac-Addr",
    "x509-certificate": "X509-Certificate",
}
_VALUE_TYPES = frozenset({"ipv4-addr", "ipv6-addr", "domain-name", "hostname", "url"})
_FILE_TYPES = frozenset({"file", "artifact"})


def _opencti_type(stix_type: str) -> str:
    known = _STIX_TO_OPENCTI.get(stix_type)
    if known:
        return known
    return "-".join(part.capitalize() for part in stix_type.split("-"))


def parse_stix_pattern(pattern: str) -> tuple[ObservableValue, ...]:
    """Deployable values of a STIX pattern: one per OR'ed alternative; an AND of file hashes
    is one file with several hashes. Raises ``PatternRejected`` (a ``ValueError``) otherwise."""
    parser = _Parser(pattern)
    try:
        dnf = parser.parse()
    except PatternError as exc:
        raise PatternRejected(SkipReason.INVALID_PATTERN, str(exc)) from None
    except _Unsupported as exc:
        raise PatternRejected(SkipReason.UNSUPPORTED_PATTERN, str(exc)) from None
    if parser.unsupported:
        detail = ", ".join(sorted(set(parser.unsupported)))
        raise PatternRejected(SkipReason.UNSUPPORTED_PATTERN, f"not deployable: {detail}")
    return tuple(_conjunct_value(conjunct) for conjunct in dnf)


def _conjunct_value(conjunct: Sequence[_Comparison]) -> ObservableValue:
    for cmp in conjunct:
        if cmp.op not in {"=", "=="} or cmp.negated:
            op = ("NOT " if cmp.negated else "") + cmp.op
            raise PatternRejected(
                SkipReason.UNSUPPORTED_PATTERN, f"only '=' comparisons are deployable, not {op}"
            )
    types = sorted({cmp.obj_type for cmp in conjunct})
    if len(types) != 1:
        raise PatternRejected(
            SkipReason.UNSUPPORTED_PATTERN, f"one alternative combines {', '.join(types)}"
        )
    stix_type = types[0]
    if stix_type in _FILE_TYPES:
        hashes: dict[str, str] = {}
        for cmp in conjunct:
            if len(cmp.path) == 2 and cmp.path[0].lower() == "hashes":
                algo = _canonical_hash_name(cmp.path[1])
                if hashes.get(algo, cmp.value) != cmp.value:
                    raise PatternRejected(
                        SkipReason.UNSUPPORTED_PATTERN, f"conflicting {algo} values in one file"
                    )
                hashes[algo] = cmp.value
        return ObservableValue(type=_opencti_type(stix_type), value=None, hashes=hashes)
    if len(conjunct) != 1:
        raise PatternRejected(
            SkipReason.UNSUPPORTED_PATTERN, f"AND of several {stix_type} values is not deployable"
        )
    cmp = conjunct[0]
    if stix_type in _VALUE_TYPES and cmp.path != ("value",):
        raise PatternRejected(
            SkipReason.UNSUPPORTED_PATTERN,
            f"comparison on {stix_type}:{'.'.join(cmp.path)} is not deployable",
        )
    return ObservableValue(type=_opencti_type(stix_type), value=cmp.value)


# --------------------------------------------------------------------------------------------
# Value canonicalisation
# --------------------------------------------------------------------------------------------

_HEX = re.compile(r"[0-9a-f]+")
_HASH_TYPES: tuple[tuple[str, int, IndicatorType], ...] = (
    ("SHA-256", 64, IndicatorType.FILE_SHA256),
    ("SHA-1", 40, IndicatorType.FILE_SHA1),
    ("MD5", 32, IndicatorType.FILE_MD5),
)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Whitespace (``\s`` is Unicode-aware on str patterns, like ``str.isspace``) or C0/DEL controls.
_URL_BAD_CHAR = re.compile(r"[\s\x00-\x1f\x7f]")
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^/:?#@]+)(?::\d{1,5})?")

_REJECTED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
_REJECTED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in ("::/128", "::1/128", "100::/64", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8")
)

_ValueOutcome = IndicatorKey | tuple[SkipReason, str]


def _canonical_key(obs: ObservableValue, policy: MappingPolicy) -> _ValueOutcome:
    kind = obs.type.strip().lower()
    if kind in {"ipv4-addr", "ipv6-addr"}:
        return _ip_key(obs.value, policy)
    if kind in {"domain-name", "hostname"}:
        return _domain_key(obs.value)
    if kind == "url":
        return _url_key(obs.value)
    if kind in {"stixfile", "file", "artifact"}:
        return _file_key(obs)
    return (
        SkipReason.UNSUPPORTED_TYPE,
        f"observable type {obs.type} has no Defender indicator type",
    )


def _empty(value: str | None) -> bool:
    return value is None or not value.strip()


def _ip_key(value: str | None, policy: MappingPolicy) -> _ValueOutcome:
    if value is None or _empty(value):
        return (SkipReason.INVALID_VALUE, "empty IP address")
    text = value.strip()
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return (SkipReason.INVALID_VALUE, f"not an IP address: {text!r}")
        if net.prefixlen != net.max_prefixlen:
            return (
                SkipReason.UNSUPPORTED_TYPE,
                f"CIDR ranges are not supported by Defender: {text}",
            )
        text = text.split("/", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return (SkipReason.INVALID_VALUE, f"not an IP address: {text!r}")
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        return (SkipReason.INVALID_VALUE, f"IPv6 address with a zone: {text!r}")
    if policy.reject_private_ips and _non_public(addr):
        return (SkipReason.PRIVATE_IP, f"{addr} is not a public address")
    canonical = addr.exploded if isinstance(addr, ipaddress.IPv6Address) else str(addr)
    return IndicatorKey(IndicatorType.IP_ADDRESS, canonical)


def _int_ranges(nets: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> list[int]:
    # Flat sorted [start0, end0 + 1, start1, end1 + 1, ...] of disjoint networks: an address is
    # inside one exactly when bisect_right lands at an odd position (one comparison chain
    # instead of a membership test per network; this runs once per IP of a full listing).
    edges: list[int] = []
    for net in sorted(nets, key=lambda n: int(n.network_address)):
        edges += [int(net.network_address), int(net.broadcast_address) + 1]
    return edges


_REJECTED_V4_EDGES = _int_ranges(_REJECTED_V4)
_REJECTED_V6_EDGES = _int_ranges(_REJECTED_V6)


def _non_public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv4Address):
        return bisect.bisect_right(_REJECTED_V4_EDGES, int(addr)) % 2 == 1
    if addr.ipv4_mapped is not None:
        return _non_public(addr.ipv4_mapped)
    return bisect.bisect_right(_REJECTED_V6_EDGES, int(addr)) % 2 == 1


def _to_ascii_domain(text: str) -> str | None:
    if text.isascii():
        return text
    try:
        import idna  # imported lazily: only IDNs need it

        return str(idna.encode(text, uts46=True).decode("ascii"))
    except Exception:  # idna raises several error types; the codec below is the fallback
        pass
    try:
        return text.encode("idna").decode("ascii")
    except (UnicodeError, ValueError):
        return None


def _valid_hostname(name: str) -> bool:
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        return False
    return all(_LABEL.fullmatch(label) for label in labels)


def _domain_key(value: str | None) -> _ValueOutcome:
    if value is None or _empty(value):
        return (SkipReason.INVALID_VALUE, "empty domain name")
    text = value.strip().lower()
    if text.endswith("."):
        text = text[:-1]
    ascii_name = _to_ascii_domain(text)
    if ascii_name is None or not _valid_hostname(ascii_name.lower()):
        return (SkipReason.INVALID_VALUE, f"not a fully qualified domain name: {value.strip()!r}")
    return IndicatorKey(IndicatorType.DOMAIN_NAME, ascii_name.lower())


def _url_key(value: str | None) -> _ValueOutcome:
    if value is None or _empty(value):
        return (SkipReason.INVALID_VALUE, "empty URL")
    text = value.strip()
    if _URL_BAD_CHAR.search(text):
        return (SkipReason.INVALID_VALUE, "URL contains whitespace or control characters")
    rest = text
    scheme = _URL_SCHEME.match(text)
    if scheme:
        if scheme.group(1).lower() not in {"http", "https"}:
            return (SkipReason.INVALID_VALUE, f"URL scheme {scheme.group(1)!r} is not http(s)")
        rest = text[scheme.end() :]
        if "@" in rest.split("/", 1)[0]:
            rest = rest.split("@", 1)[1]  # userinfo is allowed; the host follows it
    host = _HOST_PORT.match(rest)
    if not host or (host.end() < len(rest) and rest[host.end()] not in "/?#"):
        return (SkipReason.INVALID_VALUE, f"not a URL: {text[:100]!r}")
    if not _url_host_ok(host.group("host")):
        return (SkipReason.INVALID_VALUE, f"URL has no valid host: {text[:100]!r}")
    return IndicatorKey(IndicatorType.URL, text)


def _url_host_ok(host: str) -> bool:
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        pass
    ascii_name = _to_ascii_domain(host.lower().rstrip("."))
    return ascii_name is not None and _valid_hostname(ascii_name.lower())


def _file_key(obs: ObservableValue) -> _ValueOutcome:
    hashes = {_canonical_hash_name(k): v for k, v in obs.hashes.items()}
    first_invalid: tuple[str, str] | None = None
    for algo, length, ind_type in _HASH_TYPES:
        raw = hashes.get(algo)
        if raw is None:
            continue
        text = raw.strip().lower()
        if len(text) == length and _HEX.fullmatch(text):
            return IndicatorKey(ind_type, text)
        if first_invalid is None:
            first_invalid = (algo, raw)
    if first_invalid is not None:
        algo, raw = first_invalid
        return (SkipReason.INVALID_VALUE, f"invalid {algo} hash: {raw.strip()[:80]!r}")
    if hashes:
        names = ", ".join(sorted(hashes))
        return (
            SkipReason.UNSUPPORTED_TYPE,
            f"{obs.type} with only {names} hash; Defender takes MD5, SHA-1, SHA-256",
        )
    return (SkipReason.UNSUPPORTED_TYPE, f"{obs.type} without an MD5, SHA-1 or SHA-256 hash")


# --------------------------------------------------------------------------------------------
# Score, action, severity, expiry, text
# --------------------------------------------------------------------------------------------


def score_action(score: int | None) -> Action:
    """The seed's table: >= 60 Block, 30-59 Alert, 1-29 Warn, 0 or missing Audit."""
    s = score or 0
    if s >= 60:
        return Action.BLOCK
    if s >= 30:
        return Action.ALERT
    if s >= 1:
        return Action.WARN
    return Action.AUDIT


def score_severity(score: int | None) -> Severity:
    """The seed's table: >= 60 High, 30-59 Medium, 1-29 Low, 0 or missing Informational."""
    s = score or 0
    if s >= 60:
        return Severity.HIGH
    if s >= 30:
        return Severity.MEDIUM
    if s >= 1:
        return Severity.LOW
    return Severity.INFORMATIONAL


def _action_for(ind_type: IndicatorType, score: int | None, policy: MappingPolicy) -> Action:
    if policy.passive_only:
        return Action.AUDIT
    action = policy.action or score_action(score)
    if action is Action.BLOCK_AND_REMEDIATE and ind_type in _NETWORK_TYPES:
        return Action.BLOCK  # Defender refuses BlockAndRemediate on network indicators
    return action


def expiration_time(ind: OpenCTIIndicator, policy: MappingPolicy) -> datetime | None:
    """The earlier of ``valid_until`` and (``updated_at`` or ``created_at``) + ``expire_days``
    (0 = no cap), whole seconds. Never reads a clock."""
    candidates: list[datetime] = []
    if ind.valid_until is not None:
        candidates.append(ind.valid_until)
    base = ind.updated_at or ind.created_at
    if policy.expire_days > 0 and base is not None:
        # Beyond year 9999 (OverflowError) no cap is as good as any.
        with contextlib.suppress(OverflowError):
            candidates.append(base + timedelta(days=policy.expire_days))
    if not candidates:
        return None
    return min(candidates).astimezone(UTC).replace(microsecond=0)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def labels_line(labels: Iterable[str]) -> str:
    """``Labels: opencti, <sorted, deduplicated labels>``."""
    rest = sorted({lab for lab in labels if lab and lab != LABELS_PREFIX_TAG})
    return "Labels: " + ", ".join([LABELS_PREFIX_TAG, *rest])


def _description(ind: OpenCTIIndicator) -> str:
    line = labels_line(ind.labels)
    body = (ind.description or "").strip()
    if not body:
        return _cut(line, DESCRIPTION_LIMIT)
    room = DESCRIPTION_LIMIT - len(line) - 1
    if room <= 1:
        return _cut(line, DESCRIPTION_LIMIT)
    return f"{_cut(body, room)}\n{line}"


def _title(ind: OpenCTIIndicator, key: IndicatorKey) -> str:
    name = (ind.name or "").strip()
    return _cut(name or key.value, TITLE_LIMIT)


# --------------------------------------------------------------------------------------------
# Mapping
# --------------------------------------------------------------------------------------------


# Mapped specs and skips are built from values that already have their field's type and
# normal form (enums, whole-second UTC datetimes, tuples, stripped ids), so they skip pydantic's
# validation, and every instance shares one ``model_fields_set`` (pydantic copies it before any
# change) instead of a ~0.7 KB set of its own: tens of MB at 15,000 indicators.
# tests/mapping/test_mapping.py checks each equals its validated twin.
_DESIRED_FIELDS: set[str] = set(DesiredIndicator.model_fields)
_SKIPPED_FIELDS: set[str] = set(Skipped.model_fields)


def _skip(
    ind: OpenCTIIndicator, reason: SkipReason, detail: str, key: IndicatorKey | None = None
) -> Skipped:
    return trusted_model(
        Skipped,
        _SKIPPED_FIELDS,
        {"opencti_id": ind.id, "reason": reason, "detail": detail, "key": key, "name": ind.name},
    )


def _values(ind: OpenCTIIndicator) -> tuple[ObservableValue, ...] | Skipped:
    pattern_type = (ind.pattern_type or "stix").strip().lower()
    if pattern_type != "stix":
        return _skip(
            ind, SkipReason.UNSUPPORTED_PATTERN, f"pattern type {pattern_type!r} is not deployable"
        )
    if ind.observable_values:
        return ind.observable_values
    if ind.pattern is None or not ind.pattern.strip():
        return _skip(ind, SkipReason.NO_VALUE, "no observable values and no pattern")
    try:
        return parse_stix_pattern(ind.pattern)
    except PatternRejected as exc:
        return _skip(ind, exc.reason, exc.detail)
    except RecursionError:
        return _skip(ind, SkipReason.INVALID_PATTERN, "pattern nested too deeply")


def map_indicator(
    ind: OpenCTIIndicator, policy: MappingPolicy, now: datetime | None = None
) -> MappingResult:
    """Map one OpenCTI indicator to Defender specs (one per distinct key) and per-value skips.

    Revoked → every key skipped ``revoked``; with ``now`` given (the planner's clock, never
    read here), an expiry at or before ``now`` → every key skipped ``expired``. Never raises.
    """
    try:
        return _map(ind, policy, now)
    except Exception as exc:  # totality: a bug here must not lose the whole run
        ident = getattr(ind, "id", "")
        return MappingResult(
            skipped=(
                Skipped(
                    opencti_id=ident if isinstance(ident, str) else "",
                    reason=SkipReason.INVALID_VALUE,
                    detail=f"mapping failed: {type(exc).__name__}",
                ),
            )
        )


def _map(ind: OpenCTIIndicator, policy: MappingPolicy, now: datetime | None) -> MappingResult:
    values = _values(ind)
    if isinstance(values, Skipped):
        return MappingResult(skipped=(values,))
    keys: list[IndicatorKey] = []
    skipped: list[Skipped] = []
    for obs in values:
        outcome = _canonical_key(obs, policy)
        if isinstance(outcome, IndicatorKey):
            if outcome not in keys:
                keys.append(outcome)
        else:
            skip = _skip(ind, outcome[0], outcome[1])
            if skip not in skipped:
                skipped.append(skip)
    keys.sort()
    skipped.sort(key=_skip_order)
    if not keys and not skipped:
        return MappingResult(skipped=(_skip(ind, SkipReason.NO_VALUE, "no deployable value"),))

    if ind.revoked:
        if not keys:
            return MappingResult(skipped=(_skip(ind, SkipReason.REVOKED, "revoked in OpenCTI"),))
        return MappingResult(
            skipped=tuple(_skip(ind, SkipReason.REVOKED, "revoked in OpenCTI", k) for k in keys)
        )
    expires = expiration_time(ind, policy)
    if now is not None and expires is not None and expires <= now:
        detail = f"expired at {expires.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        return MappingResult(
            skipped=tuple(_skip(ind, SkipReason.EXPIRED, detail, k) for k in keys) + tuple(skipped)
        )
    desired = tuple(_desired(ind, key, policy, expires) for key in keys)
    return MappingResult(desired=desired, skipped=tuple(skipped))


def _desired(
    ind: OpenCTIIndicator, key: IndicatorKey, policy: MappingPolicy, expires: datetime | None
) -> DesiredIndicator:
    action = _action_for(key.type, ind.score, policy)
    educate = (
        policy.educate_url
        if key.type is IndicatorType.URL and action in {Action.BLOCK, Action.WARN}
        else None
    )
    return trusted_model(
        DesiredIndicator,
        _DESIRED_FIELDS,
        {
            "indicator_type": key.type,
            "indicator_value": key.value,
            "action": action,
            "severity": score_severity(ind.score),
            "title": _title(ind, key),
            "description": _description(ind),
            "application": policy.ownership_tag,
            "external_id": ind.id,
            "expiration_time": expires,
            "generate_alert": True if action is Action.AUDIT else policy.generate_alert,
            "rbac_group_names": tuple(sorted(set(policy.rbac_group_names))),
            "recommended_actions": policy.recommended_actions,
            "educate_url": educate,
            "score": max(ind.score or 0, 0),
            "updated_at": ind.updated_at,
            "opencti_ids": (ind.id,),
        },
    )


def _skip_order(skip: Skipped) -> tuple[str, str, str, str]:
    return (skip.opencti_id, skip.reason.value, str(skip.key or ""), skip.detail)


_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


def _priority(item: DesiredIndicator) -> tuple[int, float, str, str]:
    # Sorted ascending, so the winner comes first: highest score, newest update, smallest id;
    # the JSON dump only breaks ties between two renderings of the very same id.
    updated = (item.updated_at or _EPOCH).timestamp()
    return (-item.score, -updated, item.external_id, item.model_dump_json())


def _merge_group(
    items: Sequence[DesiredIndicator],
) -> tuple[DesiredIndicator, list[DesiredIndicator]]:
    ranked = sorted(items, key=_priority)
    winner = ranked[0]
    ids = sorted({i for item in ranked for i in (item.opencti_ids or (item.external_id,))})
    return winner.model_copy(update={"opencti_ids": tuple(ids)}), ranked[1:]


def _group(items: Iterable[DesiredIndicator]) -> dict[IndicatorKey, list[DesiredIndicator]]:
    groups: dict[IndicatorKey, list[DesiredIndicator]] = {}
    for item in items:
        groups.setdefault(item.key, []).append(item)
    return groups


def merge_desired(items: Iterable[DesiredIndicator]) -> dict[IndicatorKey, DesiredIndicator]:
    """One spec per key: highest score, then newest ``updated_at``, then smallest id wins and
    keeps its own fields; ``opencti_ids`` lists every contributor. Same result in any order;
    the dict is ordered by key."""
    groups = _group(items)
    return {key: _merge_group(groups[key])[0] for key in sorted(groups)}


def build_desired(
    indicators: Iterable[OpenCTIIndicator | Skipped],
    policy: MappingPolicy,
    now: datetime | None = None,
) -> DesiredState:
    """Map every indicator, merge per key, and collect every skip (read failures, value skips,
    ``superseded`` losers). ``expired_keys`` are the keys of revoked/expired indicators that no
    live indicator wants."""
    results: list[MappingResult] = []
    read_skips: list[Skipped] = []
    for item in indicators:
        if isinstance(item, Skipped):
            read_skips.append(item)
        else:
            results.append(map_indicator(item, policy, now))
    return merge_results(results, extra_skips=read_skips)


def merge_results(
    results: Iterable[MappingResult], *, extra_skips: Iterable[Skipped] = ()
) -> DesiredState:
    """Merge already-mapped results into one desired state (the second half of
    ``build_desired``; the controller keeps results per indicator and merges slices)."""
    desired_items: list[DesiredIndicator] = []
    skipped: list[Skipped] = list(extra_skips)
    for result in results:
        desired_items.extend(result.desired)
        skipped.extend(result.skipped)

    desired: dict[IndicatorKey, DesiredIndicator] = {}
    groups = _group(desired_items)
    for key in sorted(groups):
        group = groups[key]
        if len(group) == 1 and group[0].opencti_ids:
            desired[key] = group[0]  # fast path: nothing to merge
            continue
        winner, losers = _merge_group(group)
        desired[key] = winner
        for loser in losers:
            skipped.append(
                Skipped(
                    opencti_id=loser.external_id,
                    reason=SkipReason.SUPERSEDED,
                    detail=f"merged into {winner.external_id}",
                    key=key,
                    name=loser.title,
                )
            )

    expired: dict[IndicatorKey, Skipped] = {}
    gone = (SkipReason.REVOKED, SkipReason.EXPIRED)
    for skip in sorted(skipped, key=_skip_order):
        if skip.reason in gone and skip.key is not None and skip.key not in desired:
            expired.setdefault(skip.key, skip)
    unique = sorted(set(skipped), key=_skip_order)
    return DesiredState(
        desired=desired,
        skipped=tuple(unique),
        expired_keys={k: expired[k] for k in sorted(expired)},
    )
