"""The binlog source on a real MariaDB: row events, transactions, TRUNCATE, resume, reconnect, purge."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from replicator.change import Change, Op, Position
from replicator.devstack.mariadb import MariaDb, start_mariadb
from replicator.mapping.catalog import TableInfo
from replicator.mapping.mysql_catalog import read_mysql_catalog
from replicator.mapping.mysql_conn import connect
from replicator.sources.binlog import (
    BinlogConnectionLost,
    BinlogSource,
    BinlogSourceError,
    check_resumable,
    current_position,
)

BERLIN = ZoneInfo("Europe/Berlin")
ITEMS = """CREATE TABLE items (
    id BIGINT PRIMARY KEY, name VARCHAR(50), price DECIMAL(10, 2), active BOOLEAN,
    local_at DATETIME, stamped_at TIMESTAMP NULL, doc JSON, note LONGTEXT)"""


def _catalog(server: MariaDb, db: str) -> dict[str, TableInfo]:
    conn = connect(server.dsn(db))
    try:
        return read_mysql_catalog(conn, [f"{db}.items"])
    finally:
        conn.close()


def _source(server: MariaDb, db: str, position: str | None = None, **kwargs: object) -> BinlogSource:
    return BinlogSource(
        server.dsn(db),
        server_id=5000 + os.getpid() % 1000,
        start_position=current_position(server.dsn(db)) if position is None else position,
        catalog=_catalog(server, db),
        timezone="Europe/Berlin",
        **kwargs,  # type: ignore[arg-type]
    )


def _drain(source: BinlogSource, done: Callable[[list[Change]], bool], timeout: float = 20) -> list[Change]:
    got: list[Change] = []
    deadline = time.monotonic() + timeout
    while not done(got):
        assert time.monotonic() < deadline, f"timed out; got {[(c.op, c.key) for c in got]}"
        got.extend(source.read(timeout=0.2))
    return got


@pytest.fixture
def items_db(mariadb: MariaDb, mariadb_db: str) -> str:
    mariadb.execute(ITEMS, db=mariadb_db)
    mariadb.execute("CREATE TABLE other (id INT PRIMARY KEY)", db=mariadb_db)
    return mariadb_db


@pytest.fixture
def source(mariadb: MariaDb, items_db: str) -> Iterator[BinlogSource]:
    src = _source(mariadb, items_db)
    src.start()
    try:
        yield src
    finally:
        src.close()


def test_row_events_become_changes_with_converted_values(mariadb: MariaDb, items_db: str, source: BinlogSource) -> None:
    db = items_db
    big = "x" * 100_000
    mariadb.execute(
        "INSERT INTO items VALUES (1, 'one', 12.50, TRUE, '2024-06-01 08:30:00', '2024-01-01 08:00:00', "
        "'{\"a\": [1, 2.5]}', %s)",
        (big,),
        db=db,
    )
    mariadb.execute("UPDATE items SET price = 13.75, active = FALSE WHERE id = 1", db=db)
    mariadb.execute("INSERT INTO other VALUES (1)", db=db)  # not mapped: no change, but progress
    mariadb.execute("DELETE FROM items WHERE id = 1", db=db)
    changes = _drain(source, lambda got: len(got) >= 3)
    assert [(c.op, c.table, c.key) for c in changes] == [
        (Op.CREATE, f"{db}.items", (1,)),
        (Op.UPDATE, f"{db}.items", (1,)),
        (Op.DELETE, f"{db}.items", (1,)),
    ]
    created, updated, deleted = changes
    assert created.after == {
        "id": 1,
        "name": "one",
        "price": Decimal("12.50"),
        "active": True,
        "local_at": datetime(2024, 6, 1, 8, 30, tzinfo=BERLIN),
        "stamped_at": datetime(2024, 1, 1, 8, 0, tzinfo=UTC),
        "doc": {"a": [1, 2.5]},
        "note": big,
    }
    assert created.before is None and deleted.after is None
    assert updated.before is not None and updated.before["price"] == Decimal("12.50")  # full before-image
    assert updated.after is not None and updated.after["active"] is False and updated.after["note"] == big
    assert deleted.before is not None and deleted.before["name"] == "one"
    offsets = [c.position.offset for c in changes]
    assert offsets == sorted(offsets) and len(set(offsets)) == 3
    assert source.committed >= offsets[-1]
    assert created.commit_ts is not None and abs((datetime.now(UTC) - created.commit_ts).total_seconds()) < 60


def test_a_multi_statement_transaction_is_handed_out_whole_at_one_position(
    mariadb: MariaDb, items_db: str, source: BinlogSource
) -> None:
    with mariadb.cursor(items_db) as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO items (id, name) VALUES (10, 'a'), (11, 'b'), (12, 'c')")
        cur.execute("INSERT INTO other VALUES (10)")
        cur.execute("UPDATE items SET name = 'B' WHERE id = 11")
        cur.execute("DELETE FROM items WHERE id = 12")
        cur.execute("COMMIT")
    changes = _drain(source, lambda got: len(got) >= 5)
    assert [(c.op, c.key) for c in changes] == [
        (Op.CREATE, (10,)),
        (Op.CREATE, (11,)),
        (Op.CREATE, (12,)),
        (Op.UPDATE, (11,)),
        (Op.DELETE, (12,)),
    ]
    assert len({c.position for c in changes}) == 1
    assert len({c.txid for c in changes}) == 1
    assert source.committed == changes[0].position.offset


def test_truncate_of_a_mapped_table_is_a_truncate_change(mariadb: MariaDb, items_db: str, source: BinlogSource) -> None:
    mariadb.execute("INSERT INTO items (id) VALUES (1)", db=items_db)
    mariadb.execute("TRUNCATE other", db=items_db)
    mariadb.execute("TRUNCATE TABLE items", db=items_db)
    mariadb.execute("INSERT INTO items (id) VALUES (2)", db=items_db)
    changes = _drain(source, lambda got: len(got) >= 3)
    assert [(c.op, c.table, c.key) for c in changes] == [
        (Op.CREATE, f"{items_db}.items", (1,)),
        (Op.TRUNCATE, f"{items_db}.items", ()),
        (Op.CREATE, f"{items_db}.items", (2,)),
    ]


def test_resume_after_close_starts_after_the_last_acknowledged_transaction(mariadb: MariaDb, items_db: str) -> None:
    start = current_position(mariadb.dsn(items_db))
    first = _source(mariadb, items_db, start)
    first.start()
    for i in range(1, 4):
        mariadb.execute("INSERT INTO items (id) VALUES (%s)", (i,), db=items_db)
    try:
        changes = _drain(first, lambda got: len(got) >= 3)
        assert first.acked_position == start
        first.ack(Position(first.name, changes[0].position.offset))  # only the first transaction is applied
        acked = first.acked_position
        assert acked != start and acked.startswith("0-1-")
    finally:
        first.close()
    again = _source(mariadb, items_db, acked)
    again.start()
    try:
        replayed = _drain(again, lambda got: len(got) >= 2)
        assert [c.key for c in replayed] == [(2,), (3,)]
        assert [c.position for c in replayed] == [c.position for c in changes[1:]]
        # Acknowledging everything moves the position past every transaction read, mapped or not.
        mariadb.execute("INSERT INTO other VALUES (99)", db=items_db)
        time.sleep(0.5)
        again.read(timeout=0.5)
        again.ack(Position(again.name, again.committed))
        assert again.acked_position == current_position(mariadb.dsn(items_db))
    finally:
        again.close()


def test_a_dropped_connection_raises_and_a_restart_resumes_without_loss(mariadb: MariaDb, items_db: str) -> None:
    src = _source(mariadb, items_db)
    src.start()
    try:
        mariadb.execute("INSERT INTO items (id) VALUES (1)", db=items_db)
        got = _drain(src, lambda g: len(g) >= 1)
        src.ack(Position(src.name, got[-1].position.offset))
        for (pid,) in mariadb.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%%'"
        ):
            mariadb.execute(f"KILL {int(pid)}")
        mariadb.execute("INSERT INTO items (id) VALUES (2)", db=items_db)
        with pytest.raises(BinlogConnectionLost):
            _drain(src, lambda g: False, timeout=30)
        src.close()
        src.start()  # what the runner does
        again = _drain(src, lambda g: len(g) >= 1)
        assert [c.key for c in again] == [(2,)]
    finally:
        src.close()


def test_a_server_without_full_row_metadata_is_refused(mariadb: MariaDb, items_db: str) -> None:
    mariadb.execute("SET GLOBAL binlog_row_metadata = 'MINIMAL'")
    try:
        src = _source(mariadb, items_db)
        with pytest.raises(BinlogSourceError, match="binlog_row_metadata=MINIMAL"):
            src.start()
    finally:
        mariadb.execute("SET GLOBAL binlog_row_metadata = 'FULL'")


def purge_all_but_the_newest_binlog(server: MariaDb) -> None:
    # A binlog is kept until InnoDB's checkpoint has passed it: rotate until PURGE can drop the first.
    first = server.execute("SHOW BINARY LOGS")[0][0]
    deadline = time.monotonic() + 20
    while server.execute("SHOW BINARY LOGS")[0][0] == first:
        assert time.monotonic() < deadline, "the first binlog was never purged"
        server.execute("FLUSH BINARY LOGS")
        server.execute(f"PURGE BINARY LOGS TO '{server.execute('SHOW BINARY LOGS')[-1][0]}'")
        time.sleep(0.1)


def test_a_position_in_purged_binlogs_is_reported_with_the_fix() -> None:
    base = Path(tempfile.mkdtemp(prefix="replicator-mariadb-purge-", dir=os.environ.get("REPLICATOR_TMP")))
    server = start_mariadb(base)
    try:
        server.create_database("p")
        server.execute(ITEMS, db="p")
        old = server.gtid_binlog_pos()
        server.execute("INSERT INTO items (id) VALUES (1)", db="p")
        assert check_resumable(server.dsn("p"), old) == []
        purge_all_but_the_newest_binlog(server)
        assert check_resumable(server.dsn("p"), old) != []
        assert check_resumable(server.dsn("p"), server.gtid_binlog_pos()) == []
        src = _source(server, "p", old)
        src.start()
        try:
            with pytest.raises(BinlogSourceError, match="backfill --restart"):
                _drain(src, lambda g: False, timeout=10)
        finally:
            src.close()
    finally:
        server.destroy()
