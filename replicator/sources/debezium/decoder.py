"""One Kafka record written by a Debezium connector through the JSON converter → ``Decoded``.

Shapes follow the Debezium connector documentation (postgresql.adoc, mysql.adoc,
sqlserver.adoc, sections "Data change events", "Transaction metadata", "Schema change
topic"): the value is the envelope ``{before, after, source, op, ts_ms, transaction}``,
wrapped as ``{"schema": …, "payload": …}`` when the converter runs with
``schemas.enable=true``; the key is a struct of the primary-key columns.

Schemas are cached per exact schema text, so usually only the payload is parsed
(``schema_cache``); what is built from a schema lives in ``plans``.

Without schemas nothing says a number is a Date or a string a Decimal: values pass through
as JSON gives them (int, float, str, list, dict) and only the envelope itself is read.
"""

from __future__ import annotations

from datetime import tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from replicator.change import Change, Op, Position
from replicator.sources.debezium.errors import ENVELOPE_HINT, DebeziumDecodeError, FieldFailure, field_failure_from
from replicator.sources.debezium.kinds import (
    HEARTBEAT,
    HEARTBEAT_TOPIC_PREFIX,
    MESSAGE,
    SCHEMA_CHANGE,
    TOMBSTONE,
    Decoded,
    kind_of_payload,
)
from replicator.sources.debezium.placeholders import UNAVAILABLE_VALUE_PLACEHOLDER, Placeholders
from replicator.sources.debezium.plans import KeyPlan, ValuePlan
from replicator.sources.debezium.primitives import DECODE_ERRORS, LogicalValueError
from replicator.sources.debezium.schema_cache import SchemaCache
from replicator.sources.debezium.source_block import commit_ts_of, table_of, txid_of

__all__ = ["DebeziumDecoder", "decode_record"]

_OPS = {"c": Op.CREATE, "u": Op.UPDATE, "d": Op.DELETE, "r": Op.READ, "t": Op.TRUNCATE}


# --- the decoder ------------------------------------------------------------------------------


class DebeziumDecoder:
    """Decodes records of any number of topics; holds the schema caches. Not Kafka-aware."""

    def __init__(
        self,
        *,
        timezone: str | tzinfo = "UTC",
        source_name: str = "debezium",
        unavailable_value_placeholder: str = UNAVAILABLE_VALUE_PLACEHOLDER,
        heartbeat_topic_prefix: str = HEARTBEAT_TOPIC_PREFIX,
        cache_limit: int = 1024,
    ) -> None:
        self.tz = ZoneInfo(timezone) if isinstance(timezone, str) else timezone
        self.source_name = source_name
        self.heartbeat_topic_prefix = heartbeat_topic_prefix
        ph = Placeholders(unavailable_value_placeholder)
        self._schemaless = ValuePlan(None, self.tz, ph)
        self._values: SchemaCache[ValuePlan] = SchemaCache(lambda s: ValuePlan(s, self.tz, ph), cache_limit)
        self._keys: SchemaCache[KeyPlan] = SchemaCache(lambda s: KeyPlan(s, self.tz), cache_limit)

    def decode(self, key: bytes | None, value: bytes | None, *, topic: str, partition: int, offset: int) -> Decoded:
        try:
            return self._decode(key, value, topic, partition, offset)
        except FieldFailure as e:
            raise DebeziumDecodeError(
                e.reason,
                topic=topic,
                partition=partition,
                offset=offset,
                field=e.field,
                logical_type=e.logical,
                hint=e.hint,
            ) from e
        except DECODE_ERRORS as e:
            # A shape no check above anticipated (say a list where the envelope has a
            # string): still this record's fault, so still dead-letterable, not a crash.
            raise DebeziumDecodeError(
                f"unexpected record shape ({type(e).__name__}: {e})",
                topic=topic,
                partition=partition,
                offset=offset,
                hint=ENVELOPE_HINT,
            ) from e

    def _decode(self, key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int) -> Decoded:
        if value is None:
            return TOMBSTONE
        if topic.startswith(self.heartbeat_topic_prefix):
            return HEARTBEAT
        try:
            payload, plan = self._values.parse(value)
        except orjson.JSONDecodeError as e:
            raise FieldFailure(
                "value",
                f"is not valid JSON ({e})",
                "the decoder reads org.apache.kafka.connect.json.JsonConverter output; check value.converter",
            ) from None
        if payload is None:
            return TOMBSTONE  # {"schema": null, "payload": null}: a null value via schemas.enable
        if type(payload) is not dict:
            raise FieldFailure("payload", f"expected a JSON object, got {type(payload).__name__}", ENVELOPE_HINT)
        plan = plan or self._schemaless
        kind = plan.kind or kind_of_payload(payload)
        if kind == "envelope":
            return self._envelope(key, payload, plan, topic, partition, offset)
        if kind == "heartbeat":
            return HEARTBEAT
        if kind == "schema_change":
            return SCHEMA_CHANGE
        if kind == "transaction":
            if payload.get("status") not in ("BEGIN", "END"):
                raise FieldFailure("status", f"expected BEGIN or END, got {payload.get('status')!r}")
            return Decoded(None, "transaction", payload)
        raise FieldFailure("op", "envelope field is missing; expected one of c, u, d, r, t, m", ENVELOPE_HINT)

    def _envelope(
        self, key: bytes | None, payload: dict[str, Any], plan: ValuePlan, topic: str, partition: int, offset: int
    ) -> Decoded:
        op_s = payload.get("op")
        op = _OPS.get(op_s) if type(op_s) is str else None
        if op is None:
            if op_s == "m":
                return MESSAGE
            if op_s is None:
                raise FieldFailure("op", "envelope field is missing; expected one of c, u, d, r, t, m", ENVELOPE_HINT)
            raise FieldFailure("op", f"expected one of c, u, d, r, t, m, got {op_s!r}", ENVELOPE_HINT)
        source = payload.get("source")
        if type(source) is not dict:
            raise FieldFailure("source", "envelope field is missing or not an object", ENVELOPE_HINT)
        table = table_of(source)
        commit_ts = commit_ts_of(source)
        tx = payload.get("transaction")
        tx = tx if type(tx) is dict else None
        txid = txid_of(source, tx)
        position = Position(f"{topic}/{partition}", offset)
        if op is Op.TRUNCATE:
            # Truncates have no key and no row images (postgresql.adoc "truncate events").
            change = Change(self.source_name, table, op, (), None, None, position, commit_ts, txid)
            return Decoded(change, "truncate", tx)
        raw_before = payload.get("before")
        raw_after = payload.get("after")
        before, gone_before = (None, None) if raw_before is None else plan.before(raw_before)
        after, gone_after = (None, None) if raw_after is None else plan.after(raw_after)
        if after is None and op is not Op.DELETE:
            raise FieldFailure("after", f"is null in an op {op_s!r} event; expected the new row", ENVELOPE_HINT)
        if before is None and after is None:
            raise FieldFailure("before", "is null in a delete event and there is no after either", ENVELOPE_HINT)
        gone = gone_before if op is Op.DELETE else gone_after
        change = Change(
            self.source_name,
            table,
            op,
            self._key(key),
            before,
            after,
            position,
            commit_ts,
            txid,
            None,
            frozenset(gone) if gone else frozenset(),
        )
        return Decoded(change, "change", tx)

    def _key(self, raw: bytes | None) -> tuple[Any, ...]:
        if raw is None:
            return ()
        try:
            payload, plan = self._keys.parse(raw)
        except orjson.JSONDecodeError as e:
            raise FieldFailure(
                "key", f"is not valid JSON ({e})", "check key.converter (JsonConverter expected)"
            ) from None
        if payload is None:
            return ()
        if type(payload) is not dict:
            return (payload,)  # a primitive key (custom SMT); keep it as the one component
        if plan is None or plan.order is None:
            return tuple(payload.values())
        if plan.dec is not None:
            try:
                payload = plan.dec(payload)
            except LogicalValueError as e:
                raise field_failure_from("key", e) from e
            except DECODE_ERRORS as e:
                raise FieldFailure("key", f"expected a JSON object ({e})") from e
        return tuple([payload.get(name) for name in plan.order])


@lru_cache(maxsize=32)
def _decoder_for(timezone: str, source_name: str, placeholder: str) -> DebeziumDecoder:
    return DebeziumDecoder(timezone=timezone, source_name=source_name, unavailable_value_placeholder=placeholder)


def decode_record(
    key: bytes | None,
    value: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    timezone: str = "UTC",
    source_name: str = "debezium",
    unavailable_value_placeholder: str = UNAVAILABLE_VALUE_PLACEHOLDER,
) -> Decoded:
    """Decode one Kafka record (key and value bytes as consumed) into a ``Decoded``.

    ``timezone`` labels wall-clock timestamps (Timestamp/MicroTimestamp/NanoTimestamp and
    the Connect Timestamp: PostgreSQL ``timestamp``, MySQL ``DATETIME``, SQL Server
    ``datetime2``), which Debezium encodes without a zone. Raises ``DebeziumDecodeError``.
    Decoders (and their schema caches) are shared per configuration.
    """
    return _decoder_for(timezone, source_name, unavailable_value_placeholder).decode(
        key, value, topic=topic, partition=partition, offset=offset
    )
