"""Kafka Connect schemas (as the JSON converter writes them) → value decoders.

A decoder is built once per schema (``build_decoder``) and then called per value, so the
per-value cost is a dict lookup and one call. ``None`` stands for "pass the value through":
struct decoders skip those fields entirely, which keeps plain text/int columns free.
This module maps logical names to their decoders (``decimals``, ``temporal``, ``values``)
and builds the struct, array and map decoders around them.

The logical types and their encodings follow the Debezium connector documentation
(``documentation/modules/ROOT/pages/connectors/{postgresql,mysql,sqlserver}.adoc``, sections
"Data type mappings") and the schema classes in ``debezium-core/.../io/debezium/time``.

Two kinds of trouble are told apart on purpose:

* a value of the wrong shape (a string where days-since-epoch are due, bad base64, a
  ZonedTimestamp that is not ISO-8601) raises ``LogicalValueError``: the record cannot be
  trusted and the caller dead-letters it;
* a well-formed value Python cannot represent (PostgreSQL ``infinity`` timestamps, which
  Debezium sends as 9223372036825200000, years past 9999) comes back raw, as
  ``pgtypes`` does for the slot source, rather than failing a legitimate row.

Unknown logical names are passed through untouched; so is any primitive carrying a name
we do not know, because the name is what gives it meaning.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo
from typing import Any, TypeAlias

from replicator.sources.debezium.decimals import decimal_factory, decode_decimal_string, decode_variable_scale_decimal
from replicator.sources.debezium.primitives import (
    DECODE_ERRORS,
    Decoder,
    LogicalValueError,
    Schema,
    b64_bytes,
)
from replicator.sources.debezium.temporal import (
    decode_date,
    decode_interval,
    decode_micro_duration,
    decode_micro_time,
    decode_nano_duration,
    decode_nano_time,
    decode_time_ms,
    decode_year,
    decode_zoned_time,
    decode_zoned_timestamp,
    local_timestamp_factory,
)
from replicator.sources.debezium.values import decode_bits, decode_enum, decode_enum_set, decode_json, decode_uuid


def _identity(v: Any) -> Any:
    return v


# name → (factory(schema, tz) → decoder, what a valid value looks like, how to fix a bad one)
Factory: TypeAlias = Callable[[Schema, tzinfo], Decoder | None]


def _plain(fn: Decoder) -> Factory:
    return lambda schema, tz: fn


_TIME_HINT = "check time.precision.mode and that no SMT/converter rewrote temporal fields"
_DEC_HINT = (
    "check the connector's decimal.handling.mode (precise/string/double) and the converter's "
    "decimal.format; precise needs base64 two's-complement bytes"
)

LOGICAL_TYPES: dict[str, tuple[Factory, str, str]] = {
    "org.apache.kafka.connect.data.Decimal": (
        decimal_factory,
        "base64 big-endian two's-complement unscaled bytes (or a JSON number under decimal.format=NUMERIC)",
        _DEC_HINT,
    ),
    "io.debezium.data.VariableScaleDecimal": (
        _plain(decode_variable_scale_decimal),
        "an object {scale: int, value: base64 unscaled bytes}",
        _DEC_HINT,
    ),
    "io.debezium.time.Date": (_plain(decode_date), "integer days since 1970-01-01", _TIME_HINT),
    "org.apache.kafka.connect.data.Date": (_plain(decode_date), "integer days since 1970-01-01", _TIME_HINT),
    "io.debezium.time.Time": (_plain(decode_time_ms), "integer milliseconds past midnight", _TIME_HINT),
    "org.apache.kafka.connect.data.Time": (_plain(decode_time_ms), "integer milliseconds past midnight", _TIME_HINT),
    "io.debezium.time.MicroTime": (_plain(decode_micro_time), "integer microseconds past midnight", _TIME_HINT),
    "io.debezium.time.NanoTime": (_plain(decode_nano_time), "integer nanoseconds past midnight", _TIME_HINT),
    "io.debezium.time.Timestamp": (
        local_timestamp_factory(1, 1000),
        "integer milliseconds since the epoch",
        _TIME_HINT,
    ),
    "org.apache.kafka.connect.data.Timestamp": (
        local_timestamp_factory(1, 1000),
        "integer milliseconds since the epoch",
        _TIME_HINT,
    ),
    "io.debezium.time.MicroTimestamp": (
        local_timestamp_factory(1, 1),
        "integer microseconds since the epoch",
        _TIME_HINT,
    ),
    "io.debezium.time.NanoTimestamp": (
        local_timestamp_factory(1000, 1),
        "integer nanoseconds since the epoch",
        _TIME_HINT,
    ),
    "io.debezium.time.ZonedTimestamp": (
        _plain(decode_zoned_timestamp),
        "an ISO-8601 date-time with offset",
        _TIME_HINT,
    ),
    "io.debezium.time.ZonedTime": (_plain(decode_zoned_time), "an ISO-8601 time with offset", _TIME_HINT),
    "io.debezium.time.Year": (_plain(decode_year), "an integer year", _TIME_HINT),
    "io.debezium.time.MicroDuration": (
        _plain(decode_micro_duration),
        "a number of microseconds",
        "check interval.handling.mode",
    ),
    "io.debezium.time.NanoDuration": (
        _plain(decode_nano_duration),
        "an integer number of nanoseconds",
        "check interval.handling.mode",
    ),
    "io.debezium.time.Interval": (
        _plain(decode_interval),
        "an ISO-8601 duration 'P…Y…M…DT…H…M…S'",
        "check interval.handling.mode",
    ),
    "io.debezium.data.Json": (
        _plain(decode_json),
        "a string holding a JSON document",
        "check the column's JSON content",
    ),
    "io.debezium.data.Uuid": (_plain(decode_uuid), "a UUID string", "check the source column"),
    "io.debezium.data.Enum": (_plain(decode_enum), "an enum label string", "check the source column"),
    "io.debezium.data.EnumSet": (_plain(decode_enum_set), "a comma-separated SET string", "check the source column"),
    "io.debezium.data.Bits": (
        _plain(decode_bits),
        "base64 bytes",
        "check binary.handling.mode (bytes expected for Bits)",
    ),
    # String-typed names whose value already is the right Python value: listed so they are
    # known, not silently "unknown".
    "io.debezium.data.Xml": (lambda s, tz: None, "an XML string", ""),
    "io.debezium.data.Ltree": (lambda s, tz: None, "an LTREE string", ""),
}

# Geometry structs ({wkb: base64, srid} / Point {x, y, wkb, srid}) pass through as sent.
_PASS_THROUGH_PREFIXES = ("io.debezium.data.geometry.",)
# Namespaces whose names are logical types: an unknown one means a newer Debezium, and its
# value must not be reinterpreted by structure.
_LOGICAL_NAMESPACES = ("io.debezium.", "org.apache.kafka.connect.")

# Column types Debezium reports in `__debezium.source.column.type` (column.propagate.source.type)
# that are decimal numbers sent as plain strings under decimal.handling.mode=string.
_DECIMAL_SOURCE_TYPES = frozenset({"NUMERIC", "DECIMAL", "MONEY", "SMALLMONEY", "NUMBER", "DEC", "FIXED"})


def describe(schema: Schema | None) -> tuple[str, str, str]:
    """(logical type label, what a valid value is, fix hint) for error messages."""
    if not schema:
        return "schemaless", "a JSON value", ""
    name = schema.get("name")
    if name in LOGICAL_TYPES:
        _, expected, hint = LOGICAL_TYPES[name]
        return name, expected, hint
    kind = schema.get("type", "?")
    if kind == "bytes":
        return name or "bytes", "base64 bytes", "check binary.handling.mode (bytes → base64 in JSON)"
    if kind == "struct":
        return name or "struct", "a JSON object", ""
    if kind == "array":
        return name or "array", "a JSON array", ""
    if kind == "map":
        return name or "map", "a JSON object or [key, value] pairs", ""
    return name or kind, f"a {kind} value", ""


def build_decoder(schema: Schema | None, tz: tzinfo) -> Decoder | None:
    """The decoder for values of ``schema``, or ``None`` when values pass through as parsed."""
    if not schema:
        return None
    name = schema.get("name")
    kind = schema.get("type")
    if name is not None:
        entry = LOGICAL_TYPES.get(name)
        if entry is not None:
            return entry[0](schema, tz)
        if name.startswith(_PASS_THROUGH_PREFIXES) or name.startswith(_LOGICAL_NAMESPACES):
            return None
        if kind not in ("struct", "array", "map"):
            return None  # a named primitive we do not know: its meaning is in the name
    if kind == "bytes":
        # binary.handling.mode=bytes (default): BYTES, base64 in the JSON converter. Under
        # base64/base64-url-safe/hex the schema type is string and the text passes through.
        return b64_bytes
    if kind == "string":
        params = schema.get("parameters") or {}
        if str(params.get("__debezium.source.column.type", "")).upper() in _DECIMAL_SOURCE_TYPES:
            return decode_decimal_string
        return None
    if kind == "struct":
        return build_struct(schema, tz)
    if kind == "array":
        return _array(schema, tz)
    if kind == "map":
        return _map(schema, tz)
    return None


def field_decoders(schema: Schema, tz: tzinfo) -> list[tuple[str, Decoder]]:
    """(field name, decoder) for the struct's fields that need decoding, in schema order."""
    out = []
    for f in schema.get("fields") or ():
        dec = build_decoder(f, tz)
        if dec is not None:
            out.append((f["field"], dec))
    return out


def wrap(name: str, schema: Schema | None, value: Any, exc: Exception) -> LogicalValueError:
    """A decoder exception for field ``name`` as a LogicalValueError naming it."""
    if isinstance(exc, LogicalValueError):
        return exc.within(name)
    logical, expected, hint = describe(schema)
    return LogicalValueError((name,), logical, expected, value, f"{type(exc).__name__}: {exc}", hint)


def build_struct(schema: Schema, tz: tzinfo) -> Decoder | None:
    decs = field_decoders(schema, tz)
    if not decs:
        return _require_object
    by_name = {f["field"]: f for f in schema.get("fields") or ()}

    def decode(v: Any) -> Any:
        if type(v) is not dict:
            raise TypeError(f"not an object: {type(v).__name__}")
        out = dict(v)
        name = ""
        try:
            for name, dec in decs:
                x = v.get(name)
                if x is not None:
                    out[name] = dec(x)
        except DECODE_ERRORS as e:
            raise wrap(name, by_name.get(name), v.get(name), e) from None
        return out

    return decode


def _require_object(v: Any) -> Any:
    if type(v) is not dict:
        raise TypeError(f"not an object: {type(v).__name__}")
    return v


def _array(schema: Schema, tz: tzinfo) -> Decoder | None:
    items = schema.get("items")
    dec = build_decoder(items, tz)
    if dec is None:
        return None

    def decode(v: Any) -> Any:
        if type(v) is not list:
            raise TypeError(f"not an array: {type(v).__name__}")
        try:
            return [None if x is None else dec(x) for x in v]
        except DECODE_ERRORS:
            # Slow path, only on failure: find the element to name it ("tags[3]").
            for i, x in enumerate(v):
                if x is not None:
                    try:
                        dec(x)
                    except DECODE_ERRORS as e:
                        raise wrap(f"[{i}]", items, x, e) from None
            raise

    return decode


def _map(schema: Schema, tz: tzinfo) -> Decoder | None:
    kdec = build_decoder(schema.get("keys"), tz)
    vdec = build_decoder(schema.get("values"), tz)
    k = kdec or _identity
    d = vdec or _identity

    def decode(v: Any) -> Any:
        # JsonConverter writes string-keyed maps as objects and other maps as [[k, v], ...].
        if type(v) is dict:
            if vdec is None:
                return v
            return {key: None if x is None else d(x) for key, x in v.items()}
        if type(v) is list:
            return {k(p[0]): None if p[1] is None else d(p[1]) for p in v}
        raise TypeError(f"not a map: {type(v).__name__}")

    return decode
