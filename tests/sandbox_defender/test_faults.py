"""Rate limits, injected faults, hooks, the request log, keep-alive speed and the CLI entry."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.sandbox.defender import DefenderEmulator, main, serve_forever

Body = Callable[..., dict[str, Any]]


def statuses(api: httpx.Client, count: int, path: str = "/api/indicators") -> list[int]:
    result = []
    for _ in range(count):
        try:
            result.append(api.get(path).status_code)
        except httpx.TransportError:
            result.append(0)
    return result


def test_rate_limit_429_with_retry_after_on_the_clock(
    emu: DefenderEmulator, api: httpx.Client, body: Body, clock: Any
) -> None:
    emu.rate_limits = True
    emu.rate_limit_scale = 0.1  # import: 3 calls per minute
    payload = {"Indicators": [body()]}
    assert [api.post("/api/indicators/import", json=payload).status_code for _ in range(3)] == [
        200,
        200,
        200,
    ]
    refused = api.post("/api/indicators/import", json=payload)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "TooManyRequests"
    assert refused.headers["retry-after"] == "60"
    clock.advance(45)
    assert api.post("/api/indicators/import", json=payload).headers["retry-after"] == "15"
    clock.advance(15)
    assert api.post("/api/indicators/import", json=payload).status_code == 200
    assert api.get("/api/indicators").status_code == 200  # other endpoints have own budgets


def test_hourly_limit_applies(emu: DefenderEmulator, api: httpx.Client, clock: Any) -> None:
    emu.rate_limits = True
    emu.rate_limit_scale = 0.01  # list: 1 per minute, 15 per hour
    codes = []
    for _ in range(16):
        codes.append(api.get("/api/indicators").status_code)
        clock.advance(61)
    assert codes == [200] * 15 + [429]


def test_rate_limits_off_means_no_429(emu: DefenderEmulator, api: httpx.Client) -> None:
    emu.rate_limit_scale = 0.01
    assert set(statuses(api, 5)) == {200}


def test_random_faults_are_seeded_and_reproducible(
    emu: DefenderEmulator, api: httpx.Client
) -> None:
    emu.set_faults(p500=0.3, p429=0.2, retry_after=7)
    first = statuses(api, 40)
    emu.set_faults(p500=0.3, p429=0.2, retry_after=7)
    second = statuses(api, 40)
    assert first == second
    assert {200, 429, 500} <= set(first)
    injected = api.get("/api/indicators")  # keep going until a 429 shows its header
    while injected.status_code != 429:
        injected = api.get("/api/indicators")
    assert injected.headers["retry-after"] == "7"


def test_faults_only_hit_named_endpoints(
    emu: DefenderEmulator, api: httpx.Client, get_token: Callable[[], str]
) -> None:
    emu.set_faults(p503=1.0, endpoints=["submit"])
    assert set(statuses(api, 5)) == {200}
    assert get_token()  # the token endpoint is spared unless named
    emu.set_faults(p503=1.0, endpoints=["token"])
    response = api.post(
        f"/{emu.tenant_id}/oauth2/v2.0/token", data={"grant_type": "client_credentials"}
    )
    assert response.status_code == 503


def test_dropped_connections(emu: DefenderEmulator, api: httpx.Client) -> None:
    emu.set_faults(p_drop=1.0)
    with pytest.raises(httpx.TransportError):
        api.get("/api/indicators")
    assert emu.requests[-1].status == 0
    emu.set_faults()
    assert api.get("/api/indicators").status_code == 200  # the client reconnects


def test_force_responses_in_order(emu: DefenderEmulator, api: httpx.Client) -> None:
    emu.force_responses("list", [429, 503, 0, 500], retry_after=3)
    first = api.get("/api/indicators")
    assert (first.status_code, first.headers["retry-after"]) == (429, "3")
    assert api.get("/api/indicators").status_code == 503
    with pytest.raises(httpx.TransportError):
        api.get("/api/indicators")
    assert api.get("/api/indicators").json()["error"]["code"] == "InternalServerError"
    assert api.get("/api/indicators").status_code == 200
    assert [r.status for r in emu.requests if r.endpoint == "list"] == [429, 503, 0, 500, 200]


def test_hook_sees_every_request_and_can_fail_it(
    emu: DefenderEmulator, api: httpx.Client, body: Body
) -> None:
    seen: list[tuple[str, str, str]] = []
    emu.on_request(lambda *args: seen.append(args))
    api.post("/api/indicators", json=body())
    api.delete("/api/indicators/1")
    assert seen == [
        ("submit", "POST", "/api/indicators"),
        ("delete", "DELETE", "/api/indicators/1"),
    ]

    def crash(*_: str) -> None:
        raise RuntimeError("boom")

    emu.on_request(crash)
    assert api.get("/api/indicators").status_code == 500


def test_request_log_and_counts(emu: DefenderEmulator, api: httpx.Client, body: Body) -> None:
    api.post("/api/indicators", json=body())
    api.post("/api/indicators/import", json={"Indicators": [body(indicatorValue="b" * 40)]})
    api.get("/api/indicators")
    api.post("/api/indicators/BatchDelete", json={"IndicatorIds": ["1", "2"]})
    counts = emu.counts()
    assert counts["token"] == 1
    assert (counts["submit"], counts["import"], counts["list"], counts["batch_delete"]) == (
        1,
        1,
        1,
        1,
    )
    record = emu.requests[-1]
    assert record.body == {"IndicatorIds": ["1", "2"]}
    assert record.status == 204 and record.method == "POST"
    assert record.time == emu.clock.now()
    emu.reset_log()
    assert emu.counts() == {}


def test_keep_alive_requests_are_fast(emu: DefenderEmulator, api: httpx.Client) -> None:
    api.get("/api/indicators")  # connect + TLS handshake once
    started = time.perf_counter()
    assert set(statuses(api, 200)) == {200}
    elapsed = time.perf_counter() - started
    # 200 * 40 ms would be 8 s if Nagle + delayed ACK stalled each response.
    assert elapsed < 5, elapsed


def test_concurrent_clients(emu: DefenderEmulator, api: httpx.Client, body: Body) -> None:
    token = api.headers["Authorization"]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with httpx.Client(
                base_url=emu.url, verify=emu.ca_file, headers={"Authorization": token}
            ) as client:
                for i in range(20):
                    value = f"{n:02x}{i:038x}"
                    assert (
                        client.post("/api/indicators", json=body(indicatorValue=value)).status_code
                        == 200
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(int(row["id"]) for row in emu.indicators()) == list(range(1, 161))


def test_plain_http_mode_and_stop_closes_the_port() -> None:
    emulator = DefenderEmulator(tls=False).start()
    port = emulator.port
    assert emulator.ca_file == ""
    with httpx.Client() as client:
        assert client.get(f"{emulator.url}/common/discovery/instance").status_code == 200
    emulator.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_cert_dir_is_used(tmp_path: Path) -> None:
    with DefenderEmulator(cert_dir=tmp_path) as emulator:
        assert emulator.ca_file == str(tmp_path / "ca.pem")
        assert "BEGIN CERTIFICATE" in Path(emulator.ca_file).read_text()


def test_serve_forever_prints_urls_and_config(tmp_path: Path) -> None:
    out = io.StringIO()
    stop = threading.Event()
    thread = threading.Thread(
        target=serve_forever,
        kwargs={"port": 0, "stop": stop, "out": out, "cert_dir": tmp_path},
    )
    thread.start()
    deadline = time.monotonic() + 10
    while "base_url" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=5)
    text = out.getvalue()
    assert "microsoft_defender_intel:" in text
    assert "  base_url: https://127.0.0.1:" in text
    assert f"  ca_bundle: {tmp_path / 'ca.pem'}" in text
    assert "tenant_id: 00000000-0000-4000-8000-000000000001" in text


def test_module_entry_point_runs(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler.sandbox.defender", "--port", "0", "--no-tls"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = ""
        while "API base" not in line:
            line = process.stdout.readline()
            assert line, "the emulator exited before printing its URL"
        url = line.split(":", 1)[1].strip()
        assert httpx.get(f"{url}/common/discovery/instance").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=5)


def test_main_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert "--no-rate-limits" in capsys.readouterr().out


def test_failed_tls_handshake_does_not_hurt_the_server(
    emu: DefenderEmulator, api: httpx.Client
) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{emu.port}/api/indicators", timeout=5)  # plain HTTP to TLS
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{emu.url}/api/indicators", timeout=5)  # CA not trusted
    assert api.get("/api/indicators").status_code == 200


def test_connection_close_is_honoured(emu: DefenderEmulator, api: httpx.Client) -> None:
    response = api.get("/api/indicators", headers={"Connection": "close"})
    assert response.status_code == 200
    assert response.headers["connection"] == "close"
    assert api.get("/api/indicators").status_code == 200


def test_latency_applies_to_named_endpoints_only(emu: DefenderEmulator, api: httpx.Client) -> None:
    emu.set_faults(latency=0.02, endpoints=["list"])
    started = time.perf_counter()
    assert api.get("/api/indicators").status_code == 200
    assert time.perf_counter() - started >= 0.02
    emu.set_faults(latency=5.0, endpoints=["submit"])
    started = time.perf_counter()
    api.get("/api/indicators")
    assert time.perf_counter() - started < 1
