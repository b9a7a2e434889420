"""The API's lifecycle and front door in the Defender emulator: deprecation, retirement, URL cap.

Owns the headers of a deprecated API (``Deprecation`` as RFC 9745's ``@<unix seconds>``,
``Sunset`` as RFC 8594's HTTP-date, a ``Link`` with ``rel="deprecation"``), the 410 ``Gone``
answer of a retired API, and the 414 a front end gives a request target over the URL limit.
Must not: decide when these apply (the request pipeline, ``routing``, does) nor touch the store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

from reconciler.sandbox.defender.core import ApiError, parse_timestamp
from reconciler.sandbox.http import Response

DEPRECATED_AT = datetime(2026, 1, 15, tzinfo=UTC)
DEFAULT_SUNSET = "2027-02-01"
DEPRECATION_LINK = "https://learn.microsoft.com/en-us/defender-endpoint/api/ti-indicator"

_URI_TOO_LONG = (
    b'<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN"><HTML><HEAD>'
    b"<TITLE>Request URL Too Long</TITLE></HEAD><BODY><h2>Request URL Too Long</h2><hr>"
    b"<p>HTTP Error 414. The request URL is too long.</p></BODY></HTML>"
)


def _sunset_moment(sunset: str) -> datetime | None:
    return parse_timestamp(sunset)


def check_sunset(sunset: str | None) -> str | None:
    """The sunset as given; ValueError when it is neither None nor an ISO-8601 date/time."""
    if sunset is not None and _sunset_moment(sunset) is None:
        raise ValueError(f"sunset must be an ISO-8601 date or time, not {sunset!r}")
    return sunset


def deprecation_headers(sunset: str | None) -> list[tuple[str, str]]:
    """The headers every answer of a deprecated API carries (an unreadable sunset is left out)."""
    headers = [
        ("Deprecation", f"@{int(DEPRECATED_AT.timestamp())}"),
        ("Link", f'<{DEPRECATION_LINK}>; rel="deprecation"; type="text/html"'),
    ]
    moment = _sunset_moment(sunset) if sunset is not None else None
    if moment is not None:
        headers.append(("Sunset", format_datetime(moment.astimezone(UTC), usegmt=True)))
    return headers


def retired_error() -> ApiError:
    return ApiError(
        410,
        "Gone",
        "This API has been retired and no longer serves requests; use its replacement.",
    )


def uri_too_long() -> Response:
    """The short answer of the front end to a request target over the URL limit."""
    return Response(414, _URI_TOO_LONG, [("Content-Type", "text/html; charset=us-ascii")])
