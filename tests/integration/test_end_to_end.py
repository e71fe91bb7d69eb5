"""ERP PostgreSQL -> slot -> replicator process -> real BottleCRM."""

from __future__ import annotations

import threading
import time
from collections import Counter

from replicator.sinks.base import Action, Operation, Outcome
from tests.fixtures.stack import Stack


def test_backfill_then_stream_every_entity_and_reconcile_clean(stack: Stack) -> None:
    stack.start()
    stack.wait_backfilled()
    sink = stack.sink
    assert stack.synced("customers") == 24
    assert stack.synced("products") == 18
    # Soft-deleted rows are archived, not deleted: customer 11 is inactive in the seed.
    assert sink.lookup("account", "CUST-11")["is_active"] is False  # type: ignore[index]

    # An update that leaves the TOAST-stored notes untouched must not blank the CRM description.
    notes = stack.sql("SELECT notes FROM customers WHERE id = 1")[0][0]
    assert len(notes) > 10_000
    stack.sql("UPDATE customers SET website = 'https://toast.example' WHERE id = 1")
    stack.wait_for(
        "website of CUST-1", lambda: (sink.lookup("account", "CUST-1") or {}).get("website") == "https://toast.example"
    )
    assert (sink.lookup("account", "CUST-1") or {}).get("description") == notes

    # customers: insert, update, update of a related row, delete
    stack.sql("INSERT INTO customers (id, code, name, industry) VALUES (100, 'C0100', 'Streamed AG', 'FIN')")
    stack.wait_for("inserted account", lambda: sink.lookup("account", "CUST-100"))
    stack.sql(
        "INSERT INTO contact_mechanisms (customer_id, kind, value, is_primary) "
        "VALUES (100, 'email', 'hello@streamed.example', true)"
    )
    stack.wait_for(
        "account email from a related row",
        lambda: (sink.lookup("account", "CUST-100") or {}).get("email") == "hello@streamed.example",
    )
    stack.sql("UPDATE customers SET name = 'Streamed AG (renamed)' WHERE id = 100")
    stack.wait_for(
        "renamed account", lambda: (sink.lookup("account", "CUST-100") or {}).get("name") == "Streamed AG (renamed)"
    )

    # contacts: insert with a lookup to the new account, update, soft delete, delete (archives)
    stack.sql(
        "INSERT INTO contacts (id, customer_id, first_name, last_name, email) "
        "VALUES (500, 100, 'Lin', 'Stream', 'lin@streamed.example')"
    )
    contact = stack.wait_for("inserted contact", lambda: sink.lookup("contact", "CONT-500"))
    account = sink.lookup("account", "CUST-100")
    assert account is not None
    assert str(contact.get("account") or "") in (str(account["id"]), "") or contact.get("account_id") == account["id"]
    stack.sql("UPDATE contacts SET job_title = 'CTO' WHERE id = 500")
    stack.wait_for("contact title", lambda: (sink.lookup("contact", "CONT-500") or {}).get("title") == "CTO")
    stack.sql("DELETE FROM contacts WHERE id = 500")
    stack.wait_for(
        "contact archived on delete", lambda: (sink.lookup("contact", "CONT-500") or {}).get("is_active") is False
    )

    # products: insert, price update (NUMERIC stays exact), discontinue (archive), delete (archive)
    stack.sql("INSERT INTO products (sku, name, unit_price) VALUES ('SKU-9000', 'Streamed part', 10.10)")
    stack.wait_for("inserted product", lambda: sink.lookup("product", "SKU-9000"))
    stack.sql("UPDATE products SET unit_price = 19.99 WHERE sku = 'SKU-9000'")
    stack.wait_for(
        "product price", lambda: str((sink.lookup("product", "SKU-9000") or {}).get("price")) in ("19.99", "19.990")
    )
    # A text-keyed row whose TOAST value did not change is re-read by its key: the key is cast for the query.
    big = stack.sql("SELECT string_agg(md5(i::text), ' ') FROM generate_series(1, 400) AS i")[0][0]
    stack.sql("UPDATE products SET description = %s WHERE sku = 'SKU-9000'", (big,))
    stack.wait_for("big description", lambda: (sink.lookup("product", "SKU-9000") or {}).get("description") == big)
    stack.sql("UPDATE products SET unit_price = 29.99 WHERE sku = 'SKU-9000'")
    stack.wait_for(
        "price next to an unchanged TOAST value",
        lambda: str((sink.lookup("product", "SKU-9000") or {}).get("price")) in ("29.99", "29.990"),
    )
    assert (sink.lookup("product", "SKU-9000") or {}).get("description") == big
    stack.sql("UPDATE products SET discontinued = true WHERE sku = 'SKU-9000'")
    stack.wait_for("product archived", lambda: (sink.lookup("product", "SKU-9000") or {}).get("is_active") is False)

    # orders: insert (filtered while draft), confirm (appears), update, delete
    stack.sql(
        "INSERT INTO sales_orders (id, order_no, customer_id, status, total) VALUES (900, 'SO-9900', 100, 'draft', 50)"
    )
    stack.sql("UPDATE sales_orders SET status = 'confirmed' WHERE id = 900")
    opp = stack.wait_for("confirmed order", lambda: sink.lookup("opportunity", "SO-900"))
    assert opp["stage"] == "NEGOTIATION"
    stack.sql("UPDATE sales_orders SET total = 75.50 WHERE id = 900")
    stack.wait_for(
        "order amount", lambda: str((sink.lookup("opportunity", "SO-900") or {}).get("amount")) in ("75.50", "75.5")
    )
    stack.sql("DELETE FROM sales_orders WHERE id = 900")
    stack.wait_for("order deleted", lambda: sink.lookup("opportunity", "SO-900") is None)

    # customers: delete (no dependants left)
    stack.sql("UPDATE contacts SET customer_id = NULL WHERE customer_id = 100")
    stack.sql("DELETE FROM contact_mechanisms WHERE customer_id = 100; DELETE FROM customers WHERE id = 100")
    stack.wait_for("account deleted", lambda: sink.lookup("account", "CUST-100") is None)

    stack.wait_idle()
    metrics = stack.metrics()
    assert "replicator_healthy 1.0" in metrics  # current at every scrape, without anyone asking /healthz
    assert 'replicator_events_out_total{entity="customers",op="c",outcome="ok"}' in metrics
    assert "replicator_commit_to_ack_seconds_count" in metrics
    assert "replicator_crm_request_seconds_count" in metrics
    result = stack.cli("reconcile")
    assert result.returncode == 0, result.stdout + result.stderr
    status = stack.cli("status")
    assert status.returncode == 0, status.stderr
    assert "customers" in status.stdout and "synced" in status.stdout and "open dead letters: 0" in status.stdout
    assert stack.stop() == 0


def test_kill9_mid_stream_loses_nothing_and_duplicates_nothing(stack: Stack) -> None:
    stack.start()
    stack.wait_backfilled()
    total = 40
    done = threading.Event()

    def writer() -> None:
        for i in range(total):
            stack.sql(
                "INSERT INTO contacts (id, customer_id, first_name, last_name, email) "
                "VALUES (%s, 1 + %s %% 24, 'Kill', %s, %s)",
                (1000 + i, i, f"Nine{i}", f"k{i}@kill.example"),
            )
            time.sleep(0.05)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    stack.wait_for(
        "some streamed contacts",
        lambda: stack.sql("SELECT count(*) FROM replicator.sync_state WHERE erp_key LIKE 'CONT-10%%'")[0][0] >= 5,
    )
    stack.kill9()
    thread.join(30)
    assert done.is_set()
    stack.start()
    stack.wait_for(
        "every streamed contact",
        lambda: (
            stack.sql(
                "SELECT count(*) FROM replicator.sync_state WHERE erp_key ~ '^CONT-1[0-9]{3}$' AND status = 'synced'"
            )[0][0]
            == total
        ),
        timeout=120,
    )
    stack.wait_idle()
    ours = Counter(
        r.get("external_id")
        for r in stack.sink.iter_records("contact")
        if str(r.get("external_id", "")).startswith("CONT-1")
    )
    expected = {f"CONT-{1000 + i}" for i in range(total)}
    assert expected <= set(ours)
    duplicates = {k: n for k, n in ours.items() if n > 1}
    assert not duplicates, f"duplicate CRM contacts after kill -9: {duplicates}"
    assert stack.cli("reconcile").returncode == 0


def test_rejected_record_is_dead_lettered_and_the_others_continue(stack: Stack) -> None:
    stack.start()
    stack.wait_backfilled()
    # BottleCRM rejects a malformed email with a 400; the contact next to it must still arrive.
    stack.sql(
        "INSERT INTO contacts (id, customer_id, first_name, last_name, email) VALUES "
        "(700, 1, 'Bad', 'Email', 'not-an-email'), (701, 1, 'Good', 'Email', 'good@ok.example')"
    )
    stack.wait_for("good contact", lambda: stack.sink.lookup("contact", "CONT-701"))
    letter = stack.wait_for(
        "dead letter",
        lambda: stack.sql("SELECT reason, attempts, status FROM replicator.dead_letters WHERE erp_key = 'CONT-700'"),
    )
    reason, attempts, status = letter[0]
    assert status == "open" and attempts >= 1
    assert "email" in reason.lower()
    stack.wait_for(
        "the open dead-letter gauge", lambda: "replicator_dead_letters_open 1.0" in stack.metrics(), timeout=20
    )
    state = stack.sql("SELECT status, last_error FROM replicator.sync_state WHERE erp_key = 'CONT-700'")
    assert state[0][0] == "failed" and state[0][1]
    assert stack.sink.lookup("contact", "CONT-700") is None
    listed = stack.cli("dlq", "list")
    assert "CONT-700" in listed.stdout
    # Fixing the row in the ERP re-syncs it and closes the letter.
    stack.sql("UPDATE contacts SET email = 'fixed@ok.example' WHERE id = 700")
    stack.wait_for("fixed contact", lambda: stack.sink.lookup("contact", "CONT-700"))
    assert stack.sql("SELECT status FROM replicator.dead_letters WHERE erp_key = 'CONT-700'")[0][0] == "replayed"
    assert stack.health()["healthy"]


def test_dlq_replay_resyncs_from_the_current_row(stack: Stack) -> None:
    stack.start()
    stack.wait_backfilled()
    stack.sql(
        "INSERT INTO contacts (id, customer_id, first_name, last_name, email) VALUES (710, 1, 'Re', 'Play', 'broken')"
    )
    stack.wait_for(
        "dead letter",
        lambda: stack.sql("SELECT id FROM replicator.dead_letters WHERE erp_key = 'CONT-710' AND status = 'open'"),
    )
    assert stack.stop() == 0
    # Fix the data without the service running: only a replay can carry it over.
    with_fix = "UPDATE contacts SET email = 'replayed@ok.example' WHERE id = 710"
    stack.sql(with_fix)
    result = stack.cli("dlq", "replay")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (stack.sink.lookup("contact", "CONT-710") or {}).get("email") == "replayed@ok.example"
    assert stack.sql("SELECT status FROM replicator.dead_letters WHERE erp_key = 'CONT-710'")[0][0] == "replayed"


def test_sigterm_stops_cleanly_and_restart_resumes_without_resending(stack: Stack) -> None:
    stack.start()
    stack.wait_backfilled()
    stack.sql("UPDATE products SET name = 'Renamed before stop' WHERE sku = 'SKU-1003'")
    stack.wait_for(
        "renamed product", lambda: (stack.sink.lookup("product", "SKU-1003") or {}).get("name") == "Renamed before stop"
    )
    stack.wait_idle()
    assert stack.stop() == 0
    sent_before = stack.sql("SELECT count(*) FROM replicator.ledger")[0][0]
    stack.start()
    stack.wait_idle()
    stack.sql("UPDATE products SET name = 'Renamed after restart' WHERE sku = 'SKU-1003'")
    stack.wait_for(
        "second rename", lambda: (stack.sink.lookup("product", "SKU-1003") or {}).get("name") == "Renamed after restart"
    )
    # The restart neither re-ran the backfill nor created anything again.
    assert stack.sql("SELECT count(*) FROM replicator.ledger")[0][0] == sent_before
    assert "initial backfill" not in stack.log_tail(200)


def test_truncate_is_reported_not_propagated(stack: Stack) -> None:
    stack.start()
    stack.wait_backfilled()
    before = sum(1 for r in stack.sink.iter_records("contact") if str(r.get("external_id", "")).startswith("CONT-"))
    stack.sql("TRUNCATE contacts")
    letter = stack.wait_for(
        "the truncate report",
        lambda: stack.sql("SELECT entity, op, reason FROM replicator.dead_letters WHERE erp_key = '*'"),
    )
    entity, op, reason = letter[0]
    assert (entity, op) == ("contacts", "t")
    assert "TRUNCATE of public.contacts was not propagated" in reason and "reconcile --repair" in reason
    # The CRM keeps its contacts, and the stream goes on.
    stack.sql("UPDATE products SET name = 'after truncate' WHERE sku = 'SKU-1005'")
    stack.wait_for(
        "a later change", lambda: (stack.sink.lookup("product", "SKU-1005") or {}).get("name") == "after truncate"
    )
    after = sum(1 for r in stack.sink.iter_records("contact") if str(r.get("external_id", "")).startswith("CONT-"))
    assert after == before > 0


class _MemoryLedger:
    """Stands in for the state store when a test edits the CRM behind the replicator's back."""

    def begin_create(self, op: Operation) -> bool:
        return False

    def finish_create(self, op: Operation, crm_id: str) -> None:
        pass


def test_reconcile_finds_drift_and_repair_fixes_it(stack: Stack) -> None:
    stack.start()
    stack.wait_backfilled()
    assert stack.stop() == 0
    sink = stack.sink
    # Drift made in the CRM by hand: a deleted account, an edited product, a stray contact.
    account = sink.lookup("account", "CUST-4")
    assert account is not None
    ledger = _MemoryLedger()
    results = sink.apply(
        [
            Operation("customers", "account", Action.DELETE, "CUST-4", crm_id=str(account["id"])),
            Operation(
                "products",
                "product",
                Action.UPSERT,
                "SKU-1006",
                record={"name": "edited in the CRM"},
                crm_id=str((sink.lookup("product", "SKU-1006") or {})["id"]),
            ),
            Operation(
                "contacts",
                "contact",
                Action.UPSERT,
                "CONT-9999",
                record={"first_name": "Stray", "last_name": "Record", "email": "stray@crm.example"},
            ),
        ],
        ledger,
    )
    assert all(r.outcome is Outcome.OK for r in results), results
    found = stack.cli("reconcile")
    assert found.returncode == 1
    assert "CUST-4: missing" in found.stdout
    assert "SKU-1006: different name" in found.stdout
    assert "CONT-9999: extra" in found.stdout
    repaired = stack.cli("reconcile", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert (sink.lookup("product", "SKU-1006") or {}).get("name") != "edited in the CRM"
    assert sink.lookup("account", "CUST-4") is not None
    stray = sink.lookup("contact", "CONT-9999")
    assert stray is None or stray.get("is_active") is False  # contacts: on_delete archive


def test_child_of_a_filtered_parent_is_dead_lettered_and_marked_failed(stack: Stack) -> None:
    text = stack.config_path.read_text()
    text = text.replace(
        '    soft_delete: "NOT active"\n    on_delete: delete', "    filter: active\n    on_delete: delete", 1
    )
    assert "filter: active" in text
    stack.config_path.write_text(text)
    stack.start()
    stack.wait_backfilled()
    # Customer 11 is inactive, so filtered out: an order for it has no account to point at.
    stack.sql(
        "INSERT INTO sales_orders (id, order_no, customer_id, status, total) "
        "VALUES (950, 'SO-9950', 11, 'confirmed', 10)"
    )
    reason = stack.wait_for(
        "the dead letter",
        lambda: stack.sql("SELECT reason FROM replicator.dead_letters WHERE erp_key = 'SO-950' AND status = 'open'"),
    )[0][0]
    assert "customers CUST-11" in reason and "has no CRM record" in reason
    status, error = stack.sql("SELECT status, last_error FROM replicator.sync_state WHERE erp_key = 'SO-950'")[0]
    assert status == "failed" and error == reason
    assert stack.sink.lookup("opportunity", "SO-950") is None
