"""What the CRM change source needs from HubSpot: full records, and every change after a cursor.

The cursor poller only needs each changed record's id and modification time (the inbox
source fetches the full record later), so ``changes_after`` asks the search for nothing
more and reads no associations.

``changes_after`` reads the CRM search API (developers.hubspot.com/docs/api-reference/
search/guide, "Search the CRM"), within its documented limits:

- at most 200 records per request, and at most 10,000 results per query: asking for the
  page after the 10,000th answers 400. Here no query is ever paged with ``after``: each
  request is a fresh query whose lower bound is the last record already read (keyset),
  so the cap cannot be reached however many records follow;
- one sort only, and no stable order among records sharing the sort value; so ties on
  the modification time are read with their own query, ``modified EQ T AND hs_object_id
  GT last id`` sorted by ``hs_object_id``, and only then ``modified GT T``;
- one filter group with at most two filters here (the limits are 5 groups, 10 filters
  per group, 25 in all);
- five search requests per second per token: the adapter spaces its search calls;
- the search index trails writes by a few seconds, so a poll may miss a change for
  now; the poller's lookback reads it on a later poll.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from replicator.sinks.hubspot import LOOKUPS, OBJECT_TYPES, HubSpotSink
from replicator.sinks.hubspot.client import MODIFIED_PROPERTY, object_type
from replicator.sinks.timestamps import parse_aware_datetime

SEARCH_PAGE_MAX = 200
SEARCHES_PER_SECOND = 5.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Added by the sink to every record, on top of HubSpot's properties.
_SYNTHETIC = frozenset({"id", "external_id", "archived", "createdAt", "updatedAt"})


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, exactly (HubSpot filters datetimes in epoch milliseconds)."""
    if moment.tzinfo is None:
        raise ValueError(f"cursor time {moment!r} has no time zone; pass an aware datetime")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def parse_modified(value: Any) -> datetime | None:
    """HubSpot datetimes: ISO 8601 ("2026-11-25T05:18:49.864Z") or epoch milliseconds."""
    if value in (None, ""):
        return None
    text = str(value)
    if text.isdigit():
        return _EPOCH + timedelta(milliseconds=int(text))
    return parse_aware_datetime(text)


class HubSpotRecords:
    """Full current records of HubSpot objects, the way the CRM change source hands them on."""

    def __init__(
        self,
        sink: HubSpotSink,
        *,
        searches_per_second: float = SEARCHES_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sink = sink
        self._interval = 1.0 / searches_per_second if searches_per_second > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next_search = 0.0
        self._lock = threading.Lock()
        self._fields: dict[str, frozenset[str]] | None = None

    # -------------------------------------------------------------- records

    def fetch(self, object: str, crm_id: str) -> dict[str, Any] | None:
        """The record with its external id and parents; None when it is gone (or archived)."""
        return self.sink.get(object, crm_id)

    def modified_at(self, record: dict[str, Any]) -> datetime | None:
        for name in ("hs_lastmodifieddate", "lastmodifieddate", "updatedAt"):
            parsed = parse_modified(record.get(name))
            if parsed is not None:
                return parsed
        return None

    def record_id(self, record: dict[str, Any]) -> str:
        return str(record["id"])

    # Deleted records stay listed as archived for 90 days ("Restore deleted records"); the list
    # cannot be filtered by archive time, so every poll reads all of them, 100 per request.
    deletions_kept = timedelta(days=90)
    deletions_min_window = timedelta(0)

    def deleted_between(
        self, object: str, start: datetime, end: datetime
    ) -> tuple[list[tuple[str, datetime]], datetime]:
        """Records archived in [start, end), oldest first, and `end`: the list is complete up to it."""
        found = []
        for record_id, archived_at in self.sink.archived_records(object):
            at = parse_modified(archived_at)
            if at is not None and start <= at < end:
                found.append((at, record_id))
        return [(record_id, at) for at, record_id in sorted(found)], end

    def iter_records(self, object: str) -> Iterator[dict[str, Any]]:
        return self.sink.iter_records(object)

    def volatile(self, object: str) -> frozenset[str]:
        # Bumped by HubSpot's own recalculations as well as by edits.
        return frozenset({"updatedAt", "hs_lastmodifieddate", "lastmodifieddate"})

    def crm_fields(self) -> dict[str, frozenset[str]] | None:
        """Property names per object from the Properties API (one call per object, cached)."""
        if self._fields is None:
            fields: dict[str, frozenset[str]] = {}
            for obj, type_ in OBJECT_TYPES.items():
                resp = self.sink.client.request("GET", "property", f"/crm/v3/properties/{type_}")
                data = self.sink.client.expect_json(resp, f"list {type_} properties")
                names = {str(p["name"]) for p in data.get("results") or [] if p.get("name")}
                fields[obj] = frozenset(names | _SYNTHETIC | LOOKUPS.get(obj, {}).keys())
            self._fields = fields
        return self._fields

    # -------------------------------------------------------------- changes

    def changes_after(self, object: str, cursor: tuple[datetime, str] | None, limit: int) -> list[dict[str, Any]]:
        """Records whose (modified_at, id) is strictly greater than ``cursor``, ascending, at most ``limit``.

        Each record holds at least the id and modification time: ``{"id", <id property>,
        <modification property>}``, enough for ``record_id`` and ``modified_at``, not a full record.
        """
        if limit < 1:
            return []
        out: list[dict[str, Any]] = []
        tie: tuple[int, str] | None = (epoch_ms(cursor[0]), cursor[1]) if cursor is not None else None
        after_ms: int | None = tie[0] if tie is not None else None
        while len(out) < limit:
            if tie is not None:
                moment, last_id = tie
                while len(out) < limit:
                    want = min(limit - len(out), SEARCH_PAGE_MAX)
                    page, more = self._tie_page(object, moment, last_id, want)
                    out.extend(page)
                    if not more or not page:
                        break  # the tie is drained
                    last_id = str(page[-1]["id"])
                if len(out) >= limit:
                    break
                after_ms, tie = moment, None
            want = min(limit - len(out), SEARCH_PAGE_MAX)
            page, more = self._search(object, self._after_filters(object, after_ms), MODIFIED_PROPERTY[object], want)
            if not page:
                break
            stamps = [epoch_ms(self._stamp(object, r)) for r in page]
            last = stamps[-1]
            full = more
            # Groups before the last timestamp are complete; the last one may continue past the page.
            done = [r for r, s in zip(page, stamps, strict=True) if s < last or not full]
            out.extend(sorted(done, key=lambda r: (epoch_ms(self._stamp(object, r)), int(r["id"]))))
            if not full:
                break
            tie = (last, "")
        return [self._changed(object, raw) for raw in out[:limit]]

    def _changed(self, object: str, raw: dict[str, Any]) -> dict[str, Any]:
        properties = raw.get("properties") or {}
        names = (self.sink.id_property, MODIFIED_PROPERTY[object])
        return {"id": str(raw["id"]), **{name: properties.get(name) for name in names}}

    def _stamp(self, object: str, raw: dict[str, Any]) -> datetime:
        stamp = parse_modified((raw.get("properties") or {}).get(MODIFIED_PROPERTY[object]))
        if stamp is None:
            raise ValueError(
                f"HubSpot {object} {raw.get('id')} came back from search without a readable "
                f"{MODIFIED_PROPERTY[object]}: {raw.get('properties')!r}"
            )
        return stamp

    def _after_filters(self, object: str, after_ms: int | None) -> list[dict[str, str]]:
        if after_ms is None:
            return []
        return [{"propertyName": MODIFIED_PROPERTY[object], "operator": "GT", "value": str(after_ms)}]

    def _tie_page(self, object: str, moment_ms: int, last_id: str, want: int) -> tuple[list[dict[str, Any]], bool]:
        filters = [{"propertyName": MODIFIED_PROPERTY[object], "operator": "EQ", "value": str(moment_ms)}]
        if last_id:
            filters.append({"propertyName": "hs_object_id", "operator": "GT", "value": last_id})
        return self._search(object, filters, "hs_object_id", want)

    def _search(
        self, object: str, filters: list[dict[str, str]], sort: str, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of a fresh query, and whether more records match it (``total``, or a next page)."""
        type_ = object_type(object)
        body: dict[str, Any] = {
            "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
            "properties": [self.sink.id_property, MODIFIED_PROPERTY[object]],
            "limit": limit,
        }
        if filters:
            body["filterGroups"] = [{"filters": filters}]
        self._pace()
        resp = self.sink.client.request("POST", f"{type_}:search", f"/crm/v3/objects/{type_}/search", body=body)
        data = self.sink.client.expect_json(resp, f"search {type_} by {sort}")
        results = [r for r in data.get("results") or [] if isinstance(r, dict)]
        total = data.get("total")
        more = bool((data.get("paging") or {}).get("next")) or (isinstance(total, int) and total > len(results))
        return results, more

    def _pace(self) -> None:
        with self._lock:
            now = self._clock()
            wait = self._next_search - now
            self._next_search = max(now, self._next_search) + self._interval
        if wait > 0:
            self._sleep(wait)
