"""The Salesforce sink and records adapter against the project's Salesforce sandbox over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from replicator.ops.metrics import REGISTRY
from replicator.sandbox.core import Faults, Limits, Running
from replicator.sinks.base import Action, Operation, Outcome
from replicator.sinks.salesforce import SalesforceSink
from replicator.sinks.salesforce.client import REQUEST_LIMIT_WAIT_S
from replicator.sources.crm.salesforce import SalesforceRecords
from replicator.state.budget import Priority
from tests.fixtures.sandbox import salesforce_sandbox, start_sandbox  # noqa: F401 (fixture)


class NoLedger:
    def begin_create(self, op: Operation) -> bool:
        raise AssertionError("the Salesforce sink must not need the intent ledger")

    def finish_create(self, op: Operation, crm_id: str) -> None:
        raise AssertionError("the Salesforce sink must not need the intent ledger")


def connect(running: Running, **kwargs: Any) -> SalesforceSink:
    sink = SalesforceSink(running.url, client_id="sandbox-client", client_secret="sandbox-secret", **kwargs)
    sink.bulk.polling.first_s = 0.05
    return sink


@pytest.fixture
def sink(salesforce_sandbox: Running) -> Iterator[SalesforceSink]:  # noqa: F811
    sink = connect(salesforce_sandbox)
    yield sink
    sink.close()


def held(running: Running, sobject: str) -> dict[str, dict[str, Any]]:
    """The sandbox's records of `sobject`, by external id."""
    records = httpx.get(f"{running.url}/__sandbox/objects/{sobject}").json()
    rows = records if isinstance(records, list) else records.get("results", [])
    return {r["ERP_Id__c"]: r for r in rows if r.get("ERP_Id__c")}


def bulk_jobs_created() -> float:
    sample = REGISTRY.get_sample_value(
        "replicator_crm_responses_total",
        {"crm": "salesforce", "method": "POST", "resource": "bulk_job", "status": "200"},
    )
    return sample or 0.0


def account(ext: str, **fields: Any) -> Operation:
    return Operation("customers", "account", Action.UPSERT, ext, record={"Name": f"Name {ext}", **fields})


def test_check_passes_against_the_sandbox(sink: SalesforceSink) -> None:
    assert all(ok for _, ok, _ in sink.check()), sink.check()
    sink.ensure_setup()


def test_upsert_creates_then_updates(sink: SalesforceSink, salesforce_sandbox: Running) -> None:  # noqa: F811
    [first] = sink.apply([account("C-1", Website="https://a.example")], NoLedger())
    assert first.outcome is Outcome.OK and first.created and first.crm_id
    [second] = sink.apply([account("C-1", Name="Renamed", Website=None)], NoLedger())
    assert (second.outcome, second.created, second.crm_id) == (Outcome.OK, False, first.crm_id)
    stored = held(salesforce_sandbox, "Account")["C-1"]
    assert stored["Name"] == "Renamed" and stored.get("Website") is None
    found = sink.lookup("account", "C-1")
    assert found is not None and found["Id"] == first.crm_id and found["external_id"] == "C-1"
    got = sink.get("account", first.crm_id)
    assert got is not None and got["Name"] == "Renamed"
    # A contact pointing at it, then the account deleted by external id.
    [contact] = sink.apply(
        [Operation("contacts", "contact", Action.UPSERT, "P-1", record={"LastName": "Doe", "AccountId": first.crm_id})],
        NoLedger(),
    )
    assert contact.outcome is Outcome.OK, contact.error
    results = sink.apply(
        [
            Operation("contacts", "contact", Action.DELETE, "P-1"),
            Operation("customers", "account", Action.DELETE, "C-1"),
            Operation("customers", "account", Action.DELETE, "C-never"),
        ],
        NoLedger(),
    )
    assert [r.outcome for r in results] == [Outcome.OK] * 3, [r.error for r in results]
    assert sink.lookup("account", "C-1") is None
    [again] = sink.apply([Operation("customers", "account", Action.DELETE, "C-1", crm_id=first.crm_id)], NoLedger())
    assert again.outcome is Outcome.OK, again.error  # already deleted counts as done
    purged = "001000000000999AAA"  # well-formed, never existed (or long purged)
    [gone] = sink.apply([Operation("customers", "account", Action.DELETE, "C-x", crm_id=purged)], NoLedger())
    assert gone.outcome is Outcome.OK, gone.error


def test_per_record_failures_leave_the_others_written(sink: SalesforceSink, salesforce_sandbox: Running) -> None:  # noqa: F811
    ops = [
        account("C-1"),
        Operation("customers", "account", Action.UPSERT, "C-2", record={"Website": "https://no-name.example"}),
        account("C-3", NoSuchField__c="x"),
        account("C-4'quote\\slash"),
    ]
    results = sink.apply(ops, NoLedger())
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.PERMANENT, Outcome.PERMANENT, Outcome.OK], [
        r.error for r in results
    ]
    assert "REQUIRED_FIELD_MISSING" in (results[1].error or "")
    assert set(held(salesforce_sandbox, "Account")) == {"C-1", "C-4'quote\\slash"}
    # An external id with a quote and a backslash is found by SOQL, not broken by it.
    found = sink.lookup("account", "C-4'quote\\slash")
    assert found is not None and found["Id"] == results[3].crm_id


def test_product_archive_sets_is_active_false() -> None:
    running = start_sandbox("salesforce")
    try:
        sink = connect(running)
        op = Operation("products", "product", Action.UPSERT, "SKU-1", record={"Name": "Widget", "IsActive": True})
        assert sink.apply([op], NoLedger())[0].outcome is Outcome.OK
        [archived] = sink.apply([Operation("products", "product", Action.ARCHIVE, "SKU-1")], NoLedger())
        assert archived.outcome is Outcome.OK, archived.error
        record = sink.lookup("product", "SKU-1")
        assert record is not None and sink.is_archived("product", record)
    finally:
        running.stop()


def test_expired_token_is_renewed_once() -> None:
    running = start_sandbox("salesforce", token_ttl_s=1)
    try:
        sink = connect(running)
        assert sink.apply([account("C-1")], NoLedger())[0].outcome is Outcome.OK
        time.sleep(1.5)
        [result] = sink.apply([account("C-1", Name="After expiry")], NoLedger())
        assert result.outcome is Outcome.OK, result.error
        assert sink.client.tokens.fetched == 2
    finally:
        running.stop()


def test_wrong_client_secret_is_permanent_and_names_the_setting(salesforce_sandbox: Running) -> None:  # noqa: F811
    sink = SalesforceSink(salesforce_sandbox.url, client_id="sandbox-client", client_secret="wrong")
    [result] = sink.apply([account("C-1")], NoLedger())
    assert result.outcome is Outcome.PERMANENT and "crm.client_secret" in (result.error or "")


def test_bulk_upsert_of_thousands_with_failures(sink: SalesforceSink, salesforce_sandbox: Running) -> None:  # noqa: F811
    sink.priority = Priority.BACKFILL
    jobs_before = bulk_jobs_created()
    ops = [
        account(f"B-{n}", Description=f'line one\nline "two", {n}')
        if n % 100
        else Operation("customers", "account", Action.UPSERT, f"B-{n}", record={"Name": None})
        for n in range(3000)
    ]
    results = sink.apply(ops, NoLedger())
    assert bulk_jobs_created() == jobs_before + 1  # one ingest job, not 15 collection calls
    failed = [n for n, r in enumerate(results) if r.outcome is not Outcome.OK]
    assert failed == list(range(0, 3000, 100)), [results[n].error for n in failed[:3]]
    assert all(results[n].outcome is Outcome.PERMANENT for n in failed)
    assert "REQUIRED_FIELD_MISSING" in (results[0].error or "")
    assert all(r.created and r.crm_id for n, r in enumerate(results) if n % 100)
    stored = held(salesforce_sandbox, "Account")
    assert len(stored) == 2970 and stored["B-7"]["Description"] == 'line one\nline "two", 7'
    # The same load again updates in place: nothing created twice.
    again = sink.apply(ops, NoLedger())
    assert [r.crm_id for r in again if r.outcome is Outcome.OK] == [
        r.crm_id for r in results if r.outcome is Outcome.OK
    ]
    assert not any(r.created for r in again)


def test_polling_pages_through_many_records_sharing_one_modstamp(
    sink: SalesforceSink,
    salesforce_sandbox: Running,  # noqa: F811
) -> None:
    sandbox = salesforce_sandbox.sandbox
    sandbox.freeze_clock(datetime(2026, 12, 5, 14, 20, 35, tzinfo=UTC))  # type: ignore[attr-defined]
    tied = sink.apply([account(f"T-{n}") for n in range(450)], NoLedger())
    sandbox.freeze_clock(datetime(2026, 12, 5, 14, 20, 36, tzinfo=UTC))  # type: ignore[attr-defined]
    later = sink.apply([account(f"U-{n}") for n in range(30)], NoLedger())
    sandbox.freeze_clock(None)  # type: ignore[attr-defined]
    assert all(r.outcome is Outcome.OK for r in tied + later)
    records = SalesforceRecords(sink)
    seen: list[str] = []
    cursor: tuple[datetime, str] | None = None
    for _ in range(200):
        page = records.changes_after("account", cursor, 37)
        if not page:
            break
        seen.extend(records.record_id(r) for r in page)
        at = records.modified_at(page[-1])
        assert at is not None
        cursor = (at, records.record_id(page[-1]))
    expected = [r.crm_id for r in tied] + [r.crm_id for r in later]
    assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen))  # no skip, no repeat
    stamps = [records.modified_at(records.fetch("account", i) or {}) for i in seen[:3]]
    assert stamps == [datetime(2026, 12, 5, 14, 20, 35, tzinfo=UTC)] * 3
    # A user's edit moves the record to the end of the order.
    httpx.post(f"{salesforce_sandbox.url}/__sandbox/objects/Account/{seen[0]}", json={"Phone": "+49 1"})
    assert [records.record_id(r) for r in records.changes_after("account", cursor, 10)] == [seen[0]]
    fields = records.crm_fields()
    assert fields is not None and {"Name", "ERP_Id__c", "SystemModstamp"} <= fields["account"]


def test_deletions_are_read_from_the_delete_log_in_the_window_asked(
    sink: SalesforceSink,
    salesforce_sandbox: Running,  # noqa: F811
) -> None:
    from datetime import timedelta

    now = datetime.now(UTC)
    written = sink.apply([account("D-1"), account("D-2"), account("D-3")], NoLedger())
    sandbox = salesforce_sandbox.sandbox
    sandbox.freeze_clock(now - timedelta(minutes=5))  # type: ignore[attr-defined]
    gone = sink.apply([Operation("customers", "account", Action.DELETE, "D-2")], NoLedger())
    sandbox.freeze_clock(None)  # type: ignore[attr-defined]
    assert [r.outcome for r in written + gone] == [Outcome.OK] * 4
    records = SalesforceRecords(sink)
    found, covered = records.deleted_between("account", now - timedelta(minutes=10), now)
    assert [crm_id for crm_id, _ in found] == [written[1].crm_id]
    assert found[0][1] == (now - timedelta(minutes=5)).replace(microsecond=(now.microsecond // 1000) * 1000)
    assert covered == now.replace(second=0, microsecond=0)
    assert records.deleted_between("contact", now - timedelta(minutes=10), now)[0] == []
    assert records.fetch("account", str(written[1].crm_id)) is None


def test_daily_allocation_exhausted_is_transient_and_usage_is_exported() -> None:
    running = start_sandbox("salesforce", limits=Limits(daily=3))
    try:
        sink = connect(running)
        sink.apply([account("C-1")], NoLedger())
        assert REGISTRY.get_sample_value("replicator_crm_api_daily_limit", {"crm": "salesforce"}) == 3
        used = REGISTRY.get_sample_value("replicator_crm_api_daily_used", {"crm": "salesforce"})
        assert used is not None and used >= 1
        results = [sink.apply([account(f"C-{n}")], NoLedger())[0] for n in range(2, 6)]
        limited = [r for r in results if r.outcome is not Outcome.OK]
        assert limited, "the sandbox never refused a request"
        assert all(r.outcome is Outcome.TRANSIENT and r.status_code == 403 for r in limited)
        assert all(
            r.retry_after == REQUEST_LIMIT_WAIT_S and "REQUEST_LIMIT_EXCEEDED" in (r.error or "") for r in limited
        )
    finally:
        running.stop()


def test_429_faults_are_transient_with_retry_after() -> None:
    running = start_sandbox("salesforce", faults=Faults(rate_429=1.0, retry_after_s=4))
    try:
        sink = connect(running)
        [result] = sink.apply([account("C-1")], NoLedger())
        assert (result.outcome, result.retry_after) == (Outcome.TRANSIENT, 4.0), result.error
    finally:
        running.stop()


def test_sessions_expired_under_concurrent_load_renew_the_token_once(
    salesforce_sandbox: Running,  # noqa: F811
) -> None:
    sink = connect(salesforce_sandbox, concurrency=4)
    assert sink.apply([account("C-0")], NoLedger())[0].outcome is Outcome.OK
    httpx.post(f"{salesforce_sandbox.url}/__sandbox/expire_tokens")
    results = sink.apply([account(f"C-{n}") for n in range(1, 801)], NoLedger())  # 4 chunks on 4 threads
    assert all(r.outcome is Outcome.OK for r in results), {r.error for r in results}
    assert sink.client.tokens.fetched == 2
