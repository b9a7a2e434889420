"""The README is the user's manual: it must name every setting and every command."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.config import ENV_VARS
from reconciler.metrics import Metrics

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize("dotted", sorted(ENV_VARS), ids=str)
def test_every_setting_is_documented_with_its_env_var(dotted: str) -> None:
    assert f"`{dotted}`" in README
    assert f"`{ENV_VARS[dotted]}`" in README


@pytest.mark.parametrize(
    "command", ["plan", "apply", "check", "run", "demo", "sandbox all", "sandbox defender"]
)
def test_every_command_is_documented(command: str) -> None:
    assert f"reconciler {command}" in README


def test_every_metric_is_documented() -> None:
    names = {m.name for m in Metrics().registry.collect()}
    missing = []
    for name in names:
        # counters are exposed with a _total suffix
        if f"`{name}`" not in README and f"`{name}_total`" not in README:
            missing.append(name)
    assert not missing, f"metrics missing from the README: {missing}"


def test_quick_start_starts_with_make_demo_then_make_test() -> None:
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = [
        line.split("#")[0].strip() for line in quick.splitlines() if line.startswith("make ")
    ]
    assert commands[:2] == ["make demo", "make test"]
