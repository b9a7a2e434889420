"""The Defender for Endpoint Indicators API client: list, import, BatchDelete.

Owns: the one httpx connection pool, client-side rate budgets, retries (429 with Retry-After,
5xx, timeouts, dropped connections) with capped, jittered backoff on an injected ``Clock``,
whole-or-nothing paging, 500-item chunking, BatchDelete 404 bisection, and translating every
httpx failure into the ``DefenderError`` tree at this boundary.
Must not: decide what to create or delete (``plan``/``apply`` do), read config files, or put a
token or secret into a message, log line or exception.
"""

from __future__ import annotations

import ipaddress
import math
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Any, Self
from urllib.parse import urlsplit

import httpx
from loguru import logger

from reconciler.clock import Clock, SystemClock
from reconciler.defender.auth import TokenProvider, ssl_context, token_roles
from reconciler.defender.lifecycle import LifecycleWatch
from reconciler.defender.ratelimit import RateBudgets
from reconciler.defender.rejections import RejectionMemory
from reconciler.errors import (
    AuthError,
    DefenderError,
    ListingError,
    RateLimitError,
    RejectedError,
    TransientError,
    excerpt,
)
from reconciler.model import RawIndicator

__all__ = [
    "BATCH_SIZE",
    "MAX_PAGE_SIZE",
    "DefenderClient",
    "DeleteResult",
    "ImportResult",
    "RetryPolicy",
    "Timeouts",
    "odata_quote",
]

#: Most indicators per import call and ids per BatchDelete call (documented limit).
BATCH_SIZE = 500
#: How many bad items one import batch may spend splitting calls on (see ``import_indicators``).
SPLIT_BAD_ITEMS = 4
#: Largest ``$top`` the list endpoint accepts.
MAX_PAGE_SIZE = 10_000

_JSON_HEADERS = {"Accept": "application/json", "User-Agent": "opencti-defender-reconciler"}


def odata_quote(value: str) -> str:
    """An OData string literal: wrapped in single quotes, embedded quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class RetryPolicy:
    """How calls are retried.

    ``max_attempts`` counts every try of one call; backoff for 5xx and transport errors is
    ``min(cap, base * 2**(n-1))`` seconds, varied by ±``jitter`` (a fraction); a 429 waits its
    ``Retry-After`` (capped at ``max_retry_after``), or the backoff when it sends none.
    """

    max_attempts: int = 8
    base: float = 0.5
    cap: float = 30.0
    jitter: float = 0.2
    max_retry_after: float = 300.0


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a connection and for an answer. An import of 500 indicators can take
    Defender tens of seconds to answer, hence the long read default; a write that times out is
    retried, which is safe because every write is idempotent."""

    connect: float = 10.0
    read: float = 120.0

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(self.read, connect=self.connect)


@dataclass(frozen=True)
class ImportResult:
    """The outcome of one indicator of an import call; ``index`` is its position in the input."""

    index: int
    value: str
    id: str | None
    ok: bool
    reason: str | None


@dataclass(frozen=True)
class DeleteResult:
    """The outcome of deleting one id; an id that was already gone counts as ``ok``."""

    id: str
    ok: bool
    reason: str | None


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _error_code_and_message(response: httpx.Response) -> tuple[str | None, str]:
    """The Defender error envelope ``{"error": {"code", "message"}}``, or the cut raw body."""
    try:
        data = response.json()
    except ValueError:
        return None, excerpt(response.text)
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        code = err.get("code")
        return (str(code) if code else None), excerpt(str(err.get("message") or ""))
    return None, excerpt(response.text)


class DefenderClient:
    """A synchronous client for ``/api/indicators``; one instance per tenant, thread-safe.

    Every call passes through ``_request``: budget, send, classify, retry. Errors surface as
    ``AuthError`` (401/403), ``RateLimitError`` / ``TransientError`` (after retries),
    ``RejectedError`` (other 4xx) and ``ListingError`` (a listing that cannot be read whole).
    """

    def __init__(
        self,
        base_url: str,
        auth: httpx.Auth,
        *,
        resource_path: str = "/api/indicators",
        clock: Clock | None = None,
        verify: str | bool = True,
        timeouts: Timeouts = Timeouts(),
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy = RetryPolicy(),
        budgets: RateBudgets | None = None,
        seed: int | None = None,
        on_call: Callable[[str, int | None], None] | None = None,
        token_provider: TokenProvider | None = None,
        rejections: RejectionMemory | None = None,
        lifecycle: LifecycleWatch | None = None,
    ) -> None:
        """``token_provider``: the provider behind ``auth``, when this client should close it
        and ``probe_token`` should use it. ``rejections``: bodies refused earlier are not sent
        again while remembered (default: remembered for none). ``lifecycle``: where
        deprecation notices go (default: a watch of its own)."""
        self.base_url = base_url.rstrip("/")
        self.resource_url = self.base_url + "/" + resource_path.strip("/")
        self.clock: Clock = clock or SystemClock()
        self.retry = retry
        self.budgets = budgets or RateBudgets(clock=self.clock)
        self.calls: Counter[tuple[str, int]] = Counter()
        self._on_call = on_call
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._owned_provider = token_provider
        self.rejections = rejections if rejections is not None else RejectionMemory(0)
        self.lifecycle = lifecycle if lifecycle is not None else LifecycleWatch()
        self._http = httpx.Client(
            auth=auth,
            verify=ssl_context(verify) if isinstance(verify, str) else verify,
            timeout=timeouts.httpx(),
            transport=transport,
            headers=_JSON_HEADERS,
            follow_redirects=False,
        )

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool (and the login session this client built)."""
        self._http.close()
        if self._owned_provider is not None:
            self._owned_provider.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _record(self, endpoint: str, status: int | None) -> None:
        with self._lock:
            self.calls[(endpoint, status or 0)] += 1
        if self._on_call is not None:
            self._on_call(endpoint, status)

    def _backoff(self, attempt: int) -> float:
        policy = self.retry
        delay = min(policy.cap, policy.base * 2.0 ** (attempt - 1))
        with self._lock:
            spread: float = self._rng.uniform(-policy.jitter, policy.jitter)
        return max(0.0, delay * (1.0 + spread))

    def _retry_after(self, response: httpx.Response) -> float | None:
        raw = response.headers.get("Retry-After")
        if raw is None:
            return None
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
        try:  # the HTTP-date form
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - self.clock.now()).total_seconds())

    def _request(
        self,
        endpoint: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        accept: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """Send one logical call with budget and retries; returns a 2xx response or one whose
        status is in ``accept``; raises a ``DefenderError`` otherwise."""
        where = f"{method} {urlsplit(url).path}"
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self.retry.max_attempts
            self.budgets.acquire(endpoint)
            try:
                response = self._http.request(method, url, params=params, json=json)
            except httpx.HTTPError as exc:
                # TransportError (timeouts, refused or dropped connections incl. a server that
                # closes mid-response) and body decoding failures: all worth another try.
                self._record(endpoint, None)
                reason = type(exc).__name__
                if last:
                    raise TransientError(
                        f"Defender {where} failed after {attempt} attempts: {reason}"
                    ) from exc
                delay = self._backoff(attempt)
                logger.warning("Defender {} failed ({}); retry in {:.1f} s", where, reason, delay)
                self.clock.sleep(delay)
                continue
            except TransientError:
                # The token endpoint failed (raised from the auth flow): retried like a
                # transport error, counted against the token endpoint.
                self._record("token", None)
                if last:
                    raise
                self.clock.sleep(self._backoff(attempt))
                continue
            status = response.status_code
            self._record(endpoint, status)
            self.lifecycle.observe(endpoint, status, response.headers)
            if status < 300 or status in accept:
                return response
            if status == 429:
                retry_after = self._retry_after(response)
                if last:
                    raise RateLimitError(
                        f"Defender {where} still rate limited after {attempt} attempts",
                        retry_after=retry_after,
                    )
                wait = (
                    min(retry_after, self.retry.max_retry_after)
                    if retry_after is not None
                    else self._backoff(attempt)
                )
                logger.warning("Defender {} answered 429; waiting {:.1f} s", where, wait)
                # The budget sleeps the penalty, so concurrent callers of this endpoint wait too.
                self.budgets.penalize(endpoint, wait)
                continue
            if status >= 500:
                if last:
                    code, message = _error_code_and_message(response)
                    raise TransientError(
                        f"Defender {where} answered HTTP {status} after {attempt} attempts"
                        + (f": {message}" if message else ""),
                        status=status,
                        code=code,
                    )
                delay = self._backoff(attempt)
                logger.warning("Defender {} answered {}; retry in {:.1f} s", where, status, delay)
                self.clock.sleep(delay)
                continue
            raise self._refusal(where, response)

    def _refusal(self, where: str, response: httpx.Response) -> DefenderError:
        status = response.status_code
        code, message = _error_code_and_message(response)
        text = f"Defender {where} answered HTTP {status}" + (f" {code}" if code else "")
        if message:
            text += f": {message}"
        if status in (401, 403):
            return AuthError(text, status=status, code=code)
        return RejectedError(text, status=status, code=code)

    @staticmethod
    def _json(response: httpx.Response, where: str) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise TransientError(
                f"Defender {where} sent a body that is not JSON: {excerpt(response.text)}",
                status=response.status_code,
            ) from exc

    # -- listing ----------------------------------------------------------------------------

    def list_indicators(
        self, odata_filter: str | None = None, *, page_size: int = MAX_PAGE_SIZE
    ) -> list[RawIndicator]:
        """Every indicator matching ``odata_filter``, read whole or not at all (see
        ``iter_indicators``)."""
        return list(self.iter_indicators(odata_filter, page_size=page_size))

    def iter_indicators(
        self, odata_filter: str | None = None, *, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[RawIndicator]:
        """The rows of ``list_indicators`` one page at a time, so a consumer that converts and
        drops them holds one page of raw JSON, not the whole tenant. A consumer must treat what
        it built as void when this raises (a listing with a hole must never reach the planner).

        Pages with explicit ``$top``/``$skip``; each page after the first starts one row early
        and that row must be the last one already seen, otherwise rows moved between pages and
        ``ListingError`` is raised. An ``@odata.nextLink`` is followed when the server sends one.
        """
        if not 2 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be within 2..{MAX_PAGE_SIZE}, got {page_size}")
        seen: set[str] = set()
        last_id: str | None = None
        offset = 0
        next_link: str | None = None
        while True:
            overlap = offset > 0 and next_link is None
            if next_link is not None:
                response = self._request("list", "GET", self._checked_link(next_link))
            else:
                params: dict[str, str | int] = {
                    "$top": page_size,
                    "$skip": offset - 1 if overlap else 0,
                }
                if odata_filter:
                    params["$filter"] = odata_filter
                response = self._request("list", "GET", self.resource_url, params=params)
            page, next_link = self._page(response)
            del response
            if overlap:
                if not page or str(page[0].get("id")) != last_id:
                    raise ListingError(
                        f"Defender listing: rows moved during listing (page at offset {offset} "
                        "does not continue the previous page); nothing acted on"
                    )
                new = page[1:]
            else:
                new = page
            for row in new:
                row_id = str(row.get("id"))
                if row_id in seen:
                    raise ListingError(
                        f"Defender listing: indicator {row_id} seen twice (rows moved during "
                        "listing); nothing acted on"
                    )
                seen.add(row_id)
            if new:
                last_id = str(new[-1].get("id"))
            offset += len(new)
            full_page, got_new = len(page), bool(new)
            del page
            yield from new
            del new
            if next_link is not None:
                continue
            if full_page < page_size or not got_new:
                return

    def _page(self, response: httpx.Response) -> tuple[list[RawIndicator], str | None]:
        body = self._json(response, "GET list")
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            raise ListingError(
                f"Defender listing: unexpected response shape: {excerpt(response.text)}"
            )
        link = body.get("@odata.nextLink")
        return value, (str(link) if link else None)

    def _checked_link(self, link: str) -> str:
        # A nextLink may only lead back to our API host: the bearer token goes with it.
        ours, theirs = urlsplit(self.base_url), urlsplit(link)
        if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
            raise ListingError(
                f"Defender listing: nextLink leads to another host ({theirs.netloc}); refused"
            )
        return link

    def probe_token(self) -> tuple[str, ...] | None:
        """Acquire a token now (``reconciler check``); raises ``AuthError`` with the reason.
        Returns the application permissions the token carries (its ``roles`` claim), or
        ``None`` when they cannot be read."""
        provider = self._owned_provider
        if provider is None:
            return None
        return token_roles(provider.token(force=False))

    def probe_list(self) -> int:
        """Read at most one indicator (``reconciler check``: proves the list permission)."""
        response = self._request("list", "GET", self.resource_url, params={"$top": 1})
        page, _ = self._page(response)
        return len(page)

    # -- writes -----------------------------------------------------------------------------

    def import_indicators(self, bodies: Sequence[RawIndicator]) -> list[ImportResult]:
        """Create or update many indicators, ``BATCH_SIZE`` per call; one result per input, in
        input order. Per-item failures are results (``ok=False``), not exceptions.

        A body Defender refused earlier (``rejections``) is answered locally, not sent. When
        Defender refuses a whole call (400) the batch is split in halves until each refused
        item is alone: the others land, and the bad one is reported with the server's reason
        and remembered. One bad item in a batch of n costs at most ``2 * ceil(log2 n)`` extra
        calls; the splitting of one batch stops after the cost of ``SPLIT_BAD_ITEMS`` bad
        items (a call refused for a reason every item shares must not become n calls), and
        what is left is reported failed with the server's reason, not remembered."""
        results: list[ImportResult | None] = [None] * len(bodies)
        todo: list[int] = []
        for index, body in enumerate(bodies):
            refused = self.rejections.reason(body)
            if refused is None:
                todo.append(index)
            else:
                value = str(body.get("indicatorValue", ""))
                why = f"refused earlier, not sent again yet: {refused}"
                results[index] = ImportResult(index, value, None, False, why)
        for chunk in _chunks(todo, BATCH_SIZE):
            budget = [SPLIT_BAD_ITEMS * 2 * max(1, math.ceil(math.log2(len(chunk))))]
            for result in self._import_part(bodies, list(chunk), budget):
                results[result.index] = result
        return [r for r in results if r is not None]

    def _import_part(
        self, bodies: Sequence[RawIndicator], part: list[int], budget: list[int]
    ) -> list[ImportResult]:
        """Import ``bodies[i]`` for ``i`` in ``part``; ``budget`` holds the extra calls a whole
        refusal may still spend on splitting (shared by the halves)."""
        chunk = [bodies[i] for i in part]
        # POST is retried safely: import is an upsert, a repeat changes nothing.
        url = self.resource_url + "/import"
        try:
            response = self._request("import", "POST", url, json={"Indicators": chunk})
        except RejectedError as exc:
            if exc.status != 400:
                raise
            if len(part) == 1:
                self.rejections.remember(chunk[0], str(exc))
                value = str(chunk[0].get("indicatorValue", ""))
                return [ImportResult(part[0], value, None, False, str(exc))]
            if budget[0] < 2:
                return [
                    ImportResult(i, str(b.get("indicatorValue", "")), None, False, str(exc))
                    for i, b in zip(part, chunk, strict=True)
                ]
            budget[0] -= 2
            middle = len(part) // 2
            logger.info("Defender refused an import of {} as a whole; splitting it", len(part))
            return self._import_part(bodies, part[:middle], budget) + self._import_part(
                bodies, part[middle:], budget
            )
        data = self._json(response, "POST import")
        answers = data.get("value") if isinstance(data, dict) else None
        if not isinstance(answers, list):
            raise TransientError(
                f"Defender import answered an unexpected shape: {excerpt(response.text)}"
            )
        results = _import_results(chunk, answers)
        for result, body in zip(results, chunk, strict=True):
            if not result.ok and result.reason != _NO_RESULT:
                self.rejections.remember(body, result.reason or "refused")
        return [replace(r, index=i) for r, i in zip(results, part, strict=True)]

    def batch_delete(self, ids: Sequence[str]) -> list[DeleteResult]:
        """Delete many indicators, ``BATCH_SIZE`` ids per call; ids already gone count as ok.

        Defender answers 404 for a whole batch when any id is unknown (whether it deleted the
        others is undocumented). Then the ids still present are found with one listing (one
        call per 10,000 rows) and only those are deleted again: a batch of 500 ids that are
        all gone costs two or three calls, not a bisection of hundreds. Retrying is safe for
        the same reason."""
        unique = list(dict.fromkeys(str(i) for i in ids))
        done: dict[str, DeleteResult] = {}
        for chunk in _chunks(unique, BATCH_SIZE):
            for result in self._delete_chunk(list(chunk)):
                done[result.id] = result
        return [done[str(i)] for i in ids]

    def _delete_chunk(self, ids: list[str], *, rounds: int = 2) -> list[DeleteResult]:
        url = self.resource_url + "/BatchDelete"
        response = self._request(
            "batch_delete", "POST", url, json={"IndicatorIds": ids}, accept=frozenset({404})
        )
        if response.status_code != 404:
            return [DeleteResult(i, True, None) for i in ids]
        wanted = set(ids)
        present = {str(r.get("id")) for r in self.iter_indicators()} & wanted
        gone = [DeleteResult(i, True, "already gone") for i in ids if i not in present]
        still = [i for i in ids if i in present]
        if not still:
            return gone
        if rounds <= 1:
            why = "still present after a retry (ids kept disappearing meanwhile)"
            return gone + [DeleteResult(i, False, why) for i in still]
        return gone + self._delete_chunk(still, rounds=rounds - 1)


_NO_RESULT = "no result returned"


def _import_results(chunk: Sequence[RawIndicator], value: list[Any]) -> list[ImportResult]:
    """Pair import answers with inputs: by position when counts and values agree (the observed
    behaviour), else by indicator value; inputs left without an answer are failures."""
    values = [str(body.get("indicatorValue", "")) for body in chunk]
    answers = [a if isinstance(a, dict) else {} for a in value]

    def make(index: int, answer: Mapping[str, Any] | None) -> ImportResult:
        if answer is None:
            return ImportResult(index, values[index], None, False, _NO_RESULT)
        failed = bool(answer.get("isFailed"))
        raw_id = answer.get("id")
        reason = answer.get("failureReason")
        return ImportResult(
            index=index,
            value=values[index],
            id=str(raw_id) if raw_id not in (None, "") and not failed else None,
            ok=not failed,
            reason=str(reason) if reason else None,
        )

    positional = len(answers) == len(chunk) and all(
        a.get("indicator") is None or _same_value(a.get("indicator"), values[i])
        for i, a in enumerate(answers)
    )
    if positional:
        return [make(i, a) for i, a in enumerate(answers)]
    by_value: dict[str, list[Mapping[str, Any]]] = {}
    for answer in answers:
        by_value.setdefault(_value_form(answer.get("indicator")), []).append(answer)
    out = []
    for i, v in enumerate(values):
        queue = by_value.get(_value_form(v))
        out.append(make(i, queue.pop(0) if queue else None))
    return out


def _value_form(value: Any) -> str:
    """A value in a form equal for every way Defender may echo it: case-folded, and an IP
    address in its canonical notation (the answer may compress an IPv6 we sent exploded)."""
    text = str(value or "").strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text.casefold()


def _same_value(answered: Any, sent: str) -> bool:
    return answered == sent or _value_form(answered) == _value_form(sent)
