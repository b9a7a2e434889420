"""Adapter for the Microsoft Defender for Endpoint Indicators API.

``auth`` gets Entra tokens (msal) and signs requests; ``ratelimit`` keeps calls inside the
documented budgets; ``client`` lists, imports and deletes indicators with retries. Knows only
``model``, ``errors`` and ``clock``; never imports ``opencti`` or the planner.
"""

from reconciler.defender.auth import BearerAuth, TokenProvider
from reconciler.defender.client import (
    BATCH_SIZE,
    MAX_PAGE_SIZE,
    DefenderClient,
    DeleteResult,
    ImportResult,
    RetryPolicy,
    odata_quote,
)
from reconciler.defender.ratelimit import DEFAULT_LIMITS, RateBudgets, Window

__all__ = [
    "BATCH_SIZE",
    "DEFAULT_LIMITS",
    "MAX_PAGE_SIZE",
    "BearerAuth",
    "DefenderClient",
    "DeleteResult",
    "ImportResult",
    "RateBudgets",
    "RetryPolicy",
    "TokenProvider",
    "Window",
    "odata_quote",
]
