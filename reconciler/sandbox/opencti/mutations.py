"""The mutation root fields of the fake OpenCTI: their inputs, the nested fields of the ``…Edit``
fields, and what they answer.

Owns, per root field, reading its arguments (``GraphQLError`` as the API answers a missing or
mistyped input: ``BAD_USER_INPUT``) and shaping its answer (a fixed set of fields: sub-selections
are not projected): ``registerConnector``, ``pingConnector``, ``deleteConnector`` (connector
bookkeeping, answered by ``graphql``), ``externalReferenceAdd``, ``externalReferenceEdit``
(``fieldPatch``, ``delete``), ``stixDomainObjectEdit`` (``relationAdd``, ``relationDelete`` of
``external-reference``), ``identityAdd``, ``stixSightingRelationshipAdd`` and
``stixSightingRelationshipEdit`` (``fieldPatch``, ``relationAdd``, ``relationDelete``,
``delete``), and which nested fields each ``…Edit`` field has (checked before anything runs).
Must not change state itself: ``writeback`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reconciler.sandbox.opencti import writeback
from reconciler.sandbox.opencti.core import GraphQLError
from reconciler.sandbox.opencti.document import Selection
from reconciler.sandbox.opencti.entities import REFERENCE_FIELDS, reference_view, text_or_none
from reconciler.sandbox.opencti.render import sighting_node

if TYPE_CHECKING:
    from reconciler.sandbox.opencti.emulator import OpenCTIEmulator

Variables = dict[str, Any]
Resolver = Callable[["OpenCTIEmulator", Selection, Variables], Any]
Nested = Callable[[dict[str, Any]], Any]

#: Nested fields of the ``…Edit`` root fields.
NESTED: dict[str, frozenset[str]] = {
    "stixDomainObjectEdit": frozenset({"relationAdd", "relationDelete"}),
    "externalReferenceEdit": frozenset({"fieldPatch", "delete"}),
    "stixSightingRelationshipEdit": frozenset(
        {"fieldPatch", "relationAdd", "relationDelete", "delete"}
    ),
}
_EDIT_TYPES = {
    "stixDomainObjectEdit": "StixDomainObjectEditMutations",
    "externalReferenceEdit": "ExternalReferenceEditMutations",
    "stixSightingRelationshipEdit": "StixSightingRelationshipEditMutations",
}
_REFERENCE = "external-reference"
# Input fields of the platform's schema the fake accepts and ignores.
_IGNORED_SIGHTING = frozenset(
    {
        "stix_id",
        "x_opencti_stix_ids",
        "created",
        "modified",
        "createdBy",
        "objectMarking",
        "objectOrganization",
        "objectLabel",
        "clientMutationId",
        "update",
        "x_opencti_workflow_id",
        "file",
    }
)
_SIGHTING_INPUT = frozenset(
    {
        "fromId",
        "toId",
        "toIds",
        "attribute_count",
        "first_seen",
        "last_seen",
        "description",
        "externalReferences",
        "confidence",
        "x_opencti_negative",
    }
)
_IGNORED_IDENTITY = frozenset(
    {
        "stix_id",
        "x_opencti_stix_ids",
        "x_opencti_aliases",
        "contact_information",
        "roles",
        "createdBy",
        "objectMarking",
        "objectLabel",
        "externalReferences",
        "clientMutationId",
        "update",
        "created",
        "modified",
        "confidence",
        "lang",
        "revoked",
        "file",
    }
)


def check(selection: Selection) -> None:
    """Refuse nested fields an ``…Edit`` root field does not have (validation, before running)."""
    allowed = NESTED.get(selection.name)
    if allowed is None:
        return
    if not selection.selections:
        raise GraphQLError(
            f'Field "{selection.name}" of type "{_EDIT_TYPES[selection.name]}" must have a '
            "selection of subfields.",
            "GRAPHQL_VALIDATION_FAILED",
        )
    for nested in selection.selections:
        if nested.name not in allowed:
            raise GraphQLError(
                f'Cannot query field "{nested.name}" on type "{_EDIT_TYPES[selection.name]}".',
                "GRAPHQL_VALIDATION_FAILED",
            )


# --------------------------------------------------------------------------- inputs


def _invalid(message: str) -> GraphQLError:
    return GraphQLError(f'Variable "$input" got invalid value; {message}', "BAD_USER_INPUT")


def _input(args: dict[str, Any], name: str = "input") -> dict[str, Any]:
    value = args.get(name)
    if not isinstance(value, dict):
        raise GraphQLError(
            f'Argument "{name}" of non-null type is required, but it was not provided.',
            "BAD_USER_INPUT",
        )
    return value


def _check_fields(value: dict[str, Any], known: frozenset[str], type_name: str) -> None:
    for field in value:
        if field not in known:
            raise _invalid(f'Field "{field}" is not defined by type "{type_name}".')


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _invalid(f'Int cannot represent non-integer value: {value!r} (at "{field}").')
    return value


def _edits(args: dict[str, Any]) -> list[tuple[str, Any]]:
    """``[EditInput]``: (key, first value or None) pairs, in order."""
    raw = args.get("input")
    items = raw if isinstance(raw, list) else [raw] if isinstance(raw, dict) else None
    if items is None:
        raise _invalid('Expected non-nullable type "[EditInput]!" not to be null.')
    out: list[tuple[str, Any]] = []
    for item in items:
        if not isinstance(item, dict) or not item.get("key"):
            raise _invalid('Field "key" of required type "[String!]!" was not provided.')
        key = item["key"]
        key = key[0] if isinstance(key, list) and key else key
        value = item.get("value")
        if isinstance(value, list):
            value = value[0] if value else None
        out.append((str(key), value))
    return out


def _relation_target(args: dict[str, Any]) -> Any:
    spec = _input(args)
    _check_reference_type(spec.get("relationship_type"))
    if not spec.get("toId"):
        raise _invalid('Field "toId" of required type "StixRef!" was not provided.')
    return spec["toId"]


def _check_reference_type(kind: Any) -> None:
    if kind is None:
        raise _invalid('Field "relationship_type" of required type "String!" was not provided.')
    if kind != _REFERENCE:
        raise GraphQLError(
            f"The fake OpenCTI only emulates {_REFERENCE} relations, not {kind}.",
            "UNSUPPORTED_ERROR",
        )


def _nested(
    selection: Selection, variables: Variables, handlers: dict[str, Nested]
) -> dict[str, Any]:
    """Run the nested fields of an ``…Edit`` root field in order; their answers by key."""
    return {
        nested.key: handlers[nested.name](nested.args(variables)) for nested in selection.selections
    }


# --------------------------------------------------------------------------- external references


def _external_reference_add(emu: OpenCTIEmulator, sel: Selection, variables: Variables) -> Any:
    return reference_view(writeback.add_reference(emu, _input(sel.args(variables))))


def _external_reference_edit(emu: OpenCTIEmulator, sel: Selection, variables: Variables) -> Any:
    ref_id = sel.args(variables).get("id")

    def field_patch(args: dict[str, Any]) -> Any:
        changes: dict[str, Any] = {}
        for key, value in _edits(args):
            if key not in REFERENCE_FIELDS:
                raise GraphQLError(
                    f"Cannot patch `{key}` of an external reference", "FUNCTIONAL_ERROR"
                )
            changes[key] = text_or_none(value)
        return reference_view(writeback.patch_reference(emu, ref_id, changes))

    return _nested(
        sel,
        variables,
        {"fieldPatch": field_patch, "delete": lambda _: writeback.delete_reference(emu, ref_id)},
    )


def _stix_domain_object_edit(emu: OpenCTIEmulator, sel: Selection, variables: Variables) -> Any:
    indicator = sel.args(variables).get("id")

    def relation_add(args: dict[str, Any]) -> Any:
        ref = writeback.attach_reference(emu, indicator, _relation_target(args))
        return {"id": ref["id"]}

    def relation_delete(args: dict[str, Any]) -> Any:
        _check_reference_type(args.get("relationship_type"))
        record, _ = writeback.detach_reference(emu, indicator, args.get("toId"))
        return {"id": record["id"]}

    return _nested(sel, variables, {"relationAdd": relation_add, "relationDelete": relation_delete})


# --------------------------------------------------------------------------- identities


def _identity_add(emu: OpenCTIEmulator, sel: Selection, variables: Variables) -> Any:
    spec = _input(sel.args(variables))
    _check_fields(spec, _IGNORED_IDENTITY | {"type", "name", "description"}, "IdentityAddInput")
    identity = writeback.add_identity(
        emu, spec.get("type"), spec.get("name"), spec.get("description")
    )
    return {
        "id": identity["id"],
        "standard_id": identity["standard_id"],
        "entity_type": identity["entity_type"],
        "name": identity["name"],
        "description": identity.get("description"),
    }


# --------------------------------------------------------------------------- sightings


def _sighting_add(emu: OpenCTIEmulator, sel: Selection, variables: Variables) -> Any:
    spec = _input(sel.args(variables))
    _check_fields(spec, _SIGHTING_INPUT | _IGNORED_SIGHTING, "StixSightingRelationshipAddInput")
    if spec.get("attribute_count") is None:
        raise _invalid('Field "attribute_count" of required type "Int!" was not provided.')
    to_ids = spec.get("toIds")
    to_id = spec.get("toId")
    if to_id is None and isinstance(to_ids, list) and to_ids:
        to_id = to_ids[0]
    elif to_id is None and isinstance(to_ids, str):
        to_id = to_ids
    if not spec.get("fromId"):
        raise _invalid('Field "fromId" of required type "StixRef!" was not provided.')
    if not to_id:
        raise _invalid('Field "toId" of required type "StixRef!" was not provided.')
    references = spec.get("externalReferences") or []
    if not isinstance(references, list):
        references = [references]
    confidence = spec.get("confidence")
    negative = spec.get("x_opencti_negative")
    sighting = writeback.add_sighting(
        emu,
        from_id=spec["fromId"],
        to_id=to_id,
        count=_int(spec["attribute_count"], "attribute_count"),
        first_seen=writeback.iso_date(spec.get("first_seen"), "first_seen"),
        last_seen=writeback.iso_date(spec.get("last_seen"), "last_seen"),
        description=spec.get("description"),
        references=references,
        confidence=None if confidence is None else _int(confidence, "confidence"),
        negative=None if negative is None else bool(negative),
    )
    with emu._cond:
        return sighting_node(sighting, emu._store.references.by_id)


def _number(value: Any, key: str) -> int:
    """An integer patched as a string or a number."""
    try:
        return int(str(value).strip())
    except ValueError as exc:
        raise GraphQLError(f"{key} must be a number, not {value!r}", "FUNCTIONAL_ERROR") from exc


def _sighting_changes(edits: list[tuple[str, Any]]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for key, value in edits:
        if key == "attribute_count":
            changes[key] = _number(value, key)
        elif key in ("first_seen", "last_seen"):
            date = writeback.iso_date(value, key)
            if date is None:
                raise GraphQLError(f"{key} cannot be empty", "FUNCTIONAL_ERROR")
            changes[key] = date
        elif key == "description":
            changes[key] = None if value is None else str(value)
        elif key == "confidence":
            changes[key] = None if value is None else _number(value, key)
        elif key == "x_opencti_negative":
            changes["negative"] = str(value).lower() in ("true", "1", "yes")
        else:
            raise GraphQLError(f"Cannot patch `{key}` of a sighting", "FUNCTIONAL_ERROR")
    return changes


def _sighting_edit(emu: OpenCTIEmulator, sel: Selection, variables: Variables) -> Any:
    ident = sel.args(variables).get("id")

    def field_patch(args: dict[str, Any]) -> Any:
        with emu._cond:
            sighting = writeback.patch_sighting(emu, ident, _sighting_changes(_edits(args)))
            return sighting_node(sighting, emu._store.references.by_id)

    def relation_add(args: dict[str, Any]) -> Any:
        ref = writeback.attach_to_sighting(emu, ident, _relation_target(args))
        return {"id": ref["id"]}

    def relation_delete(args: dict[str, Any]) -> Any:
        _check_reference_type(args.get("relationship_type"))
        sighting = writeback.detach_from_sighting(emu, ident, args.get("toId"))
        return {"id": sighting["id"]}

    return _nested(
        sel,
        variables,
        {
            "fieldPatch": field_patch,
            "relationAdd": relation_add,
            "relationDelete": relation_delete,
            "delete": lambda _: writeback.delete_sighting(emu, ident),
        },
    )


RESOLVERS: dict[str, Resolver] = {
    "externalReferenceAdd": _external_reference_add,
    "externalReferenceEdit": _external_reference_edit,
    "stixDomainObjectEdit": _stix_domain_object_edit,
    "identityAdd": _identity_add,
    "stixSightingRelationshipAdd": _sighting_add,
    "stixSightingRelationshipEdit": _sighting_edit,
}
