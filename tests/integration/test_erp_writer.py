"""The ERP writer against the sample ERP on a real PostgreSQL 15 and a real MariaDB 10.11."""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

import psycopg
import pytest

from replicator.devstack.mariadb import MariaDb
from replicator.devstack.sample_erp import EXAMPLE, MARIADB_EXAMPLE
from replicator.jobs.setup import apply_role_script, role_script
from replicator.mapping.catalog import TableInfo, read_catalog
from replicator.mapping.mysql_catalog import read_mysql_catalog
from replicator.mapping.mysql_conn import connect as mysql_connect
from replicator.ops.metrics import ERP_WRITES
from replicator.sinks.erp import ChildWrite, ErpWriter, RowWrite, WriteRejected, open_writer
from replicator.sinks.erp.mysql import MysqlDriver
from replicator.sinks.erp.postgres import OriginInUse, PostgresDriver
from replicator.sinks.erp.writer import SqlWriter
from replicator.sources.pg_admin import create_publication, create_slot
from replicator.sources.pg_slot import PgSlotSource

pytestmark = pytest.mark.integration

TABLES = ["customers", "contact_mechanisms", "contacts", "products", "sales_orders", "sales_order_lines"]
_origins = itertools.count()
BERLIN = ZoneInfo("Europe/Berlin")


@dataclass
class Erp:
    dialect: str
    prefix: str  # "public." or "<db>."
    dsn: str
    catalog: dict[str, TableInfo]
    query: Callable[..., list[tuple[Any, ...]]]  # (sql with %s, *params) on its own autocommit connection
    writers: list[ErpWriter] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)

    def t(self, name: str) -> str:
        return self.prefix + name

    def writer(self, **kwargs: Any) -> ErpWriter:
        if self.dialect == "postgres":
            kwargs.setdefault("origin", f"erp_writer_test_{os.getpid()}_{next(_origins)}")
            self.origins.append(kwargs["origin"])
        w = open_writer(self.dsn, self.dialect, self.catalog, **kwargs)  # type: ignore[arg-type]
        self.writers.append(w)
        return w

    def one(self, sql: str, *params: Any) -> Any:
        rows = self.query(sql, *params)
        assert len(rows) == 1, rows
        return rows[0][0]


def _pg(pg_db: str) -> Erp:
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute((EXAMPLE / "schema.sql").read_text())
        catalog = read_catalog(conn, [f"public.{t}" for t in TABLES])

    def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(pg_db, autocommit=True) as conn:
            cur = conn.execute(sql, params or None)
            return cur.fetchall() if cur.description else []

    return Erp("postgres", "public.", pg_db, catalog, query)


def _mysql(server: MariaDb, db: str) -> Erp:
    server.execute_script((MARIADB_EXAMPLE / "schema.sql").read_text(), db=db)
    dsn = server.dsn(db)
    conn = mysql_connect(dsn)
    try:
        catalog = read_mysql_catalog(conn, [f"{db}.{t}" for t in TABLES])
    finally:
        conn.close()

    def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return server.execute(sql, params or None, db=db)

    return Erp("mysql", f"{db}.", dsn, catalog, query)


def _seeded(e: Erp) -> Iterator[Erp]:
    e.query("INSERT INTO customers (code, name) VALUES ('C1', 'Acme')")
    e.query("INSERT INTO products (sku, name, unit_price) VALUES ('P1', 'Widget', 9.99)")
    try:
        yield e
    finally:
        for w in e.writers:
            w.close()
        # Replication origins belong to the whole cluster, not to the test's database.
        for origin in e.origins:
            with contextlib.suppress(psycopg.Error):
                e.query("SELECT pg_replication_origin_drop(%s)", origin)


@pytest.fixture(params=["postgres", "mysql"])
def erp(request: pytest.FixtureRequest) -> Iterator[Erp]:
    if request.param == "postgres":
        yield from _seeded(_pg(request.getfixturevalue("pg_db")))
    else:
        yield from _seeded(_mysql(request.getfixturevalue("mariadb"), request.getfixturevalue("mariadb_db")))


@pytest.fixture
def pg(pg_db: str) -> Iterator[Erp]:
    yield from _seeded(_pg(pg_db))


@pytest.fixture
def my(mariadb: MariaDb, mariadb_db: str) -> Iterator[Erp]:
    yield from _seeded(_mysql(mariadb, mariadb_db))


def _counted(table: str, action: str, outcome: str) -> float:
    return ERP_WRITES.labels(table, action, outcome)._value.get()


def _order(erp: Erp, crm_ref: str, *, order_no: str = "SO-1", product: int | None = None, lines: int = 2) -> RowWrite:
    customer = erp.one("SELECT id FROM customers WHERE code = 'C1'")
    product_id = product if product is not None else erp.one("SELECT id FROM products WHERE sku = 'P1'")
    return RowWrite(
        erp.t("sales_orders"),
        "insert",
        values={"order_no": order_no, "customer_id": customer, "status": "draft", "total": "19.98", "crm_ref": crm_ref},
        audit={"ordered_at": "now()"},
        returning=("id", "order_no"),
        adopt_by={"crm_ref": crm_ref},
        children=[
            ChildWrite(
                RowWrite(
                    erp.t("sales_order_lines"),
                    "insert",
                    values={"product_id": product_id, "quantity": "1.5", "unit_price": "9.99"},
                ),
                {"order_id": "id"},
            )
            for _ in range(lines)
        ],
    )


# -- both databases


def test_an_order_and_its_lines_are_inserted_in_one_transaction(erp: Erp) -> None:
    writer = erp.writer()
    before = _counted(erp.t("sales_orders"), "insert", "ok")
    outcome = writer.write(_order(erp, "deal-1"))
    assert outcome.inserted and not outcome.adopted
    assert outcome.row is not None and set(outcome.row) == {"id", "order_no"} and outcome.row["order_no"] == "SO-1"
    lines = erp.query("SELECT order_id, quantity, unit_price FROM sales_order_lines ORDER BY id")
    assert lines == [(outcome.row["id"], Decimal("1.500"), Decimal("9.99"))] * 2
    assert _counted(erp.t("sales_orders"), "insert", "ok") == before + 1


def test_a_failing_line_rolls_back_the_order(erp: Erp) -> None:
    writer = erp.writer()
    before = _counted(erp.t("sales_orders"), "insert", "rejected")
    with pytest.raises(WriteRejected) as e:
        writer.write(_order(erp, "deal-2", product=987654))
    assert e.value.table == erp.t("sales_order_lines")
    assert "foreign" in str(e.value).lower()
    assert erp.one("SELECT count(*) FROM sales_orders") == 0
    assert erp.one("SELECT count(*) FROM sales_order_lines") == 0
    assert _counted(erp.t("sales_orders"), "insert", "rejected") == before + 1
    # The writer is usable after the rollback.
    assert writer.write(_order(erp, "deal-2")).inserted


def test_adopt_by_returns_the_existing_row(erp: Erp) -> None:
    writer = erp.writer()
    first = writer.write(_order(erp, "deal-3"))
    again = writer.write(_order(erp, "deal-3", order_no="SO-other"))
    assert again.adopted and not again.inserted and again.row == first.row
    assert erp.one("SELECT count(*) FROM sales_orders") == 1
    assert erp.one("SELECT count(*) FROM sales_order_lines") == 2  # children only with a new parent


def test_adopt_by_is_safe_against_a_concurrent_insert(erp: Erp) -> None:
    """Another session inserts the same crm_ref after our look-up: our insert waits on it, fails on the
    unique key once it commits, and adopts its row."""
    writer = erp.writer()
    customer = erp.one("SELECT id FROM customers WHERE code = 'C1'")
    insert = (
        "INSERT INTO sales_orders (order_no, customer_id, status, crm_ref) VALUES ('SO-theirs', %s, 'draft', 'deal-4')"
    )
    if erp.dialect == "postgres":
        other: Any = psycopg.connect(erp.dsn)
        other.execute(insert, (customer,))
    else:
        other = mysql_connect(erp.dsn)
        other.autocommit(False)
        other.cursor().execute(insert, (customer,))
    timer = threading.Timer(1.0, other.commit)
    timer.start()
    try:
        outcome = writer.write(_order(erp, "deal-4"))
    finally:
        timer.join()
        other.close()
    assert outcome.adopted and outcome.row is not None and outcome.row["order_no"] == "SO-theirs"
    assert erp.one("SELECT count(*) FROM sales_orders") == 1
    assert erp.one("SELECT count(*) FROM sales_order_lines") == 0


def test_update_with_audit_now(erp: Erp) -> None:
    erp.query("UPDATE customers SET updated_at = '2020-01-01 00:00:00' WHERE code = 'C1'")
    writer = erp.writer()
    outcome = writer.write(
        RowWrite(
            erp.t("customers"),
            "update",
            key={"code": "C1"},
            values={"name": "Acme GmbH", "credit_limit": "1500.00"},
            audit={"updated_at": "now()"},
            returning=("id", "name", "credit_limit", "updated_at"),
        )
    )
    assert outcome.row is not None and not outcome.inserted
    assert outcome.row["name"] == "Acme GmbH" and outcome.row["credit_limit"] == Decimal("1500.00")
    assert abs(outcome.row["updated_at"] - datetime.now(UTC)) < timedelta(minutes=5)
    assert erp.one("SELECT name FROM customers WHERE code = 'C1'") == "Acme GmbH"
    # Setting the same values again still matches the row (not reported as missing).
    same = writer.write(RowWrite(erp.t("customers"), "update", key={"code": "C1"}, values={"name": "Acme GmbH"}))
    assert same.row == {}


def test_update_and_delete_of_a_missing_row(erp: Erp) -> None:
    writer = erp.writer()
    before = _counted(erp.t("customers"), "update", "missing")
    assert writer.write(RowWrite(erp.t("customers"), "update", key={"id": 424242}, values={"name": "x"})).row is None
    assert writer.write(RowWrite(erp.t("customers"), "delete", key={"id": 424242}, returning=("id",))).row is None
    assert _counted(erp.t("customers"), "update", "missing") == before + 1


def test_delete_returns_the_deleted_row(erp: Erp) -> None:
    writer = erp.writer()
    customer = erp.one("SELECT id FROM customers WHERE code = 'C1'")
    erp.query("INSERT INTO contact_mechanisms (customer_id, kind, value) VALUES (%s, 'email', 'a@b.example')", customer)
    mechanism = erp.one("SELECT id FROM contact_mechanisms")
    outcome = writer.write(
        RowWrite(erp.t("contact_mechanisms"), "delete", key={"id": str(mechanism)}, returning=("id", "value"))
    )
    assert outcome.row == {"id": mechanism, "value": "a@b.example"}
    assert erp.one("SELECT count(*) FROM contact_mechanisms") == 0


def test_values_that_need_rounding_are_rejected_and_nothing_is_written(erp: Erp) -> None:
    writer = erp.writer()
    with pytest.raises(WriteRejected) as e:
        writer.write(
            RowWrite(erp.t("customers"), "update", key={"code": "C1"}, values={"name": "New", "credit_limit": "10.555"})
        )
    assert str(e.value).startswith(f"{erp.t('customers')}.credit_limit: value '10.555'")
    assert "never rounded" in str(e.value)
    assert erp.one("SELECT name FROM customers WHERE code = 'C1'") == "Acme"


def test_awkward_text_is_written_verbatim(erp: Erp) -> None:
    notes = ('O\'Brien "quoted" `tick` ; DROP TABLE customers; -- \\ %s %% ünïcødé 😀 \t\n') * 1_600
    assert len(notes.encode()) > 100_000
    writer = erp.writer()
    outcome = writer.write(
        RowWrite(
            erp.t("customers"),
            "insert",
            values={"code": "C2'); --", "name": "Robert'); DROP TABLE customers;--", "notes": notes},
            returning=("id",),
        )
    )
    assert outcome.row is not None
    stored = erp.query("SELECT code, name, notes FROM customers WHERE id = %s", outcome.row["id"])
    assert stored == [("C2'); --", "Robert'); DROP TABLE customers;--", notes)]


def test_constraint_violations_are_rejected(erp: Erp) -> None:
    writer = erp.writer()
    customer = erp.one("SELECT id FROM customers WHERE code = 'C1'")
    with pytest.raises(WriteRejected, match=r"(?i)check|constraint"):
        writer.write(
            RowWrite(
                erp.t("contact_mechanisms"), "insert", values={"customer_id": customer, "kind": "pager", "value": "1"}
            )
        )
    with pytest.raises(WriteRejected, match=r"(?i)duplicate|unique"):
        writer.write(RowWrite(erp.t("customers"), "insert", values={"code": "C1", "name": "Twin"}))
    with pytest.raises(WriteRejected, match=r"(?i)null"):
        writer.write(RowWrite(erp.t("customers"), "insert", values={"code": "C3", "name": None}))
    with pytest.raises(WriteRejected, match="the table's columns are id, code, name"):
        writer.write(RowWrite(erp.t("customers"), "insert", values={"code": "C3", "nam": "typo"}))
    assert erp.one("SELECT count(*) FROM customers") == 1


def test_odd_identifiers(erp: Erp) -> None:
    if erp.dialect == "postgres":
        erp.query('CREATE TABLE "we""ird %s" ("select" int PRIMARY KEY, "100%" text, "a b" text)')
        table = 'public.we"ird %s'
    else:
        erp.query("CREATE TABLE `we``ird %s` (`select` INT PRIMARY KEY, `100%` TEXT, `a b` TEXT)")
        table = f"{erp.prefix}we`ird %s"
    erp.catalog.update(_catalog(erp, table))
    writer = erp.writer()
    ins = writer.write(RowWrite(table, "insert", values={"select": 1, "100%": "x%sy", "a b": "'"}, returning=("100%",)))
    assert ins.row == {"100%": "x%sy"}
    upd = writer.write(RowWrite(table, "update", key={"select": 1}, values={"a b": "%%"}, returning=("a b",)))
    assert upd.row == {"a b": "%%"}
    assert writer.write(RowWrite(table, "delete", key={"select": 1}, returning=("select",))).row == {"select": 1}


def test_json_ish_strings_are_bound_as_their_column_types(erp: Erp) -> None:
    if erp.dialect == "postgres":
        erp.query(
            "CREATE TABLE typed (id int PRIMARY KEY, doc jsonb, u uuid, at timestamp, on_day date, flag boolean, "
            "small smallint, amount numeric(8,3), stamp timestamptz)"
        )
    else:
        erp.query(
            "CREATE TABLE typed (id INT PRIMARY KEY, doc JSON, u CHAR(36), at DATETIME, on_day DATE, flag BOOLEAN, "
            "small SMALLINT, amount DECIMAL(8,3), stamp TIMESTAMP NULL)"
        )
    erp.catalog.update(_catalog(erp, erp.t("typed")))
    writer = erp.writer(timezone="Europe/Berlin")
    values = {
        "id": "1",
        "doc": '{"a": [1, "ü"]}',
        "u": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "at": "2026-11-25T10:00:00+00:00",
        "on_day": "2026-11-25",
        "flag": "true",
        "small": "12",
        "amount": "1.5",
        "stamp": "2026-07-01 12:00:00",  # naive: Berlin summer time
    }
    row = writer.write(RowWrite(erp.t("typed"), "insert", values=values, returning=tuple(values))).row
    assert row is not None
    assert (
        row["id"] == 1
        and row["doc"] == {"a": [1, "ü"]}
        and str(row["u"]).lower() == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    )
    assert row["at"] == datetime(2026, 11, 25, 11, tzinfo=BERLIN) and row["at"].utcoffset() == timedelta(hours=1)
    assert row["on_day"] == date(2026, 11, 25) and row["flag"] is True and row["small"] == 12
    assert row["amount"] == Decimal("1.500") and row["stamp"] == datetime(2026, 7, 1, 10, tzinfo=UTC)


def _catalog(erp: Erp, table: str) -> dict[str, TableInfo]:
    if erp.dialect == "postgres":
        return read_catalog_pg(erp.dsn, table)
    conn = mysql_connect(erp.dsn)
    try:
        return read_mysql_catalog(conn, [table])
    finally:
        conn.close()


def read_catalog_pg(dsn: str, table: str) -> dict[str, TableInfo]:
    with psycopg.connect(dsn) as conn:
        return read_catalog(conn, [table])


# -- PostgreSQL only


def test_nul_bytes_are_rejected_on_postgres(pg: Erp) -> None:
    writer = pg.writer()
    with pytest.raises(WriteRejected) as e:
        writer.write(RowWrite("public.customers", "update", key={"code": "C1"}, values={"notes": "a\x00b"}))
    assert str(e.value).startswith("public.customers.notes: value 'a\\x00b'")
    assert "PostgreSQL text cannot store" in str(e.value)


def test_our_writes_carry_the_origin_and_the_slot_source_drops_them(pg: Erp) -> None:
    create_publication(pg.dsn, "erp_pub", ["public.customers"])
    create_slot(pg.dsn, "erp_slot")
    writer = pg.writer(origin="replicator_erp_echo")
    driver = cast(PostgresDriver, cast(SqlWriter, writer).driver)
    assert driver.conn.execute("SELECT pg_replication_origin_session_is_setup() AS on").fetchone() == {"on": True}
    driver.conn.rollback()
    assert pg.one("SELECT count(*) FROM pg_replication_origin WHERE roname = 'replicator_erp_echo'") == 1
    assert pg.one("SELECT application_name FROM pg_stat_activity WHERE pid = %s", driver.conn.info.backend_pid) == (
        "replicator-erp-writer"
    )
    driver.conn.rollback()

    source = PgSlotSource(pg.dsn, slot="erp_slot", publication="erp_pub", drop_origins={"replicator_erp_echo"})
    source.start()
    try:
        writer.write(RowWrite("public.customers", "insert", values={"code": "ECHO", "name": "ours"}))
        pg.query("INSERT INTO customers (code, name) VALUES ('PLAIN', 'theirs')")
        seen: list[Any] = []
        deadline = time.monotonic() + 15
        while not seen and time.monotonic() < deadline:
            seen += source.read(0.2)
        more_until = time.monotonic() + 1.0
        while time.monotonic() < more_until:
            seen += source.read(0.1)
    finally:
        source.close()
    assert [c.after["code"] for c in seen] == ["PLAIN"]
    assert pg.one("SELECT name FROM customers WHERE code = 'ECHO'") == "ours"  # written, just not echoed


def test_a_second_writer_with_the_same_origin_is_refused(pg: Erp) -> None:
    pg.writer(origin="replicator_erp_busy")
    with pytest.raises(OriginInUse, match="another replicator process writes to this ERP with the same origin"):
        pg.writer(origin="replicator_erp_busy")


def test_the_writer_reconnects_and_resets_the_origin_after_a_dropped_connection(pg: Erp) -> None:
    writer = pg.writer(origin="replicator_erp_reconnect")
    driver = cast(PostgresDriver, cast(SqlWriter, writer).driver)
    old_pid = driver.conn.info.backend_pid
    driver.conn.rollback()
    assert pg.one("SELECT pg_terminate_backend(%s)", old_pid) is True
    deadline = time.monotonic() + 10
    while pg.query("SELECT 1 FROM pg_stat_activity WHERE pid = %s", old_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    outcome = writer.write(
        RowWrite("public.customers", "update", key={"code": "C1"}, values={"name": "after"}, returning=("name",))
    )
    assert outcome.row == {"name": "after"}
    assert driver.conn.info.backend_pid != old_pid
    assert driver.conn.execute("SELECT pg_replication_origin_session_is_setup() AS on").fetchone() == {"on": True}
    driver.conn.rollback()


def test_the_least_privilege_role_writes_once_granted_the_optional_grants(pg: Erp) -> None:
    role = f"erp_writer_{os.getpid()}"
    apply_role_script(pg.dsn, role, None)
    as_role = psycopg.conninfo.make_conninfo(pg.dsn, user=role)
    customer = RowWrite("public.customers", "update", key={"code": "C1"}, values={"name": "by role"})
    origin = f"erp_role_origin_{os.getpid()}"
    pg.origins.append(origin)
    writer = open_writer(as_role, "postgres", pg.catalog, origin=origin)
    pg.writers.append(writer)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # not WriteRejected: the data is fine
        writer.write(customer)
    # The role script's optional section, as a DBA would run it.
    grants = [
        line.strip().removeprefix("--").split("--")[0].strip()
        for line in role_script().splitlines()
        if line.startswith("--   GRANT")
    ]
    assert len(grants) == 3
    for grant in grants:
        pg.query(grant.replace(':"role"', f'"{role}"'))
    assert writer.write(customer).row == {}
    assert writer.write(_order(pg, "deal-role")).inserted
    assert pg.one("SELECT count(*) FROM sales_order_lines") == 2


# -- MariaDB only


def test_mariadb_rejects_a_too_long_order_number_and_runs_strict(my: Erp) -> None:
    erp = my
    writer = erp.writer()
    with pytest.raises(WriteRejected) as e:
        writer.write(_order(erp, "deal-5", order_no="SO-" + "9" * 30))
    assert str(e.value).startswith(f"{erp.t('sales_orders')}.order_no: value 'SO-999")
    assert "33 characters long; at most 32 fit" in str(e.value) and "varchar(32)" in str(e.value)
    assert erp.one("SELECT count(*) FROM sales_orders") == 0
    assert writer.write(_order(erp, "deal-5", order_no="Ü" * 32)).inserted  # characters, not bytes
    driver = cast(SqlWriter, writer).driver
    assert driver.execute(_sql_mode(), erp.t("customers"))[1][0]["m"].count("STRICT_ALL_TABLES") == 1


def _sql_mode() -> Any:
    from replicator.sinks.erp.sql import Statement

    return Statement("SELECT @@SESSION.sql_mode AS m", [])


def test_mariadb_stores_nul_bytes_verbatim(my: Erp) -> None:
    writer = my.writer()
    writer.write(RowWrite(my.t("customers"), "update", key={"code": "C1"}, values={"notes": "a\x00b"}))
    assert my.one("SELECT notes FROM customers WHERE code = 'C1'") == "a\x00b"


def test_mariadb_writer_reconnects_after_a_dropped_connection(my: Erp, mariadb: MariaDb) -> None:
    writer = my.writer()
    driver = cast(MysqlDriver, cast(SqlWriter, writer).driver)
    old = driver.conn.thread_id()
    mariadb.execute(f"KILL {int(old)}")
    outcome = writer.write(
        RowWrite(my.t("customers"), "update", key={"code": "C1"}, values={"name": "after"}, returning=("name",))
    )
    assert outcome.row == {"name": "after"}
    assert driver.conn.thread_id() != old
    assert driver.execute(_sql_mode(), my.t("customers"))[1][0]["m"].count("STRICT_ALL_TABLES") == 1
