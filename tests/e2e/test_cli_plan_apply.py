"""End to end: the CLI against both sandbox servers (plan, apply, drift, guards, crashes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.opencti import OpenCTIEmulator
from tests.e2e.support import TODAY, Sandbox, load, write_config


def _plan_json(sandbox: Sandbox) -> dict:
    res = sandbox.cli("plan", "--output", "json")
    assert res.code == 0, res.stderr
    return json.loads(res.stdout)


def _changes(doc: dict, action: str) -> list[dict]:
    return [c for c in doc["changes"] if c["action"] == action]


def test_cold_sync_then_no_changes(sandbox: Sandbox) -> None:
    load(sandbox, 2000)
    res = sandbox.cli("apply")
    assert res.code == 0, res.stdout + res.stderr
    counts = sandbox.defender.counts()
    assert 1 <= counts["import"] <= 4
    assert counts.get("submit", 0) == 0
    assert len(sandbox.owned()) > 1000
    again = sandbox.cli("plan", "--detailed-exitcode")
    assert again.code == 0, again.stdout
    assert "No changes" in again.stdout


def test_detailed_exitcode_two_when_changes_pending(sandbox: Sandbox) -> None:
    load(sandbox, 50)
    res = sandbox.cli("plan", "--detailed-exitcode")
    assert res.code == 2
    assert "to create" in res.stdout


def test_portal_drift_is_planned_exactly_and_fixed_by_one_apply(sandbox: Sandbox) -> None:
    load(sandbox, 300)
    assert sandbox.cli("apply").code == 0
    owned = sorted(sandbox.owned(), key=lambda r: int(r["id"]))
    gone, reaction, resev, dup_of = owned[0], owned[1], owned[2], owned[3]
    d = sandbox.defender
    d.delete_indicator(gone["id"])
    # Not an alias of its action (Alert stands for Audit): a real action change.
    new_action = "Warn" if reaction["action"] != "Warn" else "Block"
    d.update_indicator(reaction["id"], action=new_action, generateAlert=True)
    new_sev = "Informational" if resev["severity"] != "Informational" else "High"
    d.update_indicator(resev["id"], severity=new_sev)
    stray = d.add_indicator(
        indicatorValue="stray.example",
        indicatorType="DomainName",
        action="Block",
        title="t",
        description="d",
        application="opencti",
        severity="High",
        generateAlert=True,
    )
    dup = d.add_indicator(
        **{
            k: dup_of[k]
            for k in (
                "indicatorValue",
                "indicatorType",
                "title",
                "description",
                "severity",
                "generateAlert",
                "application",
                "externalId",
            )
        },
        action="Warn" if dup_of["action"] != "Warn" else "Block",
    )

    doc = _plan_json(sandbox)
    creates = {(c["indicatorType"], c["indicatorValue"]) for c in _changes(doc, "create")}
    assert creates == {(gone["indicatorType"], gone["indicatorValue"])}
    updates = {c["defender_id"]: c["fields"] for c in _changes(doc, "update")}
    assert updates == {resev["id"]: ["severity"]}
    replaces = {c["defender_id"] for c in _changes(doc, "replace")}
    assert replaces == {reaction["id"]}
    deletes = {c["defender_id"]: c["reason"] for c in _changes(doc, "delete")}
    assert deletes == {stray["id"]: "not_in_opencti", dup["id"]: "duplicate"}

    res = sandbox.cli("apply")
    assert res.code == 0, res.stdout + res.stderr
    assert sandbox.cli("plan", "--detailed-exitcode").code == 0


def test_non_owned_same_value_is_never_touched(sandbox: Sandbox) -> None:
    records = load(sandbox, 100)
    assert sandbox.cli("apply").code == 0
    target = sorted(sandbox.owned(), key=lambda r: int(r["id"]))[0]
    soc = sandbox.defender.add_indicator(
        indicatorValue=target["indicatorValue"],
        indicatorType=target["indicatorType"],
        action="Allowed",
        title="SOC exception",
        description="mine",
        application="SOC tools",
        createdBySource="Portal",
    )
    # Remove everything from OpenCTI: the desired set shrinks; the SOC row must survive all.
    for rec in records[:50]:
        sandbox.opencti.delete_indicator(rec["id"])
    sandbox.defender.reset_log()
    res = sandbox.cli("apply", "--allow-mass-delete")
    assert res.code == 0, res.stdout + res.stderr
    assert sandbox.defender.get(soc["id"]) == soc
    for rec in sandbox.defender.requests:
        body = json.dumps(rec.body) if rec.body is not None else ""
        assert f'"{soc["id"]}"' not in body


def test_revocation_and_expiry_expire_owned(sandbox: Sandbox) -> None:
    load(sandbox, 200)
    assert sandbox.cli("apply").code == 0
    owned = sorted(sandbox.owned(), key=lambda r: int(r["id"]))
    by_ext = {}
    for r in owned:
        by_ext.setdefault(r["externalId"], []).append(r)
    singles = [ext for ext, rows in by_ext.items() if len(rows) == 1]
    revoked, lapsed = singles[0], singles[1]
    sandbox.opencti.revoke_indicator(revoked)
    sandbox.opencti.update_indicator(lapsed, valid_until="2020-01-01T00:00:00.000Z")
    doc = _plan_json(sandbox)
    expires = {c["defender_id"]: c["reason"] for c in _changes(doc, "expire")}
    assert expires == {by_ext[revoked][0]["id"]: "revoked", by_ext[lapsed][0]["id"]: "expired"}
    assert sandbox.cli("apply").code == 0
    assert sandbox.defender.get(by_ext[revoked][0]["id"]) is None
    assert sandbox.defender.get(by_ext[lapsed][0]["id"]) is None


def test_opencti_listing_error_plans_and_deletes_nothing(sandbox: Sandbox) -> None:
    load(sandbox, 12000)
    assert sandbox.cli("apply").code == 0
    sandbox.defender.reset_log()
    # The OpenCTI side also changed (so a plan from a partial read would have deletes to do).
    for rec in sandbox.opencti.indicators()[:50]:
        sandbox.opencti.delete_indicator(rec["id"])
    for command in ("plan", "apply"):
        sandbox.opencti.fail_page(2)
        res = sandbox.cli(command)
        assert res.code == 1, (command, res.stdout, res.stderr)
        assert "error:" in res.stderr and "page 2" in res.stderr
        assert "to delete" not in res.stdout
    counts = sandbox.defender.counts()
    writes = ("import", "batch_delete", "delete", "submit")
    assert {k: counts.get(k, 0) for k in writes} == dict.fromkeys(writes, 0)
    # Without the failure the same run deletes what left OpenCTI: the guard above was real.
    assert sandbox.cli("apply").code == 0
    assert sandbox.defender.counts().get("batch_delete", 0) >= 1


def test_empty_desired_set_deletes_nothing(sandbox: Sandbox) -> None:
    records = load(sandbox, 100)
    assert sandbox.cli("apply").code == 0
    before = len(sandbox.owned())
    for rec in records:
        sandbox.opencti.delete_indicator(rec["id"])
    sandbox.defender.reset_log()
    res = sandbox.cli("apply")
    assert res.code == 3, res.stdout + res.stderr
    assert "empty_desired" in res.stdout
    assert sandbox.defender.counts().get("batch_delete", 0) == 0
    assert len(sandbox.owned()) == before


def test_saved_plan_is_applied_and_refused_when_stale(sandbox: Sandbox, tmp_path: Path) -> None:
    load(sandbox, 100)
    saved = tmp_path / "plan.json"
    assert sandbox.cli("plan", "--out", str(saved)).code == 0
    assert sandbox.cli("apply", "--plan", str(saved)).code == 0
    assert sandbox.cli("plan", "--detailed-exitcode").code == 0
    # A plan made before a portal edit is refused once Defender changed.
    sandbox.cli("plan", "--out", str(saved))
    victim = sandbox.owned()[0]
    sandbox.defender.update_indicator(victim["id"], title="edited")
    res = sandbox.cli("apply", "--plan", str(saved))
    assert res.code == 1
    assert "stale" in res.stderr


def test_crash_mid_apply_then_rerun_converges(tmp_path: Path) -> None:
    with DefenderEmulator(rate_limits=False) as defender, OpenCTIEmulator() as opencti:
        from reconciler.sandbox.dataset import generate_indicators

        opencti.load(generate_indicators(1500, seed=5, now=TODAY))
        config = write_config(tmp_path / "config.yml", defender, opencti)
        proc_box: dict[str, subprocess.Popen[bytes]] = {}
        killed = threading.Event()
        imports = {"n": 0}

        def hook(endpoint: str, method: str, path: str) -> None:
            if endpoint == "import":
                imports["n"] += 1
                if imports["n"] == 2 and "p" in proc_box:
                    os.kill(proc_box["p"].pid, signal.SIGKILL)
                    killed.set()

        defender.on_request(hook)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "apply", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        proc_box["p"] = proc
        proc.wait(timeout=120)
        assert killed.is_set() and proc.returncode == -signal.SIGKILL
        defender.on_request(lambda *a: None)
        partial = len([r for r in defender.indicators() if r.get("application") == "opencti"])
        assert partial > 0
        res = subprocess.run(
            [sys.executable, "-m", "reconciler", "apply", "--config", str(config)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "reconciler",
                "plan",
                "--detailed-exitcode",
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        owned = [r for r in defender.indicators() if r.get("application") == "opencti"]
        keys = [(r["indicatorType"], r["indicatorValue"]) for r in owned]
        assert len(keys) == len(set(keys)), "duplicates after crash + rerun"
