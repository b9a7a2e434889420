"""The floor a no-op reconcile cannot go under, measured as its own fresh process.

It does only what any reconcile of the same tenant must do, with nothing of the reconciler:
import pycti and httpx, get a token from the login endpoint, download both listings raw
(OpenCTI's indicators in pages of 5,000, highest score first, with the same selection set;
Defender's in pages of 10,000) and parse the JSON. ``python -m bench.floor CONFIG`` prints
what it read as one JSON line; the bench times the process from outside.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pycti  # noqa: F401  (imported like the reconciler does: its cost is part of the floor)
import yaml

# What a reconcile needs of each indicator (the reconciler's own selection set is the same).
INDICATOR_ATTRIBUTES = """id standard_id entity_type created_at updated_at revoked confidence name
description pattern_type pattern valid_from valid_until x_opencti_score x_opencti_detection
x_opencti_main_observable_type x_opencti_observable_values { type value hashes { algorithm hash } }
objectLabel { id value }"""

_QUERY = (
    "query Indicators($filters: FilterGroup, $first: Int, $after: ID, "
    "$orderBy: IndicatorsOrdering, $orderMode: OrderingMode) { indicators(filters: $filters, "
    "first: $first, after: $after, orderBy: $orderBy, orderMode: $orderMode) { edges { node { "
    + INDICATOR_ATTRIBUTES
    + " } } pageInfo { endCursor hasNextPage globalCount } } }"
)
_INDICATOR = {"key": ["entity_type"], "values": ["Indicator"], "operator": "eq", "mode": "or"}


def opencti_rows(url: str, token: str, limit: int) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    filters = {"mode": "and", "filters": [_INDICATOR], "filterGroups": []}
    rows, after = 0, None
    with httpx.Client(timeout=120) as client:
        while rows < limit:
            variables = {
                "filters": filters,
                "first": 5000,
                "after": after,
                "orderBy": "x_opencti_score",
                "orderMode": "desc",
            }
            body = {"query": _QUERY, "variables": variables}
            page = client.post(f"{url}/graphql", json=body, headers=headers).json()
            data = page["data"]["indicators"]
            rows += len(data["edges"])
            if not data["pageInfo"]["hasNextPage"]:
                break
            after = data["pageInfo"]["endCursor"]
    return rows


def defender_rows(section: dict[str, Any]) -> int:
    verify: Any = section.get("ca_bundle") or True
    with httpx.Client(timeout=120, verify=verify) as client:
        token = client.post(
            f"{section['login_url']}/{section['tenant_id']}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": section["client_id"],
                "client_secret": section["client_secret"],
                "scope": "https://api.securitycenter.microsoft.com/.default",
            },
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        rows, skip = 0, 0
        while True:
            page = client.get(
                f"{section['base_url']}/api/indicators",
                params={"$top": 10000, "$skip": skip},
                headers=headers,
            ).json()["value"]
            rows += len(page)
            skip += len(page)
            if len(page) < 10000:
                return rows


def main(argv: list[str]) -> int:
    config = yaml.safe_load(Path(argv[0]).read_text())
    octi = config["opencti"]
    quota = int(config.get("reconciler", {}).get("quota", 15000))
    defender = defender_rows(config["microsoft_defender_intel"])
    opencti = opencti_rows(octi["url"], octi["token"], limit=quota)
    print(json.dumps({"defender_rows": defender, "opencti_rows": opencti}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
