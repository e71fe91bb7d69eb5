"""Scale-out: three `replicator run` processes in one consumer group, fed by a real Debezium
PostgreSQL connector (Kafka Connect) capturing the sample ERP into multi-partition topics,
writing into the real BottleCRM. One member is killed with SIGKILL mid-stream; the others
take its partitions over and every record ends in the CRM once, with its last values.

Nothing here reads high watermarks (the test broker's are wrong): completion is judged by
what the CRM holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from replicator.config import load_config
from replicator.devstack.bottlecrm import BottleCrm
from replicator.devstack.connect import Connect
from replicator.devstack.postgres import PgCluster, free_port
from replicator.devstack.sample_erp import CONFIG as SAMPLE_CONFIG
from replicator.devstack.tansu import TANSU_CONSUMER_SETTINGS, Broker
from replicator.jobs.connect import ConnectClient, load_connector_file, register
from replicator.jobs.setup import setup
from replicator.sinks.bottlecrm import BottleCrmSink
from tests.fixtures.connect import debezium_role_on_postgres

pytestmark = pytest.mark.integration

CONNECTORS = Path(__file__).resolve().parents[2] / "connectors"
PARTITIONS = 3
# The topics the sample mapping reads (mapped tables and their related tables).
TABLES = ["customers", "contact_mechanisms", "addresses", "contacts", "products", "sales_orders"]
NEW_PRODUCTS = 60
PRICE_ROUNDS = 3
RENAME_ROUNDS = 2


@dataclass
class Member:
    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    def metric(self, name: str) -> float | None:
        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return None
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else None

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Group:
    dsn: str
    config: Path
    env: dict[str, str]
    workdir: Path
    members: list[Member] = dataclasses.field(default_factory=list)

    def start(self, name: str) -> Member:
        port = free_port()
        log = self.workdir / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "replicator.cli", "run", "--no-backfill", "--config", str(self.config)],
            env={**self.env, "REPLICATOR_METRICS_LISTEN": f"127.0.0.1:{port}"},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        member = Member(name, port, log, proc)
        self.members.append(member)
        return member

    def alive(self) -> list[Member]:
        return [m for m in self.members if m.proc.poll() is None]

    def logs(self) -> str:
        return "\n".join(f"--- {m.name} (exit {m.proc.poll()}):\n{m.log_tail()}" for m in self.members)

    def wait_for(self, what: str, condition: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def sql(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []


@pytest.fixture
def group(
    pg_cluster: PgCluster,
    erp_template: str,
    pg_db: str,
    bottlecrm: BottleCrm,
    crm: BottleCrmSink,
    kafka_broker: Broker,
    kafka_connect: Connect,
    topic_prefix: str,
    tmp_path: Path,
) -> Iterator[Group]:
    """A fresh sample ERP captured by its own Debezium connector into `PARTITIONS`-partition
    topics, state set up, an empty CRM; `start()` adds a replicator process to the group."""
    db = str(psycopg.conninfo.conninfo_to_dict(pg_db)["dbname"])
    pg_cluster.drop_database(db)
    pg_cluster.create_database(db, template=erp_template)
    debezium_role_on_postgres(pg_cluster)
    connector = load_connector_file(
        CONNECTORS / "debezium-postgres.json",
        {
            "ERP_DB_HOST": "127.0.0.1",
            "ERP_DB_PORT": str(pg_cluster.port),
            "ERP_DB_NAME": db,
            "DEBEZIUM_TOPIC_PREFIX": topic_prefix,
            "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
        },
    )
    # Slots and publications are per database, but slot names are cluster-wide.
    connector = dataclasses.replace(
        connector,
        name=f"pg-{topic_prefix}",
        config={**connector.config, "slot.name": f"dbz_{db}", "publication.name": f"dbz_{db}"},
    )
    config = tmp_path / "replicator-kafka.yaml"
    consumer = "\n".join(f"    {k}: {v}" for k, v in TANSU_CONSUMER_SETTINGS.items())
    config.write_text(
        f"extends: {SAMPLE_CONFIG}\n"
        "source:\n"
        "  kind: kafka\n"
        "  bootstrap_servers: ${KAFKA_BOOTSTRAP_SERVERS}\n"
        "  group_id: ${KAFKA_GROUP_ID}\n"
        "  topic_prefix: ${DEBEZIUM_TOPIC_PREFIX}\n"
        "  consumer:\n"
        f"{consumer}\n"
        "pipeline:\n"
        "  batch_size: 100\n"
        "  max_wait_ms: 20\n"
        "  stall_timeout_s: 120\n"
    )
    env = {
        **os.environ,
        "ERP_DSN": pg_db,
        "BOTTLECRM_URL": bottlecrm.url,
        "BOTTLECRM_TOKEN": bottlecrm.token,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "KAFKA_GROUP_ID": f"replicator-{uuid.uuid4().hex[:8]}",
        "DEBEZIUM_TOPIC_PREFIX": topic_prefix,
    }
    setup(load_config(config, env))
    client = ConnectClient(kafka_connect.url)
    g = Group(pg_db, config, env, tmp_path)
    try:
        (registered,) = register(client, [connector], wait_s=60)
        assert registered.state is not None and registered.state.healthy, registered.state
        topics = [f"{topic_prefix}.public.{t}" for t in TABLES]
        admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
        g.wait_for(
            "the connector's snapshot topics",
            lambda: set(topics) <= set(admin.list_topics(timeout=10).topics),
            timeout=90,
        )
        yield g
    finally:
        for m in g.members:
            if m.proc.poll() is None:
                m.proc.send_signal(signal.SIGTERM)
        for m in g.members:
            try:
                m.proc.wait(30)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait(10)
        with contextlib.suppress(Exception):
            kafka_connect.delete_connector(connector.name)
        client.close()


def final_price(i: int) -> Decimal:
    return Decimal(f"{100 + i}.{PRICE_ROUNDS:02d}")


def test_three_members_share_the_stream_and_survive_a_kill9(group: Group, crm: BottleCrmSink) -> None:
    members = [group.start(f"member{i}") for i in range(3)]
    total_partitions = PARTITIONS * len(TABLES)

    def assigned(ms: list[Member]) -> list[float]:
        return [m.metric("replicator_kafka_assigned_partitions") or 0.0 for m in ms]

    group.wait_for(
        "all three members to share every partition",
        lambda: sum(assigned(members)) == total_partitions and all(a > 0 for a in assigned(members)),
        timeout=120,
    )
    # Debezium's snapshot (op "r") is the initial load.
    group.wait_for(
        "the snapshot synced",
        lambda: (
            group.sql(
                "SELECT count(*) FROM replicator.sync_state WHERE entity IN ('customers', 'products') "
                "AND status IN ('synced', 'archived')"
            )[0][0]
            == 24 + 18
        ),
        timeout=240,
    )

    # A few hundred changes in small transactions, several per key, spread over the partitions.
    written = {"statements": 0}
    done = threading.Event()
    failure: list[BaseException] = []

    def writer() -> None:
        try:
            with psycopg.connect(group.dsn, autocommit=True) as conn:
                for i in range(NEW_PRODUCTS):
                    conn.execute(
                        "INSERT INTO products (sku, name, unit_price) VALUES (%s, %s, %s)",
                        (f"SKU-S{i:03d}", f"Scaled part {i}", Decimal(f"{100 + i}.00")),
                    )
                    written["statements"] += 1
                for r in range(1, max(PRICE_ROUNDS, RENAME_ROUNDS) + 1):
                    for i in range(NEW_PRODUCTS):
                        if r <= PRICE_ROUNDS:
                            conn.execute(
                                "UPDATE products SET unit_price = %s, name = %s WHERE sku = %s",
                                (Decimal(f"{100 + i}.{r:02d}"), f"Scaled part {i} r{r}", f"SKU-S{i:03d}"),
                            )
                            written["statements"] += 1
                        if r <= RENAME_ROUNDS and i < 24:
                            conn.execute(
                                "UPDATE customers SET name = %s WHERE id = %s", (f"Customer {i + 1} r{r}", i + 1)
                            )
                            written["statements"] += 1
                        time.sleep(0.01)
        except BaseException as exc:  # reported by the test thread
            failure.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer, name="erp-writer")
    thread.start()
    group.wait_for("a third of the stream written", lambda: written["statements"] >= 120 or done.is_set(), timeout=60)
    victim = max(members, key=lambda m: m.metric("replicator_kafka_assigned_partitions") or 0.0)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    thread.join(120)
    assert done.is_set() and not failure, failure
    assert written["statements"] == NEW_PRODUCTS * (1 + PRICE_ROUNDS) + 24 * RENAME_ROUNDS

    survivors = [m for m in members if m is not victim]
    group.wait_for(
        "the survivors to take over the killed member's partitions",
        lambda: sum(assigned(survivors)) == total_partitions,
        timeout=120,
    )
    assert all(m.proc.poll() is None for m in survivors), group.logs()

    expected_products = {
        f"SKU-S{i:03d}": (f"Scaled part {i} r{PRICE_ROUNDS}", final_price(i)) for i in range(NEW_PRODUCTS)
    }
    # Inactive customers are archived: their CRM record keeps its archived state, not checked by name.
    active = {i for (i,) in group.sql("SELECT id FROM customers WHERE active")}
    expected_accounts = {f"CUST-{i}": f"Customer {i} r{RENAME_ROUNDS}" for i in range(1, 25) if i in active}

    def crm_matches() -> bool:
        products = {r["external_id"]: r for r in crm.iter_records("product")}
        accounts = {r["external_id"]: r for r in crm.iter_records("account")}
        for sku, (name, price) in expected_products.items():
            got = products.get(sku)
            if got is None or got.get("name") != name or Decimal(str(got.get("price"))) != price:
                return False
        return all((accounts.get(k) or {}).get("name") == name for k, name in expected_accounts.items())

    group.wait_for("every change in the CRM with its last values", crm_matches, timeout=240)

    # Once each: no CRM record twice under one external id.
    for obj in ("product", "account", "contact", "opportunity"):
        ids = Counter(r["external_id"] for r in crm.iter_records(obj) if r.get("external_id"))
        duplicates = {k: n for k, n in ids.items() if n > 1}
        assert not duplicates, f"duplicate CRM {obj}s: {duplicates}"
    products = {r["external_id"] for r in crm.iter_records("product")}
    assert set(expected_products) <= products and len(products) == 18 + NEW_PRODUCTS
    # The final value is the last one written for every key: per-key order held across the takeover.
    erp = dict(group.sql("SELECT sku, unit_price FROM products WHERE sku LIKE 'SKU-S%%'"))
    assert erp == {sku: price for sku, (_, price) in expected_products.items()}
    assert group.sql("SELECT count(*) FROM replicator.dead_letters WHERE status = 'open'")[0][0] == 0, group.logs()
    # Offsets are checkpointed per partition for `replicator status`.
    streams = {s for (s,) in group.sql("SELECT stream FROM replicator.checkpoints WHERE stream LIKE 'kafka:%%'")}
    assert any(".public.products/" in s for s in streams), streams
