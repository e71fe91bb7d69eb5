"""`replicator setup --connect` and `replicator status` against a real Kafka Connect worker, and
the connector files validated by Connect itself (SQL Server and MySQL offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from replicator.devstack.connect import Connect, read_records
from replicator.devstack.postgres import PgCluster, free_port
from replicator.devstack.sample_erp import CONFIG as SAMPLE_CONFIG
from replicator.devstack.tansu import Broker
from replicator.jobs.connect import (
    ConnectClient,
    ConnectError,
    load_connector_file,
    only_connection_errors,
)

pytestmark = pytest.mark.integration

CONNECTORS = Path(__file__).resolve().parents[2] / "connectors"


def offline_env(broker: Broker) -> dict[str, str]:
    # A port nobody listens on: the fields are checked, then the connection attempt fails at once.
    return {"ERP_DB_HOST": "127.0.0.1", "ERP_DB_PORT": str(free_port()), "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap}


@pytest.mark.parametrize("file", ["debezium-sqlserver.json", "debezium-mysql.json", "debezium-postgres.json"])
def test_connector_files_are_valid_up_to_the_connection(
    kafka_connect: Connect, kafka_broker: Broker, file: str
) -> None:
    connector = load_connector_file(CONNECTORS / file, offline_env(kafka_broker))
    client = ConnectClient(kafka_connect.url)
    try:
        validation = client.validate(connector)
    finally:
        client.close()
    assert only_connection_errors(validation), validation.errors
    assert validation.unknown_keys == [], "every key is one the connector knows"


def test_broken_sqlserver_config_names_each_bad_field(kafka_connect: Connect, kafka_broker: Broker) -> None:
    connector = load_connector_file(CONNECTORS / "debezium-sqlserver.json", offline_env(kafka_broker))
    connector.config.update({"decimal.handling.mode": "exact", "database.port": "fourteen33", "snapshot.mode": "x"})
    client = ConnectClient(kafka_connect.url)
    try:
        validation = client.validate(connector)
    finally:
        client.close()
    fields = {e.field: e for e in validation.errors}
    assert {"decimal.handling.mode", "database.port", "snapshot.mode"} <= set(fields)
    assert fields["database.port"].value == "fourteen33"
    assert any("string, double, precise" in m for m in fields["decimal.handling.mode"].errors)
    assert not only_connection_errors(validation)


def test_mariadb_connector_is_not_installed_here_and_says_so(kafka_connect: Connect, kafka_broker: Broker) -> None:
    # Production MariaDB config: Debezium's MariaDB connector, which no installable package here carries.
    connector = load_connector_file(CONNECTORS / "debezium-mariadb.json", offline_env(kafka_broker))
    client = ConnectClient(kafka_connect.url)
    try:
        with pytest.raises(ConnectError, match=r"io\.debezium\.connector\.mariadb\.MariaDbConnector"):
            client.validate(connector)
    finally:
        client.close()


# --- the CLI -----------------------------------------------------------------------------------


def write_config(tmp_path: Path, connect: Connect, broker: Broker, prefix: str, connectors: list[str]) -> Path:
    cfg = yaml.safe_load(SAMPLE_CONFIG.read_text())
    cfg["source"] = {
        "kind": "kafka",
        "bootstrap_servers": broker.bootstrap,
        "topic_prefix": prefix,
        "connect": {"url": connect.url, "connectors": connectors},
    }
    cfg["crm"] = {"kind": "discard"}
    path = tmp_path / "etc" / "replicator.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicator.cli", *args],
        env={**os.environ, **env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_setup_registers_the_connector_and_status_reports_it(
    kafka_connect: Connect,
    kafka_broker: Broker,
    pg_cluster: PgCluster,
    debezium_pg_erp: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    # Connector files are named relative to the configuration file, as in examples/.
    folder = tmp_path / "connectors"
    folder.mkdir()
    body = json.loads((CONNECTORS / "debezium-postgres.json").read_text())
    name = f"cli-{topic_prefix}"
    body["name"] = name
    body["config"]["slot.name"] = f"cli_{debezium_pg_erp}"
    (folder / "pg.json").write_text(json.dumps(body))
    broken = folder / "broken.json"
    broken_config = {**body["config"], "time.precision.mode": "exact"}
    broken.write_text(json.dumps({"name": f"broken-{topic_prefix}", "config": broken_config}))
    unset = folder / "unset.json"
    unset.write_text(json.dumps({**body, "config": {**body["config"], "database.hostname": "${ERP_REPLICA_HOST}"}}))
    env = {
        "ERP_DSN": pg_cluster.dsn(debezium_pg_erp),
        "ERP_DB_HOST": "127.0.0.1",
        "ERP_DB_PORT": str(pg_cluster.port),
        "ERP_DB_NAME": debezium_pg_erp,
        "DEBEZIUM_TOPIC_PREFIX": topic_prefix,
        "KAFKA_TOPIC_PARTITIONS": "1",
    }
    config = write_config(tmp_path, kafka_connect, kafka_broker, topic_prefix, ["../connectors/pg.json"])
    try:
        # A variable that is not set stops setup before anything happens, naming file and key.
        result = cli(["setup", "--config", str(config), "--skip-crm", "--connector", str(unset)], env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"{unset}:" in result.stderr
        assert "config.database.hostname: environment variable ERP_REPLICA_HOST is not set" in result.stderr

        # One invalid file among valid ones: nothing is registered, and the bad field is named.
        both = ["--connector", str(folder / "pg.json"), "--connector", str(broken)]
        result = cli(["setup", "--config", str(config), "--skip-crm", *both], env)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "nothing registered" in result.stderr
        assert f"{broken} (io.debezium.connector.postgresql.PostgresConnector):" in result.stderr
        assert "config.time.precision.mode = 'exact'" in result.stderr
        assert kafka_connect.status(name) is None
        assert kafka_connect.status(f"broken-{topic_prefix}") is None

        # The configured files: created, RUNNING; then capturing into the broker.
        result = cli(["setup", "--config", str(config), "--skip-crm"], env)
        assert result.returncode == 0, result.stdout + result.stderr
        row = next(line for line in result.stdout.splitlines() if name in line)
        assert "created" in row and "RUNNING" in row and "0:RUNNING" in row
        assert len(read_records(kafka_broker.bootstrap, f"{topic_prefix}.public.customers", 24, timeout=60)) == 24

        # Again: the same connector is updated in place, not duplicated.
        result = cli(["setup", "--config", str(config), "--skip-crm"], env)
        assert result.returncode == 0, result.stdout + result.stderr
        row = next(line for line in result.stdout.splitlines() if name in line)
        assert "updated" in row and "RUNNING" in row
        assert [c for c in kafka_connect.request("GET", "/connectors").json() if c == name] == [name]

        status = cli(["status", "--config", str(config)], env)
        assert status.returncode == 0, status.stdout + status.stderr
        row = next(line for line in status.stdout.splitlines() if name in line)
        assert "RUNNING" in row and "0:RUNNING" in row
    finally:
        kafka_connect.delete_connector(name)


def test_status_shows_a_failed_task_with_its_reason(
    kafka_connect: Connect,
    kafka_broker: Broker,
    pg_cluster: PgCluster,
    debezium_pg_erp: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    body = json.loads((CONNECTORS / "debezium-postgres.json").read_text())
    name = f"fail-{topic_prefix}"
    body["name"] = name
    # Valid fields, but a decoder plugin the server does not have: creating the slot fails in the task.
    body["config"].update({"slot.name": f"fail_{debezium_pg_erp}", "plugin.name": "decoderbufs"})
    (tmp_path / "pg.json").write_text(json.dumps(body))
    cfg = write_config(tmp_path, kafka_connect, kafka_broker, topic_prefix, ["../pg.json"])
    env = {
        "ERP_DSN": pg_cluster.dsn(debezium_pg_erp),
        "ERP_DB_HOST": "127.0.0.1",
        "ERP_DB_PORT": str(pg_cluster.port),
        "ERP_DB_NAME": debezium_pg_erp,
        "DEBEZIUM_TOPIC_PREFIX": topic_prefix,
    }
    try:
        result = cli(["setup", "--config", str(cfg), "--skip-crm"], env)
        status = cli(["status", "--config", str(cfg)], env)
    finally:
        kafka_connect.delete_connector(name)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not every connector is RUNNING" in result.stderr
    row = next(line for line in status.stdout.splitlines() if name in line)
    assert "FAILED" in row and "Exception" in row, status.stdout
