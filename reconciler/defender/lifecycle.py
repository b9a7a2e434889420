"""Notices of the API's end of life: ``Deprecation`` and ``Sunset`` headers and 410 answers.

Microsoft announced (message center MC1220762, January 2026) that the Defender for Endpoint
APIs retire, fully on 2027-02-01, in favour of the Graph security API. Whether the indicators
endpoint is covered is not confirmed, so the client watches every answer: a ``Deprecation``
header (RFC 9745, ``@<unix seconds>``, or the older ``true`` / HTTP-date forms), a ``Sunset``
header (RFC 8594, an HTTP-date) or a 410 Gone is logged once per endpoint with its dates,
reported to a callback (metrics) and kept for ``reconciler check``.

Owns parsing those headers and remembering what was seen. Must not do I/O or raise: a header
it cannot read is kept as text.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from loguru import logger

__all__ = ["LifecycleNotice", "LifecycleWatch", "parse_deprecation", "parse_sunset"]


@dataclass(frozen=True)
class LifecycleNotice:
    """What one endpoint said about its end of life (``None``: not said)."""

    endpoint: str
    deprecated: bool
    deprecated_since: datetime | None
    sunset: datetime | None
    gone: bool
    link: str | None = None

    def describe(self) -> str:
        if self.gone:
            return f"{self.endpoint}: answered 410 Gone (the API is retired)"
        parts = [f"{self.endpoint}: deprecated"]
        if self.deprecated_since is not None:
            parts.append(f"since {self.deprecated_since:%Y-%m-%d}")
        if self.sunset is not None:
            parts.append(f"sunset {self.sunset:%Y-%m-%d}")
        if self.link:
            parts.append(f"see {self.link}")
        return ", ".join(parts)


def parse_deprecation(value: str) -> tuple[bool, datetime | None]:
    """``@1767225600`` (RFC 9745), ``true`` (draft), or an HTTP-date (older drafts)."""
    text = value.strip()
    if text.startswith("@"):
        try:
            return True, datetime.fromtimestamp(int(text[1:]), UTC)
        except (ValueError, OverflowError, OSError):
            return True, None
    if text.lower() == "true":
        return True, None
    if text.lower() == "false":
        return False, None
    return True, _http_date(text)


def parse_sunset(value: str) -> datetime | None:
    return _http_date(value.strip())


def _http_date(text: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _deprecation_link(link_header: str | None) -> str | None:
    for part in (link_header or "").split(","):
        if 'rel="deprecation"' in part or "rel=deprecation" in part:
            target = part.split(";", 1)[0].strip()
            return target.strip("<>") or None
    return None


class LifecycleWatch:
    """Remembers the first notice of each endpoint; thread-safe."""

    def __init__(self, on_notice: Callable[[LifecycleNotice], None] | None = None) -> None:
        self._on_notice = on_notice
        self._seen: dict[str, LifecycleNotice] = {}
        self._lock = threading.Lock()

    @property
    def notices(self) -> list[LifecycleNotice]:
        with self._lock:
            return list(self._seen.values())

    def observe(self, endpoint: str, status: int, headers: Mapping[str, str]) -> None:
        """Look at one answer; logs and reports an endpoint's first notice only."""
        deprecation, sunset = headers.get("Deprecation"), headers.get("Sunset")
        if deprecation is None and sunset is None and status != 410:
            return
        with self._lock:
            if endpoint in self._seen:
                return
            deprecated, since = parse_deprecation(deprecation) if deprecation else (False, None)
            notice = LifecycleNotice(
                endpoint=endpoint,
                deprecated=deprecated or sunset is not None or status == 410,
                deprecated_since=since,
                sunset=parse_sunset(sunset) if sunset else None,
                gone=status == 410,
                link=_deprecation_link(headers.get("Link")),
            )
            self._seen[endpoint] = notice
        logger.warning(
            "Defender API lifecycle: {}. Microsoft retires the Defender for Endpoint APIs in "
            "favour of the Graph security API; see the README section 'API lifecycle'",
            notice.describe(),
        )
        if self._on_notice is not None:
            self._on_notice(notice)
