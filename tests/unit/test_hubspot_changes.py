"""changes_after over a fake CRM search that behaves as documented: one sort key with no
order among ties, at most 200 per page, and no paging past 10,000 results."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from replicator.sinks.hubspot import HubSpotSink
from replicator.sources.crm.hubspot import HubSpotRecords, epoch_ms

BASE = datetime(2026, 11, 1, tzinfo=UTC)
CAP = 10_000


def iso(ms: int) -> str:
    return (BASE + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeSearch:
    def __init__(self, stamps: dict[int, int], seed: int = 7) -> None:
        self.stamps = stamps  # company id -> ms after BASE
        self.rng = random.Random(seed)
        self.bodies: list[dict[str, Any]] = []

    def value(self, record_id: int, name: str) -> int:
        return record_id if name == "hs_object_id" else epoch_ms(BASE) + self.stamps[record_id]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/crm/v3/objects/companies/search", request.url.path
        body = orjson.loads(request.content)
        self.bodies.append(body)
        if body["limit"] > 200:
            return httpx.Response(400, json={"category": "VALIDATION_ERROR", "message": "limit over 200"})
        groups = body.get("filterGroups") or [{"filters": []}]
        assert len(groups) == 1 and len(groups[0]["filters"]) <= 6
        ids = list(self.stamps)
        for f in groups[0]["filters"]:
            wanted = int(f["value"])
            if f["operator"] == "EQ":
                ids = [i for i in ids if self.value(i, f["propertyName"]) == wanted]
            elif f["operator"] == "GT":
                ids = [i for i in ids if self.value(i, f["propertyName"]) > wanted]
            else:
                raise AssertionError(f"unexpected operator {f}")
        [sort] = body["sorts"]
        self.rng.shuffle(ids)  # nothing orders records that share the sort value
        ids.sort(key=lambda i: self.value(i, sort["propertyName"]))
        offset = int(body.get("after", 0))
        if offset + body["limit"] > CAP:
            return httpx.Response(400, json={"category": "VALIDATION_ERROR", "message": "paging past 10,000 results"})
        page = ids[offset : offset + body["limit"]]
        results = [
            {
                "id": str(i),
                "properties": {"hs_object_id": str(i), "hs_lastmodifieddate": iso(self.stamps[i]), "erp_id": f"E{i}"},
            }
            for i in page
        ]
        paging = {"next": {"after": str(offset + len(page))}} if offset + len(page) < len(ids) else None
        return httpx.Response(
            200, json={"total": len(ids), "results": results, **({"paging": paging} if paging else {})}
        )


def records_over(fake: FakeSearch) -> HubSpotRecords:
    sink = HubSpotSink("https://api.test", "pat", transport=httpx.MockTransport(fake))
    return HubSpotRecords(sink, searches_per_second=0)


def drain(records: HubSpotRecords, limit: int, cursor: tuple[datetime, str] | None = None) -> list[str]:
    seen: list[str] = []
    for _ in range(10_000):
        batch = records.changes_after("account", cursor, limit)
        if not batch:
            return seen
        assert len(batch) <= limit
        seen.extend(records.record_id(r) for r in batch)
        last = batch[-1]
        moment = records.modified_at(last)
        assert moment is not None
        cursor = (moment, records.record_id(last))
    raise AssertionError("changes_after never ran dry: it loops")


def expected(stamps: dict[int, int]) -> list[str]:
    return [str(i) for i in sorted(stamps, key=lambda i: (stamps[i], i))]


@pytest.mark.parametrize("limit", [1, 7, 100, 200, 500])
def test_many_records_sharing_one_timestamp_neither_loop_nor_skip(limit: int) -> None:
    stamps = (
        {i: 5_000 for i in range(1000, 1450)} | {i: 10 for i in range(1, 4)} | {i: 9_000 for i in range(2000, 2005)}
    )
    assert drain(records_over(FakeSearch(stamps)), limit) == expected(stamps)


@pytest.mark.parametrize("seed", range(5))
def test_random_ties_come_out_in_modified_then_id_order(seed: int) -> None:
    rng = random.Random(seed)
    stamps = {rng.randrange(1, 10**6): rng.choice([0, 1, 2, 50, 51, 300]) for _ in range(rng.randrange(50, 700))}
    assert drain(records_over(FakeSearch(stamps, seed)), rng.choice([1, 3, 64, 200, 250])) == expected(stamps)


def test_cursor_is_strictly_exclusive_and_a_lookback_rereads_in_order() -> None:
    stamps = {1: 100, 2: 100, 3: 100, 4: 200}
    records = records_over(FakeSearch(stamps))
    after_2 = records.changes_after("account", (BASE + timedelta(milliseconds=100), "2"), 10)
    assert [r["id"] for r in after_2] == ["3", "4"]
    # The poller restarts from (checkpoint - lookback): earlier time, any id.
    again = records.changes_after("account", (BASE + timedelta(milliseconds=99), "999"), 10)
    assert [r["id"] for r in again] == ["1", "2", "3", "4"]
    assert after_2[0]["erp_id"] == "E3" and records.modified_at(after_2[1]) == BASE + timedelta(milliseconds=200)


def test_more_than_10000_matches_are_read_without_paging_past_the_cap() -> None:
    stamps = {i: i // 3 for i in range(1, 10_451)} | {i: 7 for i in range(20_000, 20_300)}
    fake = FakeSearch(stamps)
    records = records_over(fake)
    got = records.changes_after("account", None, len(stamps))
    assert [r["id"] for r in got] == expected(stamps)
    assert all("after" not in body and body["limit"] <= 200 for body in fake.bodies)
    # The fake does enforce the cap: paging with `after` would have failed.
    sort = {"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}
    past_cap = orjson.dumps({"limit": 200, "after": "9900", "sorts": [sort]})
    capped = fake(httpx.Request("POST", "https://api.test/crm/v3/objects/companies/search", content=past_cap))
    assert capped.status_code == 400


def test_searches_are_spaced_to_five_per_second() -> None:
    sleeps: list[float] = []
    sink = HubSpotSink(
        "https://api.test", "pat", transport=httpx.MockTransport(FakeSearch({i: 1 for i in range(1, 600)}))
    )
    records = HubSpotRecords(sink, clock=lambda: 100.0, sleep=sleeps.append)
    records.changes_after("account", None, 450)  # one page of 200 by time, then the tie: 200 + 50
    assert sleeps == pytest.approx([0.2, 0.4, 0.6])


def test_changes_are_read_with_only_the_id_and_modification_time() -> None:
    # Contacts have a parent lookup: their associations must not be read for the poller.
    paths: list[str] = []
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        bodies.append(orjson.loads(request.content))
        properties = {"hs_object_id": "7", "lastmodifieddate": iso(5), "erp_id": "P7", "firstname": "Ann"}
        return httpx.Response(200, json={"total": 1, "results": [{"id": "7", "properties": properties}]})

    sink = HubSpotSink("https://api.test", "pat", transport=httpx.MockTransport(handler))
    records = HubSpotRecords(sink, searches_per_second=0)
    [changed] = records.changes_after("contact", None, 10)
    assert changed == {"id": "7", "erp_id": "P7", "lastmodifieddate": iso(5)}
    assert records.modified_at(changed) == BASE + timedelta(milliseconds=5)
    assert paths == ["/crm/v3/objects/contacts/search"]
    assert sorted(bodies[0]["properties"]) == ["erp_id", "lastmodifieddate"]
