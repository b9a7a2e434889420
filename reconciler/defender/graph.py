"""Reading the alerts our custom indicators raise, from Microsoft Graph (``alerts_v2``).

``GraphAlerts.alerts(since, until)`` yields every alert last updated in ``[since, until)``
whose detection source is custom threat intelligence (``customTi``): by update time, not
creation, so an alert that reaches the API late is still in a later window (the caller counts
each alert once whatever the number of windows it shows in). Correct whatever the server
does where Microsoft documents nothing:

- ``detectionSource`` in ``$filter``: sent first; refused (400) → sent no more, and the alerts
  are filtered here (every answer is checked here anyway);
- page size: ``$top`` may be capped silently, so a page shorter than asked is no end;
- ``@odata.nextLink`` missing at times: paging goes on with ``$skip`` until an empty page (or
  ``@odata.count`` is reached);
- large windows: when ``@odata.count`` says a window holds more than ``max_rows``, or the
  server refuses a ``$skip`` (it may be limited), it is split in halves, down to one second;
- throttling (150 requests a minute per app and tenant): a client-side budget below it, and a
  429's ``Retry-After`` honoured (three tries).

Tokens come from the same app registration as the Defender API, for the Graph audience
(``<graph_url>/.default``); the application permission is ``SecurityAlert.Read.All``.
Must not match alerts to indicators (``reconciler.sightings`` does) nor write anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from loguru import logger

from reconciler.clock import Clock, SystemClock
from reconciler.defender.ratelimit import RateBudgets, Window
from reconciler.errors import AuthError, DefenderError, excerpt

__all__ = ["CUSTOM_TI", "GraphAlerts"]

#: ``detectionSource`` of the alerts raised by custom indicators.
CUSTOM_TI = "customTi"
_PATH = "/v1.0/security/alerts_v2"
_ENDPOINT = "alerts"


def _stamp(value: datetime) -> str:
    """An OData DateTimeOffset literal, to the millisecond (UTC)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class GraphAlerts:
    """The alerts endpoint of Microsoft Graph; one caller at a time."""

    def __init__(
        self,
        graph_url: str,
        auth: httpx.Auth,
        *,
        verify: bool | str = True,
        timeout: float = 60.0,
        page_size: int = 500,
        max_rows: int = 5000,
        calls_per_minute: int = 120,
        clock: Clock | None = None,
    ) -> None:
        self.url = graph_url.rstrip("/") + _PATH
        self.page_size = page_size
        self.max_rows = max_rows
        self.clock: Clock = clock or SystemClock()
        self.budget = RateBudgets({_ENDPOINT: (Window(calls_per_minute, 60.0),)}, clock=self.clock)
        self._http = httpx.Client(auth=auth, verify=verify, timeout=timeout)
        #: False once the server refused ``detectionSource`` in ``$filter``.
        self.filter_on_server = True
        self.calls = 0

    def close(self) -> None:
        self._http.close()

    def alerts(self, since: datetime, until: datetime) -> Iterator[dict[str, Any]]:
        """Every custom-indicator alert last updated in ``[since, until)`` (each once)."""
        seen: set[str] = set()
        for alert in self._window(since, until):
            ident = alert.get("id")
            if not isinstance(ident, str) or ident in seen:
                continue
            if alert.get("detectionSource") != CUSTOM_TI:
                continue
            seen.add(ident)
            yield alert

    def _window(self, since: datetime, until: datetime) -> Iterator[dict[str, Any]]:
        first, count, link = self._get(self._params(since, until, skip=0, count=True))
        if count is not None and count > self.max_rows and until - since > timedelta(seconds=1):
            middle = since + (until - since) / 2
            logger.info("{} alerts in one window: reading it in two halves", count)
            yield from self._window(since, middle)
            yield from self._window(middle, until)
            return
        yield from first
        got = len(first)
        while first:
            if link is not None:
                first, _, link = self._get(link)
            elif count is not None and got >= count:
                return
            else:
                try:
                    first, _, link = self._get(self._params(since, until, skip=got, count=False))
                except DefenderError as exc:
                    if exc.status != 400 or until - since <= timedelta(seconds=1):
                        raise
                    # $skip refused past some limit: windows this big are read in halves (the
                    # alerts already yielded are yielded once: ``alerts`` drops repeats).
                    logger.info("Graph refused $skip={}: reading the window in halves", got)
                    self.max_rows = max(1, min(self.max_rows, got))
                    middle = since + (until - since) / 2
                    yield from self._window(since, middle)
                    yield from self._window(middle, until)
                    return
            got += len(first)
            yield from first

    def _params(
        self, since: datetime, until: datetime, *, skip: int, count: bool
    ) -> dict[str, str]:
        clause = f"lastUpdateDateTime ge {_stamp(since)} and lastUpdateDateTime lt {_stamp(until)}"
        if self.filter_on_server:
            clause += f" and detectionSource eq '{CUSTOM_TI}'"
        params = {"$filter": clause, "$top": str(self.page_size)}
        if skip:
            params["$skip"] = str(skip)
        if count:
            params["$count"] = "true"
        return params

    def _get(
        self, target: dict[str, str] | str
    ) -> tuple[list[dict[str, Any]], int | None, str | None]:
        """One page: its alerts, ``@odata.count`` and ``@odata.nextLink`` (when sent)."""
        for attempt in range(3):
            self.budget.acquire(_ENDPOINT)
            self.calls += 1
            try:
                if isinstance(target, str):
                    response = self._http.get(target)
                else:
                    response = self._http.get(self.url, params=target)
            except httpx.HTTPError as exc:
                if attempt == 2:
                    raise DefenderError(f"Graph alerts cannot be read: {exc}") from exc
                self.clock.sleep(2.0 * (attempt + 1))
                continue
            if response.status_code == 429 or response.status_code >= 500:
                wait = _retry_after(response) or 2.0 * (attempt + 1)
                self.budget.penalize(_ENDPOINT, wait)
                if attempt < 2:
                    continue
            if self._source_refused(response, target):
                assert isinstance(target, dict)
                logger.info("Graph refuses detectionSource in $filter; filtering here")
                self.filter_on_server = False
                target = {**target, "$filter": _without_source(target["$filter"])}
                continue
            return self._page(response)
        raise DefenderError("Graph alerts: no answer after three tries")  # pragma: no cover

    def _source_refused(self, response: httpx.Response, target: dict[str, str] | str) -> bool:
        """A 400 to a first request filtering on ``detectionSource``: the filter is refused."""
        if response.status_code != 400 or not self.filter_on_server or isinstance(target, str):
            return False
        text = response.text
        return "detectionSource" in text or "filter" in text.lower()

    def _page(
        self, response: httpx.Response
    ) -> tuple[list[dict[str, Any]], int | None, str | None]:
        if response.status_code in (401, 403):
            raise AuthError(
                f"Microsoft Graph refused to list alerts (HTTP {response.status_code}: "
                f"{excerpt(response.text)}); the app registration needs the application "
                "permission SecurityAlert.Read.All (Microsoft Graph), with admin consent",
                status=response.status_code,
            )
        if response.status_code != 200:
            raise DefenderError(
                f"Graph alerts: HTTP {response.status_code}: {excerpt(response.text)}",
                status=response.status_code,
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise DefenderError("Graph alerts: the answer is not JSON") from exc
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, list):
            raise DefenderError("Graph alerts: the answer holds no 'value' list")
        count = body.get("@odata.count")
        link = body.get("@odata.nextLink")
        return (
            [a for a in value if isinstance(a, dict)],
            count if isinstance(count, int) else None,
            link if isinstance(link, str) and link else None,
        )


def _without_source(clause: str) -> str:
    return clause.replace(f" and detectionSource eq '{CUSTOM_TI}'", "")


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None
