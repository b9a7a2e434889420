"""A newcomer following the README reaches a dry-run plan against the sandbox, then a sync.

The commands are read from the README's "Try it against the sandbox" section and run as
written (``reconciler`` → ``python -m reconciler``, shell comments and ``; echo $?`` dropped),
so the section cannot drift from what works. ``reconciler run`` is left out: it runs until
stopped (the controller's own end-to-end tests cover it)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from tests.e2e.support import wait_for

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[list[str]]:
    """The ``reconciler ...`` lines of the section's bash blocks, as argument lists."""
    text = README.read_text()
    section = text.split("## Try it against the sandbox", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].split("; echo", 1)[0].strip()
            if line.startswith("reconciler "):
                commands.append(shlex.split(line))
    return commands


def test_the_readme_section_holds_the_expected_steps() -> None:
    verbs = [c[1] for c in readme_commands()]
    assert verbs == ["sandbox", "plan", "apply", "plan", "run"]


def test_sandbox_then_plan_then_apply_exactly_as_in_the_readme(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "OPENCTI_"))}
    sandbox, plan, apply, check, _run = readme_commands()
    config = tmp_path / sandbox[sandbox.index("--write-config") + 1]

    def cli(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reconciler", *args[1:]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    server = subprocess.Popen(
        [sys.executable, "-m", "reconciler", *sandbox[1:]],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(config.exists, 60, "the sandbox config file")
        dry = cli(plan)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert "to create" in dry.stdout
        # The dry run wrote nothing: the same check the README ends with still sees changes.
        assert cli(check).returncode == 2
        synced = cli(apply)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        final = cli(check)
        assert final.returncode == 0, final.stdout + final.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
