"""The desired-state source: every OpenCTI indicator the configured live stream would send.

Owns reading OpenCTI through pycti: the stream's own filters (``streamCollection``), and a paged
``indicators`` listing under those filters ANDed with ``entity_type = Indicator``. Returns raw
GraphQL nodes (dicts), whole or not at all: any failed page raises :class:`SourceError`, never a
partial list. Must not map, filter by policy or do anything but I/O; pycti and ``requests``
errors are translated here (``from exc``) and no message carries the token.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from loguru import logger

from reconciler.errors import SourceError, excerpt

if TYPE_CHECKING:  # pycti takes ~1.5 s to import: only the type checker needs it up front.
    from pycti import OpenCTIApiClient

__all__ = ["INDICATOR_ATTRIBUTES", "LISTABLE_FILTER_KEYS", "OpenCTISource"]

RawIndicator = dict[str, Any]
T = TypeVar("T")
FilterGroup = dict[str, Any]

#: Selection set of each listed indicator: what mapping needs, nothing heavy.
INDICATOR_ATTRIBUTES = """id standard_id entity_type created_at updated_at revoked confidence name
description pattern_type pattern valid_from valid_until x_opencti_score x_opencti_detection
x_opencti_main_observable_type x_opencti_observable_values { type value hashes { algorithm hash } }
objectLabel { id value }"""

#: Stream-filter keys the ``indicators`` query accepts (Indicator attributes and refs); other
#: keys (``objects``, ``priority``, relationship keys…) are dropped.
LISTABLE_FILTER_KEYS = frozenset(
    {
        "entity_type",
        "id",
        "objectLabel",
        "objectMarking",
        "createdBy",
        "creator_id",
        "confidence",
        "x_opencti_score",
        "x_opencti_detection",
        "x_opencti_main_observable_type",
        "pattern_type",
        "indicator_types",
        "revoked",
        "x_opencti_workflow_id",
        "valid_from",
        "valid_until",
        "name",
        "created_at",
        "updated_at",
    }
)
#: Pre-5.12 or stream-only names → the API key.
_RENAMED_KEYS = {"creator": "creator_id", "labelledBy": "objectLabel", "markedBy": "objectMarking"}

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
        page_size: int = 5000,
        ids_per_call: int = 500,
        ssl_verify: bool = False,
        api: OpenCTIApiClient | None = None,
    ) -> None:
        if page_size < 1 or ids_per_call < 1:
            raise ValueError("page_size and ids_per_call must be at least 1")
        self.url = url
        self.stream_id = stream_id
        self.page_size = page_size
        self.ids_per_call = ids_per_call
        self.ssl_verify = ssl_verify
        self._token = token
        self._api = api

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
            return OpenCTIApiClient(
                self.url,
                self._token,
                log_level="error",
                ssl_verify=self.ssl_verify,
                json_logging=False,
                perform_health_check=True,
            )
        except (ValueError, OSError) as exc:
            raise SourceError(
                f"OpenCTI at {self.url} is not reachable or refused the token: {self._safe(exc)}"
            ) from exc

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
        """The ``indicators`` filter: the stream's (listable keys only) AND entity_type."""
        stream = self.stream_filters()
        group: FilterGroup = {
            "mode": "and",
            "filters": [
                {"key": ["entity_type"], "values": ["Indicator"], "operator": "eq", "mode": "or"}
            ],
            "filterGroups": [],
        }
        if stream:
            dropped: list[str] = []
            cleaned = clean_filter_group(stream, dropped)
            if dropped:
                logger.warning(
                    "Stream {} filter keys not usable for listing indicators, ignored: {}",
                    self.stream_id,
                    ", ".join(sorted(set(dropped))),
                )
            group["filterGroups"].append(cleaned)
        return group

    def iter_pages(self, filters: FilterGroup | None = None) -> Iterator[list[RawIndicator]]:
        """Yield the listing page by page (raises SourceError on a failed page)."""
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
                    orderBy="created_at",
                    orderMode="asc",
                )
            except (ValueError, KeyError, TypeError, OSError) as exc:
                raise SourceError(
                    f"OpenCTI indicator listing failed on page {page_number}: {self._safe(exc)}"
                ) from exc
            entities, pagination = _split_page(result, page_number)
            yield entities
            if not pagination.get("hasNextPage"):
                return
            cursor = pagination.get("endCursor")
            if not cursor or cursor == after:
                raise SourceError(
                    f"OpenCTI indicator listing page {page_number} has a next page but no cursor"
                )
            after = cursor

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

    def read_ids(self, ids: Iterable[str], parse: Callable[[RawIndicator], T]) -> list[T]:
        """The indicators among ``ids`` that the stream's filters select now, parsed.

        One query per ``ids_per_call`` ids: ``ids`` (internal, standard or STIX ids) AND
        ``entity_type = Indicator`` AND the stream's filters, exactly as the full listing
        reads, so an id the filters exclude (a dependency, an object that left the stream, a
        deleted or merged-away indicator) is simply absent. Whole or nothing, like
        ``read_indicators``."""
        wanted = sorted(set(ids))
        if not wanted:
            return []
        base = self.listing_filters()
        found: list[T] = []
        for start in range(0, len(wanted), self.ids_per_call):
            part = wanted[start : start + self.ids_per_call]
            scoped: FilterGroup = {
                "mode": "and",
                "filters": [{"key": ["ids"], "values": part, "operator": "eq", "mode": "or"}],
                "filterGroups": [base],
            }
            for page in self.iter_pages(scoped):
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


def clean_filter_group(group: FilterGroup, dropped: list[str]) -> FilterGroup:
    """A copy of ``group`` keeping only keys the ``indicators`` API accepts.

    Renamed keys (``creator`` → ``creator_id``…) are translated; other unknown keys are removed
    and appended to ``dropped``. A group left empty matches everything.
    """
    filters: list[dict[str, Any]] = []
    for flt in group.get("filters") or []:
        keys = flt.get("key")
        key_list = [keys] if isinstance(keys, str) else list(keys or [])
        kept = []
        for key in key_list:
            key = _RENAMED_KEYS.get(key, key)
            if key in LISTABLE_FILTER_KEYS:
                kept.append(key)
            else:
                dropped.append(key)
        if kept:
            filters.append({**flt, "key": kept})
    return {
        "mode": group.get("mode") or "and",
        "filters": filters,
        "filterGroups": [clean_filter_group(g, dropped) for g in group.get("filterGroups") or []],
    }
