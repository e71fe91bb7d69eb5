"""PgSlotSource against a real PostgreSQL 15 cluster (wal_level=logical)."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg
import pytest

from replicator.change import Change, Op
from replicator.sources.pg_admin import (
    SlotConnectionLost,
    create_publication,
    create_slot,
    drop_slot,
    int_to_lsn,
    lsn_to_int,
    publication_tables,
    replica_identity,
    slot_info,
    wal_level,
)
from replicator.sources.pg_slot import PgSlotSource

pytestmark = pytest.mark.integration

SLOT, PUB = "test_slot", "test_pub"


def run(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


def collect(src: PgSlotSource, n: int, deadline: float = 15.0) -> list[Change]:
    """Poll until n changes arrived (decoding only sees flushed WAL, so never just sleep)."""
    out: list[Change] = []
    end = time.monotonic() + deadline
    while len(out) < n and time.monotonic() < end:
        out += src.read(0.2, max_changes=n - len(out))
    assert len(out) == n, f"expected {n} changes, got {len(out)}: {out}"
    return out


def quiet(src: PgSlotSource, seconds: float = 1.0) -> list[Change]:
    out: list[Change] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out += src.read(0.1)
    return out


def setup(dsn: str, *tables: str) -> None:
    create_publication(dsn, PUB, tables)
    create_slot(dsn, SLOT)


@pytest.fixture
def source(pg_db: str) -> Iterator[PgSlotSource]:
    run(pg_db, "CREATE TABLE t (id int PRIMARY KEY, n int, big text)")
    setup(pg_db, "public.t")
    src = PgSlotSource(pg_db, slot=SLOT, publication=PUB, status_interval=0.2)
    src.start()
    yield src
    src.close()


def test_admin_helpers(pg_db: str) -> None:
    run(pg_db, "CREATE TABLE a (id int PRIMARY KEY)", "CREATE TABLE b (x int)", "CREATE TABLE c (id int PRIMARY KEY)")
    assert wal_level(pg_db) == "logical"
    create_publication(pg_db, PUB, ["a", "public.b"])
    create_publication(pg_db, PUB, ["public.a", "b"])  # idempotent
    assert publication_tables(pg_db, PUB) == ["public.a", "public.b"]
    create_publication(pg_db, PUB, ["a", "c"])
    assert publication_tables(pg_db, PUB) == ["public.a", "public.c"]
    assert create_slot(pg_db, SLOT) is True
    assert create_slot(pg_db, SLOT) is False
    info = slot_info(pg_db, SLOT)
    assert info.exists and not info.active and info.confirmed_flush_lsn and info.retained_bytes is not None
    assert replica_identity(pg_db, "a") == ("d", True)
    assert replica_identity(pg_db, "public.b") == ("d", False)
    run(pg_db, "ALTER TABLE c REPLICA IDENTITY FULL")
    assert replica_identity(pg_db, "c") == ("f", True)
    assert drop_slot(pg_db, SLOT) is True
    assert drop_slot(pg_db, SLOT) is False
    assert not slot_info(pg_db, SLOT).exists
    assert lsn_to_int("16/B374D848") == 0x16B374D848
    assert int_to_lsn(0x16B374D848) == "16/B374D848"


def test_types_insert_update_delete(pg_db: str) -> None:
    run(
        pg_db,
        """CREATE TABLE orders (
            id int PRIMARY KEY, amount numeric(14,2), at timestamptz, local_at timestamp, day date,
            doc jsonb, ref uuid, tags text[], flag boolean, ratio float8)""",
    )
    setup(pg_db, "public.orders")
    src = PgSlotSource(pg_db, slot=SLOT, publication=PUB, timezone="Europe/Berlin")
    src.start()
    try:
        run(
            pg_db,
            """INSERT INTO orders VALUES (1, 12.3, '2024-01-02 03:04:05.123456+05:30', '2024-07-01 12:00:00',
                 '2024-02-29', '{"a": [1, "x", null], "b": {"c": 1.5}}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
                 ARRAY['plain', 'with space', NULL, 'quote"d', 'NULL'], true, 'Infinity')""",
            "UPDATE orders SET amount = 0.1 + 0.2, tags = '{}' WHERE id = 1",
            "DELETE FROM orders WHERE id = 1",
        )
        ins, upd, dele = collect(src, 3)
    finally:
        src.close()
    assert (ins.op, upd.op, dele.op) == (Op.CREATE, Op.UPDATE, Op.DELETE)
    assert ins.table == "public.orders" and ins.key == (1,) and ins.source == "pg"
    row = ins.after
    assert row is not None
    assert row["amount"] == Decimal("12.30") and str(row["amount"]) == "12.30"
    assert row["at"] == datetime(2024, 1, 1, 21, 34, 5, 123456, tzinfo=UTC)
    assert row["at"].tzinfo is not None
    berlin = ZoneInfo("Europe/Berlin")
    assert row["local_at"] == datetime(2024, 7, 1, 12, 0, tzinfo=berlin)
    assert row["local_at"].utcoffset() == timedelta(hours=2)
    assert row["day"] == date(2024, 2, 29)
    assert row["doc"] == {"a": [1, "x", None], "b": {"c": 1.5}}
    assert row["ref"] == uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    assert row["tags"] == ["plain", "with space", None, 'quote"d', "NULL"]
    assert row["flag"] is True and row["ratio"] == float("inf")
    assert upd.after is not None and upd.after["amount"] == Decimal("0.30") and upd.after["tags"] == []
    assert upd.before is None  # default replica identity, key unchanged: no old tuple
    assert dele.before == {"id": 1} and dele.after is None and dele.key == (1,)
    assert ins.commit_ts is not None and ins.txid is not None and ins.origin is None
    assert ins.commit_ts.tzinfo is not None and abs(datetime.now(UTC) - ins.commit_ts) < timedelta(minutes=5)


def big_text() -> str:
    return secrets.token_urlsafe(12_000)  # ~16 kB of random text: pglz cannot squeeze it inline


def test_unchanged_toast_is_not_null(source: PgSlotSource, pg_db: str) -> None:
    big = big_text()
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("INSERT INTO t VALUES (1, 0, %s)", (big,))
        conn.execute("UPDATE t SET n = 1 WHERE id = 1")
        conn.execute("UPDATE t SET id = 2 WHERE id = 1")  # key change: 'K' old tuple
    ins, upd, rekey = collect(source, 3)
    assert ins.after is not None and ins.after["big"] == big
    assert upd.after == {"id": 1, "n": 1}
    assert upd.unchanged == frozenset({"big"})
    assert rekey.before == {"id": 1} and rekey.key == (2,)
    assert rekey.unchanged == frozenset({"big"})


def test_replica_identity_full_gives_before_and_fills_toast(source: PgSlotSource, pg_db: str) -> None:
    big = big_text()
    run(pg_db, "ALTER TABLE t REPLICA IDENTITY FULL")
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("INSERT INTO t VALUES (1, 0, %s)", (big,))
        conn.execute("UPDATE t SET n = 1 WHERE id = 1")
        conn.execute("DELETE FROM t WHERE id = 1")
    _, upd, dele = collect(source, 3)
    assert upd.before == {"id": 1, "n": 0, "big": big}
    assert upd.after == {"id": 1, "n": 1, "big": big}
    assert upd.unchanged == frozenset()
    assert upd.key == (1,)  # the primary key, not every column of the FULL identity
    assert dele.before == {"id": 1, "n": 1, "big": big} and dele.key == (1,)


def test_truncate(pg_db: str) -> None:
    run(pg_db, "CREATE TABLE a (id int PRIMARY KEY)", "CREATE TABLE b (id int PRIMARY KEY)")
    setup(pg_db, "a", "b")
    src = PgSlotSource(pg_db, slot=SLOT, publication=PUB)
    src.start()
    try:
        run(pg_db, "INSERT INTO a VALUES (1)", "TRUNCATE a, b")
        ins, *truncs = collect(src, 3)
    finally:
        src.close()
    assert ins.op is Op.CREATE
    assert {c.table for c in truncs} == {"public.a", "public.b"}
    assert all(c.op is Op.TRUNCATE and c.key == () and c.before is None and c.after is None for c in truncs)
    assert truncs[0].position == truncs[1].position


def test_transaction_grouping(source: PgSlotSource, pg_db: str) -> None:
    with psycopg.connect(pg_db) as conn:
        for i in range(3):
            conn.execute("INSERT INTO t VALUES (%s, 0, 'x')", (i,))
        conn.commit()
        conn.execute("UPDATE t SET n = 1")
        conn.execute("DELETE FROM t WHERE id = 0")
        conn.commit()
    changes = collect(source, 6)
    first, second = changes[:3], changes[3:]
    assert len({c.position for c in first}) == 1 and len({c.position for c in second}) == 1
    assert first[0].position < second[0].position
    assert first[0].txid != second[0].txid
    assert first[0].position.stream == "pg"


def test_ack_close_restart_resumes_after_acked_tx(source: PgSlotSource, pg_db: str) -> None:
    run(pg_db, "INSERT INTO t VALUES (1, 0, 'a')", "INSERT INTO t VALUES (2, 0, 'b')")
    a, b = collect(source, 2)
    source.ack(a.position)
    assert source.acked == a.position.offset
    source.close()
    assert slot_info(pg_db, SLOT).confirmed_flush_lsn == a.position.offset + 1

    again = PgSlotSource(pg_db, slot=SLOT, publication=PUB, status_interval=0.2)
    again.start()
    try:
        [b2] = collect(again, 1)
        assert b2.after == b.after and b2.position == b.position  # unacked: redelivered
        assert quiet(again, 0.5) == []  # acked one: not redelivered
        assert again.committed == b2.position.offset  # its Commit has been read by now
        again.ack(b2.position)
    finally:
        again.close()

    third = PgSlotSource(pg_db, slot=SLOT, publication=PUB)
    third.start()
    try:
        assert quiet(third, 1.0) == []
        run(pg_db, "INSERT INTO t VALUES (3, 0, 'c')")
        [c] = collect(third, 1)
        assert c.key == (3,)
    finally:
        third.close()


def test_acking_a_half_read_transaction_keeps_its_tail(source: PgSlotSource, pg_db: str) -> None:
    run(pg_db, "INSERT INTO t SELECT g, 0, 'x' FROM generate_series(1, 5) g")
    head = collect(source, 2)
    assert source.committed < head[-1].position.offset  # only part of the transaction handed out
    source.ack(head[-1].position)  # the transaction is not finished: must not be confirmed yet
    source.close()
    again = PgSlotSource(pg_db, slot=SLOT, publication=PUB)
    again.start()
    try:
        assert [c.key for c in collect(again, 5)] == [(i,) for i in range(1, 6)]
    finally:
        again.close()


def test_origin_transactions_are_dropped(pg_db: str) -> None:
    run(pg_db, "CREATE TABLE t (id int PRIMARY KEY)", "SELECT pg_replication_origin_create('replicator_writer')")
    setup(pg_db, "t")
    src = PgSlotSource(pg_db, slot=SLOT, publication=PUB, drop_origins={"replicator_writer"}, status_interval=0.2)
    src.start()
    try:
        with psycopg.connect(pg_db, autocommit=True) as writer:
            writer.execute("SELECT pg_replication_origin_session_setup('replicator_writer')")
            writer.execute("INSERT INTO t VALUES (1)")  # our own write, echoed back: drop
        run(pg_db, "INSERT INTO t VALUES (2)")
        [c] = collect(src, 1)
        assert c.key == (2,) and c.origin is None
        assert quiet(src, 0.5) == []
        src.ack(c.position)
        with psycopg.connect(pg_db, autocommit=True) as writer:
            writer.execute("SELECT pg_replication_origin_session_setup('replicator_writer')")
            writer.execute("INSERT INTO t VALUES (3)")
        end_lsn = _current_lsn(pg_db)
        # Everything handed out is acked, so the confirmed position moves past dropped transactions too.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (slot_info(pg_db, SLOT).confirmed_flush_lsn or 0) < end_lsn:
            assert src.read(0.2) == []
        assert (slot_info(pg_db, SLOT).confirmed_flush_lsn or 0) >= end_lsn
    finally:
        src.close()

    # Without drop_origins the same transactions come through, labelled with their origin.
    drop_slot(pg_db, SLOT)
    create_slot(pg_db, SLOT)
    seen = PgSlotSource(pg_db, slot=SLOT, publication=PUB)
    seen.start()
    try:
        with psycopg.connect(pg_db, autocommit=True) as writer:
            writer.execute("SELECT pg_replication_origin_session_setup('replicator_writer')")
            writer.execute("INSERT INTO t VALUES (4)")
        [c] = collect(seen, 1)
        assert c.origin == "replicator_writer"
    finally:
        seen.close()


def _current_lsn(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row
    return lsn_to_int(row[0])


@pytest.fixture
def short_timeout_db(pg_db: str) -> str:
    # Database-level setting: applies to this test's walsender only.
    run(pg_db, f"ALTER DATABASE \"{psycopg.conninfo.conninfo_to_dict(pg_db)['dbname']}\" SET wal_sender_timeout = '1s'")
    run(pg_db, "CREATE TABLE t (id int PRIMARY KEY)")
    setup(pg_db, "t")
    return pg_db


def test_idle_longer_than_status_interval_and_sender_timeout(short_timeout_db: str) -> None:
    src = PgSlotSource(short_timeout_db, slot=SLOT, publication=PUB, status_interval=0.3)
    src.start()
    try:
        assert quiet(src, 3.0) == []  # idle: keepalives answered, statuses sent
        # The caller is busy elsewhere for longer than wal_sender_timeout; a helper thread keeps it alive.
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(0.2):
                src.send_status()

        t = threading.Thread(target=heartbeat)
        t.start()
        time.sleep(2.5)
        stop.set()
        t.join()
        run(short_timeout_db, "INSERT INTO t VALUES (1)")
        [c] = collect(src, 1)
        assert c.key == (1,)
    finally:
        src.close()


def test_connection_loss_raises_and_restart_redelivers(short_timeout_db: str) -> None:
    src = PgSlotSource(short_timeout_db, slot=SLOT, publication=PUB)
    src.start()
    run(short_timeout_db, "INSERT INTO t VALUES (1)")
    [c] = collect(src, 1)
    run(short_timeout_db, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots")
    with pytest.raises(SlotConnectionLost):
        for _ in range(50):
            src.read(0.1)
    src.close()
    src = PgSlotSource(short_timeout_db, slot=SLOT, publication=PUB)
    src.start()  # waits for the old walsender to let go of the slot
    try:
        [again] = collect(src, 1)
        assert again.position == c.position
    finally:
        src.close()


def test_silence_beyond_sender_timeout_is_a_clear_connection_loss(short_timeout_db: str) -> None:
    # Control for the test above: without statuses the server really does hang up on us.
    src = PgSlotSource(short_timeout_db, slot=SLOT, publication=PUB, status_interval=60)
    src.start()
    try:
        time.sleep(2.5)
        with pytest.raises(SlotConnectionLost):
            quiet(src, 3.0)
    finally:
        src.close()
