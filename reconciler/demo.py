"""``reconciler demo``: the whole story on the built-in sandbox, in well under a minute.

Starts both emulators (Defender API over TLS, fake OpenCTI with generated indicators), then:
plan → apply → plan (no changes) → a simulated portal edit, a portal delete, a stray owned
indicator, a SOC-made indicator with a desired value, and an OpenCTI revocation → plan showing
exactly that drift → apply → plan (no changes) → the deployment status written back on the
OpenCTI indicators → a hit on an emulated endpoint becoming an OpenCTI sighting. Nothing leaves
127.0.0.1.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

from reconciler.clock import SystemClock

if TYPE_CHECKING:
    import threading

    from reconciler.config import Settings
    from reconciler.model import RawIndicator
    from reconciler.sandbox.defender import DefenderEmulator
    from reconciler.sandbox.opencti import OpenCTIEmulator

__all__ = ["run_demo"]


def _heading(out: IO[str], text: str, color: bool) -> None:
    bar = "=" * len(text)
    if color:
        out.write(f"\n\x1b[1;36m{text}\x1b[0m\n\x1b[36m{bar}\x1b[0m\n")
    else:
        out.write(f"\n{text}\n{bar}\n")
    out.flush()


def _calls(before: Counter[str], after: Counter[str]) -> str:
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    shown = {k: v for k, v in diff.items() if v and k not in ("openid", "discovery")}
    return ", ".join(f"{k} {v}" for k, v in sorted(shown.items())) or "none"


def demo_settings(defender: DefenderEmulator, opencti: OpenCTIEmulator, **extra: Any) -> Settings:
    """Settings that point at the two running emulators (no file, no environment); ``extra``
    are dotted overrides such as ``{"reconciler.dry_run": True}`` (the tests use it too)."""
    from reconciler.config import load_settings

    overrides: dict[str, Any] = {
        "opencti.url": opencti.url,
        "opencti.token": opencti.token,
        "connector.id": "6f0f4b9e-2b1c-4c51-9d5f-0d5f3c1c2a10",
        "connector.name": "OpenCTI Defender Reconciler (demo)",
        "connector.live_stream_id": opencti.stream_id,
        "connector.log_level": "warning",
        "microsoft_defender_intel.tenant_id": defender.tenant_id,
        "microsoft_defender_intel.client_id": defender.client_id,
        "microsoft_defender_intel.client_secret": defender.client_secret,
        "microsoft_defender_intel.login_url": defender.login_url,
        "microsoft_defender_intel.base_url": defender.url,
        "microsoft_defender_intel.ca_bundle": defender.ca_file,
        "microsoft_defender_intel.graph_url": defender.graph_url,
        **extra,
    }
    return load_settings(None, env={}, overrides=overrides)


def run_demo(*, count: int = 300, seed: int = 7, color: bool = False, out: IO[str]) -> int:
    """Run the demo story; returns the exit code (0 when every step behaved as expected)."""
    from reconciler import report
    from reconciler.logs import configure_logging
    from reconciler.sandbox.dataset import generate_indicators
    from reconciler.sandbox.defender import DefenderEmulator
    from reconciler.sandbox.opencti import OpenCTIEmulator
    from reconciler.wiring import open_engine, open_sightings

    clock = SystemClock()
    configure_logging("warning", "text")
    with DefenderEmulator() as defender, OpenCTIEmulator() as opencti:
        # The dataset's dates are relative to `today` so that most indicators are live now.
        today = clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
        opencti.load(generate_indicators(count, seed=seed, now=today))
        settings = demo_settings(defender, opencti)
        configure_logging("warning", "text", secrets=settings.secrets())
        out.write(
            f"Sandbox up: Defender API {defender.url}, OpenCTI {opencti.url} "
            f"({count} generated indicators, stream {opencti.stream_id})\n"
        )
        ok = True
        with open_engine(settings, clock=clock) as engine:
            _heading(out, "1. reconciler plan (empty Defender tenant)", color)
            plan = engine.plan()
            out.write(report.render_text(plan, color=color, limit_per_kind=8))

            _heading(out, "2. reconciler apply", color)
            before = defender.counts()
            result = engine.apply(plan)
            out.write(result.summary() + "\n")
            out.write(f"Defender API calls: {_calls(before, defender.counts())}\n")
            ok &= result.ok

            _heading(out, "3. reconciler plan again (nothing to do)", color)
            plan = engine.plan()
            out.write(report.render_text(plan, color=color, limit_per_kind=8))
            ok &= plan.is_empty

            _heading(out, "4. drift: edits in the Defender portal and in OpenCTI", color)
            soc = _make_drift(defender, opencti, out)

            _heading(out, "5. reconciler plan (shows exactly that drift)", color)
            plan = engine.plan()
            out.write(report.render_text(plan, color=color, limit_per_kind=8))
            ok &= not plan.is_empty

            _heading(out, "6. reconciler apply (repairs it)", color)
            before = defender.counts()
            result = engine.apply(plan)
            out.write(result.summary() + "\n")
            out.write(f"Defender API calls: {_calls(before, defender.counts())}\n")
            ok &= result.ok

            _heading(out, "7. reconciler plan (in sync again)", color)
            plan = engine.plan()
            out.write(report.render_text(plan, color=color, limit_per_kind=8))
            ok &= plan.is_empty
            soc_now = defender.get(soc["id"])
            ok &= soc_now is not None and soc_now.get("lastUpdatedBy") is None

            _heading(out, "8. back in OpenCTI: each indicator shows its deployment", color)
            outcome = engine.reconcile_full()
            report_wb = outcome.write_back
            out.write((report_wb.summary() if report_wb else "write-back off") + "\n")
            ok &= _show_statuses(defender, opencti, out)

            _heading(out, "9. a hit on an endpoint becomes a sighting in OpenCTI", color)
            with open_sightings(settings, engine, clock=clock) as job:
                ok &= job is not None and _show_sighting(defender, opencti, job, out)
        out.write(
            "\nDemo finished: "
            + ("every step behaved as expected.\n" if ok else "SOMETHING WENT WRONG.\n")
        )
        out.flush()
        return 0 if ok else 1


def _show_statuses(defender: DefenderEmulator, opencti: OpenCTIEmulator, out: IO[str]) -> bool:
    """Step 8: the references of one deployed and one not-deployed indicator."""
    from reconciler.writeback import NOT_DEPLOYED, SOURCE_NAME, strip_marker

    owned = sorted(
        (r for r in defender.indicators() if r.get("application") == "opencti"),
        key=lambda r: int(r["id"]),
    )
    shown = 0
    examples = [str(owned[0]["externalId"])] if owned else []
    for record in opencti.indicators():
        refs = opencti.external_references(record["id"])
        if any(r["external_id"].startswith(NOT_DEPLOYED) for r in refs):
            examples.append(record["id"])
            break
    for oid in examples:
        found = opencti.indicator(oid)
        out.write(f"OpenCTI indicator {found['name'] if found else oid!r}:\n")
        for ref in opencti.external_references(oid):
            if ref["source_name"].startswith(SOURCE_NAME):
                shown += 1
                out.write(f"  external reference: {ref['source_name']} · {ref['external_id']}\n")
                if ref.get("url"):
                    out.write(f"    {ref['url']}\n")
                out.write(f"    {strip_marker(ref['description'])}\n")
    return shown >= 2


def _show_sighting(
    defender: DefenderEmulator, opencti: OpenCTIEmulator, job: Any, out: IO[str]
) -> bool:
    """Step 9: a device matches one of our indicators; the next pass records a sighting."""
    row = next(r for r in defender.indicators() if r.get("application") == "opencti")
    # A few seconds ago: the pass reads alerts last updated before its own start.
    at = datetime.now(UTC) - timedelta(seconds=5)
    alert = defender.raise_hit(row["indicatorType"], row["indicatorValue"], device="wks-042", at=at)
    out.write(
        f"Defender alert {alert['id']}: device wks-042 matched {row['indicatorType']} "
        f"{row['indicatorValue']}\n"
    )
    report = job.run()
    out.write(
        f"sightings pass: {report.alerts} alert(s) read, {report.hits} hit(s) of our "
        f"indicators, {report.sightings} sighting(s) written\n"
    )
    found = [s for s in opencti.sightings() if s["from_id"] == row["externalId"]]
    for sighting in found:
        where = next((i["name"] for i in opencti.identities() if i["id"] == sighting["to_id"]), "?")
        out.write(
            f"OpenCTI sighting of {row['externalId']}: count {sighting['attribute_count']}, "
            f"seen by {where!r} from {sighting['first_seen']} to {sighting['last_seen']}\n"
        )
        for ref in sighting["external_references"]:
            out.write(f"  alert link: {ref.get('url')}\n")
    return len(found) == 1 and found[0]["attribute_count"] == 1


def _make_drift(defender: DefenderEmulator, opencti: OpenCTIEmulator, out: IO[str]) -> RawIndicator:
    """Step 4: a portal edit, a portal delete, an action flip, a stray owned indicator, a SOC
    indicator on a desired value and an OpenCTI revocation; returns the SOC's row."""
    owned = [r for r in defender.indicators() if r.get("application") == "opencti"]
    owned.sort(key=lambda r: int(r["id"]))
    a, b, c, e = owned[0], owned[1], owned[2], owned[4]
    defender.update_indicator(a["id"], severity="Informational", title="edited in portal")
    out.write(f"  portal: severity/title of {a['indicatorValue']} edited\n")
    defender.delete_indicator(b["id"])
    out.write(f"  portal: {b['indicatorValue']} deleted by hand\n")
    flipped = "Audit" if e["action"] != "Audit" else "Block"
    defender.update_indicator(e["id"], action=flipped, generateAlert=True)
    out.write(f"  portal: action of {e['indicatorValue']} changed to {flipped}\n")
    stray = defender.add_indicator(
        indicatorValue="stray-owned.example",
        indicatorType="DomainName",
        action="Block",
        title="left over",
        description="owned but no longer in OpenCTI",
        application="opencti",
        severity="High",
        generateAlert=True,
    )
    out.write(f"  stray owned indicator {stray['indicatorValue']} appeared\n")
    soc = defender.add_indicator(
        indicatorValue=c["indicatorValue"],
        indicatorType=c["indicatorType"],
        action="Allowed",
        title="SOC exception",
        description="made by the SOC team",
        application="SOC",
        createdBySource="Portal",
    )
    out.write(
        f"  SOC team added their own {soc['indicatorValue']} (Allowed): never touched; "
        "our copy of that value is removed (the value is theirs now)\n"
    )
    deployed = {str(r.get("externalId")) for r in owned[5:]}
    revoked_id = _revoke_one(opencti, deployed)
    out.write(f"  OpenCTI: indicator {revoked_id} revoked\n")
    return soc


def _revoke_one(opencti: OpenCTIEmulator, deployed: set[str]) -> str:
    """Revoke one deployed, single-value indicator of the fake OpenCTI; return its id."""
    for rec in sorted(opencti.indicators(), key=lambda r: str(r["id"])):
        pattern = str(rec.get("pattern", ""))
        if rec["id"] in deployed and " OR " not in pattern and not rec.get("revoked"):
            opencti.revoke_indicator(rec["id"])
            return str(rec["id"])
    raise RuntimeError("no indicator to revoke in the demo dataset")


def serve_sandbox(
    *,
    count: int,
    seed: int,
    config_out: str,
    defender_port: int = 0,
    opencti_port: int = 0,
    out: IO[str],
    stop: threading.Event | None = None,
) -> int:
    """Run both emulators until interrupted and write a ready-to-use config file for them.

    ``reconciler sandbox all --write-config sandbox.yml`` in one terminal, then
    ``reconciler plan --config sandbox.yml`` in another: a dry-run plan without a tenant."""
    import signal
    import threading
    from pathlib import Path

    import yaml

    from reconciler.logs import configure_logging
    from reconciler.sandbox.dataset import generate_indicators
    from reconciler.sandbox.defender import DefenderEmulator
    from reconciler.sandbox.opencti import OpenCTIEmulator

    configure_logging("warning", "text")
    event = stop or threading.Event()
    if stop is None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: event.set())
    cert_dir = Path(config_out).resolve().parent / ".sandbox-certs"
    with (
        DefenderEmulator(port=defender_port, cert_dir=str(cert_dir)) as defender,
        OpenCTIEmulator(port=opencti_port) as opencti,
    ):
        today = SystemClock().now().replace(hour=0, minute=0, second=0, microsecond=0)
        opencti.load(generate_indicators(count, seed=seed, now=today))
        doc = {
            "opencti": {"url": opencti.url, "token": opencti.token},
            "connector": {
                "id": "6f0f4b9e-2b1c-4c51-9d5f-0d5f3c1c2a10",
                "name": "OpenCTI Defender Reconciler (sandbox)",
                "live_stream_id": opencti.stream_id,
                "log_level": "info",
            },
            "microsoft_defender_intel": {
                "tenant_id": defender.tenant_id,
                "client_id": defender.client_id,
                "client_secret": defender.client_secret,
                "login_url": defender.login_url,
                "base_url": defender.url,
                "ca_bundle": defender.ca_file,
                "graph_url": defender.graph_url,
            },
            "reconciler": {"interval_seconds": 60, "http_port": 9095},
        }
        header = (
            "# Written by `reconciler sandbox all`: points at the local emulators.\n"
            "# The token and secret below are the emulators' own test values, not secrets.\n"
        )
        Path(config_out).write_text(header + yaml.safe_dump(doc, sort_keys=False))
        out.write(
            f"Sandbox running (Ctrl-C to stop):\n"
            f"  Defender API emulator : {defender.url}\n"
            f"  fake OpenCTI          : {opencti.url} ({count} indicators, "
            f"stream {opencti.stream_id})\n"
            f"  config written to     : {config_out}\n\n"
            f"In another terminal:\n"
            f"  reconciler plan --config {config_out}\n"
            f"  reconciler apply --config {config_out}\n"
            f"  reconciler run --config {config_out}\n"
        )
        out.flush()
        event.wait()
    return 0
