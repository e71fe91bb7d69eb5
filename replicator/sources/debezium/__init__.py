"""Debezium change events (Kafka Connect JSON converter) → the replicator's ``Change``.

Pure decoding, no Kafka client: ``decode_record`` takes a consumed record's key and value
bytes plus its coordinates. ``envelope`` reads the envelope and record kinds,
``logical_types`` the Kafka Connect / Debezium logical types.
"""

from replicator.sources.debezium.envelope import (
    HEARTBEAT_TOPIC_PREFIX,
    UNAVAILABLE_VALUE_PLACEHOLDER,
    DebeziumDecodeError,
    DebeziumDecoder,
    Decoded,
    decode_record,
)

__all__ = [
    "HEARTBEAT_TOPIC_PREFIX",
    "UNAVAILABLE_VALUE_PLACEHOLDER",
    "DebeziumDecodeError",
    "DebeziumDecoder",
    "Decoded",
    "decode_record",
]
