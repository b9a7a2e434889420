"""Pausing Python's cyclic garbage collector while a pass builds large object graphs.

Owns one context manager. A 15,000-indicator pass allocates a few hundred thousand small
containers (JSON rows, models, tuples); each allocation burst triggers the cyclic collector,
whose older-generation sweeps walk the whole growing heap again and again. That was about a
third of a no-op reconcile's CPU (measured with ``make bench``). The data built here holds no
reference cycles, so reference counting frees it; the collector is re-enabled when the
outermost pass ends and catches up then. Must not: be held across waits of unbounded length
(the controller holds it only for one reconcile pass).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["paused_gc", "release_memory"]

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def paused_gc() -> Iterator[None]:
    """Disable the cyclic collector for the block (nestable, thread-safe); restore it after."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()


def _libc_trim() -> ctypes._FuncPointer | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return getattr(libc, "malloc_trim", None) if libc is not None else None
    except OSError:
        return None


_TRIM = _libc_trim()


def release_memory() -> None:
    """After a pass: collect what the paused collector left, and hand the C heap's free pages
    back to the system (glibc's ``malloc_trim``; nothing elsewhere), so the next pass starts
    from a compact heap instead of stacking its peak on the last one's fragments."""
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)
