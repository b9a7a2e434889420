"""The command line: exit codes, stdout/stderr separation, one-line errors, no secrets."""

from __future__ import annotations

import io
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.opencti import OpenCTIEmulator
from tests.e2e.support import write_config


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_bad_config_is_one_clear_message_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "config.yml"
    cfg.write_text(
        "opencti:\n  url: http://x\n  token: s3cr3t-token-value\n"
        "microsoft_defender_intel:\n  expire_time: -3\n  action: Blok\n"
    )
    monkeypatch.setenv("MICROSOFT_DEFENDER_INTEL_CLIENT_SECRET", "another-s3cr3t-value")
    code, out, err = run("plan", "--config", str(cfg))
    assert code == 1
    assert out == ""
    assert err.startswith("error: invalid configuration")
    assert "microsoft_defender_intel.action (MICROSOFT_DEFENDER_INTEL_ACTION" in err
    assert "Warn, Block, Audit" in err
    assert "microsoft_defender_intel.expire_time" in err
    assert "connector.live_stream_id (CONNECTOR_LIVE_STREAM_ID): required" in err
    assert "Traceback" not in err
    assert "s3cr3t" not in err


def test_missing_config_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    code, _, err = run("plan", "--config", str(tmp_path / "nope.yml"))
    assert code == 1
    assert err.startswith("error:") and "Traceback" not in err


def test_version_and_module_entry_point() -> None:
    code, out, _ = run("version")
    assert code == 0 and out.strip()
    res = subprocess.run(
        [sys.executable, "-m", "reconciler", "--help"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0
    for command in ("plan", "apply", "check", "run", "demo", "sandbox"):
        assert command in res.stdout


def test_check_reports_each_step(tmp_path: Path) -> None:
    with DefenderEmulator() as defender, OpenCTIEmulator() as opencti:
        cfg = write_config(tmp_path / "c.yml", defender, opencti)
        code, out, _ = run("check", "--config", str(cfg))
        assert code == 0, out
        assert out.count("[ ok ]") == 8
        assert "[ ok ] Graph alerts permission (sightings): GET " in out
        assert "[ ok ] OpenCTI live stream access: the token may read it" in out
        assert "[ ok ] Stream position storage: in OpenCTI's connector state" in out
        assert "[ ok ] Defender write permission: the token carries Ti.ReadWrite.All" in out
        bad = write_config(
            tmp_path / "bad.yml",
            defender,
            opencti,
            microsoft_defender_intel__client_secret="wrong-secret-value",
        )
        code, out, err = run("check", "--config", str(bad))
        assert code == 1
        assert "[fail] Defender token" in out and "AADSTS7000215" in out
        assert "hint:" in out
        assert "wrong-secret-value" not in out + err


def test_check_fails_before_any_write_without_the_write_permission(tmp_path: Path) -> None:
    """The roles claim of the token says what the app may do: Ti.ReadWrite alone is refused
    with a hint, and nothing is written."""
    with DefenderEmulator(roles=("Ti.ReadWrite",)) as defender, OpenCTIEmulator() as opencti:
        cfg = write_config(tmp_path / "c.yml", defender, opencti)
        code, out, _ = run("check", "--config", str(cfg))
        assert code == 1, out
        assert "[fail] Defender write permission: the token carries Ti.ReadWrite, not " in out
        assert "hint: grant the application permission Ti.ReadWrite.All" in out
        assert not [r for r in defender.requests if r.endpoint in ("import", "batch_delete")]


def test_check_names_the_opencti_capabilities_a_token_lacks(tmp_path: Path) -> None:
    """A user who may read knowledge but not the (non-public) live stream, nor register the
    connector whose state keeps the stream position."""
    with (
        DefenderEmulator() as defender,
        OpenCTIEmulator(capabilities=("KNOWLEDGE",)) as opencti,
    ):
        cfg = write_config(tmp_path / "c.yml", defender, opencti)
        code, out, _ = run("check", "--config", str(cfg))
        assert code == 1, out
        assert "[fail] OpenCTI live stream access: live stream 'stream-1' refused" in out
        assert "'Access data sharing' (TAXIIAPI)" in out
        assert "[fail] Stream position storage: the user's capabilities are KNOWLEDGE" in out
        assert "'Connectors API usage' (CONNECTORAPI)" in out
        # With a public stream and a state file, the same user is enough.
        opencti.stream_public = True
        state = tmp_path / "state" / "position.json"
        cfg = write_config(
            tmp_path / "c2.yml", defender, opencti, reconciler__state_path=str(state)
        )
        code, out, _ = run("check", "--config", str(cfg))
        assert code == 0, out
        assert f"[ ok ] Stream position storage: {state} can be written" in out


def test_check_notes_an_api_that_announced_its_end_of_life(tmp_path: Path) -> None:
    with DefenderEmulator(deprecation=True) as defender, OpenCTIEmulator() as opencti:
        cfg = write_config(tmp_path / "c.yml", defender, opencti)
        code, out, _ = run("check", "--config", str(cfg))
        assert code == 0, out
        assert "[note] Defender API lifecycle: list: deprecated" in out
        assert "sunset 2027-02-01" in out


def test_apply_json_output_carries_apply_results(tmp_path: Path) -> None:
    from reconciler.sandbox.dataset import generate_indicators
    from tests.e2e.support import TODAY

    with DefenderEmulator() as defender, OpenCTIEmulator() as opencti:
        opencti.load(generate_indicators(40, seed=2, now=TODAY))
        cfg = write_config(tmp_path / "c.yml", defender, opencti)
        import json

        code, out, _ = run("apply", "--config", str(cfg), "--output", "json")
        assert code == 0
        doc = json.loads(out)
        assert doc["format_version"] == "1"
        assert doc["apply"]["applied"]["create"] == doc["summary"]["create"] > 0
        assert doc["apply"]["failed"] == []


def test_dry_run_apply_writes_nothing(tmp_path: Path) -> None:
    from reconciler.sandbox.dataset import generate_indicators
    from tests.e2e.support import TODAY

    with DefenderEmulator() as defender, OpenCTIEmulator() as opencti:
        opencti.load(generate_indicators(40, seed=2, now=TODAY))
        cfg = write_config(tmp_path / "c.yml", defender, opencti, reconciler__dry_run=True)
        code, out, _ = run("apply", "--config", str(cfg))
        assert code == 0
        assert "Would apply" in out
        assert defender.counts().get("import", 0) == 0
        assert defender.indicators() == []


def test_sandbox_defender_help_passes_through() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "reconciler", "sandbox", "defender", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0
    assert "--port" in res.stdout


def test_check_names_the_graph_permission_sightings_need(tmp_path: Path) -> None:
    with DefenderEmulator(graph_roles=()) as defender, OpenCTIEmulator() as opencti:
        cfg = write_config(tmp_path / "c.yml", defender, opencti)
        code, out, _ = run("check", "--config", str(cfg))
        assert code == 1, out
        assert "[fail] Graph alerts permission (sightings)" in out
        assert (
            "hint: grant the Microsoft Graph application permission SecurityAlert.Read.All" in out
        )
        off = write_config(tmp_path / "off.yml", defender, opencti, reconciler__sightings=False)
        code, out, _ = run("check", "--config", str(off))
        assert code == 0 and "Graph" not in out, out
