"""TEST ONLY: Debezium's MySQL connector reading a MariaDB whose version string is spoofed
(connectors/test-only-mysql-connector-on-spoofed-mariadb.json). Production MariaDB uses Debezium's
MariaDB connector (connectors/debezium-mariadb.json), which no installable package here carries."""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from replicator.change import Op
from replicator.devstack.connect import Connect, read_records
from replicator.devstack.mariadb import MariaDb
from replicator.devstack.sample_erp import load_sample_erp_mariadb
from replicator.devstack.tansu import Broker
from replicator.jobs.connect import ConnectClient, ConnectorFile, load_connector_file, register
from replicator.sources.debezium import DebeziumDecoder, Decoded
from tests.fixtures.connect import debezium_user_on_mariadb

pytestmark = pytest.mark.integration

CONNECTOR = Path(__file__).resolve().parents[2] / "connectors" / "test-only-mysql-connector-on-spoofed-mariadb.json"
_counter = itertools.count()


@pytest.fixture
def erp_db(mariadb_for_debezium: MariaDb) -> Iterator[str]:
    name = f"dbz{os.getpid()}_{next(_counter)}"
    load_sample_erp_mariadb(mariadb_for_debezium, name)
    debezium_user_on_mariadb(mariadb_for_debezium, name)
    try:
        yield name
    finally:
        mariadb_for_debezium.drop_database(name)


@pytest.fixture
def registered(
    kafka_connect: Connect, kafka_broker: Broker, mariadb_for_debezium: MariaDb, erp_db: str, topic_prefix: str
) -> Iterator[ConnectorFile]:
    env = {
        "ERP_DB_HOST": "127.0.0.1",
        "ERP_DB_PORT": str(mariadb_for_debezium.port),
        "ERP_DB_NAME": erp_db,
        "DEBEZIUM_TOPIC_PREFIX": topic_prefix,
        "DEBEZIUM_SCHEMA_HISTORY_TOPIC": f"{topic_prefix}.schema-history",
        "DEBEZIUM_SERVER_ID": str(10_000 + next(_counter)),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "KAFKA_TOPIC_PARTITIONS": "1",
    }
    connector = load_connector_file(CONNECTOR, env)
    connector = dataclasses.replace(connector, name=f"my-{topic_prefix}")
    client = ConnectClient(kafka_connect.url)
    try:
        (result,) = register(client, [connector], wait_s=60)
        assert result.state is not None and result.state.healthy, result.state
        yield connector
    finally:
        kafka_connect.delete_connector(connector.name)
        client.close()


def test_snapshot_and_binlog_changes_arrive_decoded(
    registered: ConnectorFile, kafka_broker: Broker, mariadb_for_debezium: MariaDb, erp_db: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.{erp_db}.customers"
    decoder = DebeziumDecoder(timezone="Europe/Berlin")

    def decoded(count: int) -> list[Decoded]:
        records = read_records(kafka_broker.bootstrap, topic, count, timeout=60)
        return [decoder.decode(r.key, r.value, topic=topic, partition=r.partition, offset=r.offset) for r in records]

    snapshot = decoded(24)
    rows = {d.change.key: d.change for d in snapshot}
    assert {c.op for c in rows.values()} == {Op.READ}
    assert {c.table for c in rows.values()} == {f"{erp_db}.customers"}
    first = rows[(1,)].after
    assert first["credit_limit"] == Decimal("1234.50")
    assert first["active"] is True  # TINYINT(1) as a boolean, through the connector's converter
    assert first["created_at"] == datetime(2024, 1, 2, 8, 0, tzinfo=UTC)
    assert len(first["notes"]) > 13_000

    db = erp_db
    mariadb_for_debezium.execute(f"UPDATE `{db}`.customers SET credit_limit = 0.10, active = FALSE WHERE id = 1")
    mariadb_for_debezium.execute(
        f"INSERT INTO `{db}`.customers (code, name, credit_limit) VALUES ('C9999', 'Live GmbH', 1000000.01)"
    )
    (new_id,) = mariadb_for_debezium.execute(f"SELECT id FROM `{db}`.customers WHERE code = 'C9999'")[0]
    mariadb_for_debezium.execute(f"DELETE FROM `{db}`.customers WHERE id = %s", (new_id,))

    live = decoded(28)[24:]
    assert [d.kind for d in live] == ["change", "change", "change", "tombstone"]
    updated, created, deleted = (d.change for d in live[:3])
    # binlog_row_image=FULL: updates carry the whole before image, unlike PostgreSQL's default identity.
    assert updated.op is Op.UPDATE and updated.key == (1,)
    assert updated.before["credit_limit"] == Decimal("1234.50") and updated.before["active"] is True
    assert updated.after["credit_limit"] == Decimal("0.10") and updated.after["active"] is False
    assert updated.after["notes"] == first["notes"] and not updated.unchanged
    assert created.op is Op.CREATE and created.key == (new_id,)
    assert created.after["credit_limit"] == Decimal("1000000.01")
    assert deleted.op is Op.DELETE and deleted.key == (new_id,) and deleted.before["code"] == "C9999"
    assert created.commit_ts is not None
