"""The Debezium PostgreSQL connector (connectors/debezium-postgres.json) on a real Kafka Connect
worker, capturing the sample ERP into the tansu broker; events decoded by DebeziumDecoder."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from replicator.change import Op
from replicator.devstack.connect import Connect, TopicRecord, read_records
from replicator.devstack.postgres import PgCluster
from replicator.devstack.tansu import Broker
from replicator.jobs.connect import ConnectClient, ConnectorFile, load_connector_file, register
from replicator.sources.debezium import UNAVAILABLE_VALUE_PLACEHOLDER, DebeziumDecoder, Decoded

pytestmark = pytest.mark.integration

CONNECTORS = Path(__file__).resolve().parents[2] / "connectors"
_counter = itertools.count()


def postgres_connector(pg_cluster: PgCluster, db: str, prefix: str) -> ConnectorFile:
    env = {
        "ERP_DB_HOST": "127.0.0.1",
        "ERP_DB_PORT": str(pg_cluster.port),
        "ERP_DB_NAME": db,
        "DEBEZIUM_TOPIC_PREFIX": prefix,
        # One partition: the test reads a table's events in commit order.
        "KAFKA_TOPIC_PARTITIONS": "1",
    }
    connector = load_connector_file(CONNECTORS / "debezium-postgres.json", env)
    # Slots are cluster-wide and the cluster is shared: one slot name per test database.
    return dataclasses.replace(
        connector,
        name=f"pg-{prefix}",
        config={**connector.config, "slot.name": f"dbz_{db}", "heartbeat.interval.ms": "500"},
    )


@pytest.fixture
def registered(
    kafka_connect: Connect, pg_cluster: PgCluster, debezium_pg_erp: str, topic_prefix: str
) -> Iterator[ConnectorFile]:
    connector = postgres_connector(pg_cluster, debezium_pg_erp, topic_prefix)
    client = ConnectClient(kafka_connect.url)
    try:
        (result,) = register(client, [connector], wait_s=60)
        assert result.created
        assert result.state is not None and result.state.healthy, result.state
        yield connector
    finally:
        kafka_connect.delete_connector(connector.name)
        client.close()


def decode_all(records: list[TopicRecord], topic: str) -> list[Decoded]:
    decoder = DebeziumDecoder(timezone="Europe/Berlin")
    return [decoder.decode(r.key, r.value, topic=topic, partition=r.partition, offset=r.offset) for r in records]


def test_worker_carries_the_debezium_plugins(kafka_connect: Connect) -> None:
    plugins = {p["class"]: p["version"] for p in kafka_connect.request("GET", "/connector-plugins").json()}
    for cls in (
        "io.debezium.connector.postgresql.PostgresConnector",
        "io.debezium.connector.mysql.MySqlConnector",
        "io.debezium.connector.sqlserver.SqlServerConnector",
    ):
        assert plugins.get(cls) == "3.6.3.Final", plugins


def test_snapshot_then_live_changes_arrive_decoded(
    registered: ConnectorFile, kafka_broker: Broker, pg_cluster: PgCluster, debezium_pg_erp: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.public.customers"
    snapshot = decode_all(read_records(kafka_broker.bootstrap, topic, 24, timeout=60), topic)
    assert [d.kind for d in snapshot] == ["change"] * 24
    rows = {d.change.key: d.change for d in snapshot if d.change}
    assert {c.op for c in rows.values()} == {Op.READ}
    first = rows[(1,)]
    assert first.after is not None
    assert first.after["credit_limit"] == Decimal("1234.50")
    assert first.after["created_at"] == datetime(2024, 1, 2, 8, 0, tzinfo=UTC)
    assert len(first.after["notes"]) > 13_000  # the TOAST-sized note arrives whole in the snapshot

    contacts_topic = f"{topic_prefix}.public.contacts"
    (contact,) = decode_all(read_records(kafka_broker.bootstrap, contacts_topic, 1, timeout=30), contacts_topic)
    assert contact.change is not None and contact.change.after is not None
    with psycopg.connect(pg_cluster.dsn(debezium_pg_erp)) as conn:
        (expected_updated,) = conn.execute("SELECT updated_at FROM contacts ORDER BY id LIMIT 1").fetchone() or (None,)
    # timestamp without time zone: wall-clock time, read in the decoder's zone (erp.timezone).
    berlin = contact.change.after["updated_at"]
    assert berlin.replace(tzinfo=None) == expected_updated
    assert berlin.utcoffset() in (timedelta(hours=1), timedelta(hours=2))

    with psycopg.connect(pg_cluster.dsn(debezium_pg_erp), autocommit=True) as conn:
        (new_id,) = conn.execute(
            "INSERT INTO customers (code, name, credit_limit, created_at) "
            "VALUES ('C9999', 'Live GmbH', 1000000.01, '2025-03-30 01:30:00+01') RETURNING id"
        ).fetchone() or (None,)
        conn.execute("UPDATE customers SET credit_limit = 0.10, name = 'Acme renamed' WHERE id = 1")
        conn.execute("DELETE FROM customers WHERE id = %s", (new_id,))

    live = decode_all(read_records(kafka_broker.bootstrap, topic, 24 + 4, timeout=60)[24:], topic)
    assert [d.kind for d in live] == ["change", "change", "change", "tombstone"]
    created, updated, deleted = (d.change for d in live[:3])
    assert created is not None and created.op is Op.CREATE and created.key == (new_id,)
    assert created.after is not None
    assert created.after["credit_limit"] == Decimal("1000000.01")
    assert created.after["created_at"] == datetime(2025, 3, 30, 1, 30, tzinfo=timezone(timedelta(hours=1)))
    assert created.commit_ts is not None and created.txid is not None

    # REPLICA IDENTITY DEFAULT: no before image, and the untouched TOAST note is not sent; Debezium
    # puts its placeholder there, which the decoder turns into "unchanged", never into a value.
    assert updated is not None and updated.op is Op.UPDATE and updated.key == (1,)
    assert updated.before is None
    assert updated.after is not None
    assert updated.after["credit_limit"] == Decimal("0.10")
    assert updated.after["name"] == "Acme renamed"
    assert "notes" in updated.unchanged
    assert updated.after.get("notes") != UNAVAILABLE_VALUE_PLACEHOLDER

    # Deletes carry the key (only key columns under the default identity), then a tombstone.
    assert deleted is not None and deleted.op is Op.DELETE and deleted.key == (new_id,)
    assert deleted.before is not None and deleted.before["id"] == new_id
    tombstone_key = read_records(kafka_broker.bootstrap, topic, 28, timeout=10)[27].key
    assert tombstone_key is not None and str(new_id).encode() in tombstone_key
