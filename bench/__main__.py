"""``python -m bench`` (``make bench``): the benchmarks; prints a table, writes bench/results.json.

Owns the driver: starts ``bench.servers`` (both emulators + control endpoint) in one process,
runs the reconciler CLI as separate processes against it, and measures each reconciler
process (wall time, CPU time, peak RSS from ``os.wait4``) and the Defender calls it made (the
emulator's request log). Must not: import the reconciler's own code (only the documented rate
limits of the emulator), or be part of ``make test``.
"""

from __future__ import annotations

import sys

from bench.run import main

if __name__ == "__main__":
    sys.exit(main())
