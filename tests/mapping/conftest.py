"""Fixtures for mapping tests: one logical indicator rendered the two ways OpenCTI sends it —
a GraphQL listing node (pycti post-processed) and a stream event's STIX 2.1 object with the
OpenCTI extension (null/empty fields omitted, as OpenCTI does)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from reconciler.mapping import (
    OCTI_EXTENSION,
    OpenCTIIndicator,
    indicator_from_graphql,
    indicator_from_stix,
)
from reconciler.model import Skipped

Spec = dict[str, Any]

DEFAULT_TS = "2025-03-02T08:30:00.456Z"


def base_spec(**overrides: Any) -> Spec:
    """A logical indicator: a public IPv4, score 80, updated 2025-03-02."""
    spec: Spec = {
        "id": "0f0c7b34-7e2a-4d0b-9f1e-3b8a2d6c9e11",
        "standard_id": "indicator--51b0c5c3-6a0e-5c61-9d3b-2f0b8f1a7e10",
        "name": "Cobalt Strike team server",
        "description": None,
        "pattern": "[ipv4-addr:value = '8.8.8.8']",
        "pattern_type": "stix",
        "score": 80,
        "revoked": False,
        "valid_from": "2025-03-01T10:00:00.000Z",
        "valid_until": None,
        "created_at": "2025-03-01T10:00:01.123Z",
        "updated_at": DEFAULT_TS,
        "labels": [],
        "main_observable_type": "IPv4-Addr",
        "observable_values": [{"type": "IPv4-Addr", "value": "8.8.8.8"}],
        "detection": True,
    }
    spec.update(overrides)
    return spec


def to_graphql(spec: Spec) -> dict[str, Any]:
    """The node pycti returns for the reconciler's lean selection."""
    values = spec.get("observable_values")
    return {
        "id": spec["id"],
        "standard_id": spec.get("standard_id"),
        "entity_type": "Indicator",
        "created_at": spec.get("created_at"),
        "updated_at": spec.get("updated_at"),
        "revoked": spec.get("revoked", False),
        "confidence": 75,
        "name": spec.get("name"),
        "description": spec.get("description"),
        "pattern_type": spec.get("pattern_type"),
        "pattern": spec.get("pattern"),
        "valid_from": spec.get("valid_from"),
        "valid_until": spec.get("valid_until"),
        "x_opencti_score": spec.get("score"),
        "x_opencti_detection": spec.get("detection"),
        "x_opencti_main_observable_type": spec.get("main_observable_type"),
        "x_opencti_observable_values": None
        if values is None
        else [
            {
                "type": v["type"],
                "value": v.get("value"),
                "hashes": [{"algorithm": k, "hash": h} for k, h in v["hashes"].items()]
                if v.get("hashes")
                else None,
            }
            for v in values
        ],
        "objectLabel": [
            {"id": f"label-{i}", "value": label} for i, label in enumerate(spec.get("labels", []))
        ],
    }


def _drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != [] and v != {}}


def to_stix(spec: Spec) -> dict[str, Any]:
    """The ``data`` of a stream event: STIX 2.1 with the OpenCTI extension, empties omitted."""
    values = spec.get("observable_values")
    ext = _drop_empty(
        {
            "extension_type": "property-extension",
            "id": spec["id"],
            "type": "Indicator",
            "created_at": spec.get("created_at"),
            "updated_at": spec.get("updated_at"),
            "is_inferred": False,
            "score": spec.get("score"),
            "detection": spec.get("detection"),
            "main_observable_type": spec.get("main_observable_type"),
            "observable_values": None
            if values is None
            else [_drop_empty({"type": v["type"], **v}) for v in values],
        }
    )
    return _drop_empty(
        {
            "id": spec.get("standard_id"),
            "spec_version": "2.1",
            "type": "indicator",
            "created": "2025-03-01T10:00:00.000Z",
            "modified": spec.get("updated_at"),
            "revoked": spec.get("revoked", False),
            "confidence": 75,
            "labels": list(spec.get("labels", [])),
            "name": spec.get("name"),
            "description": spec.get("description"),
            "pattern": spec.get("pattern"),
            "pattern_type": spec.get("pattern_type"),
            "pattern_version": "2.1",
            "valid_from": spec.get("valid_from"),
            "valid_until": spec.get("valid_until"),
            "extensions": {OCTI_EXTENSION: ext},
        }
    )


Reader = Callable[[Spec], OpenCTIIndicator]


@pytest.fixture(params=["graphql", "stix"])
def read(request: pytest.FixtureRequest) -> Reader:
    """Turn a logical spec into an ``OpenCTIIndicator`` through one of the two renderings, so
    every table row runs against both."""

    def _read(spec: Spec) -> OpenCTIIndicator:
        if request.param == "graphql":
            ind = indicator_from_graphql(to_graphql(spec))
        else:
            ind = indicator_from_stix(to_stix(spec))
        assert not isinstance(ind, Skipped), ind
        return ind

    return _read


@pytest.fixture
def make_spec() -> Callable[..., Spec]:
    """``base_spec`` as a fixture (test modules cannot import this conftest)."""
    return base_spec


@pytest.fixture
def render() -> dict[str, Callable[[Spec], dict[str, Any]]]:
    """Both raw renderings of a spec, by name."""
    return {"graphql": to_graphql, "stix": to_stix}
