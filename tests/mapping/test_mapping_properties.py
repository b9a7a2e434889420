"""Property tests for ``reconciler.mapping``: the readers and the mapper are total (arbitrary
input gives an indicator or a ``Skipped``, never an exception) and deterministic."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.mapping import (
    OCTI_EXTENSION,
    MappingPolicy,
    MappingResult,
    ObservableValue,
    OpenCTIIndicator,
    PatternRejected,
    build_desired,
    indicator_from_graphql,
    indicator_from_stix,
    map_indicator,
    merge_desired,
    parse_stix_pattern,
)
from reconciler.model import Skipped, SkipReason


def assert_no_safety_net(skips: Any) -> None:
    """The catch-alls in mapping exist for totality; a property run must never reach them."""
    for skip in skips:
        assert not skip.detail.startswith(("mapping failed", "unreadable")), skip


FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

# Fragments that look like STIX patterns, so the parser gets past the first character.
pattern_parts = st.sampled_from(
    [
        "[",
        "]",
        "(",
        ")",
        " ",
        "OR",
        "AND",
        "FOLLOWEDBY",
        "WITHIN 5 SECONDS",
        "REPEATS 2 TIMES",
        "START t'2025-01-01T00:00:00Z' STOP",
        "ipv4-addr:value",
        "ipv6-addr:value",
        "domain-name:value",
        "url:value",
        "file:hashes.MD5",
        "file:hashes.'SHA-256'",
        "email-addr:value",
        "x:y[*].z",
        "=",
        "!=",
        "LIKE",
        "IN",
        "NOT",
        "'8.8.8.8'",
        "'10.0.0.1'",
        "'a.example'",
        "'http://a.example/'",
        "'098f6bcd4621d373cade4e832627b4f6'",
        "'",
        "\\",
        "5",
        ",",
    ]
)
patterns = st.one_of(
    st.text(max_size=60),
    st.lists(pattern_parts, max_size=14).map(" ".join),
    st.lists(pattern_parts, max_size=14).map("".join),
)
obs_types = st.sampled_from(
    ["IPv4-Addr", "IPv6-Addr", "Domain-Name", "Hostname", "Url", "StixFile", "Artifact", "Mutex"]
)
obs_values = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.sampled_from(["8.8.8.8", "::1", "10.0.0.0/8", "bücher.example", "http://a.b/c", "a..b"]),
)
hashes = st.dictionaries(
    st.sampled_from(["MD5", "SHA-1", "SHA256", "sha-256", "'SHA-256'", "SHA-512", "X"]),
    st.one_of(st.text(max_size=70), st.text(alphabet="0123456789abcdefABCDEF", min_size=32)),
    max_size=3,
)
datetimes = st.none() | st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)
indicators = st.builds(
    OpenCTIIndicator,
    id=st.text(min_size=1, max_size=12),
    name=st.none() | st.text(max_size=300),
    description=st.none() | st.text(max_size=50),
    pattern=st.none() | patterns,
    pattern_type=st.none() | st.sampled_from(["stix", "STIX", "yara", "sigma", ""]),
    score=st.none() | st.integers(min_value=-1000, max_value=1000),
    revoked=st.booleans(),
    valid_until=datetimes,
    created_at=datetimes,
    updated_at=datetimes,
    labels=st.lists(st.text(max_size=8), max_size=4).map(tuple),
    observable_values=st.lists(
        st.builds(ObservableValue, type=obs_types, value=obs_values, hashes=hashes), max_size=4
    ).map(tuple),
)
policies = st.builds(
    MappingPolicy,
    expire_days=st.integers(min_value=0, max_value=3650),
    passive_only=st.booleans(),
    reject_private_ips=st.booleans(),
)


def stix_like() -> st.SearchStrategy[Any]:
    """Dicts shaped roughly like a stream indicator, with arbitrary JSON in every slot."""
    ext = st.fixed_dictionaries(
        {},
        optional={
            "id": json_values | st.text(min_size=1, max_size=10),
            "score": json_values,
            "updated_at": json_values,
            "created_at": json_values,
            "observable_values": json_values
            | st.lists(
                st.fixed_dictionaries(
                    {"type": json_values | obs_types},
                    optional={"value": json_values | obs_values, "hashes": json_values | hashes},
                ),
                max_size=3,
            ),
            "main_observable_type": json_values,
            "detection": json_values,
        },
    )
    return st.fixed_dictionaries(
        {"type": st.just("indicator") | json_values},
        optional={
            "id": json_values,
            "pattern": json_values | patterns,
            "pattern_type": json_values | st.just("stix"),
            "labels": json_values,
            "name": json_values,
            "revoked": json_values,
            "valid_until": json_values,
            "extensions": json_values | st.fixed_dictionaries({OCTI_EXTENSION: ext}),
        },
    )


def graphql_like() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"id": json_values | st.text(min_size=1, max_size=10)},
        optional={
            "entity_type": st.just("Indicator") | json_values,
            "pattern": json_values | patterns,
            "pattern_type": json_values,
            "x_opencti_score": json_values,
            "x_opencti_observable_values": json_values,
            "objectLabel": json_values,
            "revoked": json_values,
            "updated_at": json_values,
            "valid_until": json_values,
        },
    )


@FAST
@given(obj=json_values | stix_like())
def test_indicator_from_stix_is_total(obj: Any) -> None:
    result = indicator_from_stix(obj)
    assert isinstance(result, OpenCTIIndicator | Skipped)
    if isinstance(result, Skipped):
        assert_no_safety_net([result])
    else:
        mapped = map_indicator(result, MappingPolicy())
        assert isinstance(mapped, MappingResult)
        assert_no_safety_net(mapped.skipped)


@FAST
@given(node=json_values | graphql_like())
def test_indicator_from_graphql_is_total(node: Any) -> None:
    result = indicator_from_graphql(node)
    assert isinstance(result, OpenCTIIndicator | Skipped)
    if isinstance(result, Skipped):
        assert_no_safety_net([result])
    else:
        mapped = map_indicator(result, MappingPolicy())
        assert isinstance(mapped, MappingResult)
        assert_no_safety_net(mapped.skipped)


@FAST
@given(pattern=patterns)
def test_pattern_parser_raises_only_its_value_error(pattern: str) -> None:
    try:
        values = parse_stix_pattern(pattern)
    except PatternRejected as exc:
        assert exc.reason in {SkipReason.INVALID_PATTERN, SkipReason.UNSUPPORTED_PATTERN}
        assert exc.detail
    except RecursionError:
        pass  # map_indicator turns this into invalid_pattern
    else:
        assert all(isinstance(v, ObservableValue) for v in values)


@FAST
@given(ind=indicators, policy=policies, now=datetimes)
def test_map_indicator_is_total_and_deterministic(
    ind: OpenCTIIndicator, policy: MappingPolicy, now: datetime | None
) -> None:
    first = map_indicator(ind, policy, now=now)
    second = map_indicator(ind, policy, now=now)
    assert first == second
    assert_no_safety_net(first.skipped)
    for d in first.desired:
        assert d.external_id == ind.id
        assert d.key.value == d.key.value.strip() and d.key.value
        assert len(d.title) <= 200 and len(d.description) <= 1000
        assert d.action.value != "Audit" or d.generate_alert
        if now is not None and d.expiration_time is not None:
            assert d.expiration_time > now
    # A mapping never mixes a deployed key with a skip for that same key.
    deployed = {d.key for d in first.desired}
    assert not any(s.key in deployed for s in first.skipped if s.key is not None)


@FAST
@given(items=st.lists(indicators, max_size=6), policy=policies, seed=st.integers())
def test_build_desired_ignores_input_order(
    items: list[OpenCTIIndicator], policy: MappingPolicy, seed: int
) -> None:
    shuffled = items[:]
    random.Random(seed).shuffle(shuffled)
    left = build_desired(items, policy)
    right = build_desired(shuffled, policy)
    assert left == right
    assert list(left.desired) == sorted(left.desired)
    all_desired = [d for ind in items for d in map_indicator(ind, policy).desired]
    assert merge_desired(all_desired) == left.desired
    assert not set(left.expired_keys) & set(left.desired)
