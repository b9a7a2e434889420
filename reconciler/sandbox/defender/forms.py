"""Equivalent forms and refused values of the Defender emulator's indicators.

Owns the "equivalent" echo (the form a row is stored and listed in when the emulator does not
echo what was sent: file hashes and domain names upper-case, IPv6 compressed, the legacy
actions ``Alert`` -> ``Audit`` and ``AlertAndBlock`` -> ``Block``/``BlockAndRemediate``), the
upsert key compared by that form and case-insensitively, and the deny list (values Defender
refuses to act on). Must not: touch the store, the lock or any request; it only maps values.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from reconciler.sandbox.defender.core import ApiError

ECHO_MODES = ("as_sent", "equivalent")
DEFAULT_DENY_VALUES = (
    "microsoft.com",
    "windowsupdate.com",
    "login.microsoftonline.com",
)

_FILE_TYPES = frozenset({"FileSha1", "FileSha256", "FileMd5"})
_NETWORK_TYPES = frozenset({"IpAddress", "DomainName", "Url"})


def equivalent_value(kind: Any, value: Any) -> Any:
    """The stored form of a value under the "equivalent" echo (other values unchanged)."""
    if not isinstance(value, str):
        return value
    if kind in _FILE_TYPES or kind == "DomainName":
        return value.upper()
    if kind == "IpAddress" and ":" in value:
        try:
            return ipaddress.IPv6Address(value).compressed
        except ValueError:
            return value
    return value


def equivalent_action(kind: Any, action: Any) -> Any:
    """The stored action under the "equivalent" echo: the legacy aliases become current ones."""
    if action == "Alert":
        return "Audit"
    if action == "AlertAndBlock":
        if kind in _NETWORK_TYPES:
            return "Block"
        if kind in _FILE_TYPES:
            return "BlockAndRemediate"
    return action


def equivalent_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A validated spec in its stored form under the "equivalent" echo."""
    kind = spec.get("indicatorType")
    stored = dict(spec)
    stored["indicatorValue"] = equivalent_value(kind, spec.get("indicatorValue"))
    stored["action"] = equivalent_action(kind, spec.get("action"))
    return stored


def folded_key(row: Mapping[str, Any], fields: Iterable[str]) -> tuple[Any, ...]:
    """The upsert key by equivalent form, strings compared case-insensitively."""
    stored = equivalent_spec(row)
    return tuple(
        value.casefold() if isinstance(value, str) else value
        for value in (stored.get(name) for name in fields)
    )


def _host(url: str) -> str:
    candidate = url if "://" in url else f"http://{url}"
    try:
        return urlsplit(candidate).hostname or ""
    except ValueError:
        return ""


def denied_value(spec: Mapping[str, Any], deny_values: Iterable[str]) -> str | None:
    """The value of a spec that matches the deny list (case-insensitively; a Url by its host)."""
    value = spec.get("indicatorValue")
    if not isinstance(value, str):
        return None
    denied = {entry.casefold().rstrip(".") for entry in deny_values if entry}
    candidates = {value.casefold().rstrip(".")}
    if spec.get("indicatorType") == "Url":
        candidates.add(_host(value).casefold().rstrip("."))
    return value if candidates & denied else None


def check_denied(spec: Mapping[str, Any], deny_values: Iterable[str]) -> None:
    """400 ``InvalidInput`` naming the value when it is on the deny list."""
    value = denied_value(spec, deny_values)
    if value is not None:
        raise ApiError(
            400,
            "InvalidInput",
            f"The indicator value '{value}' cannot be added: it belongs to a service that "
            "Microsoft Defender will not block or alert on.",
        )
