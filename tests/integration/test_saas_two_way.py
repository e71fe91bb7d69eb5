"""CRM -> ERP end to end from the HubSpot and Salesforce sandboxes, on real parts: a clone of
the sample ERP, the vendor's sandbox served in this process, and `replicator run` as a real
process with the two-way sample configuration (examples/erp/replicator-<vendor>-two-way.yaml).

HubSpot's changes arrive by its signed webhooks (the sandbox delivers them to the replicator's
metrics port, signed over the full URL), or with webhooks off by the search-API poller;
Salesforce's by the SOQL cursor poller. The webhook and Salesforce tests time ten CRM user
edits until the ERP row shows them and print the median (run with `-s` to see it).
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import psycopg
import pytest

from replicator.config import load_config
from replicator.devstack.postgres import PgCluster, free_port
from replicator.devstack.sample_erp import CONFIG, EXAMPLE
from replicator.jobs.setup import setup
from replicator.sandbox.core import Running, serve
from replicator.sandbox.hubspot import sign_v3
from tests.fixtures.two_way import TwoWayStack

pytestmark = pytest.mark.integration

HUBSPOT_TOKEN = "pat-two-way"
HUBSPOT_CLIENT_SECRET = "two-way-client-secret"
SF_CLIENT_ID, SF_CLIENT_SECRET = "two-way-client", "two-way-secret"
EDITS_TIMED = 10


class SaasTwoWay(TwoWayStack):
    """A two-way Stack whose CRM is a vendor sandbox served in this process."""

    running: Running

    def sandbox_records(self, object: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.running.url}/__sandbox/objects/{object}", timeout=10)
        assert r.status_code == 200, r.text[:300]
        return r.json()["results"]  # type: ignore[no-any-return]

    def user_edit(self, object: str, record_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """A CRM user's edit (HubSpot: changeSource CRM_UI; Salesforce: a UI save); the record after it."""
        r = httpx.post(f"{self.running.url}/__sandbox/objects/{object}/{record_id}", json=fields, timeout=10)
        assert r.status_code == 200, f"user edit of {object} {record_id}: {r.status_code} {r.text[:300]}"
        return r.json()  # type: ignore[no-any-return]

    def erp_writes(self) -> float:
        return self.metric("replicator_erp_writes_total", outcome="ok")

    def settled(self) -> None:
        """Nothing pending on either side: pipeline idle, inbox applied."""
        self.wait_idle()
        self.wait_for("an applied inbox", lambda: self.backlog() == 0, 60)
        self.wait_idle()


def _write_configs(tmp_path: Path, vendor: str, dbname: str) -> Path:
    """The vendor's two-way sample beside the base it extends, with this test's slot."""
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    base = CONFIG.read_text()
    # Slots are cluster-wide: one per test database.
    base = base.replace("slot: replicator", f"slot: slot_{dbname}").replace(
        "publication: replicator", f"publication: pub_{dbname}"
    )
    (cfg / "replicator.yaml").write_text(base)
    name = f"replicator-{vendor}-two-way.yaml"
    (cfg / name).write_text((EXAMPLE / name).read_text())
    return cfg / name


@pytest.fixture
def saas_two_way(
    pg_cluster: PgCluster, erp_template: str, pg_db: str, tmp_path: Path
) -> Iterator[Callable[..., SaasTwoWay]]:
    """A factory, called once per test: `make(vendor, extra_customers=0, webhooks=True)` gives a fresh
    sample ERP clone (plus `extra_customers` rows), the vendor's sandbox, the two-way config and
    `replicator setup` done; `start()` runs the replicator."""
    made: list[SaasTwoWay] = []

    def make(vendor: str, *, extra_customers: int = 0, webhooks: bool = True) -> SaasTwoWay:
        dbname = str(psycopg.conninfo.conninfo_to_dict(pg_db)["dbname"])
        pg_cluster.drop_database(dbname)
        pg_cluster.create_database(dbname, template=erp_template)
        if extra_customers:
            with psycopg.connect(pg_db, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO customers (code, name, industry, website) "
                    "SELECT format('X%%05s', g), 'Extra customer ' || g, 'TECH', NULL "
                    "FROM generate_series(1, %s) AS g",
                    (extra_customers,),
                )
        port = free_port()
        env = {**os.environ, "ERP_DSN": pg_db, "REPLICATOR_METRICS_LISTEN": f"127.0.0.1:{port}"}
        sink: Any
        if vendor == "hubspot":
            from replicator.sandbox.hubspot import HubSpotSandbox
            from replicator.sinks.hubspot import HubSpotSink

            public_url = f"http://127.0.0.1:{port}"
            webhook_url = f"{public_url}/webhooks/hubspot" if webhooks else None
            running = serve(HubSpotSandbox(HUBSPOT_TOKEN, webhook_url=webhook_url, client_secret=HUBSPOT_CLIENT_SECRET))
            env |= {
                "HUBSPOT_URL": running.url,
                "HUBSPOT_TOKEN": HUBSPOT_TOKEN,
                "HUBSPOT_CLIENT_SECRET": HUBSPOT_CLIENT_SECRET,
                "HUBSPOT_WEBHOOK_PUBLIC_URL": public_url,
                # One feed at a time: webhooks alone, or the search-API poller alone.
                "HUBSPOT_POLL_INTERVAL_S": "0" if webhooks else "1",
                "HUBSPOT_POLL_LOOKBACK_S": "5",
            }
            sink = HubSpotSink(running.url, HUBSPOT_TOKEN, properties={"account": ["name", "website"]})
        else:
            from replicator.sandbox.salesforce import SalesforceSandbox
            from replicator.sinks.salesforce import SalesforceSink

            running = serve(SalesforceSandbox(SF_CLIENT_ID, SF_CLIENT_SECRET))
            env |= {
                "SALESFORCE_LOGIN_URL": running.url,
                "SALESFORCE_CLIENT_ID": SF_CLIENT_ID,
                "SALESFORCE_CLIENT_SECRET": SF_CLIENT_SECRET,
                "SALESFORCE_POLL_INTERVAL_S": "1",
                "SALESFORCE_POLL_LOOKBACK_S": "5",
            }
            sink = SalesforceSink(running.url, client_id=SF_CLIENT_ID, client_secret=SF_CLIENT_SECRET)
        config_path = _write_configs(tmp_path, vendor, dbname)
        try:
            setup(load_config(config_path, env))
        except BaseException:
            running.stop()
            raise
        stack = SaasTwoWay(pg_db, config_path, env, cast(Any, sink), port, tmp_path)
        stack.running = running
        made.append(stack)
        return stack

    yield make
    for stack in made:
        try:
            stack.stop()
        finally:
            stack.sink.close()
            stack.running.stop()


def _wait_erp(
    s: SaasTwoWay, what: str, started: float, statement: str, params: Any, expected: list[tuple[Any, ...]]
) -> float:
    """Seconds from `started` (monotonic) until the ERP answers `expected`, polled every 10 ms."""
    deadline = started + 30
    with psycopg.connect(s.dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute(statement, params).fetchall() == expected:
                return time.monotonic() - started
            if s.proc is not None and s.proc.poll() is not None:
                raise AssertionError(f"replicator exited waiting for {what}:\n{s.log_tail()}")
            time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}; replicator log:\n{s.log_tail()}")


def _report(vendor: str, feed: str, latencies: list[float]) -> None:
    ms = sorted(round(x * 1000) for x in latencies)
    print(
        f"\n{vendor} ({feed}): CRM user edit -> ERP row, {len(ms)} edits: "
        f"median {statistics.median(ms):.0f} ms, min {ms[0]} ms, max {ms[-1]} ms; all (ms): {ms}"
    )


# ---------------------------------------------------------------------------- HubSpot


def _hubspot_ids(s: SaasTwoWay, object_type: str) -> dict[str, str]:
    """External id -> HubSpot record id, from the sandbox."""
    return {
        r["properties"]["erp_id"]: r["id"]
        for r in s.sandbox_records(object_type)
        if not r.get("archived") and r["properties"].get("erp_id")
    }


def _signed_post(s: SaasTwoWay, body: bytes, secret: str, *, timestamp_ms: int | None = None) -> httpx.Response:
    """A delivery signed the way HubSpot signs (v3: method + URL + body + timestamp)."""
    url = f"http://127.0.0.1:{s.metrics_port}/webhooks/hubspot"
    ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
    headers = {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": sign_v3(secret, "POST", url, body, ts),
        "X-HubSpot-Request-Timestamp": str(ts),
    }
    return httpx.post(url, content=body, headers=headers, timeout=10)


def test_hubspot_webhooks_bring_user_edits_and_never_our_own_writes(
    saas_two_way: Callable[..., SaasTwoWay],
) -> None:
    s = saas_two_way("hubspot")
    sandbox = s.running.sandbox
    s.start()
    s.wait_backfilled()
    # The initial load's creations come back as INTEGRATION webhooks: recognised, never written.
    assert sandbox.webhooks_idle(60), "the sandbox still holds undelivered webhooks"  # type: ignore[attr-defined]
    s.settled()
    stats = httpx.get(f"{s.running.url}/__sandbox/stats", timeout=5).json()
    assert stats.get("webhook_events_delivered", 0) > 0 and stats.get("webhook_events_dropped", 0) == 0, stats
    echoes_before = s.metric("replicator_echoes_suppressed_total", direction="crm_to_erp", by="ledger")
    assert echoes_before > 0, s.metric_lines("webhooks", "echoes", "erp_writes")
    assert s.erp_writes() == 0, s.metric_lines("erp_writes", "echoes")

    companies, contacts = _hubspot_ids(s, "companies"), _hubspot_ids(s, "contacts")
    # A user's edits in HubSpot -> the ERP (industry through the reverse expression).
    # One edit of two properties is two webhook events; the record is read when applied, so one write.
    edit = {"website": "https://hs-edit.example", "industry": "FINANCIAL_SERVICES"}
    edited = s.user_edit("companies", companies["CUST-3"], {"properties": edit})
    s.user_edit("contacts", contacts["CONT-5"], {"properties": {"firstname": "Ada-HS", "jobtitle": "Chief of Hubs"}})
    s.wait_for(
        "the company edit in the ERP",
        lambda: s.erp("SELECT website, industry FROM customers WHERE id = 3") == [("https://hs-edit.example", "FIN")],
    )
    s.wait_for(
        "the contact edit in the ERP",
        lambda: s.erp("SELECT first_name, job_title FROM contacts WHERE id = 5") == [("Ada-HS", "Chief of Hubs")],
    )
    s.settled()
    writes = s.erp_writes()
    assert writes == 2, s.metric_lines("erp_writes", "echoes", "webhooks")
    # Our ERP writes carry the replication origin: the slot drops them, nothing goes back to HubSpot.
    assert s.metric("replicator_echoes_suppressed_total", direction="erp_to_crm", by="origin") >= 2
    now = next(r for r in s.sandbox_records("companies") if r["id"] == companies["CUST-3"])
    assert now["updatedAt"] == edited["updatedAt"], "the company was written again after the user's edit"

    # ERP -> HubSpot; the INTEGRATION webhook of our own write is recognised, not written back.
    s.erp("UPDATE customers SET name = 'Renamed in the ERP' WHERE id = 4")
    s.wait_for(
        "the ERP rename in HubSpot",
        lambda: any(
            r["properties"].get("name") == "Renamed in the ERP"
            for r in s.sandbox_records("companies")
            if r["id"] == companies["CUST-4"]
        ),
    )
    s.wait_for(
        "the webhook of our own write recognised",
        lambda: s.metric("replicator_echoes_suppressed_total", direction="crm_to_erp", by="ledger") > echoes_before,
    )
    assert sandbox.webhooks_idle(30)  # type: ignore[attr-defined]
    s.settled()
    time.sleep(2)  # quiet: a late echo would show as a write here
    assert s.erp_writes() == writes, s.metric_lines("erp_writes", "echoes")
    assert s.erp("SELECT name FROM customers WHERE id = 4") == [("Renamed in the ERP",)]

    # A forged delivery (wrong secret), an unsigned one, and one signed for another URL: 401, counted, not stored.
    forged_event = {
        "eventId": 987654321,
        "subscriptionType": "company.propertyChange",
        "objectId": int(companies["CUST-5"]),
        "propertyName": "website",
        "propertyValue": "https://forged.example",
        "occurredAt": int(time.time() * 1000),
    }
    body = orjson.dumps([forged_event])
    assert _signed_post(s, body, "not-the-client-secret").status_code == 401
    unsigned = httpx.post(f"http://127.0.0.1:{s.metrics_port}/webhooks/hubspot", content=body, timeout=10)
    assert unsigned.status_code == 401
    stale = _signed_post(s, body, HUBSPOT_CLIENT_SECRET, timestamp_ms=int((time.time() - 3600) * 1000))
    assert stale.status_code == 401
    assert s.metric("replicator_webhooks_total", crm="hubspot", outcome="forged") == 1
    assert s.metric("replicator_webhooks_total", crm="hubspot", outcome="unsigned") == 1
    assert s.metric("replicator_webhooks_total", crm="hubspot", outcome="stale") == 1
    forged_delivery = f"987654321::{forged_event['objectId']}:{forged_event['occurredAt']}:website"
    delivered = "SELECT count(*) FROM replicator.inbox WHERE delivery_id = %s"
    assert s.sql(delivered, (forged_delivery,)) == [(0,)]
    # The same bytes signed with the real secret are accepted: the refusals above were the signature's doing.
    assert _signed_post(s, body, HUBSPOT_CLIENT_SECRET).status_code == 200
    assert s.sql(delivered, (forged_delivery,)) == [(1,)]

    # Latency: ten user edits, each waited for in the ERP.
    latencies = []
    for i in range(EDITS_TIMED):
        customer = 6 + i
        website = f"https://hs-timed-{i}.example"
        started = time.monotonic()
        s.user_edit("companies", companies[f"CUST-{customer}"], {"properties": {"website": website}})
        query = "SELECT website FROM customers WHERE id = %s"
        latencies.append(_wait_erp(s, f"timed edit {i}", started, query, (customer,), [(website,)]))
    _report("HubSpot", "webhooks", latencies)
    assert statistics.median(latencies) < 3, latencies
    assert s.metric("replicator_crm_to_erp_seconds_count") >= EDITS_TIMED


def _frozen_edits_arrive_once(
    s: SaasTwoWay,
    crm: str,
    accounts: dict[str, str],
    *,
    freeze: Callable[[bool], None],
    edit: Callable[[str, str], Any],
    stamp: Callable[[], set[str]],
    quiet_s: float,
) -> None:
    """A user edits every account while the CRM's clock stands still, so all share one modification
    time; each edit must reach the ERP, and exactly once, however the poller pages and looks back."""
    writes = s.erp_writes()
    polled = s.metric("replicator_crm_polled_total", crm=crm, object="account")
    freeze(True)
    try:
        for n, (external_id, record_id) in enumerate(sorted(accounts.items())):
            edit(record_id, f"Frozen edit {n} of {external_id}")
    finally:
        freeze(False)
    stamps = stamp()
    assert len(stamps) == 1, f"the edits do not share one modification time: {sorted(stamps)[:5]}"
    expected = sorted(
        (int(external_id.removeprefix("CUST-")), f"Frozen edit {n} of {external_id}")
        for n, external_id in enumerate(sorted(accounts))
    )
    s.wait_for(
        "every frozen-clock edit in the ERP",
        lambda: s.erp("SELECT id, notes FROM customers WHERE notes LIKE 'Frozen edit %%' ORDER BY id") == expected,
        60,
    )
    time.sleep(quiet_s)
    s.settled()
    assert s.erp_writes() - writes == len(accounts), s.metric_lines("erp_writes", "echoes", "polled")
    assert s.metric("replicator_crm_polled_total", crm=crm, object="account") - polled == len(accounts)
    assert s.sql("SELECT count(*) FROM replicator.dead_letters WHERE status = 'open'") == [(0,)]


def test_hubspot_polling_alone_brings_every_edit_once_even_under_one_timestamp(
    saas_two_way: Callable[..., SaasTwoWay],
) -> None:
    """Webhooks off: the search-API poller is the only feed (HubSpot's safety net for lost deliveries)."""
    extra = 126  # 150 companies: more than one poll page (100) shares the frozen timestamp
    s = saas_two_way("hubspot", extra_customers=extra, webhooks=False)
    companies_total = 24 + extra
    s.start()
    s.wait_backfilled()
    s.wait_for(
        "the initial load polled back",
        lambda: s.metric("replicator_crm_polled_total", crm="hubspot", object="account") >= companies_total,
        60,
    )
    s.settled()
    assert s.erp_writes() == 0, s.metric_lines("erp_writes", "echoes", "polled")
    assert s.metric("replicator_webhooks_total", crm="hubspot") == 0

    companies = _hubspot_ids(s, "companies")
    s.user_edit("companies", companies["CUST-3"], {"properties": {"website": "https://hs-polled.example"}})
    s.wait_for(
        "the polled company edit in the ERP",
        lambda: s.erp("SELECT website FROM customers WHERE id = 3") == [("https://hs-polled.example",)],
    )
    s.settled()
    assert s.erp_writes() == 1, s.metric_lines("erp_writes", "echoes", "polled")

    sandbox = s.running.sandbox
    frozen_ms = int(time.time() * 1000)
    _frozen_edits_arrive_once(
        s,
        "hubspot",
        companies,
        freeze=lambda on: sandbox.freeze_clock(frozen_ms if on else None),  # type: ignore[attr-defined]
        edit=lambda record_id, text: s.user_edit("companies", record_id, {"properties": {"description": text}}),
        stamp=lambda: {
            r["properties"]["hs_lastmodifieddate"]
            for r in s.sandbox_records("companies")
            if (r["properties"].get("description") or "").startswith("Frozen edit")
        },
        quiet_s=7,
    )


# ---------------------------------------------------------------------------- Salesforce


def _salesforce_ids(s: SaasTwoWay, sobject: str) -> dict[str, str]:
    return {r["ERP_Id__c"]: r["Id"] for r in s.sandbox_records(sobject) if not r["IsDeleted"] and r.get("ERP_Id__c")}


def test_salesforce_polling_brings_user_edits_once_even_under_one_timestamp(
    saas_two_way: Callable[..., SaasTwoWay],
) -> None:
    extra = 126  # 150 accounts: more than one poll page (100) shares the frozen timestamp
    s = saas_two_way("salesforce", extra_customers=extra)
    accounts_total = 24 + extra
    # `check` validates the reverse mapping against the field names Salesforce describes, as `run` does.
    checked = s.cli("check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "polling every 1 s" in checked.stdout and "entities write CRM changes back" in checked.stdout, checked.stdout
    s.start()
    s.wait_backfilled()
    # The poller reads the initial load's own writes back: recognised, never written to the ERP.
    s.wait_for(
        "the initial load polled back",
        lambda: s.metric("replicator_crm_polled_total", crm="salesforce", object="account") >= accounts_total,
        60,
    )
    s.settled()
    assert s.erp_writes() == 0, s.metric_lines("erp_writes", "echoes", "polled")
    assert s.metric("replicator_echoes_suppressed_total", direction="crm_to_erp", by="ledger") >= accounts_total

    accounts, contacts = _salesforce_ids(s, "Account"), _salesforce_ids(s, "Contact")
    edited = s.user_edit("Account", accounts["CUST-3"], {"Website": "https://sf-edit.example", "Industry": "Finance"})
    s.user_edit("Contact", contacts["CONT-5"], {"FirstName": "Ada-SF", "Title": "Chief of Clouds"})
    s.wait_for(
        "the account edit in the ERP",
        lambda: s.erp("SELECT website, industry FROM customers WHERE id = 3") == [("https://sf-edit.example", "FIN")],
    )
    s.wait_for(
        "the contact edit in the ERP",
        lambda: s.erp("SELECT first_name, job_title FROM contacts WHERE id = 5") == [("Ada-SF", "Chief of Clouds")],
    )
    s.settled()
    assert s.erp_writes() == 2, s.metric_lines("erp_writes", "echoes", "polled")
    # Our ERP writes carry the replication origin: nothing went back to Salesforce.
    now = next(r for r in s.sandbox_records("Account") if r["Id"] == accounts["CUST-3"])
    assert now["SystemModstamp"] == edited["SystemModstamp"], "the account was written again after the user's edit"

    # ERP -> Salesforce; the poller finds our own write and the ledger recognises it.
    echoes = s.metric("replicator_echoes_suppressed_total", direction="crm_to_erp", by="ledger")
    s.erp("UPDATE customers SET name = 'Renamed in the ERP' WHERE id = 4")
    s.wait_for(
        "the ERP rename in Salesforce",
        lambda: any(
            r["Name"] == "Renamed in the ERP" for r in s.sandbox_records("Account") if r["ERP_Id__c"] == "CUST-4"
        ),
    )
    s.wait_for(
        "the poll of our own write recognised",
        lambda: s.metric("replicator_echoes_suppressed_total", direction="crm_to_erp", by="ledger") > echoes,
    )

    # Latency: ten user edits, each waited for in the ERP (the poll interval is 1 s). An edit made
    # right after the previous one arrived would be made right after a poll, and every edit
    # would wait a whole interval: a random pause spreads them over the poll cycle, as users do.
    pauses = random.Random(20261205)
    latencies = []
    for i in range(EDITS_TIMED):
        time.sleep(pauses.uniform(0, 1))
        customer = 6 + i
        website = f"https://sf-timed-{i}.example"
        started = time.monotonic()
        s.user_edit("Account", accounts[f"CUST-{customer}"], {"Website": website})
        query = "SELECT website FROM customers WHERE id = %s"
        latencies.append(_wait_erp(s, f"timed edit {i}", started, query, (customer,), [(website,)]))
    _report("Salesforce", "polling every 1 s", latencies)
    assert statistics.median(latencies) < 3, latencies
    s.settled()
    writes = s.erp_writes()
    assert writes == 2 + EDITS_TIMED, s.metric_lines("erp_writes", "echoes", "polled")

    # Every account edited under a frozen clock: one SystemModstamp for all, more than a page of them.
    frozen_at = datetime.now(UTC)
    _frozen_edits_arrive_once(
        s,
        "salesforce",
        accounts,
        freeze=lambda on: s.running.sandbox.freeze_clock(frozen_at if on else None),  # type: ignore[attr-defined]
        edit=lambda record_id, text: s.user_edit("Account", record_id, {"Description": text}),
        stamp=lambda: {
            r["SystemModstamp"]
            for r in s.sandbox_records("Account")
            if (r.get("Description") or "").startswith("Frozen edit")
        },
        quiet_s=7,  # several more polls, each re-reading the last 5 s
    )


# ---------------------------------------------------------------------------- both vendors


@pytest.mark.parametrize("vendor", ["hubspot", "salesforce"])
def test_latest_wins_weighs_the_erps_time_against_the_vendors_own(
    saas_two_way: Callable[..., SaasTwoWay], vendor: str
) -> None:
    """Both sides edit a contact's first name while the replicator is down. The sample config
    names no CRM modification field, so the vendor's own (HubSpot `lastmodifieddate` on
    contacts, Salesforce `LastModifiedDate`) is what the ERP's `updated_at` is weighed against."""
    s = saas_two_way(vendor, webhooks=False)  # HubSpot: the poller finds what changed while down
    obj, first = ("contacts", "firstname") if vendor == "hubspot" else ("Contact", "FirstName")

    def crm_first_names() -> dict[str, Any]:
        if vendor == "hubspot":
            return {r["properties"].get("erp_id"): r["properties"].get(first) for r in s.sandbox_records(obj)}
        return {r.get("ERP_Id__c"): r.get(first) for r in s.sandbox_records(obj)}

    s.start()
    s.wait_backfilled()
    s.settled()
    ids = _hubspot_ids(s, obj) if vendor == "hubspot" else _salesforce_ids(s, obj)
    s.stop()
    s.erp("UPDATE contacts SET first_name = 'ErpOld', updated_at = now() - interval '2 hours' WHERE id = 6")
    s.erp("UPDATE contacts SET first_name = 'ErpNew', updated_at = now() + interval '2 hours' WHERE id = 7")
    edit = (lambda name: {"properties": {first: name}}) if vendor == "hubspot" else (lambda name: {first: name})
    s.user_edit(obj, ids["CONT-6"], edit("CrmNew"))
    s.user_edit(obj, ids["CONT-7"], edit("CrmOld"))
    s.start()
    s.wait_for(
        "the newer CRM edit in the ERP",
        lambda: s.erp("SELECT first_name FROM contacts WHERE id = 6") == [("CrmNew",)],
        60,
    )
    s.wait_for("the newer ERP edit in the CRM", lambda: crm_first_names().get("CONT-7") == "ErpNew", 60)
    time.sleep(3)  # several polls: a late overwrite by the older side would show here
    s.settled()
    assert s.erp("SELECT id, first_name FROM contacts WHERE id IN (6, 7) ORDER BY id") == [(6, "CrmNew"), (7, "ErpNew")]
    names = crm_first_names()
    assert (names.get("CONT-6"), names.get("CONT-7")) == ("CrmNew", "ErpNew")
    assert s.sql("SELECT count(*) FROM replicator.conflicts") == [(0,)]  # decided by time, nothing parked


@pytest.mark.parametrize("vendor", ["hubspot", "salesforce"])
def test_crm_deletions_reach_the_erp_by_polling_and_our_own_are_echoes(
    saas_two_way: Callable[..., SaasTwoWay], vendor: str
) -> None:
    """Polling cannot select a deleted record: Salesforce's delete log ("sObject Get Deleted")
    and HubSpot's archived records list them (HubSpot with webhooks off, the poller alone).
    This test's config deletes the ERP contact of a contact deleted in the CRM."""
    s = saas_two_way(vendor, webhooks=False)
    head, contacts_section = s.config_path.read_text().split("\n  contacts:\n", 1)
    assert "    crm_to_erp:\n" in contacts_section
    contacts_section = contacts_section.replace("    crm_to_erp:\n", "    crm_to_erp:\n      delete: delete\n", 1)
    s.config_path.write_text(head + "\n  contacts:\n" + contacts_section)
    s.start()
    s.wait_backfilled()
    s.settled()
    sink = cast(Any, s.sink)
    if vendor == "hubspot":
        resource, path = "contacts", f"/crm/v3/objects/contacts/{_hubspot_ids(s, 'contacts')['CONT-8']}"
    else:
        resource, path = "Contact", f"{sink.api}/sobjects/Contact/{_salesforce_ids(s, 'Contact')['CONT-8']}"
    writes = s.erp_writes()
    polled = s.metric("replicator_crm_polled_total", crm=vendor, object="contact")
    # A CRM user deletes one contact while the ERP deletes another (which the replicator then
    # deletes in the CRM, so the CRM lists both deletions).
    user_delete = sink.client.request("DELETE", resource, path)
    assert user_delete.status_code == 204, user_delete.text
    s.erp("DELETE FROM contacts WHERE id = 9")
    # Salesforce's log answers by whole minutes: a deletion is listed within about a minute.
    s.wait_for(
        "the contact deleted in the CRM gone from the ERP",
        lambda: s.erp("SELECT count(*) FROM contacts WHERE id = 8") == [(0,)],
        150,
    )
    s.wait_for(
        "both deletions polled",
        lambda: s.metric("replicator_crm_polled_total", crm=vendor, object="contact") - polled >= 2,
        150,
    )
    s.settled()
    time.sleep(3)  # more polls over the same window: each deletion is notified once
    s.settled()
    assert s.metric("replicator_crm_polled_total", crm=vendor, object="contact") - polled == 2
    assert s.erp_writes() - writes == 1, s.metric_lines("erp_writes", "echoes", "polled")  # only contact 8
    if vendor == "hubspot":
        gone = {r["properties"].get("erp_id") for r in s.sandbox_records("contacts") if r["archived"]}
    else:
        gone = {r["ERP_Id__c"] for r in s.sandbox_records("Contact") if r["IsDeleted"]}
    assert {"CONT-8", "CONT-9"} <= gone
    assert s.erp("SELECT count(*) FROM contacts WHERE id IN (8, 9)") == [(0,)]
    assert s.sql("SELECT count(*) FROM replicator.dead_letters WHERE status = 'open'") == [(0,)]
