"""The memory helpers of a long pass: the collector pause, the release after a pass and the
process-wide large-allocation setting (and that the process entry sets it)."""

from __future__ import annotations

import gc
import platform
import threading

import pytest

from reconciler import cli, gcpause

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.fixture
def collector_on() -> object:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


@pytest.mark.usefixtures("collector_on")
def test_paused_gc_nests_and_restores_the_collector() -> None:
    with gcpause.paused_gc():
        assert not gc.isenabled()
        with gcpause.paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pass still runs
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_paused_gc_restores_the_collector_when_the_pass_raises() -> None:
    with pytest.raises(RuntimeError), gcpause.paused_gc():
        raise RuntimeError("pass failed")
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_paused_gc_held_by_two_threads_resumes_after_the_last() -> None:
    inside, leave = threading.Event(), threading.Event()

    def other_pass() -> None:
        with gcpause.paused_gc():
            inside.set()
            leave.wait(5)

    worker = threading.Thread(target=other_pass)
    worker.start()
    assert inside.wait(5)
    with gcpause.paused_gc():
        pass
    assert not gc.isenabled()  # the other thread's pass has not ended
    leave.set()
    worker.join(5)
    assert gc.isenabled()


def test_release_memory_collects_what_the_pause_left() -> None:
    class Node:
        other: Node | None = None

    with gcpause.paused_gc():
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: only the collector frees it
        del a, b
    gc.disable()
    try:
        before = sum(isinstance(o, Node) for o in gc.get_objects())
        gcpause.release_memory()
        after = sum(isinstance(o, Node) for o in gc.get_objects())
    finally:
        gc.enable()
    assert (before, after) == (2, 0)


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt")
def test_large_allocations_get_their_own_mappings_on_glibc() -> None:
    assert gcpause.map_large_allocations() is True


def test_the_process_entry_sets_large_allocations_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[str] = []

    def record() -> bool:
        calls.append("set")
        return True

    monkeypatch.setattr(cli, "map_large_allocations", record)
    assert cli.main(["--help"]) == 0
    assert calls == ["set"]
    assert "Usage" in capsys.readouterr().out
