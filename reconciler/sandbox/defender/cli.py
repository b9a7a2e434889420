"""Command line of the Defender emulator: a banner with a config snippet, serve until stopped.

``reconciler sandbox defender`` and ``python -m reconciler.sandbox.defender`` both run
:func:`main`.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import TextIO

from reconciler.sandbox.defender.emulator import DefenderEmulator


def describe(emulator: DefenderEmulator) -> str:
    """The banner: URLs and a matching reconciler config snippet (YAML)."""
    lines = [
        "Defender for Endpoint emulator running",
        f"  API base  : {emulator.url}",
        f"  login     : {emulator.login_url}  (authority {emulator.authority})",
        f"  CA bundle : {emulator.ca_file or '(plain HTTP)'}",
        "",
        "# reconciler config snippet",
        "microsoft_defender_intel:",
        f"  tenant_id: {emulator.tenant_id}",
        f"  client_id: {emulator.client_id}",
        f"  client_secret: {emulator.client_secret}  # the emulator's own test secret",
        f"  login_url: {emulator.login_url}",
        f"  base_url: {emulator.url}",
    ]
    if emulator.ca_file:
        lines.append(f"  ca_bundle: {emulator.ca_file}")
    return "\n".join(lines)


def serve_forever(
    port: int = 8443,
    tls: bool = True,
    *,
    host: str = "127.0.0.1",
    seed: int = 0,
    token_lifetime: int = 3599,
    rate_limits: bool = True,
    cert_dir: str | Path | None = None,
    stop: threading.Event | None = None,
    out: TextIO | None = None,
) -> None:
    """Run an emulator until ``stop`` is set or Ctrl-C; print URLs and a config snippet."""
    emulator = DefenderEmulator(
        host=host,
        port=port,
        tls=tls,
        seed=seed,
        token_lifetime=token_lifetime,
        rate_limits=rate_limits,
        cert_dir=cert_dir,
    )
    stop = stop or threading.Event()
    with emulator:
        print(describe(emulator), file=out or sys.stdout, flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reconciler.sandbox.defender",
        description="Local Microsoft Defender for Endpoint Indicators API + Entra login emulator.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    parser.add_argument("--no-tls", action="store_true", help="plain HTTP (MSAL needs https)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")
    parser.add_argument("--token-lifetime", type=int, default=3599, help="seconds")
    parser.add_argument("--no-rate-limits", action="store_true")
    parser.add_argument("--cert-dir", default=None, help="where to write ca.pem")
    args = parser.parse_args(argv)
    serve_forever(
        host=args.host,
        port=args.port,
        tls=not args.no_tls,
        seed=args.seed,
        token_lifetime=args.token_lifetime,
        rate_limits=not args.no_rate_limits,
        cert_dir=args.cert_dir,
    )
    return 0
