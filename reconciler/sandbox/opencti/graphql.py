"""The GraphQL resolver of the fake OpenCTI: ``POST /graphql`` as pycti uses it.

Owns the root fields pycti sends (``about``, ``registerConnector``, ``pingConnector``,
``deleteConnector``, ``streamCollection``, ``indicators``, ``indicator``, no
operationName: the first root field decides), the ``indicators`` arguments (filters, search,
ordering, cursors: the page itself comes from ``store`` and ``listing``) and ``pageInfo``,
top-level field selection (sub-selections come whole, like the real server) and the test knob
that fails listing requests. Answers are JSON text; errors are HTTP 200
``{"data": null, "errors": [...]}``. Must not evaluate filters or order rows itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reconciler.sandbox.opencti.core import CREATOR_ID, PLATFORM_VERSION, GraphQLError
from reconciler.sandbox.opencti.listing import ORDERINGS, Listing, Sort, page

if TYPE_CHECKING:
    from reconciler.sandbox.opencti.emulator import OpenCTIEmulator

Variables = dict[str, Any]

# First root field of a GraphQL document (pycti sends no operationName).
_ROOT_FIELD = re.compile(r"^\s*(?:(?:query|mutation)\b[^{]*)?\{\s*([A-Za-z_]\w*)")


class PageFailures:
    """Test knob: which ``indicators`` requests answer a GraphQL error (under the lock)."""

    def __init__(self) -> None:
        self.requests = 0
        self.pages: dict[int, str] = {}
        self.after: tuple[int, str] | None = None

    def fail_page(self, n: int, message: str) -> None:
        self.pages[self.requests + n] = message

    def fail_after(self, n: int, message: str) -> None:
        self.after = (self.requests + n, message)

    def clear(self) -> None:
        self.pages.clear()
        self.after = None

    def next_request(self) -> str | None:
        """Count one listing request; the error message it must answer, or None."""
        self.requests += 1
        failure = self.pages.pop(self.requests, None)
        if failure is None and self.after and self.requests > self.after[0]:
            failure = self.after[1]
        return failure


def execute(emu: OpenCTIEmulator, body: dict[str, Any], authorized: bool) -> str:
    """Answer one GraphQL request body (logged by its root field) as JSON text."""
    query = body.get("query") or ""
    variables = body.get("variables") or {}
    match = _ROOT_FIELD.match(query)
    root = match.group(1) if match else "?"
    emu._log_request({"field": root, "variables": variables})
    if not authorized:
        return error_json("You must be logged in to do this.", "AUTH_REQUIRED")
    try:
        if root == "indicators":
            return _indicators(emu, variables, selected_fields(query, "node"))
        resolver = _RESOLVERS.get(root)
        if resolver is None:
            raise GraphQLError(
                f'Cannot query field "{root}" on type "Query".', "GRAPHQL_VALIDATION_FAILED"
            )
        data = resolver(emu, variables, query)
    except GraphQLError as exc:
        return error_json(exc.message, exc.code, exc.data)
    return json.dumps({"data": {root: data}}, ensure_ascii=False)


def error_json(message: str, code: str, data: dict[str, Any] | None = None) -> str:
    """The platform's error shape: ``extensions {code, data}`` and ``name`` (the code)."""
    extensions: dict[str, Any] = {"code": code}
    if data:
        extensions["data"] = data
    error = {"message": message, "extensions": extensions, "name": code}
    return json.dumps({"data": None, "errors": [error]})


# --------------------------------------------------------------------------- root fields


def _about(emu: OpenCTIEmulator, variables: Variables, query: str) -> Any:
    return {"version": PLATFORM_VERSION, "dependencies": []}


def _me(emu: OpenCTIEmulator, variables: Variables, query: str) -> Any:
    return {
        "id": CREATOR_ID,
        "name": "admin",
        "capabilities": [{"id": f"capability--{c.lower()}", "name": c} for c in emu.capabilities],
    }


def _register_connector(emu: OpenCTIEmulator, variables: Variables, query: str) -> Any:
    if not {"BYPASS", "CONNECTORAPI"} & set(emu.capabilities):
        raise GraphQLError("You are not allowed to do this.", "FORBIDDEN_ACCESS")
    spec = variables.get("input") or {}
    connector_id = str(spec.get("id"))
    with emu._cond:
        state = emu.connector_states.get(connector_id)
    return {
        "id": connector_id,
        "name": spec.get("name"),
        "connector_user_id": CREATOR_ID,
        "connector_state": state,
        "jwks": None,
        "config": {
            "connection": {
                "host": "127.0.0.1",
                "vhost": "/",
                "use_ssl": False,
                "port": 5672,
                "user": "guest",
                "pass": "guest",
            },
            "listen": f"listen_{connector_id}",
            "listen_routing": f"listen_routing_{connector_id}",
            "listen_exchange": "amqp.connector.exchange",
            "push": f"push_{connector_id}",
            "push_routing": f"push_routing_{connector_id}",
            "push_exchange": "amqp.worker.exchange",
        },
    }


def _ping_connector(emu: OpenCTIEmulator, variables: Variables, query: str) -> Any:
    connector_id = str(variables.get("id"))
    with emu._cond:
        emu.connector_states[connector_id] = variables.get("state")
        state = emu.connector_states[connector_id]
    return {
        "id": connector_id,
        "connector_state": state,
        "connector_info": variables.get("connectorInfo"),
    }


def _delete_connector(emu: OpenCTIEmulator, variables: Variables, query: str) -> Any:
    connector_id = str(variables.get("id"))
    with emu._cond:
        emu.connector_states.pop(connector_id, None)
    return connector_id


def _stream_collection(emu: OpenCTIEmulator, variables: Variables, query: str) -> Any:
    if variables.get("id") != emu.stream_id:
        return None
    return {
        "id": emu.stream_id,
        "name": emu.stream_name,
        "description": "Indicators for Microsoft Defender",
        "stream_live": emu.stream_enabled,
        "stream_public": emu.stream_public,
        "filters": json.dumps(emu.stream_filters) if emu.stream_filters else None,
    }


def _indicator(emu: OpenCTIEmulator, variables: Variables, query: str) -> Any:
    with emu._cond:
        record = emu._store.get(str(variables.get("id")))
        if record is None:
            return None
        return json.loads(emu._store.node_json(record, selected_fields(query, "indicator")))


_RESOLVERS: dict[str, Callable[[OpenCTIEmulator, Variables, str], Any]] = {
    "about": _about,
    "me": _me,
    "registerConnector": _register_connector,
    "pingConnector": _ping_connector,
    "deleteConnector": _delete_connector,
    "streamCollection": _stream_collection,
    "indicator": _indicator,
}


# --------------------------------------------------------------------------- indicators


def _indicators(emu: OpenCTIEmulator, variables: Variables, fields: frozenset[str] | None) -> str:
    """One page of the listing, rendered from node JSON without re-encoding it."""
    with emu._cond:
        failure = emu._page_failures.next_request()
        if failure is not None:
            raise GraphQLError(failure, "DATABASE_ERROR")
        first = variables.get("first")
        first = 500 if first is None else max(0, min(int(first), emu.max_page_size))
        listing = _listing(
            emu,
            variables.get("filters"),
            variables.get("search"),
            variables.get("orderBy") or "created_at",
            (variables.get("orderMode") or "asc").lower(),
        )
        after = variables.get("after")
        chosen = page(listing, listing.sort.decode(str(after)) if after else None, first)
        edges = []
        for key, ref in chosen.rows:
            node = emu._store.node_json(emu._store.row(ref), fields)
            edges.append(f'{{"cursor": "{key.cursor()}", "node": {node}}}')
        rows = chosen.rows
        info = {
            "startCursor": rows[0][0].cursor() if rows else "",
            "endCursor": rows[-1][0].cursor() if rows else "",
            "hasNextPage": chosen.has_next,
            "hasPreviousPage": chosen.has_previous,
            "globalCount": listing.total,
        }
    return (
        '{"data": {"indicators": {"edges": ['
        + ", ".join(edges)
        + '], "pageInfo": '
        + json.dumps(info)
        + "}}}"
    )


def _listing(
    emu: OpenCTIEmulator, filters: Any, search: Any, order_by: str, order_mode: str
) -> Listing:
    if order_by not in ORDERINGS:
        raise GraphQLError(
            f'Value "{order_by}" does not exist in "IndicatorsOrdering" enum.',
            "GRAPHQL_VALIDATION_FAILED",
        )
    if order_mode not in ("asc", "desc"):
        raise GraphQLError(f'Value "{order_mode}" does not exist in "OrderingMode" enum.')
    if isinstance(filters, str):  # tolerated: a JSON string
        filters = json.loads(filters) if filters else None
    needle = str(search).lower() if search else ""
    return emu._store.listing(filters, needle, Sort.of(order_by, order_mode))


# --------------------------------------------------------------------------- selections


def selected_fields(query: str, parent: str) -> frozenset[str] | None:
    """Top-level field names selected under the first ``parent { … }`` of a query.

    Sub-selections are not projected (``objectLabel { id }`` returns whole labels): pycti only
    indexes what it asked for. ``None`` when the selection cannot be found (return everything).
    """
    match = re.search(r"\b" + re.escape(parent) + r"\b[^{]*\{", query)
    if match is None:
        return None
    fields: set[str] = set()
    depth, parens, i = 1, 0, match.end()
    token = re.compile(r"[A-Za-z_]\w*")
    while i < len(query) and depth > 0:
        char = query[i]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "(":
            parens += 1
        elif char == ")":
            parens -= 1
        elif char == "#":  # comment to end of line
            end = query.find("\n", i)
            i = len(query) if end < 0 else end
            continue
        elif depth == 1 and parens == 0 and (char.isalpha() or char == "_"):
            word = token.match(query, i)
            assert word is not None
            name = word.group(0)
            rest = query[word.end() :].lstrip()
            if not rest.startswith(":"):  # ``alias: field`` → the field follows
                fields.add(name)
            i = word.end()
            continue
        i += 1
    fields.discard("on")
    return frozenset(fields) if fields else None
