"""Command line of the fake OpenCTI: serve a generated dataset until interrupted.

``reconciler sandbox opencti`` and ``python -m reconciler.sandbox.opencti`` both run :func:`main`.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator

from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.opencti.emulator import OpenCTIEmulator


def _config_snippet(emu: OpenCTIEmulator) -> Iterator[str]:
    yield "opencti:"
    yield f"  url: {emu.url}"
    yield f"  token: {emu.token}  # sandbox token, not a secret"
    yield "connector:"
    yield f"  live_stream_id: {emu.stream_id}"


def main(argv: list[str] | None = None) -> int:
    """Serve a fake OpenCTI with a generated dataset until interrupted."""
    parser = argparse.ArgumentParser(prog="reconciler sandbox opencti", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--count", type=int, default=1000, help="generated indicators")
    parser.add_argument(
        "--lazy",
        action="store_true",
        help="make the indicators on demand (for large counts: a million costs a few MB)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stream-id", default="stream-1")
    parser.add_argument("--token", default="opencti-token")
    args = parser.parse_args(argv)
    emu = OpenCTIEmulator(
        host=args.host, port=args.port, token=args.token, stream_id=args.stream_id, seed=args.seed
    )
    if args.lazy:
        emu.load_generated(args.count, seed=args.seed)
    else:
        emu.load(generate_indicators(args.count, args.seed))
    emu.start()
    print(f"fake OpenCTI on {emu.url} ({args.count} indicators, stream {emu.stream_id})")
    print("\n".join(_config_snippet(emu)), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0
