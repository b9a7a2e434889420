"""Helpers for end-to-end tests: both sandbox servers, a config file, the CLI in-process."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from reconciler.cli import main
from reconciler.demo import demo_settings
from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.opencti import OpenCTIEmulator

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def settings_for(defender: DefenderEmulator, opencti: OpenCTIEmulator, **extra: Any) -> Any:
    """Validated settings for both emulators (the demo's, at the default log level); ``extra``
    are dotted overrides such as ``{"reconciler.dry_run": True}``."""
    return demo_settings(defender, opencti, **{"connector.log_level": "error", **extra})


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


@dataclass
class Sandbox:
    defender: DefenderEmulator
    opencti: OpenCTIEmulator
    config: Path

    def cli(self, *args: str) -> Result:
        """Run the CLI in-process (same code path as the console script)."""
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main([*args[:1], "--config", str(self.config), *args[1:]])
        return Result(code, out.getvalue(), err.getvalue())

    def owned(self) -> list[dict[str, Any]]:
        return [r for r in self.defender.indicators() if r.get("application") == "opencti"]


def write_config(
    path: Path, defender: DefenderEmulator, opencti: OpenCTIEmulator, **extra: Any
) -> Path:
    doc: dict[str, Any] = {
        "opencti": {"url": opencti.url, "token": opencti.token},
        "connector": {
            "id": "7d3c2f1e-0000-4000-8000-00000000e2e0",
            "name": "e2e",
            "live_stream_id": opencti.stream_id,
            "log_level": "warning",
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
        "reconciler": {"log_format": "text"},
    }
    for dotted, value in extra.items():
        section, key = dotted.split("__", 1)
        doc.setdefault(section, {})[key] = value
    path.write_text(yaml.safe_dump(doc))
    return path


def load(sandbox: Sandbox, n: int, seed: int = 1) -> list[dict[str, Any]]:
    records = generate_indicators(n, seed=seed, now=TODAY)
    sandbox.opencti.load(records)
    return records


__all__ = ["TODAY", "Result", "Sandbox", "load", "wait_for", "write_config"]


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``cond`` (the controller is another process: there is no event to wait on)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
