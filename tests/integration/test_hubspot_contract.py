"""The HubSpot connector against the project's HubSpot sandbox, over real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import orjson
import psycopg
import pytest

from replicator.sandbox.core import Faults, Running
from replicator.sandbox.hubspot import sign_v3
from replicator.sinks.base import Action, Operation, Outcome, Result
from replicator.sinks.hubspot import HubSpotSink
from replicator.sources.crm.hubspot import HubSpotRecords
from replicator.sources.crm.hubspot_webhook import make_hubspot_webhook_app
from replicator.state.inbox import Inbox
from replicator.state.migrations import migrate
from replicator.state.store import StateStore
from tests.fixtures.sandbox import start_sandbox


class NoLedger:
    def begin_create(self, op: Operation) -> bool:
        raise AssertionError("upsert by a unique property needs no create ledger")

    def finish_create(self, op: Operation, crm_id: str) -> None:
        raise AssertionError("upsert by a unique property needs no create ledger")


def make_sink(running: Running) -> HubSpotSink:
    sink = HubSpotSink(running.url, "pat-sandbox")
    sink.ensure_setup()
    return sink


def objects(running: Running, object_type: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{running.url}/__sandbox/objects/{object_type}")
    resp.raise_for_status()
    data = resp.json()
    results: list[dict[str, Any]] = data["results"]
    return results


def associated(running: Running, from_type: str, to_type: str, from_id: str) -> set[str]:
    resp = httpx.post(
        f"{running.url}/crm/v4/associations/{from_type}/{to_type}/batch/read",
        headers={"Authorization": "Bearer pat-sandbox"},
        json={"inputs": [{"id": from_id}]},
    )
    assert resp.status_code in (200, 207), resp.text
    return {str(to["toObjectId"]) for r in resp.json().get("results", []) for to in r["to"]}


def upsert(sink: HubSpotSink, object: str, external_id: str, **record: Any) -> Result:
    [result] = sink.apply([Operation(object, object, Action.UPSERT, external_id, record)], NoLedger())
    assert result.outcome is Outcome.OK, result.error
    return result


def test_check_and_setup_make_the_unique_id_property(hubspot_sandbox: Running) -> None:
    sink = HubSpotSink(hubspot_sandbox.url, "pat-sandbox")
    assert [ok for name, ok, _ in sink.check()] == [True, False, False, False, False, False]
    sink.ensure_setup()
    sink.ensure_setup()  # a second run finds it
    assert all(ok for _, ok, _ in sink.check())
    wrong = HubSpotSink(hubspot_sandbox.url, "pat-wrong")
    [(name, ok, detail)] = wrong.check()
    assert (name, ok) == ("credentials", False) and "401" in detail and "private app" in detail


def test_upsert_creates_then_updates_the_same_record(hubspot_sandbox: Running) -> None:
    sink = make_sink(hubspot_sandbox)
    first = upsert(sink, "account", "CUST-1", name="Acme", domain="acme.example")
    again = upsert(sink, "account", "CUST-1", name="Acme Ltd", domain="acme.example")
    assert (first.created, again.created) == (True, False)
    assert first.crm_id == again.crm_id
    [held] = objects(hubspot_sandbox, "companies")
    assert held["id"] == first.crm_id and held["properties"]["name"] == "Acme Ltd"
    assert held["properties"]["erp_id"] == "CUST-1"
    found = sink.lookup("account", "CUST-1")
    assert found is not None and found["id"] == first.crm_id and found["external_id"] == "CUST-1"


def test_per_record_failures_fail_only_their_op(hubspot_sandbox: Running) -> None:
    sink = make_sink(hubspot_sandbox)
    ops = [
        Operation("customers", "account", Action.UPSERT, f"C{i}", {"name": f"Co {i}", "numberofemployees": n})
        for i, n in enumerate(["10", "many", "30", "40"])
    ]
    results = sink.apply(ops, NoLedger())
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.PERMANENT, Outcome.OK, Outcome.OK]
    assert results[1].error is not None and "numberofemployees" in results[1].error and "C1" in results[1].error
    assert sorted(r["properties"]["erp_id"] for r in objects(hubspot_sandbox, "companies")) == ["C0", "C2", "C3"]
    # Updates of existing records, one bad: each result still finds its op.
    ops = [Operation("customers", "account", Action.UPSERT, f"C{i}", {"name": f"New {i}"}) for i in (3, 0, 2)]
    ops[1].record["numberofemployees"] = "lots"
    results = sink.apply(ops, NoLedger())
    assert [(r.outcome, r.created) for r in results] == [
        (Outcome.OK, False),
        (Outcome.PERMANENT, False),
        (Outcome.OK, False),
    ]
    held = {r["properties"]["erp_id"]: r for r in objects(hubspot_sandbox, "companies")}
    assert [results[0].crm_id, results[2].crm_id] == [held["C3"]["id"], held["C2"]["id"]]
    assert (held["C3"]["properties"]["name"], held["C0"]["properties"]["name"]) == ("New 3", "Co 0")


def test_injected_partial_failures_are_transient_and_a_retry_makes_no_duplicates() -> None:
    running = start_sandbox("hubspot", faults=Faults(rate_partial=0.3, seed=11))
    try:
        sink = make_sink(running)
        ops = [Operation("c", "account", Action.UPSERT, f"P{i}", {"name": f"Co {i}"}) for i in range(120)]
        results = sink.apply(ops, NoLedger())
        failed = [op for op, r in zip(ops, results, strict=True) if r.outcome is not Outcome.OK]
        assert failed and all(r.outcome in (Outcome.OK, Outcome.TRANSIENT) for r in results)
        httpx.post(f"{running.url}/__sandbox/faults", json={}).raise_for_status()
        assert all(r.outcome is Outcome.OK for r in sink.apply(failed, NoLedger()))
        held = [r["properties"]["erp_id"] for r in objects(running, "companies")]
        assert sorted(held) == sorted(op.external_id for op in ops)
    finally:
        running.stop()


def test_children_are_associated_and_reparenting_removes_the_stale_link(hubspot_sandbox: Running) -> None:
    sink = make_sink(hubspot_sandbox)
    acme = upsert(sink, "account", "A1", name="Acme").crm_id
    beta = upsert(sink, "account", "A2", name="Beta").crm_id
    assert acme and beta
    ann = upsert(sink, "contact", "P1", firstname="Ann", account=acme).crm_id
    deal = upsert(sink, "opportunity", "D1", dealname="Big", account=acme).crm_id
    assert ann and deal
    line = upsert(sink, "line_item", "L1", name="Widget", quantity="2", opportunity=deal).crm_id
    assert line
    assert associated(hubspot_sandbox, "contacts", "companies", ann) == {acme}
    assert associated(hubspot_sandbox, "deals", "companies", deal) == {acme}
    assert associated(hubspot_sandbox, "line_items", "deals", line) == {deal}
    got = sink.get("contact", ann)
    assert got is not None and got["account"] == acme and "account" not in got.get("properties", {})

    again = upsert(sink, "contact", "P1", firstname="Ann", account=beta)
    assert again.crm_id == ann and not again.created
    assert associated(hubspot_sandbox, "contacts", "companies", ann) == {beta}
    record = sink.lookup("contact", "P1")
    assert record is not None and sink.comparable("contact", record)["account"] == beta


def test_delete_and_archive_archive_in_batches(hubspot_sandbox: Running) -> None:
    sink = make_sink(hubspot_sandbox)
    for i in range(3):
        upsert(sink, "product", f"SKU-{i}", name=f"Thing {i}", price="9.5")
    ops = [
        Operation("products", "product", Action.DELETE, "SKU-0"),
        Operation("products", "product", Action.ARCHIVE, "SKU-1", {"name": "Thing 1 (retired)"}),
        Operation("products", "product", Action.DELETE, "SKU-404"),
    ]
    results = sink.apply(ops, NoLedger())
    assert [r.outcome for r in results] == [Outcome.OK] * 3
    held = {r["properties"]["erp_id"]: r for r in objects(hubspot_sandbox, "products")}
    assert held["SKU-0"]["archived"] and held["SKU-1"]["archived"] and not held["SKU-2"]["archived"]
    assert held["SKU-1"]["properties"]["name"] == "Thing 1 (retired)"
    listed = {r["external_id"]: r for r in sink.iter_records("product")}
    assert [sink.is_archived("product", listed[k]) for k in ("SKU-0", "SKU-1", "SKU-2")] == [True, True, False]
    # Deleting again: already gone, still fine.
    assert sink.apply(ops[:1], NoLedger())[0].outcome is Outcome.OK


def test_archived_records_are_listed_as_deletions_in_the_window_asked(hubspot_sandbox: Running) -> None:
    from datetime import UTC, datetime, timedelta

    sink = make_sink(hubspot_sandbox)
    ids = [upsert(sink, "contact", f"DEL-{i}", firstname=f"D{i}").crm_id for i in range(105)]
    before = datetime.now(UTC) - timedelta(seconds=1)
    archived = [Operation("contacts", "contact", Action.DELETE, f"DEL-{i}") for i in (3, 101)]
    assert [r.outcome for r in sink.apply(archived, NoLedger())] == [Outcome.OK] * 2
    after = datetime.now(UTC) + timedelta(seconds=1)
    records = HubSpotRecords(sink, searches_per_second=0)
    found, covered = records.deleted_between("contact", before, after)
    assert sorted(crm_id for crm_id, _ in found) == sorted([ids[3], ids[101]]) and covered == after
    assert all(before <= at < after for _, at in found)
    assert records.deleted_between("contact", after, after + timedelta(minutes=1))[0] == []
    assert records.deleted_between("account", before, after)[0] == []


def drain(records: HubSpotRecords, object: str, limit: int) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        batch = records.changes_after(object, cursor, limit)
        if not batch:
            return seen
        seen.extend(records.record_id(r) for r in batch)
        moment = records.modified_at(batch[-1])
        assert moment is not None
        cursor = (moment, records.record_id(batch[-1]))
        assert len(seen) < 10_000, "changes_after loops"


def test_many_records_sharing_one_timestamp() -> None:
    running = start_sandbox("hubspot", freeze_ms=1_764_000_000_000)
    try:
        sink = make_sink(running)
        ops = [Operation("c", "contact", Action.UPSERT, f"P{i}", {"firstname": f"N{i}"}) for i in range(230)]
        assert all(r.outcome is Outcome.OK for r in sink.apply(ops, NoLedger()))
        httpx.post(f"{running.url}/__sandbox/clock", json={"advance_ms": 5}).raise_for_status()
        later = upsert(sink, "contact", "P-late", firstname="Late").crm_id
        records = HubSpotRecords(sink, searches_per_second=0)
        ids = [r["id"] for r in objects(running, "contacts") if r["id"] != later]
        for limit in (7, 100, 500):
            assert drain(records, "contact", limit) == [*sorted(ids, key=int), later]
    finally:
        running.stop()


def test_more_matches_than_the_search_cap() -> None:
    running = start_sandbox("hubspot", search_cap=50)
    try:
        sink = make_sink(running)
        ops = [Operation("c", "account", Action.UPSERT, f"C{i}", {"name": f"Co {i}"}) for i in range(180)]
        assert all(r.outcome is Outcome.OK for r in sink.apply(ops, NoLedger()))
        records = HubSpotRecords(sink, searches_per_second=0)
        everything = records.changes_after("account", None, 500)
        assert sorted(r["erp_id"] for r in everything) == sorted(op.external_id for op in ops)
        keys = [(records.modified_at(r), int(r["id"])) for r in everything]
        assert keys == sorted(keys)
        assert drain(records, "account", 40) == [r["id"] for r in everything]
    finally:
        running.stop()


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver(pg_db: str) -> Iterator[tuple[str, str]]:
    """(public URL of the webhook receiver, state DSN)."""
    migrate(pg_db)
    inbox, store = Inbox(pg_db), StateStore(pg_db)
    holder: dict[str, str] = {}

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        return make_hubspot_webhook_app("hs-client-secret", inbox, store.dead_letter, public_url=holder["public"])(
            environ, start_response
        )

    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    holder["public"] = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["public"], pg_db
    finally:
        server.shutdown()
        server.server_close()
        inbox.close()
        store.close()


def inbox_rows(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT event, object, crm_id FROM replicator.inbox WHERE crm = 'hubspot' ORDER BY seq"
        ).fetchall()


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_webhooks_signed_by_the_sandbox_are_stored(receiver: tuple[str, str]) -> None:
    public, dsn = receiver
    running = start_sandbox("hubspot", webhook_url=public + "/webhooks/hubspot", client_secret="hs-client-secret")
    try:
        sink = make_sink(running)
        company = upsert(sink, "account", "W1", name="Hooked").crm_id
        wait_for(lambda: ("company.created", "account", company) in inbox_rows(dsn))
        httpx.post(f"{running.url}/__sandbox/objects/companies/{company}", json={"name": "Edited"}).raise_for_status()
        wait_for(lambda: ("company.updated", "account", company) in {r[:3] for r in inbox_rows(dsn)})
    finally:
        running.stop()


def test_webhooks_with_a_wrong_secret_or_stale_are_refused(receiver: tuple[str, str]) -> None:
    public, dsn = receiver
    url = public + "/webhooks/hubspot"
    running = start_sandbox("hubspot", webhook_url=url, client_secret="another-apps-secret", webhook_retry_base_s=5.0)
    try:
        upsert(make_sink(running), "account", "W2", name="Forged")
        stats = f"{running.url}/__sandbox/stats"
        wait_for(lambda: httpx.get(stats).json().get("webhook_failures", 0) > 0)
    finally:
        running.stop()
    assert inbox_rows(dsn) == []
    body = orjson.dumps([{"eventId": 9, "subscriptionType": "company.creation", "objectId": 1, "occurredAt": 0}])
    stale_ms = int(time.time() * 1000) - 301_000
    stale = httpx.post(
        url,
        content=body,
        headers={
            "X-HubSpot-Signature-v3": sign_v3("hs-client-secret", "POST", url, body, stale_ms),
            "X-HubSpot-Request-Timestamp": str(stale_ms),
            "Content-Type": "application/json",
        },
    )
    assert stale.status_code == 401 and "old" in stale.json()["error"]
    fresh_ms = int(time.time() * 1000)
    fresh = httpx.post(
        url,
        content=body,
        headers={
            "X-HubSpot-Signature-v3": sign_v3("hs-client-secret", "POST", url, body, fresh_ms),
            "X-HubSpot-Request-Timestamp": str(fresh_ms),
        },
    )
    assert fresh.status_code == 200 and inbox_rows(dsn) == [("company.created", "account", "1")]
