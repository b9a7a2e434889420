"""Read-only probes of what the OpenCTI user may do, for ``reconciler check``.

- ``probe_stream``: opens the live stream exactly as the consumer does (same URL and headers,
  no position: the server answers with headers before any event) and closes it at once.
- ``user_capabilities``: the capability names of the token's user (``me { capabilities }``),
  to tell whether the stream position can be kept in OpenCTI's connector state.

Owns these two calls only; never writes, never registers anything, never logs the token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from reconciler.errors import SourceError, excerpt

if TYPE_CHECKING:
    from reconciler.opencti.source import OpenCTISource

__all__ = [
    "CONNECTOR_CAPABILITY",
    "STREAM_CAPABILITY",
    "StreamRefusedError",
    "can_store_position",
    "describe",
    "probe_stream",
    "user_capabilities",
]

#: What a non-public live stream asks of its reader ("Access data sharing").
STREAM_CAPABILITY = "TAXIIAPI"
#: What registering a connector and keeping its state asks ("Connectors API usage").
CONNECTOR_CAPABILITY = "CONNECTORAPI"
#: Holders of this capability may do everything.
BYPASS = "BYPASS"


class StreamRefusedError(SourceError):
    """Raised when OpenCTI refuses the live stream to this token (HTTP 401/403)."""


def probe_stream(
    url: str, token: str, stream_id: str, *, ssl_verify: bool | str, timeout: float = 10.0
) -> int:
    """Open ``/stream/{stream_id}`` and close it; returns the HTTP status (200). Raises
    ``StreamRefusedError`` when refused, ``SourceError`` for anything else."""
    stream_url = f"{url.rstrip('/')}/stream/{stream_id}"
    headers = {
        "authorization": f"Bearer {token}",
        "listen-delete": "true",
        "no-dependencies": "true",
        "with-inferences": "false",
        "Accept": "text/event-stream",
    }
    try:
        with (
            httpx.Client(verify=ssl_verify, timeout=timeout) as client,
            client.stream("GET", stream_url, headers=headers) as response,
        ):
            status = response.status_code
    except httpx.HTTPError as exc:
        raise SourceError(
            f"live stream {stream_id!r} could not be opened: {type(exc).__name__}"
        ) from exc
    if status in (401, 403):
        raise StreamRefusedError(f"live stream {stream_id!r} refused this token (HTTP {status})")
    if status == 404:
        raise SourceError(f"live stream {stream_id!r} does not exist (HTTP 404)")
    if status >= 300:
        raise SourceError(f"live stream {stream_id!r} answered HTTP {status}")
    return status


def user_capabilities(source: OpenCTISource) -> frozenset[str] | None:
    """The capability names of the token's user, or ``None`` when the platform does not say."""
    try:
        result = source.api.query("query Me { me { capabilities { name } } }")
    except (ValueError, OSError):
        return None
    me = (result.get("data") or {}).get("me") if isinstance(result, dict) else None
    caps: Any = me.get("capabilities") if isinstance(me, dict) else None
    if not isinstance(caps, list):
        return None
    return frozenset(str(c.get("name")) for c in caps if isinstance(c, dict) and c.get("name"))


def can_store_position(capabilities: frozenset[str]) -> bool:
    return BYPASS in capabilities or CONNECTOR_CAPABILITY in capabilities


def describe(capabilities: frozenset[str]) -> str:
    return excerpt(", ".join(sorted(capabilities)) or "none", 200)
