"""A generated population: millions of indicators made on demand from their index.

Owns the layout that lets the fake serve a million indicators without holding a million
records: a few compact columns (one byte per indicator: observable shape, label set, marking,
author, revoked, detection, confidence, indicator types, ``valid_until``, status, score) drawn
at load time from seeded random bytes, everything else (ids, values, patterns, dates) derived
from the index when a record is asked for. Must not hold records, know about overlays (created,
changed or deleted indicators: ``store``) or HTTP.

Layout, chosen so that the listings the reconciler uses need no sort:

* Indices run in ``x_opencti_score`` order, highest first, missing scores last: the score is
  the index's block. Standard ids begin with the index in hex, so within a score they sort in
  index order, as the platform breaks ties (``standard_id`` ascending).
* ``created_at`` and ``updated_at`` both increase with a *time rank*, a fixed shuffle of the
  indices (column-major over ``m`` columns, ``m`` about the square root of the size), so a
  date ordering is a concatenation of strided runs of indices and a date range a rank range.
  ``created_at`` spans the 400 days before ``now``; ``updated_at`` follows it, 70 % of them in
  the last 20 days (exact for populations of 30 or more).
* A filter on a column key is a 256-entry truth table applied to the column (``translate``),
  filters on dates cut the rank space at the filter's values, ``ids`` filters look up the
  indices their values name; keys with the same value everywhere are tested once. Other keys
  (``name``, ``description``, ``pattern``, free-text search) make every record, slowly.

Masks are ``bytes`` of 0/1 per index, combined as integers.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

from reconciler.sandbox.dataset import (
    AUTHORS,
    DEFAULT_NOW,
    LABELS,
    TLPS,
    WORKFLOW,
    status_id,
)
from reconciler.sandbox.opencti import filters
from reconciler.sandbox.opencti.core import Record
from reconciler.sandbox.opencti.shapes import KINDS, VALUED, shape

_DAY = 86_400_000
_MASK64 = (1 << 64) - 1
_NONE = 255  # column code of "no value"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INTERNAL_ID = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-([0-9a-f]{12})$"
)
_STANDARD_ID = re.compile(r"^indicator--([0-9a-f]{8})-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-")

_DESCRIPTIONS = ("", "Seen in phishing campaign", "C2 infrastructure", "Automated feed")
_ITYPES: tuple[list[str], ...] = (
    [],
    ["malicious-activity"],
    ["anomalous-activity"],
    ["compromised"],
)
_STATUS_IDS = tuple(status_id(name) for name, _ in WORKFLOW)

#: Filter key → the column that decides it.
COLUMN_OF = {
    "x_opencti_score": "score",
    "confidence": "confidence",
    "revoked": "revoked",
    "x_opencti_detection": "detection",
    "x_opencti_main_observable_type": "kind",
    "pattern_type": "kind",
    "objectLabel": "labels",
    "objectMarking": "marking",
    "createdBy": "author",
    "indicator_types": "itypes",
    "valid_until": "vuntil",
    "workflow_id": "status",
    "x_opencti_workflow_id": "status",
}
#: Date filter keys (and orderings) → the time that decides them.
TIME_OF = {
    "created_at": "created",
    "created": "created",
    "valid_from": "created",
    "updated_at": "updated",
    "modified": "updated",
}
ID_KEYS = frozenset({"ids", "id", "internal_id", "standard_id"})


def _mix(x: int) -> int:
    """A 64-bit integer hash (splitmix64's finaliser)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _table(weights: list[int]) -> bytes:
    """A byte → code table giving code ``c`` about ``weights[c]`` of the 256 bytes (each >= 1)."""
    total = sum(weights)
    counts = [max(1, w * 256 // total) for w in weights]
    order = sorted(range(len(weights)), key=lambda c: -(weights[c] * 256 % total))
    n = 0
    while sum(counts) < 256:
        counts[order[n % len(order)]] += 1
        n += 1
    while sum(counts) > 256:
        big = max(range(len(counts)), key=counts.__getitem__)
        counts[big] -= 1
    return b"".join(bytes([code]) * count for code, count in enumerate(counts))


def iso(ms: int) -> str:
    """ISO 8601 UTC with milliseconds (the dataset's format), from epoch ms."""
    seconds, milli = divmod(ms, 1000)
    t = time.gmtime(seconds)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{milli:03d}Z"
    )


def ones(n: int) -> bytes:
    return b"\x01" * n


def mask_and(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") & int.from_bytes(b, "big")).to_bytes(len(a), "big")


def mask_or(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") | int.from_bytes(b, "big")).to_bytes(len(a), "big")


_FLIP = bytes([1, 0]) + bytes(254)


def mask_not(a: bytes) -> bytes:
    return a.translate(_FLIP)


class Population:
    """``n`` generated indicators, reproducible from ``seed`` and ``now``."""

    def __init__(self, n: int, seed: int = 0, now: datetime | None = None) -> None:
        if not 0 <= n < 1 << 31:
            raise ValueError("a population holds 0 to 2**31 - 1 indicators")
        self.n = n
        self.seed = seed
        self.now_ms = int(((now or DEFAULT_NOW) - _EPOCH).total_seconds() * 1000)
        self._key = _mix(seed * 0x2545F4914F6CDD1D + 0x1234567)
        self._id_base = self._key & 0xFFFFFFFFFFFF
        self._std_base = (self._key >> 16) % ((1 << 32) - n)
        self.columns: dict[str, bytes] = {}
        self.codes: dict[str, list[Record]] = {}  # column → partial record of each code
        self._draw_columns()
        self._lay_out_scores()
        self._lay_out_time()

    # --- columns ------------------------------------------------------------------------------

    def _draw(self, name: str, table: bytes | None) -> None:
        raw = random.Random(f"{self.seed}:{name}").randbytes(self.n)
        self.columns[name] = raw if table is None else raw.translate(table)

    def _draw_columns(self) -> None:
        rng = random.Random(f"{self.seed}:vocabulary")
        combos = [sorted(rng.sample(LABELS, rng.choice((0, 1, 1, 2, 3)))) for _ in range(256)]
        columns: dict[str, tuple[bytes | None, list[Record]]] = {
            "kind": (
                _table([w for _, w, _, _ in KINDS]),
                [{"main_observable_type": t, "pattern_type": p} for _, _, t, p in KINDS],
            ),
            "labels": (None, [{"labels": list(c)} for c in combos]),
            "marking": (
                _table([30, 18, 18, 17, 17]),
                [{"markings": []}, *({"markings": [t]} for t in TLPS)],
            ),
            "author": (_table([1] * 5), [{"created_by": a} for a in (*AUTHORS, None)]),
            "revoked": (bytes(1 if b < 5 else 0 for b in range(256)), _flags("revoked")),
            "detection": (bytes(1 if b < 230 else 0 for b in range(256)), _flags("detection")),
            "confidence": (
                bytes(b * 101 // 256 for b in range(256)),
                [{"confidence": c} for c in range(101)],
            ),
            "itypes": (bytes(b % 4 for b in range(256)), [{"indicator_types": t} for t in _ITYPES]),
            "vuntil": (None, [{"valid_until": self._valid_until(c)} for c in range(256)]),
            "status": (
                _table([5, 1, 1, 1, 1, 1]),
                [{"status_id": s} for s in (None, *_STATUS_IDS)],
            ),
        }
        for name, (table, partials) in columns.items():
            self._draw(name, table)
            self.codes[name] = partials

    def _valid_until(self, code: int) -> str | None:
        """``valid_until`` of a column code: 3 % none, 7 % in the past 60 days, else ahead."""
        if code < 8:
            return None
        time_of_day = code * 7919 % 86_400 * 1000
        if code < 26:
            return iso(self.now_ms - (1 + (code - 8) * 59 // 18) * _DAY + time_of_day % _DAY)
        return iso(self.now_ms + (1 + (code - 26) * 364 // 230) * _DAY + time_of_day)

    def _lay_out_scores(self) -> None:
        """Blocks of equal score, highest first, missing last; 7 % on boundary scores."""
        n = self.n
        missing, boundary = n * 3 // 100, n * 7 // 100
        rest = n - missing - boundary
        counts = [rest // 101] * 101
        shift = self._key % 101
        for k in range(rest % 101):
            counts[(shift + k) % 101] += 1
        edges = (0, 1, 29, 30, 59, 60, 100)
        for k, score in enumerate(edges):
            counts[score] += boundary // 7 + (1 if k < boundary % 7 else 0)
        self.score_order = [*range(100, -1, -1), None]
        self.block_start: list[int] = []
        start = 0
        pieces = []
        for score in self.score_order:
            self.block_start.append(start)
            size = counts[score] if score is not None else missing
            pieces.append(bytes([_NONE if score is None else score]) * size)
            start += size
        self.columns["score"] = b"".join(pieces)
        self.codes["score"] = [{"score": s} for s in range(101)] + [{"score": None}] * 155

    def _lay_out_time(self) -> None:
        n = max(self.n, 1)
        self.m = max(1, math.isqrt(n))
        self.q, self.r = divmod(n, self.m)
        self._c0 = self.now_ms - 400 * _DAY
        self._sc = max(1, 399 * _DAY // n)
        self._r30 = 3 * n // 10
        self._su1 = max(1, 380 * _DAY // max(1, self._r30))
        self._su2 = max(1, 20 * _DAY // max(1, n - self._r30))

    # --- per-index values ---------------------------------------------------------------------

    def hash(self, i: int, salt: int) -> int:
        return _mix(self._key ^ (i << 8 | salt))

    def code(self, column: str, i: int) -> int:
        return self.columns[column][i]

    def score_of(self, i: int) -> int | None:
        return self.codes["score"][self.columns["score"][i]]["score"]  # type: ignore[no-any-return]

    def column_start(self, p: int) -> int:
        """Time rank of the first index of column ``p`` (indices ``p, p+m, p+2m…``)."""
        return p * self.q + min(p, self.r)

    def column_length(self, p: int) -> int:
        return self.q + (1 if p < self.r else 0)

    def rank(self, i: int) -> int:
        return self.column_start(i % self.m) + i // self.m

    def index_at_rank(self, rank: int) -> int:
        wide = self.r * (self.q + 1)
        if rank < wide:
            p, q = divmod(rank, self.q + 1)
        else:
            p, q = divmod(rank - wide, self.q)
            p += self.r
        return q * self.m + p

    def times(self, i: int) -> tuple[int, int]:
        """``created`` and ``updated`` (epoch ms) of index ``i``: both increase with its rank."""
        rank, jitter = self.rank(i), self.hash(i, 1) & 0xFFFF
        created = self._c0 + rank * self._sc + (jitter * self._sc >> 16)
        if rank < self._r30:
            updated = self._c0 + rank * self._su1 + (jitter * self._su1 >> 16)
        else:
            step = self._su2
            updated = self.now_ms - 20 * _DAY + (rank - self._r30) * step + (jitter * step >> 16)
        return created, max(created, updated)

    def time_ms(self, which: str, i: int) -> int:
        """``created`` or ``updated`` (epoch ms) of index ``i``."""
        return self.times(i)[0 if which == "created" else 1]

    def internal_id(self, i: int) -> str:
        h = self.hash(i, 2)
        tail = (self._id_base + i) & 0xFFFFFFFFFFFF
        return (
            f"{h >> 32:08x}-{h >> 16 & 0xFFFF:04x}-4{h >> 4 & 0xFFF:03x}-"
            f"{8 | h & 3:x}{h >> 52 & 0xFFF:03x}-{tail:012x}"
        )

    def standard_id(self, i: int) -> str:
        h = self.hash(i, 3)
        return (
            f"indicator--{self._std_base + i:08x}-{h & 0xFFFF:04x}-5{h >> 16 & 0xFFF:03x}-"
            f"{8 | h >> 28 & 3:x}{h >> 32 & 0xFFF:03x}-{h >> 12 & 0xFFFFFFFFFFFF:012x}"
        )

    def index_of(self, ident: str) -> int | None:
        """The index whose internal or standard id is ``ident`` (any case), else None."""
        text = ident.strip().lower()
        match = _INTERNAL_ID.match(text)
        if match:
            i = (int(match.group(1), 16) - self._id_base) & 0xFFFFFFFFFFFF
            return i if i < self.n and self.internal_id(i) == text else None
        match = _STANDARD_ID.match(text)
        if match:
            i = int(match.group(1), 16) - self._std_base
            return i if 0 <= i < self.n and self.standard_id(i) == text else None
        return None

    # --- records ------------------------------------------------------------------------------

    def record(self, i: int) -> Record:
        """The full record of index ``i`` (a new dict each time)."""
        record: Record = {"id": self.internal_id(i), "standard_id": self.standard_id(i)}
        for column, partials in self.codes.items():
            record.update(partials[self.columns[column][i]])
        h = self.hash(i, 4)
        kind = self.columns["kind"][i]
        source = self._duplicate_of(i, kind) if h % 100 == 0 else i
        name, pattern, observables = shape(
            KINDS[kind][0], source, self.seed, self.hash(source, 4) >> 8
        )
        created, updated = (iso(ms) for ms in self.times(i))
        record.update(
            name=name,
            description=_DESCRIPTIONS[h >> 20 & 3],
            pattern=pattern,
            pattern_version="2.1",
            observable_values=observables,
            valid_from=created,
            created=created,
            created_at=created,
            modified=updated,
            updated_at=updated,
        )
        return record

    def _duplicate_of(self, i: int, kind: int) -> int:
        """About 1 % of the indicators repeat the value of another one of the same shape."""
        if kind not in VALUED or self.n < 2:
            return i
        j = self.hash(i, 5) % self.n
        for _ in range(64):
            if j != i and self.columns["kind"][j] == kind:
                return j
            j = (j + 1) % self.n
        return i

    # --- masks --------------------------------------------------------------------------------

    def mask(self, compiled: filters.Leaf | filters.Group) -> bytes:
        """Which indices ``compiled`` selects (index order)."""
        if isinstance(compiled, filters.Leaf):
            return bytes(self.n) if compiled.never else self._leaf_mask(compiled)
        if not compiled.parts:
            return ones(self.n)
        combine: Callable[[int, int], int] = (
            int.__and__ if compiled.mode == "and" else int.__or__  # type: ignore[assignment]
        )
        acc = int.from_bytes(self.mask(compiled.parts[0]), "big")
        for part in compiled.parts[1:]:
            acc = combine(acc, int.from_bytes(self.mask(part), "big"))
        return acc.to_bytes(self.n, "big")

    def _leaf_mask(self, leaf: filters.Leaf) -> bytes:
        key, test = leaf.key, leaf.test
        column = COLUMN_OF.get(key)
        if column is not None:
            partials = self.codes[column]
            table = bytes(
                1 if c < len(partials) and test(filters.candidates(partials[c], key)) else 0
                for c in range(256)
            )
            return self.columns[column].translate(table)
        if key in TIME_OF:
            return self._time_mask(TIME_OF[key], leaf)
        if key in ID_KEYS:
            return self._id_mask(leaf)
        if self.n and (key in filters.CONSTANT_KEYS or key == "x_opencti_stix_ids"):
            return ones(self.n) if test(filters.candidates(self.record(0), key)) else bytes(self.n)
        return self.scan(lambda record: test(filters.candidates(record, key)))

    def scan(self, check: Callable[[Record], bool]) -> bytes:
        """The slow path: make every record and test it."""
        return bytes(1 if check(self.record(i)) else 0 for i in range(self.n))

    def first_rank(self, which: str, ms: int, *, strictly_after: bool) -> int:
        """The first time rank whose ``created``/``updated`` is at (or after) ``ms``."""
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) // 2
            value = self.time_ms(which, self.index_at_rank(mid))
            if value > ms or (value == ms and not strictly_after):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _time_mask(self, which: str, leaf: filters.Leaf) -> bytes:
        """Rank intervals between the filter's values each test once (time grows with rank)."""
        cuts = {0, self.n}
        for value in leaf.values:
            if isinstance(value, int):
                cuts.add(self.first_rank(which, value, strictly_after=False))
                cuts.add(self.first_rank(which, value, strictly_after=True))
        bounds = sorted(cuts)
        pieces = []
        for start, end in itertools.pairwise(bounds):
            if end > start:
                sample = [self.time_ms(which, self.index_at_rank(start))]
                pieces.append((b"\x01" if leaf.test(sample) else b"\x00") * (end - start))
        return self.from_rank_order(b"".join(pieces))

    def _id_mask(self, leaf: filters.Leaf) -> bytes:
        named = {i for v in leaf.values if (i := self.index_of(str(v))) is not None}
        others = next((i for i in range(self.n) if i not in named), None)
        base = others is not None and leaf.test(filters.candidates(self.record(others), leaf.key))
        out = bytearray(ones(self.n) if base else bytes(self.n))
        for i in named:
            out[i] = 1 if leaf.test(filters.candidates(self.record(i), leaf.key)) else 0
        return bytes(out)

    def to_rank_order(self, mask: bytes) -> bytes:
        return b"".join(mask[p :: self.m] for p in range(self.m)) if self.n else b""

    def from_rank_order(self, ranked: bytes) -> bytes:
        out = bytearray(self.n)
        for p in range(min(self.m, self.n)):
            start = self.column_start(p)
            out[p :: self.m] = ranked[start : start + self.column_length(p)]
        return bytes(out)


def _flags(field: str) -> list[Record]:
    return [{field: False}, {field: True}]
