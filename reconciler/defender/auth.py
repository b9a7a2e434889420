"""Entra ID client-credentials tokens for the Defender API (msal), and the httpx bearer auth.

Owns: building the msal app lazily, caching and refreshing the access token on our ``Clock``,
forcing one refresh after a 401, pinning TLS trust to the configured CA bundle for the login
host, and translating msal / requests failures into ``AuthError`` / ``TransientError``.
Must not: call the Defender API itself, log or raise a secret or token, or read config files.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Callable, Generator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import msal
import requests  # type: ignore[import-untyped]  # no stubs in the dev deps
from loguru import logger
from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS

from reconciler.clock import Clock, SystemClock
from reconciler.errors import AuthError, TransientError, excerpt

__all__ = ["BearerAuth", "PinnedSession", "TokenProvider", "ssl_context", "token_roles"]

#: Login hosts msal knows; for any other host instance discovery would call Microsoft.
_MICROSOFT_LOGIN_HOSTS: frozenset[str] = frozenset(WELL_KNOWN_AUTHORITY_HOSTS)

#: OAuth error codes that mean "try again later" rather than "refused".
_TRANSIENT_OAUTH_ERRORS = frozenset({"temporarily_unavailable", "server_error"})

#: Refresh this long before expiry (msal's own rule), but never more than a tenth of the lifetime.
_REFRESH_MARGIN = 300.0


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext | bool:
    """An SSL context trusting exactly ``ca_bundle`` (so SSL_CERT_FILE cannot override it), or
    ``True`` (httpx defaults) when no bundle is configured."""
    if not ca_bundle:
        return True
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise AuthError(f"cannot load CA bundle {ca_bundle!r}: {exc}") from exc


class PinnedSession(requests.Session):  # type: ignore[misc]
    """A requests session that always verifies TLS with the given CA bundle.

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace ``session.verify`` when the
    request itself passes none (msal passes none); forcing ``verify`` per request makes the
    configured bundle win. ``trust_env`` stays on so proxy variables still apply.
    """

    def __init__(self, verify: str | bool, timeout: float) -> None:
        super().__init__()
        self._pinned_verify = verify
        self._timeout = timeout
        self.verify = verify

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs["verify"] = self._pinned_verify
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().request(method, url, *args, **kwargs)


def _aadsts(result: Mapping[str, Any]) -> str:
    """A one-line, secret-free summary of an msal error dict."""
    error = str(result.get("error") or "unknown_error")
    codes = result.get("error_codes") or []
    description = str(result.get("error_description") or "")
    # The first line carries "AADSTSnnnn: text"; trace/correlation ids follow on later lines.
    first = description.splitlines()[0] if description else ""
    code = f"AADSTS{codes[0]}" if codes and f"AADSTS{codes[0]}" not in first else ""
    parts = [p for p in (error, code, first) if p]
    return excerpt(": ".join(parts))


class TokenProvider:
    """Client-credentials access tokens for one app registration; thread-safe.

    The token is kept until ``_REFRESH_MARGIN`` before its expiry as measured on ``clock``
    (so tests with a ``FakeClock`` control refreshes); ``token(force=True)`` drops it and msal's
    cached copy and fetches a new one (used after a 401).
    """

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        login_url: str = "https://login.microsoftonline.com",
        scope: str = "https://api.securitycenter.microsoft.com/.default",
        ca_bundle: str | None = None,
        clock: Clock | None = None,
        timeout: float = 30.0,
        on_token: Callable[[str], None] | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self._secret = client_secret
        self.authority = f"{login_url.rstrip('/')}/{tenant_id}"
        self.scopes = [scope]
        self.ca_bundle = ca_bundle
        self._clock: Clock = clock or SystemClock()
        self._timeout = timeout
        self._on_token = on_token
        self._app: msal.ConfidentialClientApplication | None = None
        self._session: PinnedSession | None = None
        # msal replays failed token responses from this cache on the real clock; we own it so a
        # retry paced by our clock can clear it and really ask again.
        self._http_cache: dict[Any, Any] = {}
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = threading.Lock()
        self.acquired = 0  # tokens fetched from the identity provider (for tests and metrics)

    def __repr__(self) -> str:  # never show the secret or token
        return f"TokenProvider(authority={self.authority!r}, client_id={self.client_id!r})"

    def _build_app(self) -> msal.ConfidentialClientApplication:
        host = (urlsplit(self.authority).hostname or "").lower()
        self._session = PinnedSession(self.ca_bundle or True, self._timeout)
        try:
            # Construction fetches the OpenID configuration, hence lazily and guarded.
            return msal.ConfidentialClientApplication(
                self.client_id,
                client_credential=self._secret,
                authority=self.authority,
                http_client=self._session,
                http_cache=self._http_cache,
                # Instance discovery would call login.microsoftonline.com about a foreign host.
                instance_discovery=host in _MICROSOFT_LOGIN_HOSTS,
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise TransientError(
                f"cannot reach the login endpoint {self.authority}: {type(exc).__name__}"
            ) from exc
        except ValueError as exc:
            raise AuthError(
                f"login authority {self.authority} is not usable: {excerpt(str(exc))}"
            ) from exc

    def _drop_cached(self, app: msal.ConfidentialClientApplication) -> None:
        # msal refuses force_refresh for client credentials; removing its cached access
        # tokens makes the next acquire_token_for_client go to the identity provider.
        cache = app.token_cache
        for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
            cache.remove_at(item)

    def token(self, *, force: bool = False) -> str:
        """A valid access token; fetched only when none is cached, it is near expiry, or
        ``force``. Raises ``AuthError`` (refused) or ``TransientError`` (login unreachable)."""
        with self._lock:
            now = self._clock.monotonic()
            if not force and self._token is not None and now < self._refresh_at:
                return self._token
            if self._app is None:
                self._app = self._build_app()
            if force or self._token is not None:
                self._drop_cached(self._app)
            result = self._acquire_or_raise(self._app)
            token = str(result["access_token"])
            lifetime = float(result.get("expires_in") or 600)
            margin = min(_REFRESH_MARGIN, lifetime / 10)
            self._token = token
            self._refresh_at = now + lifetime - margin
            if result.get("token_source") != "cache":
                self.acquired += 1
            if self._on_token is not None:
                self._on_token(token)
            logger.debug(
                "access token acquired for {} (expires in {:.0f} s)", self.client_id, lifetime
            )
            return token

    def invalidate(self) -> None:
        """Forget the current token (the next ``token()`` fetches a new one)."""
        with self._lock:
            self._token = None
            self._refresh_at = 0.0
            if self._app is not None:
                self._drop_cached(self._app)

    def _acquire(self, app: msal.ConfidentialClientApplication) -> Mapping[str, Any]:
        try:
            result: Mapping[str, Any] = app.acquire_token_for_client(scopes=self.scopes)
        except BaseException:
            self._http_cache.clear()
            raise
        if "access_token" not in result:
            self._http_cache.clear()
        return result

    def _acquire_or_raise(self, app: msal.ConfidentialClientApplication) -> Mapping[str, Any]:
        try:
            result = self._acquire(app)
        except msal.exceptions.MsalServiceError as exc:
            # msal raises this for a 5xx (or an unreadable error) from the token endpoint.
            raise TransientError(
                f"token endpoint of {self.authority} failed: {excerpt(str(exc))}"
            ) from exc
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            raise TransientError(
                f"token endpoint of {self.authority} failed with HTTP {status}", status=status
            ) from exc
        except requests.RequestException as exc:
            raise TransientError(
                f"cannot reach the token endpoint of {self.authority}: {type(exc).__name__}"
            ) from exc
        except ValueError as exc:
            raise AuthError(
                f"token endpoint of {self.authority} sent an unusable answer: {excerpt(str(exc))}"
            ) from exc
        if "access_token" not in result:
            if result.get("error") in _TRANSIENT_OAUTH_ERRORS:
                raise TransientError(
                    f"token endpoint of {self.authority} is unavailable: {_aadsts(result)}"
                )
            raise AuthError(
                f"token refused for client {self.client_id} by {self.authority}: {_aadsts(result)}",
                code=str(result.get("error") or "") or None,
            )
        return result

    def close(self) -> None:
        """Release the login HTTP session."""
        if self._session is not None:
            self._session.close()


class BearerAuth(httpx.Auth):
    """httpx auth: ``Authorization: Bearer <token>``; on a 401 fetches one fresh token and
    retries the request once (a second 401 is returned to the caller)."""

    def __init__(self, provider: TokenProvider) -> None:
        self.provider = provider

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.provider.token()}"
        response = yield request
        if response.status_code == 401:
            logger.info("Defender API answered 401; refreshing the token once")
            request.headers["Authorization"] = f"Bearer {self.provider.token(force=True)}"
            yield request


def token_roles(token: str) -> tuple[str, ...] | None:
    """The ``roles`` claim of an access token (the application permissions granted), read
    without verifying the signature (we only inform the user; Defender verifies). ``None``
    when the token is not a JWT whose payload can be read."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, UnicodeError):
        return None
    roles = claims.get("roles") if isinstance(claims, dict) else None
    if not isinstance(roles, list):
        return () if isinstance(claims, dict) else None
    return tuple(str(r) for r in roles)
