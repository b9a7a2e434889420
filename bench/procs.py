"""Process plumbing of the bench: the sandbox process, its control calls, measured children.

Owns: starting/stopping ``bench.servers``, JSON calls to its control endpoint, writing a
reconciler config for it, and running one reconciler process with its own resource usage
(``os.wait4``: CPU user+system, peak RSS) and wall time. Must not: decide what is measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


class Control:
    """The sandbox process and its loopback control endpoint."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.servers"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the sandbox process exited before it was ready")
        self.url = json.loads(line)["control"]

    def call(self, path: str, **args: Any) -> dict[str, Any]:
        data = json.dumps(args).encode() if args else None
        request = urllib.request.Request(self.url + path, data=data, method="POST")
        with urllib.request.urlopen(request, timeout=300) as response:
            result: dict[str, Any] = json.loads(response.read())
        return result

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.call("/shutdown")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def write_config(
    path: Path, info: dict[str, Any], *, log_level: str = "warning", **reconciler: Any
) -> Path:
    """A reconciler config for the sandbox ``info`` (``/setup`` answer)."""
    doc: dict[str, Any] = {
        "opencti": {"url": info["opencti"]["url"], "token": info["opencti"]["token"]},
        "connector": {
            "id": "7d3c2f1e-0000-4000-8000-00000000be7c",
            "name": "bench",
            "live_stream_id": info["opencti"]["stream_id"],
            "log_level": log_level,
        },
        "microsoft_defender_intel": dict(info["defender"]),
        "reconciler": {"log_format": "text", **reconciler},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@dataclass
class Measured:
    """One finished reconciler process."""

    code: int
    wall: float
    cpu: float
    peak_rss_mb: float
    stdout: str
    stderr: str


def reconciler_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "reconciler", *args]


def measure(args: list[str], *, timeout: float = 600) -> Measured:
    """Run one reconciler process to completion; its own rusage via ``os.wait4``."""
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{os.getpid()}-out.txt"
    err_path = out_path.with_suffix(".err")
    with out_path.open("w") as out, err_path.open("w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=err)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = out_path.read_text(), err_path.read_text()
    out_path.unlink(missing_ok=True)
    err_path.unlink(missing_ok=True)
    return Measured(
        code=proc.returncode,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,  # Linux reports KiB
        stdout=stdout,
        stderr=stderr,
    )
