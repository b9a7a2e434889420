"""Command-line entry point (thin: parse, load config, call, render, exit code)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run the ``reconciler`` command; returns the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    print(f"reconciler: not implemented yet: {' '.join(args)}", file=sys.stderr)
    return 1
