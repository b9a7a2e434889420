"""Exclusions: values never deployed, whatever OpenCTI or a rule says (the organisation's own
addresses, domains, URLs and files that a feed may list).

Owns ``Exclusion`` (one named list of CIDR ranges, domain suffixes, URL prefixes and hashes)
and ``ExclusionSet`` (all of them compiled once) with its ``match``. What is matched:

- an ``IpAddress`` value, and the host of a ``Url`` written with an IP, against the CIDR
  ranges (IPv4 and IPv6; an IPv4-mapped IPv6 address as its IPv4 address);
- a ``DomainName`` value, and the host of a ``Url``, against the domain suffixes: a suffix
  ``example.org`` covers ``example.org`` and every name under it (label boundaries only:
  ``badexample.org`` is not covered);
- a ``Url`` against the URL prefixes, scheme left out (``http`` and ``https`` alike), host
  case-insensitive, path case-sensitive;
- a file's hash, and every other hash the same OpenCTI file carries, against the hashes.

When several exclusions cover a value, the first configured names it. Lookups are a bisection
over precomputed ranges (CIDRs), one dict look-up per domain label, one dict look-up by host
then the prefixes of that host (URLs), one set look-up per hash: no parsing of the exclusions,
no regex per call. Invalid entries raise ``ValueError`` naming the exclusion when compiled.
Pure: no I/O.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reconciler.mapping.models import ObservableValue
from reconciler.mapping.values import canonical_value
from reconciler.model import IndicatorKey, IndicatorType

__all__ = ["Exclusion", "ExclusionHit", "ExclusionSet"]

_HASH = re.compile(r"[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64}")
_DOMAIN_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_SCHEME = re.compile(r"https?://", re.IGNORECASE)
_FILE_TYPES = frozenset(
    {IndicatorType.FILE_MD5, IndicatorType.FILE_SHA1, IndicatorType.FILE_SHA256}
)


@dataclass(frozen=True)
class Exclusion:
    """One named exclusion (the name shows in the plan's ``excluded`` lines)."""

    name: str
    cidrs: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    url_prefixes: tuple[str, ...] = ()
    hashes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExclusionHit:
    """Which exclusion covers a value, and by which of its entries."""

    name: str
    entry: str

    def detail(self, key: IndicatorKey) -> str:
        return f"{key.value} is covered by {self.entry} (exclusion {self.name!r})"


class _Ranges:
    """Disjoint address ranges, each with the first exclusion (in configured order) covering
    it: ``find`` is one bisection. CIDR blocks are nested or disjoint, so the blocks covering a
    point form a chain and a sweep over the block edges builds the ranges."""

    __slots__ = ("_hits", "_starts")

    def __init__(self, blocks: Iterable[tuple[int, int, int, ExclusionHit]]) -> None:
        ordered = sorted(blocks, key=lambda b: (b[0], -b[1], b[2]))
        edges = sorted({b[0] for b in ordered} | {b[1] + 1 for b in ordered})
        self._starts: list[int] = []
        self._hits: list[ExclusionHit | None] = []
        chain: list[tuple[int, int, int, ExclusionHit]] = []
        i = 0
        for edge in edges:
            while chain and chain[-1][1] < edge:
                chain.pop()  # nested blocks end first: the ended ones are on top
            while i < len(ordered) and ordered[i][0] == edge:
                chain.append(ordered[i])
                i += 1
            self._starts.append(edge)
            self._hits.append(min(chain, key=lambda b: b[2])[3] if chain else None)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def find(self, value: int) -> ExclusionHit | None:
        i = bisect.bisect_right(self._starts, value) - 1
        return self._hits[i] if i >= 0 else None


def _canonical_int(text: str) -> tuple[int, int] | None:
    """(integer, version) of an address in the mapping's canonical form (dotted quad; IPv6
    exploded, eight groups of four hex digits), without ``ipaddress``: this runs once per IP of
    a full listing. ``None`` for any other form."""
    if len(text) == 39 and text.count(":") == 7:
        try:
            return int(text.replace(":", ""), 16), 6
        except ValueError:
            return None
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 for p in parts):
        return None
    a, b, c, d = (int(p) for p in parts)
    if max(a, b, c, d) > 255:
        return None
    return (a << 24) | (b << 16) | (c << 8) | d, 4


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text.strip(), strict=False)


def _domain(text: str) -> str:
    name = canonical_value(IndicatorType.DOMAIN_NAME, text.strip().removeprefix("*."))
    name = name.removeprefix(".")
    if not name or len(name) > 253 or not all(_DOMAIN_LABEL.fullmatch(p) for p in name.split(".")):
        raise ValueError(f"not a domain name: {text!r}")
    return name


def _split_url(text: str) -> tuple[str, str]:
    """(host with port, lower-cased; the rest from the first ``/``, ``?`` or ``#``) of a URL
    with or without an http(s) scheme; userinfo is dropped."""
    text = text.strip()
    scheme = _SCHEME.match(text)
    rest = text[scheme.end() :] if scheme else text
    cut = len(rest)
    for mark in "/?#":
        at = rest.find(mark)
        if at != -1:
            cut = min(cut, at)
    host, tail = rest[:cut], rest[cut:]
    return host.rsplit("@", 1)[-1].lower(), tail


def _bare_host(host: str) -> str:
    """The host of ``host[:port]`` without the port or IPv6 brackets."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.split(":", 1)[0] if host.count(":") == 1 else host


class ExclusionSet:
    """Every exclusion compiled for look-ups; falsy when there is none."""

    __slots__ = ("_domains", "_hashes", "_urls", "_v4", "_v6", "names")

    def __init__(self, exclusions: Sequence[Exclusion]) -> None:
        self.names = tuple(e.name for e in exclusions)
        v4: list[tuple[int, int, int, ExclusionHit]] = []
        v6: list[tuple[int, int, int, ExclusionHit]] = []
        self._domains: dict[str, ExclusionHit] = {}
        self._urls: dict[str, list[tuple[str, ExclusionHit]]] = {}
        self._hashes: dict[str, ExclusionHit] = {}
        for order, exc in enumerate(exclusions):
            if not exc.name.strip():
                raise ValueError("an exclusion needs a name")
            try:
                self._add(exc, order, v4, v6)
            except ValueError as err:
                raise ValueError(f"exclusion {exc.name!r}: {err}") from None
        self._v4 = _Ranges(v4)
        self._v6 = _Ranges(v6)

    def _add(
        self,
        exc: Exclusion,
        order: int,
        v4: list[tuple[int, int, int, ExclusionHit]],
        v6: list[tuple[int, int, int, ExclusionHit]],
    ) -> None:
        for text in exc.cidrs:
            try:
                net = _network(text)
            except ValueError:
                raise ValueError(f"not a CIDR range or IP address: {text!r}") from None
            block = (int(net.network_address), int(net.broadcast_address), order)
            (v4 if net.version == 4 else v6).append((*block, ExclusionHit(exc.name, str(net))))
        for text in exc.domains:
            name = _domain(text)
            self._domains.setdefault(name, ExclusionHit(exc.name, name))
        for text in exc.url_prefixes:
            host, tail = _split_url(text)
            if not host:
                raise ValueError(f"a URL prefix needs a host: {text!r}")
            self._urls.setdefault(host, []).append((tail, ExclusionHit(exc.name, text.strip())))
        for text in exc.hashes:
            value = text.strip().lower()
            if not _HASH.fullmatch(value):
                raise ValueError(f"not an MD5, SHA-1 or SHA-256 hash: {text!r}")
            self._hashes.setdefault(value, ExclusionHit(exc.name, value))

    def __bool__(self) -> bool:
        return bool(self.names)

    def match(self, key: IndicatorKey, obs: ObservableValue | None = None) -> ExclusionHit | None:
        """The exclusion covering ``key`` (``obs``: the OpenCTI value it came from, whose
        other hashes count too), or ``None``."""
        if key.type is IndicatorType.IP_ADDRESS:
            return self._ip(key.value)
        if key.type is IndicatorType.DOMAIN_NAME:
            return self._domain(key.value)
        if key.type is IndicatorType.URL:
            return self._url(key.value)
        if key.type in _FILE_TYPES:
            return self._hash(key.value, obs)
        return None

    def _ip(self, text: str) -> ExclusionHit | None:
        if not self._v4 and not self._v6:
            return None
        number = _canonical_int(text)
        if number is None:  # not in the mapping's canonical form (a URL's host): parse it
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                return None
            number = (int(addr), addr.version)
        value, version = number
        if version == 6 and value >> 32 == 0xFFFF:  # IPv4-mapped: its IPv4 address
            value, version = value & 0xFFFFFFFF, 4
        return (self._v4 if version == 4 else self._v6).find(value)

    def _domain(self, name: str) -> ExclusionHit | None:
        if not self._domains:
            return None
        labels = name.split(".")
        for i in range(len(labels)):
            hit = self._domains.get(".".join(labels[i:]))
            if hit is not None:
                return hit
        return None

    def _url(self, text: str) -> ExclusionHit | None:
        if not (self._urls or self._domains or self._v4 or self._v6):
            return None
        host, tail = _split_url(text)
        for prefix, hit in self._urls.get(host, ()):
            if tail.startswith(prefix):
                return hit
        bare = _bare_host(host)
        if host.startswith("[") or _canonical_int(bare) is not None:  # an IP literal
            return self._ip(bare)
        if not self._domains:
            return None
        return self._domain(canonical_value(IndicatorType.DOMAIN_NAME, bare))

    def _hash(self, value: str, obs: ObservableValue | None) -> ExclusionHit | None:
        if not self._hashes:
            return None
        hit = self._hashes.get(value.lower())
        if hit is not None or obs is None:
            return hit
        for other in obs.hashes.values():  # any algorithm: only MD5/SHA-1/SHA-256 can match
            hit = self._hashes.get(other.strip().lower())
            if hit is not None:
                return hit
        return None
