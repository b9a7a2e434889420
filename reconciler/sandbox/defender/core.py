"""What every part of the Defender emulator shares: the clock, times, a call, API errors.

Owns: the emulator's clock protocol, Defender's timestamp format, the request record of the log,
the endpoint names (Entra, the Indicators API, Microsoft Graph, the test hook), one routed request
(``Route``, ``Call``), ``ApiError`` and its rendering as the Defender API's ``{"error": {...}}``
body with the API's headers (Graph renders the same error its own way, in ``graph``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from reconciler.sandbox.http import Response, json_bytes

RawIndicator = dict[str, Any]

ENDPOINTS = (
    "openid",
    "discovery",
    "token",
    "list",
    "submit",
    "import",
    "delete",
    "batch_delete",
    "alerts",
    "test_hits",
)
API_ENDPOINTS = frozenset({"list", "submit", "import", "delete", "batch_delete"})
#: Microsoft Graph endpoints (``alerts``: GET /v1.0/security/alerts_v2)
GRAPH_ENDPOINTS = frozenset({"alerts"})
#: the HTTP test hook raising a hit (POST /_test/hits)
TEST_HOOK = "test_hits"

_API_CONTENT_TYPE = "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8"


class EmulatorClock(Protocol):
    """What the emulator needs of time (duck-typed; the reconciler's FakeClock fits)."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class RealClock:
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
    #: when the request arrived (``time`` is when its answer was ready)
    started: datetime | None = None


class Route(NamedTuple):
    endpoint: str
    ident: str | None = None
    tenant: str | None = None
    version: str = "v2"


@dataclass
class Call:
    """One request on its way through the emulator; login and authorization fill the rest."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    route: Route
    client_id: str | None = None
    own_only: bool = False


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


def api_headers() -> list[tuple[str, str]]:
    return [
        ("Content-Type", _API_CONTENT_TYPE),
        ("OData-Version", "4.0"),
        ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
        ("request-id", str(uuid.uuid4())),
    ]


def api_error_response(exc: ApiError) -> Response:
    payload = {"error": {"code": exc.code, "message": exc.message, "target": str(uuid.uuid4())}}
    return Response(exc.status, json_bytes(payload), [*api_headers(), *exc.headers])


def json_response(payload: Any) -> Response:
    return Response(200, json_bytes(payload), api_headers())


def no_content() -> Response:
    """204 with the API headers but no Content-Type."""
    return Response(204, b"", api_headers()[1:])


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
