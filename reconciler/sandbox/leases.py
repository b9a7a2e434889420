"""A Kubernetes Lease API emulator: the coordination.k8s.io/v1 endpoints leader election uses,
answered as an API server answers them, on 127.0.0.1 over plain HTTP.

Owns: the Lease store (``resourceVersion`` optimistic concurrency), the endpoints ``GET`` /
``POST`` ``/apis/coordination.k8s.io/v1/namespaces/{ns}/leases`` and ``GET`` / ``PUT`` /
``DELETE`` ``…/leases/{name}``, Kubernetes ``Status`` bodies for errors, the clients (one bearer
token each), a partition switch per client and the request log. Must not: import anything from
the rest of ``reconciler`` (an emulator must not share the mistakes of what it tests).

As an API server does:

- ``GET`` of a missing Lease: 404 ``NotFound``; ``POST`` of an existing name: 409
  ``AlreadyExists``; ``PUT`` of a missing Lease: 404 (Leases are not created on update);
- ``PUT`` with a ``metadata.resourceVersion`` other than the stored one: 409 ``Conflict``
  ("the object has been modified"); without one: an unconditional update; every write bumps the
  resourceVersion (one counter for the whole store, as etcd's revision);
- a name or namespace in the body that differs from the URL: 400 ``BadRequest``;
- ``acquireTime``/``renewTime`` must be ``MicroTime`` (RFC 3339 with exactly six fractional
  digits, ``Z`` or an offset), else 400 ``BadRequest``; ``leaseDurationSeconds`` must be a
  positive integer, else 422 ``Invalid``;
- no token, or a token not in ``tokens``: 401 ``Unauthorized``.

``partition(client)`` makes every request of that client hang (a network partition: nothing
comes back, nothing is applied) until ``heal(client)``, when the hung requests are dropped
unanswered. The log (``requests``) records each request with its client, arrival and end times,
status (0: not answered) and, for a successful write, the holder written.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from reconciler.sandbox.http import (
    EmulatorServer,
    Response,
    RoutedHandler,
    bearer_token,
    json_bytes,
    serve_in_thread,
    stop_serving,
)

__all__ = ["LeaseEmulator", "LeaseRequest"]

GROUP = "coordination.k8s.io"
API_VERSION = f"{GROUP}/v1"
_PATH = re.compile(
    r"^/apis/coordination\.k8s\.io/v1/namespaces/(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?)/leases"
    r"(?:/(?P<name>[^/?]+))?/?$"
)
_MICRO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class LeaseRequest:
    """One request as the emulator saw it; ``status`` 0: never answered (partitioned)."""

    started: datetime
    time: datetime
    client: str
    method: str
    path: str
    status: int
    #: the holder written by a successful POST/PUT (None otherwise, or when cleared)
    holder: str | None = None
    written: bool = False


class _Failure(Exception):
    def __init__(self, code: int, reason: str, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.name = code, reason, message, name


def _status(exc: _Failure) -> Response:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": exc.message,
        "reason": exc.reason,
        "code": exc.code,
    }
    if exc.name is not None:
        body["details"] = {"name": exc.name, "group": GROUP, "kind": "leases"}
    return _json(exc.code, body)


def _json(status: int, payload: Any) -> Response:
    return Response(status, json_bytes(payload), [("Content-Type", "application/json")])


def _now() -> datetime:
    return datetime.now(UTC)


class LeaseEmulator:
    """The Lease endpoints of an API server. ``tokens`` maps bearer token → client name;
    ``None`` accepts any bearer token and names the client after it."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, tokens: Mapping[str, str] | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.tokens = dict(tokens) if tokens is not None else None
        self.requests: list[LeaseRequest] = []
        self._leases: dict[tuple[str, str], dict[str, Any]] = {}
        self._revision = 0
        self._lock = threading.Lock()
        self._partitioned: dict[str, threading.Event] = {}
        self._server: EmulatorServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> LeaseEmulator:
        if self._server is None:
            self._server = _Server((self.host, self.port), self)
            self.port = int(self._server.server_address[1])
            self._thread = serve_in_thread(self._server, f"lease-emulator:{self.port}")
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        with self._lock:
            for gate in self._partitioned.values():
                gate.set()
            self._partitioned.clear()
        if server is not None:
            stop_serving(server, self._thread)

    def __enter__(self) -> LeaseEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the lease emulator is not started")
        return f"http://{self.host}:{self.port}"

    # -- partitions ------------------------------------------------------------------------
    def partition(self, client: str) -> None:
        """From now on, every request of ``client`` hangs unanswered."""
        with self._lock:
            self._partitioned.setdefault(client, threading.Event())

    def heal(self, client: str) -> None:
        """Answer ``client`` again; its hung requests are dropped unanswered."""
        with self._lock:
            gate = self._partitioned.pop(client, None)
        if gate is not None:
            gate.set()

    # -- state and log -------------------------------------------------------------------
    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            stored = self._leases.get((namespace, name))
            return json.loads(json.dumps(stored)) if stored is not None else None

    def log(self) -> list[LeaseRequest]:
        with self._lock:
            return list(self.requests)

    def acquisitions(self) -> list[LeaseRequest]:
        """Successful writes that changed the holder, in order (the first one included)."""
        out: list[LeaseRequest] = []
        for record in self.log():
            if record.written and (not out or out[-1].holder != record.holder):
                out.append(record)
        return out

    # -- requests --------------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        started = _now()
        client = self._client(headers)
        response, holder, written = self._answer(method, path, client, body)
        record = LeaseRequest(
            started=started,
            time=_now(),
            client=client or "anonymous",
            method=method,
            path=path,
            status=0 if response.drop else response.status,
            holder=holder,
            written=written,
        )
        with self._lock:
            self.requests.append(record)
        return response

    def _client(self, headers: Mapping[str, str]) -> str | None:
        token = bearer_token(headers)
        if not token:
            return None
        if self.tokens is None:
            return token
        return self.tokens.get(token)

    def _answer(
        self, method: str, path: str, client: str | None, body: bytes
    ) -> tuple[Response, str | None, bool]:
        if client is not None:
            with self._lock:
                gate = self._partitioned.get(client)
            if gate is not None:
                gate.wait()
                return Response(0, drop=True), None, False
        try:
            if client is None:
                raise _Failure(401, "Unauthorized", "Unauthorized")
            return self._route(method, path, body)
        except _Failure as exc:
            return _status(exc), None, False

    def _route(self, method: str, path: str, body: bytes) -> tuple[Response, str | None, bool]:
        match = _PATH.match(path.split("?", 1)[0])
        if match is None:
            raise _Failure(404, "NotFound", "the server could not find the requested resource")
        namespace, name = match.group("ns"), match.group("name")
        if name is None and method == "GET":
            return self._list(namespace), None, False
        if name is None and method == "POST":
            lease = self._create(namespace, _parse(body))
            return _json(201, lease), _holder(lease), True
        if name is not None and method == "GET":
            return _json(200, self._get(namespace, name)), None, False
        if name is not None and method == "PUT":
            lease = self._replace(namespace, name, _parse(body))
            return _json(200, lease), _holder(lease), True
        if name is not None and method == "DELETE":
            self._delete(namespace, name)
            return _json(200, {"kind": "Status", "status": "Success"}), None, False
        raise _Failure(405, "MethodNotAllowed", f"{method} is not supported here")

    def _list(self, namespace: str) -> Response:
        with self._lock:
            items = [v for (ns, _), v in sorted(self._leases.items()) if ns == namespace]
            revision = str(self._revision)
        return _json(
            200,
            {
                "kind": "LeaseList",
                "apiVersion": API_VERSION,
                "metadata": {"resourceVersion": revision},
                "items": items,
            },
        )

    def _get(self, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            stored = self._leases.get((namespace, name))
            if stored is None:
                raise _not_found(name)
            return dict(stored)

    def _create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = _metadata(body, namespace)
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise _Failure(422, "Invalid", "Lease.coordination.k8s.io is invalid: metadata.name")
        spec = _spec(body, name)
        with self._lock:
            if (namespace, name) in self._leases:
                raise _Failure(
                    409, "AlreadyExists", f'leases.{GROUP} "{name}" already exists', name
                )
            self._revision += 1
            lease = {
                "kind": "Lease",
                "apiVersion": API_VERSION,
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": str(self._revision),
                    "creationTimestamp": _now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
                "spec": spec,
            }
            self._leases[(namespace, name)] = lease
            return dict(lease)

    def _replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = _metadata(body, namespace)
        if meta.get("name") not in (None, name):
            raise _Failure(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({name})",
            )
        spec = _spec(body, name)
        with self._lock:
            stored = self._leases.get((namespace, name))
            if stored is None:
                raise _not_found(name)
            wanted = meta.get("resourceVersion")
            if wanted not in (None, "") and wanted != stored["metadata"]["resourceVersion"]:
                raise _Failure(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on leases.{GROUP} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try "
                    "again",
                    name,
                )
            self._revision += 1
            lease = {
                **stored,
                "metadata": {**stored["metadata"], "resourceVersion": str(self._revision)},
                "spec": spec,
            }
            self._leases[(namespace, name)] = lease
            return dict(lease)

    def _delete(self, namespace: str, name: str) -> None:
        with self._lock:
            if self._leases.pop((namespace, name), None) is None:
                raise _not_found(name)
            self._revision += 1


def _not_found(name: str) -> _Failure:
    return _Failure(404, "NotFound", f'leases.{GROUP} "{name}" not found', name)


def _holder(lease: dict[str, Any]) -> str | None:
    holder = lease["spec"].get("holderIdentity")
    return str(holder) if holder else None


def _parse(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Failure(400, "BadRequest", f"invalid JSON in the request body: {exc}") from None
    if not isinstance(value, dict):
        raise _Failure(400, "BadRequest", "the request body is not a Lease object")
    if value.get("kind") not in (None, "Lease") or value.get("apiVersion") not in (
        None,
        API_VERSION,
    ):
        raise _Failure(400, "BadRequest", "the request body is not a coordination.k8s.io/v1 Lease")
    return value


def _metadata(body: dict[str, Any], namespace: str) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    if not isinstance(meta, dict):
        raise _Failure(400, "BadRequest", "metadata is not an object")
    if meta.get("namespace") not in (None, "", namespace):
        raise _Failure(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        )
    return meta


def _spec(body: dict[str, Any], name: str) -> dict[str, Any]:
    spec = body.get("spec") or {}
    if not isinstance(spec, dict):
        raise _Failure(400, "BadRequest", "spec is not an object")
    for key in ("acquireTime", "renewTime"):
        value = spec.get(key)
        if value is not None and not (isinstance(value, str) and _MICRO_TIME.match(value)):
            raise _Failure(
                400,
                "BadRequest",
                f'Lease in version "v1" cannot be handled as a Lease: parsing time {value!r} as '
                '"2006-01-02T15:04:05.000000Z07:00": cannot parse',
            )
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (
        not isinstance(duration, int) or isinstance(duration, bool) or duration <= 0
    ):
        raise _Failure(
            422,
            "Invalid",
            f'Lease.{GROUP} "{name}" is invalid: spec.leaseDurationSeconds: Invalid value: '
            f"{duration!r}: must be greater than 0",
            name,
        )
    return {k: v for k, v in spec.items() if v is not None}


class _Server(EmulatorServer):
    def __init__(self, address: tuple[str, int], emulator: LeaseEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler, name="lease emulator")


class _Handler(RoutedHandler):
    server: _Server

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        return self.server.emulator.handle(method, path, headers, body)
