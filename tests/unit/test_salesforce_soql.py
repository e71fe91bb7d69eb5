"""SOQL literals and the keyset paging of SalesforceRecords.changes_after."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.sinks.salesforce import soql
from replicator.sources.crm.salesforce import SalesforceRecords, keyset_after
from tests.unit.test_salesforce_support import API, FakeOrg, make_sink

# The documented escapes ("Quoted String Escape Sequences", SOQL and SOSL Reference).
_UNESCAPE = {"n": "\n", "N": "\n", "r": "\r", "R": "\r", "t": "\t", "T": "\t", "b": "\b", "B": "\b",
             "f": "\f", "F": "\f", '"': '"', "'": "'", "\\": "\\"}  # fmt: skip


def string_literals(query: str) -> list[str]:
    """Every single-quoted literal of `query`, decoded, read the way SOQL reads them."""
    out: list[str] = []
    i = 0
    while i < len(query):
        if query[i] != "'":
            i += 1
            continue
        i += 1
        chars: list[str] = []
        while True:
            if i >= len(query):
                raise ValueError(f"unterminated literal in {query!r}")
            ch = query[i]
            if ch == "\\":
                nxt = query[i + 1]
                if nxt not in _UNESCAPE:
                    raise ValueError(f"invalid escape \\{nxt} in {query!r}")
                chars.append(_UNESCAPE[nxt])
                i += 2
            elif ch == "'":
                i += 1
                break
            else:
                chars.append(ch)
                i += 1
        out.append("".join(chars))
    return out


@given(st.text(), st.text())
def test_quoted_literals_mean_exactly_their_value_and_cannot_inject(a: str, b: str) -> None:
    query = f"SELECT Id FROM Account WHERE ERP_Id__c = {soql.quote(a)} AND Name = {soql.quote(b)}"
    assert string_literals(query) == [a, b]
    # Outside the literals nothing but the statement we wrote remains.
    outside = re.sub(r"'(?:\\.|[^'\\])*'", "?", query, flags=re.S)
    assert outside == "SELECT Id FROM Account WHERE ERP_Id__c = ? AND Name = ?"


def test_literals() -> None:
    assert soql.quote("Bob's BBQ") == "'Bob\\'s BBQ'"
    assert soql.quote("a\\' OR Name != '") == "'a\\\\\\' OR Name != \\''"
    assert soql.literal(None) == "null" and soql.literal(False) == "false" and soql.literal(12) == "12"
    at = datetime(2026, 12, 5, 15, 20, 35, 123999, tzinfo=timezone(timedelta(hours=1)))
    assert soql.literal(at) == "2026-12-05T14:20:35.123Z"
    assert soql.in_list(["a", "b'"]) == "('a', 'b\\'')"
    with pytest.raises(ValueError):
        soql.datetime_literal(datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        soql.select(["Id; DELETE"], "Account")


def test_salesforce_datetimes_parse_as_aware() -> None:
    assert soql.parse_datetime("2026-12-05T14:20:35.000+0000") == datetime(2026, 12, 5, 14, 20, 35, tzinfo=UTC)
    assert soql.parse_datetime("2026-12-05T14:20:35.250Z") == datetime(2026, 12, 5, 14, 20, 35, 250000, tzinfo=UTC)
    assert soql.parse_datetime("2026-12-05T14:20:35") is None and soql.parse_datetime(None) is None


def test_keyset_condition() -> None:
    at = datetime(2026, 12, 5, 14, 20, 35, 123000, tzinfo=UTC)
    assert keyset_after(None) is None
    assert keyset_after((at, "001'x")) == (
        "SystemModstamp > 2026-12-05T14:20:35.123Z OR (SystemModstamp = 2026-12-05T14:20:35.123Z AND Id > '001\\'x')"
    )
    # Between two possible stamps: nothing can equal it, so no tie clause.
    assert keyset_after((at + timedelta(microseconds=500), "001")) == "SystemModstamp > 2026-12-05T14:20:35.123Z"
    # No id (the poller's lookback start): every record at T, without comparing Id to '' (refused).
    assert keyset_after((at, "")) == "SystemModstamp >= 2026-12-05T14:20:35.123Z"


class SoqlOrg:
    """Answers exactly the keyset queries changes_after emits, over records in memory."""

    pattern = re.compile(
        r"SELECT (?P<fields>.+) FROM Account"
        r"(?: WHERE SystemModstamp (?P<op>>=?) (?P<t>\S+)"
        r"(?: OR \(SystemModstamp = (?P<t2>\S+) AND Id > '(?P<id>[^']*)'\))?)?"
        r" ORDER BY SystemModstamp ASC, Id ASC LIMIT (?P<limit>\d+)"
    )

    def __init__(self, org: FakeOrg, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.queries: list[str] = []
        org.route("GET", f"{API}/query", self.query)
        org.route(
            "GET",
            f"{API}/sobjects/Account/describe",
            lambda r: httpx.Response(200, json={"fields": [{"name": n} for n in ("Id", "Name", "SystemModstamp")]}),
        )

    def query(self, request: httpx.Request) -> httpx.Response:
        q = request.url.params["q"]
        self.queries.append(q)
        m = self.pattern.fullmatch(q)
        assert m, q
        rows = sorted(self.records, key=lambda r: (r["SystemModstamp"], r["Id"]))
        if m["t"]:
            t = datetime.fromisoformat(m["t"])
            rows = [
                r
                for r in rows
                if r["_at"] > t or (r["_at"] == t and (m["op"] == ">=" or (m["id"] is not None and r["Id"] > m["id"])))
            ]
        rows = rows[: int(m["limit"])]
        return httpx.Response(
            200, json={"done": True, "records": [{k: v for k, v in r.items() if k != "_at"} for r in rows]}
        )


def test_changes_after_pages_through_a_large_tie_without_loop_or_skip() -> None:
    base = datetime(2026, 12, 5, 14, 20, 35, tzinfo=UTC)
    records = []
    for n in range(60):
        at = base if n < 45 else base + timedelta(milliseconds=n)  # 45 records share one stamp
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}+0000"
        records.append({"Id": f"001{n:015d}", "Name": f"A{n}", "SystemModstamp": stamp, "_at": at})
    org = FakeOrg()
    fake = SoqlOrg(org, records)
    adapter = SalesforceRecords(make_sink(org))
    seen: list[str] = []
    cursor: tuple[datetime, str] | None = None
    for _ in range(100):
        page = adapter.changes_after("account", cursor, 7)
        if not page:
            break
        assert len(page) <= 7
        seen.extend(adapter.record_id(r) for r in page)
        last = page[-1]
        at = adapter.modified_at(last)
        assert at is not None
        cursor = (at, adapter.record_id(last))
    assert seen == [r["Id"] for r in records]  # each once, in order
    # Only what the poller reads: no describe, no other field.
    assert fake.queries[0] == (
        "SELECT Id, SystemModstamp, ERP_Id__c FROM Account ORDER BY SystemModstamp ASC, Id ASC LIMIT 7"
    )
    # A cursor moved back (lookback) reads again from there, still in order.
    again = adapter.changes_after("account", (base - timedelta(seconds=1), ""), 100)
    assert [r["Id"] for r in again] == seen
    assert again[0]["external_id"] is None and again[0]["id"] == records[0]["Id"]
