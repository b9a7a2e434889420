"""``make demo`` runs ``reconciler demo``: the story the README promises, in a fresh process."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_tells_the_whole_story_in_under_a_minute() -> None:
    assert "$(BIN)/reconciler demo" in (ROOT / "Makefile").read_text()
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "reconciler", "demo", "--no-color"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - started < 60
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    plans = [
        tuple(int(n) for n in m)
        for m in re.findall(
            r"^Plan: (\d+) to create, (\d+) to update, (\d+) to replace, (\d+) to delete, "
            r"(\d+) to expire",
            run.stdout,
            flags=re.M,
        )
    ]
    first, again, drift, final = plans
    assert first[0] > 100 and first[1:] == (0, 0, 0, 0)  # cold: creates only
    assert again == final == (0, 0, 0, 0, 0)  # in sync, before and after the drift
    # A portal delete, an edit and an action flip; the stray and our copy of the value the SOC
    # now holds are deleted; a revocation expires.
    assert drift == (1, 1, 1, 2, 1)
    assert "never touched" in run.stdout
    assert run.stdout.rstrip().endswith("every step behaved as expected.")
    # Back in OpenCTI: a deployed indicator's Defender id and link, a not-deployed one's reason.
    assert "external reference: Microsoft Defender for Endpoint · " in run.stdout
    assert (
        "custom_ti_indicators/" in run.stdout and "Not deployed to Microsoft Defender" in run.stdout
    )
    # A hit on an emulated endpoint became a sighting.
    assert re.search(r"OpenCTI sighting of \S+: count 1, seen by 'Microsoft Defender", run.stdout)
