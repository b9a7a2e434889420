"""A stream filter the indicators listing cannot apply exactly stops plan, apply and run,
naming the key and the stream, and nothing is written to Defender: not a create, and not a
delete of what a previous good run deployed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.support import Sandbox, load, write_config

WRITES = ("import", "batch_delete", "submit", "delete")


def test_an_unusable_stream_filter_stops_every_command_and_writes_nothing(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    load(sandbox, 120)
    assert sandbox.cli("apply").code == 0
    deployed = sandbox.defender.indicators()
    assert len(deployed) > 60

    # The stream now selects "score >= 60 AND contained in report X": dropping `objects`
    # would deploy every indicator scored 60+, keeping it out would delete the others.
    sandbox.opencti.stream_filters = {
        "mode": "and",
        "filters": [
            {"key": ["x_opencti_score"], "values": ["60"], "operator": "gte", "mode": "or"},
            {"key": ["objects"], "values": ["report--1"], "operator": "eq", "mode": "or"},
        ],
        "filterGroups": [],
    }
    sandbox.defender.reset_log()
    for command in ("plan", "apply"):
        res = sandbox.cli(command)
        assert res.code == 1, (command, res.stdout, res.stderr)
        assert "'objects'" in res.stderr and "live stream 'stream-1'" in res.stderr
        assert "opencti.listing_filters" in res.stderr

    config = write_config(
        tmp_path / "run.yml",
        sandbox.defender,
        sandbox.opencti,
        reconciler__http_port=0,
        reconciler__state_path=str(tmp_path / "state.json"),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "OPENCTI_"))}
    run = subprocess.run(
        [sys.executable, "-m", "reconciler", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode == 1, run.stderr[-2000:]
    assert "'objects'" in run.stderr and "stopping" in run.stderr

    assert [r.endpoint for r in sandbox.defender.requests if r.endpoint in WRITES] == []
    assert sandbox.defender.indicators() == deployed
