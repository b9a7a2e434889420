"""The one exception tree of the reconciler.

    ReconcilerError                 base of everything we raise on purpose
    ├── ConfigError                 configuration invalid (names keys, env vars, allowed values)
    ├── SourceError                 OpenCTI listing or stream failed (never a partial list)
    │   └── UnusableFilterError     the stream's filters cannot be applied exactly: fail closed
    ├── DefenderError               the Defender side failed
    │   ├── AuthError               token could not be acquired, or the API refused it (401/403)
    │   ├── RateLimitError          429 that outlived our retries (``retry_after`` seconds)
    │   ├── TransientError          5xx, timeouts, dropped connections that outlived our retries
    │   ├── RejectedError           other 4xx (body cut short, never a secret)
    │   └── ListingError            a listing could not be read whole (rows moved, truncated)
    ├── GuardError                  a safety guard blocked deletes (names the override flag)
    └── StalePlanError              a saved plan no longer matches Defender or OpenCTI

Adapters (``defender/``, ``opencti/``) translate library errors (httpx, msal, pycti) into these,
chained with ``from``; nothing above them catches a library's exception. No message holds a
token or secret.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "DefenderError",
    "GuardError",
    "ListingError",
    "RateLimitError",
    "ReconcilerError",
    "RejectedError",
    "SourceError",
    "StalePlanError",
    "TransientError",
    "UnusableFilterError",
]

#: Response bodies quoted in errors are cut to this many characters.
BODY_EXCERPT = 256


def excerpt(text: str, limit: int = BODY_EXCERPT) -> str:
    """Cut ``text`` to ``limit`` characters, marking the cut."""
    text = text.replace("\r", " ").replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"


class ReconcilerError(Exception):
    """Base class: raised on purpose by the reconciler; its message is safe to print."""


class ConfigError(ReconcilerError):
    """Raised when the configuration is invalid; the message names every bad key."""


class SourceError(ReconcilerError):
    """Raised when reading OpenCTI (listing or stream) failed."""


class UnusableFilterError(SourceError):
    """Raised when a filter cannot be applied to the indicators listing exactly (names the
    key, operator or mode, where it came from, and the way out); nothing may be planned."""


class DefenderError(ReconcilerError):
    """Raised when a Defender API call failed; carries the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class AuthError(DefenderError):
    """Raised when a token cannot be acquired or the API refuses it (401/403)."""


class RateLimitError(DefenderError):
    """Raised when 429 responses outlived the retry budget."""

    def __init__(self, message: str, *, retry_after: float | None = None, status: int = 429):
        super().__init__(message, status=status, code="TooManyRequests")
        self.retry_after = retry_after


class TransientError(DefenderError):
    """Raised when 5xx responses, timeouts or dropped connections outlived the retry budget."""


class RejectedError(DefenderError):
    """Raised on a 4xx other than 401/403/429: the request itself was refused."""


class ListingError(DefenderError):
    """Raised when a listing could not be read whole (rows moved between pages, truncated)."""


class GuardError(ReconcilerError):
    """Raised when a safety guard blocked deletes; the message names the override."""


class StalePlanError(ReconcilerError):
    """Raised when a saved plan no longer matches the current state of either side."""
