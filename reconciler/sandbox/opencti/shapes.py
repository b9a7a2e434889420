"""Observable values of generated indicators: the shapes, and each index's name and pattern.

Owns the mix of shapes a generated population draws from (the same mix as the dataset's
generator: IPv4, IPv6, domains and IDN, hostnames, URLs with awkward characters, file hashes,
multi-value patterns, e-mail, yara/sigma, malformed patterns) and the values of an index: unique
by index (counters, not chance). Must not know about columns, ids, dates or filters.
"""

from __future__ import annotations

import hashlib
from typing import Any

from reconciler.sandbox.dataset import (
    IPV4_BASES,
    TLDS,
    WORDS,
    observables_from_pattern,
    stix_pattern,
)

# Observable shapes: name, weight (per mille), main observable type, pattern type.
KINDS = (
    ("ipv4", 340, "IPv4-Addr", "stix"),
    ("ipv6", 50, "IPv6-Addr", "stix"),
    ("domain", 176, "Domain-Name", "stix"),
    ("idn", 4, "Domain-Name", "stix"),
    ("hostname", 50, "Hostname", "stix"),
    ("url", 140, "Url", "stix"),
    ("md5", 45, "StixFile", "stix"),
    ("sha1", 45, "StixFile", "stix"),
    ("sha256", 45, "StixFile", "stix"),
    ("file2", 45, "StixFile", "stix"),
    ("multi_ipv4", 12, "IPv4-Addr", "stix"),
    ("multi_domain", 13, "Domain-Name", "stix"),
    ("email", 10, "Email-Addr", "stix"),
    ("yara", 5, "StixFile", "yara"),
    ("sigma", 5, "StixFile", "sigma"),
    ("broken", 4, "IPv4-Addr", "stix"),
    ("bad_ip", 4, "IPv4-Addr", "stix"),
    ("bad_hash", 4, "StixFile", "stix"),
    ("empty", 3, "Domain-Name", "stix"),
)
_UNVALUED = frozenset({"broken", "bad_ip", "bad_hash", "empty", "yara", "sigma"})
#: Shapes whose value another indicator may repeat (duplicates).
VALUED = frozenset(n for n, (name, *_) in enumerate(KINDS) if name not in _UNVALUED)
_MAIN_TYPE = {name: main_type for name, _, main_type, _ in KINDS}
_STIX_TYPES = {
    "ipv4": "ipv4-addr",
    "ipv6": "ipv6-addr",
    "domain": "domain-name",
    "idn": "domain-name",
    "hostname": "hostname",
    "url": "url",
    "email": "email-addr",
}


def _ipv4(i: int, k: int) -> str:
    host = i * 4 + k + 1
    base = IPV4_BASES[(i + k) % len(IPV4_BASES)]
    return f"{base}.{host >> 16 & 255}.{host >> 8 & 255}.{host & 255 or 1}"


def _domain(i: int, k: int = 0) -> str:
    return f"{WORDS[i % len(WORDS)]}-{2 * i + k}.{TLDS[i % len(TLDS)]}"


def _digest(algorithm: str, seed: int, i: int, k: int = 0) -> str:
    return hashlib.new(algorithm, f"{seed}:{i}:{k}".encode()).hexdigest()


def _url(i: int, h: int) -> str:
    domain = f"{WORDS[i % len(WORDS)]}-{i}.{TLDS[i % len(TLDS)]}"
    shapes = (
        f"http://{domain}/gate.php?id={i}&k=v",
        f"https://{domain}/path/{i}/it's?q=a%20b&x=1#frag",
        f"http://{domain}:8080/dl/payload{i}.exe",
        f"https://{domain}/login?next=%2Fhome&user=o'brien&t={i}",
        f"https://{domain}/ünïcødé/{i}?q=日本#top",
        f"http://{domain}/a=b/c#d?e&f%3D{i}",
    )
    return shapes[h % len(shapes)]


def shape(kind: str, i: int, seed: int, h: int) -> tuple[str, str, list[dict[str, Any]]]:
    """(name, pattern, observable values) of index ``i`` for an observable shape; values are
    unique by index; the observables are what ``observables_from_pattern`` finds."""
    main_type = _MAIN_TYPE[kind]
    if kind in _STIX_TYPES:
        value = _single_value(kind, i, h)
        return value, stix_pattern(_STIX_TYPES[kind], [value]), [_observable(main_type, value)]
    if kind in ("md5", "sha1", "sha256", "file2"):
        return f"sample{i}.exe", *_file_pattern(kind, i, seed)
    if kind in ("multi_ipv4", "multi_domain"):
        if kind == "multi_ipv4":
            values = [_ipv4(i, k) for k in range(1, 2 + h % 2 + 1)]
        else:
            values = [_domain(i, 0), _domain(i, 1)]
        observables = [_observable(main_type, v) for v in values]
        return values[0], stix_pattern(_STIX_TYPES[kind[6:]], values), observables
    if kind == "yara":
        return f"Sample_{i}", f'rule Sample_{i} {{ strings: $a = "evil{i}" condition: $a }}', []
    if kind == "sigma":
        rule = f"title: Suspicious {i}\nlogsource:\n  product: windows\ndetection:\n  condition: x"
        return f"Sigma {i}", rule, []
    name, pattern = _malformed(kind, i)
    return name, pattern, observables_from_pattern(pattern)


def _observable(main_type: str, value: str) -> dict[str, Any]:
    return {"type": main_type, "value": value}


def _single_value(kind: str, i: int, h: int) -> str:
    if kind == "ipv4":
        return _ipv4(i, 0)
    if kind == "ipv6":
        return f"2a00:1450:{i >> 16 & 0xFFFF:x}:{i & 0xFFFF:x}::{(h & 0xFFFE) + 1:x}"
    if kind == "domain":
        return _domain(i)
    if kind == "idn":
        return f"bücher-{i}.münchen.de" if i % 2 else f"пример-{i}.рф"
    if kind == "hostname":
        return f"host{i}.{WORDS[i % len(WORDS)]}-infra.{TLDS[i % len(TLDS)]}"
    if kind == "url":
        return _url(i, h)
    return f"phisher{i}@{WORDS[i % len(WORDS)]}-mail.com"


def _file_pattern(kind: str, i: int, seed: int) -> tuple[str, list[dict[str, Any]]]:
    if kind == "md5":
        md5 = _digest("md5", seed, i)
        return f"[file:hashes.MD5 = '{md5}']", [_hashes({"MD5": md5})]
    if kind == "sha1":
        sha1 = _digest("sha1", seed, i)
        return f"[file:hashes.'SHA-1' = '{sha1}']", [_hashes({"SHA-1": sha1})]
    sha256 = _digest("sha256", seed, i)
    if kind == "sha256":
        return f"[file:hashes.'SHA-256' = '{sha256}']", [_hashes({"SHA-256": sha256})]
    md5 = _digest("md5", seed, i)
    pattern = f"[file:hashes.'SHA-256' = '{sha256}' OR file:hashes.MD5 = '{md5}']"
    return pattern, [_hashes({"SHA-256": sha256}), _hashes({"MD5": md5})]


def _hashes(hashes: dict[str, str]) -> dict[str, Any]:
    return {"type": "StixFile", "hashes": hashes}


def _malformed(kind: str, i: int) -> tuple[str, str]:
    if kind == "broken":  # missing closing bracket
        return f"broken-{i}", f"[ipv4-addr:value = '45.1.{i % 250}.9'"
    if kind == "bad_ip":  # not an IP address
        return f"999.{i}.1.1", f"[ipv4-addr:value = '999.{i}.1.1']"
    if kind == "bad_hash":  # hash of the wrong length
        return f"bad-hash-{i}", f"[file:hashes.MD5 = 'abc{i}']"
    return f"empty-{i}", "[domain-name:value = '']"
