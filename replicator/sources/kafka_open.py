"""Opening the Kafka source for `replicator run`: startup checks, checkpoints, lag."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog
from confluent_kafka import KafkaException

from replicator.change import Position
from replicator.config.model import KafkaSourceConfig
from replicator.sources.debezium import DebeziumDecoder
from replicator.sources.kafka import KafkaSource
from replicator.sources.kafka_letters import DeadLetters
from replicator.sources.kafka_settings import consumer_settings, data_topics, existing_topics, transaction_topic
from replicator.sources.open import OpenedSource

if TYPE_CHECKING:
    from replicator.app import Parts

log = structlog.get_logger()


def checkpoint_stream(topic: str, partition: int) -> str:
    return f"kafka:{topic}/{partition}"


def _wait_for_topics(src: KafkaSourceConfig, topics: list[str]) -> list[str]:
    """The topics still missing after `source.topic_wait_s`.

    A replicator started together with a freshly registered connector (the quickstart,
    compose) would otherwise race the snapshot, which creates one topic per table as it
    reaches it; a wrong topic_prefix still fails, only later.
    """
    from replicator.app import StartupError

    deadline = time.monotonic() + src.topic_wait_s
    said = False
    while True:
        try:
            present = existing_topics(src)
        except KafkaException as exc:
            raise StartupError(
                f"cannot reach Kafka at source.bootstrap_servers={src.bootstrap_servers!r}: {exc}; "
                "check the address, the network path and source.consumer security settings"
            ) from None
        missing = [t for t in topics if t not in present]
        if not missing or time.monotonic() >= deadline:
            return missing
        if not said:
            log.info("waiting for Kafka topics", missing=missing, up_to_s=src.topic_wait_s)
            said = True
        time.sleep(1.0)


def open_kafka(parts: Parts) -> OpenedSource:
    from replicator.app import StartupError

    cfg = parts.config
    src = cfg.source
    assert isinstance(src, KafkaSourceConfig)
    topics = data_topics(cfg, src)
    missing = _wait_for_topics(src, topics)
    if missing:
        raise StartupError(
            f"Kafka topic(s) missing after {src.topic_wait_s:.0f} s: {', '.join(missing)}; register the Debezium "
            "connectors with `replicator setup --connect` (they create the topics on their first snapshot), "
            f"or check source.topic_prefix ({src.topic_prefix!r}) and source.topics"
        )
    tx_topic = transaction_topic(src)
    if tx_topic is not None:
        # It appears with the connector's first transaction; librdkafka subscribes to it then.
        topics.append(tx_topic)
    decoder = DebeziumDecoder(
        timezone=cfg.erp.timezone,
        source_name="kafka",
        unavailable_value_placeholder=src.unavailable_value_placeholder,
    )
    source = KafkaSource(
        consumer_settings(src),
        topics,
        decoder,
        name=f"kafka:{src.group_id}",
        letters=DeadLetters(cfg.state_dsn),
    )
    store = parts.store

    def checkpoint(position: Position) -> None:
        for (topic, partition), offset in source.take_acked().items():
            store.save_checkpoint(checkpoint_stream(topic, partition), str(offset), offset)

    describe = f"kafka group {src.group_id} ({len(topics)} topics on {src.bootstrap_servers})"
    return OpenedSource(source, describe, on_ack=checkpoint, gauges=[source.sample_lag])
