"""`replicator check` for a Kafka source: broker, topics, partitions, consumer group."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from replicator.config.model import Config, KafkaSourceConfig
from replicator.jobs.check import Finding
from replicator.sources.kafka_settings import admin_settings, data_topics, transaction_topic

_TIMEOUT_S = 10.0


def kafka_checks(config: Config) -> list[Finding]:
    src = config.source
    assert isinstance(src, KafkaSourceConfig)
    admin = AdminClient({**admin_settings(src), "socket.connection.setup.timeout.ms": int(_TIMEOUT_S * 1000)})
    try:
        cluster = admin.list_topics(timeout=_TIMEOUT_S)
    except KafkaException as exc:
        return [
            Finding(
                "Kafka reachable",
                "fail",
                f"{src.bootstrap_servers}: {exc}",
                "check source.bootstrap_servers, the network path and source.consumer security settings",
            )
        ]
    findings = [Finding("Kafka reachable", "ok", f"{len(cluster.brokers)} broker(s) at {src.bootstrap_servers}")]
    topics = data_topics(config, src)
    missing = [t for t in topics if t not in cluster.topics]
    if missing:
        findings.append(
            Finding(
                "Kafka topics",
                "fail",
                f"missing: {', '.join(missing)}",
                "register the Debezium connectors (`replicator setup --connect`), or check source.topic_prefix "
                "and source.topics",
            )
        )
    else:
        partitions = sum(len(cluster.topics[t].partitions) for t in topics)
        findings.append(
            Finding(
                "Kafka topics",
                "ok",
                f"{len(topics)} topic(s), {partitions} partition(s): at most {partitions} process(es) share the work",
            )
        )
    tx = transaction_topic(src)
    if tx is not None and tx not in cluster.topics:
        findings.append(
            Finding(
                "Kafka transaction topic",
                "warn",
                f"{tx} does not exist yet",
                "set provide.transaction.metadata=true on the connector, or source.transaction_topic: false",
            )
        )
    findings.append(_group_finding(admin, src.group_id))
    return findings


def _group_finding(admin: AdminClient, group: str) -> Finding:
    try:
        futures: dict[str, Any] = admin.describe_consumer_groups([group], request_timeout=_TIMEOUT_S)
        desc = futures[group].result(timeout=_TIMEOUT_S)
    except KafkaException as exc:
        return Finding("consumer group", "warn", f"{group}: cannot describe it ({exc})", "")
    state = getattr(desc.state, "name", str(desc.state))
    return Finding("consumer group", "ok", f"{group}: {state.lower()}, {len(desc.members)} member(s)")
