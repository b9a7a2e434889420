"""A newcomer following the README reaches a dry-run plan against the sandbox:
`reconciler sandbox all --write-config sandbox.yml`, then `reconciler plan --config sandbox.yml`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.e2e.support import wait_for


def test_sandbox_all_then_plan_as_in_the_readme(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "OPENCTI_"))}
    config = tmp_path / "sandbox.yml"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler",
            "sandbox",
            "all",
            "--count",
            "200",
            "--write-config",
            str(config),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(config.exists, 60, "the sandbox config file")
        plan = subprocess.run(
            [
                sys.executable,
                "-m",
                "reconciler",
                "plan",
                "--config",
                str(config),
                "--detailed-exitcode",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert plan.returncode == 2, plan.stdout + plan.stderr
        assert "to create" in plan.stdout
        readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
        assert "reconciler sandbox all --write-config sandbox.yml" in readme
        assert "reconciler plan  --config sandbox.yml" in readme
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
