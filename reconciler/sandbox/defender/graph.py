"""Microsoft Graph in the Defender emulator: the security alerts API and the hit test hook.

Owns Graph's answers (headers with ``request-id``/``client-request-id``, the error body
``{"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}``),
the check of a bearer token on a Graph call (401 ``InvalidAuthenticationToken`` for a missing,
unknown or expired token and for one of another audience, a Defender API token included; 403
``Forbidden`` without SecurityAlert.Read.All or SecurityAlert.ReadWrite.All), the optional
per-minute limit of Graph calls (``graph_rate_limit_per_minute``), ``GET
/v1.0/security/alerts_v2`` (``$filter``: a conjunction, ``and`` and parentheses only, of
comparisons of createdDateTime/lastUpdateDateTime (``eq gt ge lt le`` with unquoted
DateTimeOffset literals) and ``eq`` on the documented string properties, detectionSource as
``graph_detection_source_filter`` says; ``$top`` (``graph_default_top``, ``graph_max_top``,
``graph_top_over_max``), ``$skip`` (``graph_max_skip``), ``$count``, ``$orderby`` (refused unless
``graph_orderby="accepted"``); pages with a nextLink repeating the request with ``$skip``
advanced while ``graph_next_link="present"``) and ``POST /_test/hits``, which raises a hit as
``DefenderEmulator.raise_hit`` does. Must not: decide the order of work on a request (``routing``
does) nor build alerts (``alerts`` does).
"""

from __future__ import annotations

import copy
import json
import operator
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode

from reconciler.sandbox.defender.alerts import HIT_TYPES, Alert
from reconciler.sandbox.defender.core import ApiError, Call, parse_timestamp
from reconciler.sandbox.defender.login import (
    ALERT_READ_ALL,
    ALERT_READ_WRITE_ALL,
    GRAPH_RESOURCE,
    Token,
    live_token,
)
from reconciler.sandbox.http import Response, json_bytes, last_values

if TYPE_CHECKING:
    from reconciler.sandbox.defender.emulator import DefenderEmulator

ALERTS_PATH = "/v1.0/security/alerts_v2"
GRAPH_PREFIXES = ("/v1.0/", "/beta/")
DEFAULT_TOP = 2000
DETECTION_SOURCE_FILTER = ("accepted", "refused")
NEXT_LINK = ("present", "missing")
TOP_OVER_MAX = ("cap", "error")
ORDERBY = ("refused", "accepted")

_ALERT_TYPE = "microsoft.graph.security.alert"
_CONTENT_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;"
    "charset=utf-8"
)
_DIAGNOSTIC = (
    '{"ServerInfo":{"DataCenter":"Emulator","Slice":"E","Ring":"5","ScaleUnit":"000",'
    '"RoleInstance":"defender-emulator"}}'
)
_UNAUTHENTICATED = {
    "missing": "Access token is empty.",
    "unknown": "Access token validation failure. Invalid JWT token.",
    "expired": "Lifetime validation failed, the token is expired.",
}
_DATETIME_PROPERTIES = frozenset({"createdDateTime", "lastUpdateDateTime"})
# Filterable as documented (equality); detectionSource only as ``graph_detection_source_filter``.
_STRING_PROPERTIES = frozenset(
    {
        "assignedTo",
        "classification",
        "detectionSource",
        "determination",
        "serviceSource",
        "severity",
        "status",
    }
)
_ORDERABLE = frozenset(
    {
        "createdDateTime",
        "lastUpdateDateTime",
        "firstActivityDateTime",
        "lastActivityDateTime",
        "id",
        "severity",
        "status",
        "title",
    }
)
_KNOWN_PROPERTIES = frozenset(
    {
        "id",
        "providerAlertId",
        "incidentId",
        "title",
        "description",
        "category",
        "tenantId",
        "alertWebUrl",
        "incidentWebUrl",
        "firstActivityDateTime",
        "lastActivityDateTime",
        "resolvedDateTime",
        "evidence",
        "mitreTechniques",
        "detectorId",
        "productName",
        "recommendedActions",
        "threatDisplayName",
        "threatFamilyName",
        "actorDisplayName",
        *_DATETIME_PROPERTIES,
        *_STRING_PROPERTIES,
    }
)
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
_OPERATOR_KINDS = {
    "eq": "Equal",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}
_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^']|'')*')
      | (?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[()])
    )""",
    re.VERBOSE,
)


# --------------------------------------------------------------------------- answers


def _request_ids(call: Call) -> tuple[str, str]:
    """Graph's request id and the client's (echoed, else the same as Graph's)."""
    request_id = str(uuid.uuid4())
    return request_id, call.headers.get("client-request-id") or request_id


def _headers(request_id: str, client_request_id: str, content_type: str) -> list[tuple[str, str]]:
    return [
        ("Content-Type", content_type),
        ("OData-Version", "4.0"),
        ("Strict-Transport-Security", "max-age=31536000"),
        ("request-id", request_id),
        ("client-request-id", client_request_id),
        ("x-ms-ags-diagnostic", _DIAGNOSTIC),
    ]


def json_answer(payload: Any, call: Call) -> Response:
    return Response(200, json_bytes(payload), _headers(*_request_ids(call), _CONTENT_TYPE))


def error_response(emu: DefenderEmulator, call: Call, exc: ApiError) -> Response:
    """An error in Graph's shape (the same ``ApiError`` the Defender API renders its way)."""
    request_id, client_request_id = _request_ids(call)
    payload = {
        "error": {
            "code": exc.code,
            "message": exc.message,
            "innerError": {
                "date": emu.clock.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id,
                "client-request-id": client_request_id,
            },
        }
    }
    headers = _headers(request_id, client_request_id, "application/json")
    return Response(exc.status, json_bytes(payload), [*headers, *exc.headers])


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unrouted(call: Call) -> ApiError:
    """A Graph path the emulator does not serve (or a method the alerts do not accept)."""
    if call.path.rstrip("/").lower() == ALERTS_PATH:
        return ApiError(
            405, "MethodNotAllowed", f"The method '{call.method}' is not allowed on this resource."
        )
    segment = call.path.rstrip("/").rsplit("/", 1)[-1]
    return bad_request(f"Resource not found for the segment '{segment}'.")


# --------------------------------------------------------------------------- access


def authenticate(emu: DefenderEmulator, call: Call) -> Token:
    """The live Graph token of the call: 401 ``InvalidAuthenticationToken`` otherwise."""
    found = live_token(emu, call.headers)
    if isinstance(found, str):
        raise _unauthenticated(emu, _UNAUTHENTICATED[found])
    if found.audience != GRAPH_RESOURCE:
        raise _unauthenticated(emu, "Access token validation failure. Invalid audience.")
    return found


def _unauthenticated(emu: DefenderEmulator, message: str) -> ApiError:
    challenge = (
        f'Bearer realm="", authorization_uri="{emu.login_url}/common/oauth2/authorize", '
        'client_id="00000003-0000-0000-c000-000000000000"'
    )
    return ApiError(401, "InvalidAuthenticationToken", message, (("WWW-Authenticate", challenge),))


def authorize(token: Token) -> None:
    """403 ``Forbidden`` unless the token has a SecurityAlert application role."""
    wanted = (ALERT_READ_ALL, ALERT_READ_WRITE_ALL)
    if not token.roles & set(wanted):
        raise ApiError(
            403,
            "Forbidden",
            f"Missing application roles. API required roles: {', '.join(wanted)}. "
            f"Application roles: {', '.join(sorted(token.roles))}.",
        )


def throttle(emu: DefenderEmulator, endpoint: str) -> None:
    """429 with Retry-After past ``graph_rate_limit_per_minute`` calls (None: no limit)."""
    limit = emu.graph_rate_limit_per_minute
    if limit is not None:
        emu._limiter.check_windows(f"graph:{endpoint}", ((60.0, limit),), emu.clock.monotonic())


# --------------------------------------------------------------------------- $filter


@dataclass(frozen=True)
class Comparison:
    name: str
    op: str
    literal: Any

    def __call__(self, alert: Alert) -> bool:
        value = alert.get(self.name)
        if self.name in _DATETIME_PROPERTIES:
            value = parse_timestamp(value) if isinstance(value, str) else None
            if value is None:
                return False
        elif self.op != "eq":
            return False
        return bool(_OPERATORS[self.op](value, self.literal))


def _invalid(detail: str) -> ApiError:
    return bad_request(f"Invalid filter clause: {detail}")


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None or match.lastgroup is None:
            raise _invalid(f"Syntax error at position {pos} in '{text}'.")
        pos = match.end()
        kind, raw = match.lastgroup, match.group(match.lastgroup)
        if kind == "str":
            tokens.append(("string", raw[1:-1].replace("''", "'")))
        elif kind == "dt":
            moment = parse_timestamp(raw)
            if moment is None or (not raw.endswith("Z") and raw[-6] not in "+-"):
                raise _invalid(f"The DateTimeOffset literal '{raw}' is not valid.")
            tokens.append(("datetime", moment))
        elif kind == "name" and raw == "null":
            tokens.append(("null", None))
        else:
            tokens.append((kind, raw))
    return tokens


class _FilterParser:
    """expression := term ('and' term)*; term := '(' expression ')' | property op literal."""

    def __init__(self, text: str, detection_source: bool) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.detection_source = detection_source

    def parse(self) -> list[Comparison]:
        clauses = self._expression()
        if self.pos < len(self.tokens):
            word = self.tokens[self.pos][1]
            if word in ("or", "not"):
                raise _invalid(f"The operator '{word}' is not supported in '{self.text}'.")
            raise _invalid(f"Unexpected '{word}' in '{self.text}'.")
        return clauses

    def _peek(self) -> tuple[str, Any]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", None)

    def _take(self) -> tuple[str, Any]:
        token = self._peek()
        if token[0] == "end":
            raise _invalid(f"Unexpected end of '{self.text}'.")
        self.pos += 1
        return token

    def _expression(self) -> list[Comparison]:
        clauses = self._term()
        while self._peek() == ("name", "and"):
            self._take()
            clauses.extend(self._term())
        return clauses

    def _term(self) -> list[Comparison]:
        if self._peek() == ("punct", "("):
            self._take()
            inner = self._expression()
            if self._take() != ("punct", ")"):
                raise _invalid(f"Expected ')' in '{self.text}'.")
            return inner
        return [self._comparison()]

    def _comparison(self) -> Comparison:
        kind, name = self._take()
        if kind != "name":
            raise _invalid(f"Expected a property name, found '{name}' in '{self.text}'.")
        self._check_property(name)
        op_kind, op = self._take()
        if op_kind != "name" or op not in _OPERATORS:
            raise _invalid(f"The operator '{op}' is not supported in '{self.text}'.")
        literal_kind, literal = self._take()
        if name in _DATETIME_PROPERTIES:
            if literal_kind != "datetime":
                found = "Edm.String" if literal_kind == "string" else f"'{literal}'"
                raise _invalid(
                    "A binary operator with incompatible types was detected. Found operand "
                    f"types 'Edm.DateTimeOffset' and '{found}' for operator kind "
                    f"'{_OPERATOR_KINDS[op]}'."
                )
        else:
            if op != "eq":
                raise _invalid(f"The operator '{op}' is not supported for property '{name}'.")
            if literal_kind not in ("string", "null"):
                raise _invalid(f"Property '{name}' must be compared with a string literal.")
        return Comparison(name, op, literal)

    def _check_property(self, name: str) -> None:
        if name not in _KNOWN_PROPERTIES:
            raise _invalid(f"Could not find a property named '{name}' on type '{_ALERT_TYPE}'.")
        refused = name == "detectionSource" and not self.detection_source
        if refused or name not in _DATETIME_PROPERTIES | _STRING_PROPERTIES:
            raise _invalid(
                f"The property '{name}' of type '{_ALERT_TYPE}' is not supported in $filter."
            )


def compile_alert_filter(text: str, *, detection_source: bool = True) -> list[Comparison]:
    """The comparisons of a Graph alerts ``$filter`` (all must hold); 400 ``BadRequest``."""
    return _FilterParser(text, detection_source).parse()


# --------------------------------------------------------------------------- listing


def _int_option(params: Mapping[str, str], name: str, minimum: int) -> int | None:
    if name not in params:
        return None
    text = params[name].strip()
    if not text.isdigit() or int(text) < minimum:
        raise bad_request(f"Invalid value '{params[name]}' for query option '{name}'.")
    return int(text)


def _count_option(params: Mapping[str, str]) -> bool:
    text = params.get("$count", "false").strip().lower()
    if text not in ("true", "false"):
        raise bad_request(f"Invalid value '{params['$count']}' for query option '$count'.")
    return text == "true"


def _order_keys(text: str) -> list[tuple[str, bool]]:
    """``$orderby``: (property, descending) pairs."""
    keys: list[tuple[str, bool]] = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2 or words[0] not in _ORDERABLE:
            raise bad_request(f"Invalid $orderby clause '{part.strip()}'.")
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in ("asc", "desc"):
            raise bad_request(f"Invalid $orderby direction '{words[1]}'.")
        keys.append((words[0], direction == "desc"))
    return keys


def _sort_value(alert: Alert, name: str) -> Any:
    value = alert.get(name)
    if name.endswith("DateTime") and isinstance(value, str):
        return parse_timestamp(value) or datetime.min.replace(tzinfo=UTC)
    return value


def _ordered(alerts: list[Alert], keys: list[tuple[str, bool]]) -> list[Alert]:
    for name, descending in reversed(keys):  # stable sorts, least significant key first
        present = [alert for alert in alerts if alert.get(name) is not None]
        missing = [alert for alert in alerts if alert.get(name) is None]
        present.sort(key=lambda alert: _sort_value(alert, name), reverse=descending)
        alerts = present + missing
    return alerts


def _page_size(emu: DefenderEmulator, top: int | None) -> int:
    if top is None:
        return min(emu.graph_default_top, emu.graph_max_top)
    if top > emu.graph_max_top:
        if emu.graph_top_over_max == "error":
            raise bad_request(
                f"The limit of '{emu.graph_max_top}' for Top query has been exceeded. "
                f"The value from the incoming request is '{top}'."
            )
        return emu.graph_max_top
    return top


def _next_link(emu: DefenderEmulator, call: Call, skip: int) -> str:
    pairs = [pair for pair in parse_qsl(call.query, keep_blank_values=True) if pair[0] != "$skip"]
    pairs.append(("$skip", str(skip)))
    return f"{emu.url}{call.path}?{urlencode(pairs, quote_via=quote, safe='$')}"


def list_alerts(emu: DefenderEmulator, call: Call) -> Response:
    """``GET /v1.0/security/alerts_v2`` with the query options the module docstring lists."""
    params = last_values(call.query)
    allowed = {"$filter", "$top", "$skip", "$count"}
    if emu.graph_orderby == "accepted":
        allowed.add("$orderby")
    for name in params:
        if name.startswith("$") and name not in allowed:
            raise bad_request(f"Query option '{name}' is not supported on this resource.")
    filter_text = params.get("$filter", "").strip()
    clauses = (
        compile_alert_filter(
            filter_text, detection_source=emu.graph_detection_source_filter == "accepted"
        )
        if filter_text
        else []
    )
    size = _page_size(emu, _int_option(params, "$top", minimum=1))
    skip = _int_option(params, "$skip", minimum=0) or 0
    if emu.graph_max_skip is not None and skip > emu.graph_max_skip:
        raise bad_request(
            f"The limit of '{emu.graph_max_skip}' for Skip query has been exceeded. "
            f"The value from the incoming request is '{skip}'."
        )
    with_count = _count_option(params)
    order = _order_keys(params["$orderby"]) if params.get("$orderby", "").strip() else []
    with emu._lock:
        matching = [alert for alert in emu._alerts.items if all(c(alert) for c in clauses)]
        if order:
            matching = _ordered(matching, order)
        page = copy.deepcopy(matching[skip : skip + size])
    payload: dict[str, Any] = {"@odata.context": f"{emu.url}/v1.0/$metadata#security/alerts_v2"}
    if with_count:
        payload["@odata.count"] = len(matching)
    if emu.graph_next_link == "present" and skip + size < len(matching):
        payload["@odata.nextLink"] = _next_link(emu, call, skip + size)
    payload["value"] = page
    return json_answer(payload, call)


HANDLERS: dict[str, Callable[[DefenderEmulator, Call], Response]] = {"alerts": list_alerts}


# --------------------------------------------------------------------------- test hook


def raise_hit_hook(emu: DefenderEmulator, call: Call) -> Response:
    """``POST /_test/hits`` ``{"indicatorType", "indicatorValue", "device"?, "alertId"?,
    "detectionSource"?, "at"?}`` -> 201 with the alert (400 ``InvalidInput`` when invalid)."""
    try:
        body = json.loads(call.body or b"null")
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "InvalidInput", "The body must be a JSON object.")
    kind, value = body.get("indicatorType"), body.get("indicatorValue")
    if kind not in HIT_TYPES:
        raise ApiError(400, "InvalidInput", f"indicatorType must be one of {', '.join(HIT_TYPES)}.")
    if not isinstance(value, str) or not value:
        raise ApiError(400, "InvalidInput", "indicatorValue must be a non-empty string.")
    options: dict[str, Any] = {}
    for field, keyword in (
        ("device", "device"),
        ("alertId", "alert_id"),
        ("detectionSource", "detection_source"),
    ):
        if field in body:
            if not isinstance(body[field], str) or not body[field]:
                raise ApiError(400, "InvalidInput", f"{field} must be a non-empty string.")
            options[keyword] = body[field]
    if "at" in body:
        moment = parse_timestamp(body["at"]) if isinstance(body["at"], str) else None
        if moment is None:
            raise ApiError(400, "InvalidInput", "at must be an ISO-8601 time.")
        options["at"] = moment
    alert = emu.raise_hit(kind, value, **options)
    return Response(201, json_bytes(alert), [("Content-Type", "application/json; charset=utf-8")])


def is_graph_path(path: str) -> bool:
    return path.lower().startswith(GRAPH_PREFIXES)
