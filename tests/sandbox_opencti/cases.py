"""Realistic live-stream filters, each with what it should select, written without the fake.

A case builds its FilterGroup from the records it runs against (``ids`` filters name some of
them) and says, in plain Python over the records, which ones it selects. Shared by the listing,
stream and generated-population tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reconciler.sandbox.dataset import (
    DEFAULT_NOW,
    label_id,
    parse_date,
    status_id,
    status_template_id,
)
from reconciler.sandbox.opencti import CREATOR_ID, author_id, marking_id

Record = dict[str, Any]
NOW = DEFAULT_NOW.strftime("%Y-%m-%dT%H:%M:%S.000Z")
SPRING = "2025-06-01T00:00:00.000Z"
APPROVED = status_id("APPROVED")


def flt(key: Any, values: list[str], operator: str = "eq", mode: str = "or") -> dict[str, Any]:
    return {"key": key, "values": values, "operator": operator, "mode": mode}


def group(*filters: dict[str, Any], mode: str = "and", groups: Any = ()) -> dict[str, Any]:
    return {"mode": mode, "filters": list(filters), "filterGroups": list(groups)}


def after(record: Record, field: str, iso: str) -> bool:
    value = record.get(field)
    return value is not None and parse_date(value) > parse_date(iso)


def since(record: Record, field: str, iso: str) -> bool:
    value = record.get(field)
    return value is not None and parse_date(value) >= parse_date(iso)


@dataclass(frozen=True)
class Case:
    name: str
    filters: Callable[[list[Record]], dict[str, Any]]
    selects: Callable[[Record], bool]


def _some_ids(records: list[Record]) -> list[str]:
    """Internal ids of a few records and standard ids of a few others, plus one unknown id."""
    picked = records[5:40:7]
    return [
        *(r["id"] for r in picked[:3]),
        *(r["standard_id"] for r in picked[3:]),
        "indicator--00000000-0000-4000-8000-000000000000",
    ]


def _named(records: list[Record]) -> set[str]:
    picked = records[5:40:7]
    return {r["id"] for r in picked}


CASES = [
    Case(
        "status-approved",
        lambda rs: group(flt(["workflow_id"], [APPROVED])),
        lambda r: r["status_id"] == APPROVED,
    ),
    Case(
        "status-template-stored-key",
        lambda rs: group(flt("x_opencti_workflow_id", [status_template_id("APPROVED")])),
        lambda r: r["status_id"] == APPROVED,
    ),
    Case(
        "status-nil",
        lambda rs: group(flt(["workflow_id"], [], "nil")),
        lambda r: r["status_id"] is None,
    ),
    Case(
        "labels-in",
        lambda rs: group(flt(["objectLabel"], [label_id("c2"), label_id("phishing")])),
        lambda r: bool({"c2", "phishing"} & set(r["labels"])),
    ),
    Case(
        "labels-all",
        lambda rs: group(flt(["objectLabel"], [label_id("c2"), label_id("malware")], mode="and")),
        lambda r: {"c2", "malware"} <= set(r["labels"]),
    ),
    Case(
        "label-by-name",
        lambda rs: group(flt(["objectLabel"], ["Botnet"])),
        lambda r: "botnet" in r["labels"],
    ),
    Case(
        "marking-green",
        lambda rs: group(flt(["objectMarking"], [marking_id("TLP:GREEN")])),
        lambda r: "TLP:GREEN" in r["markings"],
    ),
    Case(
        "author-and-score",
        lambda rs: group(
            flt(["createdBy"], [author_id("CIRCL")]), flt(["x_opencti_score"], ["60"], "gte")
        ),
        lambda r: r["created_by"] == "CIRCL" and (r["score"] or -1) >= 60,
    ),
    Case(
        "score-between",
        lambda rs: group(
            flt(["x_opencti_score"], ["30"], "gte"), flt(["x_opencti_score"], ["59"], "lte")
        ),
        lambda r: r["score"] is not None and 30 <= r["score"] <= 59,
    ),
    Case(
        "not-revoked",
        lambda rs: group(flt(["revoked"], ["false"])),
        lambda r: not r["revoked"],
    ),
    Case(
        "main-types",
        lambda rs: group(flt(["x_opencti_main_observable_type"], ["IPv4-Addr", "domain-name"])),
        lambda r: r["main_observable_type"] in ("IPv4-Addr", "Domain-Name"),
    ),
    Case(
        "detection",
        lambda rs: group(flt(["x_opencti_detection"], ["true"])),
        lambda r: r["detection"],
    ),
    Case(
        "valid-until-nil-or-ahead",
        lambda rs: group(
            flt(["valid_until"], [], "nil"), flt(["valid_until"], [NOW], "gt"), mode="or"
        ),
        lambda r: r["valid_until"] is None or after(r, "valid_until", NOW),
    ),
    Case(
        "created-after",
        lambda rs: group(flt(["created_at"], [SPRING], "gt")),
        lambda r: after(r, "created_at", SPRING),
    ),
    Case(
        "updated-since-date-only",
        lambda rs: group(flt(["updated_at"], ["2025-12-20"], "gte")),
        lambda r: since(r, "updated_at", "2025-12-20T00:00:00.000Z"),
    ),
    Case(
        "nested-labels-or-and-score",
        lambda rs: group(
            flt(["x_opencti_score"], ["50"], "gte"),
            groups=[
                group(
                    flt(["objectLabel"], [label_id("c2")]),
                    flt(["objectLabel"], [label_id("botnet")]),
                    mode="or",
                )
            ],
        ),
        lambda r: (r["score"] or -1) >= 50 and bool({"c2", "botnet"} & set(r["labels"])),
    ),
    Case(
        "not-label",
        lambda rs: group(flt(["objectLabel"], [label_id("c2")], "not_eq")),
        lambda r: "c2" not in r["labels"],
    ),
    Case(
        "not-labels-or",
        lambda rs: group(flt(["objectLabel"], [label_id("c2"), label_id("malware")], "not_eq")),
        lambda r: not {"c2", "malware"} <= set(r["labels"]),
    ),
    Case(
        "not-labels-and",
        lambda rs: group(
            flt(["objectLabel"], [label_id("c2"), label_id("malware")], "not_eq", "and")
        ),
        lambda r: not {"c2", "malware"} & set(r["labels"]),
    ),
    Case(
        "no-label",
        lambda rs: group(flt(["objectLabel"], [], "nil")),
        lambda r: not r["labels"],
    ),
    Case(
        "ids",
        lambda rs: group(flt(["ids"], _some_ids(rs))),
        lambda r: False,  # depends on the records: see ``expected``
    ),
    Case(
        "creator",
        lambda rs: group(flt(["creator_id"], [CREATOR_ID]), flt(["x_opencti_score"], ["90"], "gt")),
        lambda r: (r["score"] or -1) > 90,
    ),
    Case(
        "pattern-type-stix",
        lambda rs: group(flt(["pattern_type"], ["stix"])),
        lambda r: r["pattern_type"] == "stix",
    ),
    Case(
        "confidence-below",
        lambda rs: group(flt(["confidence"], ["50"], "lt")),
        lambda r: r["confidence"] < 50,
    ),
    Case(
        "two-keys-one-filter",
        lambda rs: group(flt(["x_opencti_score", "confidence"], ["100"])),
        lambda r: r["score"] == 100 or r["confidence"] == 100,
    ),
    Case(
        "indicator-and-types",
        lambda rs: group(
            flt(["entity_type"], ["Indicator"]),
            flt(["indicator_types"], ["compromised", "anomalous-activity"]),
        ),
        lambda r: bool({"compromised", "anomalous-activity"} & set(r["indicator_types"])),
    ),
]


def expected(case: Case, records: list[Record]) -> set[str]:
    """Internal ids ``case`` should select among ``records``."""
    if case.name == "ids":
        return _named(records) & {r["id"] for r in records}
    return {r["id"] for r in records if case.selects(r)}
