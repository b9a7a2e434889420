"""Shared helpers of the write-back tests: posting GraphQL and reading the stream's log."""

from __future__ import annotations

from typing import Any

import requests

from reconciler.sandbox.opencti import STIX_EXT_OCTI, OpenCTIEmulator

from .conftest import TOKEN, WAIT, stream_messages

DEFENDER = "Microsoft Defender for Endpoint"


def gql(emu: OpenCTIEmulator, query: str, variables: dict[str, Any] | None = None) -> Any:
    """POST one GraphQL document; the parsed answer (always HTTP 200)."""
    response = requests.post(
        f"{emu.url}/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=WAIT,
    )
    assert response.status_code == 200, response.text
    return response.json()


def ok(answer: Any) -> dict[str, Any]:
    """The data of an answer without errors."""
    assert "errors" not in answer, answer
    data: dict[str, Any] = answer["data"]
    return data


def ip(value: str) -> str:
    return f"[ipv4-addr:value = '{value}']"


def events_since(emu: OpenCTIEmulator, mark: int) -> list[dict[str, Any]]:
    """Logged events after the first ``mark`` ones: ``{id, event, data}`` (data: envelope)."""
    return emu.events()[mark:]


def ext(stix: dict[str, Any]) -> dict[str, Any]:
    extension: dict[str, Any] = stix["extensions"][STIX_EXT_OCTI]
    return extension


def live_messages(emu: OpenCTIEmulator) -> list[dict[str, Any]]:
    """Every logged event as a stream connection from ``0-0`` delivers it (up to the first
    heartbeat, which follows them): ``{id, event, data}`` with ``data`` parsed."""
    return stream_messages(emu)
