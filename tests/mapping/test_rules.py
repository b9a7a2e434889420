"""The policy's parts one by one: the rule book (its explanation agrees with its choice), the
exclusions' look-ups, what the mapping dataclasses refuse, the readers' markings and author,
and ``keys_for`` / ``trace_indicator`` behind ``plan --explain``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from reconciler.mapping import (
    BY_SCORE,
    Exclusion,
    ExclusionSet,
    MappingPolicy,
    ObservableValue,
    OpenCTIIndicator,
    Rule,
    RuleMatch,
    indicator_from_graphql,
    indicator_from_stix,
    keys_for,
    map_indicator,
    trace_indicator,
)
from reconciler.model import Action, IndicatorKey, IndicatorType, Severity
from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.opencti import OpenCTIEmulator

NOW = datetime(2026, 3, 1, tzinfo=UTC)
IP = IndicatorType.IP_ADDRESS


def twenty_rules() -> tuple[Rule, ...]:
    """Twenty rules over what the generated dataset holds (labels, TLP markings, authors,
    scores, types), most of them reachable."""
    labels = ("malware", "c2", "phishing", "botnet", "edr-block", "tor-exit")
    rules: list[Rule] = []
    for i, label in enumerate(labels):
        rules.append(
            Rule(
                f"label-{label}",
                RuleMatch(labels=(label,), score_min=30 + i * 10),
                action=Action.WARN,
            )
        )
    for tlp in ("TLP:RED", "TLP:AMBER"):
        rules.append(
            Rule(
                f"marking-{tlp}",
                RuleMatch(markings=(tlp,), types=("IpAddress",)),
                action=Action.AUDIT,
            )
        )
    for author in ("CIRCL", "AlienVault", "abuse.ch"):
        rules.append(
            Rule(
                f"author-{author}",
                RuleMatch(authors=(author,), score_max=59),
                severity=Severity.LOW,
            )
        )
    for kind in ("Url", "Domain-Name", "FileSha256", "IPv6-Addr"):
        rules.append(Rule(f"type-{kind}", RuleMatch(types=(kind,), score_min=90), action=BY_SCORE))
    rules.append(
        Rule("internal-soc-off", RuleMatch(authors=("Internal SOC",), labels=("c2",)), deploy=False)
    )
    rules.append(Rule("low-scores", RuleMatch(score_max=10), expire_days=3))
    rules.append(
        Rule(
            "amber-files",
            RuleMatch(markings=("TLP:AMBER",), types=("StixFile",)),
            action=Action.BLOCK_AND_REMEDIATE,
        )
    )
    rules.append(
        Rule(
            "green-hosts",
            RuleMatch(markings=("TLP:GREEN",), types=("Hostname",)),
            rbac_group_names=("Servers",),
        )
    )
    rules.append(
        Rule("stix", RuleMatch(pattern_types=("stix",), score_min=100), generate_alert=False)
    )
    return tuple(rules)


@pytest.fixture(scope="module")
def dataset() -> list[OpenCTIIndicator]:
    records = generate_indicators(2000, seed=11, now=NOW)
    out = []
    for record in records:
        item = indicator_from_graphql(OpenCTIEmulator.graphql_node(record))
        assert isinstance(item, OpenCTIIndicator)
        out.append(item)
    return out


def test_twenty_rules() -> None:
    assert len(twenty_rules()) == 20


def test_trace_agrees_with_the_mapping_on_generated_data(dataset: list[OpenCTIIndicator]) -> None:
    policy = MappingPolicy(rules=twenty_rules())
    used: set[str] = set()
    for ind in dataset:
        result = map_indicator(ind, policy, NOW)
        for spec in result.desired:
            trace = trace_indicator(ind, {spec.key}, policy, NOW)
            [value] = trace.values
            chosen = [t.rule for t in value.rules if t.chosen]
            assert chosen == [spec.rule], (ind.id, spec.key)
            # Every rule's verdict, condition by condition, is what the fast path says.
            book = policy.rule_book
            candidates = book.candidates(ind)
            assert book.pick(candidates, spec.key.type, value.observable_type).rule == spec.rule
            used.add(spec.rule)
    assert len(used) >= 10, used  # the data exercises most rules, the default one included
    assert "default" in used


def test_trace_lines_say_why() -> None:
    ind = OpenCTIIndicator(
        id="x", score=85, labels=("c2",), markings=("TLP:AMBER",), author="CIRCL"
    )
    policy = MappingPolicy(
        rules=(
            Rule("partners", RuleMatch(labels=("partner",)), action=Action.WARN),
            Rule("c2", RuleMatch(labels=("c2", "botnet"), score_min=80, types=("IpAddress",))),
        )
    )
    traces = policy.rule_book.trace(ind, IP, "IPv4-Addr")
    assert [(t.rule, t.matched, t.chosen) for t in traces] == [
        ("partners", False, False),
        ("c2", True, True),
        ("default", True, False),
    ]
    assert traces[0].why == ("labels: none of partner (has c2)",)
    assert traces[1].why == (
        "labels: has c2",
        "score 85 in 80..100",
        "type IpAddress (IPv4-Addr) is one of IpAddress",
    )


# -- exclusions ----------------------------------------------------------------------------


def hit(
    exclusions: ExclusionSet, kind: IndicatorType, value: str, obs: ObservableValue | None = None
) -> str | None:
    found = exclusions.match(IndicatorKey(kind, value), obs)
    return None if found is None else found.name


NESTED = ExclusionSet(
    (
        Exclusion("branch", cidrs=("10.1.2.0/24",)),
        Exclusion("corporate", cidrs=("10.0.0.0/8", "10.1.2.128/25", "2001:db8::/32")),
        Exclusion("single", cidrs=("10.9.9.9",)),
    )
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.1.2.200", "branch"),  # nested in three blocks: the first configured names it
        ("10.1.2.0", "branch"),
        ("10.1.3.0", "corporate"),
        ("10.255.255.255", "corporate"),
        ("11.0.0.0", None),
        ("9.255.255.255", None),
        ("10.9.9.9", "corporate"),  # also "single", configured after it
        ("0000:0000:0000:0000:0000:ffff:0a01:0203", "branch"),  # IPv4-mapped IPv6
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "corporate"),
        ("2001:0db9:0000:0000:0000:0000:0000:0001", None),
    ],
)
def test_cidrs_by_bisection(value: str, expected: str | None) -> None:
    assert hit(NESTED, IP, value) == expected


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        (IndicatorType.DOMAIN_NAME, "example.org", "own"),
        (IndicatorType.DOMAIN_NAME, "a.b.example.org", "own"),
        (IndicatorType.DOMAIN_NAME, "badexample.org", None),
        (IndicatorType.DOMAIN_NAME, "xn--bcher-kva.example.net", "own"),
        (IndicatorType.URL, "https://www.example.org/x", "own"),
        (IndicatorType.URL, "user@www.example.org:8443/x", "own"),
        (IndicatorType.URL, "http://[2001:db8::1]/x", "own"),
        (IndicatorType.URL, "HTTP://Intranet.Example.COM/app/login", "own"),
        (IndicatorType.URL, "https://intranet.example.com/App/login", None),  # path: case kept
        (IndicatorType.URL, "https://intranet.example.com/other", None),
        (IndicatorType.URL, "https://203.0.113.9/x", None),
        (IndicatorType.FILE_MD5, "44d88612fea8a8f36de82e1278abb02f", "own"),
    ],
)
def test_domains_urls_hashes(kind: IndicatorType, value: str, expected: str | None) -> None:
    exclusions = ExclusionSet(
        (
            Exclusion(
                "own",
                cidrs=("2001:db8::/32",),
                domains=("*.example.org", "Bücher.example.net"),
                url_prefixes=("https://intranet.example.com/app/",),
                hashes=("44D88612FEA8A8F36DE82E1278ABB02F",),
            ),
        )
    )
    assert hit(exclusions, kind, value) == expected


@pytest.mark.parametrize(
    ("exclusion", "message"),
    [
        (Exclusion("bad", cidrs=("10.0.0.0/33",)), "exclusion 'bad': not a CIDR range"),
        (Exclusion("bad", domains=("exa mple.org",)), "exclusion 'bad': not a domain name"),
        (
            Exclusion("bad", url_prefixes=("https:///x",)),
            "exclusion 'bad': a URL prefix needs a host",
        ),
        (Exclusion("bad", hashes=("abc",)), "exclusion 'bad': not an MD5, SHA-1 or SHA-256 hash"),
        (Exclusion(" "), "an exclusion needs a name"),
    ],
)
def test_bad_exclusions_are_refused_naming_them(exclusion: Exclusion, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MappingPolicy(exclusions=(exclusion,))


# -- what the rules refuse -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: Rule("r", deploy=False, action=Action.BLOCK),
            "rule 'r': deploy: false deploys nothing",
        ),
        (
            lambda: Rule("r", action=Action.AUDIT, generate_alert=False),
            "rule 'r': action Audit always raises",
        ),
        (
            lambda: Rule("r", action=Action.ALERT, generate_alert=False),
            "rule 'r': action Alert always raises",
        ),
        (lambda: Rule("r", expire_days=-1), "rule 'r': expire_time must be >= 0"),
        (lambda: Rule(" "), "a rule needs a name"),
        (lambda: RuleMatch(score_min=60, score_max=50), "score_min 60 is above score_max 50"),
        (lambda: RuleMatch(types=("IP",)), "unknown type 'IP'"),
        (lambda: MappingPolicy(rules=(Rule("default"),)), "reserved for the default rule"),
        (lambda: MappingPolicy(rules=(Rule("a"), Rule("a"))), "two rules are named 'a'"),
    ],
)
def test_invalid_rules_are_refused(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


# -- readers: markings and author ---------------------------------------------------------


def test_both_renderings_carry_markings_and_author() -> None:
    record = generate_indicators(1, seed=3, now=NOW)[0]
    record.update(markings=["TLP:AMBER"], created_by="CIRCL")
    graphql = indicator_from_graphql(OpenCTIEmulator.graphql_node(record))
    stix = indicator_from_stix(OpenCTIEmulator.stix_object(record))
    assert isinstance(graphql, OpenCTIIndicator) and isinstance(stix, OpenCTIIndicator)
    assert graphql.markings == stix.markings == ("TLP:AMBER",)  # STIX: named from its TLP id
    assert set(stix.marking_ids) <= set(graphql.marking_ids)
    assert graphql.author == "CIRCL" and stix.author is None  # STIX carries the id only
    assert set(stix.author_ids) & set(graphql.author_ids)
    rule = Rule("circl", RuleMatch(authors=(graphql.author_ids[0],), markings=("tlp:amber",)))
    policy = MappingPolicy(rules=(rule,))
    assert {d.rule for d in map_indicator(graphql, policy, NOW).desired} <= {"circl"}
    assert [d.rule for d in map_indicator(stix, policy, NOW).desired] == [
        d.rule for d in map_indicator(graphql, policy, NOW).desired
    ]


def test_graphql_reader_tolerates_odd_markings_and_author() -> None:
    node = OpenCTIEmulator.graphql_node(generate_indicators(1, seed=3, now=NOW)[0])
    node["objectMarking"] = {"edges": [{"node": {"id": "m1"}}, {"node": None}, "x"]}
    node["createdBy"] = {"id": 7, "name": ""}
    ind = indicator_from_graphql(node)
    assert isinstance(ind, OpenCTIIndicator)
    assert ind.markings == ("m1",) and ind.marking_ids == ("m1",)
    assert ind.author is None and ind.author_ids == ()


# -- explain's helpers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8.8.8.8", ["IpAddress:8.8.8.8"]),
        ("10.0.0.1", ["IpAddress:10.0.0.1"]),  # private: still a key (the answer says why)
        ("Evil.Example.", ["DomainName:evil.example"]),
        ("https://evil.example/x", ["Url:https://evil.example/x"]),
        ("44D88612FEA8A8F36DE82E1278ABB02F", ["FileMd5:44d88612fea8a8f36de82e1278abb02f"]),
        ("not a value", []),
    ],
)
def test_keys_for(text: str, expected: list[str]) -> None:
    assert [str(k) for k in keys_for(text)] == expected
