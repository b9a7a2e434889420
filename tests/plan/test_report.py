"""Renderers: golden files for the three formats, colour, truncation, JSON Schema.

Regenerate the golden files after an intended change with
``UPDATE_GOLDEN=1 .venv/bin/pytest tests/plan/test_report.py`` and review the diff."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from reconciler.model import Skipped, SkipReason
from reconciler.plan import ChangeKind, Plan, PlanPolicy, build_plan
from reconciler.report import (
    PLAN_SCHEMA_PATH,
    load_plan_schema,
    render_json,
    render_markdown,
    render_text,
)
from tests.plan.factories import as_map, desired, golden_plan, owned

GOLDEN = Path(__file__).with_name("golden")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(actual, encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{name} differs; UPDATE_GOLDEN=1 regenerates it"


# -- golden files --------------------------------------------------------------------------


def test_text_golden(sample_plan: Plan) -> None:
    check_golden("plan.txt", render_text(sample_plan, color=False, width=100))


def test_json_golden(sample_plan: Plan) -> None:
    check_golden("plan.json", render_json(sample_plan))


def test_markdown_golden(sample_plan: Plan) -> None:
    check_golden("plan.md", render_markdown(sample_plan))


def test_empty_plan_text_golden() -> None:
    d = desired()
    plan = build_plan(as_map(d), [owned("1", d)], non_owned_count=1200)
    check_golden("empty.txt", render_text(plan))


def test_golden_plan_has_every_action_guard_and_skip(sample_plan: Plan) -> None:
    # The golden files only prove something if the plan behind them covers everything.
    assert {c.kind for c in sample_plan.changes} == set(ChangeKind)
    assert sample_plan.deletes_blocked
    assert {c.reason for c in sample_plan.changes} >= {
        "not_in_defender",
        "fields_changed",
        "action_changed",
        "not_in_opencti",
        "duplicate",
        "revoked",
        "expired",
        "quota",
        "private_ip",
    }


# -- text ----------------------------------------------------------------------------------


def test_text_summary_line(sample_plan: Plan) -> None:
    last = render_text(sample_plan).rstrip("\n").splitlines()[-1]
    assert last == (
        "Plan: 2 to create, 1 to update, 2 to replace, 5 to delete, 2 to expire, "
        "12 skipped; quota 15,000/15,000"
    )


def test_text_no_changes() -> None:
    d = desired()
    text = render_text(build_plan(as_map(d), [owned("1", d)]))
    assert "No changes. Defender matches OpenCTI." in text
    assert "Symbols" not in text
    assert "Guards" not in text


def test_text_incomplete_read() -> None:
    text = render_text(incomplete_plan())
    assert text.startswith("OpenCTI → Defender plan (INCOMPLETE read: nothing destructive planned")
    assert "  ! incomplete_read: a listing failed or was truncated" in text
    assert " will be deleted" not in text
    assert " will be created" in text


def test_text_color_only_when_asked(sample_plan: Plan) -> None:
    plain = render_text(sample_plan, color=False)
    colored = render_text(sample_plan, color=True)
    assert "\x1b[" not in plain
    assert "\x1b[32m  +\x1b[0m IpAddress 203.0.113.45" in colored
    assert "\x1b[33m  ~\x1b[0m DomainName evil.example" in colored
    assert "\x1b[35m-/+\x1b[0m Url https://x.test/a" in colored
    assert "\x1b[31m  -\x1b[0m DomainName gone.example" in colored
    # Colour is decoration only: stripping it gives the plain text back.
    assert ANSI.sub("", colored) == plain


def test_text_lines_fit_width(sample_plan: Plan) -> None:
    for width in (60, 100):
        *body, summary = render_text(sample_plan, width=width).splitlines()
        for line in body:
            assert len(line) <= width, line
        # The summary line is never cut: scripts and people grep it whole.
        assert summary.startswith("Plan: ") and summary.endswith("quota 15,000/15,000")


def test_text_escapes_control_characters() -> None:
    s = Skipped(opencti_id="x", reason=SkipReason.INVALID_VALUE, detail="evil\x1b[31m\nnext")
    text = render_text(build_plan({}, [], skipped=[s]))
    assert "\x1b" not in text
    assert "evil\\x1b[31m\\x0anext" in text


def big_plan(n_create: int = 300, n_delete: int = 200) -> Plan:
    items = [desired(f"192.0.{i // 250}.{i % 250}") for i in range(n_create)]
    gone = [owned(str(i + 1), desired(f"198.18.{i // 250}.{i % 250}")) for i in range(n_delete)]
    skipped = [
        Skipped(opencti_id=f"indicator--{i}", reason=SkipReason.UNSUPPORTED_TYPE, detail="mutex")
        for i in range(40)
    ]
    return build_plan(as_map(*items), gone, skipped=skipped, policy=PlanPolicy(max_deletes=100))


def test_text_truncates_large_groups() -> None:
    plan = big_plan()
    text = render_text(plan, limit_per_kind=50)
    assert text.count(" will be created") == 50
    assert text.count(" will be deleted") == 50
    assert "… 250 more to create not shown (use --output json for all)" in text
    assert "… 150 more to delete not shown (use --output json for all)" in text
    assert "unsupported_type: 40" in text
    assert "… 37 more" in text
    assert text.rstrip().endswith("40 skipped; quota 300/15,000")
    assert "max_deletes: 200 deletes exceed max_deletes 100" in text
    full = render_text(plan, limit_per_kind=None)
    assert full.count(" will be created") == 300
    assert "not shown" not in full


# -- JSON ----------------------------------------------------------------------------------


def validator() -> Draft202012Validator:
    schema = load_plan_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def empty_plan() -> Plan:
    return build_plan({}, [])


def incomplete_plan() -> Plan:
    d = desired()
    return build_plan(as_map(d), [owned("1", desired("192.0.2.1"))], complete=False)


@pytest.mark.parametrize(
    "make",
    [golden_plan, empty_plan, incomplete_plan, big_plan],
    ids=["golden", "empty", "incomplete", "big"],
)
def test_json_validates_against_schema(make: object) -> None:
    assert callable(make)
    plan = make()
    doc = json.loads(render_json(plan))
    errors = sorted(validator().iter_errors(doc), key=str)
    assert errors == []
    assert doc["format_version"] == "1"
    assert Plan.from_dict(doc) == plan


def test_schema_rejects_broken_documents(sample_plan: Plan) -> None:
    v = validator()
    doc = json.loads(render_json(sample_plan))
    bad_action = json.loads(json.dumps(doc))
    bad_action["changes"][0]["action"] = "noop"
    missing = json.loads(json.dumps(doc))
    del missing["summary"]["unchanged"]
    create_with_id = json.loads(json.dumps(doc))
    create_with_id["changes"][0]["defender_id"] = "5"
    for broken in (bad_action, missing, create_with_id):
        assert list(v.iter_errors(broken)), broken


def test_json_key_order_is_stable(sample_plan: Plan) -> None:
    doc = json.loads(render_json(sample_plan))
    assert list(doc) == [
        "format_version",
        "complete",
        "summary",
        "quota",
        "guards",
        "owned_count",
        "fingerprint",
        "desired_fingerprint",
        "changes",
    ]
    assert list(doc["changes"][0]) == [
        "action",
        "indicatorType",
        "indicatorValue",
        "defender_id",
        "opencti_ids",
        "before",
        "after",
        "fields",
        "reason",
        "detail",
        "rule",
    ]
    assert render_json(sample_plan) == render_json(golden_plan())


def test_schema_ships_with_the_package() -> None:
    assert PLAN_SCHEMA_PATH.parent.name == "reconciler"
    assert PLAN_SCHEMA_PATH.is_file()


# -- Markdown ------------------------------------------------------------------------------


def test_markdown_escapes_table_cells() -> None:
    d = desired("https://x.test/a|b`c*d_e<f>", "Url")
    plan = build_plan(as_map(d), [])
    md = render_markdown(plan)
    row = next(line for line in md.splitlines() if line.startswith("| Url |"))
    assert "https://x.test/a\\|b\\`c\\*d\\_e&lt;f&gt;" in row
    # Exactly the seven cell separators of the table survive.
    assert len(re.findall(r"(?<!\\)\|", row)) == 7


def test_markdown_folds_and_truncates_long_groups() -> None:
    md = render_markdown(big_plan(), limit_per_kind=100)
    assert "<details><summary>300 to create</summary>" in md
    assert "… 200 more not shown (see the JSON plan)." in md
    assert md.count("| IpAddress | 192.0.") == 100
    assert "`max_deletes` (**blocked**)" in md
    assert "| `unsupported_type` | 40 |" in md


def test_markdown_no_changes() -> None:
    md = render_markdown(empty_plan())
    assert "**No changes. Defender matches OpenCTI.**" in md
    assert "### Guards" not in md
