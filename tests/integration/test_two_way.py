"""Two-way sync end to end: BottleCRM (Celery + Redis, real signed webhooks) <-> replicator <-> ERP."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import orjson
import psycopg

from tests.fixtures.two_way import TwoWayStack, patch


def test_crm_edits_reach_the_erp_and_erp_edits_do_not_come_back(two_way: TwoWayStack) -> None:
    s = two_way
    s.start()
    s.wait_backfilled()
    account = s.crm_id("account", "CUST-3")
    contact = s.crm_id("contact", "CONT-5")

    # CRM -> ERP, through the webhook
    with s.crm_api as api:
        r = api.patch(f"/accounts/{account}/", json={"website": "https://crm-edit.example", "industry": "FINANCE"})
        assert r.status_code < 300, r.text
        r = api.patch(f"/contacts/{contact}/", json={"first_name": "Ada-CRM", "title": "Chief of Things"})
        assert r.status_code < 300, r.text
    s.wait_for(
        "account edit in the ERP",
        lambda: s.erp("SELECT website, industry FROM customers WHERE id = 3") == [("https://crm-edit.example", "FIN")],
    )
    s.wait_for(
        "contact edit in the ERP",
        lambda: s.erp("SELECT first_name, job_title FROM contacts WHERE id = 5") == [("Ada-CRM", "Chief of Things")],
    )
    # Our ERP write carries the replication origin: the slot source drops it, nothing goes back.
    s.wait_idle()
    assert s.metric("replicator_echoes_suppressed_total", direction="erp_to_crm", by="origin") >= 2
    assert s.metric("replicator_erp_writes_total", outcome="ok") == 2, s.metric_lines(
        "erp_writes", "events_out", "echoes"
    )

    # ERP -> CRM; the CRM's webhook for our own write is recognised and dropped.
    s.erp("UPDATE customers SET name = 'Renamed in the ERP' WHERE id = 3")
    s.wait_for(
        "ERP rename in the CRM", lambda: (s.sink.lookup("account", "CUST-3") or {}).get("name") == "Renamed in the ERP"
    )
    s.wait_for(
        "the webhook echo suppressed",
        lambda: s.metric("replicator_echoes_suppressed_total", direction="crm_to_erp", by="ledger") >= 1,
    )
    time.sleep(2)
    assert s.metric("replicator_erp_writes_total", outcome="ok") == 2
    assert s.cli("reconcile").returncode == 0


def _crm_get(api: Any, path: str, key: str) -> dict[str, Any]:
    r = api.get(path)
    assert r.status_code == 200, r.text[:300]
    return r.json()[key]  # type: ignore[no-any-return]


def test_ping_pong_1000_alternating_edits_one_write_each_then_quiet(two_way: TwoWayStack) -> None:
    """1,000 edits of account names, alternating ERP and CRM on the same 10 records: each edit
    makes exactly one write on the other side, and nothing bounces back."""
    s = two_way
    s.start()
    s.wait_backfilled()
    lanes, rounds = 10, 100
    crm_ids = {c: s.crm_id("account", f"CUST-{c}") for c in range(1, lanes + 1)}
    crm_writes = lambda: s.metric("replicator_crm_responses_total", method="PATCH", resource="account")  # noqa: E731
    erp_writes = lambda: s.metric("replicator_erp_writes_total", table="public.customers", outcome="ok")  # noqa: E731
    crm_before, erp_before = crm_writes(), erp_writes()
    errors: list[str] = []

    def lane(customer: int) -> None:
        try:
            with s.crm_api as api:
                for i in range(rounds):
                    name = f"Ping-pong {customer}-{i}"
                    deadline = time.monotonic() + 60
                    from_erp = i % 2 == 0
                    if from_erp:
                        s.erp("UPDATE customers SET name = %s WHERE id = %s", (name, customer))
                    else:
                        patch(api, f"/accounts/{crm_ids[customer]}/", {"name": name})
                    while not _arrived(s, customer, crm_ids[customer], name, from_erp):
                        if time.monotonic() > deadline:
                            raise AssertionError(f"edit {i} of customer {customer} ({name}) never arrived")
                        time.sleep(0.05)
        except BaseException as exc:  # surfaced by the main thread
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=lane, args=(c,)) for c in crm_ids]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert not errors, errors[:3]
    edits_each_side = lanes * rounds // 2
    s.wait_idle()
    s.wait_for("an empty inbox", lambda: s.metric("replicator_inbox_backlog") == 0 or s.backlog() == 0, 60)
    time.sleep(5)  # quiet: late webhooks of our own writes must not start anything
    assert crm_writes() - crm_before == edits_each_side, s.metric_lines("crm_responses", "erp_writes", "echoes")
    assert erp_writes() - erp_before == edits_each_side, s.metric_lines("crm_responses", "erp_writes", "echoes")
    quiet = (crm_writes(), erp_writes())
    time.sleep(5)
    assert (crm_writes(), erp_writes()) == quiet
    assert s.backlog() == 0
    # Each ERP edit's webhook came back and was recognised; each CRM edit's ERP write was dropped by origin.
    assert s.metric("replicator_echoes_suppressed_total", direction="crm_to_erp", by="ledger") >= edits_each_side
    assert s.metric("replicator_echoes_suppressed_total", direction="erp_to_crm", by="origin") >= edits_each_side
    print(f"ping-pong: {2 * edits_each_side} edits in {elapsed:.1f} s")


def _arrived(s: TwoWayStack, customer: int, crm_id: str, name: str, from_erp: bool) -> bool:
    """The edit is visible on the other side. The CRM is read in its own database: polling its
    API from ten threads would take BottleCRM's two workers away from the replicator."""
    if from_erp:
        with psycopg.connect(s.crm.cluster.dsn(s.crm.database), autocommit=True) as conn:
            return conn.execute("SELECT name FROM accounts WHERE id = %s", (crm_id,)).fetchall() == [(name,)]
    return s.erp("SELECT name FROM customers WHERE id = %s", (customer,)) == [(name,)]


def test_conflicts_follow_each_fields_policy(two_way: TwoWayStack) -> None:
    s = two_way
    s.env["BOTTLECRM_POLL_INTERVAL_S"] = "2"  # the poller brings CRM edits made while we were down
    s.start()
    s.wait_backfilled()
    account = s.crm_id("account", "CUST-4")
    older, newer = s.crm_id("contact", "CONT-6"), s.crm_id("contact", "CONT-7")
    s.stop()
    # Both sides edit the same fields while the replicator is down.
    s.erp("UPDATE customers SET name = 'Name from ERP', website = 'https://erp.example', notes = NULL WHERE id = 4")
    s.erp(
        "UPDATE contacts SET phone = '+1 555 0100', first_name = 'ErpOld', "
        "updated_at = now() - interval '2 hours' WHERE id = 6"
    )
    s.erp("UPDATE contacts SET first_name = 'ErpNew', updated_at = now() + interval '2 hours' WHERE id = 7")
    with s.crm_api as api:
        patch(
            api,
            f"/accounts/{account}/",
            {"name": "Name from CRM", "website": "https://crm.example", "description": "Kept from the CRM"},
        )
        patch(api, f"/contacts/{older}/", {"phone": "+2 555 0200", "first_name": "CrmNew"})
        patch(api, f"/contacts/{newer}/", {"first_name": "CrmOld"})
    s.start()

    def account_state() -> tuple[Any, ...]:
        crm = s.sink.lookup("account", "CUST-4") or {}
        erp = s.erp("SELECT name, website, notes FROM customers WHERE id = 4")[0]
        return (crm.get("name"), crm.get("website"), crm.get("description"), *erp)

    expected = ("Name from ERP", "https://crm.example", "Kept from the CRM") * 2
    s.wait_for("account conflicts settled", lambda: account_state() == expected, 90)
    # latest_wins: the later edit wins, whichever side made it.
    s.wait_for(
        "older ERP edit lost", lambda: s.erp("SELECT first_name FROM contacts WHERE id = 6") == [("CrmNew",)], 90
    )
    s.wait_for(
        "newer ERP edit kept",
        lambda: (s.sink.lookup("contact", "CONT-7") or {}).get("first_name") == "ErpNew",
        90,
    )
    # manual: parked, neither side overwritten.
    listed = s.wait_for(
        "the parked phone conflict", lambda: "phone" in (r := s.cli("conflicts", "list")).stdout and r, 60
    )
    assert "+1 555 0100" in listed.stdout and "+2 555 0200" in listed.stdout
    assert s.erp("SELECT phone FROM contacts WHERE id = 6") == [("+1 555 0100",)]
    assert (s.sink.lookup("contact", "CONT-6") or {}).get("phone") == "+2 555 0200"
    assert "open conflicts: 1" in s.cli("status").stdout
    conflict_id = s.sql("SELECT id FROM replicator.conflicts WHERE status = 'open' AND field = 'phone'")[0][0]
    s.stop()  # resolve works beside or without the service
    resolved = s.cli("conflicts", "resolve", str(conflict_id), "--take", "crm")
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    assert s.erp("SELECT phone FROM contacts WHERE id = 6") == [("+2 555 0200",)]
    assert s.sql("SELECT status, resolution FROM replicator.conflicts WHERE id = %s", (conflict_id,)) == [
        ("resolved", "crm")
    ]
    assert s.cli("conflicts", "resolve", str(conflict_id), "--take", "erp").returncode == 1  # not open any more


def test_won_deal_becomes_one_sales_order_and_erp_status_updates_the_deal(two_way: TwoWayStack) -> None:
    s = two_way
    s.start()
    s.wait_backfilled()
    account = s.crm_id("account", "CUST-2")
    product = s.crm_id("product", "SKU-1003")
    with s.crm_api as api:
        r = api.post(
            "/opportunities/",
            json={
                "name": "Big CRM deal",
                "account": account,
                "stage": "PROSPECTING",
                "amount": "120.00",
                "currency": "EUR",
            },
        )
        assert r.status_code < 300, r.text[:300]
        deal = str(r.json()["id"])
        r = api.post(
            f"/opportunities/{deal}/line-items/", json={"product_id": product, "quantity": "3", "unit_price": "40.00"}
        )
        assert r.status_code == 201, r.text[:300]
        # Not won yet: nothing in the ERP.
        time.sleep(2)
        assert s.erp("SELECT count(*) FROM sales_orders WHERE crm_ref = %s", (deal,)) == [(0,)]
        patch(api, f"/opportunities/{deal}/", {"stage": "CLOSED_WON", "closed_on": "2026-12-01", "amount": "120.00"})
    order = s.wait_for(
        "the sales order from the won deal",
        lambda: s.erp(
            "SELECT id, customer_id, status, total, promised_on FROM sales_orders WHERE crm_ref = %s", (deal,)
        ),
    )
    order_id, customer_id, status, total, promised_on = order[0]
    assert (customer_id, status, str(total), str(promised_on)) == (2, "confirmed", "120.00", "2026-12-01")
    sku_id = s.erp("SELECT id FROM products WHERE sku = 'SKU-1003'")[0][0]
    lines = s.erp("SELECT product_id, quantity, unit_price FROM sales_order_lines WHERE order_id = %s", (order_id,))
    assert [(p, str(q), str(u)) for p, q, u in lines] == [(sku_id, "3.000", "40.00")]
    # The deal now carries the order's external id and stays won.
    s.wait_for("the deal linked to its order", lambda: (s.sink.lookup("opportunity", f"SO-{order_id}") or {}).get("id"))
    assert (s.sink.lookup("opportunity", f"SO-{order_id}") or {}).get("stage") == "CLOSED_WON"

    # Replaying the won webhook changes nothing: same delivery id is not stored again, a new one finds the order.
    won = s.sql("SELECT delivery_id, payload FROM replicator.inbox WHERE crm_id = %s AND event = 'deal.won'", (deal,))
    assert won, "BottleCRM sent no deal.won webhook"
    from replicator.sources.crm.signature import sign_bottlecrm

    body = orjson.dumps(won[0][1])
    url = f"http://127.0.0.1:{s.metrics_port}/webhooks/bottlecrm"
    for delivery in (won[0][0], "replayed-by-a-test"):
        headers = {
            "X-BottleCRM-Signature": sign_bottlecrm(s.env["BOTTLECRM_WEBHOOK_SECRET"], body, int(time.time())),
            "X-BottleCRM-Delivery": delivery,
            "X-BottleCRM-Event": "deal.won",
            "Content-Type": "application/json",
        }
        assert httpx.post(url, content=body, headers=headers, timeout=10).status_code == 200
    s.wait_for("the replay processed", lambda: s.backlog() == 0)
    s.wait_idle()
    assert s.erp("SELECT count(*) FROM sales_orders WHERE crm_ref = %s", (deal,)) == [(1,)]
    assert s.erp("SELECT count(*) FROM sales_order_lines WHERE order_id = %s", (order_id,)) == [(1,)]

    # ERP order status -> the deal's stage.
    s.erp("UPDATE sales_orders SET status = 'cancelled' WHERE id = %s", (order_id,))
    s.wait_for(
        "cancelled order -> lost deal",
        lambda: (s.sink.lookup("opportunity", f"SO-{order_id}") or {}).get("stage") == "CLOSED_LOST",
    )
