"""Batched GraphQL mutations: many aliased root mutations in one document, paced.

A GraphQL document may hold several root fields, each under its own alias; the platform runs
them in order and answers each under its alias. ``Mutations.run`` sends up to ``batch`` of them
per document, within a calls-per-minute budget. When the platform answers a document with an
error (pycti raises on any), the document's mutations are sent again one per document, so a bad
item fails alone and the others still land; each failure is recorded under the object it was
for. The write-back and the sightings use it.

Must not decide what to write; no knowledge of references or sightings beyond the one shared
mutation, ``attach_reference``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.clock import Clock
from reconciler.defender.ratelimit import RateBudgets, Window
from reconciler.errors import SourceError
from reconciler.opencti.source import OpenCTISource

__all__ = ["Mutations", "Op", "attach_reference"]

_ENDPOINT = "opencti-write"


@dataclass(frozen=True)
class Op:
    """One root mutation: its text (``@a`` stands for its alias, ``@v`` for its variables'
    prefix), its variables (name without the prefix → GraphQL type and value), and the id of
    the object a failure is recorded under."""

    text: str
    variables: dict[str, tuple[str, Any]]
    owner: str


class Mutations:
    """Sends ``Op`` lists in batched documents through ``OpenCTISource``'s client."""

    def __init__(
        self,
        source: OpenCTISource,
        *,
        batch: int = 100,
        calls_per_minute: int = 1200,
        clock: Clock | None = None,
    ) -> None:
        self.source = source
        self.batch = max(1, batch)
        self.budget = RateBudgets(
            {_ENDPOINT: (Window(max(1, calls_per_minute), 60.0),)}, clock=clock
        )
        self.calls = 0  # documents sent, in all

    def run(self, ops: Sequence[Op], failed: dict[str, str]) -> list[Any]:
        """Send ``ops``; their answers in order (``None`` for one that failed, its owner's
        failure recorded in ``failed``)."""
        answers: list[Any] = []
        for start in range(0, len(ops), self.batch):
            part = ops[start : start + self.batch]
            try:
                answers.extend(self._send(part))
            except SourceError:
                for op in part:  # one per document: the failing one fails alone
                    try:
                        answers.extend(self._send([op]))
                    except SourceError as exc:
                        failed.setdefault(op.owner, str(exc))
                        answers.append(None)
        return answers

    def _send(self, ops: Sequence[Op]) -> list[Any]:
        declared: list[str] = []
        fields: list[str] = []
        variables: dict[str, Any] = {}
        for n, op in enumerate(ops):
            prefix = f"v{n}_"
            for name, (kind, value) in op.variables.items():
                declared.append(f"${prefix}{name}: {kind}")
                variables[prefix + name] = value
            fields.append(op.text.replace("@a", f"m{n}").replace("@v", prefix))
        document = f"mutation Batch({', '.join(declared)}) {{\n" + "\n".join(fields) + "\n}"
        self.budget.acquire(_ENDPOINT)
        self.calls += 1
        result = self.source.graphql(document, variables, f"batch of {len(ops)} mutations")
        data = result.get("data") or {}
        return [_unwrap(data.get(f"m{n}")) for n in range(len(ops))]


def _unwrap(answer: Any) -> Any:
    """The interesting part of an answer: the nested edit's, for the ``…Edit`` fields."""
    if isinstance(answer, dict) and len(answer) == 1:
        (inner,) = answer.values()
        if isinstance(inner, dict | str):
            return inner
    return answer


def attach_reference(object_id: str, ref_id: str, owner: str, *, sighting: bool = False) -> Op:
    """Attach the external reference ``ref_id`` to an indicator (or a sighting)."""
    edit = "stixSightingRelationshipEdit" if sighting else "stixDomainObjectEdit"
    return Op(
        f"@a: {edit}(id: $@vid) {{ relationAdd(input: $@vinput) {{ id }} }}",
        {
            "id": ("ID!", object_id),
            "input": (
                "StixRefRelationshipAddInput!",
                {"toId": ref_id, "relationship_type": "external-reference"},
            ),
        },
        owner,
    )
