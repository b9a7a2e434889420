"""The Indicators API of the Defender emulator: authorization and the five endpoint handlers.

Owns what an authenticated call may do (audience and roles: Ti.ReadWrite alone
manages only its own indicators) and the handlers of ``GET /api/indicators`` (OData listing with
paging), ``POST /api/indicators`` (submit = upsert), ``POST /api/indicators/import``,
``DELETE /api/indicators/{id}`` and ``POST /api/indicators/BatchDelete``, with the variants
the emulator's knobs select (strict OData, the deny list, the "equivalent" echo, an import
refused item by item or as a whole). Handlers take the emulator's lock around the store and
purge expired rows first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from reconciler.sandbox.defender.core import (
    ApiError,
    Call,
    RawIndicator,
    format_timestamp,
    json_response,
    no_content,
)
from reconciler.sandbox.defender.forms import check_denied, equivalent_spec
from reconciler.sandbox.defender.login import (
    READ_ALL,
    READ_WRITE,
    READ_WRITE_ALL,
    Token,
    resource,
)
from reconciler.sandbox.defender.odata import MAX_TOP, compile_filter, int_param, odata_error
from reconciler.sandbox.defender.validation import json_body, validate_indicator, wrapped_list
from reconciler.sandbox.http import Response, last_values

if TYPE_CHECKING:
    from reconciler.sandbox.defender.emulator import DefenderEmulator

DEFAULT_PAGE_SIZE = 10_000

Handler = Callable[["DefenderEmulator", Call], Response]


def authorize(emu: DefenderEmulator, token: Token, call: Call) -> None:
    """403 for a wrong audience or missing roles; Ti.ReadWrite alone sees only its own."""
    if token.audience != resource(emu):
        raise ApiError(
            403,
            "Forbidden",
            f"The access token audience '{token.audience}' is not valid for this API; "
            f"request a token for {resource(emu)}.",
        )
    wanted = {READ_WRITE, READ_WRITE_ALL}
    if call.route.endpoint == "list":
        wanted.add(READ_ALL)
    if not token.roles & wanted:
        raise ApiError(
            403,
            "Forbidden",
            f"Missing application roles. API required roles: {','.join(sorted(wanted))}, "
            f"application roles: {','.join(sorted(token.roles))}.",
        )
    broad = {READ_WRITE_ALL, READ_ALL} if call.route.endpoint == "list" else {READ_WRITE_ALL}
    call.own_only = not token.roles & broad


def _check_owner(row: Mapping[str, Any], call: Call) -> None:
    if call.own_only and row.get("createdBy") != call.client_id:
        raise ApiError(
            403,
            "Forbidden",
            f"Indicator {row.get('id')} was not created by this application; "
            f"{READ_WRITE} only allows managing its own indicators.",
        )


# --------------------------------------------------------------------------- handlers


def list_indicators(emu: DefenderEmulator, call: Call) -> Response:
    params = last_values(call.query)
    for name in params:
        if name.startswith("$") and name not in ("$filter", "$top", "$skip"):
            raise odata_error(f"The query parameter '{name}' is not supported.")
    filter_text = params.get("$filter", "").strip()
    predicate = _compiled(emu, filter_text) if filter_text else None
    top = int_param(params, "$top", minimum=1)
    if top is not None and top > MAX_TOP:
        raise odata_error(
            f"The limit of '{MAX_TOP}' for Top query has been exceeded. "
            f"The value from the incoming request is '{top}'."
        )
    skip = int_param(params, "$skip", minimum=0) or 0
    with emu._lock:
        rows = list(emu._current_store().rows.values())
    if call.own_only:
        rows = [row for row in rows if row.get("createdBy") == call.client_id]
    if predicate is not None:
        rows = [row for row in rows if predicate(row)]
    limit = top if top is not None else emu.page_size
    payload: dict[str, Any] = {
        "@odata.context": f"{emu.url}/api/$metadata#Indicators",
        "value": rows[skip : skip + limit],
    }
    if top is None and len(rows) > skip + limit:
        query = f"$skip={skip + limit}"
        if filter_text:
            query = f"$filter={quote(filter_text, safe='')}&{query}"
        payload["@odata.nextLink"] = f"{emu.url}/api/indicators?{query}"
    return json_response(payload)


def _compiled(emu: DefenderEmulator, text: str) -> Callable[[RawIndicator], Any]:
    strict = emu.odata == "strict"
    return compile_filter(
        text,
        fold=frozenset({"indicatorValue"}) if emu.echo == "equivalent" else frozenset(),
        allow_or=not strict,
        node_limit=emu.odata_node_limit if strict else None,
    )


def _validate(emu: DefenderEmulator, item: Any) -> dict[str, Any]:
    """A valid, allowed spec in the form it is stored in (raises ApiError otherwise)."""
    spec = validate_indicator(
        item, strict=emu.strict_casing, public_only=emu.public_ips_only, now=emu.clock.now()
    )
    check_denied(spec, emu.deny_values)
    return equivalent_spec(spec) if emu.echo == "equivalent" else spec


def _upsert(emu: DefenderEmulator, spec: Mapping[str, Any], call: Call) -> RawIndicator:
    """Create or update the row of a valid spec; the caller holds the lock and has purged."""
    return emu._store.upsert(
        spec,
        client_id=call.client_id or "",
        app_name=emu.app_name,
        stamp=format_timestamp(emu.clock.now()),
        quota=emu.quota,
        check_owner=lambda row: _check_owner(row, call),
    )


def submit(emu: DefenderEmulator, call: Call) -> Response:
    spec = _validate(emu, json_body(call.body))
    with emu._lock:
        emu._current_store()
        row = _upsert(emu, spec, call)
    return json_response({"@odata.context": f"{emu.url}/api/$metadata#Indicators/$entity", **row})


def _sent_value(item: Any) -> str | None:
    value = item.get("indicatorValue") if isinstance(item, dict) else None
    return value if isinstance(value, str) else None


def _failed(item: Any, exc: ApiError) -> dict[str, Any]:
    return {
        "id": None,
        "indicator": _sent_value(item),
        "isFailed": True,
        "failureReason": f"{exc.code}: {exc.message}",
    }


def _whole_batch_error(item: Any, index: int, exc: ApiError) -> ApiError:
    """The error of an import refused as a whole because of one item (named by its value)."""
    value = _sent_value(item)
    named = f"Indicator '{value}'" if value is not None else "The indicator"
    return ApiError(
        exc.status,
        exc.code,
        f"{named} (item {index}) was refused and nothing of this import was applied: {exc.message}",
        exc.headers,
    )


def import_indicators(emu: DefenderEmulator, call: Call) -> Response:
    """Upsert each item. ``per_item``: a failed item is reported in place (``isFailed``);
    ``whole_batch``: the first failing item fails the call and nothing of it is stored."""
    items = wrapped_list(json_body(call.body), "Indicators", strict=emu.strict_casing)
    whole = emu.batch_rejection == "whole_batch"
    specs: list[dict[str, Any] | ApiError] = []
    for index, item in enumerate(items):
        try:
            specs.append(_validate(emu, item))
        except ApiError as exc:
            if whole:
                raise _whole_batch_error(item, index, exc) from exc
            specs.append(exc)
    results = []
    with emu._lock:
        store = emu._current_store()
        saved = store.snapshot() if whole else None
        for index, (item, spec) in enumerate(zip(items, specs, strict=True)):
            if isinstance(spec, ApiError):
                results.append(_failed(item, spec))
                continue
            try:
                row = _upsert(emu, spec, call)
            except ApiError as exc:
                if saved is not None:
                    store.restore(saved)
                    raise _whole_batch_error(item, index, exc) from exc
                results.append(_failed(item, exc))
            else:
                results.append(
                    {
                        "id": row["id"],
                        "indicator": row["indicatorValue"],
                        "isFailed": False,
                        "failureReason": None,
                    }
                )
    return json_response({"value": results})


def delete(emu: DefenderEmulator, call: Call) -> Response:
    ident = call.route.ident or ""
    with emu._lock:
        store = emu._current_store()
        row = store.rows.get(int(ident)) if ident.isdigit() else None
        if row is not None:
            _check_owner(row, call)
        found = row is not None and store.remove(int(ident))
    if not found:
        raise ApiError(404, "NotFound", f"Indicator with id '{ident}' was not found.")
    return no_content()


def batch_delete(emu: DefenderEmulator, call: Call) -> Response:
    """Delete every listed id; an unknown id is a 404 (deleting nothing while atomic)."""
    raw_ids = wrapped_list(json_body(call.body), "IndicatorIds", strict=emu.strict_casing)
    if not raw_ids:
        raise ApiError(400, "InvalidInput", "IndicatorIds must hold at least one id.")
    ids: list[int] = []
    for raw in raw_ids:
        valid_int = isinstance(raw, int) and not isinstance(raw, bool) and raw > 0
        if (isinstance(raw, str) and raw.isdigit()) or valid_int:
            ids.append(int(raw))
        else:
            raise ApiError(400, "InvalidInput", f"Invalid indicator id '{raw}'.")
    with emu._lock:
        store = emu._current_store()
        missing = [ident for ident in ids if ident not in store.rows]
        for ident in ids:
            if ident in store.rows:
                _check_owner(store.rows[ident], call)
        if not missing or not emu.batch_delete_atomic:
            for ident in ids:
                store.remove(ident)
    if missing:
        listed = ", ".join(str(ident) for ident in missing)
        raise ApiError(404, "NotFound", f"Indicators not found: {listed}.")
    return no_content()


HANDLERS: dict[str, Handler] = {
    "list": list_indicators,
    "submit": submit,
    "import": import_indicators,
    "delete": delete,
    "batch_delete": batch_delete,
}
