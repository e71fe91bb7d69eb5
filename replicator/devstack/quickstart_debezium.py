"""The quickstart's Debezium path: a Kafka-protocol broker (tansu), Kafka Connect with
Debezium 3.6.3, and the replicator's `kafka` source reading the connector's topics."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from replicator.devstack.connect import start_connect
from replicator.devstack.tansu import TANSU_CONSUMER_SETTINGS, start_broker

if TYPE_CHECKING:
    from replicator.devstack.quickstart_erp import QuickErp

ROOT = Path(__file__).resolve().parents[2]
CONNECTORS = {
    "postgres": ROOT / "connectors" / "debezium-postgres.json",
    # Debezium's MariaDB connector is what production uses (connectors/debezium-mariadb.json);
    # it is not available here, so the MySQL connector reads a server with a spoofed version.
    "mariadb": ROOT / "connectors" / "test-only-mysql-connector-on-spoofed-mariadb.json",
}
TOPIC_PREFIX = "erp"


def debezium_source(
    erp: str, quick: QuickErp, workdir: Path, stack: ExitStack, log: Callable[[str], None]
) -> dict[str, Any]:
    """Start the broker and Connect; returns the config sections that point the replicator at them."""
    broker = start_broker(workdir / "tansu")
    stack.callback(broker.stop)
    log(f"      Kafka-protocol broker (tansu) at {broker.bootstrap}; starting Kafka Connect + Debezium 3.6.3")
    # Credentials reach the connector through Connect's env config provider, never its REST config.
    connect = start_connect(
        workdir / "connect", broker.bootstrap, env={"ERP_DB_USER": quick.user, "ERP_DB_PASSWORD": ""}
    )
    stack.callback(connect.stop)
    log(f"      Kafka Connect REST API at {connect.url}")
    # `replicator setup` expands these in the connector file before registering it.
    quick.env.update(
        {
            "ERP_DB_HOST": quick.host,
            "ERP_DB_PORT": str(quick.port),
            "ERP_DB_NAME": "erp",
            "DEBEZIUM_TOPIC_PREFIX": TOPIC_PREFIX,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "KAFKA_TOPIC_PARTITIONS": "3",
        }
    )
    return {
        "source": {
            "kind": "kafka",
            "bootstrap_servers": broker.bootstrap,
            "group_id": "quickstart",
            "topic_prefix": TOPIC_PREFIX,
            "consumer": dict(TANSU_CONSUMER_SETTINGS),
            "connect": {"url": connect.url, "connectors": [str(CONNECTORS[erp])]},
        }
    }
