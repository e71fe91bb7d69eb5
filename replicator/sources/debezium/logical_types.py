"""Kafka Connect schemas (as the JSON converter writes them) → value decoders.

A decoder is built once per schema (``build_decoder``) and then called per value, so the
per-value cost is a dict lookup and one call. ``None`` stands for "pass the value through":
struct decoders skip those fields entirely, which keeps plain text/int columns free.

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

import base64
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, TypeAlias

import orjson

Decoder: TypeAlias = Callable[[Any], Any]
Schema: TypeAlias = Mapping[str, Any]

# Exceptions a decoder may raise on a malformed value; anything else is a bug and propagates.
DECODE_ERRORS = (ValueError, TypeError, ArithmeticError, AttributeError, LookupError)

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPOCH_NAIVE = datetime(1970, 1, 1)
_DAY_US = 86_400_000_000


class LogicalValueError(ValueError):
    """One value did not match its schema. ``path`` grows outward as structs re-raise it."""

    def __init__(
        self, path: tuple[str, ...], logical: str, expected: str, value: Any, detail: str = "", hint: str = ""
    ) -> None:
        self.path = path
        self.logical = logical
        self.expected = expected
        self.value = value
        self.detail = detail
        self.hint = hint
        super().__init__(self.describe())

    def within(self, name: str) -> LogicalValueError:
        # Array indices attach to their field ("tags[3]") instead of becoming a path level.
        if self.path and self.path[0].startswith("["):
            path = (name + self.path[0], *self.path[1:])
        else:
            path = (name, *self.path)
        return LogicalValueError(path, self.logical, self.expected, self.value, self.detail, self.hint)

    @property
    def field(self) -> str:
        return ".".join(self.path)

    def describe(self) -> str:
        shown = repr(self.value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        why = f" ({self.detail})" if self.detail else ""
        return f"expected {self.expected}, got {shown}{why}"


# --- primitive helpers ------------------------------------------------------------------------


def _require_int(v: Any) -> int:
    # bool is an int subclass; a JSON true where epoch days are due is a malformed record.
    if type(v) is not int:
        raise TypeError(f"not an integer: {type(v).__name__}")
    return v


def b64_bytes(v: Any) -> bytes:
    """Kafka Connect BYTES in the JSON converter: standard base64 (``binary.handling.mode=bytes``)."""
    if type(v) is not str:
        raise TypeError(f"not a base64 string: {type(v).__name__}")
    return base64.b64decode(v, validate=True)


def unscaled_to_decimal(raw: bytes, scale: int) -> Decimal:
    """Big-endian two's-complement unscaled integer + scale → exact Decimal.

    Built from a string so no decimal context (28 digits by default) can round it; the
    scale survives (``0E-2`` stays ``Decimal('0.00')``), as NUMERIC(p, s) keeps it.
    """
    n = int.from_bytes(raw, "big", signed=True)
    return Decimal(f"{n}E{-scale}")


# --- numbers ----------------------------------------------------------------------------------


def _decimal_factory(schema: Schema, tz: tzinfo) -> Decoder:
    # org.apache.kafka.connect.data.Decimal (postgresql.adoc "Decimal types", mysql.adoc
    # "Decimal types", sqlserver.adoc "Decimal values"): BYTES with the `scale` parameter,
    # a string in the JSON, e.g. {"scale": "2", "connect.decimal.precision": "10"}.
    params = schema.get("parameters") or {}
    try:
        scale = int(params.get("scale", 0))
    except (TypeError, ValueError):
        raise ValueError(f"Decimal schema has a non-integer scale parameter {params.get('scale')!r}") from None

    def decode(v: Any) -> Any:
        if type(v) is str:
            # No fallback to parsing the text as a decimal: '1234' is also valid base64, so
            # guessing would silently turn some values into other numbers.
            return unscaled_to_decimal(b64_bytes(v), scale)
        if type(v) is int:
            # JsonConverter decimal.format=NUMERIC writes the number itself.
            return Decimal(v)
        if type(v) is float:
            # decimal.format=NUMERIC parsed by orjson: exact up to float precision only
            # (~17 significant digits); repr gives the shortest string that round-trips.
            return Decimal(repr(v))
        raise TypeError(f"not a Decimal encoding: {type(v).__name__}")

    return decode


def _variable_scale_decimal(v: Any) -> Any:
    # io.debezium.data.VariableScaleDecimal (postgresql.adoc: NUMERIC/DECIMAL without scale
    # constraints): STRUCT {scale: INT32, value: BYTES unscaled}.
    if type(v) is not dict:
        raise TypeError("not a {scale, value} object")
    raw = v.get("value")
    if raw is None:  # PostgreSQL NaN/Infinity have no unscaled form; Debezium leaves it out.
        return None
    return unscaled_to_decimal(b64_bytes(raw), _require_int(v["scale"]))


# --- temporal ---------------------------------------------------------------------------------


def _date(v: Any) -> Any:
    # io.debezium.time.Date and org.apache.kafka.connect.data.Date: INT32 days since epoch.
    days = _require_int(v)
    try:
        return date.fromordinal(_EPOCH_ORDINAL + days)
    except (ValueError, OverflowError):
        return v


def _time_of_day(us: int) -> time | timedelta:
    if 0 <= us < _DAY_US:
        s, micro = divmod(us, 1_000_000)
        m, sec = divmod(s, 60)
        h, minute = divmod(m, 60)
        return time(h, minute, sec, micro)
    # MySQL TIME is a duration (-838:59:59..838:59:59, mysql.adoc "Temporal types") and
    # PostgreSQL allows 24:00:00: neither is a time of day, both are exact timedeltas.
    return timedelta(microseconds=us)


def _time_ms(v: Any) -> Any:
    # io.debezium.time.Time / org.apache.kafka.connect.data.Time: ms past midnight.
    return _time_of_day(_require_int(v) * 1000)


def _micro_time(v: Any) -> Any:
    # io.debezium.time.MicroTime: INT64 µs past midnight.
    return _time_of_day(_require_int(v))


def _nano_time(v: Any) -> Any:
    # io.debezium.time.NanoTime (SQL Server TIME(7)): ns past midnight; Python keeps µs, the
    # last digit is truncated (floor, so it never moves to the next microsecond).
    return _time_of_day(_require_int(v) // 1000)


def _local_timestamp_factory(divisor: int, multiplier: int) -> Callable[[Schema, tzinfo], Decoder]:
    """Timestamp (ms), MicroTimestamp (µs), NanoTimestamp (ns), Connect Timestamp (ms).

    These carry a wall-clock time without zone, encoded "as if UTC" (postgresql.adoc
    "TIMESTAMP type": '2018-06-20 15:13:16.945104' → 1529507596945104; mysql.adoc: DATETIME
    "converted into epoch milliseconds or microseconds based on the column's precision by
    using UTC"; sqlserver.adoc: DATETIME, DATETIME2, SMALLDATETIME). The wall time is
    decoded in UTC and then labelled with the configured zone, exactly as ``pgtypes``
    treats ``timestamp without time zone``.
    """

    def factory(schema: Schema, tz: tzinfo) -> Decoder:
        def decode(v: Any) -> Any:
            n = _require_int(v)
            try:
                return (_EPOCH_NAIVE + timedelta(microseconds=n * multiplier // divisor)).replace(tzinfo=tz)
            except OverflowError:
                return v  # PostgreSQL ±infinity and years past 9999

        return decode

    return factory


def _special_datetime_text(s: str) -> bool:
    # PostgreSQL 'infinity' / '-infinity', years beyond 9999 ('+10000-…'), BC ('-0044-…').
    return not s[:1].isdigit() or (len(s) > 4 and s[4] != "-")


def _zoned_timestamp(v: Any) -> Any:
    # io.debezium.time.ZonedTimestamp: ISO_OFFSET_DATE_TIME string, e.g.
    # '2011-12-03T10:15:30.030431+01:00' or '…Z' (ZonedTimestamp.java; postgresql.adoc
    # TIMESTAMPTZ, mysql.adoc TIMESTAMP, sqlserver.adoc DATETIMEOFFSET). Python 3.11 parses
    # 'Z' and truncates nanoseconds.
    if type(v) is not str:
        raise TypeError(f"not an ISO-8601 string: {type(v).__name__}")
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        if _special_datetime_text(v):
            return v
        raise
    if dt.tzinfo is None:
        raise ValueError("no UTC offset")
    return dt


def _zoned_time(v: Any) -> Any:
    # io.debezium.time.ZonedTime: ISO_OFFSET_TIME, e.g. '10:15:30+01:00' / '10:15:30Z'.
    if type(v) is not str:
        raise TypeError(f"not an ISO-8601 time string: {type(v).__name__}")
    t = time.fromisoformat(v)
    if t.tzinfo is None:
        raise ValueError("no UTC offset")
    return t


def _year(v: Any) -> Any:
    # io.debezium.time.Year (mysql.adoc YEAR): INT32 year.
    return _require_int(v)


def _micro_duration(v: Any) -> Any:
    # io.debezium.time.MicroDuration (postgresql.adoc INTERVAL, default
    # interval.handling.mode=numeric): µs with months counted as 365.25/12 days. INT64 in
    # current releases, FLOAT64 in older ones (MicroDuration.java), so accept both.
    if type(v) is int or type(v) is float:
        try:
            return timedelta(microseconds=v)
        except OverflowError:
            return v
    raise TypeError(f"not a number of microseconds: {type(v).__name__}")


def _nano_duration(v: Any) -> Any:
    # io.debezium.time.NanoDuration (Oracle INTERVAL, listed for completeness): ns.
    n = _require_int(v)
    try:
        return timedelta(microseconds=n // 1000)
    except OverflowError:
        return v


_INTERVAL = re.compile(
    r"P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)D)?"
    r"(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?\d+(?:\.\d+)?)S)?)?$"
)


def _interval(v: Any) -> Any:
    # io.debezium.time.Interval (interval.handling.mode=string): 'P1Y2M3DT4H5M6.78S'.
    # Years and months have no fixed length, so such intervals stay the ISO string.
    if type(v) is not str:
        raise TypeError(f"not an ISO-8601 duration: {type(v).__name__}")
    m = _INTERVAL.match(v)
    if m is None:
        raise ValueError("not of the form P<y>Y<m>M<d>DT<h>H<m>M<s>S")
    years, months, days, hours, minutes, seconds = m.groups()
    if (years and int(years)) or (months and int(months)):
        return v
    secs = Decimal(seconds or 0)
    micros = int(secs * 1_000_000)
    return timedelta(days=int(days or 0), hours=int(hours or 0), minutes=int(minutes or 0), microseconds=micros)


# --- text-borne and binary types --------------------------------------------------------------


def _json(v: Any) -> Any:
    # io.debezium.data.Json (PostgreSQL JSON/JSONB/HSTORE in json mode, MySQL JSON): the
    # document as a string.
    if type(v) is not str:
        raise TypeError(f"not a JSON document string: {type(v).__name__}")
    return orjson.loads(v)


def _uuid(v: Any) -> Any:
    # io.debezium.data.Uuid (postgresql.adoc UUID).
    if type(v) is not str:
        raise TypeError(f"not a UUID string: {type(v).__name__}")
    return uuid.UUID(v)


def _enum(v: Any) -> Any:
    # io.debezium.data.Enum: the label; the `allowed` parameter lists the labels.
    if type(v) is not str:
        raise TypeError(f"not an enum label: {type(v).__name__}")
    return v


def _enum_set(v: Any) -> Any:
    # io.debezium.data.EnumSet (mysql.adoc SET): comma-separated labels; '' is the empty set.
    if type(v) is not str:
        raise TypeError(f"not a comma-separated SET string: {type(v).__name__}")
    return v.split(",") if v else []


def _bits(v: Any) -> Any:
    # io.debezium.data.Bits (BIT(n>1), BIT VARYING): bytes holding the bits little-endian,
    # n/8 rounded up long; the bit count is the schema's `length` parameter. Kept as bytes.
    return b64_bytes(v)


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
        _decimal_factory,
        "base64 big-endian two's-complement unscaled bytes (or a JSON number under decimal.format=NUMERIC)",
        _DEC_HINT,
    ),
    "io.debezium.data.VariableScaleDecimal": (
        _plain(_variable_scale_decimal),
        "an object {scale: int, value: base64 unscaled bytes}",
        _DEC_HINT,
    ),
    "io.debezium.time.Date": (_plain(_date), "integer days since 1970-01-01", _TIME_HINT),
    "org.apache.kafka.connect.data.Date": (_plain(_date), "integer days since 1970-01-01", _TIME_HINT),
    "io.debezium.time.Time": (_plain(_time_ms), "integer milliseconds past midnight", _TIME_HINT),
    "org.apache.kafka.connect.data.Time": (_plain(_time_ms), "integer milliseconds past midnight", _TIME_HINT),
    "io.debezium.time.MicroTime": (_plain(_micro_time), "integer microseconds past midnight", _TIME_HINT),
    "io.debezium.time.NanoTime": (_plain(_nano_time), "integer nanoseconds past midnight", _TIME_HINT),
    "io.debezium.time.Timestamp": (
        _local_timestamp_factory(1, 1000),
        "integer milliseconds since the epoch",
        _TIME_HINT,
    ),
    "org.apache.kafka.connect.data.Timestamp": (
        _local_timestamp_factory(1, 1000),
        "integer milliseconds since the epoch",
        _TIME_HINT,
    ),
    "io.debezium.time.MicroTimestamp": (
        _local_timestamp_factory(1, 1),
        "integer microseconds since the epoch",
        _TIME_HINT,
    ),
    "io.debezium.time.NanoTimestamp": (
        _local_timestamp_factory(1000, 1),
        "integer nanoseconds since the epoch",
        _TIME_HINT,
    ),
    "io.debezium.time.ZonedTimestamp": (
        _plain(_zoned_timestamp),
        "an ISO-8601 date-time with offset",
        _TIME_HINT,
    ),
    "io.debezium.time.ZonedTime": (_plain(_zoned_time), "an ISO-8601 time with offset", _TIME_HINT),
    "io.debezium.time.Year": (_plain(_year), "an integer year", _TIME_HINT),
    "io.debezium.time.MicroDuration": (
        _plain(_micro_duration),
        "a number of microseconds",
        "check interval.handling.mode",
    ),
    "io.debezium.time.NanoDuration": (
        _plain(_nano_duration),
        "an integer number of nanoseconds",
        "check interval.handling.mode",
    ),
    "io.debezium.time.Interval": (
        _plain(_interval),
        "an ISO-8601 duration 'P…Y…M…DT…H…M…S'",
        "check interval.handling.mode",
    ),
    "io.debezium.data.Json": (_plain(_json), "a string holding a JSON document", "check the column's JSON content"),
    "io.debezium.data.Uuid": (_plain(_uuid), "a UUID string", "check the source column"),
    "io.debezium.data.Enum": (_plain(_enum), "an enum label string", "check the source column"),
    "io.debezium.data.EnumSet": (_plain(_enum_set), "a comma-separated SET string", "check the source column"),
    "io.debezium.data.Bits": (
        _plain(_bits),
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
            return _decimal_string
        return None
    if kind == "struct":
        return build_struct(schema, tz)
    if kind == "array":
        return _array(schema, tz)
    if kind == "map":
        return _map(schema, tz)
    return None


def _decimal_string(v: Any) -> Any:
    # decimal.handling.mode=string; NaN arrives as 'NAN' (postgresql.adoc) → Decimal('NaN').
    # Only reachable when the schema names the source column type: without it a string
    # decimal is indistinguishable from text and stays str.
    if type(v) is not str:
        return v
    try:
        return Decimal(v)
    except InvalidOperation:
        return v


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
