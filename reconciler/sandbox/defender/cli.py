"""Command line of the Defender emulator: a banner with a config snippet, serve until stopped.

``reconciler sandbox defender`` and ``python -m reconciler.sandbox.defender`` both run
:func:`main`.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from reconciler.sandbox.defender.emulator import DefenderEmulator
from reconciler.sandbox.defender.forms import DEFAULT_DENY_VALUES
from reconciler.sandbox.defender.graph import (
    DEFAULT_TOP,
    DETECTION_SOURCE_FILTER,
    NEXT_LINK,
    ORDERBY,
    TOP_OVER_MAX,
)
from reconciler.sandbox.defender.lifecycle import DEFAULT_SUNSET
from reconciler.sandbox.defender.login import ALERT_READ_ALL, TOKEN_FORMATS
from reconciler.sandbox.defender.odata import ODATA_MODES

_UPSERT_KEYS = {
    "type-value-action": ("indicatorType", "indicatorValue", "action"),
    "type-value": ("indicatorType", "indicatorValue"),
}


def describe(emulator: DefenderEmulator) -> str:
    """The banner: URLs and a matching reconciler config snippet (YAML)."""
    lines = [
        "Defender for Endpoint emulator running",
        f"  API base  : {emulator.url}",
        f"  login     : {emulator.login_url}  (authority {emulator.authority})",
        f"  CA bundle : {emulator.ca_file or '(plain HTTP)'}",
        f"  variants  : {variants(emulator)}",
    ]
    if emulator.graph:
        lines += [
            f"  Graph     : {emulator.graph_url}/v1.0/security/alerts_v2  "
            f"(scope {emulator.graph_scope}; hits: POST {emulator.url}/_test/hits)",
            f"  graph     : {graph_variants(emulator)}",
        ]
    lines += [
        "",
        "# reconciler config snippet",
        "microsoft_defender_intel:",
        f"  tenant_id: {emulator.tenant_id}",
        f"  client_id: {emulator.client_id}",
        f"  client_secret: {emulator.client_secret}  # the emulator's own test secret",
        f"  login_url: {emulator.login_url}",
        f"  base_url: {emulator.url}",
    ]
    if emulator.graph:
        lines.append(f"  graph_url: {emulator.graph_url}")
    if emulator.ca_file:
        lines.append(f"  ca_bundle: {emulator.ca_file}")
    return "\n".join(lines)


def variants(emulator: DefenderEmulator) -> str:
    """The behaviour variants in force, one ``name=value`` each."""
    chosen = {
        "upsert_key": "+".join(emulator.upsert_key),
        "batch_rejection": emulator.batch_rejection,
        "echo": emulator.echo,
        "odata": emulator.odata,
        "deprecation": emulator.deprecation,
        "retired": emulator.retired,
        "token_format": emulator.token_format,
        "batch_delete_atomic": emulator.batch_delete_atomic,
    }
    return " ".join(f"{name}={value}" for name, value in chosen.items())


def graph_variants(emulator: DefenderEmulator) -> str:
    """The Graph behaviour variants in force, one ``name=value`` each."""
    chosen = {
        "graph_roles": "+".join(emulator.graph_roles) or "(none)",
        "graph_detection_source_filter": emulator.graph_detection_source_filter,
        "graph_next_link": emulator.graph_next_link,
        "graph_default_top": emulator.graph_default_top,
        "graph_max_top": emulator.graph_max_top,
        "graph_top_over_max": emulator.graph_top_over_max,
        "graph_max_skip": emulator.graph_max_skip,
        "graph_orderby": emulator.graph_orderby,
        "graph_rate_limit_per_minute": emulator.graph_rate_limit_per_minute,
    }
    return " ".join(f"{name}={value}" for name, value in chosen.items())


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
    **knobs: Any,
) -> None:
    """Run an emulator until ``stop`` is set or Ctrl-C; print URLs and a config snippet.

    ``knobs`` are further ``DefenderEmulator`` keywords (the behaviour variants)."""
    emulator = DefenderEmulator(
        host=host,
        port=port,
        tls=tls,
        seed=seed,
        token_lifetime=token_lifetime,
        rate_limits=rate_limits,
        cert_dir=cert_dir,
        **knobs,
    )
    stop = stop or threading.Event()
    with emulator:
        print(describe(emulator), file=out or sys.stdout, flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass


def build_parser() -> argparse.ArgumentParser:
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
    variants = parser.add_argument_group(
        "behaviour variants", "answers Microsoft does not document; defaults as listed"
    )
    variants.add_argument("--upsert-key", choices=tuple(_UPSERT_KEYS), default="type-value-action")
    variants.add_argument(
        "--batch-rejection",
        choices=("per-item", "whole-batch"),
        default="per-item",
        help="an import with a refused item: that item fails, or the whole call (400)",
    )
    variants.add_argument(
        "--deny-values",
        default=",".join(DEFAULT_DENY_VALUES),
        help="comma-separated values Defender refuses to act on ('' for none)",
    )
    variants.add_argument(
        "--echo",
        choices=("as-sent", "equivalent"),
        default="as-sent",
        help="rows listed as sent, or in an equivalent form (upper-case hashes, ...)",
    )
    variants.add_argument("--odata", choices=ODATA_MODES, default="lenient")
    variants.add_argument("--odata-node-limit", type=int, default=100, help="strict OData only")
    variants.add_argument("--url-limit", type=int, default=2048, help="strict OData only: 414")
    variants.add_argument("--deprecation", action="store_true", help="Deprecation headers")
    variants.add_argument(
        "--sunset", default=DEFAULT_SUNSET, help="Sunset date of --deprecation ('' for none)"
    )
    variants.add_argument("--retired", action="store_true", help="every API call answers 410")
    variants.add_argument("--token-format", choices=TOKEN_FORMATS, default="jwt")
    variants.add_argument(
        "--batch-delete-non-atomic",
        action="store_true",
        help="BatchDelete with an unknown id still deletes the known ones",
    )
    variants.add_argument(
        "--all-strict",
        action="store_true",
        help="type+value upsert, whole-batch rejection, equivalent echo, strict OData, "
        "deprecation headers (over the flags above)",
    )
    graph = parser.add_argument_group(
        "Microsoft Graph", "alerts_v2 on the same port; undocumented answers, defaults as listed"
    )
    graph.add_argument(
        "--no-graph",
        dest="graph",
        action="store_false",
        help="do not serve Graph alerts_v2 nor POST /_test/hits (served by default)",
    )
    graph.add_argument(
        "--graph-roles",
        default=ALERT_READ_ALL,
        help="comma-separated application roles of Graph tokens ('' for none)",
    )
    graph.add_argument(
        "--graph-detection-source-filter",
        choices=DETECTION_SOURCE_FILTER,
        default="accepted",
        help="detectionSource in $filter: accepted, or refused with 400",
    )
    graph.add_argument("--graph-next-link", choices=NEXT_LINK, default="present")
    graph.add_argument("--graph-default-top", type=int, default=DEFAULT_TOP)
    graph.add_argument("--graph-max-top", type=int, default=DEFAULT_TOP)
    graph.add_argument(
        "--graph-top-over-max",
        choices=TOP_OVER_MAX,
        default="cap",
        help="a $top over the maximum: capped silently, or 400",
    )
    graph.add_argument(
        "--graph-max-skip", type=int, default=None, help="a larger $skip answers 400"
    )
    graph.add_argument("--graph-orderby", choices=ORDERBY, default="refused")
    graph.add_argument(
        "--graph-rate-limit-per-minute",
        type=int,
        default=None,
        help="Graph calls a minute before 429 (default: no limit)",
    )
    return parser


def emulator_options(argv: list[str] | None = None) -> dict[str, Any]:
    """The ``serve_forever`` keywords the command line asks for."""
    args = build_parser().parse_args(argv)
    return {
        "host": args.host,
        "port": args.port,
        "tls": not args.no_tls,
        "seed": args.seed,
        "token_lifetime": args.token_lifetime,
        "rate_limits": not args.no_rate_limits,
        "cert_dir": args.cert_dir,
        "upsert_key": _UPSERT_KEYS[args.upsert_key],
        "batch_rejection": args.batch_rejection.replace("-", "_"),
        "deny_values": tuple(v.strip() for v in args.deny_values.split(",") if v.strip()),
        "echo": args.echo.replace("-", "_"),
        "odata": args.odata,
        "odata_node_limit": args.odata_node_limit,
        "url_limit": args.url_limit,
        "deprecation": args.deprecation,
        "sunset": args.sunset or None,
        "retired": args.retired,
        "token_format": args.token_format,
        "batch_delete_atomic": not args.batch_delete_non_atomic,
        "strict": args.all_strict,
        "graph": args.graph,
        "graph_roles": tuple(v.strip() for v in args.graph_roles.split(",") if v.strip()),
        "graph_detection_source_filter": args.graph_detection_source_filter,
        "graph_next_link": args.graph_next_link,
        "graph_default_top": args.graph_default_top,
        "graph_max_top": args.graph_max_top,
        "graph_top_over_max": args.graph_top_over_max,
        "graph_max_skip": args.graph_max_skip,
        "graph_orderby": args.graph_orderby,
        "graph_rate_limit_per_minute": args.graph_rate_limit_per_minute,
    }


def main(
    argv: list[str] | None = None,
    *,
    stop: threading.Event | None = None,
    out: TextIO | None = None,
) -> int:
    """Serve as the command line asks until ``stop`` is set or Ctrl-C."""
    serve_forever(stop=stop, out=out, **emulator_options(argv))
    return 0
