"""Microsoft Defender for Endpoint emulator: the Indicators API plus the Entra login MSAL needs.

Owns: one threaded HTTP(S) server on 127.0.0.1 serving the Entra endpoints of a confidential
client (openid-configuration, instance discovery, v2.0 and v1 token) and the Defender Indicators
API (list with OData, submit, import, delete, BatchDelete); an in-memory indicator store with
upsert, expiry, a quota, per-endpoint rate limits, seeded fault injection and a request log.
The spec is ``reference/defender-indicators-api.md`` (§2, §3.1 pattern A, §4-§8).

Must not: import anything from the rest of ``reconciler`` (so the emulator cannot share the
client's mistakes), reach any network beyond loopback, or sleep except for a configured latency.

Choices where Microsoft documents nothing (UNCONFIRMED in the reference), made on purpose:

- Upsert key (indicatorType, indicatorValue, action), exact string match; configurable.
- An update replaces every mutable field with what was sent (omitted optional fields return to
  their defaults); ``application``, ``version``, ``certificateInfo`` and the creation fields keep
  their first values.
- Creating past the quota -> 400 ``IndicatorsLimitExceeded`` (an import item: ``isFailed``).
- Private, loopback, link-local, CGNAT and multicast IPs -> 400 ``InvalidIpAddress`` while
  ``public_ips_only`` (documentation ranges such as 203.0.113.0/24 are accepted).
- Past ``expirationTime``, Audit without ``generateAlert``, an action not allowed for the type
  (§7.2), ``educateUrl`` outside Url + Block/Warn -> 400 ``InvalidInput``. The legacy actions are
  accepted: ``Alert`` for every type but certificates, ``AlertAndBlock`` for file hashes.
- Import: a failed item gets ``id: null`` and ``failureReason`` ``"<Code>: <message>"``.
- BatchDelete with an unknown id -> 404; nothing is deleted while ``batch_delete_atomic``.
- List: without ``$top`` pages of ``page_size`` (10,000) with ``@odata.nextLink``; with ``$top``
  no nextLink; ``$orderby``/``$select``/``$count``/``$expand`` -> 400 ``ODataError``. String
  comparisons are case-sensitive; ``eq`` on rbacGroupNames/rbacGroupIds means "has the element".
- Rate limits count per endpoint for the whole tenant; a refused call spends no budget.
- Roles (``roles=``, captured in each token when issued): none of Ti.ReadWrite(.All) -> 403
  ``Forbidden`` (Ti.Read.All may list); Ti.ReadWrite alone lists only the app's own indicators
  and gets 403 when it updates or deletes another's. A token for the newer API host
  (``https://api.security.microsoft.com/.default``) is issued but refused by the API with 403.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import heapq
import hmac
import ipaddress
import json
import operator
import random
import re
import secrets
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Protocol, TextIO
from urllib.parse import parse_qs, quote, unquote, urlsplit

from loguru import logger

__all__ = [
    "ACTIONS",
    "ALLOWED_ACTIONS",
    "FIELD_ORDER",
    "FILTER_FIELDS",
    "INDICATOR_TYPES",
    "RATE_LIMITS",
    "SCOPE",
    "SEVERITIES",
    "DefenderEmulator",
    "RequestRecord",
    "format_timestamp",
    "main",
    "serve_forever",
]

SCOPE = "https://api.securitycenter.microsoft.com/.default"
RESOURCE = "https://api.securitycenter.microsoft.com"
# The newer API host is a valid Entra resource too, but its tokens are refused by the API with
# 403 (reference §1, "token audience gotcha").
OTHER_RESOURCE = "https://api.security.microsoft.com"
READ_WRITE_ALL = "Ti.ReadWrite.All"
READ_WRITE = "Ti.ReadWrite"
READ_ALL = "Ti.Read.All"

INDICATOR_TYPES = (
    "FileSha1",
    "FileSha256",
    "FileMd5",
    "CertificateThumbprint",
    "IpAddress",
    "DomainName",
    "Url",
)
ACTIONS = ("Warn", "Block", "Audit", "Alert", "AlertAndBlock", "BlockAndRemediate", "Allowed")
SEVERITIES = ("Informational", "Low", "Medium", "High")

_FILE_ACTIONS = frozenset(
    {"Allowed", "Audit", "Warn", "Block", "BlockAndRemediate", "Alert", "AlertAndBlock"}
)
_NETWORK_ACTIONS = frozenset({"Allowed", "Audit", "Warn", "Block", "Alert"})
ALLOWED_ACTIONS: dict[str, frozenset[str]] = {
    "FileSha1": _FILE_ACTIONS,
    "FileSha256": _FILE_ACTIONS,
    "FileMd5": _FILE_ACTIONS,
    "CertificateThumbprint": frozenset({"Allowed", "BlockAndRemediate"}),
    "IpAddress": _NETWORK_ACTIONS,
    "DomainName": _NETWORK_ACTIONS,
    "Url": _NETWORK_ACTIONS,
}
_HEX_LENGTHS = {"FileSha1": 40, "FileSha256": 64, "FileMd5": 32, "CertificateThumbprint": 40}

# Real response field order (reference §5.2).
FIELD_ORDER = (
    "id",
    "indicatorValue",
    "indicatorType",
    "action",
    "createdBy",
    "severity",
    "category",
    "application",
    "educateUrl",
    "bypassDurationHours",
    "title",
    "description",
    "recommendedActions",
    "creationTimeDateTimeUtc",
    "expirationTime",
    "lastUpdateTime",
    "lastUpdatedBy",
    "rbacGroupNames",
    "rbacGroupIds",
    "notificationId",
    "notificationBody",
    "version",
    "mitreTechniques",
    "historicalDetection",
    "lookBackPeriod",
    "generateAlert",
    "additionalInfo",
    "createdByDisplayName",
    "externalId",
    "createdBySource",
    "certificateInfo",
)
REQUIRED_FIELDS = ("indicatorValue", "indicatorType", "action", "title", "description")
_DOCUMENTED_FIELDS = (
    *REQUIRED_FIELDS,
    "application",
    "expirationTime",
    "severity",
    "recommendedActions",
    "rbacGroupNames",
    "educateUrl",
    "generateAlert",
)
# Accepted although undocumented (reference §6.2, I-5890); ``id`` because OCTI sends it.
_UNDOCUMENTED_FIELDS = (
    "category",
    "bypassDurationHours",
    "notificationId",
    "notificationBody",
    "version",
    "mitreTechniques",
    "historicalDetection",
    "lookBackPeriod",
    "additionalInfo",
    "externalId",
    "certificateInfo",
)
ACCEPTED_FIELDS = frozenset((*_DOCUMENTED_FIELDS, *_UNDOCUMENTED_FIELDS, "id"))
_CANONICAL_FIELDS = {name.lower(): name for name in ACCEPTED_FIELDS}
_STRING_FIELDS = (
    "indicatorValue",
    "indicatorType",
    "action",
    "title",
    "description",
    "application",
    "expirationTime",
    "severity",
    "recommendedActions",
    "educateUrl",
    "externalId",
)
# Kept from the first submission when an upsert updates a row.
_KEPT_ON_UPDATE = frozenset(
    {
        "id",
        "createdBy",
        "creationTimeDateTimeUtc",
        "application",
        "version",
        "certificateInfo",
        "createdByDisplayName",
        "createdBySource",
    }
)
FILTER_FIELDS = frozenset(
    {
        "application",
        "createdByDisplayName",
        "expirationTime",
        "generateAlert",
        "title",
        "rbacGroupNames",
        "rbacGroupIds",
        "indicatorValue",
        "indicatorType",
        "creationTimeDateTimeUtc",
        "createdBy",
        "action",
        "severity",
    }
)
ENDPOINTS = ("openid", "discovery", "token", "list", "submit", "import", "delete", "batch_delete")
API_ENDPOINTS = frozenset({"list", "submit", "import", "delete", "batch_delete"})
# (window seconds, calls) per endpoint, reference §7.6.
RATE_LIMITS: dict[str, tuple[tuple[float, int], ...]] = {
    "list": ((60.0, 100), (3600.0, 1500)),
    "submit": ((60.0, 100), (3600.0, 1500)),
    "delete": ((60.0, 100), (3600.0, 1500)),
    "import": ((60.0, 30),),
    "batch_delete": ((60.0, 30), (3600.0, 1500)),
}
MAX_BATCH = 500
MAX_TOP = 10_000
DEFAULT_PAGE_SIZE = 10_000

_API_CONTENT_TYPE = "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8"
_AAD_CONTENT_TYPE = "application/json; charset=utf-8"
_PORTAL_USER = "admin@contoso.com"

RawIndicator = dict[str, Any]


class EmulatorClock(Protocol):
    """What the emulator needs of time (duck-typed; the reconciler's FakeClock fits)."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class _RealClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass(frozen=True)
class RequestRecord:
    """One request as the emulator saw it; ``status`` 0 means the connection was dropped."""

    time: datetime
    method: str
    path: str
    endpoint: str
    status: int
    client_id: str | None
    body: Any


class ApiError(Exception):
    """A Defender API error, rendered as ``{"error":{"code","message","target"}}``."""

    def __init__(
        self, status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


class AadError(Exception):
    """An Entra ID (login) error, rendered as the OAuth2 error body with AADSTS extras."""

    def __init__(self, status: int, error: str, code: int, text: str) -> None:
        super().__init__(f"{status} {error} AADSTS{code}")
        self.status = status
        self.error = error
        self.code = code
        self.text = text


# --------------------------------------------------------------------------- time


def format_timestamp(moment: datetime) -> str:
    """Render like Defender: UTC, ``Z``, up to 7 fractional digits, trailing zeros trimmed."""
    moment = moment.astimezone(UTC)
    whole = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{moment.microsecond:06d}0".rstrip("0")
    return f"{whole}.{fraction}Z" if fraction else f"{whole}Z"


def parse_timestamp(text: str) -> datetime | None:
    """Parse an ISO-8601 time (naive means UTC); None when it is not one."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- values

_HEX = re.compile(r"[0-9A-Fa-f]+")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_TLD = re.compile(r"[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59}")
_NOT_PUBLIC = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)


def _valid_domain(text: str) -> bool:
    if not text or len(text) > 253 or text.endswith("."):
        return False
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            return False
    labels = text.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        return False
    return _TLD.fullmatch(labels[-1]) is not None


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """IPv4 dotted quad or IPv6 with all eight groups; no ranges, CIDR, zones or '::'."""
    try:
        if ":" in text:
            if "::" in text or text.count(":") != 7 or "%" in text:
                return None
            return ipaddress.IPv6Address(text)
        if text.count(".") != 3:
            return None
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not any(address.version == net.version and address in net for net in _NOT_PUBLIC)


def _valid_url(text: str) -> bool:
    if any(char.isspace() for char in text):
        return False
    candidate = text if "://" in text else f"http://{text}"
    try:
        parts = urlsplit(candidate)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        return False
    if parts.scheme.lower() not in ("http", "https") or not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return _valid_domain(host)


def _check_value(kind: str, value: str, *, public_only: bool) -> None:
    """Raise the §4 error code for an indicator value that fails its type's syntax."""
    if kind in _HEX_LENGTHS:
        length = _HEX_LENGTHS[kind]
        if len(value) != length or _HEX.fullmatch(value) is None:
            raise ApiError(
                400,
                "InvalidHashValue",
                f"Invalid {kind} value '{value}': expected {length} hexadecimal characters.",
            )
    elif kind == "IpAddress":
        address = _parse_ip(value)
        if address is None:
            raise ApiError(
                400,
                "InvalidIpAddress",
                f"'{value}' is not a valid IP address (IPv4 dotted quad or full IPv6; "
                "ranges and CIDR are not supported).",
            )
        if public_only and not _is_public(address):
            raise ApiError(400, "InvalidIpAddress", f"'{value}' is not a public IP address.")
    elif kind == "DomainName":
        if not _valid_domain(value):
            raise ApiError(400, "InvalidDomainName", f"'{value}' is not a valid domain name.")
    elif kind == "Url" and not _valid_url(value):
        raise ApiError(400, "InvalidUrl", f"'{value}' is not a valid URL.")


def _enum_value(value: Any, name: str, allowed: tuple[str, ...], *, strict: bool) -> str:
    if isinstance(value, str):
        if value in allowed:
            return value
        if not strict:
            for option in allowed:
                if option.lower() == value.lower():
                    return option
    raise ApiError(
        400,
        "InvalidInput",
        f"Invalid {name} value '{value}'. Possible values: {', '.join(allowed)}.",
    )


def _string_list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ApiError(400, "InvalidRequestBody", f"Property '{name}' must be a list of strings.")
    return list(value)


def _property_names(body: Mapping[str, Any], *, strict: bool) -> dict[str, Any]:
    """Apply the casing rule: strict refuses unknown or wrong-case names, lenient maps them."""
    if strict:
        for name in body:
            if name not in ACCEPTED_FIELDS:
                hint = _CANONICAL_FIELDS.get(name.lower())
                extra = (
                    f" Did you mean '{hint}'? Property names are case-sensitive." if hint else ""
                )
                raise ApiError(
                    400, "InvalidRequestBody", f"'{name}' is not a valid property.{extra}"
                )
        return dict(body)
    return {
        _CANONICAL_FIELDS[name.lower()]: value
        for name, value in body.items()
        if name.lower() in _CANONICAL_FIELDS
    }


def validate_indicator(
    body: Any, *, strict: bool, public_only: bool, now: datetime
) -> dict[str, Any]:
    """Check one submitted indicator (§6.2, §7.2, §7.4); return it with canonical names/enums."""
    if not isinstance(body, dict):
        raise ApiError(400, "InvalidRequestBody", "The indicator must be a JSON object.")
    spec = _property_names(body, strict=strict)
    for name in REQUIRED_FIELDS:
        value = spec.get(name)
        blank = name != "indicatorValue" and isinstance(value, str) and not value.strip()
        if value is None or blank:
            raise ApiError(400, "MissingRequiredParameter", f"Parameter {name} is missing")
    for name in _STRING_FIELDS:
        if spec.get(name) is not None and not isinstance(spec[name], str):
            raise ApiError(400, "InvalidRequestBody", f"Property '{name}' must be a string.")
    if not spec["indicatorValue"].strip():
        raise ApiError(400, "InvalidInput", "Recieved an empty indicator value.")
    kind = _enum_value(spec["indicatorType"], "indicatorType", INDICATOR_TYPES, strict=strict)
    action = _enum_value(spec["action"], "action", ACTIONS, strict=strict)
    spec["indicatorType"], spec["action"] = kind, action
    if spec.get("severity") is not None:
        spec["severity"] = _enum_value(spec["severity"], "severity", SEVERITIES, strict=strict)
    alert = spec.get("generateAlert")
    if alert is not None and not isinstance(alert, bool):
        raise ApiError(400, "InvalidRequestBody", "Property 'generateAlert' must be a boolean.")
    if action not in ALLOWED_ACTIONS[kind]:
        raise ApiError(
            400, "InvalidInput", f"Action {action} is not supported for indicator type {kind}."
        )
    if action == "Audit" and alert is not True:
        raise ApiError(400, "InvalidInput", "Action Audit requires generateAlert to be true.")
    _check_value(kind, spec["indicatorValue"], public_only=public_only)
    if spec.get("educateUrl") is not None and (kind != "Url" or action not in ("Block", "Warn")):
        raise ApiError(
            400,
            "InvalidInput",
            "educateUrl is only supported for Url indicators with Block or Warn.",
        )
    expiry_text = spec.get("expirationTime")
    if expiry_text is not None:
        expiry = parse_timestamp(expiry_text)
        if expiry is None:
            raise ApiError(400, "InvalidInput", f"Invalid expirationTime '{expiry_text}'.")
        if expiry <= now:
            raise ApiError(400, "InvalidInput", "expirationTime must be in the future.")
    spec["rbacGroupNames"] = _string_list(spec.get("rbacGroupNames"), "rbacGroupNames")
    spec["mitreTechniques"] = _string_list(spec.get("mitreTechniques"), "mitreTechniques")
    return spec


# --------------------------------------------------------------------------- OData $filter

_FilterFn = Callable[[RawIndicator], Any]

_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^']|'')*')
      | (?P<dt>\d{4}-\d{2}-\d{2}(?:T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?)
      | (?P<num>-?\d+(?:\.\d+)?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[(),])
    )""",
    re.VERBOSE,
)
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
_FUNCTIONS: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda value, part: part in value,
    "startswith": str.startswith,
    "endswith": str.endswith,
}


def _odata_error(message: str) -> ApiError:
    return ApiError(400, "ODataError", message)


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    text = text.strip()
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None or match.lastgroup is None:
            raise _odata_error(f"Syntax error at position {pos} in '{text}'.")
        pos = match.end()
        kind, raw = match.lastgroup, match.group(match.lastgroup)
        if kind == "str":
            tokens.append(("lit", raw[1:-1].replace("''", "'")))
        elif kind == "dt":
            moment = parse_timestamp(raw)
            if moment is None:
                raise _odata_error(f"Invalid datetime literal '{raw}'.")
            tokens.append(("lit", moment))
        elif kind == "num":
            tokens.append(("lit", float(raw) if "." in raw else int(raw)))
        elif kind == "name" and raw in ("true", "false", "null"):
            tokens.append(("lit", {"true": True, "false": False, "null": None}[raw]))
        else:
            tokens.append((kind, raw))
    return tokens


def _compare(op: str, left: Any, right: Any) -> bool:
    if isinstance(left, list):
        # A collection compared to a value: membership (see module docstring).
        return (right in left) if op == "eq" else (right not in left) if op == "ne" else False
    if isinstance(left, datetime) and isinstance(right, str):
        right = parse_timestamp(right)
    elif isinstance(right, datetime) and isinstance(left, str):
        left = parse_timestamp(left)
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        return _COMPARISONS[op](left, right)
    except TypeError:
        return False


class _FilterParser:
    """Recursive descent: or > and > not > comparison | function | ( expr )."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def parse(self) -> _FilterFn:
        predicate = self._or()
        if self.pos != len(self.tokens):
            raise _odata_error(f"Unexpected '{self.tokens[self.pos][1]}' in '{self.text}'.")
        return predicate

    def _peek(self) -> tuple[str, Any]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", None)

    def _take(self) -> tuple[str, Any]:
        token = self._peek()
        if token[0] == "end":
            raise _odata_error(f"Unexpected end of $filter '{self.text}'.")
        self.pos += 1
        return token

    def _expect(self, punct: str) -> None:
        if self._take() != ("punct", punct):
            raise _odata_error(f"Expected '{punct}' in '{self.text}'.")

    def _or(self) -> _FilterFn:
        left = self._and()
        while self._peek() == ("name", "or"):
            self._take()
            right = self._and()
            left = (lambda a, b: lambda row: a(row) or b(row))(left, right)
        return left

    def _and(self) -> _FilterFn:
        left = self._not()
        while self._peek() == ("name", "and"):
            self._take()
            right = self._not()
            left = (lambda a, b: lambda row: a(row) and b(row))(left, right)
        return left

    def _not(self) -> _FilterFn:
        if self._peek() == ("name", "not"):
            self._take()
            inner = self._not()
            return lambda row: not inner(row)
        return self._primary()

    def _primary(self) -> _FilterFn:
        token = self._peek()
        if token == ("punct", "("):
            self._take()
            inner = self._or()
            self._expect(")")
            return inner
        is_call = self.pos + 1 < len(self.tokens) and self.tokens[self.pos + 1] == ("punct", "(")
        if token[0] == "name" and token[1] in _FUNCTIONS and is_call:
            return self._function()
        left = self._operand()
        op_token = self._peek()
        if op_token[0] != "name" or op_token[1] not in ("eq", "ne", *_COMPARISONS):
            if op_token[0] in ("end", "punct") or op_token in (("name", "and"), ("name", "or")):
                return lambda row: left(row) is True  # a bare boolean property
            raise _odata_error(f"Unknown operator '{op_token[1]}' in '{self.text}'.")
        self._take()
        right = self._operand()
        op = str(op_token[1])
        return lambda row: _compare(op, left(row), right(row))

    def _function(self) -> _FilterFn:
        test = _FUNCTIONS[self._take()[1]]
        self._expect("(")
        subject = self._operand()
        self._expect(",")
        argument = self._operand()
        self._expect(")")

        def apply(row: RawIndicator) -> bool:
            value, part = subject(row), argument(row)
            if not isinstance(part, str):
                return False
            if isinstance(value, list):
                return any(isinstance(item, str) and test(item, part) for item in value)
            return isinstance(value, str) and test(value, part)

        return apply

    def _operand(self) -> _FilterFn:
        kind, value = self._take()
        if kind == "lit":
            return lambda row: value
        if kind == "name":
            if value not in FILTER_FIELDS:
                raise _odata_error(
                    f"Could not find a property named '{value}' on type 'Indicator'."
                )
            name = str(value)
            return lambda row: row.get(name)
        raise _odata_error(f"Unexpected '{value}' in '{self.text}'.")


def compile_filter(text: str) -> _FilterFn:
    """Compile an OData ``$filter`` over the §6.1 fields; raises ApiError ``ODataError``."""
    return _FilterParser(text).parse()


# --------------------------------------------------------------------------- store


def _copy_row(row: RawIndicator) -> RawIndicator:
    return {name: list(value) if isinstance(value, list) else value for name, value in row.items()}


class _Store:
    """Indicators by integer id (insertion = id order) plus an index by upsert key.

    Rows are never changed in place (an update stores a new dict), so a listing can serialise a
    snapshot of references outside the lock.
    """

    def __init__(self, key_fields: tuple[str, ...]) -> None:
        self.key_fields = key_fields
        self.rows: dict[int, RawIndicator] = {}
        self.by_key: dict[tuple[Any, ...], int] = {}
        self.expiry: dict[int, datetime] = {}
        self.heap: list[tuple[datetime, int]] = []
        self.next_id = 1

    def key(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(row.get(name) for name in self.key_fields)

    def new_id(self) -> int:
        ident = self.next_id
        self.next_id += 1
        return ident

    def put(self, ident: int, row: RawIndicator) -> None:
        old = self.rows.get(ident)
        if old is not None and self.by_key.get(self.key(old)) == ident:
            del self.by_key[self.key(old)]
        self.rows[ident] = row
        self.by_key[self.key(row)] = ident
        text = row.get("expirationTime")
        moment = parse_timestamp(text) if isinstance(text, str) else None
        if moment is None:
            self.expiry.pop(ident, None)
        else:
            self.expiry[ident] = moment
            heapq.heappush(self.heap, (moment, ident))

    def remove(self, ident: int) -> bool:
        row = self.rows.pop(ident, None)
        if row is None:
            return False
        if self.by_key.get(self.key(row)) == ident:
            del self.by_key[self.key(row)]
        self.expiry.pop(ident, None)
        return True

    def purge(self, now: datetime) -> None:
        """Delete every row whose expirationTime is not after ``now`` (reference §7.3)."""
        while self.heap and self.heap[0][0] <= now:
            moment, ident = heapq.heappop(self.heap)
            if self.expiry.get(ident) == moment:
                self.remove(ident)

    def clear(self) -> None:
        self.rows.clear()
        self.by_key.clear()
        self.expiry.clear()
        self.heap.clear()


def _new_row(
    spec: Mapping[str, Any], ident: int, client_id: str, app_name: str, stamp: str
) -> RawIndicator:
    def pick(name: str, default: Any = None) -> Any:
        value = spec.get(name)
        return default if value is None else value

    return {
        "id": str(ident),
        "indicatorValue": spec["indicatorValue"],
        "indicatorType": spec["indicatorType"],
        "action": spec["action"],
        "createdBy": client_id,
        "severity": pick("severity", "Informational"),
        "category": pick("category", 1),
        "application": pick("application"),
        "educateUrl": pick("educateUrl"),
        "bypassDurationHours": pick("bypassDurationHours"),
        "title": spec["title"],
        "description": spec["description"],
        "recommendedActions": pick("recommendedActions"),
        "creationTimeDateTimeUtc": stamp,
        "expirationTime": pick("expirationTime"),
        "lastUpdateTime": stamp,
        "lastUpdatedBy": None,
        "rbacGroupNames": list(pick("rbacGroupNames", [])),
        "rbacGroupIds": [],
        "notificationId": pick("notificationId"),
        "notificationBody": pick("notificationBody"),
        "version": pick("version"),
        "mitreTechniques": list(pick("mitreTechniques", [])),
        "historicalDetection": bool(pick("historicalDetection", False)),
        "lookBackPeriod": pick("lookBackPeriod"),
        "generateAlert": bool(pick("generateAlert", False)),
        "additionalInfo": pick("additionalInfo"),
        "createdByDisplayName": app_name,
        "externalId": pick("externalId"),
        "createdBySource": "PublicApi",
        "certificateInfo": pick("certificateInfo"),
    }


# --------------------------------------------------------------------------- rate limits


class _RateLimiter:
    """Sliding windows of accepted-call times per endpoint, on the emulator's monotonic clock."""

    def __init__(self) -> None:
        self._calls: dict[tuple[str, float], collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._lock = threading.Lock()

    def admit(self, endpoint: str, now: float, scale: float) -> float | None:
        """Record the call and return None, or return seconds until there is room."""
        windows = RATE_LIMITS.get(endpoint, ())
        with self._lock:
            wait = 0.0
            for window, limit in windows:
                cap = max(1, int(limit * scale))
                calls = self._calls[(endpoint, window)]
                while calls and calls[0] <= now - window:
                    calls.popleft()
                if len(calls) >= cap:
                    wait = max(wait, calls[len(calls) - cap] + window - now)
            if wait > 0:
                return wait
            for window, _ in windows:
                self._calls[(endpoint, window)].append(now)
            return None

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()


@dataclass(frozen=True)
class _Faults:
    p429: float = 0.0
    p500: float = 0.0
    p503: float = 0.0
    p_drop: float = 0.0
    latency: float = 0.0
    retry_after: int = 1
    endpoints: frozenset[str] = API_ENDPOINTS
    p_timeout: float = 0.0
    stall: float = 0.0


# --------------------------------------------------------------------------- HTTP plumbing


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False


class _Route(NamedTuple):
    endpoint: str
    ident: str | None = None
    tenant: str | None = None
    version: str = "v2"


@dataclass
class _Call:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    route: _Route
    client_id: str | None = None
    own_only: bool = False


@dataclass
class _Token:
    client_id: str
    expires_at: datetime
    audience: str
    roles: frozenset[str]


def _route(method: str, path: str) -> _Route:
    trimmed = path.rstrip("/") or "/"
    lower = trimmed.lower()
    segments = trimmed.strip("/").split("/")
    if lower == "/api/indicators":
        return _Route({"GET": "list", "POST": "submit"}.get(method, "unknown"))
    if lower == "/api/indicators/import" and method == "POST":
        return _Route("import")
    if lower == "/api/indicators/batchdelete" and method == "POST":
        return _Route("batch_delete")
    if lower.startswith("/api/indicators/") and len(segments) == 3 and method == "DELETE":
        return _Route("delete", ident=unquote(segments[2]))
    if lower == "/common/discovery/instance" and method == "GET":
        return _Route("discovery")
    if lower.endswith("/.well-known/openid-configuration") and method == "GET":
        return _Route("openid", tenant=segments[0])
    if len(segments) == 4 and [s.lower() for s in segments[1:]] == ["oauth2", "v2.0", "token"]:
        return _Route("token" if method == "POST" else "unknown", tenant=segments[0])
    if len(segments) == 3 and [s.lower() for s in segments[1:]] == ["oauth2", "token"]:
        return _Route("token" if method == "POST" else "unknown", tenant=segments[0], version="v1")
    return _Route("unknown")


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], emulator: DefenderEmulator, tls: ssl.SSLContext | None
    ) -> None:
        self.emulator = emulator
        self.tls = tls
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        # Without TCP_NODELAY every response waits ~40 ms for the client's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            # Handshake later, in the connection's own thread, so a slow client blocks no one.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.connections_lock:
            self.connections.add(sock)
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            open_now = list(self.connections)
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        logger.debug("defender emulator: connection error from {}: {!r}", client_address, exc)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        logger.trace("defender emulator: {}", format % args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length:
            return self.rfile.read(int(length))
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return b""

    def _serve(self, method: str) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            return
        response = self.server.emulator._handle(
            method, self.path, {name.lower(): value for name, value in self.headers.items()}, body
        )
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.request.shutdown(socket.SHUT_RDWR)
            return
        self._write(response)

    def _write(self, response: _Response) -> None:
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {response.status} {reason}", f"Date: {self.date_time_string()}"]
        if response.status != 204:
            lines.append(f"Content-Length: {len(response.body)}")
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # One write per response: headers and body leave together.
        self.wfile.write(head + (response.body if response.status != 204 else b""))


# --------------------------------------------------------------------------- the emulator


class DefenderEmulator:
    """A local Defender for Endpoint tenant: login + Indicators API on one HTTPS port.

    Use as a context manager or call ``start()``/``stop()``. Every knob below is a plain
    attribute that may be changed while the server runs. MSAL (reference §3.1 pattern A)::

        with DefenderEmulator() as emu:
            app = msal.ConfidentialClientApplication(
                emu.client_id, client_credential=emu.client_secret,
                authority=f"{emu.login_url}/{emu.tenant_id}", instance_discovery=False,
                http_client=session_that_verifies_with(emu.ca_file))
            token = app.acquire_token_for_client(scopes=[emu.scope])["access_token"]
            httpx.get(f"{emu.url}/api/indicators", verify=emu.ca_file,
                      headers={"Authorization": f"Bearer {token}"})

    ``rate_limit_scale`` multiplies every §7.6 limit (0.1 -> import allows 3 calls a minute);
    ``page_size`` is the page used without ``$top``; ``public_ips_only``, ``roles`` and
    ``batch_delete_atomic`` select the UNCONFIRMED behaviours listed in the module docstring.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = True,
        tenant_id: str = "00000000-0000-4000-8000-000000000001",
        client_id: str = "11111111-1111-4111-8111-111111111111",
        client_secret: str = "emulator-secret",
        app_name: str = "OpenCTI Defender Reconciler",
        token_lifetime: int = 3599,
        clock: EmulatorClock | None = None,
        rate_limits: bool = True,
        strict_casing: bool = True,
        seed: int = 0,
        quota: int = 15000,
        upsert_key: tuple[str, ...] = ("indicatorType", "indicatorValue", "action"),
        batch_delete_atomic: bool = True,
        cert_dir: str | Path | None = None,
        public_ips_only: bool = True,
        rate_limit_scale: float = 1.0,
        page_size: int = DEFAULT_PAGE_SIZE,
        scope: str = SCOPE,
        roles: tuple[str, ...] = (READ_WRITE_ALL,),
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.app_name = app_name
        self.token_lifetime = token_lifetime
        self.clock: EmulatorClock = clock if clock is not None else _RealClock()
        self.rate_limits = rate_limits
        self.rate_limit_scale = rate_limit_scale
        self.strict_casing = strict_casing
        self.public_ips_only = public_ips_only
        self.seed = seed
        self.quota = quota
        self.batch_delete_atomic = batch_delete_atomic
        self.page_size = page_size
        self.scope = scope
        self.roles = tuple(roles)
        self.cert_dir = Path(cert_dir) if cert_dir is not None else None
        self.ca_file = ""
        self.requests: list[RequestRecord] = []

        self._store = _Store(tuple(upsert_key))
        self._lock = threading.RLock()
        self._log_lock = threading.Lock()
        self._tokens: dict[str, _Token] = {}
        self._limiter = _RateLimiter()
        self._faults = _Faults()
        self._rng = random.Random(seed)
        self._fault_lock = threading.Lock()
        self._forced: dict[str, collections.deque[tuple[int, int]]] = {}
        self._hook: Callable[[str, str, str], None] | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._own_cert_dir: Path | None = None
        self._authority: Any = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> DefenderEmulator:
        """Bind, write the CA file (TLS), serve in a daemon thread; return self."""
        if self._server is not None:
            return self
        context = self._tls_context() if self.tls else None
        self._server = _Server((self.host, self.port), self, context)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"defender-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.debug("defender emulator listening on {}", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, close open connections, remove a temporary certificate folder."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._own_cert_dir is not None:
            shutil.rmtree(self._own_cert_dir, ignore_errors=True)
            self._own_cert_dir = None

    def __enter__(self) -> DefenderEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _tls_context(self) -> ssl.SSLContext:
        import trustme  # third-party; only needed with TLS

        # One CA per emulator object: a restart (stop, start) keeps the same trust anchor, so a
        # client configured with ``ca_file`` reconnects after the "outage".
        if self._authority is None:
            self._authority = trustme.CA()
        authority = self._authority
        server_cert = authority.issue_cert("127.0.0.1", "localhost", "::1")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.set_alpn_protocols(["http/1.1"])
        server_cert.configure_cert(context)
        if self.cert_dir is not None:
            directory = self.cert_dir
            directory.mkdir(parents=True, exist_ok=True)
        else:
            directory = Path(tempfile.mkdtemp(prefix="defender-emulator-"))
            self._own_cert_dir = directory
        ca_path = directory / "ca.pem"
        authority.cert_pem.write_to_path(str(ca_path))
        self.ca_file = str(ca_path)
        return context

    @property
    def url(self) -> str:
        """API base, e.g. ``https://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def login_url(self) -> str:
        """Login host; the MSAL authority is ``f"{login_url}/{tenant_id}"``."""
        return self.url

    @property
    def authority(self) -> str:
        return f"{self.login_url}/{self.tenant_id}"

    # ---------------------------------------------------------------- state helpers

    def add_indicator(self, **fields: Any) -> RawIndicator:
        """Insert a row directly (default: portal-made); skips validation and the quota."""
        unknown = set(fields) - set(FIELD_ORDER)
        if unknown or "id" in fields:
            raise ValueError(f"cannot set fields {sorted(unknown | ({'id'} & set(fields)))}")
        for name in ("indicatorValue", "indicatorType"):
            if name not in fields:
                raise ValueError(f"add_indicator needs {name}")
        stamp = format_timestamp(self.clock.now())
        with self._lock:
            ident = self._store.next_id
            base = {
                "indicatorValue": fields["indicatorValue"],
                "indicatorType": fields["indicatorType"],
                "action": fields.get("action", "Block"),
                "title": "Portal indicator",
                "description": "Added in the portal",
            }
            row = _new_row(base, ident, _PORTAL_USER, "Admin", stamp)
            row.update(severity="Medium", createdBySource="Portal")
            row.update(fields)
            if self._store.key(row) in self._store.by_key:
                raise ValueError(f"an indicator with key {self._store.key(row)} exists")
            self._store.new_id()
            self._store.put(ident, row)
            return _copy_row(row)

    def indicators(self, include_expired: bool = False) -> list[RawIndicator]:
        """Snapshot of stored rows in id order (active only unless ``include_expired``)."""
        with self._lock:
            if not include_expired:
                self._store.purge(self.clock.now())
            return [_copy_row(row) for row in self._store.rows.values()]

    def get(self, id: str | int) -> RawIndicator | None:
        with self._lock:
            self._store.purge(self.clock.now())
            row = self._store.rows.get(_int_id(id))
            return _copy_row(row) if row is not None else None

    def update_indicator(self, id: str | int, **fields: Any) -> RawIndicator:
        """Simulate a portal edit; ``lastUpdatedBy`` defaults to a portal user."""
        if "id" in fields or set(fields) - set(FIELD_ORDER):
            raise ValueError(f"cannot set fields {sorted(fields)}")
        with self._lock:
            self._store.purge(self.clock.now())
            ident = _int_id(id)
            old = self._store.rows.get(ident)
            if old is None:
                raise KeyError(f"no indicator {id}")
            row = dict(old)
            row["lastUpdateTime"] = format_timestamp(self.clock.now())
            row["lastUpdatedBy"] = _PORTAL_USER
            row.update(fields)
            owner = self._store.by_key.get(self._store.key(row))
            if owner is not None and owner != ident:
                raise ValueError(f"an indicator with key {self._store.key(row)} exists")
            self._store.put(ident, row)
            return _copy_row(row)

    def delete_indicator(self, id: str | int) -> bool:
        with self._lock:
            return self._store.remove(_int_id(id))

    def clear(self) -> None:
        """Forget every indicator (ids keep increasing, as in a real tenant)."""
        with self._lock:
            self._store.clear()

    # ---------------------------------------------------------------- knobs

    def set_faults(
        self,
        *,
        p429: float = 0.0,
        p500: float = 0.0,
        p503: float = 0.0,
        p_drop: float = 0.0,
        latency: float = 0.0,
        retry_after: int = 1,
        endpoints: list[str] | tuple[str, ...] | set[str] | None = None,
        p_timeout: float = 0.0,
        stall: float = 1.0,
    ) -> None:
        """Random faults per matching request; re-seeds the RNG so a run is reproducible.

        ``p_timeout``: the request waits ``stall`` seconds and is then served normally (a client
        with a shorter timeout gives up first, while the write still happens, late)."""
        chosen = frozenset(endpoints) if endpoints is not None else API_ENDPOINTS
        with self._fault_lock:
            self._faults = _Faults(
                p429, p500, p503, p_drop, latency, retry_after, chosen, p_timeout, stall
            )
            self._rng = random.Random(self.seed)

    def force_responses(self, endpoint: str, statuses: list[int], retry_after: int = 1) -> None:
        """The next requests to ``endpoint`` get these statuses in order (0 drops the socket)."""
        with self._fault_lock:
            queue = self._forced.setdefault(endpoint, collections.deque())
            queue.extend((status, retry_after) for status in statuses)

    def on_request(self, hook: Callable[[str, str, str], None] | None) -> None:
        """Call ``hook(endpoint, method, path)`` before handling each request (None clears)."""
        self._hook = hook

    def reset_rate_limits(self) -> None:
        self._limiter.reset()

    def reset(self) -> None:
        """A fresh tenant: no rows (ids restart at 1), tokens, faults, forced statuses, hook,
        log or spent rate budget. Knob attributes keep their current values."""
        self.clear()
        with self._lock:
            self._store.next_id = 1
            self._tokens.clear()
        with self._fault_lock:
            self._forced.clear()
        self.set_faults()
        self.on_request(None)
        self.reset_log()
        self.reset_rate_limits()

    # ---------------------------------------------------------------- log

    def counts(self) -> collections.Counter[str]:
        with self._log_lock:
            return collections.Counter(record.endpoint for record in self.requests)

    def reset_log(self) -> None:
        with self._log_lock:
            self.requests.clear()

    # ---------------------------------------------------------------- request handling

    def _handle(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> _Response:
        parts = urlsplit(raw_path)
        call = _Call(method, parts.path, parts.query, headers, body, _route(method, parts.path))
        endpoint = call.route.endpoint
        response = self._injected(call)
        if response is None:
            try:
                response = self._dispatch(call)
            except ApiError as exc:
                response = self._api_error(exc)
            except AadError as exc:
                response = self._aad_error(exc)
            except Exception as exc:  # an emulator bug must still answer, and be visible
                logger.exception("defender emulator: unhandled error")
                response = self._api_error(ApiError(500, "InternalServerError", repr(exc)))
        record = RequestRecord(
            time=self.clock.now(),
            method=method,
            path=raw_path,
            endpoint=endpoint,
            status=0 if response.drop else response.status,
            client_id=call.client_id,
            body=_loggable_body(endpoint, body),
        )
        with self._log_lock:
            self.requests.append(record)
        return response

    def _injected(self, call: _Call) -> _Response | None:
        """Hook, forced statuses and random faults, in that order; None means serve normally."""
        endpoint = call.route.endpoint
        hook = self._hook
        if hook is not None:
            try:
                hook(endpoint, call.method, call.path)
            except Exception as exc:
                return self._api_error(ApiError(500, "InternalServerError", f"hook: {exc!r}"))
        with self._fault_lock:
            queue = self._forced.get(endpoint)
            forced = queue.popleft() if queue else None
            faults = self._faults
            applies = forced is None and endpoint in faults.endpoints
            chance = faults.p_drop + faults.p429 + faults.p500 + faults.p503 + faults.p_timeout
            # Draw only when a fault is possible, so the sequence depends on matching calls only.
            draw = self._rng.random() if applies and chance > 0 else None
        if forced is not None:
            return self._fault(endpoint, *forced)
        if applies and faults.latency > 0:
            time.sleep(faults.latency)
        if draw is None:
            return None
        edge = 0.0
        for status, chance in (
            (0, faults.p_drop),
            (429, faults.p429),
            (500, faults.p500),
            (503, faults.p503),
        ):
            edge += chance
            if draw < edge:
                return self._fault(endpoint, status, faults.retry_after)
        if draw < edge + faults.p_timeout:
            time.sleep(faults.stall)
        return None

    def _fault(self, endpoint: str, status: int, retry_after: int) -> _Response:
        if status == 0:
            return _Response(0, drop=True)
        headers = (("Retry-After", str(retry_after)),) if status in (429, 503) else ()
        if endpoint == "token":
            error = "temporarily_unavailable" if status >= 429 else "invalid_request"
            response = self._aad_error(AadError(status, error, 50196, "Injected fault."))
            response.headers.extend(headers)
            return response
        codes = {
            400: "BadRequest",
            401: "Unauthorized",
            403: "Forbidden",
            404: "NotFound",
            429: "TooManyRequests",
            500: "InternalServerError",
            502: "BadGateway",
            503: "ServiceUnavailable",
            504: "GatewayTimeout",
        }
        code = codes.get(status, "BadRequest" if status < 500 else "InternalServerError")
        return self._api_error(ApiError(status, code, "Injected fault.", headers))

    def _dispatch(self, call: _Call) -> _Response:
        endpoint = call.route.endpoint
        if endpoint == "openid":
            return self._openid(call)
        if endpoint == "discovery":
            return self._discovery(call)
        if endpoint == "token":
            return self._token(call)
        if endpoint not in API_ENDPOINTS:
            raise ApiError(404, "NotFound", f"No route for {call.method} {call.path}.")
        token = self._authenticate(call.headers)
        call.client_id = token.client_id
        self._authorize(token, call)
        if self.rate_limits:
            wait = self._limiter.admit(endpoint, self.clock.monotonic(), self.rate_limit_scale)
            if wait is not None:
                seconds = max(1, int(-(-wait // 1)))
                raise ApiError(
                    429,
                    "TooManyRequests",
                    f"Rate limit is exceeded. Try again in {seconds} seconds.",
                    (("Retry-After", str(seconds)),),
                )
        handlers: dict[str, Callable[[_Call], _Response]] = {
            "list": self._list,
            "submit": self._submit,
            "import": self._import,
            "delete": self._delete,
            "batch_delete": self._batch_delete,
        }
        return handlers[endpoint](call)

    # ---------------------------------------------------------------- login

    def _check_tenant(self, tenant: str | None) -> None:
        if (tenant or "").lower() != self.tenant_id.lower():
            raise AadError(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                "and are signing into the correct cloud.",
            )

    def _openid(self, call: _Call) -> _Response:
        self._check_tenant(call.route.tenant)
        base, tenant = self.login_url, self.tenant_id
        document = {
            "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{tenant}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "roles"],
            "kerberos_endpoint": f"{base}/{tenant}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }
        return _Response(200, _dumps(document), [("Content-Type", _AAD_CONTENT_TYPE)])

    def _discovery(self, call: _Call) -> _Response:
        host = f"{self.host}:{self.port}"
        document = {
            "tenant_discovery_endpoint": (
                f"{self.login_url}/{self.tenant_id}/v2.0/.well-known/openid-configuration"
            ),
            "api-version": "1.1",
            "metadata": [
                {"preferred_network": host, "preferred_cache": host, "aliases": [host]},
            ],
        }
        return _Response(200, _dumps(document), [("Content-Type", _AAD_CONTENT_TYPE)])

    def _token(self, call: _Call) -> _Response:
        self._check_tenant(call.route.tenant)
        text = call.body.decode("utf-8", "replace")
        form = {key: values[-1] for key, values in parse_qs(text, keep_blank_values=True).items()}
        basic_id, basic_secret = _basic_credentials(call.headers)
        client_id = form.get("client_id") or basic_id
        secret = form.get("client_secret") or basic_secret
        grant = form.get("grant_type")
        if not grant:
            raise AadError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        if grant != "client_credentials":
            raise AadError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        if not client_id:
            raise AadError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        call.client_id = client_id
        if client_id != self.client_id:
            raise AadError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.tenant_id}'.",
            )
        if not secret:
            raise AadError(
                400,
                "invalid_request",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the "
                "'client_credentials' grant type.",
            )
        if not hmac.compare_digest(secret.encode(), self.client_secret.encode()):
            raise AadError(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                "the client secret value, not the client secret ID, for a secret added to app "
                f"'{client_id}'.",
            )
        resources = (self._resource(), OTHER_RESOURCE)
        if call.route.version == "v1":
            audience = form.get("resource", "").rstrip("/")
            if audience not in resources:
                raise AadError(
                    400,
                    "invalid_resource",
                    500011,
                    f"The resource principal named {audience} was not found in the tenant.",
                )
        else:
            requested = set(form.get("scope", "").split()) - {"openid", "profile", "offline_access"}
            only = next(iter(requested)) if len(requested) == 1 else ""
            audience = only.removesuffix("/.default") if only.endswith("/.default") else ""
            if audience not in resources:
                raise AadError(
                    400,
                    "invalid_scope",
                    70011,
                    f"The provided request must include a 'scope' input parameter. The provided "
                    f"value for the input parameter 'scope' is not valid: '{form.get('scope')}'.",
                )
        return self._issue_token(client_id, call.route.version, audience)

    def _resource(self) -> str:
        return self.scope.removesuffix("/.default")

    def _issue_token(self, client_id: str, version: str, audience: str) -> _Response:
        now = self.clock.now()
        lifetime = int(self.token_lifetime)
        token = "emu." + secrets.token_urlsafe(32)
        expires_at = now + timedelta(seconds=lifetime)
        # Like a JWT, the token carries the roles granted when it was issued.
        record = _Token(client_id, expires_at, audience, frozenset(self.roles))
        with self._lock:
            self._tokens[token] = record
        payload: dict[str, Any]
        if version == "v1":
            payload = {
                "token_type": "Bearer",
                "expires_in": str(lifetime),
                "ext_expires_in": str(lifetime),
                "expires_on": str(int((now + timedelta(seconds=lifetime)).timestamp())),
                "not_before": str(int(now.timestamp())),
                "resource": audience,
                "access_token": token,
            }
        else:
            payload = {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            }
        return _Response(200, _dumps(payload), _aad_headers())

    def _aad_error(self, exc: AadError) -> _Response:
        now = self.clock.now()
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        payload = {
            "error": exc.error,
            "error_description": (
                f"AADSTS{exc.code}: {exc.text}\r\nTrace ID: {trace}\r\n"
                f"Correlation ID: {correlation}\r\nTimestamp: {stamp}"
            ),
            "error_codes": [exc.code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"{self.login_url}/error?code={exc.code}",
        }
        return _Response(exc.status, _dumps(payload), _aad_headers())

    # ---------------------------------------------------------------- API

    def _authenticate(self, headers: Mapping[str, str]) -> _Token:
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        token = token.strip()
        challenge = (("WWW-Authenticate", 'Bearer error="invalid_token"'),)
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                401,
                "Unauthorized",
                "Authorization header is missing or not a Bearer token.",
                challenge,
            )
        with self._lock:
            record = self._tokens.get(token)
        if record is None:
            raise ApiError(401, "Unauthorized", "The access token is invalid.", challenge)
        if self.clock.now() >= record.expires_at:
            raise ApiError(401, "Unauthorized", "The access token has expired.", challenge)
        return record

    def _authorize(self, token: _Token, call: _Call) -> None:
        """403 for a wrong audience or missing roles; Ti.ReadWrite alone sees only its own."""
        if token.audience != self._resource():
            raise ApiError(
                403,
                "Forbidden",
                f"The access token audience '{token.audience}' is not valid for this API; "
                f"request a token for {self._resource()}.",
            )
        wanted = {READ_WRITE, READ_WRITE_ALL}
        if call.route.endpoint == "list":
            wanted.add(READ_ALL)
        if not token.roles & wanted:
            raise ApiError(
                403,
                "Forbidden",
                f"Missing application roles. API required roles: {','.join(sorted(wanted))}, "
                f"application roles: {','.join(sorted(token.roles))}.",
            )
        broad = {READ_WRITE_ALL, READ_ALL} if call.route.endpoint == "list" else {READ_WRITE_ALL}
        call.own_only = not token.roles & broad

    def _check_owner(self, row: Mapping[str, Any], call: _Call) -> None:
        if call.own_only and row.get("createdBy") != call.client_id:
            raise ApiError(
                403,
                "Forbidden",
                f"Indicator {row.get('id')} was not created by this application; "
                f"{READ_WRITE} only allows managing its own indicators.",
            )

    def _api_error(self, exc: ApiError) -> _Response:
        payload = {"error": {"code": exc.code, "message": exc.message, "target": str(uuid.uuid4())}}
        return _Response(exc.status, _dumps(payload), [*_api_headers(), *exc.headers])

    def _json(self, payload: Any) -> _Response:
        return _Response(200, _dumps(payload), _api_headers())

    def _list(self, call: _Call) -> _Response:
        params = {k: v[-1] for k, v in parse_qs(call.query, keep_blank_values=True).items()}
        for name in params:
            if name.startswith("$") and name not in ("$filter", "$top", "$skip"):
                raise _odata_error(f"The query parameter '{name}' is not supported.")
        filter_text = params.get("$filter", "").strip()
        predicate = compile_filter(filter_text) if filter_text else None
        top = _int_param(params, "$top", minimum=1)
        if top is not None and top > MAX_TOP:
            raise _odata_error(
                f"The limit of '{MAX_TOP}' for Top query has been exceeded. "
                f"The value from the incoming request is '{top}'."
            )
        skip = _int_param(params, "$skip", minimum=0) or 0
        with self._lock:
            self._store.purge(self.clock.now())
            rows = list(self._store.rows.values())
        if call.own_only:
            rows = [row for row in rows if row.get("createdBy") == call.client_id]
        if predicate is not None:
            rows = [row for row in rows if predicate(row)]
        limit = top if top is not None else self.page_size
        payload: dict[str, Any] = {
            "@odata.context": f"{self.url}/api/$metadata#Indicators",
            "value": rows[skip : skip + limit],
        }
        if top is None and len(rows) > skip + limit:
            query = f"$skip={skip + limit}"
            if filter_text:
                query = f"$filter={quote(filter_text, safe='')}&{query}"
            payload["@odata.nextLink"] = f"{self.url}/api/indicators?{query}"
        return self._json(payload)

    def _upsert(self, spec: Mapping[str, Any], call: _Call) -> RawIndicator:
        """Create or update by the upsert key; the caller holds the lock and has purged."""
        store = self._store
        client_id = call.client_id or ""
        stamp = format_timestamp(self.clock.now())
        existing = store.by_key.get(store.key(spec))
        if existing is not None:
            old = store.rows[existing]
            self._check_owner(old, call)
            fresh = _new_row(spec, existing, client_id, self.app_name, stamp)
            row = {
                name: old[name] if name in _KEPT_ON_UPDATE else fresh[name] for name in FIELD_ORDER
            }
            row["lastUpdatedBy"] = client_id
            store.put(existing, row)
            return row
        if len(store.rows) >= self.quota:
            raise ApiError(
                400,
                "IndicatorsLimitExceeded",
                f"The tenant already holds the maximum of {self.quota} active indicators.",
            )
        ident = store.new_id()
        row = _new_row(spec, ident, client_id, self.app_name, stamp)
        store.put(ident, row)
        return row

    def _validate(self, item: Any) -> dict[str, Any]:
        return validate_indicator(
            item,
            strict=self.strict_casing,
            public_only=self.public_ips_only,
            now=self.clock.now(),
        )

    def _submit(self, call: _Call) -> _Response:
        spec = self._validate(_json_body(call.body))
        with self._lock:
            self._store.purge(self.clock.now())
            row = self._upsert(spec, call)
        return self._json({"@odata.context": f"{self.url}/api/$metadata#Indicators/$entity", **row})

    def _wrapped_list(self, body: Any, wrapper: str) -> list[Any]:
        """Read ``{"Indicators": [...]}``-style bodies with the casing rule and the 500 cap."""
        if not isinstance(body, dict):
            raise ApiError(400, "InvalidRequestBody", "The request body must be a JSON object.")
        if self.strict_casing:
            for name in body:
                if name != wrapper:
                    raise ApiError(400, "InvalidRequestBody", f"'{name}' is not a valid property.")
            items = body.get(wrapper)
        else:
            items = next((v for k, v in body.items() if k.lower() == wrapper.lower()), None)
        if items is None:
            raise ApiError(400, "MissingRequiredParameter", f"Parameter {wrapper} is missing")
        if not isinstance(items, list):
            raise ApiError(400, "InvalidRequestBody", f"Property '{wrapper}' must be a list.")
        if len(items) > MAX_BATCH:
            raise ApiError(
                400,
                "MaximumBatchSizeExceeded",
                f"Maximum batch size exceeded. Received: {len(items)}, allowed: {MAX_BATCH}",
            )
        return items

    def _import(self, call: _Call) -> _Response:
        items = self._wrapped_list(_json_body(call.body), "Indicators")
        results = []
        with self._lock:
            self._store.purge(self.clock.now())
            for item in items:
                try:
                    row = self._upsert(self._validate(item), call)
                except ApiError as exc:
                    value = item.get("indicatorValue") if isinstance(item, dict) else None
                    results.append(
                        {
                            "id": None,
                            "indicator": value if isinstance(value, str) else None,
                            "isFailed": True,
                            "failureReason": f"{exc.code}: {exc.message}",
                        }
                    )
                else:
                    results.append(
                        {
                            "id": row["id"],
                            "indicator": row["indicatorValue"],
                            "isFailed": False,
                            "failureReason": None,
                        }
                    )
        return self._json({"value": results})

    def _delete(self, call: _Call) -> _Response:
        ident = call.route.ident or ""
        with self._lock:
            self._store.purge(self.clock.now())
            row = self._store.rows.get(int(ident)) if ident.isdigit() else None
            if row is not None:
                self._check_owner(row, call)
            found = row is not None and self._store.remove(int(ident))
        if not found:
            raise ApiError(404, "NotFound", f"Indicator with id '{ident}' was not found.")
        return _Response(204, b"", _api_headers()[1:])

    def _batch_delete(self, call: _Call) -> _Response:
        raw_ids = self._wrapped_list(_json_body(call.body), "IndicatorIds")
        if not raw_ids:
            raise ApiError(400, "InvalidInput", "IndicatorIds must hold at least one id.")
        ids: list[int] = []
        for raw in raw_ids:
            valid_int = isinstance(raw, int) and not isinstance(raw, bool) and raw > 0
            if (isinstance(raw, str) and raw.isdigit()) or valid_int:
                ids.append(int(raw))
            else:
                raise ApiError(400, "InvalidInput", f"Invalid indicator id '{raw}'.")
        with self._lock:
            self._store.purge(self.clock.now())
            missing = [ident for ident in ids if ident not in self._store.rows]
            for ident in ids:
                if ident in self._store.rows:
                    self._check_owner(self._store.rows[ident], call)
            if not missing or not self.batch_delete_atomic:
                for ident in ids:
                    self._store.remove(ident)
        if missing:
            listed = ", ".join(str(ident) for ident in missing)
            raise ApiError(404, "NotFound", f"Indicators not found: {listed}.")
        return _Response(204, b"", _api_headers()[1:])


# --------------------------------------------------------------------------- helpers


def _int_id(value: str | int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _int_param(params: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    if name not in params:
        return None
    text = params[name].strip()
    if not text.isdigit() or int(text) < minimum:
        raise _odata_error(f"Invalid value '{params[name]}' for query option {name}.")
    return int(text)


def _json_body(body: bytes) -> Any:
    if not body.strip():
        raise ApiError(400, "InvalidRequestBody", "The request body is empty.")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(
            400, "InvalidRequestBody", f"The request body is not valid JSON: {exc}."
        ) from exc


def _loggable_body(endpoint: str, body: bytes) -> Any:
    """Parsed body for the request log; the token form without any credential."""
    if not body:
        return None
    if endpoint == "token":
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        hidden = {"client_secret", "client_assertion"}
        return {key: values[-1] for key, values in form.items() if key not in hidden}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _basic_credentials(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    scheme, _, value = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(value.strip()).decode("utf-8")
    except ValueError:
        return None, None
    user, _, password = decoded.partition(":")
    return unquote(user), unquote(password)


def _api_headers() -> list[tuple[str, str]]:
    return [
        ("Content-Type", _API_CONTENT_TYPE),
        ("OData-Version", "4.0"),
        ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
        ("request-id", str(uuid.uuid4())),
    ]


def _aad_headers() -> list[tuple[str, str]]:
    return [
        ("Content-Type", _AAD_CONTENT_TYPE),
        ("Cache-Control", "no-store, no-cache"),
        ("Pragma", "no-cache"),
        ("x-ms-request-id", str(uuid.uuid4())),
    ]


# --------------------------------------------------------------------------- command line


def describe(emulator: DefenderEmulator) -> str:
    """The banner: URLs and a matching reconciler config snippet (YAML)."""
    lines = [
        "Defender for Endpoint emulator running",
        f"  API base  : {emulator.url}",
        f"  login     : {emulator.login_url}  (authority {emulator.authority})",
        f"  CA bundle : {emulator.ca_file or '(plain HTTP)'}",
        "",
        "# reconciler config snippet",
        "microsoft_defender_intel:",
        f"  tenant_id: {emulator.tenant_id}",
        f"  client_id: {emulator.client_id}",
        f"  client_secret: {emulator.client_secret}  # the emulator's own test secret",
        f"  login_url: {emulator.login_url}",
        f"  base_url: {emulator.url}",
    ]
    if emulator.ca_file:
        lines.append(f"  ca_bundle: {emulator.ca_file}")
    return "\n".join(lines)


def serve_forever(
    port: int = 8443,
    tls: bool = True,
    *,
    host: str = "127.0.0.1",
    seed: int = 0,
    token_lifetime: int = 3599,
    rate_limits: bool = True,
    cert_dir: str | Path | None = None,
    stop: threading.Event | None = None,
    out: TextIO | None = None,
) -> None:
    """Run an emulator until ``stop`` is set or Ctrl-C; print URLs and a config snippet."""
    emulator = DefenderEmulator(
        host=host,
        port=port,
        tls=tls,
        seed=seed,
        token_lifetime=token_lifetime,
        rate_limits=rate_limits,
        cert_dir=cert_dir,
    )
    stop = stop or threading.Event()
    with emulator:
        print(describe(emulator), file=out or sys.stdout, flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reconciler.sandbox.defender",
        description="Local Microsoft Defender for Endpoint Indicators API + Entra login emulator.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    parser.add_argument("--no-tls", action="store_true", help="plain HTTP (MSAL needs https)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")
    parser.add_argument("--token-lifetime", type=int, default=3599, help="seconds")
    parser.add_argument("--no-rate-limits", action="store_true")
    parser.add_argument("--cert-dir", default=None, help="where to write ca.pem")
    args = parser.parse_args(argv)
    serve_forever(
        host=args.host,
        port=args.port,
        tls=not args.no_tls,
        seed=args.seed,
        token_lifetime=args.token_lifetime,
        rate_limits=not args.no_rate_limits,
        cert_dir=args.cert_dir,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
