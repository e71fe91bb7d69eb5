"""One Kafka record written by a Debezium connector through the JSON converter → ``Decoded``.

Shapes follow the Debezium connector documentation (postgresql.adoc, mysql.adoc,
sqlserver.adoc, sections "Data change events", "Transaction metadata", "Schema change
topic"): the value is the envelope ``{before, after, source, op, ts_ms, transaction}``,
wrapped as ``{"schema": …, "payload": …}`` when the converter runs with
``schemas.enable=true``; the key is a struct of the primary-key columns.

Schemas repeat verbatim on every record of a table, so the decoder caches what it builds
from a schema under the schema's exact JSON text. On a hit only the payload is parsed: the
schema text, usually most of the record, is skipped (see ``_SchemaCache``).

Without schemas nothing says a number is a Date or a string a Decimal: values pass through
as JSON gives them (int, float, str, list, dict) and only the envelope itself is read.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

import orjson

from replicator.change import Change, Op, Position, Row
from replicator.sources.debezium.logical_types import (
    DECODE_ERRORS,
    Decoder,
    LogicalValueError,
    Schema,
    build_struct,
    field_decoders,
    wrap,
)

__all__ = [
    "HEARTBEAT_TOPIC_PREFIX",
    "UNAVAILABLE_VALUE_PLACEHOLDER",
    "DebeziumDecodeError",
    "DebeziumDecoder",
    "Decoded",
    "decode_record",
]

# Default of the connectors' `unavailable.value.placeholder` (postgresql.adoc "Toasted values").
UNAVAILABLE_VALUE_PLACEHOLDER = "__debezium_unavailable_value"
# Default of `topic.heartbeat.prefix`; heartbeat topics are "<prefix>.<topic.prefix>".
HEARTBEAT_TOPIC_PREFIX = "__debezium-heartbeat"

_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_OPS = {"c": Op.CREATE, "u": Op.UPDATE, "d": Op.DELETE, "r": Op.READ, "t": Op.TRUNCATE}
_SCHEMA_CHANGE_NAME = re.compile(r"io\.debezium\.connector\.[\w.]+\.SchemaChangeValue$")
_ENVELOPE_HINT = (
    "the value must be a Debezium change envelope; is an SMT such as ExtractNewRecordState "
    "unwrapping it, or is this not a Debezium topic?"
)


class DebeziumDecodeError(ValueError):
    """A record that cannot be decoded; the caller dead-letters it and moves on.

    Names where (topic/partition/offset), what (``field``, e.g. ``after.price``; the
    ``logical_type``), what was expected, and a likely fix (``hint``).
    """

    def __init__(
        self,
        reason: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        field: str | None = None,
        logical_type: str | None = None,
        hint: str = "",
    ) -> None:
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.field = field
        self.logical_type = logical_type
        self.hint = hint
        where = "Debezium record"
        if topic is not None:
            where += f" {topic}"
            if partition is not None:
                where += f"/{partition}"
            if offset is not None:
                where += f"@{offset}"
        what = ""
        if field:
            what = f" field {field!r}"
            if logical_type:
                what += f" ({logical_type})"
        fix = f"; fix: {hint}" if hint else ""
        super().__init__(f"cannot decode {where}:{what} {reason}{fix}")


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


class _Fail(Exception):
    """Internal: carries the failing field up to ``DebeziumDecoder.decode``."""

    def __init__(self, field: str | None, reason: str, hint: str = "", logical: str | None = None) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason
        self.hint = hint
        self.logical = logical


def _fail_from(image: str, e: LogicalValueError) -> _Fail:
    return _Fail(f"{image}.{e.field}", e.describe(), e.hint, e.logical)


# --- unchanged-TOAST placeholders -------------------------------------------------------------


class _Placeholders:
    """Recognises the placeholder in every shape Debezium PostgreSQL sends it: the string for
    text/JSON, its UTF-8 bytes (base64 in JSON) for bytea and precise decimals, a one-element
    list for arrays, and ``{placeholder: placeholder}`` for hstore in map mode."""

    __slots__ = ("as_b64", "as_list", "as_list_b64", "as_map", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.as_b64 = base64.b64encode(text.encode()).decode()
        self.as_list = [text]
        self.as_list_b64 = [self.as_b64]
        self.as_map = {text: text}

    def present(self, row: dict[str, Any]) -> bool:
        # One C-level scan per shape; nearly every row has none, so this is the whole cost.
        vals = row.values()
        return (
            self.text in vals
            or self.as_b64 in vals
            or self.as_list in vals
            or self.as_list_b64 in vals
            or self.as_map in vals
        )

    def strip(self, row: dict[str, Any]) -> list[str]:
        gone = [
            name
            for name, v in row.items()
            if v == self.text or v == self.as_b64 or v == self.as_list or v == self.as_list_b64 or v == self.as_map
        ]
        for name in gone:
            del row[name]
        return gone


# --- per-schema plans -------------------------------------------------------------------------


class _RowPlan:
    """Decodes one ``before``/``after`` image in place; returns the unchanged columns."""

    __slots__ = ("by_name", "decs", "image", "ph")

    def __init__(self, image: str, schema: Schema | None, tz: tzinfo, ph: _Placeholders) -> None:
        self.image = image
        self.ph = ph
        self.decs = field_decoders(schema, tz) if schema else []
        self.by_name: dict[str, Schema] = {f["field"]: f for f in (schema or {}).get("fields") or ()}

    def __call__(self, row: Any) -> tuple[Row, list[str] | None]:
        if type(row) is not dict:
            raise _Fail(self.image, f"expected a JSON object or null, got {type(row).__name__}", _ENVELOPE_HINT)
        unchanged = self.ph.strip(row) if self.ph.present(row) else None
        name = ""
        try:
            for name, dec in self.decs:
                x = row.get(name)
                if x is not None:
                    row[name] = dec(x)
        except DECODE_ERRORS as e:
            err = wrap(name, self.by_name.get(name), row.get(name), e)
            raise _fail_from(self.image, err) from e
        return row, unchanged


class _ValuePlan:
    __slots__ = ("after", "before", "kind")

    def __init__(self, schema: Schema | None, tz: tzinfo, ph: _Placeholders) -> None:
        name = (schema or {}).get("name") or ""
        fields = {f.get("field"): f for f in (schema or {}).get("fields") or ()}
        if name.endswith(".Heartbeat"):
            self.kind = "heartbeat"  # io.debezium.connector.common.Heartbeat
        elif _SCHEMA_CHANGE_NAME.match(name):
            self.kind = "schema_change"  # io.debezium.connector.{mysql,sqlserver}.SchemaChangeValue
        elif name.endswith(".TransactionMetadataValue"):
            self.kind = "transaction"  # io.debezium.connector.common.TransactionMetadataValue
        elif "op" in fields:
            self.kind = "envelope"
        else:
            self.kind = ""  # unknown: decide from the payload
        self.before = _RowPlan("before", fields.get("before"), tz, ph)
        self.after = _RowPlan("after", fields.get("after"), tz, ph)


class _KeyPlan:
    __slots__ = ("dec", "order")

    def __init__(self, schema: Schema | None, tz: tzinfo) -> None:
        fields = (schema or {}).get("fields")
        self.order: tuple[str, ...] | None = tuple(f["field"] for f in fields) if fields else None
        self.dec: Decoder | None = build_struct(schema, tz) if fields and schema else None


P = TypeVar("P")


class _SchemaCache(Generic[P]):
    """Plans by schema text, and the parse that uses them.

    Kafka Connect's JsonConverter writes ``{"schema":<schema>,"payload":<payload>}``
    compactly, schema first. The bytes before ``,"payload":`` are then the schema's exact
    text and the cache key; on a hit only the payload is parsed. A prefix is admitted to the
    cache only after checking it parses to the very schema of the full parse, so a
    ``,"payload":`` occurring inside a schema can never split a record wrongly. Records
    written differently (spaces, other key order) take the full parse and a cache keyed by
    the re-serialised schema.
    """

    _HEAD = b'{"schema":'
    _SPLIT = b',"payload":'

    def __init__(self, build: Callable[[Schema | None], P], limit: int = 1024) -> None:
        self.build = build
        self.limit = limit
        self.by_prefix: dict[bytes, P] = {}
        self.by_text: dict[bytes, P] = {}

    def parse(self, raw: bytes) -> tuple[Any, P | None]:
        """(payload, plan); plan None when the record carries no schema."""
        i = -1
        if raw.startswith(self._HEAD):
            i = raw.find(self._SPLIT, 10)
            if i > 0:
                plan = self.by_prefix.get(raw[:i])
                if plan is not None:
                    j = raw.rfind(b"}")
                    try:
                        return orjson.loads(memoryview(raw)[i + 11 : j]), plan
                    except orjson.JSONDecodeError:
                        pass  # let the full parse report the error precisely
        doc = orjson.loads(raw)
        if type(doc) is not dict or len(doc) != 2 or "schema" not in doc or "payload" not in doc:
            return doc, None
        schema = doc["schema"]
        if schema is None:
            return doc["payload"], None
        if type(schema) is not dict:
            raise _Fail("schema", f"expected a Kafka Connect schema object, got {type(schema).__name__}")
        if i > 0 and self._prefix_is_schema(raw, i, schema):
            plan = self.by_prefix.get(raw[:i])
            if plan is None:
                plan = self._store(self.by_prefix, raw[:i], schema)
        else:
            text = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
            plan = self.by_text.get(text)
            if plan is None:
                plan = self._store(self.by_text, text, schema)
        return doc["payload"], plan

    @staticmethod
    def _prefix_is_schema(raw: bytes, i: int, schema: Schema) -> bool:
        try:
            return bool(orjson.loads(raw[10:i]) == schema)
        except orjson.JSONDecodeError:
            return False

    def _store(self, cache: dict[bytes, P], key: bytes, schema: Schema) -> P:
        try:
            plan = self.build(schema)
        except DECODE_ERRORS as e:
            raise _Fail(
                "schema",
                f"is not a usable Kafka Connect schema ({type(e).__name__}: {e})",
                "check the converter's schema output (schemas.enable=true, JsonConverter)",
            ) from e
        if len(cache) >= self.limit:
            cache.clear()  # schemas change rarely; a full cache means churn, start over
        cache[key] = plan
        return plan


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
        ph = _Placeholders(unavailable_value_placeholder)
        self._schemaless = _ValuePlan(None, self.tz, ph)
        self._values: _SchemaCache[_ValuePlan] = _SchemaCache(lambda s: _ValuePlan(s, self.tz, ph), cache_limit)
        self._keys: _SchemaCache[_KeyPlan] = _SchemaCache(lambda s: _KeyPlan(s, self.tz), cache_limit)

    def decode(self, key: bytes | None, value: bytes | None, *, topic: str, partition: int, offset: int) -> Decoded:
        try:
            return self._decode(key, value, topic, partition, offset)
        except _Fail as e:
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
                hint=_ENVELOPE_HINT,
            ) from e

    def _decode(self, key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int) -> Decoded:
        if value is None:
            return TOMBSTONE
        if topic.startswith(self.heartbeat_topic_prefix):
            return HEARTBEAT
        try:
            payload, plan = self._values.parse(value)
        except orjson.JSONDecodeError as e:
            raise _Fail(
                "value",
                f"is not valid JSON ({e})",
                "the decoder reads org.apache.kafka.connect.json.JsonConverter output; check value.converter",
            ) from None
        if payload is None:
            return TOMBSTONE  # {"schema": null, "payload": null}: a null value via schemas.enable
        if type(payload) is not dict:
            raise _Fail("payload", f"expected a JSON object, got {type(payload).__name__}", _ENVELOPE_HINT)
        plan = plan or self._schemaless
        kind = plan.kind or _kind_of(payload)
        if kind == "envelope":
            return self._envelope(key, payload, plan, topic, partition, offset)
        if kind == "heartbeat":
            return HEARTBEAT
        if kind == "schema_change":
            return SCHEMA_CHANGE
        if kind == "transaction":
            if payload.get("status") not in ("BEGIN", "END"):
                raise _Fail("status", f"expected BEGIN or END, got {payload.get('status')!r}")
            return Decoded(None, "transaction", payload)
        raise _Fail("op", "envelope field is missing; expected one of c, u, d, r, t, m", _ENVELOPE_HINT)

    def _envelope(
        self, key: bytes | None, payload: dict[str, Any], plan: _ValuePlan, topic: str, partition: int, offset: int
    ) -> Decoded:
        op_s = payload.get("op")
        op = _OPS.get(op_s) if type(op_s) is str else None
        if op is None:
            if op_s == "m":
                return MESSAGE
            if op_s is None:
                raise _Fail("op", "envelope field is missing; expected one of c, u, d, r, t, m", _ENVELOPE_HINT)
            raise _Fail("op", f"expected one of c, u, d, r, t, m, got {op_s!r}", _ENVELOPE_HINT)
        source = payload.get("source")
        if type(source) is not dict:
            raise _Fail("source", "envelope field is missing or not an object", _ENVELOPE_HINT)
        table = _table(source)
        commit_ts = _commit_ts(source)
        tx = payload.get("transaction")
        tx = tx if type(tx) is dict else None
        txid = _txid(source, tx)
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
            raise _Fail("after", f"is null in an op {op_s!r} event; expected the new row", _ENVELOPE_HINT)
        if before is None and after is None:
            raise _Fail("before", "is null in a delete event and there is no after either", _ENVELOPE_HINT)
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
            raise _Fail("key", f"is not valid JSON ({e})", "check key.converter (JsonConverter expected)") from None
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
                raise _fail_from("key", e) from e
            except DECODE_ERRORS as e:
                raise _Fail("key", f"expected a JSON object ({e})") from e
        return tuple([payload.get(name) for name in plan.order])


def _kind_of(payload: dict[str, Any]) -> str:
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


def _table(source: dict[str, Any]) -> str:
    # PostgreSQL and SQL Server name schema + table; MySQL/MariaDB have no schemas, the
    # database plays that part (postgresql/sqlserver/mysql.adoc, "source" field).
    connector = source.get("connector")
    table = source.get("table")
    if connector in ("mysql", "mariadb"):
        ns, ns_field = source.get("db"), "source.db"
    elif connector in ("postgresql", "sqlserver"):
        ns, ns_field = source.get("schema"), "source.schema"
    else:
        ns = source.get("schema") or source.get("db")
        ns_field = "source.schema"
    if not table or type(table) is not str:
        raise _Fail("source.table", f"expected the table name, got {table!r}", _ENVELOPE_HINT)
    if not ns or type(ns) is not str:
        raise _Fail(ns_field, f"expected the schema/database name, got {ns!r}", _ENVELOPE_HINT)
    return f"{ns}.{table}"


def _as_int(v: Any) -> int | None:
    if type(v) is int:
        return v
    if type(v) is str and v.isdigit():  # some examples carry numbers as strings
        return int(v)
    return None


def _commit_ts(source: dict[str, Any]) -> datetime | None:
    # source.ts_ms is when the change was made in the database; Debezium 2.6+ adds ts_us.
    # MySQL snapshot reads carry ts_ms 0 (mysql.adoc create-event example): unknown, not 1970.
    us = _as_int(source.get("ts_us"))
    if not us:
        ms = _as_int(source.get("ts_ms"))
        if not ms:
            return None
        us = ms * 1000
    try:
        return _EPOCH_UTC + timedelta(microseconds=us)
    except OverflowError:
        return None


def _txid(source: dict[str, Any], tx: dict[str, Any] | None) -> int | None:
    connector = source.get("connector")
    if connector == "sqlserver":
        # commit_lsn 'VLF:block:slot' in hex ("00000027:00000758:0005"): the three parts
        # concatenated are the LSN as one 80-bit number, shared by the whole transaction.
        lsn = source.get("commit_lsn")
        if type(lsn) is str:
            try:
                return int(lsn.replace(":", ""), 16)
            except ValueError:
                return None
        return None
    if connector in ("mysql", "mariadb"):
        # GTID 'server_uuid:N' (MySQL) or 'domain-server-N' (MariaDB): N numbers the
        # transaction on its server (the server part is dropped: Change.txid is an int).
        gtid = source.get("gtid")
        if type(gtid) is str and gtid:
            tail = gtid.rsplit(":", 1)[-1].rsplit("-", 1)[-1]
            if tail.isdigit():
                return int(tail)
        # Without GTIDs, source.pos is the position of each row event, not the transaction,
        # so it cannot group a transaction; the transaction block's id can
        # ("file=mysql-bin.000002,pos=1913", mysql.adoc "Transaction metadata").
        tx_id = tx.get("id") if tx else None
        if type(tx_id) is str:
            m = re.fullmatch(r"file=.*?\.(\d+),pos=(\d+)", tx_id)
            if m:
                return (int(m.group(1)) << 32) | int(m.group(2))
        return None
    return _as_int(source.get("txId"))  # PostgreSQL (and others naming it txId)


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
