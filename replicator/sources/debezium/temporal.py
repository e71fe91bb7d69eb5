"""Temporal logical types: dates, times of day, timestamps, durations and intervals.

Encodings follow the Debezium connector documentation ("Temporal types" of postgresql.adoc,
mysql.adoc, sqlserver.adoc) and the schema classes in ``debezium-core/.../io/debezium/time``.
Well-formed values Python cannot represent (PostgreSQL ``infinity``, years past 9999) come
back raw instead of failing the row.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from replicator.sources.debezium.primitives import Decoder, Schema, require_int

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPOCH_NAIVE = datetime(1970, 1, 1)
_DAY_US = 86_400_000_000


def decode_date(v: Any) -> Any:
    # io.debezium.time.Date and org.apache.kafka.connect.data.Date: INT32 days since epoch.
    days = require_int(v)
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


def decode_time_ms(v: Any) -> Any:
    # io.debezium.time.Time / org.apache.kafka.connect.data.Time: ms past midnight.
    return _time_of_day(require_int(v) * 1000)


def decode_micro_time(v: Any) -> Any:
    # io.debezium.time.MicroTime: INT64 µs past midnight.
    return _time_of_day(require_int(v))


def decode_nano_time(v: Any) -> Any:
    # io.debezium.time.NanoTime (SQL Server TIME(7)): ns past midnight; Python keeps µs, the
    # last digit is truncated (floor, so it never moves to the next microsecond).
    return _time_of_day(require_int(v) // 1000)


def local_timestamp_factory(divisor: int, multiplier: int) -> Callable[[Schema, tzinfo], Decoder]:
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
            n = require_int(v)
            try:
                return (_EPOCH_NAIVE + timedelta(microseconds=n * multiplier // divisor)).replace(tzinfo=tz)
            except OverflowError:
                return v  # PostgreSQL ±infinity and years past 9999

        return decode

    return factory


def _special_datetime_text(s: str) -> bool:
    # PostgreSQL 'infinity' / '-infinity', years beyond 9999 ('+10000-…'), BC ('-0044-…').
    return not s[:1].isdigit() or (len(s) > 4 and s[4] != "-")


def decode_zoned_timestamp(v: Any) -> Any:
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


def decode_zoned_time(v: Any) -> Any:
    # io.debezium.time.ZonedTime: ISO_OFFSET_TIME, e.g. '10:15:30+01:00' / '10:15:30Z'.
    if type(v) is not str:
        raise TypeError(f"not an ISO-8601 time string: {type(v).__name__}")
    t = time.fromisoformat(v)
    if t.tzinfo is None:
        raise ValueError("no UTC offset")
    return t


def decode_year(v: Any) -> Any:
    # io.debezium.time.Year (mysql.adoc YEAR): INT32 year.
    return require_int(v)


def decode_micro_duration(v: Any) -> Any:
    # io.debezium.time.MicroDuration (postgresql.adoc INTERVAL, default
    # interval.handling.mode=numeric): µs with months counted as 365.25/12 days. INT64 in
    # current releases, FLOAT64 in older ones (MicroDuration.java), so accept both.
    if type(v) is int or type(v) is float:
        try:
            return timedelta(microseconds=v)
        except OverflowError:
            return v
    raise TypeError(f"not a number of microseconds: {type(v).__name__}")


def decode_nano_duration(v: Any) -> Any:
    # io.debezium.time.NanoDuration (Oracle INTERVAL, listed for completeness): ns.
    n = require_int(v)
    try:
        return timedelta(microseconds=n // 1000)
    except OverflowError:
        return v


_INTERVAL = re.compile(
    r"P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)D)?"
    r"(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?\d+(?:\.\d+)?)S)?)?$"
)


def decode_interval(v: Any) -> Any:
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
