"""One request through the Defender emulator: route, faults, login, API or Graph, the request log.

Owns the routes (Entra endpoints, the Indicators API, Microsoft Graph's alerts and the HTTP test
hook raising hits), the order of work on a request (the URL limit of strict OData; the HTTP test
hook, answered at once while Graph is served; the request hook, forced and random faults, then
either a login endpoint, or a retired API's 410 or bearer authentication, authorization, the rate
limit and the API handler, or, while ``graph`` is on, Graph's authentication, roles, optional
rate limit and handler), turning any error into its response body (Defender's, or Graph's on a
Graph path; an emulator bug still answers, 500, and is logged), the deprecation headers on API
answers and the record appended to the log.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from loguru import logger

from reconciler.sandbox.defender import api, graph, lifecycle, login
from reconciler.sandbox.defender.core import (
    API_ENDPOINTS,
    GRAPH_ENDPOINTS,
    TEST_HOOK,
    ApiError,
    Call,
    RequestRecord,
    Route,
    api_error_response,
)
from reconciler.sandbox.defender.limits import Fault
from reconciler.sandbox.defender.login import AadError
from reconciler.sandbox.http import Response, last_values

if TYPE_CHECKING:
    from reconciler.sandbox.defender.emulator import DefenderEmulator

_LOGIN_HANDLERS = {"openid": login.openid, "discovery": login.discovery, "token": login.token}
_FAULT_CODES = {
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


def route(method: str, path: str) -> Route:
    trimmed = path.rstrip("/") or "/"
    lower = trimmed.lower()
    segments = trimmed.strip("/").split("/")
    if lower == "/api/indicators":
        return Route({"GET": "list", "POST": "submit"}.get(method, "unknown"))
    if lower == "/api/indicators/import" and method == "POST":
        return Route("import")
    if lower == "/api/indicators/batchdelete" and method == "POST":
        return Route("batch_delete")
    if lower.startswith("/api/indicators/") and len(segments) == 3 and method == "DELETE":
        return Route("delete", ident=unquote(segments[2]))
    if lower == graph.ALERTS_PATH and method == "GET":
        return Route("alerts")
    if lower == "/_test/hits" and method == "POST":
        return Route(TEST_HOOK)
    if lower == "/common/discovery/instance" and method == "GET":
        return Route("discovery")
    if lower.endswith("/.well-known/openid-configuration") and method == "GET":
        return Route("openid", tenant=segments[0])
    if len(segments) == 4 and [s.lower() for s in segments[1:]] == ["oauth2", "v2.0", "token"]:
        return Route("token" if method == "POST" else "unknown", tenant=segments[0])
    if len(segments) == 3 and [s.lower() for s in segments[1:]] == ["oauth2", "token"]:
        return Route("token" if method == "POST" else "unknown", tenant=segments[0], version="v1")
    return Route("unknown")


def handle(
    emu: DefenderEmulator, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
) -> Response:
    """Answer one request and log it (status 0 when the connection is dropped)."""
    parts = urlsplit(raw_path)
    call = Call(method, parts.path, parts.query, headers, body, route(method, parts.path))
    endpoint = call.route.endpoint
    started = emu.clock.now()
    if emu.odata == "strict" and len(raw_path) > emu.url_limit:
        response = lifecycle.uri_too_long()
    else:
        response = _answer(emu, call)
    record = RequestRecord(
        time=emu.clock.now(),
        method=method,
        path=raw_path,
        endpoint=endpoint,
        status=0 if response.drop else response.status,
        client_id=call.client_id,
        body=_loggable_body(endpoint, body),
        started=started,
    )
    with emu._log_lock:
        emu.requests.append(record)
    return response


def _is_api(call: Call) -> bool:
    return call.route.endpoint in API_ENDPOINTS or call.path.lower().startswith("/api/")


def _is_graph(emu: DefenderEmulator, call: Call) -> bool:
    """A Microsoft Graph call (only while the emulator serves Graph)."""
    return emu.graph and (call.route.endpoint in GRAPH_ENDPOINTS or graph.is_graph_path(call.path))


def _error(emu: DefenderEmulator, call: Call, exc: ApiError) -> Response:
    return graph.error_response(emu, call, exc) if _is_graph(emu, call) else api_error_response(exc)


def _answer(emu: DefenderEmulator, call: Call) -> Response:
    """Faults or the served answer, plus the deprecation headers of an API answer."""
    if emu.graph and call.route.endpoint == TEST_HOOK:
        try:
            return graph.raise_hit_hook(emu, call)
        except ApiError as exc:
            return api_error_response(exc)
        except Exception as exc:
            logger.exception("defender emulator: unhandled error in the hit hook")
            return api_error_response(ApiError(500, "InternalServerError", repr(exc)))
    response = _injected(emu, call)
    if response is None:
        try:
            response = _dispatch(emu, call)
        except ApiError as exc:
            response = _error(emu, call, exc)
        except AadError as exc:
            response = login.aad_error_response(emu, exc)
        except Exception as exc:  # an emulator bug must still answer, and be visible
            logger.exception("defender emulator: unhandled error")
            response = _error(emu, call, ApiError(500, "InternalServerError", repr(exc)))
    if emu.deprecation and _is_api(call) and not response.drop:
        response.headers.extend(lifecycle.deprecation_headers(emu.sunset))
    return response


def _injected(emu: DefenderEmulator, call: Call) -> Response | None:
    """Hook, forced statuses and random faults, in that order; None means serve normally."""
    endpoint = call.route.endpoint
    hook = emu._injector.hook
    if hook is not None:
        try:
            hook(endpoint, call.method, call.path)
        except Exception as exc:
            return _error(emu, call, ApiError(500, "InternalServerError", f"hook: {exc!r}"))
    fault = emu._injector.draw(endpoint)
    return None if fault is None else _fault_response(emu, call, fault)


def _fault_response(emu: DefenderEmulator, call: Call, fault: Fault) -> Response:
    endpoint = call.route.endpoint
    status = fault.status
    if status == 0:
        return Response(0, drop=True)
    headers = (("Retry-After", str(fault.retry_after)),) if status in (429, 503) else ()
    if endpoint == "token":
        error = "temporarily_unavailable" if status >= 429 else "invalid_request"
        response = login.aad_error_response(emu, AadError(status, error, 50196, "Injected fault."))
        response.headers.extend(headers)
        return response
    code = _FAULT_CODES.get(status, "BadRequest" if status < 500 else "InternalServerError")
    return _error(emu, call, ApiError(status, code, "Injected fault.", headers))


def _dispatch(emu: DefenderEmulator, call: Call) -> Response:
    endpoint = call.route.endpoint
    if endpoint in _LOGIN_HANDLERS:
        return _LOGIN_HANDLERS[endpoint](emu, call)
    if _is_graph(emu, call):
        return _graph(emu, call)
    if emu.retired and _is_api(call):
        raise lifecycle.retired_error()
    if endpoint not in API_ENDPOINTS:
        raise ApiError(404, "NotFound", f"No route for {call.method} {call.path}.")
    token = login.authenticate(emu, call.headers)
    call.client_id = token.client_id
    api.authorize(emu, token, call)
    if emu.rate_limits:
        emu._limiter.check(endpoint, emu.clock.monotonic(), emu.rate_limit_scale)
    return api.HANDLERS[endpoint](emu, call)


def _graph(emu: DefenderEmulator, call: Call) -> Response:
    """A Graph call: a served endpoint, authenticated, authorized and throttled, or 400/405."""
    endpoint = call.route.endpoint
    if endpoint not in GRAPH_ENDPOINTS:
        raise graph.unrouted(call)
    token = graph.authenticate(emu, call)
    call.client_id = token.client_id
    graph.authorize(token)
    graph.throttle(emu, endpoint)
    return graph.HANDLERS[endpoint](emu, call)


def _loggable_body(endpoint: str, body: bytes) -> Any:
    """Parsed body for the request log; the token form without any credential."""
    if not body:
        return None
    if endpoint == "token":
        form = last_values(body.decode("utf-8", "replace"))
        hidden = {"client_secret", "client_assertion"}
        return {key: value for key, value in form.items() if key not in hidden}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
