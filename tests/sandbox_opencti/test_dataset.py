"""The seeded indicator dataset: reproducible, varied, unique, with the awkward cases."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from reconciler.sandbox.dataset import (
    DEFAULT_NOW,
    generate_indicators,
    observables_from_pattern,
    parse_date,
)


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return generate_indicators(5000, seed=1)


def test_same_seed_same_records() -> None:
    assert generate_indicators(300, seed=9) == generate_indicators(300, seed=9)
    assert generate_indicators(300, seed=9) != generate_indicators(300, seed=10)


def test_every_type_is_present(records: list[dict[str, Any]]) -> None:
    types = Counter(r["main_observable_type"] for r in records)
    for name in ("IPv4-Addr", "IPv6-Addr", "Domain-Name", "Hostname", "Url", "StixFile"):
        assert types[name] > 50, name
    assert types["Email-Addr"] > 0
    kinds = Counter(r["pattern_type"] for r in records)
    assert kinds["yara"] > 0 and kinds["sigma"] > 0


def test_awkward_values_are_present(records: list[dict[str, Any]]) -> None:
    patterns = [r["pattern"] for r in records]
    assert any("file:hashes.'SHA-256'" in p and "file:hashes.MD5" in p for p in patterns)
    assert any("file:hashes.'SHA-1'" in p for p in patterns)
    assert any(p.count("ipv4-addr:value") > 1 and " OR " in p for p in patterns)
    urls = [r["name"] for r in records if r["main_observable_type"] == "Url"]
    assert any("'" in u for u in urls) and any("#" in u and "%" in u for u in urls)
    assert any(not u.isascii() for u in urls)
    domains = [r["name"] for r in records if r["main_observable_type"] == "Domain-Name"]
    assert any(not d.isascii() for d in domains)


def test_malformed_share_is_small(records: list[dict[str, Any]]) -> None:
    broken = [
        r
        for r in records
        if r["pattern_type"] == "stix"
        and (not r["pattern"].endswith("]") or r["name"].startswith(("999.", "bad-hash", "empty")))
    ]
    assert 0.005 * len(records) < len(broken) < 0.03 * len(records)


def test_scores_cover_the_boundaries(records: list[dict[str, Any]]) -> None:
    scores = {r["score"] for r in records}
    assert {0, 1, 29, 30, 59, 60, 100, None} <= scores
    assert all(s is None or 0 <= s <= 100 for s in scores)


def test_dates_revocation_and_expiry(records: list[dict[str, Any]]) -> None:
    assert all(parse_date(r["created_at"]) < DEFAULT_NOW for r in records)
    assert all(r["created_at"] <= r["updated_at"] for r in records)
    until = [parse_date(r["valid_until"]) for r in records if r["valid_until"]]
    assert sum(u < DEFAULT_NOW for u in until) > 0
    assert sum(u > DEFAULT_NOW for u in until) > 0.8 * len(records)
    assert any(r["valid_until"] is None for r in records)
    assert 0 < sum(r["revoked"] for r in records) < 0.05 * len(records)


def test_now_moves_the_dates() -> None:
    later = datetime(2030, 6, 1, tzinfo=UTC)
    assert all(parse_date(r["created_at"]) < later for r in generate_indicators(50, now=later))
    assert generate_indicators(50)[0]["created_at"] < "2026-01-01"


def test_ids_and_values_are_unique_except_deliberate_duplicates() -> None:
    records = generate_indicators(20_000, seed=3)
    assert len({r["id"] for r in records}) == 20_000
    assert len({r["standard_id"] for r in records}) == 20_000
    patterns = Counter(r["pattern"] for r in records if r["pattern_type"] == "stix")
    repeated = [
        p for p, n in patterns.items() if n > 1 and not p.startswith("[domain-name:value = ''")
    ]
    assert 50 < len(repeated) < 400  # ~1 % duplicates
    same = [r for r in records if r["pattern"] == repeated[0]]
    assert len({r["score"] for r in same}) > 1


def test_observables_from_pattern() -> None:
    assert observables_from_pattern("[url:value = 'http://a/it\\'s?x=1']") == [
        {"type": "Url", "value": "http://a/it's?x=1"}
    ]
    assert observables_from_pattern("[file:hashes.'SHA-256' = 'aa' OR file:hashes.MD5 = 'bb']") == [
        {"type": "StixFile", "hashes": {"SHA-256": "aa"}},
        {"type": "StixFile", "hashes": {"MD5": "bb"}},
    ]
    assert observables_from_pattern("[ipv4-addr:value = '1.2.3.4'") == []


def test_most_indicators_were_updated_lately(records: list[dict[str, Any]]) -> None:
    recent = [r for r in records if (DEFAULT_NOW - parse_date(r["updated_at"])).days < 21]
    assert 0.6 * len(records) < len(recent) < 0.85 * len(records)
    assert all(parse_date(r["updated_at"]) <= DEFAULT_NOW for r in records)
