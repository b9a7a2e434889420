"""Shared fixtures: a clean environment for every test (no inherited connector variables)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

_PREFIXES = ("OPENCTI_", "CONNECTOR_", "MICROSOFT_DEFENDER_INTEL_", "RECONCILER_")
_CA_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Remove inherited reconciler/connector/CA variables so tests own the environment."""
    for name in list(os.environ):
        if name.startswith(_PREFIXES) or name in _CA_VARS or name == "MSAL_FORCE_REGION":
            monkeypatch.delenv(name, raising=False)
    yield
