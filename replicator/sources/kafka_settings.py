"""What a Kafka source consumes and how: topic names from the mappings, librdkafka
settings, and the startup check that the topics exist."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from replicator.app import mapped_tables

if TYPE_CHECKING:
    from replicator.config.model import Config, KafkaSourceConfig

# Defaults for Apache Kafka; `source.consumer` overrides any of them.
CONSUMER_DEFAULTS: dict[str, str | int | float | bool] = {
    # A new group starts at the beginning: Debezium's snapshot is in the topics.
    "auto.offset.reset": "earliest",
    # One partition per table topic is common: range assignment would give every topic's
    # partition 0 to the same member, round-robin spreads them over the group.
    "partition.assignment.strategy": "roundrobin",
    "allow.auto.create.topics": False,
    "enable.partition.eof": False,
}
# Offsets move only when the pipeline acknowledged the records (the config refuses overrides).
FIXED: dict[str, str | int | float | bool] = {"enable.auto.commit": False, "enable.auto.offset.store": False}


def data_topics(config: Config, src: KafkaSourceConfig) -> list[str]:
    """Explicit `topics`, or one per mapped table (related tables included):
    `<topic_prefix>.<schema-or-database>.<table>`."""
    if src.topics:
        return list(src.topics)
    return [f"{src.topic_prefix}.{table}" for table in mapped_tables(config)]


def transaction_topic(src: KafkaSourceConfig) -> str | None:
    return f"{src.topic_prefix}.transaction" if src.transaction_topic else None


def consumer_settings(src: KafkaSourceConfig) -> dict[str, Any]:
    return {
        **CONSUMER_DEFAULTS,
        "client.id": f"replicator-{socket.gethostname()}-{os.getpid()}",
        **src.consumer,
        "bootstrap.servers": src.bootstrap_servers,
        "group.id": src.group_id,
        **FIXED,
    }


def admin_settings(src: KafkaSourceConfig) -> dict[str, Any]:
    """The connection part of the consumer settings (security, SASL...) for metadata calls."""
    skip = ("auto.", "partition.", "enable.", "session.", "heartbeat.", "max.poll", "isolation.", "fetch.", "group.")
    extra = {k: v for k, v in src.consumer.items() if not k.startswith(skip)}
    return {**extra, "bootstrap.servers": src.bootstrap_servers}


def existing_topics(src: KafkaSourceConfig, timeout: float = 10.0) -> set[str]:
    """Topic names on the cluster. Raises KafkaException when no broker answers."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**admin_settings(src), "socket.connection.setup.timeout.ms": int(timeout * 1000)})
    return set(admin.list_topics(timeout=timeout).topics)
