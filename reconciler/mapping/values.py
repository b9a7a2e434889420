"""Value canonicalisation and validation: one observable value → its Defender key (type and
canonical value) or a skip reason and detail; the non-public address tables; the canonical hash
algorithm names that the readers and the pattern parser share.

Implements these decisions of the package docstring: the IPv4 and IPv6 forms, CIDR ``/32`` and
``/128`` as one host, non-public addresses (``private_ip``; documentation ranges kept), a file's
strongest valid hash, domains and URLs. Total (returns a key or ``(reason, detail)``, never
raises) and pure: no I/O (``idna`` is imported lazily, only for IDNs). Its names are
package-internal, except ``canonical_value`` (the same rules applied to the values Defender
answers with), which the package re-exports.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from reconciler.mapping.models import ObservableValue
from reconciler.model import IndicatorKey, IndicatorType, SkipReason

if TYPE_CHECKING:  # the policy compiles exclusions with this module's rules: no import cycle
    from reconciler.mapping.policy import MappingPolicy


def _canonical_hash_name(name: str) -> str:
    text = name.strip().strip("'\"").strip()
    compact = text.lower().replace("-", "").replace("_", "").replace(" ", "")
    return {"md5": "MD5", "sha1": "SHA-1", "sha256": "SHA-256", "sha512": "SHA-512"}.get(
        compact, text.upper()
    )


_HEX = re.compile(r"[0-9a-f]+")
_HASH_TYPES: tuple[tuple[str, int, IndicatorType], ...] = (
    ("SHA-256", 64, IndicatorType.FILE_SHA256),
    ("SHA-1", 40, IndicatorType.FILE_SHA1),
    ("MD5", 32, IndicatorType.FILE_MD5),
)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Whitespace (``\s`` is Unicode-aware on str patterns, like ``str.isspace``) or C0/DEL controls.
_URL_BAD_CHAR = re.compile(r"[\s\x00-\x1f\x7f]")
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^/:?#@]+)(?::\d{1,5})?")

_REJECTED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
_REJECTED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in ("::/128", "::1/128", "100::/64", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8")
)

_ValueOutcome = IndicatorKey | tuple[SkipReason, str]


def _canonical_key(obs: ObservableValue, policy: MappingPolicy) -> _ValueOutcome:
    kind = obs.type.strip().lower()
    if kind in {"ipv4-addr", "ipv6-addr"}:
        return _ip_key(obs.value, policy)
    if kind in {"domain-name", "hostname"}:
        return _domain_key(obs.value)
    if kind == "url":
        return _url_key(obs.value)
    if kind in {"stixfile", "file", "artifact"}:
        return _file_key(obs)
    return (
        SkipReason.UNSUPPORTED_TYPE,
        f"observable type {obs.type} has no Defender indicator type",
    )


def _empty(value: str | None) -> bool:
    return value is None or not value.strip()


def _ip_key(value: str | None, policy: MappingPolicy) -> _ValueOutcome:
    if value is None or _empty(value):
        return (SkipReason.INVALID_VALUE, "empty IP address")
    text = value.strip()
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return (SkipReason.INVALID_VALUE, f"not an IP address: {text!r}")
        if net.prefixlen != net.max_prefixlen:
            return (
                SkipReason.UNSUPPORTED_TYPE,
                f"CIDR ranges are not supported by Defender: {text}",
            )
        text = text.split("/", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return (SkipReason.INVALID_VALUE, f"not an IP address: {text!r}")
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        return (SkipReason.INVALID_VALUE, f"IPv6 address with a zone: {text!r}")
    if policy.reject_private_ips and _non_public(addr):
        return (SkipReason.PRIVATE_IP, f"{addr} is not a public address")
    canonical = addr.exploded if isinstance(addr, ipaddress.IPv6Address) else str(addr)
    return IndicatorKey(IndicatorType.IP_ADDRESS, canonical)


def _int_ranges(nets: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> list[int]:
    # Flat sorted [start0, end0 + 1, start1, end1 + 1, ...] of disjoint networks: an address is
    # inside one exactly when bisect_right lands at an odd position (one comparison chain
    # instead of a membership test per network; this runs once per IP of a full listing).
    edges: list[int] = []
    for net in sorted(nets, key=lambda n: int(n.network_address)):
        edges += [int(net.network_address), int(net.broadcast_address) + 1]
    return edges


_REJECTED_V4_EDGES = _int_ranges(_REJECTED_V4)
_REJECTED_V6_EDGES = _int_ranges(_REJECTED_V6)


def _non_public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv4Address):
        return bisect.bisect_right(_REJECTED_V4_EDGES, int(addr)) % 2 == 1
    if addr.ipv4_mapped is not None:
        return _non_public(addr.ipv4_mapped)
    return bisect.bisect_right(_REJECTED_V6_EDGES, int(addr)) % 2 == 1


def _to_ascii_domain(text: str) -> str | None:
    if text.isascii():
        return text
    try:
        import idna  # imported lazily: only IDNs need it

        return str(idna.encode(text, uts46=True).decode("ascii"))
    except Exception:  # idna raises several error types; the codec below is the fallback
        pass
    try:
        return text.encode("idna").decode("ascii")
    except (UnicodeError, ValueError):
        return None


def _valid_hostname(name: str) -> bool:
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        return False
    return all(_LABEL.fullmatch(label) for label in labels)


def _domain_key(value: str | None) -> _ValueOutcome:
    if value is None or _empty(value):
        return (SkipReason.INVALID_VALUE, "empty domain name")
    text = value.strip().lower()
    if text.endswith("."):
        text = text[:-1]
    ascii_name = _to_ascii_domain(text)
    if ascii_name is None or not _valid_hostname(ascii_name.lower()):
        return (SkipReason.INVALID_VALUE, f"not a fully qualified domain name: {value.strip()!r}")
    return IndicatorKey(IndicatorType.DOMAIN_NAME, ascii_name.lower())


def _url_key(value: str | None) -> _ValueOutcome:
    if value is None or _empty(value):
        return (SkipReason.INVALID_VALUE, "empty URL")
    text = value.strip()
    if _URL_BAD_CHAR.search(text):
        return (SkipReason.INVALID_VALUE, "URL contains whitespace or control characters")
    rest = text
    scheme = _URL_SCHEME.match(text)
    if scheme:
        if scheme.group(1).lower() not in {"http", "https"}:
            return (SkipReason.INVALID_VALUE, f"URL scheme {scheme.group(1)!r} is not http(s)")
        rest = text[scheme.end() :]
        if "@" in rest.split("/", 1)[0]:
            rest = rest.split("@", 1)[1]  # userinfo is allowed; the host follows it
    host = _HOST_PORT.match(rest)
    if not host or (host.end() < len(rest) and rest[host.end()] not in "/?#"):
        return (SkipReason.INVALID_VALUE, f"not a URL: {text[:100]!r}")
    if not _url_host_ok(host.group("host")):
        return (SkipReason.INVALID_VALUE, f"URL has no valid host: {text[:100]!r}")
    return IndicatorKey(IndicatorType.URL, text)


def _url_host_ok(host: str) -> bool:
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        pass
    ascii_name = _to_ascii_domain(host.lower().rstrip("."))
    return ascii_name is not None and _valid_hostname(ascii_name.lower())


def _file_key(obs: ObservableValue) -> _ValueOutcome:
    hashes = {_canonical_hash_name(k): v for k, v in obs.hashes.items()}
    first_invalid: tuple[str, str] | None = None
    for algo, length, ind_type in _HASH_TYPES:
        raw = hashes.get(algo)
        if raw is None:
            continue
        text = raw.strip().lower()
        if len(text) == length and _HEX.fullmatch(text):
            return IndicatorKey(ind_type, text)
        if first_invalid is None:
            first_invalid = (algo, raw)
    if first_invalid is not None:
        algo, raw = first_invalid
        return (SkipReason.INVALID_VALUE, f"invalid {algo} hash: {raw.strip()[:80]!r}")
    if hashes:
        names = ", ".join(sorted(hashes))
        return (
            SkipReason.UNSUPPORTED_TYPE,
            f"{obs.type} with only {names} hash; Defender takes MD5, SHA-1, SHA-256",
        )
    return (SkipReason.UNSUPPORTED_TYPE, f"{obs.type} without an MD5, SHA-1 or SHA-256 hash")


def canonical_value(indicator_type: IndicatorType, value: str) -> str:
    """The canonical form of a value Defender answered with, by the same rules as the desired
    values (the tolerant reader of owned rows): IPv6 exploded, domains lower-case without a
    trailing dot and IDNs in punycode, hashes lower-case, URLs stripped. A value that cannot be
    read is returned stripped: it then simply matches no desired key. Fast for values already
    in canonical form, which is what a listing of our own indicators mostly holds."""
    text = value.strip()
    if indicator_type is IndicatorType.IP_ADDRESS:
        if ":" in text:
            try:
                return ipaddress.IPv6Address(text).exploded
            except ValueError:
                return text
        return text
    if indicator_type is IndicatorType.DOMAIN_NAME:
        name = text.lower().removesuffix(".")
        return name if name.isascii() else (_to_ascii_domain(name) or name)
    if indicator_type is IndicatorType.URL:
        return text
    return text.lower()
