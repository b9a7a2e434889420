"""The GraphQL resolver of the fake OpenCTI: ``POST /graphql`` as pycti and the reconciler use it.

Owns dispatching a request: a query answers its first root field (no operationName: the first
root field decides; ``about``, ``me``, ``streamCollection``, ``indicators``, ``indicator``,
``stixSightingRelationships``); a mutation document is read whole (``document``) and each of
its root fields (aliases allowed, up to any number) runs in document order (``mutations``, and
the connector bookkeeping here: ``registerConnector``, ``pingConnector``, ``deleteConnector``),
answered under its alias; a field that fails is ``null`` under its alias with an error whose
``path`` names it, the others still run (a document that cannot be read or names an unknown
field fails whole, before anything runs). Also owns the listing arguments (filters, search,
ordering, cursors: the page itself comes from ``store`` and ``listing``) and ``pageInfo``,
top-level field selection (sub-selections come whole, like the real server), the request log
entries (``field``: the first root field; mutations add ``fields``: all of them) and the test
knobs that fail listing requests and mutation root fields. Answers are JSON text; errors are
HTTP 200 ``{"data": null, "errors": [...]}``. Must not evaluate filters or order rows itself.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reconciler.sandbox.opencti import mutations
from reconciler.sandbox.opencti.core import CREATOR_ID, PLATFORM_VERSION, GraphQLError
from reconciler.sandbox.opencti.document import Selection, operation_of, parse
from reconciler.sandbox.opencti.filters import sighting_predicate
from reconciler.sandbox.opencti.listing import ORDERINGS, Listing, Sort, page
from reconciler.sandbox.opencti.render import sighting_node

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


class MutationFailures:
    """Test knob: how many of the next executions of a mutation root field fail, and how."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[int, str]] = {}

    def fail(self, field: str, n: int, message: str) -> None:
        if n > 0:
            self.pending[field] = (n, message)
        else:
            self.pending.pop(field, None)

    def clear(self) -> None:
        self.pending.clear()

    def next_execution(self, field: str) -> str | None:
        """Count one execution of ``field``; the error message it must answer, or None."""
        left = self.pending.get(field)
        if left is None:
            return None
        n, message = left
        if n <= 1:
            del self.pending[field]
        else:
            self.pending[field] = (n - 1, message)
        return message


def execute(emu: OpenCTIEmulator, body: dict[str, Any], authorized: bool) -> str:
    """Answer one GraphQL request body (logged by its root field) as JSON text."""
    query = body.get("query") or ""
    variables = body.get("variables") or {}
    if not isinstance(variables, dict):
        variables = {}
    if operation_of(query) == "mutation":
        return _execute_mutation(emu, query, variables, authorized)
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
    return json.dumps({"data": None, "errors": [error_entry(message, code, data)]})


def error_entry(
    message: str, code: str, data: dict[str, Any] | None = None, path: list[str] | None = None
) -> dict[str, Any]:
    """One entry of ``errors``; ``path`` names the field that failed."""
    extensions: dict[str, Any] = {"code": code}
    if data:
        extensions["data"] = data
    error: dict[str, Any] = {"message": message}
    if path is not None:
        error["path"] = path
    error.update(extensions=extensions, name=code)
    return error


# --------------------------------------------------------------------------- mutations


def _execute_mutation(
    emu: OpenCTIEmulator, query: str, variables: dict[str, Any], authorized: bool
) -> str:
    """Every root field of a mutation document in order, each answered under its alias."""
    try:
        document = parse(query)
    except GraphQLError as exc:
        emu._log_request({"field": "?", "fields": [], "variables": variables})
        return error_json(exc.message, exc.code, exc.data)
    fields = [s.name for s in document.selections]
    emu._log_request({"field": fields[0], "fields": fields, "variables": variables})
    if not authorized:
        return error_json("You must be logged in to do this.", "AUTH_REQUIRED")
    try:
        _validate(document.selections)
    except GraphQLError as exc:
        return error_json(exc.message, exc.code, exc.data)
    data: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for selection in document.selections:
        try:
            data[selection.key] = _run_mutation(emu, selection, variables)
        except GraphQLError as exc:
            data[selection.key] = None
            errors.append(error_entry(exc.message, exc.code, exc.data, [selection.key]))
        except Exception as exc:  # a resolver bug: answered like the server, per field
            data[selection.key] = None
            message = f"{type(exc).__name__}: {exc}"
            errors.append(error_entry(message, "INTERNAL_SERVER_ERROR", None, [selection.key]))
    answer: dict[str, Any] = {"data": data}
    if errors:
        answer["errors"] = errors
    return json.dumps(answer, ensure_ascii=False)


def _validate(selections: tuple[Selection, ...]) -> None:
    keys: set[str] = set()
    for selection in selections:
        if selection.name not in _MUTATIONS:
            raise GraphQLError(
                f'Cannot query field "{selection.name}" on type "Mutation".',
                "GRAPHQL_VALIDATION_FAILED",
            )
        if selection.key in keys:
            raise GraphQLError(
                f'Fields "{selection.key}" conflict because they have differing arguments. '
                "Use different aliases on the fields to fetch both if this was intentional.",
                "GRAPHQL_VALIDATION_FAILED",
            )
        keys.add(selection.key)
        mutations.check(selection)


def _run_mutation(emu: OpenCTIEmulator, selection: Selection, variables: dict[str, Any]) -> Any:
    with emu._cond:
        emu._mutation_counts[selection.name] += 1
        failure = emu._mutation_failures.next_execution(selection.name)
    if failure is not None:
        raise GraphQLError(failure, "DATABASE_ERROR")
    return _MUTATIONS[selection.name](emu, selection, variables)


def _connector(
    resolver: Callable[[OpenCTIEmulator, Variables, str], Any],
) -> mutations.Resolver:
    """A connector root field, reading its arguments as it reads a request's variables."""
    return lambda emu, selection, variables: resolver(emu, selection.args(variables), "")


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
        record = emu._store.resolve(str(variables.get("id")))
        if record is None:
            return None
        return json.loads(emu._store.node_json(record, selected_fields(query, "indicator")))


def _sightings(emu: OpenCTIEmulator, variables: Variables, query: str) -> Any:
    """``stixSightingRelationships``: filtered on ``fromId``/``toId``, in creation order."""
    filters = variables.get("filters")
    if isinstance(filters, str):  # tolerated: a JSON string
        filters = json.loads(filters) if filters else None
    matches = sighting_predicate(filters)
    first = variables.get("first")
    first = 500 if first is None else max(0, min(int(first), emu.max_page_size))
    after = variables.get("after")
    start = _sighting_seq(str(after)) if after else 0
    fields = selected_fields(query, "node")
    with emu._cond:
        refs = emu._store.references.by_id
        rows = [s for s in emu._sightings.by_id.values() if matches(s)]
        total = len(rows)
        earlier = sum(1 for s in rows if s["seq"] <= start)
        rows = [s for s in rows if s["seq"] > start]
        chosen = rows[:first]
        edges = []
        for sighting in chosen:
            node = sighting_node(sighting, refs)
            if fields is not None:
                node = {k: v for k, v in node.items() if k in fields}
            edges.append({"cursor": _sighting_cursor(sighting["seq"]), "node": node})
    return {
        "edges": edges,
        "pageInfo": {
            "startCursor": edges[0]["cursor"] if edges else "",
            "endCursor": edges[-1]["cursor"] if edges else "",
            "hasNextPage": len(rows) > first,
            "hasPreviousPage": earlier > 0,
            "globalCount": total,
        },
    }


def _sighting_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps(["sighting", seq]).encode()).decode()


def _sighting_seq(cursor: str) -> int:
    try:
        kind, seq = json.loads(base64.urlsafe_b64decode(cursor.encode()).decode())
        if kind != "sighting" or not isinstance(seq, int):
            raise TypeError(kind)
    except (ValueError, TypeError) as exc:
        raise GraphQLError("Invalid cursor", "UNSUPPORTED_ERROR") from exc
    return seq


_RESOLVERS: dict[str, Callable[[OpenCTIEmulator, Variables, str], Any]] = {
    "about": _about,
    "me": _me,
    "registerConnector": _register_connector,
    "pingConnector": _ping_connector,
    "deleteConnector": _delete_connector,
    "streamCollection": _stream_collection,
    "indicator": _indicator,
    "stixSightingRelationships": _sightings,
}
_MUTATIONS: dict[str, mutations.Resolver] = {
    "registerConnector": _connector(_register_connector),
    "pingConnector": _connector(_ping_connector),
    "deleteConnector": _connector(_delete_connector),
    **mutations.RESOLVERS,
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
