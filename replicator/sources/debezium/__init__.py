"""Debezium change events (Kafka Connect JSON converter) → the replicator's ``Change``.

Pure decoding, no Kafka client: ``decode_record`` takes a consumed record's key and value
bytes plus its coordinates. ``decoder`` reads the envelope, helped by ``kinds`` (record
kinds), ``source_block`` (table, commit time, transaction id), ``placeholders`` (unchanged
TOAST values), ``plans`` and ``schema_cache`` (per-schema work, done once) and ``errors``;
``logical_types`` maps the Kafka Connect / Debezium logical types to the decoders in
``decimals``, ``temporal`` and ``values``, built on ``primitives``.
"""

from replicator.sources.debezium.decoder import DebeziumDecoder, decode_record
from replicator.sources.debezium.errors import DebeziumDecodeError
from replicator.sources.debezium.kinds import HEARTBEAT_TOPIC_PREFIX, Decoded
from replicator.sources.debezium.placeholders import UNAVAILABLE_VALUE_PLACEHOLDER

__all__ = [
    "HEARTBEAT_TOPIC_PREFIX",
    "UNAVAILABLE_VALUE_PLACEHOLDER",
    "DebeziumDecodeError",
    "DebeziumDecoder",
    "Decoded",
    "decode_record",
]
