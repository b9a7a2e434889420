"""Table tests for ``reconciler.mapping``: the seed's entity and score tables, pattern handling,
canonicalisation, every skip reason, expiry, text fields, merging and determinism.

Tests taking the ``read`` fixture run twice: once through the GraphQL node, once through the
STIX stream object of the same logical indicator."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from reconciler.mapping import (
    DESCRIPTION_LIMIT,
    OCTI_EXTENSION,
    TITLE_LIMIT,
    MappingPolicy,
    OpenCTIIndicator,
    build_desired,
    indicator_from_graphql,
    indicator_from_stix,
    map_indicator,
    merge_desired,
)
from reconciler.model import (
    Action,
    DesiredIndicator,
    IndicatorKey,
    IndicatorType,
    Severity,
    Skipped,
    SkipReason,
)

MD5 = "098f6bcd4621d373cade4e832627b4f6"
SHA1 = "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"
SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
POLICY = MappingPolicy()

Reader = Callable[[dict[str, Any]], OpenCTIIndicator]
MakeSpec = Callable[..., dict[str, Any]]


def ov(obs_type: str, value: str | None = None, **hashes: str) -> dict[str, Any]:
    """One observable_values entry; hash names use ``_`` for ``-`` (SHA_256 → SHA-256)."""
    entry: dict[str, Any] = {"type": obs_type}
    if value is not None:
        entry["value"] = value
    if hashes:
        entry["hashes"] = {k.replace("_", "-"): v for k, v in hashes.items()}
    return entry


def keys_of(result: Any) -> list[IndicatorKey]:
    return [d.key for d in result.desired]


def reasons_of(result: Any) -> list[SkipReason]:
    return [s.reason for s in result.skipped]


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- the seed's entity mapping table -----------------------------------------------------

ENTITY_ROWS = [
    pytest.param(
        [ov("IPv4-Addr", "8.8.8.8")],
        "[ipv4-addr:value = '8.8.8.8']",
        IndicatorKey(IndicatorType.IP_ADDRESS, "8.8.8.8"),
        id="ipv4",
    ),
    pytest.param(
        [ov("IPv6-Addr", "2001:4860:4860::8888")],
        "[ipv6-addr:value = '2001:4860:4860::8888']",
        IndicatorKey(IndicatorType.IP_ADDRESS, "2001:4860:4860:0000:0000:0000:0000:8888"),
        id="ipv6",
    ),
    pytest.param(
        [ov("Domain-Name", "evil.example.com")],
        "[domain-name:value = 'evil.example.com']",
        IndicatorKey(IndicatorType.DOMAIN_NAME, "evil.example.com"),
        id="domain-name",
    ),
    pytest.param(
        [ov("Hostname", "host.evil.example")],
        "[hostname:value = 'host.evil.example']",
        IndicatorKey(IndicatorType.DOMAIN_NAME, "host.evil.example"),
        id="hostname",
    ),
    pytest.param(
        [ov("Url", "https://evil.example/pay?x=1")],
        "[url:value = 'https://evil.example/pay?x=1']",
        IndicatorKey(IndicatorType.URL, "https://evil.example/pay?x=1"),
        id="url",
    ),
    pytest.param(
        [ov("StixFile", MD5=MD5)],
        f"[file:hashes.MD5 = '{MD5}']",
        IndicatorKey(IndicatorType.FILE_MD5, MD5),
        id="file-md5",
    ),
    pytest.param(
        [ov("StixFile", SHA_1=SHA1)],
        f"[file:hashes.'SHA-1' = '{SHA1}']",
        IndicatorKey(IndicatorType.FILE_SHA1, SHA1),
        id="file-sha1",
    ),
    pytest.param(
        [ov("StixFile", SHA_256=SHA256)],
        f"[file:hashes.'SHA-256' = '{SHA256}']",
        IndicatorKey(IndicatorType.FILE_SHA256, SHA256),
        id="file-sha256",
    ),
]


@pytest.mark.parametrize(("values", "pattern", "expected"), ENTITY_ROWS)
def test_entity_table_from_observable_values(
    read: Reader, make_spec: MakeSpec, values: Any, pattern: str, expected: IndicatorKey
) -> None:
    result = map_indicator(read(make_spec(observable_values=values, pattern=pattern)), POLICY)
    assert keys_of(result) == [expected]
    assert result.skipped == ()


@pytest.mark.parametrize(("values", "pattern", "expected"), ENTITY_ROWS)
def test_entity_table_from_pattern_fallback(
    read: Reader, make_spec: MakeSpec, values: Any, pattern: str, expected: IndicatorKey
) -> None:
    result = map_indicator(read(make_spec(observable_values=None, pattern=pattern)), POLICY)
    assert keys_of(result) == [expected]


def test_observable_values_win_over_pattern(read: Reader, make_spec: MakeSpec) -> None:
    spec = make_spec(
        pattern="[ipv4-addr:value = '1.1.1.1']", observable_values=[ov("IPv4-Addr", "9.9.9.9")]
    )
    assert [k.value for k in keys_of(map_indicator(read(spec), POLICY))] == ["9.9.9.9"]


def test_empty_observable_values_fall_back_to_pattern(read: Reader, make_spec: MakeSpec) -> None:
    spec = make_spec(pattern="[domain-name:value = 'a.example']", observable_values=[])
    assert [k.value for k in keys_of(map_indicator(read(spec), POLICY))] == ["a.example"]


# --- score → action / severity -----------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "action", "severity"),
    [
        pytest.param(0, Action.AUDIT, Severity.INFORMATIONAL, id="0"),
        pytest.param(1, Action.WARN, Severity.LOW, id="1"),
        pytest.param(29, Action.WARN, Severity.LOW, id="29"),
        pytest.param(30, Action.ALERT, Severity.MEDIUM, id="30"),
        pytest.param(59, Action.ALERT, Severity.MEDIUM, id="59"),
        pytest.param(60, Action.BLOCK, Severity.HIGH, id="60"),
        pytest.param(100, Action.BLOCK, Severity.HIGH, id="100"),
        pytest.param(None, Action.AUDIT, Severity.INFORMATIONAL, id="missing"),
    ],
)
def test_score_table(
    read: Reader, make_spec: MakeSpec, score: int | None, action: Action, severity: Severity
) -> None:
    (d,) = map_indicator(read(make_spec(score=score)), POLICY).desired
    assert (d.action, d.severity) == (action, severity)
    assert d.score == (score or 0)


@pytest.mark.parametrize(
    ("policy", "score", "action", "generate_alert"),
    [
        pytest.param(MappingPolicy(action=Action.WARN), 90, Action.WARN, True, id="fixed-warn"),
        pytest.param(MappingPolicy(action=Action.ALERT), 0, Action.ALERT, True, id="fixed-alert"),
        pytest.param(MappingPolicy(passive_only=True), 90, Action.AUDIT, True, id="passive"),
        pytest.param(
            MappingPolicy(passive_only=True, action=Action.BLOCK, generate_alert=False),
            90,
            Action.AUDIT,
            True,
            id="passive-beats-fixed-and-audit-always-alerts",
        ),
        pytest.param(MappingPolicy(generate_alert=False), 0, Action.AUDIT, True, id="audit-alert"),
        pytest.param(MappingPolicy(generate_alert=False), 90, Action.BLOCK, False, id="no-alert"),
    ],
)
def test_action_policy(
    read: Reader,
    make_spec: MakeSpec,
    policy: MappingPolicy,
    score: int,
    action: Action,
    generate_alert: bool,
) -> None:
    (d,) = map_indicator(read(make_spec(score=score)), policy).desired
    assert d.action is action
    assert d.generate_alert is generate_alert


def test_fixed_action_keeps_score_severity(read: Reader, make_spec: MakeSpec) -> None:
    (d,) = map_indicator(read(make_spec(score=45)), MappingPolicy(action=Action.BLOCK)).desired
    assert d.severity is Severity.MEDIUM


@pytest.mark.parametrize(
    ("values", "action"),
    [
        pytest.param([ov("IPv4-Addr", "8.8.8.8")], Action.BLOCK, id="ip-downgraded"),
        pytest.param([ov("Domain-Name", "a.example")], Action.BLOCK, id="domain-downgraded"),
        pytest.param([ov("Url", "http://a.example/")], Action.BLOCK, id="url-downgraded"),
        pytest.param([ov("StixFile", MD5=MD5)], Action.BLOCK_AND_REMEDIATE, id="file-kept"),
    ],
)
def test_block_and_remediate_only_for_files(
    read: Reader, make_spec: MakeSpec, values: Any, action: Action
) -> None:
    policy = MappingPolicy(action=Action.BLOCK_AND_REMEDIATE)
    (d,) = map_indicator(read(make_spec(observable_values=values)), policy).desired
    assert d.action is action


# --- patterns ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        pytest.param(
            "[ipv4-addr:value = '8.8.8.8' OR ipv4-addr:value = '1.1.1.1']",
            [("IpAddress", "1.1.1.1"), ("IpAddress", "8.8.8.8")],
            id="or-in-observation",
        ),
        pytest.param(
            "[domain-name:value = 'a.example'] OR [url:value = 'http://b.example/x']",
            [("DomainName", "a.example"), ("Url", "http://b.example/x")],
            id="or-between-observations",
        ),
        pytest.param(
            "([ipv4-addr:value = '8.8.8.8'] OR ([ipv6-addr:value = '2001:4860::1']))",
            [("IpAddress", "2001:4860:0000:0000:0000:0000:0000:0001"), ("IpAddress", "8.8.8.8")],
            id="nested-parentheses",
        ),
        pytest.param(
            f"[file:hashes.'SHA-256' = '{SHA256}' OR file:hashes.MD5 = '{MD5}']",
            [("FileMd5", MD5), ("FileSha256", SHA256)],
            id="multi-hash-or-two-files",
        ),
        pytest.param(
            f"[file:hashes.MD5 = '{MD5}' AND file:hashes.'SHA-256' = '{SHA256}']",
            [("FileSha256", SHA256)],
            id="and-hashes-one-file-strongest",
        ),
        pytest.param(
            f"[file:hashes.MD5 = '{MD5}' AND file:hashes.SHA1 = '{SHA1}' AND file:name = 'a.exe']",
            [("FileSha1", SHA1)],
            id="and-hashes-with-name",
        ),
        pytest.param(
            f"[file:hashes.md5 = '{MD5.upper()}']",
            [("FileMd5", MD5)],
            id="lower-case-algorithm-upper-case-hex",
        ),
        pytest.param(
            "[url:value = 'http://a.example/it\\'s']",
            [("Url", "http://a.example/it's")],
            id="escaped-quote",
        ),
        pytest.param(
            "[ipv4-addr:value = '8.8.8.8' OR ipv4-addr:value = '8.8.8.8']",
            [("IpAddress", "8.8.8.8")],
            id="duplicate-values-one-key",
        ),
    ],
)
def test_pattern_values(
    read: Reader, make_spec: MakeSpec, pattern: str, expected: list[tuple[str, str]]
) -> None:
    result = map_indicator(read(make_spec(pattern=pattern, observable_values=None)), POLICY)
    assert [(k.type.value, k.value) for k in keys_of(result)] == expected
    assert result.skipped == ()


def test_multi_hash_observable_values_two_indicators(read: Reader, make_spec: MakeSpec) -> None:
    values = [ov("StixFile", SHA_256=SHA256), ov("StixFile", MD5=MD5)]
    result = map_indicator(read(make_spec(observable_values=values)), POLICY)
    assert sorted(k.type.value for k in keys_of(result)) == ["FileMd5", "FileSha256"]


def test_one_file_entry_several_hashes_strongest_wins(read: Reader, make_spec: MakeSpec) -> None:
    values = [ov("StixFile", MD5=MD5, SHA_1=SHA1, SHA_256=SHA256)]
    assert keys_of(map_indicator(read(make_spec(observable_values=values)), POLICY)) == [
        IndicatorKey(IndicatorType.FILE_SHA256, SHA256)
    ]


@pytest.mark.parametrize(
    "hash_name",
    ["SHA-256", "SHA256", "sha-256", "sha256", "'SHA-256'", "Sha_256"],
)
def test_hash_key_spellings(read: Reader, make_spec: MakeSpec, hash_name: str) -> None:
    values = [{"type": "StixFile", "hashes": {hash_name: SHA256}}]
    assert keys_of(map_indicator(read(make_spec(observable_values=values)), POLICY)) == [
        IndicatorKey(IndicatorType.FILE_SHA256, SHA256)
    ]


def test_invalid_strongest_hash_falls_back_to_valid_one(read: Reader, make_spec: MakeSpec) -> None:
    values = [ov("StixFile", SHA_256="abc", MD5=MD5)]
    assert keys_of(map_indicator(read(make_spec(observable_values=values)), POLICY)) == [
        IndicatorKey(IndicatorType.FILE_MD5, MD5)
    ]


def test_some_values_skipped_others_deployed(read: Reader, make_spec: MakeSpec) -> None:
    values = [ov("IPv4-Addr", "8.8.8.8"), ov("IPv4-Addr", "10.0.0.1"), ov("Email-Addr", "a@b.c")]
    result = map_indicator(read(make_spec(observable_values=values)), POLICY)
    assert [k.value for k in keys_of(result)] == ["8.8.8.8"]
    assert sorted(reasons_of(result)) == [SkipReason.PRIVATE_IP, SkipReason.UNSUPPORTED_TYPE]


# --- canonicalisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obs_type", "raw", "canonical"),
    [
        pytest.param("Domain-Name", "  Evil.Example.COM.  ", "evil.example.com", id="domain-case"),
        pytest.param("Domain-Name", "bücher.example", "xn--bcher-kva.example", id="idn"),
        pytest.param("Domain-Name", "BÜCHER.example", "xn--bcher-kva.example", id="idn-upper"),
        pytest.param("Hostname", "xn--bcher-kva.example", "xn--bcher-kva.example", id="punycode"),
        pytest.param("IPv4-Addr", " 8.8.4.4 ", "8.8.4.4", id="ipv4-spaces"),
        pytest.param("IPv4-Addr", "8.8.4.4/32", "8.8.4.4", id="ipv4-slash-32-is-one-host"),
        pytest.param(
            "IPv6-Addr", "2001:4860::1", "2001:4860:0000:0000:0000:0000:0000:0001", id="v6-short"
        ),
        pytest.param(
            "IPv6-Addr",
            "2001:4860:0:0:0:0:0:1",
            "2001:4860:0000:0000:0000:0000:0000:0001",
            id="v6-unpadded",
        ),
        pytest.param(
            "IPv6-Addr",
            "2001:4860:0000:0000:0000:0000:0000:0001",
            "2001:4860:0000:0000:0000:0000:0000:0001",
            id="v6-full",
        ),
        pytest.param(
            "IPv6-Addr", "2001:4860::ABCD", "2001:4860:0000:0000:0000:0000:0000:abcd", id="v6-case"
        ),
        pytest.param("Url", "  http://a.example/Path  ", "http://a.example/Path", id="url-strip"),
        pytest.param("Url", "a.example/x/y", "a.example/x/y", id="url-without-scheme"),
        pytest.param("Url", "https://8.8.8.8:8443/x", "https://8.8.8.8:8443/x", id="url-ip"),
        pytest.param("Hostname", "HOST.a.example", "host.a.example", id="hostname-case"),
    ],
)
def test_canonical_values(
    read: Reader, make_spec: MakeSpec, obs_type: str, raw: str, canonical: str
) -> None:
    result = map_indicator(read(make_spec(observable_values=[ov(obs_type, raw)])), POLICY)
    assert [k.value for k in keys_of(result)] == [canonical], result.skipped


def test_hash_upper_case_canonicalised(read: Reader, make_spec: MakeSpec) -> None:
    values = [ov("StixFile", SHA_1=SHA1.upper())]
    assert keys_of(map_indicator(read(make_spec(observable_values=values)), POLICY)) == [
        IndicatorKey(IndicatorType.FILE_SHA1, SHA1)
    ]


# --- skip reasons ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason", "detail_part"),
    [
        pytest.param(
            {"observable_values": [ov("Email-Addr", "a@evil.example")]},
            SkipReason.UNSUPPORTED_TYPE,
            "Email-Addr",
            id="email",
        ),
        pytest.param(
            {"observable_values": [ov("Mutex", "Global\\x")]},
            SkipReason.UNSUPPORTED_TYPE,
            "Mutex",
            id="mutex",
        ),
        pytest.param(
            {"observable_values": None, "pattern": "[windows-registry-key:key = 'HKLM\\\\x']"},
            SkipReason.UNSUPPORTED_TYPE,
            "Windows-Registry-Key",
            id="registry-key-pattern",
        ),
        pytest.param(
            {"observable_values": [ov("IPv4-Addr", "10.0.0.0/8")]},
            SkipReason.UNSUPPORTED_TYPE,
            "CIDR ranges are not supported by Defender",
            id="cidr",
        ),
        pytest.param(
            {"observable_values": None, "pattern": "[ipv4-addr:value = '198.51.100.0/24']"},
            SkipReason.UNSUPPORTED_TYPE,
            "CIDR",
            id="cidr-pattern",
        ),
        pytest.param(
            {"observable_values": [ov("StixFile", SHA_512="ab" * 64)]},
            SkipReason.UNSUPPORTED_TYPE,
            "SHA-512",
            id="sha512-only",
        ),
        pytest.param(
            {"observable_values": None, "pattern": "[file:name = 'evil.exe']"},
            SkipReason.UNSUPPORTED_TYPE,
            "without",
            id="file-without-hash",
        ),
        pytest.param(
            {"pattern_type": "yara", "pattern": "rule x { condition: true }"},
            SkipReason.UNSUPPORTED_PATTERN,
            "yara",
            id="yara-even-with-values",
        ),
        pytest.param(
            {"pattern_type": "sigma", "observable_values": None, "pattern": "title: x"},
            SkipReason.UNSUPPORTED_PATTERN,
            "sigma",
            id="sigma",
        ),
        pytest.param(
            {"pattern_type": "snort", "observable_values": None, "pattern": "alert tcp any"},
            SkipReason.UNSUPPORTED_PATTERN,
            "snort",
            id="snort",
        ),
        pytest.param(
            {"observable_values": None, "pattern": "[url:value LIKE 'http://%']"},
            SkipReason.UNSUPPORTED_PATTERN,
            "LIKE",
            id="like",
        ),
        pytest.param(
            {"observable_values": None, "pattern": "[url:value MATCHES '^http']"},
            SkipReason.UNSUPPORTED_PATTERN,
            "MATCHES",
            id="matches",
        ),
        pytest.param(
            {"observable_values": None, "pattern": "[ipv4-addr:value != '8.8.8.8']"},
            SkipReason.UNSUPPORTED_PATTERN,
            "!=",
            id="not-equal",
        ),
        pytest.param(
            {"observable_values": None, "pattern": "[ipv4-addr:value NOT = '8.8.8.8']"},
            SkipReason.UNSUPPORTED_PATTERN,
            "NOT",
            id="negated",
        ),
        pytest.param(
            {"observable_values": None, "pattern": "[ipv4-addr:value IN ('8.8.8.8', '1.1.1.1')]"},
            SkipReason.UNSUPPORTED_PATTERN,
            "IN",
            id="in-set",
        ),
        pytest.param(
            {
                "observable_values": None,
                "pattern": "[ipv4-addr:value = '8.8.8.8'] WITHIN 60 SECONDS",
            },
            SkipReason.UNSUPPORTED_PATTERN,
            "WITHIN",
            id="within",
        ),
        pytest.param(
            {
                "observable_values": None,
                "pattern": "[ipv4-addr:value = '8.8.8.8'] START t'2025-01-01T00:00:00Z' "
                "STOP t'2025-02-01T00:00:00Z'",
            },
            SkipReason.UNSUPPORTED_PATTERN,
            "START",
            id="start-stop",
        ),
        pytest.param(
            {"observable_values": None, "pattern": "[ipv4-addr:value = '8.8.8.8'] REPEATS 5 TIMES"},
            SkipReason.UNSUPPORTED_PATTERN,
            "REPEATS",
            id="repeats",
        ),
        pytest.param(
            {
                "observable_values": None,
                "pattern": "[ipv4-addr:value = '8.8.8.8'] FOLLOWEDBY [url:value = 'http://a.b/']",
            },
            SkipReason.UNSUPPORTED_PATTERN,
            "FOLLOWEDBY",
            id="followedby",
        ),
        pytest.param(
            {
                "observable_values": None,
                "pattern": "[ipv4-addr:value = '8.8.8.8'] AND [url:value = 'http://a.b/']",
            },
            SkipReason.UNSUPPORTED_PATTERN,
            "AND between observations",
            id="and-observations",
        ),
        pytest.param(
            {
                "observable_values": None,
                "pattern": "[ipv4-addr:value = '8.8.8.8' AND url:value = 'http://a.b/']",
            },
            SkipReason.UNSUPPORTED_PATTERN,
            "combines",
            id="and-mixed-types",
        ),
        pytest.param(
            {"observable_values": None, "pattern": "[domain-name:resolves_to_refs[*].value = 'x']"},
            SkipReason.UNSUPPORTED_PATTERN,
            "resolves_to_refs",
            id="non-value-property",
        ),
        pytest.param(
            {"observable_values": None, "pattern": "this is not a pattern"},
            SkipReason.INVALID_PATTERN,
            "",
            id="garbage",
        ),
        pytest.param(
            {"observable_values": None, "pattern": "[ipv4-addr:value = '8.8.8.8'"},
            SkipReason.INVALID_PATTERN,
            "']'",
            id="unclosed-bracket",
        ),
        pytest.param(
            {"observable_values": None, "pattern": "[ipv4-addr:value = '8.8.8.8]"},
            SkipReason.INVALID_PATTERN,
            "unterminated",
            id="unterminated-string",
        ),
        pytest.param(
            {"observable_values": None, "pattern": "[ipv4-addr:value = '8.8.8.8'] junk"},
            SkipReason.INVALID_PATTERN,
            "unexpected",
            id="trailing-junk",
        ),
        pytest.param(
            {"observable_values": [ov("StixFile", MD5="xyz")]},
            SkipReason.INVALID_VALUE,
            "MD5",
            id="bad-hash-chars",
        ),
        pytest.param(
            {"observable_values": [ov("StixFile", SHA_256=SHA1)]},
            SkipReason.INVALID_VALUE,
            "SHA-256",
            id="hash-wrong-length",
        ),
        pytest.param(
            {"observable_values": [ov("IPv4-Addr", "8.8.08.8")]},
            SkipReason.INVALID_VALUE,
            "IP",
            id="ipv4-leading-zero",
        ),
        pytest.param(
            {"observable_values": [ov("IPv4-Addr", "999.1.1.1")]},
            SkipReason.INVALID_VALUE,
            "IP",
            id="ipv4-out-of-range",
        ),
        pytest.param(
            {"observable_values": [ov("Domain-Name", "localhost")]},
            SkipReason.INVALID_VALUE,
            "fully qualified",
            id="single-label-domain",
        ),
        pytest.param(
            {"observable_values": [ov("Domain-Name", "-bad-.example")]},
            SkipReason.INVALID_VALUE,
            "domain",
            id="domain-hyphen",
        ),
        pytest.param(
            {"observable_values": [ov("Domain-Name", "*.evil.example")]},
            SkipReason.INVALID_VALUE,
            "domain",
            id="domain-wildcard",
        ),
        pytest.param(
            {"observable_values": [ov("Domain-Name", ("a" * 64) + ".example")]},
            SkipReason.INVALID_VALUE,
            "domain",
            id="domain-label-too-long",
        ),
        pytest.param(
            {"observable_values": [ov("Url", "http://a.example/x\r\ny")]},
            SkipReason.INVALID_VALUE,
            "control",
            id="url-crlf",
        ),
        pytest.param(
            {"observable_values": [ov("Url", "   ")]},
            SkipReason.INVALID_VALUE,
            "empty",
            id="url-empty",
        ),
        pytest.param(
            {"observable_values": [ov("Url", "ftp://a.example/x")]},
            SkipReason.INVALID_VALUE,
            "scheme",
            id="url-ftp",
        ),
        pytest.param(
            {"observable_values": [ov("IPv4-Addr", "10.0.0.1")]},
            SkipReason.PRIVATE_IP,
            "10.0.0.1",
            id="private-10",
        ),
        pytest.param(
            {"observable_values": [ov("IPv4-Addr", "192.168.1.1")]},
            SkipReason.PRIVATE_IP,
            "192.168.1.1",
            id="private-192-168",
        ),
        pytest.param(
            {"observable_values": [ov("IPv4-Addr", "127.0.0.1")]},
            SkipReason.PRIVATE_IP,
            "",
            id="loopback",
        ),
        pytest.param(
            {"observable_values": [ov("IPv4-Addr", "169.254.1.1")]},
            SkipReason.PRIVATE_IP,
            "",
            id="link-local",
        ),
        pytest.param(
            {"observable_values": [ov("IPv4-Addr", "224.0.0.1")]},
            SkipReason.PRIVATE_IP,
            "",
            id="multicast",
        ),
        pytest.param(
            {"observable_values": [ov("IPv6-Addr", "::1")]},
            SkipReason.PRIVATE_IP,
            "",
            id="v6-loopback",
        ),
        pytest.param(
            {"observable_values": [ov("IPv6-Addr", "fd00::1")]},
            SkipReason.PRIVATE_IP,
            "",
            id="v6-unique-local",
        ),
        pytest.param(
            {"observable_values": [ov("IPv6-Addr", "::ffff:10.1.2.3")]},
            SkipReason.PRIVATE_IP,
            "",
            id="v4-mapped-private",
        ),
        pytest.param(
            {"observable_values": None, "pattern": None},
            SkipReason.NO_VALUE,
            "",
            id="no-values-no-pattern",
        ),
        pytest.param(
            {"observable_values": None, "pattern": "   "},
            SkipReason.NO_VALUE,
            "",
            id="blank-pattern",
        ),
    ],
)
def test_skip_reasons(
    read: Reader,
    make_spec: MakeSpec,
    overrides: dict[str, Any],
    reason: SkipReason,
    detail_part: str,
) -> None:
    ind = read(make_spec(**overrides))
    result = map_indicator(ind, POLICY)
    assert result.desired == ()
    assert reasons_of(result) == [reason]
    (skip,) = result.skipped
    assert detail_part in skip.detail
    assert skip.opencti_id == ind.id
    assert skip.name == ind.name


def test_private_ips_allowed_when_policy_says_so(read: Reader, make_spec: MakeSpec) -> None:
    policy = MappingPolicy(reject_private_ips=False)
    spec = make_spec(observable_values=[ov("IPv4-Addr", "10.0.0.1")])
    assert [k.value for k in keys_of(map_indicator(read(spec), policy))] == ["10.0.0.1"]


@pytest.mark.parametrize(
    "ip", ["192.0.2.10", "198.51.100.7", "203.0.113.45", "2001:db8::1"], ids=str
)
def test_documentation_ranges_are_deployable(read: Reader, make_spec: MakeSpec, ip: str) -> None:
    spec = make_spec(observable_values=[ov("IPv4-Addr", ip)])
    assert len(map_indicator(read(spec), POLICY).desired) == 1


def test_revoked_skips_every_key(read: Reader, make_spec: MakeSpec) -> None:
    values = [ov("IPv4-Addr", "8.8.8.8"), ov("Domain-Name", "a.example")]
    result = map_indicator(read(make_spec(revoked=True, observable_values=values)), POLICY)
    assert result.desired == ()
    assert reasons_of(result) == [SkipReason.REVOKED, SkipReason.REVOKED]
    assert {s.key for s in result.skipped} == {
        IndicatorKey(IndicatorType.IP_ADDRESS, "8.8.8.8"),
        IndicatorKey(IndicatorType.DOMAIN_NAME, "a.example"),
    }


def test_revoked_without_deployable_value(read: Reader, make_spec: MakeSpec) -> None:
    spec = make_spec(revoked=True, observable_values=[ov("Email-Addr", "a@b.example")])
    result = map_indicator(read(spec), POLICY)
    assert [(s.reason, s.key) for s in result.skipped] == [(SkipReason.REVOKED, None)]


@pytest.mark.parametrize(
    ("now", "expired"),
    [
        pytest.param(ts("2025-04-01T08:30:00"), True, id="exactly-at-expiry"),
        pytest.param(ts("2026-01-01T00:00:00"), True, id="after-expiry"),
        pytest.param(ts("2025-04-01T08:29:59"), False, id="one-second-before"),
    ],
)
def test_expired_with_now(read: Reader, make_spec: MakeSpec, now: datetime, expired: bool) -> None:
    ind = read(make_spec())  # updated 2025-03-02T08:30:00.456Z, 30-day cap → 2025-04-01T08:30:00
    result = map_indicator(ind, POLICY, now=now)
    if expired:
        assert result.desired == ()
        (skip,) = result.skipped
        assert skip.reason is SkipReason.EXPIRED
        assert skip.key == IndicatorKey(IndicatorType.IP_ADDRESS, "8.8.8.8")
    else:
        assert len(result.desired) == 1


def test_mapping_without_now_never_expires(read: Reader, make_spec: MakeSpec) -> None:
    spec = make_spec(valid_until="2000-01-01T00:00:00.000Z")
    (d,) = map_indicator(read(spec), POLICY).desired
    assert d.expiration_time == ts("2000-01-01T00:00:00")


# --- expiry ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expire_days", "expected"),
    [
        pytest.param(
            {"valid_until": "2025-03-10T00:00:00.999Z"},
            30,
            ts("2025-03-10T00:00:00"),
            id="valid-until-earlier",
        ),
        pytest.param(
            {"valid_until": "2026-03-10T00:00:00Z"},
            30,
            ts("2025-04-01T08:30:00"),
            id="cap-earlier",
        ),
        pytest.param(
            {"valid_until": "2026-03-10T00:00:00Z"}, 0, ts("2026-03-10T00:00:00"), id="no-cap"
        ),
        pytest.param({"valid_until": None}, 0, None, id="no-cap-no-valid-until"),
        pytest.param(
            {"valid_until": None, "updated_at": None},
            10,
            ts("2025-03-11T10:00:01"),
            id="cap-from-created-at",
        ),
        pytest.param(
            {"valid_until": None, "updated_at": None, "created_at": None},
            10,
            None,
            id="no-timestamps",
        ),
    ],
)
def test_expiration_time(
    read: Reader,
    make_spec: MakeSpec,
    overrides: dict[str, Any],
    expire_days: int,
    expected: datetime | None,
) -> None:
    policy = MappingPolicy(expire_days=expire_days)
    (d,) = map_indicator(read(make_spec(**overrides)), policy).desired
    assert d.expiration_time == expected


# --- text fields, metadata ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "action", "educate"),
    [
        pytest.param([ov("Url", "http://a.example/")], Action.BLOCK, True, id="url-block"),
        pytest.param([ov("Url", "http://a.example/")], Action.WARN, True, id="url-warn"),
        pytest.param([ov("Url", "http://a.example/")], Action.AUDIT, False, id="url-audit"),
        pytest.param([ov("Url", "http://a.example/")], Action.ALERT, False, id="url-alert"),
        pytest.param([ov("Domain-Name", "a.example")], Action.BLOCK, False, id="domain-block"),
        pytest.param([ov("IPv4-Addr", "8.8.8.8")], Action.WARN, False, id="ip-warn"),
    ],
)
def test_educate_url_only_for_url_block_warn(
    read: Reader, make_spec: MakeSpec, values: Any, action: Action, educate: bool
) -> None:
    policy = MappingPolicy(action=action, educate_url="https://intranet.example/why")
    (d,) = map_indicator(read(make_spec(observable_values=values)), policy).desired
    assert d.educate_url == ("https://intranet.example/why" if educate else None)


@pytest.mark.parametrize(
    ("name", "title"),
    [
        pytest.param("C2 server", "C2 server", id="name"),
        pytest.param(None, "8.8.8.8", id="fallback-to-value"),
        pytest.param("   ", "8.8.8.8", id="blank-name-fallback"),
        pytest.param("x" * 500, "x" * (TITLE_LIMIT - 1) + "…", id="cut"),
        pytest.param("y" * TITLE_LIMIT, "y" * TITLE_LIMIT, id="exactly-limit"),
    ],
)
def test_title(read: Reader, make_spec: MakeSpec, name: str | None, title: str) -> None:
    (d,) = map_indicator(read(make_spec(name=name)), POLICY).desired
    assert d.title == title
    assert len(d.title) <= TITLE_LIMIT


@pytest.mark.parametrize(
    ("description", "labels", "expected"),
    [
        pytest.param(None, [], "Labels: opencti", id="nothing"),
        pytest.param("C2", ["c2", "apt", "c2"], "C2\nLabels: opencti, apt, c2", id="sorted-dedup"),
        pytest.param(None, ["opencti", "b"], "Labels: opencti, b", id="opencti-not-twice"),
        pytest.param("  text  ", ["z"], "text\nLabels: opencti, z", id="stripped"),
    ],
)
def test_description_labels(
    read: Reader, make_spec: MakeSpec, description: str | None, labels: list[str], expected: str
) -> None:
    spec = make_spec(description=description, labels=labels)
    (d,) = map_indicator(read(spec), POLICY).desired
    assert d.description == expected


def test_description_cut_keeps_labels_line(read: Reader, make_spec: MakeSpec) -> None:
    spec = make_spec(description="d" * 5000, labels=["alpha", "beta"])
    (d,) = map_indicator(read(spec), POLICY).desired
    assert len(d.description) == DESCRIPTION_LIMIT
    assert d.description.endswith("…\nLabels: opencti, alpha, beta")


def test_fields_and_metadata(read: Reader, make_spec: MakeSpec) -> None:
    policy = MappingPolicy(
        ownership_tag="octi-recon",
        rbac_group_names=("Servers", "Laptops", "Servers"),
        recommended_actions="Isolate the host",
    )
    spec = make_spec(id="ind-1", labels=["c2"], description="Team server")
    (d,) = map_indicator(read(spec), policy).desired
    assert d.to_body() == {
        "indicatorValue": "8.8.8.8",
        "indicatorType": "IpAddress",
        "action": "Block",
        "title": "Cobalt Strike team server",
        "description": "Team server\nLabels: opencti, c2",
        "severity": "High",
        "application": "octi-recon",
        "externalId": "ind-1",
        "generateAlert": True,
        "rbacGroupNames": ["Laptops", "Servers"],
        "expirationTime": "2025-04-01T08:30:00Z",
        "recommendedActions": "Isolate the host",
    }
    assert d.score == 80
    assert d.updated_at == ts("2025-03-02T08:30:00")
    assert d.opencti_ids == ("ind-1",)


# --- readers -----------------------------------------------------------------------------------


def test_graphql_and_stix_give_identical_specs(
    make_spec: MakeSpec, render: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]
) -> None:
    specs = [
        make_spec(),
        make_spec(
            id="f1",
            name="invoice.exe",
            description="dropper",
            labels=["malware", "emotet"],
            score=45,
            valid_until="2025-03-20T00:00:00Z",
            pattern=f"[file:hashes.'SHA-256' = '{SHA256}' OR file:hashes.MD5 = '{MD5}']",
            observable_values=[ov("StixFile", SHA_256=SHA256), ov("StixFile", MD5=MD5)],
        ),
        make_spec(id="u1", score=None, observable_values=None, pattern="[url:value = 'a.b/c']"),
        make_spec(id="d1", score=10, observable_values=[ov("Hostname", "Bücher.Example.")]),
    ]
    for spec in specs:
        via_graphql = indicator_from_graphql(render["graphql"](spec))
        via_stix = indicator_from_stix(render["stix"](spec))
        assert via_graphql == via_stix
        assert isinstance(via_graphql, OpenCTIIndicator)
        assert isinstance(via_stix, OpenCTIIndicator)
        left = map_indicator(via_graphql, POLICY)
        right = map_indicator(via_stix, POLICY)
        assert left == right
        assert left.desired


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({"type": "malware", "id": "malware--1"}, id="not-indicator"),
        pytest.param({"type": "indicator", "id": "indicator--1"}, id="no-extension"),
        pytest.param(
            {"type": "indicator", "id": "indicator--1", "extensions": {OCTI_EXTENSION: {}}},
            id="extension-without-id",
        ),
        pytest.param({"type": "indicator", "extensions": "nope"}, id="bad-extensions"),
        pytest.param([], id="not-a-dict"),
    ],
)
def test_stix_reader_skips(obj: Any) -> None:
    result = indicator_from_stix(obj)
    assert isinstance(result, Skipped)
    assert result.reason is SkipReason.NO_VALUE
    assert result.detail


@pytest.mark.parametrize(
    "node",
    [
        pytest.param({"id": "x", "entity_type": "Malware"}, id="not-indicator"),
        pytest.param({"entity_type": "Indicator"}, id="no-id"),
        pytest.param({"id": ""}, id="empty-id"),
        pytest.param(None, id="none"),
    ],
)
def test_graphql_reader_skips(node: Any) -> None:
    result = indicator_from_graphql(node)
    assert isinstance(result, Skipped)
    assert result.reason is SkipReason.NO_VALUE


def test_stix_reader_uses_top_level_x_opencti_fallbacks() -> None:
    obj = {
        "type": "indicator",
        "id": "indicator--1",
        "pattern": "[ipv4-addr:value = '8.8.8.8']",
        "x_opencti_score": 70,
        "x_opencti_detection": True,
        "extensions": {OCTI_EXTENSION: {"id": "abc"}},
    }
    ind = indicator_from_stix(obj)
    assert isinstance(ind, OpenCTIIndicator)
    assert (ind.id, ind.standard_id, ind.score, ind.detection) == ("abc", "indicator--1", 70, True)


def test_graphql_reader_tolerates_odd_field_types() -> None:
    node = {
        "id": "x",
        "entity_type": "Indicator",
        "x_opencti_score": "55",
        "revoked": "false",
        "valid_until": "not a date",
        "objectLabel": [{"id": "1", "value": "a"}, None, "b", {"value": 3}],
        "x_opencti_observable_values": [
            None,
            {"type": None, "value": "1.1.1.1"},
            {"type": "IPv4-Addr", "value": "8.8.8.8", "hashes": None},
        ],
    }
    ind = indicator_from_graphql(node)
    assert isinstance(ind, OpenCTIIndicator)
    assert (ind.score, ind.revoked, ind.valid_until, ind.labels) == (55, False, None, ("a", "b"))
    assert [v.value for v in ind.observable_values] == ["8.8.8.8"]


# --- merging ------------------------------------------------------------------------------------


def desired(
    ident: str, score: int, updated: str | None, action: Action = Action.BLOCK
) -> DesiredIndicator:
    return DesiredIndicator(
        indicator_type=IndicatorType.DOMAIN_NAME,
        indicator_value="a.example",
        action=action,
        severity=Severity.HIGH,
        title=f"from {ident}",
        description="",
        application="opencti",
        external_id=ident,
        score=score,
        updated_at=updated,
        opencti_ids=(ident,),
    )


@pytest.mark.parametrize(
    ("items", "winner"),
    [
        pytest.param(
            [desired("a", 50, "2025-01-02T00:00:00Z"), desired("b", 90, "2025-01-01T00:00:00Z")],
            "b",
            id="highest-score",
        ),
        pytest.param(
            [desired("a", 50, "2025-01-01T00:00:00Z"), desired("b", 50, "2025-01-02T00:00:00Z")],
            "b",
            id="tie-newest-update",
        ),
        pytest.param(
            [desired("b", 50, "2025-01-01T00:00:00Z"), desired("a", 50, "2025-01-01T00:00:00Z")],
            "a",
            id="tie-smallest-id",
        ),
        pytest.param(
            [desired("a", 50, None), desired("b", 50, "2025-01-01T00:00:00Z")],
            "b",
            id="missing-update-loses",
        ),
        pytest.param(
            [
                desired("c", 10, "2025-06-01T00:00:00Z"),
                desired("b", 70, "2025-01-01T00:00:00Z"),
                desired("a", 70, "2025-01-01T00:00:00Z"),
                desired("d", 70, "2024-01-01T00:00:00Z"),
            ],
            "a",
            id="four-way",
        ),
    ],
)
def test_merge_winner_any_order(items: list[DesiredIndicator], winner: str) -> None:
    results = {tuple(merge_desired(list(perm)).items()) for perm in itertools.permutations(items)}
    assert len(results) == 1
    ((key, merged),) = results.pop()
    assert key == IndicatorKey(IndicatorType.DOMAIN_NAME, "a.example")
    assert merged.external_id == winner
    assert merged.title == f"from {winner}"
    assert merged.opencti_ids == tuple(sorted(i.external_id for i in items))


def test_merge_keeps_distinct_keys_sorted() -> None:
    a = desired("a", 50, None)
    b = a.model_copy(update={"indicator_value": "0.example", "external_id": "b"})
    assert list(merge_desired([a, b])) == [b.key, a.key]


def spec_for(
    make_spec: MakeSpec, ident: str, score: int, updated: str, **kw: Any
) -> dict[str, Any]:
    return make_spec(id=ident, name=ident, score=score, updated_at=updated, **kw)


def test_build_desired_merges_reports_and_expires(read: Reader, make_spec: MakeSpec) -> None:
    shared = [ov("Domain-Name", "shared.example")]
    indicators: list[OpenCTIIndicator | Skipped] = [
        read(spec_for(make_spec, "low", 20, "2025-03-05T00:00:00Z", observable_values=shared)),
        read(spec_for(make_spec, "high", 90, "2025-03-01T00:00:00Z", observable_values=shared)),
        read(
            spec_for(
                make_spec,
                "gone",
                90,
                "2025-03-01T00:00:00Z",
                revoked=True,
                observable_values=[ov("Domain-Name", "gone.example"), *shared],
            )
        ),
        read(
            spec_for(
                make_spec,
                "old",
                90,
                "2024-01-01T00:00:00Z",
                observable_values=[ov("IPv4-Addr", "9.9.9.9")],
            )
        ),
        Skipped(opencti_id="bad", reason=SkipReason.NO_VALUE, detail="not an indicator"),
    ]
    now = ts("2025-03-10T00:00:00")
    runs = []
    for seed in range(5):
        shuffled = indicators[:]
        random.Random(seed).shuffle(shuffled)
        runs.append(build_desired(shuffled, POLICY, now=now))
    assert all(run == runs[0] for run in runs)
    state = runs[0]

    shared_key = IndicatorKey(IndicatorType.DOMAIN_NAME, "shared.example")
    gone_key = IndicatorKey(IndicatorType.DOMAIN_NAME, "gone.example")
    old_key = IndicatorKey(IndicatorType.IP_ADDRESS, "9.9.9.9")
    assert list(state.desired) == [shared_key]
    assert state.desired[shared_key].external_id == "high"
    assert state.desired[shared_key].opencti_ids == ("high", "low")
    by_reason = {(s.opencti_id, s.reason, s.key) for s in state.skipped}
    assert ("low", SkipReason.SUPERSEDED, shared_key) in by_reason
    assert ("gone", SkipReason.REVOKED, gone_key) in by_reason
    assert ("old", SkipReason.EXPIRED, old_key) in by_reason
    assert ("bad", SkipReason.NO_VALUE, None) in by_reason
    # The revoked indicator's shared key is still wanted by "high": not expired.
    assert list(state.expired_keys) == [gone_key, old_key]
    assert state.expired_keys[gone_key].reason is SkipReason.REVOKED


def test_build_desired_without_now_keeps_old(read: Reader, make_spec: MakeSpec) -> None:
    ind = read(make_spec(updated_at="2001-01-01T00:00:00Z"))
    state = build_desired([ind], POLICY)
    assert len(state.desired) == 1
    assert state.expired_keys == {}


def test_policy_keeps_rbac_groups_sorted_and_unique() -> None:
    policy = MappingPolicy(rbac_group_names=("b", " a", "", "a "))
    assert policy.rbac_group_names == ("a", "b")
    with pytest.raises(ValueError, match="expire_days"):
        MappingPolicy(expire_days=-1)


def test_mapping_is_a_pure_function(read: Reader, make_spec: MakeSpec) -> None:
    ind = read(make_spec(labels=["b", "a"]))
    assert map_indicator(ind, POLICY) == map_indicator(replace(ind), POLICY)


@pytest.mark.parametrize(
    "policy",
    [
        POLICY,
        MappingPolicy(
            rbac_group_names=("SOC", "Tier 2"),
            recommended_actions="Isolate the device",
            educate_url="https://intranet.example/blocked",
            expire_days=0,
        ),
    ],
    ids=["defaults", "every-option"],
)
def test_mapped_specs_and_skips_equal_their_validated_twins(policy: MappingPolicy) -> None:
    """Mapping builds specs and skips without validation (speed, memory): each must be exactly
    what pydantic would have built, field by field and type by type."""
    from reconciler.sandbox.dataset import generate_indicators
    from reconciler.sandbox.opencti import OpenCTIEmulator

    now = datetime(2026, 6, 1, tzinfo=UTC)
    records = generate_indicators(600, seed=11, now=now)
    specs: list[Any] = []
    skips: list[Any] = []
    for record in records:
        parsed = indicator_from_graphql(OpenCTIEmulator.graphql_node(record))
        assert isinstance(parsed, OpenCTIIndicator)
        result = map_indicator(parsed, policy, now)
        specs.extend(result.desired)
        skips.extend(result.skipped)
    assert len(specs) > 200 and {s.reason for s in skips} >= {
        SkipReason.INVALID_VALUE,
        SkipReason.EXPIRED,
        SkipReason.REVOKED,
    }
    for built in [*specs, *skips]:
        cls = type(built)
        twin = cls(**{name: getattr(built, name) for name in cls.model_fields})
        assert built == twin
        assert list(built.__dict__) == list(twin.__dict__)
        for name in cls.model_fields:
            mine, theirs = getattr(built, name), getattr(twin, name)
            assert type(mine) is type(theirs), (name, mine, theirs)
            if isinstance(mine, tuple):
                assert [type(v) for v in mine] == [type(v) for v in theirs], name
