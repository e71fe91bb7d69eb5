"""What a record is (change, tombstone, heartbeat, schema change, transaction, message):
the ``Decoded`` result and how a record's kind is told from its schema or its payload."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from replicator.change import Change

# Default of `topic.heartbeat.prefix`; heartbeat topics are "<prefix>.<topic.prefix>".
HEARTBEAT_TOPIC_PREFIX = "__debezium-heartbeat"

_SCHEMA_CHANGE_NAME = re.compile(r"io\.debezium\.connector\.[\w.]+\.SchemaChangeValue$")


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one Kafka record becomes.

    ``kind``: "change" (c/u/d/r), "truncate" (``change.op`` is TRUNCATE), "tombstone",
    "heartbeat", "schema_change", "transaction" (a BEGIN/END record of the transaction
    topic; ``transaction`` is its payload) or "message" (PostgreSQL logical decoding
    message, op "m": nothing to replicate). For changes, ``transaction`` is the envelope's
    ``{id, total_order, data_collection_order}`` block when the connector adds one.
    """

    change: Change | None
    kind: str
    transaction: dict[str, Any] | None = None


TOMBSTONE = Decoded(None, "tombstone")
HEARTBEAT = Decoded(None, "heartbeat")
SCHEMA_CHANGE = Decoded(None, "schema_change")
MESSAGE = Decoded(None, "message")


def kind_of_schema(name: str, fields: dict[Any, Any]) -> str:
    """The record kind a value schema's name (or its ``op`` field) declares; "" if unknown."""
    if name.endswith(".Heartbeat"):
        return "heartbeat"  # io.debezium.connector.common.Heartbeat
    if _SCHEMA_CHANGE_NAME.match(name):
        return "schema_change"  # io.debezium.connector.{mysql,sqlserver}.SchemaChangeValue
    if name.endswith(".TransactionMetadataValue"):
        return "transaction"  # io.debezium.connector.common.TransactionMetadataValue
    if "op" in fields:
        return "envelope"
    return ""  # unknown: decide from the payload


def kind_of_payload(payload: dict[str, Any]) -> str:
    # Schemaless records say what they are only by their fields.
    if "op" in payload:
        return "envelope"
    if "ddl" in payload or "tableChanges" in payload:
        return "schema_change"
    if "status" in payload and "id" in payload and "event_count" in payload:
        return "transaction"
    if payload.keys() == {"ts_ms"}:
        return "heartbeat"  # io.debezium.connector.common.Heartbeat carries only ts_ms
    return ""
