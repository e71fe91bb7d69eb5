"""The MySQL catalog and reader on a real MariaDB, checked against the PostgreSQL reader
on the same sample ERP: the mapping must see the same rows and values from both."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from replicator.app import build_entities
from replicator.config import load_config, parse_config
from replicator.devstack.mariadb import MariaDb
from replicator.devstack.postgres import PgCluster
from replicator.devstack.sample_erp import CONFIG, MARIADB_CONFIG, load_sample_erp, load_sample_erp_mariadb
from replicator.mapping.entity import Entity
from replicator.mapping.mysql_catalog import read_mysql_catalog
from replicator.mapping.mysql_conn import connect
from replicator.mapping.mysql_reader import MysqlReader
from replicator.mapping.reader import ErpReader

TABLES = ["customers", "contact_mechanisms", "addresses", "contacts", "products", "sales_orders", "sales_order_lines"]
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(scope="module")
def samples(mariadb: MariaDb, pg_cluster: PgCluster) -> Iterator[tuple[str, str, str]]:
    """(MariaDB DSN, database name, PostgreSQL DSN) of the sample ERP, loaded once."""
    db = f"sample_{os.getpid()}"
    mysql_dsn = load_sample_erp_mariadb(mariadb, db)
    pg_dsn = load_sample_erp(pg_cluster, db)
    try:
        yield mysql_dsn, db, pg_dsn
    finally:
        mariadb.drop_database(db)
        pg_cluster.drop_database(db)


@pytest.fixture(scope="module")
def readers(samples: tuple[str, str, str]) -> Iterator[tuple[MysqlReader, ErpReader]]:
    mysql_dsn, _, pg_dsn = samples
    my, pg = MysqlReader(mysql_dsn, "Europe/Berlin"), ErpReader(pg_dsn, "Europe/Berlin")
    try:
        yield my, pg
    finally:
        my.close()
        pg.close()


def _entities(samples: tuple[str, str, str]) -> tuple[dict[str, Entity], dict[str, Entity]]:
    mysql_dsn, db, pg_dsn = samples
    env = {"ERP_DSN": mysql_dsn, "STATE_DSN": pg_dsn, "BOTTLECRM_URL": "http://x", "BOTTLECRM_TOKEN": "t"}
    my_cfg = parse_config(MARIADB_CONFIG.read_text().replace("table: erp.", f"table: {db}."), env=env)
    pg_cfg = load_config(CONFIG, {**env, "ERP_DSN": pg_dsn})
    return build_entities(my_cfg), build_entities(pg_cfg)


def _same(pg_row: dict[str, object], my_row: dict[str, object], table: str) -> None:
    skip = {"updated_at"} if table == "customers" else set()  # DEFAULT now(): load time
    assert {k: v for k, v in my_row.items() if k not in skip} == {k: v for k, v in pg_row.items() if k not in skip}


def test_catalog_reports_columns_keys_and_types(
    mariadb: MariaDb, samples: tuple[str, str, str], mariadb_db: str
) -> None:
    mysql_dsn, db, _ = samples
    mariadb.execute("CREATE TABLE docs (a INT, b VARCHAR(5), body JSON, PRIMARY KEY (b, a))", db=mariadb_db)
    conn = connect(mysql_dsn)
    try:
        catalog = read_mysql_catalog(conn, [f"{db}.customers", f"{db}.nope", f"{mariadb_db}.docs"])
    finally:
        conn.close()
    assert set(catalog) == {f"{db}.customers", f"{mariadb_db}.docs"}
    customers = catalog[f"{db}.customers"]
    assert customers.columns[:3] == ("id", "code", "name")
    assert customers.primary_key == ("id",)
    assert customers.types["credit_limit"] == "decimal(14,2)"
    assert customers.types["active"] == "tinyint(1)"
    assert customers.replica_identity == "f"
    docs = catalog[f"{mariadb_db}.docs"]
    assert docs.primary_key == ("b", "a")
    assert docs.types["body"] == "json"


def test_scan_gives_the_same_rows_and_values_as_postgres(
    readers: tuple[MysqlReader, ErpReader], samples: tuple[str, str, str]
) -> None:
    my, pg = readers
    _, db, _ = samples
    for table in TABLES:
        my_rows = [r for page in my.scan(f"{db}.{table}", ["id"], page_size=7) for r in page]
        pg_rows = [r for page in pg.scan(f"public.{table}", ["id"], page_size=7) for r in page]
        assert len(my_rows) == len(pg_rows) > 0, table
        for p, m in zip(pg_rows, my_rows, strict=True):
            _same(p, m, table)
        assert my.count(f"{db}.{table}") == len(my_rows)
    contact = my.rows_by_key(f"{db}.contacts", ["id"], [(1,)])[(1,)]
    assert contact["updated_at"] == datetime(2024, 6, 1, 9, 30, tzinfo=BERLIN)  # DATETIME: erp.timezone
    assert contact["active"] is True
    customer = my.rows_by_key(f"{db}.customers", ["id"], [(2,)])[(2,)]
    assert customer["created_at"] == datetime(2024, 1, 3, 8, 0, tzinfo=UTC)  # TIMESTAMP: UTC
    assert customer["credit_limit"] == Decimal("2469.00")


def test_scan_resumes_after_a_composite_key(mariadb: MariaDb, mariadb_db: str) -> None:
    mariadb.execute("CREATE TABLE pairs (a INT, b VARCHAR(3), v INT, PRIMARY KEY (a, b))", db=mariadb_db)
    values = [(a, b, a * 10) for a in (1, 2, 3) for b in ("x", "y", "z")]
    with mariadb.cursor(mariadb_db) as cur:
        cur.executemany("INSERT INTO pairs VALUES (%s, %s, %s)", values)
    reader = MysqlReader(mariadb.dsn(mariadb_db))
    try:
        pages = list(reader.scan(f"{mariadb_db}.pairs", ["a", "b"], page_size=4))
        assert [len(p) for p in pages] == [4, 4, 1]
        assert [(r["a"], r["b"]) for p in pages for r in p] == [(a, b) for a, b, _ in values]
        rest = [(r["a"], r["b"]) for p in reader.scan(f"{mariadb_db}.pairs", ["a", "b"], after=(2, "x")) for r in p]
        assert rest == [(2, "y"), (2, "z"), (3, "x"), (3, "y"), (3, "z")]
        found = reader.rows_by_key(f"{mariadb_db}.pairs", ["a", "b"], [(1, "y"), (3, "z"), (9, "q")])
        assert {k: r["v"] for k, r in found.items()} == {(1, "y"): 10, (3, "z"): 30}
    finally:
        reader.close()


def test_related_rows_and_join_lookups_match_postgres(
    readers: tuple[MysqlReader, ErpReader], samples: tuple[str, str, str]
) -> None:
    my, pg = readers
    my_entities, pg_entities = _entities(samples)
    my_customers, pg_customers = my_entities["customers"], pg_entities["customers"]
    assert my_customers.related["email"].where_sql == "kind = 'email' AND is_primary"
    base_my = list(my.rows_by_key(my_customers.table, ["id"], [(i,) for i in range(1, 25)]).values())
    base_pg = list(pg.rows_by_key(pg_customers.table, ["id"], [(i,) for i in range(1, 25)]).values())
    for alias in ("email", "phone", "billing"):
        got = my.related_rows(my_customers.related[alias], base_my)
        want = pg.related_rows(pg_customers.related[alias], base_pg)
        assert set(got) == set(want) and got, alias
        for key, row in want.items():
            assert got[key] == row, (alias, key)
    # Customers 4, 8, ... have no primary phone; customer 2's primary email is the info@ one.
    phones = my.related_rows(my_customers.related["phone"], base_my)
    assert (4,) not in phones and (5,) in phones
    assert my.related_rows(my_customers.related["email"], base_my)[(2,)]["value"] == "info@customer2.example"
    rel = my_customers.related["email"]
    assert rel.join_values([{"customer_id": 7, "kind": "email"}]) == [(7,)]
    assert my.base_keys_by_join(my_customers.table, ["id"], rel, [(7,)]) == [((7,), (7,))]
    orders = my_entities["orders"]
    lookup_rel = type(rel)(
        alias="by_customer",
        table=orders.table,
        join={"customer_id": "customer_id"},
        where_sql=None,
        order_by_sql=None,
        columns=orders.columns,
    )
    pairs = my.base_keys_by_join(orders.table, ["id"], lookup_rel, [(2,), (3,)])
    assert sorted(pairs) == [((2,), (1,)), ((3,), (2,))]
    want_pairs = pg.base_keys_by_join(pg_entities["orders"].table, ["id"], lookup_rel, [(2,), (3,)])
    assert sorted(pairs) == sorted(want_pairs)


def test_a_connection_the_server_dropped_while_idle_is_reopened(
    mariadb: MariaDb, samples: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import replicator.mapping.mysql_reader as mysql_reader

    mysql_dsn, db, _ = samples
    reader = MysqlReader(mysql_dsn)
    try:
        assert reader.count(f"{db}.products") == 18
        conn_id = reader._conn.thread_id()
        mariadb.execute(f"KILL {int(conn_id)}")  # what wait_timeout does to an idle connection
        monkeypatch.setattr(mysql_reader, "_IDLE_PING_S", 0.0)
        assert reader.count(f"{db}.products") == 18
        assert reader._conn.thread_id() != conn_id
    finally:
        reader.close()
