"""The desired-state source: every OpenCTI indicator the configured live stream would send.

Owns reading OpenCTI through pycti: the stream's own filters (``streamCollection``), and a paged
``indicators`` listing under those filters ANDed with ``entity_type = Indicator``. Returns raw
GraphQL nodes (dicts), whole or not at all: any failed page raises :class:`SourceError`, never a
partial list. Must not map, filter by policy or do anything but I/O; pycti and ``requests``
errors are translated here (``from exc``) and no message carries the token.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from loguru import logger

from reconciler.errors import SourceError, excerpt
from reconciler.opencti.filters import FilterGroup, listing_filter, scoped_filter

if TYPE_CHECKING:  # pycti takes ~1.5 s to import: only the type checker needs it up front.
    from pycti import OpenCTIApiClient

__all__ = ["INDICATOR_ATTRIBUTES", "OpenCTISource", "Page", "quiet_pycti"]

RawIndicator = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class Page:
    """One page of a listing: its rows and the listing's total (``None``: not answered)."""

    rows: list[RawIndicator]
    total: int | None


#: Selection set of each listed indicator: what mapping needs (markings and author for the
#: policy rules), nothing heavy.
INDICATOR_ATTRIBUTES = """id standard_id entity_type created_at updated_at revoked confidence name
description pattern_type pattern valid_from valid_until x_opencti_score x_opencti_detection
x_opencti_main_observable_type x_opencti_observable_values { type value hashes { algorithm hash } }
objectLabel { id value } objectMarking { id standard_id definition }
createdBy { ... on Identity { id standard_id name } }"""

#: GraphQL error names that mean the token was refused.
_REFUSED = frozenset({"AUTH_REQUIRED", "FORBIDDEN_ACCESS", "ForbiddenAccess", "AuthRequired"})


def _graphql_error(exc: ValueError) -> tuple[str, str]:
    """(name, message) of the GraphQL error pycti raises as ``ValueError(dict)``."""
    detail = exc.args[0] if exc.args else None
    if isinstance(detail, dict):
        return str(detail.get("name") or ""), excerpt(str(detail.get("error_message") or ""))
    return "", excerpt(str(detail))


def quiet_pycti() -> None:
    """pycti logs each failed query itself, with a traceback, before raising: the reconciler
    reports those errors once, translated, so pycti's own loggers are silenced."""
    for name in ("api", "admin"):
        pycti_logger = logging.getLogger(name)
        pycti_logger.setLevel(logging.CRITICAL + 1)
        pycti_logger.propagate = False


_STREAM_QUERY = """query StreamFilters($id: String!) {
  streamCollection(id: $id) { id name stream_live stream_public filters }
}"""


class OpenCTISource:
    """Lists the desired indicators from OpenCTI; one instance per configured platform/stream."""

    def __init__(
        self,
        url: str,
        token: str,
        stream_id: str,
        *,
        page_size: int = 2500,  # rows per GraphQL page: one page of raw JSON stays a few MB
        ids_per_call: int = 500,
        listing_override: FilterGroup | None = None,
        ssl_verify: bool = False,
        api: OpenCTIApiClient | None = None,
    ) -> None:
        if page_size < 1 or ids_per_call < 1:
            raise ValueError("page_size and ids_per_call must be at least 1")
        self.url = url
        self.stream_id = stream_id
        self.page_size = page_size
        self.ids_per_call = ids_per_call
        self.listing_override = listing_override
        self.ssl_verify = ssl_verify
        self._token = token
        self._api = api
        #: Applied to every listing row (the write-back's ``Restamps``: undoes the
        #: ``updated_at`` moves its own edits caused).
        self.row_hook: Callable[[RawIndicator], None] | None = None

    def __repr__(self) -> str:
        return f"OpenCTISource(url={self.url!r}, stream_id={self.stream_id!r})"

    # --- pycti seam -----------------------------------------------------------------------------

    @property
    def api(self) -> OpenCTIApiClient:
        """The pycti client, built on first use (its constructor sends a health check)."""
        if self._api is None:
            self._api = self._connect()
        return self._api

    def _connect(self) -> OpenCTIApiClient:
        from pycti import OpenCTIApiClient  # lazy: slow import, and it reconfigures logging

        try:
            # json_logging=False keeps pycti from installing a JSON root handler process-wide.
            api = OpenCTIApiClient(
                self.url,
                self._token,
                log_level="error",
                ssl_verify=self.ssl_verify,
                json_logging=False,
                perform_health_check=False,
            )
        except (ValueError, OSError) as exc:
            raise SourceError(f"OpenCTI at {self.url} cannot be used: {self._safe(exc)}") from exc
        quiet_pycti()
        self._check_access(api)
        return api

    def _check_access(self, api: OpenCTIApiClient) -> None:
        """Our own health check: a refused token is reported as refused, an unreachable
        platform as unreachable (pycti's says "not reachable" for both)."""
        try:
            api.query("query HealthCheck { about { version } }")
        except ValueError as exc:
            name, message = _graphql_error(exc)
            if name in _REFUSED:
                raise SourceError(
                    f"OpenCTI at {self.url} refused the token ({name}: {message}); check "
                    "opencti.token (OPENCTI_TOKEN): the API token of an OpenCTI user"
                ) from exc
            raise SourceError(
                f"OpenCTI at {self.url} answered an error ({name or 'no GraphQL answer'}): "
                f"{self._safe(exc)}"
            ) from exc
        except OSError as exc:
            raise SourceError(f"OpenCTI at {self.url} is not reachable: {self._safe(exc)}") from exc

    def _safe(self, exc: BaseException) -> str:
        """An error text fit for logs: cut short, token masked."""
        text = excerpt(str(exc))
        return text.replace(self._token, "***") if self._token else text

    def _query(self, query: str, variables: dict[str, Any], what: str) -> dict[str, Any]:
        try:
            result = self.api.query(query, variables)
        except (ValueError, OSError) as exc:
            raise SourceError(f"OpenCTI {what} failed: {self._safe(exc)}") from exc
        if not isinstance(result, dict):
            raise SourceError(f"OpenCTI {what} answered no data")
        return result

    # --- public -----------------------------------------------------------------------------------

    def graphql(self, query: str, variables: dict[str, Any], what: str) -> dict[str, Any]:
        """Send one GraphQL document through the platform client; ``SourceError`` (naming
        ``what``, the token masked) when it answers an error or cannot be reached."""
        return self._query(query, variables, what)

    def stream_filters(self) -> FilterGroup | None:
        """The live stream's FilterGroup (``None`` = everything); unknown stream → SourceError."""
        result = self._query(_STREAM_QUERY, {"id": self.stream_id}, "stream lookup")
        stream = (result.get("data") or {}).get("streamCollection")
        if not stream:
            raise SourceError(f"OpenCTI live stream {self.stream_id!r} does not exist")
        raw = stream.get("filters")
        if not raw:
            return None
        try:
            parsed = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            raise SourceError(
                f"OpenCTI live stream {self.stream_id!r} has unreadable filters: {excerpt(raw)}"
            ) from exc
        if parsed is not None and not isinstance(parsed, dict):
            raise SourceError(f"OpenCTI live stream {self.stream_id!r} filters are not a group")
        return parsed or None

    def listing_filters(self) -> FilterGroup:
        """The ``indicators`` filter: ``entity_type = Indicator`` AND the stream's filters as
        OpenCTI stores them (only documented renames translated), or AND
        ``opencti.listing_filters`` when set. Raises ``UnusableFilterError`` (fail closed)
        naming a key, operator or mode the listing cannot apply exactly."""
        if self.listing_override is not None:
            origin = f"opencti.listing_filters (replacing live stream {self.stream_id!r})"
            return listing_filter(self.listing_override, origin)
        stream = self.stream_filters()
        return listing_filter(stream, f"live stream {self.stream_id!r}")

    def iter_pages(
        self,
        filters: FilterGroup | None = None,
        *,
        order_by: str = "created_at",
        order_mode: str = "asc",
    ) -> Iterator[list[RawIndicator]]:
        """Yield the listing page by page (raises SourceError on a failed page)."""
        for page in self.iter_ordered(filters, order_by=order_by, order_mode=order_mode):
            yield page.rows

    def iter_ordered(
        self,
        filters: FilterGroup | None = None,
        *,
        order_by: str = "created_at",
        order_mode: str = "asc",
    ) -> Iterator[Page]:
        """The listing page by page in the given order, with the listing's total
        (``globalCount``); a consumer may stop early. Raises SourceError on a failed page."""
        if filters is None:
            filters = self.listing_filters()
        after: str | None = None
        page_number = 0
        while True:
            page_number += 1
            try:
                result = self.api.indicator.list(
                    filters=filters,
                    first=self.page_size,
                    after=after,
                    withPagination=True,
                    customAttributes=INDICATOR_ATTRIBUTES,
                    orderBy=order_by,
                    orderMode=order_mode,
                )
            except (ValueError, KeyError, TypeError, OSError) as exc:
                raise SourceError(
                    f"OpenCTI indicator listing failed on page {page_number}: {self._safe(exc)}"
                ) from exc
            entities, pagination = _split_page(result, page_number)
            if self.row_hook is not None:
                for row in entities:
                    self.row_hook(row)
            total = pagination.get("globalCount")
            yield Page(entities, total if isinstance(total, int) else None)
            if not pagination.get("hasNextPage"):
                return
            cursor = pagination.get("endCursor")
            if not cursor or cursor == after:
                raise SourceError(
                    f"OpenCTI indicator listing page {page_number} has a next page but no cursor"
                )
            after = cursor

    def iter_by_priority(self, listing: FilterGroup) -> Iterator[Page]:
        """The listing in priority order: score descending (OpenCTI sorts indicators without
        a score last). A reader bounded by the quota stops early."""
        return self.iter_ordered(listing, order_by="x_opencti_score", order_mode="desc")

    def iter_score_tie(self, listing: FilterGroup, score: int | None) -> Iterator[Page]:
        """The indicators of ``listing`` with exactly ``score`` (``None``: without a score),
        newest first: how the tie at the quota's boundary is finished, bounded."""
        if score is None:
            tie = {"key": ["x_opencti_score"], "values": [], "operator": "nil", "mode": "or"}
        else:
            tie = {"key": ["x_opencti_score"], "values": [str(score)], "operator": "eq"}
        tie_filter: FilterGroup = {
            "mode": "and",
            "filters": [{**tie, "mode": "or"}],
            "filterGroups": [listing],
        }
        return self.iter_ordered(tie_filter, order_by="updated_at", order_mode="desc")

    def list_indicators(
        self, *, on_page: Callable[[int], None] | None = None
    ) -> list[RawIndicator]:
        """Every indicator the stream would send, whole; any failure → SourceError, no list.

        ``on_page(n)`` is told the running count after each page (progress display)."""
        return self.read_indicators(_as_is, on_page=on_page)

    def read_indicators(
        self, parse: Callable[[RawIndicator], T], *, on_page: Callable[[int], None] | None = None
    ) -> list[T]:
        """``list_indicators`` with ``parse`` applied page by page, so the raw rows of only one
        page are alive at a time (a 15,000-indicator listing is tens of MB of dicts). Still
        whole or nothing: a failed page raises before anything is returned."""
        filters = self.listing_filters()
        indicators: list[T] = []
        pages = 0
        for page in self.iter_pages(filters):
            pages += 1
            indicators.extend(parse(row) for row in page)
            if on_page is not None:
                on_page(len(indicators))
        logger.info(
            "Listed {} OpenCTI indicators in {} page(s) (stream {})",
            len(indicators),
            pages,
            self.stream_id,
        )
        return indicators

    def read_ids(
        self,
        ids: Iterable[str],
        parse: Callable[[RawIndicator], T],
        *,
        listing: FilterGroup | None = None,
    ) -> list[T]:
        """The indicators among ``ids`` that the stream's filters select now, parsed.

        One query per ``ids_per_call`` ids: ``ids`` (internal, standard or STIX ids) AND
        ``entity_type = Indicator`` AND the stream's filters, exactly as the full listing
        reads, so an id the filters exclude (a dependency, an object that left the stream, a
        deleted or merged-away indicator) is simply absent. Whole or nothing, like
        ``read_indicators``."""
        wanted = sorted(set(ids))
        if not wanted:
            return []
        base = listing if listing is not None else self.listing_filters()
        found: list[T] = []
        for start in range(0, len(wanted), self.ids_per_call):
            part = wanted[start : start + self.ids_per_call]
            for page in self.iter_pages(scoped_filter(base, part)):
                found.extend(parse(row) for row in page)
        return found


def _as_is(row: RawIndicator) -> RawIndicator:
    return row


def _split_page(result: Any, page_number: int) -> tuple[list[RawIndicator], dict[str, Any]]:
    if not isinstance(result, dict) or not isinstance(result.get("pagination"), dict):
        raise SourceError(f"OpenCTI indicator listing page {page_number} has no pageInfo")
    entities = result.get("entities")
    if not isinstance(entities, list):
        raise SourceError(f"OpenCTI indicator listing page {page_number} has no entities")
    return entities, result["pagination"]
