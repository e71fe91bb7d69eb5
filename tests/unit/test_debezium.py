"""Debezium JSON-converter records → Decoded/Change.

Message shapes follow the examples in Debezium's connector documentation (postgresql.adoc,
mysql.adoc, sqlserver.adoc: create/update/delete/truncate/message events, transaction
metadata, schema change topic); the column schemas follow the "Data type mappings" tables.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal, localcontext
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.change import Op, Position
from replicator.sources.debezium import (
    UNAVAILABLE_VALUE_PLACEHOLDER,
    DebeziumDecodeError,
    DebeziumDecoder,
    Decoded,
    decode_record,
)

TOPIC = "PostgreSQL_server.public.customers"
PH = UNAVAILABLE_VALUE_PLACEHOLDER


# --- encoders (the inverse of the decoder, from Kafka Connect / Debezium docs) ----------------


def unscaled_b64(n: int) -> str:
    """BigInteger.toByteArray(): minimal big-endian two's complement, as Connect's Decimal."""
    length = (n if n >= 0 else ~n).bit_length() // 8 + 1
    return base64.b64encode(n.to_bytes(length, "big", signed=True)).decode()


def decimal_b64(d: Decimal, scale: int) -> str:
    with localcontext() as ctx:
        ctx.prec = 200
        return unscaled_b64(int(d.scaleb(scale)))


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


EPOCH = datetime(1970, 1, 1)


def epoch_us(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


# --- schema builders --------------------------------------------------------------------------


def col(name: str, type_: str, logical: str | None = None, optional: bool = True, **params: str) -> dict[str, Any]:
    f: dict[str, Any] = {"type": type_, "optional": optional, "field": name}
    if logical:
        f["name"] = logical
        f["version"] = 1
    if params:
        f["parameters"] = params
    return f


PG_SOURCE_FIELDS = [
    col("version", "string", optional=False),
    col("connector", "string", optional=False),
    col("name", "string", optional=False),
    col("ts_ms", "int64", optional=False),
    col("snapshot", "string", "io.debezium.data.Enum", allowed="true,last,false,incremental"),
    col("db", "string", optional=False),
    col("sequence", "string"),
    col("ts_us", "int64"),
    col("ts_ns", "int64"),
    col("schema", "string", optional=False),
    col("table", "string", optional=False),
    col("txId", "int64"),
    col("lsn", "int64"),
    col("xmin", "int64"),
]


def envelope_schema(
    columns: list[dict[str, Any]],
    name: str = "PostgreSQL_server.inventory.customers",
    source: str = "io.debezium.connector.postgresql.Source",
) -> dict[str, Any]:
    row = {"type": "struct", "fields": columns, "optional": True, "name": f"{name}.Value"}
    return {
        "type": "struct",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            {"type": "struct", "fields": PG_SOURCE_FIELDS, "optional": False, "name": source, "field": "source"},
            col("op", "string", optional=False),
            col("ts_ms", "int64"),
            {
                "type": "struct",
                "fields": [
                    col("id", "string", optional=False),
                    col("total_order", "int64", optional=False),
                    col("data_collection_order", "int64", optional=False),
                ],
                "optional": True,
                "name": "event.block",
                "version": 1,
                "field": "transaction",
            },
        ],
        "optional": False,
        "name": f"{name}.Envelope",
        "version": 1,
    }


def key_schema(columns: list[dict[str, Any]], name: str = "PostgreSQL_server.public.customers") -> dict[str, Any]:
    return {"type": "struct", "fields": columns, "optional": False, "name": f"{name}.Key"}


def with_schema(schema: dict[str, Any] | None, payload: Any) -> bytes:
    # JsonConverter (schemas.enable=true) writes compact JSON, schema first.
    return orjson.dumps({"schema": schema, "payload": payload})


def pg_source(**over: Any) -> dict[str, Any]:
    # postgresql.adoc, create event example.
    src = {
        "version": "2.7.0.Final",
        "connector": "postgresql",
        "name": "PostgreSQL_server",
        "ts_ms": 1559033904863,
        "ts_us": 1559033904863123,
        "ts_ns": 1559033904863123000,
        "snapshot": "false",
        "db": "postgres",
        "sequence": '["24023119","24023128"]',
        "schema": "public",
        "table": "customers",
        "txId": 555,
        "lsn": 24023128,
        "xmin": None,
    }
    src.update(over)
    return src


CUSTOMER_COLS = [
    col("id", "int32", optional=False),
    col("first_name", "string", optional=False),
    col("last_name", "string", optional=False),
    col("email", "string", optional=False),
]
ANNE = {"id": 1, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"}
KEY_1 = with_schema(key_schema([col("id", "int32", optional=False)]), {"id": 1})


def decode(value: bytes | None, key: bytes | None = KEY_1, topic: str = TOPIC, **kw: Any) -> Decoded:
    return decode_record(key, value, topic=topic, partition=3, offset=42, **kw)


def one_column(column: dict[str, Any], raw: Any, tz: str = "UTC") -> Any:
    """Decode a create event whose row is {id, <column>} and return the column's value."""
    schema = envelope_schema([col("id", "int32", optional=False), column])
    payload = {"before": None, "after": {"id": 1, column["field"]: raw}, "source": pg_source(), "op": "c"}
    d = decode(with_schema(schema, payload), timezone=tz)
    assert d.change is not None and d.change.after is not None
    return d.change.after[column["field"]]


# --- PostgreSQL envelopes ---------------------------------------------------------------------


def test_pg_create_with_schemas() -> None:
    payload = {"before": None, "after": dict(ANNE), "source": pg_source(snapshot="true"), "op": "c"}
    payload |= {"ts_ms": 1559033904863, "ts_us": 1559033904863841, "ts_ns": 1559033904863841257}
    d = decode(with_schema(envelope_schema(CUSTOMER_COLS), payload))
    assert d.kind == "change"
    c = d.change
    assert c is not None
    assert c.source == "debezium"
    assert c.table == "public.customers"
    assert c.op is Op.CREATE
    assert c.key == (1,)
    assert c.before is None
    assert c.after == ANNE
    assert c.position == Position(f"{TOPIC}/3", 42)
    # source.ts_us (the commit time, Debezium 2.6+) wins over ts_ms for precision.
    assert c.commit_ts == datetime(2019, 5, 28, 8, 58, 24, 863123, tzinfo=UTC)
    assert c.txid == 555
    assert c.unchanged == frozenset()


def test_pg_update_without_schemas() -> None:
    # schemas.enable=false: bare payloads for both key and value.
    payload = {
        "before": {"id": 1},
        "after": {**ANNE, "first_name": "Anne Marie"},
        "source": pg_source(txId=556, ts_us=None, ts_ns=None),
        "op": "u",
        "ts_ms": 1465584025523,
    }
    d = decode(orjson.dumps(payload), key=orjson.dumps({"id": 1}), source_name="erp")
    c = d.change
    assert c is not None
    assert (c.op, c.key, c.source, c.txid) == (Op.UPDATE, (1,), "erp", 556)
    assert c.before == {"id": 1}
    assert c.after is not None and c.after["first_name"] == "Anne Marie"
    assert c.commit_ts == datetime(2019, 5, 28, 8, 58, 24, 863000, tzinfo=UTC)  # from ts_ms


def test_pg_delete_row_is_before() -> None:
    payload = {"before": {"id": 1}, "after": None, "source": pg_source(txId=556), "op": "d"}
    c = decode(with_schema(envelope_schema(CUSTOMER_COLS), payload)).change
    assert c is not None
    assert c.op is Op.DELETE
    assert c.after is None
    assert c.row == {"id": 1}
    assert c.key == (1,)


def test_pg_snapshot_read() -> None:
    payload = {"before": None, "after": dict(ANNE), "source": pg_source(snapshot="last"), "op": "r"}
    c = decode(orjson.dumps(payload), key=orjson.dumps({"id": 1})).change
    assert c is not None and c.op is Op.READ and c.after == ANNE


def test_pg_truncate_has_no_key_or_images() -> None:
    # postgresql.adoc: "The message key is null in this case".
    payload = {"source": pg_source(txId=556), "op": "t", "ts_ms": 1559033904961}
    d = decode(with_schema(envelope_schema(CUSTOMER_COLS), payload), key=None)
    assert d.kind == "truncate"
    c = d.change
    assert c is not None
    assert (c.op, c.key, c.before, c.after, c.table, c.txid) == (Op.TRUNCATE, (), None, None, "public.customers", 556)


def test_pg_logical_message_is_ignored() -> None:
    # postgresql.adoc "message events" (pgoutput, PG 14+).
    payload = {
        "source": pg_source(schema="", table="", txId=556),
        "op": "m",
        "ts_ms": 1559033904961,
        "message": {"prefix": "foo", "content": "Ymfy"},
    }
    d = decode(orjson.dumps(payload), key=orjson.dumps({"prefix": "foo"}))
    assert d == Decoded(None, "message", None)


def test_transaction_block_of_the_envelope_is_kept() -> None:
    tx = {"id": "571", "total_order": 1, "data_collection_order": 1}
    payload = {"before": None, "after": dict(ANNE), "source": pg_source(txId=571), "op": "c", "transaction": tx}
    d = decode(with_schema(envelope_schema(CUSTOMER_COLS), payload))
    assert d.transaction == tx
    assert d.change is not None and d.change.txid == 571


@pytest.mark.parametrize("with_schemas", [True, False])
def test_unchanged_toast_placeholders_become_unchanged(with_schemas: bool) -> None:
    # postgresql.adoc "Toasted values": REPLICA IDENTITY DEFAULT update of a row with big
    # columns; text, bytea (base64 of the placeholder bytes), text[] and hstore-as-map shapes.
    cols = [
        col("id", "int32", optional=False),
        col("name", "string"),
        col("bio", "string"),
        col("photo", "bytes"),
        {"type": "array", "items": {"type": "string", "optional": True}, "optional": True, "field": "tags"},
        {
            "type": "map",
            "keys": {"type": "string", "optional": False},
            "values": {"type": "string", "optional": True},
            "optional": True,
            "field": "attrs",
        },
    ]
    after = {
        "id": 1,
        "name": "new name",
        "bio": PH,
        "photo": b64(PH.encode()),
        "tags": [PH],
        "attrs": {PH: PH},
    }
    payload = {"before": None, "after": after, "source": pg_source(), "op": "u"}
    raw = with_schema(envelope_schema(cols), payload) if with_schemas else orjson.dumps(payload)
    c = decode(raw).change
    assert c is not None
    assert c.unchanged == frozenset({"bio", "photo", "tags", "attrs"})
    assert c.after == {"id": 1, "name": "new name"}


def test_configured_placeholder() -> None:
    payload = {"before": None, "after": {"id": 1, "bio": "<toast>", "x": PH}, "source": pg_source(), "op": "u"}
    c = decode(orjson.dumps(payload), unavailable_value_placeholder="<toast>").change
    assert c is not None
    assert c.unchanged == frozenset({"bio"})
    assert c.after == {"id": 1, "x": PH}  # the default text is an ordinary value now


def test_placeholder_in_delete_before_is_unchanged_not_value() -> None:
    payload = {"before": {"id": 1, "bio": PH}, "after": None, "source": pg_source(), "op": "d"}
    c = decode(orjson.dumps(payload)).change
    assert c is not None
    assert c.before == {"id": 1}
    assert c.unchanged == frozenset({"bio"})


# --- PostgreSQL logical types -----------------------------------------------------------------

DEC = "org.apache.kafka.connect.data.Decimal"


@pytest.mark.parametrize(
    ("text", "scale"),
    [("12.34", 2), ("-0.01", 2), ("0.00", 2), ("99999999999999999999999999999999.123456", 6), ("-128", 0)],
)
def test_decimal_precise(text: str, scale: int) -> None:
    column = col("price", "bytes", DEC, scale=str(scale), **{"connect.decimal.precision": "38"})
    value = one_column(column, decimal_b64(Decimal(text), scale))
    assert value == Decimal(text)
    assert value.as_tuple().exponent == -scale  # NUMERIC(p, s) keeps its scale


def test_decimal_known_bytes() -> None:
    # 0x01E2 = 482 → 4.82 at scale 2; 0xFF = -1 → -0.01.
    assert one_column(col("p", "bytes", DEC, scale="2"), "AeI=") == Decimal("4.82")
    assert one_column(col("p", "bytes", DEC, scale="2"), "/w==") == Decimal("-0.01")


def test_decimal_numeric_json_format() -> None:
    # JsonConverter decimal.format=NUMERIC writes the number itself.
    assert one_column(col("p", "bytes", DEC, scale="2"), 12.34) == Decimal("12.34")
    assert one_column(col("p", "bytes", DEC, scale="0"), 7) == Decimal(7)


def test_decimal_handling_mode_string_and_double() -> None:
    # string mode: plain STRING. Recognisable only with column.propagate.source.type.
    typed = col("p", "string", **{"__debezium.source.column.type": "NUMERIC"})
    assert one_column(typed, "12345678901234567890.123456789") == Decimal("12345678901234567890.123456789")
    assert one_column(typed, "NAN").is_nan()
    assert one_column(col("p", "string"), "12.30") == "12.30"  # indistinguishable from text
    # double mode: FLOAT64.
    assert one_column(col("p", "double"), 12.34) == 12.34


def test_variable_scale_decimal() -> None:
    column = {
        "type": "struct",
        "fields": [col("scale", "int32", optional=False), col("value", "bytes", optional=False)],
        "optional": True,
        "name": "io.debezium.data.VariableScaleDecimal",
        "version": 1,
        "doc": "Variable scaled decimal",
        "field": "amount",
    }
    assert one_column(column, {"scale": 3, "value": unscaled_b64(-123456)}) == Decimal("-123.456")
    assert one_column(column, {"scale": 0, "value": unscaled_b64(10**30)}) == Decimal(10**30)


PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    ("logical", "type_", "raw", "expected"),
    [
        ("io.debezium.time.Date", "int32", 19782, date(2024, 2, 29)),
        ("org.apache.kafka.connect.data.Date", "int32", -1, date(1969, 12, 31)),
        ("io.debezium.time.Time", "int32", 3_723_004, time(1, 2, 3, 4000)),
        ("org.apache.kafka.connect.data.Time", "int32", 3_723_004, time(1, 2, 3, 4000)),
        ("io.debezium.time.MicroTime", "int64", 3_723_000_005, time(1, 2, 3, 5)),
        ("io.debezium.time.NanoTime", "int64", 3_723_000_005_999, time(1, 2, 3, 5)),
        # postgresql.adoc "TIMESTAMP type": '2018-06-20 15:13:16.945104' → 1529507596945104.
        ("io.debezium.time.MicroTimestamp", "int64", 1529507596945104, datetime(2018, 6, 20, 15, 13, 16, 945104)),
        ("io.debezium.time.Timestamp", "int64", 1529507596945, datetime(2018, 6, 20, 15, 13, 16, 945000)),
        ("org.apache.kafka.connect.data.Timestamp", "int64", 1529507596945, datetime(2018, 6, 20, 15, 13, 16, 945000)),
        ("io.debezium.time.NanoTimestamp", "int64", 1529507596945104999, datetime(2018, 6, 20, 15, 13, 16, 945104)),
    ],
)
def test_temporal(logical: str, type_: str, raw: int, expected: Any) -> None:
    value = one_column(col("v", type_, logical), raw, tz="Europe/Paris")
    if isinstance(expected, datetime):
        # Wall time without zone, labelled with the configured zone (not shifted).
        assert value.tzinfo is PARIS
        assert value.replace(tzinfo=None) == expected
    else:
        assert value == expected
        assert type(value) is type(expected)


def test_zoned_types() -> None:
    zts = one_column(col("v", "string", "io.debezium.time.ZonedTimestamp"), "2018-06-20T13:37:03.123456Z")
    assert zts == datetime(2018, 6, 20, 13, 37, 3, 123456, tzinfo=UTC)
    assert zts.utcoffset() == timedelta(0)
    off = one_column(col("v", "string", "io.debezium.time.ZonedTimestamp"), "2011-12-03T10:15:30.030431+01:00")
    assert off == datetime(2011, 12, 3, 9, 15, 30, 30431, tzinfo=UTC)
    zt = one_column(col("v", "string", "io.debezium.time.ZonedTime"), "10:15:30+01:00")
    assert zt == time(10, 15, 30, tzinfo=timezone(timedelta(hours=1)))


def test_unrepresentable_temporal_values_come_back_raw() -> None:
    # postgresql.adoc: +infinity → 9223372036825200000, -infinity → -9223372036832400000.
    assert one_column(col("v", "int64", "io.debezium.time.MicroTimestamp"), 9223372036825200000) == 9223372036825200000
    assert one_column(col("v", "int64", "io.debezium.time.Timestamp"), -9223372036832400000) == -9223372036832400000
    assert one_column(col("v", "string", "io.debezium.time.ZonedTimestamp"), "infinity") == "infinity"
    assert one_column(col("v", "int32", "io.debezium.time.Date"), 10**9) == 10**9


def test_intervals() -> None:
    assert one_column(col("v", "int64", "io.debezium.time.MicroDuration"), 90_000_000) == timedelta(seconds=90)
    interval = col("v", "string", "io.debezium.time.Interval")
    assert one_column(interval, "P0Y0M3DT4H5M6.78S") == timedelta(days=3, hours=4, minutes=5, seconds=6.78)
    assert one_column(interval, "P1Y2M3DT4H5M6.78S") == "P1Y2M3DT4H5M6.78S"  # months have no fixed length


def test_json_uuid_enum_bits_bytes() -> None:
    doc = one_column(col("v", "string", "io.debezium.data.Json"), '{"a": [1, 2.5, null], "b": "x"}')
    assert doc == {"a": [1, 2.5, None], "b": "x"}
    u = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert one_column(col("v", "string", "io.debezium.data.Uuid"), u) == uuid.UUID(u)
    mood = col("v", "string", "io.debezium.data.Enum", allowed="sad,ok,happy")
    assert one_column(mood, "happy") == "happy"
    # BIT(10) = b'1000000001' → little-endian bytes 0x01 0x02 (postgresql.adoc basic types).
    assert one_column(col("v", "bytes", "io.debezium.data.Bits", length="10"), b64(b"\x01\x02")) == b"\x01\x02"
    assert one_column(col("v", "bytes"), b64(b"\x00\xffbin")) == b"\x00\xffbin"  # bytea, binary.handling.mode=bytes
    assert one_column(col("v", "string"), "AAE=") == "AAE="  # binary.handling.mode=base64: schema says string


def test_arrays_decode_each_element() -> None:
    dates = {
        "type": "array",
        "items": {"type": "int32", "optional": True, "name": "io.debezium.time.Date", "version": 1},
        "optional": True,
        "field": "v",
    }
    assert one_column(dates, [0, None, 19782]) == [date(1970, 1, 1), None, date(2024, 2, 29)]
    ints = {"type": "array", "items": {"type": "int32", "optional": True}, "optional": True, "field": "v"}
    assert one_column(ints, [1, 2, 3]) == [1, 2, 3]
    nums = {
        "type": "array",
        "items": {"type": "bytes", "optional": True, "name": DEC, "parameters": {"scale": "1"}},
        "optional": True,
        "field": "v",
    }
    assert one_column(nums, [unscaled_b64(15), unscaled_b64(-5)]) == [Decimal("1.5"), Decimal("-0.5")]


def test_maps_and_nested_structs() -> None:
    m = {
        "type": "map",
        "keys": {"type": "string", "optional": False},
        "values": {"type": "int32", "optional": True, "name": "io.debezium.time.Date", "version": 1},
        "optional": True,
        "field": "v",
    }
    assert one_column(m, {"a": 0, "b": None}) == {"a": date(1970, 1, 1), "b": None}
    # Non-string keys: JsonConverter writes [[key, value], ...].
    pairs = {**m, "keys": {"type": "int32", "optional": False}}
    assert one_column(pairs, [[1, 0], [2, 1]]) == {1: date(1970, 1, 1), 2: date(1970, 1, 2)}
    nested = {
        "type": "struct",
        "fields": [col("when", "int32", "io.debezium.time.Date"), col("note", "string")],
        "optional": True,
        "name": "acme.Audit",
        "field": "v",
    }
    assert one_column(nested, {"when": 1, "note": "x"}) == {"when": date(1970, 1, 2), "note": "x"}


def test_unknown_logical_types_and_geometry_pass_through() -> None:
    assert one_column(col("v", "int64", "io.debezium.time.SomethingNew"), 5) == 5
    assert one_column(col("v", "string", "io.debezium.data.Ltree"), "Top.Science") == "Top.Science"
    point = {
        "type": "struct",
        "fields": [col("x", "double"), col("y", "double"), col("wkb", "bytes"), col("srid", "int32")],
        "optional": True,
        "name": "io.debezium.data.geometry.Point",
        "version": 1,
        "field": "v",
    }
    raw = {"x": 1.5, "y": 2.0, "wkb": "AQEAAAAAAAAAAAD4PwAAAAAAAABA", "srid": None}
    assert one_column(point, raw) == raw  # wkb stays base64: geometry is passed through
    custom = {**point, "name": "io.debezium.data.FutureStruct"}
    assert one_column(custom, raw) == raw


def test_schemaless_values_pass_through() -> None:
    # Without schemas a Decimal is just its base64 text and a date its day number.
    payload = {"before": None, "after": {"id": 1, "price": "AeI=", "d": 19782}, "source": pg_source(), "op": "c"}
    c = decode(orjson.dumps(payload), key=orjson.dumps({"id": 1})).change
    assert c is not None and c.after == {"id": 1, "price": "AeI=", "d": 19782}


def test_key_follows_key_schema_order_and_logical_types() -> None:
    key_cols = [col("day", "int32", "io.debezium.time.Date", optional=False), col("code", "string", optional=False)]
    key = with_schema(key_schema(key_cols), {"code": "X", "day": 19782})
    payload = {"before": None, "after": {"day": 19782, "code": "X"}, "source": pg_source(), "op": "c"}
    cols = [col("day", "int32", "io.debezium.time.Date", optional=False), col("code", "string", optional=False)]
    c = decode(with_schema(envelope_schema(cols), payload), key=key).change
    assert c is not None
    assert c.key == (date(2024, 2, 29), "X")


# --- MySQL / MariaDB --------------------------------------------------------------------------


def mysql_source(**over: Any) -> dict[str, Any]:
    # mysql.adoc create event example.
    src = {
        "version": "2.7.0.Final",
        "connector": "mysql",
        "name": "mysql-server-1",
        "ts_ms": 1465491411815,
        "snapshot": "false",
        "db": "inventory",
        "table": "customers",
        "server_id": 223344,
        "gtid": None,
        "file": "mysql-bin.000003",
        "pos": 484,
        "row": 0,
        "thread": 7,
        "query": "UPDATE customers SET first_name='Anne Marie' WHERE id=1004",
    }
    src.update(over)
    return src


MYSQL_COLS = [
    col("id", "int32", optional=False),
    col("born", "int32", "io.debezium.time.Year"),
    col("size", "string", "io.debezium.data.Enum", allowed="S,M,L"),
    col("flags", "string", "io.debezium.data.EnumSet", allowed="a,b,c"),
    col("created", "int64", "io.debezium.time.Timestamp"),  # DATETIME(0-3)
    col("changed", "string", "io.debezium.time.ZonedTimestamp"),  # TIMESTAMP
    col("dur", "int64", "io.debezium.time.MicroTime"),  # TIME
    col("price", "bytes", DEC, scale="2", **{"connect.decimal.precision": "10"}),
]


def test_mysql_update() -> None:
    after = {
        "id": 1004,
        "born": 1987,
        "size": "M",
        "flags": "a,c",
        "created": 1529476623000,  # mysql.adoc: DATETIME '2018-06-20 06:37:03' → 1529476623000
        "changed": "2018-06-20T13:37:03Z",
        "dur": -3_600_000_000,  # MySQL TIME '-01:00:00' is a duration
        "price": "AeI=",
    }
    payload = {"before": {**after, "flags": ""}, "after": after, "source": mysql_source(), "op": "u"}
    key = with_schema(
        key_schema([col("id", "int32", optional=False)], "mysql-server-1.inventory.customers"), {"id": 1004}
    )
    d = decode(
        with_schema(
            envelope_schema(MYSQL_COLS, "mysql-server-1.inventory.customers", "io.debezium.connector.mysql.Source"),
            payload,
        ),
        key=key,
        topic="mysql-server-1.inventory.customers",
        timezone="America/New_York",
    )
    c = d.change
    assert c is not None
    assert c.table == "inventory.customers"
    assert c.key == (1004,)
    assert c.txid is None  # no GTID and no transaction block: source.pos is per row event
    assert c.commit_ts == datetime(2016, 6, 9, 16, 56, 51, 815000, tzinfo=UTC)
    a = c.after
    assert a is not None
    assert a["born"] == 1987
    assert a["size"] == "M"
    assert a["flags"] == ["a", "c"]
    assert c.before is not None and c.before["flags"] == []
    assert a["created"] == datetime(2018, 6, 20, 6, 37, 3, tzinfo=ZoneInfo("America/New_York"))
    assert a["changed"] == datetime(2018, 6, 20, 13, 37, 3, tzinfo=UTC)
    assert a["dur"] == timedelta(hours=-1)
    assert a["price"] == Decimal("4.82")


def test_mysql_txid_from_gtid_or_transaction_block() -> None:
    base = {"before": None, "after": {"id": 1}, "op": "c"}
    gtid = decode(orjson.dumps({**base, "source": mysql_source(gtid="0e4d5dcd-a33b-11ea-80f1-02010a22a99e:10")}))
    assert gtid.change is not None and gtid.change.txid == 10
    maria = decode(orjson.dumps({**base, "source": mysql_source(connector="mariadb", gtid="0-1-42")}))
    assert maria.change is not None and maria.change.txid == 42
    # mysql.adoc: without GTIDs the transaction id is "file=mysql-bin.000002,pos=1913".
    tx = {"id": "file=mysql-bin.000002,pos=1913", "total_order": 1, "data_collection_order": 1}
    filepos = decode(orjson.dumps({**base, "source": mysql_source(), "transaction": tx}))
    assert filepos.change is not None and filepos.change.txid == (2 << 32) | 1913


def test_mysql_snapshot_ts_zero_is_unknown() -> None:
    payload = {"before": None, "after": {"id": 1}, "source": mysql_source(ts_ms=0, snapshot="true"), "op": "r"}
    c = decode(orjson.dumps(payload)).change
    assert c is not None and c.commit_ts is None and c.op is Op.READ


# --- SQL Server -------------------------------------------------------------------------------


def sqlserver_source(**over: Any) -> dict[str, Any]:
    # sqlserver.adoc create event example.
    src = {
        "version": "2.7.0.Final",
        "connector": "sqlserver",
        "name": "server1",
        "ts_ms": 1559729468470,
        "snapshot": "false",
        "db": "testDB",
        "schema": "dbo",
        "table": "customers",
        "change_lsn": "00000027:00000758:0003",
        "commit_lsn": "00000027:00000758:0005",
        "event_serial_no": "1",
    }
    src.update(over)
    return src


def test_sqlserver_temporal_types() -> None:
    cols = [
        col("id", "int32", optional=False),
        col("d", "int32", "io.debezium.time.Date"),  # date
        col("t3", "int32", "io.debezium.time.Time"),  # time(0-3)
        col("t6", "int64", "io.debezium.time.MicroTime"),  # time(4-6)
        col("t7", "int64", "io.debezium.time.NanoTime"),  # time(7)
        col("dt", "int64", "io.debezium.time.Timestamp"),  # datetime, smalldatetime, datetime2(0-3)
        col("dt6", "int64", "io.debezium.time.MicroTimestamp"),  # datetime2(4-6)
        col("dt7", "int64", "io.debezium.time.NanoTimestamp"),  # datetime2(7)
        col("dto", "string", "io.debezium.time.ZonedTimestamp"),  # datetimeoffset
        col("money", "bytes", DEC, scale="4", **{"connect.decimal.precision": "19"}),
    ]
    wall = datetime(2019, 6, 5, 10, 11, 8, 470123)
    after = {
        "id": 1,
        "d": 18052,
        "t3": 36_668_470,
        "t6": 36_668_470_123,
        "t7": 36_668_470_123_400,
        "dt": epoch_us(wall) // 1000,
        "dt6": epoch_us(wall),
        "dt7": epoch_us(wall) * 1000 + 400,
        "dto": "2019-06-05T10:11:08.4701234+02:00",
        "money": unscaled_b64(-12345678),
    }
    payload = {"before": None, "after": after, "source": sqlserver_source(), "op": "c"}
    d = decode(
        with_schema(
            envelope_schema(cols, "server1.testDB.dbo.customers", "io.debezium.connector.sqlserver.Source"), payload
        ),
        key=orjson.dumps({"id": 1}),
        topic="server1.testDB.dbo.customers",
    )
    c = d.change
    assert c is not None and c.after is not None
    assert c.table == "dbo.customers"
    assert c.txid == 0x00000027_00000758_0005
    a = c.after
    assert a["d"] == date(2019, 6, 5)
    assert a["t3"] == time(10, 11, 8, 470000)
    assert a["t6"] == time(10, 11, 8, 470123)
    assert a["t7"] == time(10, 11, 8, 470123)
    assert a["dt"] == datetime(2019, 6, 5, 10, 11, 8, 470000, tzinfo=UTC)
    assert a["dt6"] == wall.replace(tzinfo=UTC)
    assert a["dt7"] == wall.replace(tzinfo=UTC)
    assert a["dto"] == datetime(2019, 6, 5, 8, 11, 8, 470123, tzinfo=UTC)
    assert a["money"] == Decimal("-1234.5678")


def test_sqlserver_commit_lsn_orders_transactions() -> None:
    base = {"before": None, "after": {"id": 1}, "op": "c"}
    first = decode(orjson.dumps({**base, "source": sqlserver_source(commit_lsn="00000027:00000758:0005")}))
    later = decode(orjson.dumps({**base, "source": sqlserver_source(commit_lsn="00000028:00000001:0001")}))
    assert first.change is not None and later.change is not None
    assert first.change.txid is not None and later.change.txid is not None
    assert first.change.txid < later.change.txid


# --- other record kinds -----------------------------------------------------------------------


def test_tombstone() -> None:
    assert decode(None) == Decoded(None, "tombstone", None)
    assert decode(with_schema(None, None)).kind == "tombstone"


def test_heartbeats() -> None:
    hb_schema = {
        "type": "struct",
        "fields": [col("ts_ms", "int64", optional=False)],
        "optional": False,
        "name": "io.debezium.connector.common.Heartbeat",
    }
    value = with_schema(hb_schema, {"ts_ms": 1588252618953})
    key = with_schema(
        {
            "type": "struct",
            "fields": [col("serverName", "string", optional=False)],
            "name": "io.debezium.connector.common.ServerNameKey",
        },
        {"serverName": "PostgreSQL_server"},
    )
    assert decode(value, key=key, topic="__debezium-heartbeat.PostgreSQL_server").kind == "heartbeat"
    assert decode(value, key=key, topic="renamed-heartbeats").kind == "heartbeat"  # by schema name
    assert decode(orjson.dumps({"ts_ms": 1588252618953}), key=None, topic="renamed-heartbeats").kind == "heartbeat"


def test_schema_change_events() -> None:
    # mysql.adoc "Schema change topic".
    payload = {
        "source": mysql_source(table=None),
        "ts_ms": 1588252618953,
        "databaseName": "inventory",
        "schemaName": None,
        "ddl": "ALTER TABLE customers ADD COLUMN middle_name VARCHAR(2000)",
        "tableChanges": [{"type": "ALTER", "id": '"inventory"."customers"', "table": {}}],
    }
    schema = {
        "type": "struct",
        "fields": [],
        "optional": False,
        "name": "io.debezium.connector.mysql.SchemaChangeValue",
    }
    key = orjson.dumps({"databaseName": "inventory"})
    assert decode(with_schema(schema, payload), key=key, topic="mysql-server-1").kind == "schema_change"
    assert decode(orjson.dumps(payload), key=key, topic="mysql-server-1") == Decoded(None, "schema_change", None)


def test_transaction_topic_records() -> None:
    begin = {"status": "BEGIN", "id": "571", "ts_ms": 1486500577125, "event_count": None, "data_collections": None}
    end = {
        "status": "END",
        "id": "571",
        "ts_ms": 1486500577691,
        "event_count": 2,
        "data_collections": [
            {"data_collection": "s1.a", "event_count": 1},
            {"data_collection": "s2.a", "event_count": 1},
        ],
    }
    d = decode(orjson.dumps(begin), key=orjson.dumps({"id": "571"}), topic="PostgreSQL_server.transaction")
    assert d == Decoded(None, "transaction", begin)
    schema = {
        "type": "struct",
        "fields": [],
        "optional": False,
        "name": "io.debezium.connector.common.TransactionMetadataValue",
    }
    d = decode(with_schema(schema, end), key=None, topic="PostgreSQL_server.transaction")
    assert d.kind == "transaction"
    assert d.transaction is not None and d.transaction["event_count"] == 2


# --- errors -----------------------------------------------------------------------------------


def test_malformed_json_names_the_record() -> None:
    with pytest.raises(DebeziumDecodeError) as ei:
        decode(b'{"schema": {"type": "struct"', key=None)
    e = ei.value
    assert (e.topic, e.partition, e.offset, e.field) == (TOPIC, 3, 42, "value")
    assert f"{TOPIC}/3@42" in str(e)
    assert "JsonConverter" in str(e)


def test_missing_op() -> None:
    # What ExtractNewRecordState output looks like: the bare row.
    with pytest.raises(DebeziumDecodeError) as ei:
        decode(orjson.dumps(ANNE))
    assert ei.value.field == "op"
    assert "ExtractNewRecordState" in str(ei.value)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"before": None, "after": {"id": 1}, "op": "c"}, "source"),
        ({"before": None, "after": None, "source": pg_source(), "op": "c"}, "after"),
        ({"before": None, "after": {"id": 1}, "source": pg_source(), "op": "x"}, "op"),
        ({"before": None, "after": {"id": 1}, "source": pg_source(table=None), "op": "c"}, "source.table"),
        ({"before": None, "after": [1], "source": pg_source(), "op": "c"}, "after"),
    ],
)
def test_bad_envelopes(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(DebeziumDecodeError) as ei:
        decode(orjson.dumps(payload))
    assert ei.value.field == field


def test_bad_base64_names_field_and_logical_type() -> None:
    column = col("price", "bytes", DEC, scale="2")
    with pytest.raises(DebeziumDecodeError) as ei:
        one_column(column, "not base64!")
    e = ei.value
    assert e.field == "after.price"
    assert e.logical_type == DEC
    assert "decimal.handling.mode" in str(e)
    assert "'not base64!'" in str(e)


@pytest.mark.parametrize(
    ("column", "raw", "field"),
    [
        (col("v", "int32", "io.debezium.time.Date"), "2024-01-01", "after.v"),
        (col("v", "string", "io.debezium.data.Json"), "{nope", "after.v"),
        (col("v", "string", "io.debezium.data.Uuid"), "xyz", "after.v"),
        (col("v", "string", "io.debezium.time.ZonedTimestamp"), "2024-13-45T00:00:00Z", "after.v"),
        (col("v", "bytes"), "%%%", "after.v"),
        (
            {
                "type": "array",
                "items": {"type": "int32", "name": "io.debezium.time.Date"},
                "optional": True,
                "field": "v",
            },
            [1, "x"],
            "after.v[1]",
        ),
        (
            {"type": "struct", "fields": [col("w", "bytes", DEC, scale="1")], "name": "acme.S", "field": "v"},
            {"w": "!!"},
            "after.v.w",
        ),
    ],
)
def test_undecodable_values_name_the_field(column: dict[str, Any], raw: Any, field: str) -> None:
    with pytest.raises(DebeziumDecodeError) as ei:
        one_column(column, raw)
    assert ei.value.field == field
    assert ei.value.offset == 42


def test_unusable_schema_and_odd_shapes_are_decode_errors() -> None:
    schema = envelope_schema([col("id", "int32", optional=False), col("p", "bytes", DEC, scale="two")])
    payload = {"before": None, "after": {"id": 1, "p": "AQ=="}, "source": pg_source(), "op": "c"}
    with pytest.raises(DebeziumDecodeError) as ei:
        decode(with_schema(schema, payload))
    assert ei.value.field == "schema"
    assert "scale" in str(ei.value)
    with pytest.raises(DebeziumDecodeError) as ei:
        decode(orjson.dumps({**payload, "op": ["c"]}))
    assert ei.value.field == "op"


def test_bad_key_value() -> None:
    key = with_schema(key_schema([col("day", "int32", "io.debezium.time.Date", optional=False)]), {"day": "monday"})
    payload = {"before": None, "after": {"day": 1}, "source": pg_source(), "op": "c"}
    with pytest.raises(DebeziumDecodeError) as ei:
        decode(orjson.dumps(payload), key=key)
    assert ei.value.field == "key.day"
    with pytest.raises(DebeziumDecodeError) as ei:
        decode(orjson.dumps(payload), key=b"{oops")
    assert ei.value.field == "key"


# --- schema cache -----------------------------------------------------------------------------


def test_schema_cache_reuses_plans_and_stays_correct() -> None:
    dec = DebeziumDecoder(timezone="UTC")
    schema = envelope_schema([col("id", "int32", optional=False), col("d", "int32", "io.debezium.time.Date")])
    for day in (0, 1, 19782):
        payload = {"before": None, "after": {"id": 1, "d": day}, "source": pg_source(), "op": "c"}
        c = dec.decode(None, with_schema(schema, payload), topic=TOPIC, partition=0, offset=day).change
        assert c is not None and c.after == {"id": 1, "d": date(1970, 1, 1) + timedelta(days=day)}
    assert len(dec._values.by_prefix) == 1


def test_schema_cache_is_not_fooled_by_payload_text_inside_a_schema() -> None:
    # A schema containing the separator text: the prefix check refuses it as a cache key and
    # the record still decodes right, twice.
    dec = DebeziumDecoder()
    tricky = col("d", "int32", "io.debezium.time.Date")
    tricky["doc"] = 'x,"payload":{"y"'  # inside a JSON string the quote is escaped...
    tricky["parameters"] = {"a": "1", "payload": "2"}  # ...but a parameter key is not
    schema = envelope_schema([col("id", "int32", optional=False), tricky])
    payload = {"before": None, "after": {"id": 1, "d": 2}, "source": pg_source(), "op": "c"}
    for _ in range(2):
        c = dec.decode(None, with_schema(schema, payload), topic=TOPIC, partition=0, offset=1).change
        assert c is not None and c.after == {"id": 1, "d": date(1970, 1, 3)}
    assert dec._values.by_prefix == {}
    assert len(dec._values.by_text) == 1


def test_pretty_printed_records_decode() -> None:
    schema = envelope_schema([col("id", "int32", optional=False), col("d", "int32", "io.debezium.time.Date")])
    payload = {"before": None, "after": {"id": 1, "d": 2}, "source": pg_source(), "op": "c"}
    raw = orjson.dumps({"payload": payload, "schema": schema}, option=orjson.OPT_INDENT_2)
    c = decode(raw).change
    assert c is not None and c.after == {"id": 1, "d": date(1970, 1, 3)}


# --- properties -------------------------------------------------------------------------------


@st.composite
def scaled_decimals(draw: st.DrawFn) -> tuple[Decimal, int]:
    scale = draw(st.integers(0, 30))
    digits = draw(st.integers(1, 60))
    unscaled = draw(st.integers(-(10**digits) + 1, 10**digits - 1))
    with localcontext() as ctx:
        ctx.prec = 200
        return Decimal(unscaled).scaleb(-scale), scale


@given(scaled_decimals())
def test_decimal_round_trip(case: tuple[Decimal, int]) -> None:
    d, scale = case
    value = one_column(col("v", "bytes", DEC, scale=str(scale)), decimal_b64(d, scale))
    assert value == d
    assert value.as_tuple().exponent == -scale


@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)), st.integers(0, 999)
)
def test_micro_and_nano_timestamps_round_trip(dt: datetime, extra_ns: int) -> None:
    us = epoch_us(dt)
    micro = one_column(col("v", "int64", "io.debezium.time.MicroTimestamp"), us, tz="Asia/Kolkata")
    values = [micro]
    ns = us * 1000 + extra_ns
    if -(2**63) <= ns < 2**63:  # INT64 nanoseconds only span 1677..2262
        values.append(one_column(col("v", "int64", "io.debezium.time.NanoTimestamp"), ns, tz="Asia/Kolkata"))
    for value in values:
        assert value.tzinfo == ZoneInfo("Asia/Kolkata")
        assert value.replace(tzinfo=None) == dt


@given(
    st.integers(
        date(1, 1, 1).toordinal() - date(1970, 1, 1).toordinal(),
        date(9999, 12, 31).toordinal() - date(1970, 1, 1).toordinal(),
    )
)
def test_days_round_trip(days: int) -> None:
    assert one_column(col("v", "int32", "io.debezium.time.Date"), days) == date(1970, 1, 1) + timedelta(days=days)


@given(st.integers(0, 86_399_999_999))
def test_micro_time_round_trip(us: int) -> None:
    t = one_column(col("v", "int64", "io.debezium.time.MicroTime"), us)
    assert (t.hour * 3600 + t.minute * 60 + t.second) * 1_000_000 + t.microsecond == us
