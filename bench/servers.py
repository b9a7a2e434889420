"""The benchmark's sandbox process: both emulators plus a small loopback control endpoint.

Owns: one Defender emulator (documented rate limits, scale 1.0) and one fake OpenCTI, started in
*this* process so the reconciler under test (another process) shares nothing with them; a JSON
control server on 127.0.0.1 that the bench driver uses to load datasets, read the Defender
request log, make portal edits and emit stream events. Run: ``python -m bench.servers``; it
prints one JSON line (the control URL) on stdout when ready.

Must not: import anything from ``reconciler`` outside ``reconciler.sandbox`` (the emulators are
the ground truth), or listen beyond loopback.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from loguru import logger

from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.opencti import OpenCTIEmulator

__all__ = ["Sandbox", "main"]


def anchor() -> datetime:
    """The moment of a setup: generated dates are relative to it, so what a scenario deploys
    does not expire while it runs (the 30-day expiry cap of the seed-1 datasets, up to 70,500
    records, first falls 25 minutes after setup). Anchored at midnight, an indicator deployed
    by a scenario's setup could expire during its measured runs: a correct expire + import,
    counted as writes of a no-op."""
    return datetime.now(UTC)


class Sandbox:
    """The emulators and the operations the control endpoint exposes."""

    def __init__(self) -> None:
        self.defender = DefenderEmulator(rate_limits=True, rate_limit_scale=1.0).start()
        self.opencti: OpenCTIEmulator | None = None
        self._burst_seq = 0

    def close(self) -> None:
        if self.opencti is not None:
            self.opencti.stop()
        self.defender.stop()

    # -- operations (each takes and returns JSON-able values) ---------------------------------

    def setup(self, records: int, seed: int = 1) -> dict[str, Any]:
        """A fresh tenant and a fresh OpenCTI holding ``records`` generated indicators."""
        self.defender.reset()
        if self.opencti is not None:
            self.opencti.stop()
        # Another seed than the dataset's: both draw ids from random.Random(seed), and a
        # stream-created indicator must not reuse (and so replace) a loaded record's id.
        self.opencti = OpenCTIEmulator(seed=seed + 7919).start()
        self.opencti.load(generate_indicators(records, seed=seed, now=anchor()))
        return self.info()

    def setup_generated(self, n: int, seed: int = 1) -> dict[str, Any]:
        """A fresh tenant and a fresh OpenCTI serving a generated population of ``n``
        indicators made on demand (a million cost a few megabytes)."""
        self.defender.reset()
        if self.opencti is not None:
            self.opencti.stop()
        self.opencti = OpenCTIEmulator(seed=seed + 7919).start()
        self.opencti.load_generated(n, seed=seed, now=anchor())
        return self.info()

    def scores(self, ids: list[str]) -> dict[str, Any]:
        """The OpenCTI score of each id (None: unknown), to judge what was deployed."""
        assert self.opencti is not None, "setup first"
        out: dict[str, Any] = {}
        for ident in ids:
            record = self.opencti.indicator(ident)
            out[ident] = None if record is None else record.get("score")
        return {"scores": out}

    def deployed_ids(self) -> dict[str, Any]:
        """The externalId (OpenCTI id) of every indicator the tenant holds."""
        with self.defender._lock:
            rows = list(self.defender._store.rows.values())
        return {"ids": [str(r.get("externalId")) for r in rows if r.get("externalId")]}

    def info(self) -> dict[str, Any]:
        emu, octi = self.defender, self.opencti
        assert octi is not None, "setup first"
        return {
            "opencti": {"url": octi.url, "token": octi.token, "stream_id": octi.stream_id},
            "defender": {
                "tenant_id": emu.tenant_id,
                "client_id": emu.client_id,
                "client_secret": emu.client_secret,
                "login_url": emu.login_url,
                "base_url": emu.url,
                "ca_bundle": emu.ca_file,
                "graph_url": emu.graph_url,
            },
        }

    def rate_limits(self, enabled: bool) -> dict[str, Any]:
        """Switch the documented limits on/off; either way start from an unspent budget."""
        self.defender.rate_limits = enabled
        self.defender.reset_rate_limits()
        return {"rate_limits": enabled}

    def counts(self) -> dict[str, Any]:
        """Defender requests by endpoint since the last reset, and the rows the tenant holds."""
        # ``_store`` is read directly: ``indicators()`` copies every row, too slow to poll.
        with self.defender._lock:
            rows = len(self.defender._store.rows)
        return {"calls": dict(self.defender.counts()), "rows": rows}

    def opencti_counts(self) -> dict[str, Any]:
        """OpenCTI GraphQL requests by root field, and mutation root fields executed (the
        write-back's and the sightings' cost), since the tenant was set up."""
        assert self.opencti is not None, "setup first"
        return {
            "requests": dict(self.opencti.counts()),
            "mutations": self.opencti.mutation_count(),
            "sightings": {s["from_id"]: s["attribute_count"] for s in self.opencti.sightings()},
        }

    def hits(self, n: int, indicators: int) -> dict[str, Any]:
        """``n`` alerts in Defender on ``indicators`` of our deployed values (round robin):
        what each OpenCTI indicator's sighting should count."""
        with self.defender._lock:
            rows = [r for r in self.defender._store.rows.values() if r.get("externalId")]
        rows = sorted(rows, key=lambda r: int(r["id"]))[:indicators]
        expected: dict[str, int] = {}
        for i in range(n):
            row = rows[i % len(rows)]
            self.defender.raise_hit(row["indicatorType"], row["indicatorValue"], device=f"PC-{i}")
            expected[row["externalId"]] = expected.get(row["externalId"], 0) + 1
        return {"expected": expected}

    def odata(self, mode: str) -> dict[str, Any]:
        """The emulator's OData strictness: ``lenient`` or ``strict`` (no ``or``, at most 100
        nodes, 414 above 2,048 characters of URL)."""
        self.defender.odata = mode
        return {"odata": mode}

    def refused_reads(self) -> dict[str, Any]:
        """List calls answered 400 or 414 since the last reset (refused reads)."""
        refused = [
            r for r in self.defender.requests if r.endpoint == "list" and r.status in (400, 414)
        ]
        return {"refused_reads": len(refused)}

    def reset_log(self) -> dict[str, Any]:
        self.defender.reset_log()
        return {}

    def drift(self, fraction: float, seed: int) -> dict[str, Any]:
        """Portal edits on ``fraction`` of the rows (severity/action/title) and portal deletes
        of another ``fraction`` (disjoint), chosen at random with ``seed``."""
        rows = self.defender.indicators()
        rng = random.Random(seed)
        n = int(len(rows) * fraction)
        picked = rng.sample(rows, 2 * n)
        edits, deletes = picked[:n], picked[n:]
        for i, row in enumerate(edits):
            change: dict[str, Any]
            if i % 3 == 0:
                severity = "Low" if row.get("severity") != "Low" else "High"
                change = {"severity": severity}
            elif i % 3 == 1:
                change = {"title": f"edited in the portal {i}"}
            else:
                change = {"description": "changed by an analyst"}
            self.defender.update_indicator(row["id"], **change)
        for row in deletes:
            self.defender.delete_indicator(row["id"])
        return {"edited": len(edits), "deleted": len(deletes), "rows_before": len(rows)}

    def burst(self, n: int) -> dict[str, Any]:
        """Create ``n`` deployable indicators in OpenCTI (each a stream ``create`` event)."""
        assert self.opencti is not None, "setup first"
        self._burst_seq += 1
        for i in range(n):
            digest = hashlib.sha256(f"burst-{self._burst_seq}-{i}".encode()).hexdigest()
            self.opencti.create_indicator(
                pattern=f"[file:hashes.'SHA-256' = '{digest}']", score=80, detection=True
            )
        return {"created": n}


def _handler(sandbox: Sandbox, stop: threading.Event) -> type[BaseHTTPRequestHandler]:
    routes: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "/setup": lambda a: sandbox.setup(int(a["records"]), int(a.get("seed", 1))),
        "/info": lambda a: sandbox.info(),
        "/rate_limits": lambda a: sandbox.rate_limits(bool(a["enabled"])),
        "/counts": lambda a: sandbox.counts(),
        "/reset_log": lambda a: sandbox.reset_log(),
        "/drift": lambda a: sandbox.drift(float(a["fraction"]), int(a.get("seed", 1))),
        "/burst": lambda a: sandbox.burst(int(a["n"])),
        "/setup_generated": lambda a: sandbox.setup_generated(int(a["n"]), int(a.get("seed", 1))),
        "/scores": lambda a: sandbox.scores(list(a["ids"])),
        "/deployed_ids": lambda a: sandbox.deployed_ids(),
        "/odata": lambda a: sandbox.odata(str(a["mode"])),
        "/refused_reads": lambda a: sandbox.refused_reads(),
        "/opencti_counts": lambda a: sandbox.opencti_counts(),
        "/hits": lambda a: sandbox.hits(int(a["n"]), int(a["indicators"])),
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Status line + headers and body are two writes: without this each costs ~40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve({})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            self._serve(json.loads(raw) if raw else {})

        def _serve(self, args: dict[str, Any]) -> None:
            status, payload = 200, {}
            if self.path == "/shutdown":
                stop.set()
            elif self.path in routes:
                try:
                    payload = routes[self.path](args)
                except Exception as exc:  # reported to the driver, which fails loudly
                    status, payload = 500, {"error": repr(exc)}
            else:
                status, payload = 404, {"error": f"no route {self.path}"}
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def main() -> int:
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    sandbox = Sandbox()
    stop = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(sandbox, stop))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(json.dumps({"control": f"http://127.0.0.1:{server.server_address[1]}"}), flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        sandbox.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
