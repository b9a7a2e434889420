"""Entra ID login of the Defender emulator: what MSAL needs of a confidential client.

Owns the login endpoints (openid-configuration, instance discovery, the v2.0 and v1 token
endpoints of the client-credentials grant, as MSAL uses it), the AADSTS error bodies
(``AadError``), the issued tokens (kept in the emulator's ``_tokens``, each carrying the roles
granted when it was issued: the Defender roles, or the Graph roles for a Microsoft Graph token
(issued only while the emulator serves Graph); JWT-shaped, or opaque with
``token_format="opaque"``, always looked up by the whole string, never verified by their
signature) and the check of a bearer token on an API call.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from reconciler.sandbox.defender.core import ApiError, Call
from reconciler.sandbox.http import Response, bearer_token, json_bytes, last_values

if TYPE_CHECKING:
    from reconciler.sandbox.defender.emulator import DefenderEmulator

SCOPE = "https://api.securitycenter.microsoft.com/.default"
RESOURCE = "https://api.securitycenter.microsoft.com"
# The newer API host is a valid Entra resource too, but its tokens are refused by the API with
# 403 (a token for another audience).
OTHER_RESOURCE = "https://api.security.microsoft.com"
READ_WRITE_ALL = "Ti.ReadWrite.All"
READ_WRITE = "Ti.ReadWrite"
READ_ALL = "Ti.Read.All"
# Microsoft Graph, from the same app registration (only while the emulator's ``graph`` is on).
GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
ALERT_READ_ALL = "SecurityAlert.Read.All"
ALERT_READ_WRITE_ALL = "SecurityAlert.ReadWrite.All"

_AAD_CONTENT_TYPE = "application/json; charset=utf-8"
TOKEN_FORMATS = ("jwt", "opaque")


class AadError(Exception):
    """An Entra ID (login) error, rendered as the OAuth2 error body with AADSTS extras."""

    def __init__(self, status: int, error: str, code: int, text: str) -> None:
        super().__init__(f"{status} {error} AADSTS{code}")
        self.status = status
        self.error = error
        self.code = code
        self.text = text


@dataclass
class Token:
    client_id: str
    expires_at: datetime
    audience: str
    roles: frozenset[str]


def aad_headers() -> list[tuple[str, str]]:
    return [
        ("Content-Type", _AAD_CONTENT_TYPE),
        ("Cache-Control", "no-store, no-cache"),
        ("Pragma", "no-cache"),
        ("x-ms-request-id", str(uuid.uuid4())),
    ]


def aad_error_response(emu: DefenderEmulator, exc: AadError) -> Response:
    now = emu.clock.now()
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
        "error_uri": f"{emu.login_url}/error?code={exc.code}",
    }
    return Response(exc.status, json_bytes(payload), aad_headers())


def resource(emu: DefenderEmulator) -> str:
    """The audience the API accepts (the configured scope without ``/.default``)."""
    return emu.scope.removesuffix("/.default")


def check_tenant(emu: DefenderEmulator, tenant: str | None) -> None:
    if (tenant or "").lower() != emu.tenant_id.lower():
        raise AadError(
            400,
            "invalid_request",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud.",
        )


# --------------------------------------------------------------------------- endpoints


def openid(emu: DefenderEmulator, call: Call) -> Response:
    check_tenant(emu, call.route.tenant)
    base, tenant = emu.login_url, emu.tenant_id
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
    return Response(200, json_bytes(document), [("Content-Type", _AAD_CONTENT_TYPE)])


def discovery(emu: DefenderEmulator, call: Call) -> Response:
    host = f"{emu.host}:{emu.port}"
    document = {
        "tenant_discovery_endpoint": (
            f"{emu.login_url}/{emu.tenant_id}/v2.0/.well-known/openid-configuration"
        ),
        "api-version": "1.1",
        "metadata": [
            {"preferred_network": host, "preferred_cache": host, "aliases": [host]},
        ],
    }
    return Response(200, json_bytes(document), [("Content-Type", _AAD_CONTENT_TYPE)])


def token(emu: DefenderEmulator, call: Call) -> Response:
    """The client-credentials grant of the v2.0 (``scope``) or v1 (``resource``) endpoint."""
    check_tenant(emu, call.route.tenant)
    form = last_values(call.body.decode("utf-8", "replace"))
    client_id = _client(emu, call, form)
    audience = _audience(emu, form, call.route.version)
    return _issue(emu, client_id, call.route.version, audience)


def _client(emu: DefenderEmulator, call: Call, form: Mapping[str, str]) -> str:
    """Check the grant type, client id and secret (form or Basic); return the client id."""
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
    registered = {**emu.extra_clients, emu.client_id: emu.client_secret}
    if client_id not in registered:
        raise AadError(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{emu.tenant_id}'.",
        )
    if not secret:
        raise AadError(
            400,
            "invalid_request",
            7000216,
            "'client_assertion', 'client_secret' or 'request' is required for the "
            "'client_credentials' grant type.",
        )
    if not hmac.compare_digest(secret.encode(), registered[client_id].encode()):
        raise AadError(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is "
            "the client secret value, not the client secret ID, for a secret added to app "
            f"'{client_id}'.",
        )
    return client_id


def _audience(emu: DefenderEmulator, form: Mapping[str, str], version: str) -> str:
    """The requested resource (v1) or the single ``/.default`` scope's resource (v2.0)."""
    resources = (resource(emu), OTHER_RESOURCE, *((GRAPH_RESOURCE,) if emu.graph else ()))
    if version == "v1":
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
    return audience


def _issue(emu: DefenderEmulator, client_id: str, version: str, audience: str) -> Response:
    now = emu.clock.now()
    lifetime = int(emu.token_lifetime)
    expires_at = now + timedelta(seconds=lifetime)
    roles = tuple(emu.graph_roles if audience == GRAPH_RESOURCE else emu.roles)
    if emu.token_format == "opaque":
        token = "emu." + secrets.token_urlsafe(32)
    else:
        token = _jwt(emu, client_id, audience, roles, now, expires_at)
    # Like a JWT, the token carries the roles granted when it was issued.
    record = Token(client_id, expires_at, audience, frozenset(roles))
    with emu._lock:
        emu._tokens[token] = record
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
    return Response(200, json_bytes(payload), aad_headers())


def _segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _jwt(
    emu: DefenderEmulator,
    client_id: str,
    audience: str,
    roles: tuple[str, ...],
    now: datetime,
    expires_at: datetime,
) -> str:
    """A JWT-shaped access token like Entra's v1 app tokens, HMAC-signed with a random key."""
    issued = int(now.timestamp())
    header = {"typ": "JWT", "alg": "HS256", "kid": "defender-emulator"}
    app_object = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{emu.tenant_id}/{client_id}"))
    payload = {
        "aud": audience,
        "iss": f"https://sts.windows.net/{emu.tenant_id}/",
        "iat": issued,
        "nbf": issued,
        "exp": int(expires_at.timestamp()),
        "appid": client_id,
        "azp": client_id,
        "appidacr": "1",
        "idp": f"https://sts.windows.net/{emu.tenant_id}/",
        "idtyp": "app",
        "oid": app_object,
        "sub": app_object,
        "roles": list(roles),
        "tid": emu.tenant_id,
        "uti": secrets.token_urlsafe(16),
        "ver": "1.0",
    }
    signing_input = ".".join(
        _segment(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload)
    )
    signature = hmac.new(emu._token_key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_segment(signature)}"


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


# --------------------------------------------------------------------------- API calls


def live_token(emu: DefenderEmulator, headers: Mapping[str, str]) -> Token | str:
    """The live token of the bearer header, or why there is none: missing, unknown, expired."""
    token = bearer_token(headers)
    if not token:
        return "missing"
    with emu._lock:
        record = emu._tokens.get(token)
    if record is None:
        return "unknown"
    if emu.clock.now() >= record.expires_at:
        return "expired"
    return record


_UNAUTHORIZED = {
    "missing": "Authorization header is missing or not a Bearer token.",
    "unknown": "The access token is invalid.",
    "expired": "The access token has expired.",
}


def authenticate(emu: DefenderEmulator, headers: Mapping[str, str]) -> Token:
    """The live token an API call carries; 401 when missing, unknown or expired."""
    found = live_token(emu, headers)
    if isinstance(found, str):
        challenge = (("WWW-Authenticate", 'Bearer error="invalid_token"'),)
        raise ApiError(401, "Unauthorized", _UNAUTHORIZED[found], challenge)
    return found
