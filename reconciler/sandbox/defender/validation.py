"""Indicator body validation: what Defender accepts in a submitted indicator and its wrappers.

Owns the Indicators API's vocabulary (types, actions, severities, the actions each type allows,
accepted property names) and the documented checks: required
fields, the casing rule, value syntax per type, public IPs, expiry; also the ``{"Indicators":
[...]}`` / ``{"IndicatorIds": [...]}`` wrappers with their 500-item cap, and JSON bodies.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from reconciler.sandbox.defender.core import ApiError, parse_timestamp

INDICATOR_TYPES = (
    "FileSha1",
    "FileSha256",
    "FileMd5",
    "CertificateThumbprint",
    "IpAddress",
    "DomainName",
    "Url",
)
ACTIONS = ("Warn", "Block", "Audit", "Alert", "AlertAndBlock", "BlockAndRemediate", "Allowed")
SEVERITIES = ("Informational", "Low", "Medium", "High")

_FILE_ACTIONS = frozenset(
    {"Allowed", "Audit", "Warn", "Block", "BlockAndRemediate", "Alert", "AlertAndBlock"}
)
_NETWORK_ACTIONS = frozenset({"Allowed", "Audit", "Warn", "Block", "Alert"})
ALLOWED_ACTIONS: dict[str, frozenset[str]] = {
    "FileSha1": _FILE_ACTIONS,
    "FileSha256": _FILE_ACTIONS,
    "FileMd5": _FILE_ACTIONS,
    "CertificateThumbprint": frozenset({"Allowed", "BlockAndRemediate"}),
    "IpAddress": _NETWORK_ACTIONS,
    "DomainName": _NETWORK_ACTIONS,
    "Url": _NETWORK_ACTIONS,
}
_HEX_LENGTHS = {"FileSha1": 40, "FileSha256": 64, "FileMd5": 32, "CertificateThumbprint": 40}

REQUIRED_FIELDS = ("indicatorValue", "indicatorType", "action", "title", "description")
_DOCUMENTED_FIELDS = (
    *REQUIRED_FIELDS,
    "application",
    "expirationTime",
    "severity",
    "recommendedActions",
    "rbacGroupNames",
    "educateUrl",
    "generateAlert",
)
# Accepted although undocumented (seen in real answers); ``id`` because OCTI sends it.
_UNDOCUMENTED_FIELDS = (
    "category",
    "bypassDurationHours",
    "notificationId",
    "notificationBody",
    "version",
    "mitreTechniques",
    "historicalDetection",
    "lookBackPeriod",
    "additionalInfo",
    "externalId",
    "certificateInfo",
)
ACCEPTED_FIELDS = frozenset((*_DOCUMENTED_FIELDS, *_UNDOCUMENTED_FIELDS, "id"))
_CANONICAL_FIELDS = {name.lower(): name for name in ACCEPTED_FIELDS}
_STRING_FIELDS = (
    "indicatorValue",
    "indicatorType",
    "action",
    "title",
    "description",
    "application",
    "expirationTime",
    "severity",
    "recommendedActions",
    "educateUrl",
    "externalId",
)
MAX_BATCH = 500

# --------------------------------------------------------------------------- values

_HEX = re.compile(r"[0-9A-Fa-f]+")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_TLD = re.compile(r"[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59}")
_NOT_PUBLIC = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)


def _valid_domain(text: str) -> bool:
    if not text or len(text) > 253 or text.endswith("."):
        return False
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            return False
    labels = text.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        return False
    return _TLD.fullmatch(labels[-1]) is not None


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """IPv4 dotted quad or IPv6 with all eight groups; no ranges, CIDR, zones or '::'."""
    try:
        if ":" in text:
            if "::" in text or text.count(":") != 7 or "%" in text:
                return None
            return ipaddress.IPv6Address(text)
        if text.count(".") != 3:
            return None
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not any(address.version == net.version and address in net for net in _NOT_PUBLIC)


def _valid_url(text: str) -> bool:
    if any(char.isspace() for char in text):
        return False
    candidate = text if "://" in text else f"http://{text}"
    try:
        parts = urlsplit(candidate)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        return False
    if parts.scheme.lower() not in ("http", "https") or not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return _valid_domain(host)


def _check_value(kind: str, value: str, *, public_only: bool) -> None:
    """Raise the documented error code for an indicator value that fails its type's syntax."""
    if kind in _HEX_LENGTHS:
        length = _HEX_LENGTHS[kind]
        if len(value) != length or _HEX.fullmatch(value) is None:
            raise ApiError(
                400,
                "InvalidHashValue",
                f"Invalid {kind} value '{value}': expected {length} hexadecimal characters.",
            )
    elif kind == "IpAddress":
        address = _parse_ip(value)
        if address is None:
            raise ApiError(
                400,
                "InvalidIpAddress",
                f"'{value}' is not a valid IP address (IPv4 dotted quad or full IPv6; "
                "ranges and CIDR are not supported).",
            )
        if public_only and not _is_public(address):
            raise ApiError(400, "InvalidIpAddress", f"'{value}' is not a public IP address.")
    elif kind == "DomainName":
        if not _valid_domain(value):
            raise ApiError(400, "InvalidDomainName", f"'{value}' is not a valid domain name.")
    elif kind == "Url" and not _valid_url(value):
        raise ApiError(400, "InvalidUrl", f"'{value}' is not a valid URL.")


def _enum_value(value: Any, name: str, allowed: tuple[str, ...], *, strict: bool) -> str:
    if isinstance(value, str):
        if value in allowed:
            return value
        if not strict:
            for option in allowed:
                if option.lower() == value.lower():
                    return option
    raise ApiError(
        400,
        "InvalidInput",
        f"Invalid {name} value '{value}'. Possible values: {', '.join(allowed)}.",
    )


def _string_list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ApiError(400, "InvalidRequestBody", f"Property '{name}' must be a list of strings.")
    return list(value)


def _property_names(body: Mapping[str, Any], *, strict: bool) -> dict[str, Any]:
    """Apply the casing rule: strict refuses unknown or wrong-case names, lenient maps them."""
    if strict:
        for name in body:
            if name not in ACCEPTED_FIELDS:
                hint = _CANONICAL_FIELDS.get(name.lower())
                extra = (
                    f" Did you mean '{hint}'? Property names are case-sensitive." if hint else ""
                )
                raise ApiError(
                    400, "InvalidRequestBody", f"'{name}' is not a valid property.{extra}"
                )
        return dict(body)
    return {
        _CANONICAL_FIELDS[name.lower()]: value
        for name, value in body.items()
        if name.lower() in _CANONICAL_FIELDS
    }


def validate_indicator(
    body: Any, *, strict: bool, public_only: bool, now: datetime
) -> dict[str, Any]:
    """Check one submitted indicator; return it with canonical names/enums."""
    if not isinstance(body, dict):
        raise ApiError(400, "InvalidRequestBody", "The indicator must be a JSON object.")
    spec = _property_names(body, strict=strict)
    for name in REQUIRED_FIELDS:
        value = spec.get(name)
        blank = name != "indicatorValue" and isinstance(value, str) and not value.strip()
        if value is None or blank:
            raise ApiError(400, "MissingRequiredParameter", f"Parameter {name} is missing")
    for name in _STRING_FIELDS:
        if spec.get(name) is not None and not isinstance(spec[name], str):
            raise ApiError(400, "InvalidRequestBody", f"Property '{name}' must be a string.")
    if not spec["indicatorValue"].strip():
        raise ApiError(400, "InvalidInput", "Recieved an empty indicator value.")
    kind = _enum_value(spec["indicatorType"], "indicatorType", INDICATOR_TYPES, strict=strict)
    action = _enum_value(spec["action"], "action", ACTIONS, strict=strict)
    spec["indicatorType"], spec["action"] = kind, action
    if spec.get("severity") is not None:
        spec["severity"] = _enum_value(spec["severity"], "severity", SEVERITIES, strict=strict)
    alert = spec.get("generateAlert")
    if alert is not None and not isinstance(alert, bool):
        raise ApiError(400, "InvalidRequestBody", "Property 'generateAlert' must be a boolean.")
    if action not in ALLOWED_ACTIONS[kind]:
        raise ApiError(
            400, "InvalidInput", f"Action {action} is not supported for indicator type {kind}."
        )
    if action == "Audit" and alert is not True:
        raise ApiError(400, "InvalidInput", "Action Audit requires generateAlert to be true.")
    _check_value(kind, spec["indicatorValue"], public_only=public_only)
    if spec.get("educateUrl") is not None and (kind != "Url" or action not in ("Block", "Warn")):
        raise ApiError(
            400,
            "InvalidInput",
            "educateUrl is only supported for Url indicators with Block or Warn.",
        )
    expiry_text = spec.get("expirationTime")
    if expiry_text is not None:
        expiry = parse_timestamp(expiry_text)
        if expiry is None:
            raise ApiError(400, "InvalidInput", f"Invalid expirationTime '{expiry_text}'.")
        if expiry <= now:
            raise ApiError(400, "InvalidInput", "expirationTime must be in the future.")
    spec["rbacGroupNames"] = _string_list(spec.get("rbacGroupNames"), "rbacGroupNames")
    spec["mitreTechniques"] = _string_list(spec.get("mitreTechniques"), "mitreTechniques")
    return spec


def wrapped_list(body: Any, wrapper: str, *, strict: bool) -> list[Any]:
    """Read ``{"Indicators": [...]}``-style bodies with the casing rule and the 500 cap."""
    if not isinstance(body, dict):
        raise ApiError(400, "InvalidRequestBody", "The request body must be a JSON object.")
    if strict:
        for name in body:
            if name != wrapper:
                raise ApiError(400, "InvalidRequestBody", f"'{name}' is not a valid property.")
        items = body.get(wrapper)
    else:
        items = next((v for k, v in body.items() if k.lower() == wrapper.lower()), None)
    if items is None:
        raise ApiError(400, "MissingRequiredParameter", f"Parameter {wrapper} is missing")
    if not isinstance(items, list):
        raise ApiError(400, "InvalidRequestBody", f"Property '{wrapper}' must be a list.")
    if len(items) > MAX_BATCH:
        raise ApiError(
            400,
            "MaximumBatchSizeExceeded",
            f"Maximum batch size exceeded. Received: {len(items)}, allowed: {MAX_BATCH}",
        )
    return items


def json_body(body: bytes) -> Any:
    """The parsed request body; 400 ``InvalidRequestBody`` when empty or not JSON."""
    if not body.strip():
        raise ApiError(400, "InvalidRequestBody", "The request body is empty.")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(
            400, "InvalidRequestBody", f"The request body is not valid JSON: {exc}."
        ) from exc
