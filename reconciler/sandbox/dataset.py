"""Seeded, realistic OpenCTI indicator records for the fake OpenCTI (tests, demos, benchmarks).

Owns the *record*: the fake's internal, JSON-friendly representation of one OpenCTI indicator,
from which both the GraphQL node and the STIX object of the live stream are rendered
(``reconciler.sandbox.opencti``). Records are plain dicts with these keys:

    id, standard_id, name, description, pattern_type, pattern, pattern_version,
    main_observable_type, observable_values ([{type, value}] or [{type, hashes: {alg: hash}}]),
    score (int | None), detection, confidence, labels (values), revoked, valid_from,
    valid_until (str | None), indicator_types, created, modified, created_at, updated_at,
    created_by (author name | None), markings (TLP names), status_id (workflow status | None)

Dates are ISO 8601 UTC strings with milliseconds and ``Z``. Everything derives from the seed and
``now`` (a fixed date by default, never the wall clock), so a dataset is reproducible.
Must not import anything from the rest of ``reconciler`` (an emulator must not share our mistakes).
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "AUTHORS",
    "DEFAULT_NOW",
    "IPV4_BASES",
    "LABELS",
    "STIX_TO_OPENCTI_TYPE",
    "TLDS",
    "TLPS",
    "WORDS",
    "WORKFLOW",
    "escape_pattern_value",
    "format_date",
    "generate_indicators",
    "label_id",
    "observables_from_pattern",
    "parse_date",
    "status_id",
    "status_template_id",
    "stix_pattern",
    "workflow_status",
]

Record = dict[str, Any]

#: Reference "now" of generated datasets: fixed so two runs give the same records.
DEFAULT_NOW = datetime(2026, 1, 1, tzinfo=UTC)

#: Label vocabulary; label ids are derived from the value (see :func:`label_id`).
LABELS = (
    "malware",
    "c2",
    "phishing",
    "botnet",
    "edr-block",
    "tor-exit",
    "ransomware",
    "apt28",
    "scanner",
    "benign",
)

#: STIX cyber-observable type in a pattern → OpenCTI observable type name.
STIX_TO_OPENCTI_TYPE = {
    "ipv4-addr": "IPv4-Addr",
    "ipv6-addr": "IPv6-Addr",
    "domain-name": "Domain-Name",
    "hostname": "Hostname",
    "url": "Url",
    "file": "StixFile",
    "email-addr": "Email-Addr",
}

#: The Indicator workflow: status template names (in order) and colours. Status and template
#: ids derive from the name (see :func:`status_id`, :func:`status_template_id`).
WORKFLOW = (
    ("NEW", "#ff9800"),
    ("IN_PROGRESS", "#5c7bf5"),
    ("ANALYZED", "#4caf50"),
    ("APPROVED", "#2e7d32"),
    ("CLOSED", "#607d8b"),
)

AUTHORS = ("CIRCL", "AlienVault", "Internal SOC", "abuse.ch")
TLPS = ("TLP:CLEAR", "TLP:GREEN", "TLP:AMBER", "TLP:RED")
TLDS = ("com", "net", "org", "info", "io", "ru", "xyz", "biz")
WORDS = ("login", "secure", "update", "cdn", "mail", "portal", "account", "files", "api")
_BOUNDARY_SCORES = (0, 1, 29, 30, 59, 60, 100)
# Public /8s used for generated IPv4 values (no private, loopback, CGNAT, multicast or test nets).
IPV4_BASES = (45, 91, 185, 194, 212, 77, 89, 103)
_LABEL_NAMESPACE = uuid.UUID("6f1c3f43-2a8c-4f52-9d0a-3b1e4f7c9a10")
_STATUS_NAMESPACE = uuid.UUID("1c0b9a5e-7d3f-4e2a-b8c6-2f4d6e8a0b13")

# One comparison of a STIX pattern: <type>:<path> = '<value with \' and \\ escapes>'
_COMPARISON = re.compile(
    r"([a-z0-9-]+):([A-Za-z0-9_.'-]+)\s*=\s*'((?:[^'\\]|\\.)*)'",
)


def format_date(value: datetime) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``, as OpenCTI writes dates."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_date(text: str) -> datetime:
    """Inverse of :func:`format_date` (also accepts ``+00:00`` and no fraction)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@functools.lru_cache(maxsize=4096)
def label_id(value: str) -> str:
    """Deterministic internal id of a label, so filters can name labels by id."""
    return str(uuid.uuid5(_LABEL_NAMESPACE, "label:" + value))


def status_id(name: str) -> str:
    """Deterministic internal id of the Indicator workflow status whose template is ``name``."""
    return str(uuid.uuid5(_STATUS_NAMESPACE, "status:Indicator:" + name))


def status_template_id(name: str) -> str:
    """Deterministic internal id of the status template ``name``."""
    return str(uuid.uuid5(_STATUS_NAMESPACE, "template:" + name))


def workflow_status(indicator_id: str) -> str | None:
    """The status of a generated indicator, derived from its id (no draw from the RNG, so adding
    it changed no other value): about half have none, the rest spread over the workflow."""
    roll = hashlib.sha1(indicator_id.encode()).digest()[0] % 10
    return None if roll < 5 else status_id(WORKFLOW[roll - 5][0])


def escape_pattern_value(value: str) -> str:
    """Quote a value for a STIX pattern string literal (backslash, then single quote)."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def observables_from_pattern(pattern: str) -> list[dict[str, Any]]:
    """What OpenCTI stores as ``observable_values``: one entry per ``=`` comparison.

    Hash comparisons become ``{"type": "StixFile", "hashes": {"SHA-256": …}}`` (quotes of the
    hash name stripped); other comparisons ``{"type": <OpenCTI type>, "value": …}``.
    A pattern that is not bracketed yields nothing, like a pattern OpenCTI could not parse.
    """
    text = pattern.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return []
    values: list[dict[str, Any]] = []
    for stix_type, path, raw in _COMPARISON.findall(text):
        octi_type = STIX_TO_OPENCTI_TYPE.get(stix_type, stix_type)
        value = _unescape(raw)
        if path.startswith("hashes."):
            algorithm = path[len("hashes.") :].strip("'")
            values.append({"type": octi_type, "hashes": {algorithm: value}})
        else:
            values.append({"type": octi_type, "value": value})
    return values


def stix_pattern(stix_type: str, values: list[str]) -> str:
    parts = [f"{stix_type}:value = '{escape_pattern_value(v)}'" for v in values]
    return "[" + " OR ".join(parts) + "]"


class _Generator:
    """One dataset: a seeded RNG plus counters that make values unique."""

    def __init__(self, seed: int, now: datetime) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.seed = seed
        self.counter = 0

    def next_n(self) -> int:
        self.counter += 1
        return self.counter

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # --- values -------------------------------------------------------------------------------

    def ipv4(self) -> str:
        n = self.next_n()
        base = IPV4_BASES[n % len(IPV4_BASES)]
        host = (n // len(IPV4_BASES)) * 7 + 1  # spread over the /8, never .0
        return f"{base}.{(host >> 16) & 255}.{(host >> 8) & 255}.{(host & 255) or 1}"

    def ipv6(self) -> str:
        n = self.next_n()
        return f"2a00:1450:{(n >> 16) & 0xFFFF:x}:{n & 0xFFFF:x}::{self.rng.randrange(1, 0xFFFF):x}"

    def domain(self) -> str:
        n = self.next_n()
        word = WORDS[n % len(WORDS)]
        return f"{word}-{n}.{TLDS[n % len(TLDS)]}"

    def idn_domain(self) -> str:
        n = self.next_n()
        return f"bücher-{n}.münchen.de" if n % 2 else f"пример-{n}.рф"

    def hostname(self) -> str:
        n = self.next_n()
        return f"host{n}.{WORDS[n % len(WORDS)]}-infra.{TLDS[n % len(TLDS)]}"

    def url(self) -> str:
        n = self.next_n()
        domain = f"{WORDS[n % len(WORDS)]}-{n}.{TLDS[n % len(TLDS)]}"
        shapes = (
            f"http://{domain}/gate.php?id={n}&k=v",
            f"https://{domain}/path/{n}/it's?q=a%20b&x=1#frag",
            f"http://{domain}:8080/dl/payload{n}.exe",
            f"https://{domain}/login?next=%2Fhome&user=o'brien&t={n}",
            f"https://{domain}/ünïcødé/{n}?q=日本#top",
            f"http://{domain}/a=b/c#d?e&f%3D{n}",
        )
        return shapes[self.rng.randrange(len(shapes))]

    def digest(self, algorithm: str) -> str:
        n = self.next_n()
        return hashlib.new(algorithm, f"{self.seed}:{n}".encode()).hexdigest()

    def email(self) -> str:
        return f"phisher{self.next_n()}@{WORDS[self.counter % len(WORDS)]}-mail.com"

    # --- shapes -------------------------------------------------------------------------------

    def shape(self) -> tuple[str, str, str, str]:
        """(name, pattern_type, pattern, main_observable_type) of one random indicator."""
        roll = self.rng.random()
        if roll < 0.33:
            ip = self.ipv4()
            return ip, "stix", stix_pattern("ipv4-addr", [ip]), "IPv4-Addr"
        if roll < 0.38:
            ip6 = self.ipv6()
            return ip6, "stix", stix_pattern("ipv6-addr", [ip6]), "IPv6-Addr"
        if roll < 0.56:
            d = self.idn_domain() if self.rng.random() < 0.02 else self.domain()
            return d, "stix", stix_pattern("domain-name", [d]), "Domain-Name"
        if roll < 0.61:
            h = self.hostname()
            return h, "stix", stix_pattern("hostname", [h]), "Hostname"
        if roll < 0.75:
            u = self.url()
            return u, "stix", stix_pattern("url", [u]), "Url"
        if roll < 0.93:
            return self.file_shape()
        if roll < 0.955:
            return self.multi_value_shape()
        if roll < 0.965:
            e = self.email()
            return e, "stix", stix_pattern("email-addr", [e]), "Email-Addr"
        if roll < 0.975:
            return self.rule_shape()
        if roll < 0.99:
            return self.malformed_shape()
        ip = self.ipv4()
        return ip, "stix", stix_pattern("ipv4-addr", [ip]), "IPv4-Addr"

    def file_shape(self) -> tuple[str, str, str, str]:
        name = f"sample{self.counter}.exe"
        kind = self.rng.randrange(4)
        if kind == 0:
            pattern = f"[file:hashes.MD5 = '{self.digest('md5')}']"
        elif kind == 1:
            pattern = f"[file:hashes.'SHA-1' = '{self.digest('sha1')}']"
        elif kind == 2:
            pattern = f"[file:hashes.'SHA-256' = '{self.digest('sha256')}']"
        else:
            sha256, md5 = self.digest("sha256"), self.digest("md5")
            pattern = f"[file:hashes.'SHA-256' = '{sha256}' OR file:hashes.MD5 = '{md5}']"
        return name, "stix", pattern, "StixFile"

    def multi_value_shape(self) -> tuple[str, str, str, str]:
        if self.rng.random() < 0.5:
            ips = [self.ipv4() for _ in range(self.rng.randrange(2, 4))]
            return ips[0], "stix", stix_pattern("ipv4-addr", ips), "IPv4-Addr"
        domains = [self.domain() for _ in range(2)]
        return domains[0], "stix", stix_pattern("domain-name", domains), "Domain-Name"

    def rule_shape(self) -> tuple[str, str, str, str]:
        n = self.next_n()
        if self.rng.random() < 0.5:
            rule = f'rule Sample_{n} {{ strings: $a = "evil{n}" condition: $a }}'
            return f"Sample_{n}", "yara", rule, "StixFile"
        rule = f"title: Suspicious {n}\nlogsource:\n  product: windows\ndetection:\n  condition: x"
        return f"Sigma {n}", "sigma", rule, "StixFile"

    def malformed_shape(self) -> tuple[str, str, str, str]:
        n = self.next_n()
        kind = self.rng.randrange(4)
        if kind == 0:  # missing closing bracket
            return f"broken-{n}", "stix", f"[ipv4-addr:value = '45.1.{n % 250}.9'", "IPv4-Addr"
        if kind == 1:  # not an IP address
            return f"999.{n}.1.1", "stix", f"[ipv4-addr:value = '999.{n}.1.1']", "IPv4-Addr"
        if kind == 2:  # hash of the wrong length
            return f"bad-hash-{n}", "stix", f"[file:hashes.MD5 = 'abc{n}']", "StixFile"
        return f"empty-{n}", "stix", "[domain-name:value = '']", "Domain-Name"

    # --- attributes -----------------------------------------------------------------------------

    def score(self) -> int | None:
        roll = self.rng.random()
        if roll < 0.03:
            return None
        if roll < 0.10:
            return self.rng.choice(_BOUNDARY_SCORES)
        return self.rng.randrange(0, 101)

    def record(self) -> Record:
        name, pattern_type, pattern, main_type = self.shape()
        created_at = self.now - timedelta(
            days=self.rng.randrange(1, 400), seconds=self.rng.randrange(86400)
        )
        age = (self.now - created_at).total_seconds()
        if self.rng.random() < 0.7:
            # Live feeds re-ingest what they still see: most indicators were touched lately.
            recent = self.now - timedelta(seconds=1 + self.rng.random() * 20 * 86400)
            updated_at = max(created_at, recent)
        else:
            updated_at = created_at + timedelta(seconds=self.rng.random() * age * 0.9)
        roll = self.rng.random()
        valid_until: datetime | None
        if roll < 0.03:
            valid_until = None
        elif roll < 0.10:
            valid_until = self.now - timedelta(days=self.rng.randrange(1, 60))
        else:
            valid_until = self.now + timedelta(days=self.rng.randrange(1, 365))
        labels = sorted(self.rng.sample(LABELS, self.rng.choice((0, 1, 1, 2, 3))))
        markings = [self.rng.choice(TLPS)] if self.rng.random() < 0.7 else []
        observable_values = observables_from_pattern(pattern) if pattern_type == "stix" else []
        return {
            "id": self.uuid(),
            "standard_id": "indicator--" + self.uuid(),
            "name": name,
            "description": self.rng.choice(
                ("", "Seen in phishing campaign", "C2 infrastructure", "Automated feed")
            ),
            "pattern_type": pattern_type,
            "pattern": pattern,
            "pattern_version": "2.1",
            "main_observable_type": main_type,
            "observable_values": observable_values,
            "score": self.score(),
            "detection": self.rng.random() < 0.9,
            "confidence": self.rng.randrange(0, 101),
            "labels": labels,
            "revoked": self.rng.random() < 0.02,
            "valid_from": format_date(created_at),
            "valid_until": format_date(valid_until) if valid_until else None,
            "indicator_types": self.rng.choice(
                ([], ["malicious-activity"], ["anomalous-activity"], ["compromised"])
            ),
            "created": format_date(created_at),
            "modified": format_date(updated_at),
            "created_at": format_date(created_at),
            "updated_at": format_date(updated_at),
            "created_by": self.rng.choice((*AUTHORS, None)),
            "markings": markings,
        }


def _duplicate(gen: _Generator, original: Record) -> Record:
    """Another indicator with the same value (own id, pattern quirks and score)."""
    copy = gen.record()
    for key in ("name", "pattern", "pattern_type", "main_observable_type", "observable_values"):
        copy[key] = original[key]
    base = original["score"] if original["score"] is not None else 50
    copy["score"] = (base + gen.rng.randrange(5, 50)) % 101
    return copy


def generate_indicators(
    n: int, seed: int = 0, *, now: datetime | None = None
) -> list[dict[str, Any]]:
    """``n`` realistic indicator records, reproducible from ``seed`` and ``now``.

    About 33 % IPv4, 5 % IPv6, 18 % domains (a few IDN), 5 % hostnames, 14 % URLs (quotes,
    ``? & = # %`` and unicode), 18 % file hashes (MD5, SHA-1, SHA-256, multi-hash), 2.5 %
    multi-value ``OR`` patterns, 1 % e-mail addresses (unsupported by Defender), 1 % yara/sigma,
    1.5 % malformed, ~1 % duplicates of an earlier value with another score. Scores include
    0, 1, 29, 30, 59, 60, 100 and some missing; some ``valid_until`` are past or missing, ~2 %
    revoked; ~70 % were updated in the 20 days before ``now``, the rest long ago; about half
    have a workflow status. Values are unique apart from the deliberate duplicates (counters,
    not chance). A million records is better served lazily: see the fake OpenCTI's
    ``OpenCTIEmulator.load_generated``.
    """
    gen = _Generator(seed, now or DEFAULT_NOW)
    records: list[Record] = []
    make: Callable[[], Record] = gen.record
    for _ in range(n):
        if records and gen.rng.random() < 0.01:
            original = records[gen.rng.randrange(len(records))]
            if original["pattern_type"] == "stix" and original["observable_values"]:
                records.append(_duplicate(gen, original))
                continue
        records.append(make())
    for record in records:
        record["status_id"] = workflow_status(record["id"])
    return records
