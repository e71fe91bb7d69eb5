"""MariaDB ERP -> binlog -> `replicator run` (a real process) -> real BottleCRM, state in PostgreSQL."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from replicator.config import load_config
from replicator.devstack.bottlecrm import BottleCrm
from replicator.devstack.mariadb import MariaDb
from replicator.devstack.postgres import free_port
from replicator.devstack.sample_erp import MARIADB_CONFIG, load_sample_erp_mariadb
from replicator.jobs.setup import setup
from replicator.sinks.bottlecrm import BottleCrmSink
from tests.fixtures.stack import Stack

_counter = itertools.count()


class MariaStack(Stack):
    """`sql` reads the state store (PostgreSQL); `erp` writes the MariaDB ERP."""

    server: MariaDb
    db: str

    def erp(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.server.execute(statement, params, db=self.db)


@pytest.fixture
def mstack(
    mariadb: MariaDb, bottlecrm: BottleCrm, crm: BottleCrmSink, pg_db: str, tmp_path: Path
) -> Iterator[MariaStack]:
    db = f"erp_{os.getpid()}_{next(_counter)}"
    erp_dsn = load_sample_erp_mariadb(mariadb, db)
    port = free_port()
    env = {
        **os.environ,
        "ERP_DSN": erp_dsn,
        "STATE_DSN": pg_db,
        "BOTTLECRM_URL": bottlecrm.url,
        "BOTTLECRM_TOKEN": bottlecrm.token,
        "REPLICATOR_METRICS_LISTEN": f"127.0.0.1:{port}",
    }
    text = MARIADB_CONFIG.read_text().replace("table: erp.", f"table: {db}.")
    text = text.replace("server_id: 4242", f"server_id: {4000 + next(_counter) + os.getpid() % 10_000}")
    config_path = tmp_path / "replicator.yaml"
    config_path.write_text(text)
    steps = setup(load_config(config_path, env))
    # A MariaDB ERP gets no publication or slot: setup is the state schema and the CRM.
    assert [step.what.split()[0] for step in steps] == ["state", "CRM"]
    s = MariaStack(pg_db, config_path, env, crm, port, tmp_path)
    s.server, s.db = mariadb, db
    try:
        yield s
    finally:
        s.stop()
        mariadb.drop_database(db)


def test_backfill_then_stream_every_entity_and_reconcile_clean(mstack: MariaStack) -> None:
    s, sink = mstack, mstack.sink
    checked = s.cli("check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "binlog_row_image" in checked.stdout and "GTID" in checked.stdout
    s.start()
    s.wait_backfilled()
    assert s.synced("customers") == 24 and s.synced("products") == 18 and s.synced("contacts") == 36
    assert (sink.lookup("account", "CUST-11") or {}).get("is_active") is False  # inactive in the seed
    assert (sink.lookup("account", "CUST-2") or {}).get("email") == "info@customer2.example"
    assert s.cli("reconcile").returncode == 0

    # customers: insert, a related row, rename
    s.erp("INSERT INTO customers (id, code, name, industry) VALUES (100, 'C0100', 'Streamed AG', 'FIN')")
    s.wait_for("inserted account", lambda: sink.lookup("account", "CUST-100"))
    s.erp(
        "INSERT INTO contact_mechanisms (customer_id, kind, value, is_primary) "
        "VALUES (100, 'email', 'hello@streamed.example', TRUE)"
    )
    s.wait_for(
        "account email from a related row",
        lambda: (sink.lookup("account", "CUST-100") or {}).get("email") == "hello@streamed.example",
    )
    s.erp("UPDATE customers SET name = 'Streamed AG (renamed)' WHERE id = 100")
    s.wait_for("renamed", lambda: (sink.lookup("account", "CUST-100") or {}).get("name") == "Streamed AG (renamed)")

    # contacts: insert with a lookup, update, delete (archives)
    s.erp(
        "INSERT INTO contacts (id, customer_id, first_name, last_name, email, updated_at) "
        "VALUES (500, 100, 'Lin', 'Stream', 'lin@streamed.example', '2024-07-01 12:00:00')"
    )
    s.wait_for("inserted contact", lambda: sink.lookup("contact", "CONT-500"))
    s.erp("UPDATE contacts SET job_title = 'CTO' WHERE id = 500")
    s.wait_for("contact title", lambda: (sink.lookup("contact", "CONT-500") or {}).get("title") == "CTO")
    s.erp("DELETE FROM contacts WHERE id = 500")
    s.wait_for("contact archived", lambda: (sink.lookup("contact", "CONT-500") or {}).get("is_active") is False)

    # products (keyed by SKU, a text key): a multi-row transaction, a price update, discontinue
    with s.server.cursor(s.db) as cur:
        cur.execute("BEGIN")
        cur.execute(
            "INSERT INTO products (sku, name, unit_price) VALUES ('SKU-9000', 'Streamed part', 10.10), "
            "('SKU-9001', 'Other part', 1.00)"
        )
        cur.execute("UPDATE products SET unit_price = 19.99 WHERE sku = 'SKU-9000'")
        cur.execute("COMMIT")
    s.wait_for("product of a transaction", lambda: sink.lookup("product", "SKU-9001"))
    s.wait_for("price", lambda: str((sink.lookup("product", "SKU-9000") or {}).get("price")) in ("19.99", "19.990"))
    s.erp("UPDATE products SET discontinued = TRUE WHERE sku = 'SKU-9000'")
    s.wait_for("product archived", lambda: (sink.lookup("product", "SKU-9000") or {}).get("is_active") is False)

    # orders: filtered while draft, appear when confirmed, deleted
    s.erp(
        "INSERT INTO sales_orders (id, order_no, customer_id, status, total) VALUES (900, 'SO-9900', 100, 'draft', 50)"
    )
    s.erp("UPDATE sales_orders SET status = 'confirmed' WHERE id = 900")
    opp = s.wait_for("confirmed order", lambda: sink.lookup("opportunity", "SO-900"))
    assert opp["stage"] == "NEGOTIATION"
    s.erp("DELETE FROM sales_orders WHERE id = 900")
    s.wait_for("order deleted", lambda: sink.lookup("opportunity", "SO-900") is None)

    # TRUNCATE is reported, not propagated; the stream goes on.
    s.erp("TRUNCATE debezium_signal")  # not mapped: nothing
    s.wait_idle()
    assert s.cli("reconcile").returncode == 0
    status = s.cli("status")
    assert status.returncode == 0 and "open dead letters: 0" in status.stdout
    # Every transaction is acknowledged and checkpointed, mapped or not.
    s.wait_for(
        "the checkpoint at the server's position",
        lambda: (
            s.sql("SELECT position FROM replicator.checkpoints WHERE stream = 'binlog'")[0][0]
            == s.server.gtid_binlog_pos()
        ),
        timeout=20,
    )
    assert s.stop() == 0


def test_truncate_is_a_dead_letter_and_the_stream_goes_on(mstack: MariaStack) -> None:
    s = mstack
    s.start()
    s.wait_backfilled()
    s.erp("TRUNCATE TABLE contacts")
    letter = s.wait_for(
        "the truncate report",
        lambda: s.sql("SELECT entity, op, reason FROM replicator.dead_letters WHERE erp_key = '*'"),
    )
    assert letter[0][0] == "contacts" and letter[0][1] == "t"
    assert f"TRUNCATE of {s.db}.contacts was not propagated" in letter[0][2]
    s.erp("UPDATE products SET name = 'after truncate' WHERE sku = 'SKU-1005'")
    s.wait_for("a later change", lambda: (s.sink.lookup("product", "SKU-1005") or {}).get("name") == "after truncate")
    assert s.sink.lookup("contact", "CONT-1") is not None  # the CRM keeps its contacts


def test_kill9_mid_stream_loses_nothing_and_duplicates_nothing(mstack: MariaStack) -> None:
    s = mstack
    s.start()
    s.wait_backfilled()
    total = 40
    done = threading.Event()

    def writer() -> None:
        for i in range(total):
            s.erp(
                "INSERT INTO contacts (id, customer_id, first_name, last_name, email) VALUES (%s, %s, 'Kill', %s, %s)",
                (1000 + i, 1 + i % 24, f"Nine{i}", f"k{i}@kill.example"),
            )
            time.sleep(0.05)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    s.wait_for(
        "some streamed contacts",
        lambda: s.sql("SELECT count(*) FROM replicator.sync_state WHERE erp_key LIKE 'CONT-10%%'")[0][0] >= 5,
    )
    s.kill9()
    thread.join(30)
    assert done.is_set()
    s.start()
    s.wait_for(
        "every streamed contact",
        lambda: (
            s.sql(
                "SELECT count(*) FROM replicator.sync_state WHERE erp_key ~ '^CONT-1[0-9]{3}$' AND status = 'synced'"
            )[0][0]
            == total
        ),
        timeout=120,
    )
    s.wait_idle()
    ours = Counter(
        r.get("external_id")
        for r in s.sink.iter_records("contact")
        if str(r.get("external_id", "")).startswith("CONT-1")
    )
    assert {f"CONT-{1000 + i}" for i in range(total)} <= set(ours)
    duplicates = {k: n for k, n in ours.items() if n > 1}
    assert not duplicates, f"duplicate CRM contacts after kill -9: {duplicates}"
    assert "initial backfill" not in s.log_tail(200)
    assert s.cli("reconcile").returncode == 0
