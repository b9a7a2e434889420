"""Server-driven paging (``@odata.nextLink``) and Retry-After parsing, against a tiny real
HTTP server: the emulator only sends nextLinks when ``$top`` is absent, and we always send it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from reconciler.clock import FakeClock
from reconciler.defender import DefenderClient
from reconciler.errors import ListingError

ROWS = [
    {"id": str(i), "indicatorValue": f"h{i}.example", "indicatorType": "DomainName"}
    for i in range(5)
]


class _PagingServer(ThreadingHTTPServer):
    daemon_threads = True
    next_host = ""  # empty: our own host
    paths: list[str]


class _Handler(BaseHTTPRequestHandler):
    server: _PagingServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        query = parse_qs(urlsplit(self.path).query)
        host = self.server.next_host or f"http://127.0.0.1:{self.server.server_address[1]}"
        if "$skiptoken" in query:
            payload: dict[str, Any] = {"value": ROWS[3:]}
        else:
            payload = {
                "value": ROWS[:3],
                "@odata.nextLink": f"{host}/api/indicators?$skiptoken=3",
            }
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def paging_server() -> Iterator[_PagingServer]:
    server = _PagingServer(("127.0.0.1", 0), _Handler)
    server.paths = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _client(server: _PagingServer) -> DefenderClient:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    return DefenderClient(url, httpx.Auth(), clock=FakeClock())


def test_next_link_is_followed(paging_server: _PagingServer) -> None:
    with _client(paging_server) as client:
        rows = client.list_indicators(page_size=1000)
    assert [r["id"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert len(paging_server.paths) == 2
    assert "skiptoken=3" in paging_server.paths[1]


def test_next_link_to_another_host_is_refused(paging_server: _PagingServer) -> None:
    paging_server.next_host = "http://attacker.invalid"
    with _client(paging_server) as client, pytest.raises(ListingError, match="another host"):
        client.list_indicators()
    assert len(paging_server.paths) == 1


@pytest.mark.parametrize(
    ("header", "expected"),
    [("30", 30.0), ("1.5", 1.5), ("-4", 0.0), ("soon", None), (None, None), ("date+90", 90.0)],
    ids=["seconds", "fraction", "negative", "garbage", "absent", "http-date"],
)
def test_retry_after_forms(header: str | None, expected: float | None) -> None:
    clock = FakeClock()
    if header == "date+90":
        header = format_datetime(clock.now() + timedelta(seconds=90), usegmt=True)
    headers = {"Retry-After": header} if header is not None else {}
    with DefenderClient("https://127.0.0.1:1", httpx.Auth(), clock=clock) as client:
        assert client._retry_after(httpx.Response(429, headers=headers)) == expected
