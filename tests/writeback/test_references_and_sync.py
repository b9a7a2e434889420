"""How statuses look as references, the edits ``diff`` makes, and ``WriteBack``'s memory."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from reconciler.errors import SourceError
from reconciler.writeback import (
    NOT_DEPLOYED,
    Attached,
    Deployment,
    Edits,
    Readback,
    Reference,
    ReferenceStyle,
    Refusal,
    Status,
    StoreOutcome,
    WriteBack,
    diff,
    marker_of,
    restamp_row,
    strip_marker,
    with_marker,
)

STYLE = ReferenceStyle(tenant_id="tenant-1", tenant_name="contoso")
DEP = Deployment("77", "IpAddress", "203.0.113.45", "Block", "2026-04-01T00:00:00Z")
DEPLOYED = Status((DEP,))
AUDIT = Status((Deployment("77", "IpAddress", "203.0.113.45", "Audit", None),))
REFUSED = Status((), (Refusal("quota", "over the free room", "203.0.113.45"),))


def test_a_deployment_renders_id_link_type_action_and_expiry() -> None:
    (ref,) = STYLE.render("ind-1", DEPLOYED)
    assert ref.external_id == "77"
    assert ref.url is not None and "indicatorId=77" in ref.url and "tid=tenant-1" in ref.url
    assert "IpAddress 203.0.113.45, action Block, expires 2026-04-01T00:00:00Z" in ref.description
    assert "tenant contoso" in ref.description


def test_a_refusal_renders_one_not_deployed_reference_with_every_reason() -> None:
    status = Status(
        (), (Refusal("quota", "over the free room", "a"), Refusal("private_ip", "", "b"))
    )
    (ref,) = STYLE.render("ind-1", status)
    assert ref.external_id == f"{NOT_DEPLOYED}ind-1" and ref.url is None
    assert "a: quota (over the free room)" in ref.description and "b: private_ip" in ref.description


def test_no_status_renders_nothing() -> None:
    assert STYLE.render("ind-1", Status()) == ()


def _attached(ref: Reference, ident: str) -> Attached:
    return Attached(ident, ref.external_id, ref.url, ref.description)


@pytest.mark.parametrize(
    ("name", "want", "have", "live", "expect"),
    [
        ("equal: nothing", DEPLOYED, [("r1", DEPLOYED)], {"77"}, (0, 0, [])),
        ("new: attach", DEPLOYED, [], {"77"}, (1, 0, [])),
        ("text changed: patch", DEPLOYED, [("r1", AUDIT)], {"77"}, (0, 1, [])),
        (
            "refused now: attach new, detach old gone id",
            REFUSED,
            [("r1", DEPLOYED)],
            set(),
            (1, 0, [("r1", True)]),
        ),
        (
            "gone: detach, delete (its link names this indicator: ours alone)",
            Status(),
            [("r1", DEPLOYED)],
            {"77"},
            (0, 0, [("r1", True)]),
        ),
        (
            "not deployed gone: detach and delete",
            Status(),
            [("r9", REFUSED)],
            set(),
            (0, 0, [("r9", True)]),
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_diff(name: str, want: Status, have: list, live: set[str], expect: tuple) -> None:
    attached = [_attached(STYLE.render("ind-1", st)[0], rid) for rid, st in have]
    edits = diff("ind-1", STYLE.render("ind-1", want), attached, live)
    assert (len(edits.attach), len(edits.patch), [(r, d) for _, r, d in edits.detach]) == expect


def test_a_second_copy_of_one_reference_is_detached_and_kept() -> None:
    (ref,) = STYLE.render("ind-1", DEPLOYED)
    edits = diff("ind-1", (ref,), [_attached(ref, "r1"), _attached(ref, "r2")], set())
    assert edits.detach == [("ind-1", "r2", False)] and not edits.attach and not edits.patch


class FakeStore:
    """References per indicator in memory; counts reads and writes; can fail."""

    def __init__(self) -> None:
        self.refs: dict[str, list[Attached]] = {}
        self.reads: list[list[str]] = []
        self.writes: list[Edits] = []
        self.fail_ids: set[str] = set()
        self.down = False
        self._ids = itertools.count(1)
        self.stamp: dict[str, str] = {}  # updated_at per indicator
        self.bumps = False  # an edit moves updated_at, like the platform may

    def read(self, opencti_ids: Sequence[str]) -> Readback:
        if self.down:
            raise SourceError("OpenCTI is down")
        self.reads.append(list(opencti_ids))
        known = [i for i in opencti_ids if i != "gone"]
        back = Readback(calls=1)
        for i in known:
            back.refs[i] = list(self.refs.get(i, []))
            back.stamps[i] = self.stamp.get(i, "t0")
            row = _row(self, i)
            restamp_row(row)
            if row["updated_at"] != back.stamps[i]:
                back.bases[i] = str(row["updated_at"])
        return back

    def stamps(self, opencti_ids: Sequence[str]) -> tuple[dict[str, str], int]:
        return {i: self.stamp.get(i, "t0") for i in opencti_ids}, 1

    def write(self, edits: Edits) -> StoreOutcome:
        self.writes.append(edits)
        out = StoreOutcome(calls=1)
        if self.bumps:  # like a platform that moves updated_at on attach and detach
            for oid, *_ in [*edits.attach, *edits.detach]:
                self.stamp[oid] = f"t{len(self.writes)}"
        for oid, ref in edits.attach:
            if oid in self.fail_ids:
                out.failed[oid] = "refused"
                continue
            ident = f"r{next(self._ids)}"
            self.refs.setdefault(oid, []).append(
                Attached(ident, ref.external_id, ref.url, ref.description)
            )
            out.attached.setdefault(oid, []).append(ident)
        for oid, rid, ref in edits.patch:
            self.refs[oid] = [
                Attached(rid, ref.external_id, ref.url, ref.description) if a.id == rid else a
                for a in self.refs[oid]
            ]
        for oid, rid, _ in edits.detach:
            self.refs[oid] = [a for a in self.refs[oid] if a.id != rid]
        return out


def test_a_second_sync_of_the_same_statuses_reads_and_writes_nothing() -> None:
    store = FakeStore()
    wb = WriteBack(store, STYLE, read_batch=2)
    statuses = {f"i{n}": DEPLOYED if n % 2 else REFUSED for n in range(5)}
    first = wb.sync(statuses, {"77"})
    assert first.changed == 5 and first.edits == 5 and len(store.reads) == 3
    second = wb.sync(statuses, {"77"})
    assert (second.changed, second.read, second.edits, second.calls) == (0, 0, 0, 0)
    assert len(store.reads) == 3 and len(store.writes) == 3


def test_a_failed_indicator_is_retried_on_the_next_sync() -> None:
    store = FakeStore()
    store.fail_ids = {"i1"}
    wb = WriteBack(store, STYLE)
    assert wb.sync({"i1": DEPLOYED, "i2": DEPLOYED}, {"77"}).failed == 1
    store.fail_ids = set()
    again = wb.sync({"i1": DEPLOYED, "i2": DEPLOYED}, {"77"})
    assert again.changed == 1 and again.edits == 1 and again.failed == 0


def test_forget_reads_again_and_restores_a_reference_an_analyst_removed() -> None:
    store = FakeStore()
    wb = WriteBack(store, STYLE)
    wb.sync({"i1": DEPLOYED}, {"77"})
    store.refs["i1"] = []  # removed in the UI
    assert wb.sync({"i1": DEPLOYED}, {"77"}).read == 0  # unknown to us until an event says
    wb.forget(["i1"])
    assert wb.has_forgotten
    report = wb.sync({"i1": DEPLOYED}, {"77"})
    assert report.read == 1 and report.edits == 1 and not wb.has_forgotten
    assert [a.external_id for a in store.refs["i1"]] == ["77"]


def test_forget_of_our_own_edit_reads_and_writes_nothing_more() -> None:
    store = FakeStore()
    wb = WriteBack(store, STYLE)
    wb.sync({"i1": DEPLOYED}, {"77"})
    wb.forget(["i1"])  # the stream event our attach caused
    report = wb.sync({"i1": DEPLOYED}, {"77"})
    assert report.read == 1 and report.edits == 0 and len(store.writes) == 1


def test_an_indicator_gone_from_opencti_is_not_read_again() -> None:
    store = FakeStore()
    wb = WriteBack(store, STYLE)
    assert wb.sync({"gone": DEPLOYED}, {"77"}).edits == 0
    assert wb.sync({"gone": DEPLOYED}, {"77"}).read == 0


def test_opencti_down_is_reported_not_raised_and_retried() -> None:
    store = FakeStore()
    store.down = True
    wb = WriteBack(store, STYLE)
    report = wb.sync({"i1": DEPLOYED}, {"77"})
    assert report.error and report.failed == 1
    store.down = False
    assert wb.sync({"i1": DEPLOYED}, {"77"}).edits == 1


def _row(store: FakeStore, oid: str) -> dict[str, object]:
    """The listing row the reconciler reads for ``oid`` (pycti flattens the connection)."""
    refs = [
        {"source_name": STYLE.source_name, "description": a.description}
        for a in store.refs.get(oid, [])
    ]
    return {"id": oid, "updated_at": store.stamp.get(oid, "t0"), "externalReferences": refs}


def test_a_move_of_updated_at_by_our_edit_is_marked_and_undone_at_read() -> None:
    store = FakeStore()
    store.bumps = True
    wb = WriteBack(store, STYLE)
    wb.sync({"i1": DEPLOYED}, {"77"})
    assert store.stamp["i1"] == "t1"
    row = _row(store, "i1")
    restamp_row(row, STYLE.source_name)
    assert row["updated_at"] == "t0"  # our edit: the value before it
    assert marker_of(store.refs["i1"][0].description) == ("t1", "t0")

    wb.forget(["i1"])  # a status change: detach + attach move it again
    wb.sync({"i1": REFUSED}, set())
    row = _row(store, "i1")
    restamp_row(row, STYLE.source_name)
    assert row["updated_at"] == "t0"  # still the value before any edit of ours

    store.stamp["i1"] = "t9"  # an analyst's edit since: counts
    row = _row(store, "i1")
    restamp_row(row, STYLE.source_name)
    assert row["updated_at"] == "t9"


def test_the_mark_survives_a_text_patch_and_does_not_count_as_a_difference() -> None:
    store = FakeStore()
    store.bumps = True
    wb = WriteBack(store, STYLE)
    wb.sync({"i1": DEPLOYED}, {"77"})
    writes = len(store.writes)
    wb.forget(["i1"])
    assert wb.sync({"i1": DEPLOYED}, {"77"}).edits == 0  # the marker is no difference
    wb.forget(["i1"])
    wb.sync({"i1": AUDIT}, {"77"})  # a patch: no move, the marker is kept
    assert len(store.writes) == writes + 1
    assert marker_of(store.refs["i1"][0].description) == ("t1", "t0")
    assert "action Audit" in strip_marker(store.refs["i1"][0].description)


def test_another_source_name_is_never_read_as_ours() -> None:
    row = {
        "id": "i1",
        "updated_at": "t1",
        "externalReferences": [
            {"source_name": "someone", "description": with_marker("x", "t0", "t1")}
        ],
    }
    restamp_row(row, STYLE.source_name)
    assert row["updated_at"] == "t1"


def test_moves_are_learned_from_our_marks_and_recalled_by_a_fresh_process() -> None:
    store = FakeStore()
    store.bumps = True
    wb = WriteBack(store, STYLE)
    wb.sync({"i1": DEPLOYED, "i2": DEPLOYED}, {"77"})
    row = {"id": "i1", "updated_at": "t1"}
    wb.restamps(row)
    assert row["updated_at"] == "t0" and len(wb.restamps) == 2
    fresh = WriteBack(store, STYLE, enabled=False)  # another process, write-back off there
    assert fresh.recall(["i1", "i2", "unknown"]) == 2
    assert fresh.restamps.before("i2", "t1") == "t0"
    assert fresh.recall(["i1"]) == 0  # known already
    store.stamp["i1"] = "t9"  # an analyst's edit: no move any more
    assert fresh.restamps.before("i1", "t9") == "t9"
