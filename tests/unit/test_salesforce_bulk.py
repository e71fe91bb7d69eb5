"""Bulk API 2.0: CSV writing and reading, and the ingest job's state machine against a scripted org."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from replicator.sinks.base import Action, Operation, Outcome
from replicator.sinks.salesforce.csv_data import NULL, build_csv, cell, parse_csv
from replicator.state.budget import Priority
from tests.unit.test_salesforce_sink import NoLedger
from tests.unit.test_salesforce_support import API, FakeOrg, body, make_sink

# Text that breaks naive CSV: delimiters, quotes, both line endings, padding, non-ASCII.
awkward = st.text(
    alphabet=st.sampled_from(list(",\"\n\r \t'\\;#N/Aaé€😀\u2028")) | st.characters(blacklist_categories=("Cs",)),
    max_size=20,
)


@given(st.lists(st.lists(awkward, min_size=3, max_size=3), min_size=1, max_size=8))
def test_csv_round_trip_of_awkward_strings(rows: list[list[str]]) -> None:
    columns = ["ERP_Id__c", "Name", "Description"]
    text = build_csv(columns, [dict(zip(columns, r, strict=True)) for r in rows])
    expected = [{c: (v if v != "" else NULL) for c, v in zip(columns, r, strict=True)} for r in rows]
    assert parse_csv(text) == expected
    # An independent reader agrees, and every record ends with a bare LF (lineEnding LF).
    assert [dict(zip(columns, r, strict=True)) for r in list(csv.reader(io.StringIO(text, newline="")))[1:]] == expected
    assert text.endswith("\n") and not text.endswith("\r\n")


def test_csv_cells() -> None:
    assert build_csv(["A", "B", "C"], [{"A": None, "B": 'say "hi", ok'}]) == 'A,B,C\n#N/A,"say ""hi"", ok",\n'
    assert cell(True) == "true" and cell(0) == "0" and cell("#N/A") == '"#N/A"'
    assert cell("line\nbreak") == '"line\nbreak"' and cell(" padded ") == " padded "


class BulkOrg:
    """Scripted Bulk API 2.0 ingest endpoints: one job, results decided per external id."""

    def __init__(self, org: FakeOrg, states: list[str], outcome: dict[str, str], error_message: str = "") -> None:
        self.states = states
        self.outcome = outcome  # ext -> "ok" | "created" | "fail:CODE" | "unprocessed" | "missing"
        self.error_message = error_message
        self.created: list[Any] = []
        self.uploaded: list[dict[str, str]] = []
        self.upload_sizes: list[int] = []
        self.closed: list[Any] = []
        self.polls = 0
        job = f"{API}/jobs/ingest/750J"
        org.route("POST", f"{API}/jobs/ingest", self.create)
        org.route("PUT", f"{job}/batches", self.upload)
        org.route("PATCH", job, self.close)
        org.route("GET", job, self.info)
        org.route("GET", f"{job}/successfulResults/", lambda r: self.results("ok", "created"))
        org.route("GET", f"{job}/failedResults/", lambda r: self.results("fail"))
        org.route("GET", f"{job}/unprocessedrecords/", lambda r: self.results("unprocessed"))

    def create(self, request: httpx.Request) -> httpx.Response:
        self.created.append(body(request))
        return httpx.Response(200, json={"id": "750J", "state": "Open"})

    def upload(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"] == "text/csv"
        self.uploaded.extend(parse_csv(request.content.decode()))
        self.upload_sizes.append(len(request.content))
        return httpx.Response(201)

    def close(self, request: httpx.Request) -> httpx.Response:
        self.closed.append(body(request))
        return httpx.Response(200, json={"id": "750J", "state": "UploadComplete"})

    def info(self, request: httpx.Request) -> httpx.Response:
        state = self.states[min(self.polls, len(self.states) - 1)]
        self.polls += 1
        return httpx.Response(200, json={"id": "750J", "state": state, "errorMessage": self.error_message})

    def results(self, *kinds: str) -> httpx.Response:
        rows: list[dict[str, Any]] = []
        for row in reversed(self.uploaded):  # Salesforce does not keep the upload's order
            kind = self.outcome[row["ERP_Id__c"]]
            if kind.split(":")[0] not in kinds:
                continue
            if kind in ("ok", "created"):
                rows.append({"sf__Id": "001" + row["ERP_Id__c"], "sf__Created": str(kind == "created").lower(), **row})
            elif kind.startswith("fail"):
                rows.append({"sf__Id": "", "sf__Error": f"{kind[5:]}:it went wrong:Name --", **row})
            else:
                rows.append(row)
        columns = list(rows[0]) if rows else ["sf__Id", "ERP_Id__c"]
        return httpx.Response(200, text=build_csv(columns, rows), headers={"Content-Type": "text/csv"})


def ops(n: int) -> list[Operation]:
    return [
        Operation("e", "account", Action.UPSERT, f"C-{i}", record={"Name": f'Acme, "{i}"\nGmbH', "Website": None})
        for i in range(n)
    ]


def test_backfill_upserts_go_through_a_bulk_job_and_map_back_by_external_id() -> None:
    org = FakeOrg()
    outcome = {
        "C-0": "created",
        "C-1": "ok",
        "C-2": "fail:REQUIRED_FIELD_MISSING",
        "C-3": "fail:UNABLE_TO_LOCK_ROW",
        "C-4": "unprocessed",
        "C-5": "missing",
        "C-6": "created",
    }
    bulk = BulkOrg(org, ["UploadComplete", "InProgress", "InProgress", "JobComplete"], outcome)
    sink = make_sink(org, bulk_threshold=5)
    sink.priority = Priority.BACKFILL
    results = sink.apply(ops(7), NoLedger())
    assert bulk.created == [
        {
            "object": "Account",
            "externalIdFieldName": "ERP_Id__c",
            "contentType": "CSV",
            "operation": "upsert",
            "lineEnding": "LF",
        }
    ]
    assert bulk.closed == [{"state": "UploadComplete"}]
    assert bulk.polls == 4
    assert bulk.uploaded[0] == {"ERP_Id__c": "C-0", "Name": 'Acme, "0"\nGmbH', "Website": NULL}
    got = [(r.outcome, r.crm_id, r.created) for r in results]
    assert got == [
        (Outcome.OK, "001C-0", True),
        (Outcome.OK, "001C-1", False),
        (Outcome.PERMANENT, None, False),
        (Outcome.TRANSIENT, None, False),
        (Outcome.TRANSIENT, None, False),
        (Outcome.TRANSIENT, None, False),
        (Outcome.OK, "001C-6", True),
    ]
    assert "REQUIRED_FIELD_MISSING" in (results[2].error or "")
    assert "not processed" in (results[4].error or "") and "no result" in (results[5].error or "")


def test_failed_job_leaves_its_records_transient_with_the_reason() -> None:
    org = FakeOrg()
    bulk = BulkOrg(
        org, ["InProgress", "Failed"], {f"C-{i}": "unprocessed" for i in range(5)}, "InvalidBatch : bad header"
    )
    sink = make_sink(org, bulk_threshold=5)
    sink.priority = Priority.BACKFILL
    results = sink.apply(ops(5), NoLedger())
    assert all(r.outcome is Outcome.TRANSIENT for r in results)
    assert "ended Failed: InvalidBatch : bad header" in (results[0].error or "")
    assert bulk.polls == 2


def test_job_that_never_finishes_times_out_as_transient() -> None:
    org = FakeOrg()
    bulk = BulkOrg(org, ["InProgress"], {f"C-{i}": "ok" for i in range(5)})
    sink = make_sink(org, bulk_threshold=5)
    sink.bulk.polling.deadline_s = 0.0
    sink.priority = Priority.BACKFILL
    results = sink.apply(ops(5), NoLedger())
    assert all(r.outcome is Outcome.TRANSIENT and "still InProgress" in (r.error or "") for r in results)
    assert bulk.polls == 1


def test_live_priority_and_small_backfills_use_collections() -> None:
    org = FakeOrg()
    bulk = BulkOrg(org, ["JobComplete"], {})
    calls: list[int] = []

    def upsert(request: httpx.Request) -> httpx.Response:
        n = len(body(request)["records"])
        calls.append(n)
        return httpx.Response(200, json=[{"id": "x", "success": True, "created": True, "errors": []}] * n)

    org.route("PATCH", f"{API}/composite/sobjects/Account/ERP_Id__c", upsert)
    sink = make_sink(org, bulk_threshold=5)
    assert all(r.outcome is Outcome.OK for r in sink.apply(ops(6), NoLedger()))  # LIVE
    sink.priority = Priority.BACKFILL
    assert all(r.outcome is Outcome.OK for r in sink.apply(ops(4), NoLedger()))  # under the threshold
    assert calls == [6, 4] and bulk.created == []


def test_upload_is_split_into_jobs_by_size() -> None:
    org = FakeOrg()
    bulk = BulkOrg(org, ["JobComplete"], {f"C-{i}": "ok" for i in range(6)})
    sink = make_sink(org, bulk_threshold=5)
    sink.bulk.max_csv_bytes = 120
    sink.priority = Priority.BACKFILL
    results = sink.apply(ops(6), NoLedger())
    assert len(bulk.created) > 1
    assert all(r.outcome is Outcome.OK for r in results)
    # Every record uploaded once, in order, and no upload over the limit.
    assert [row["ERP_Id__c"] for row in bulk.uploaded] == [f"C-{i}" for i in range(6)]
    assert all(size <= 120 for size in bulk.upload_sizes) and len(bulk.upload_sizes) == len(bulk.created)


def test_bulk_csv_keeps_every_digit_of_decimals_and_formats_datetimes() -> None:
    org = FakeOrg()
    bulk = BulkOrg(org, ["JobComplete"], {f"D-{i}": "ok" for i in range(5)})
    sink = make_sink(org, bulk_threshold=5)
    sink.priority = Priority.BACKFILL
    at = datetime(2026, 12, 5, 14, 20, 35, 123456, tzinfo=UTC)
    revenue = Decimal("12345678901234567.89")  # more digits than a float holds
    records = [
        Operation("e", "account", Action.UPSERT, f"D-{i}", {"AnnualRevenue": revenue, "X__c": at}) for i in range(5)
    ]
    assert all(r.outcome is Outcome.OK for r in sink.apply(records, NoLedger()))
    assert bulk.uploaded[0]["AnnualRevenue"] == "12345678901234567.89"
    assert bulk.uploaded[0]["X__c"] == "2026-12-05T14:20:35.123Z"
