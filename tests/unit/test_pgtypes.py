"""Text-format PostgreSQL values → Python, including generated array and timestamp literals."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.sources import pgtypes as pt
from replicator.sources.pgtypes import (
    build_converters,
    converter_for,
    parse_array,
    parse_interval,
    parse_timestamp,
    parse_timestamptz,
)


def conv(oid: int, text: str, tz: Any = UTC) -> Any:
    return converter_for(oid, tz)(text)


@pytest.mark.parametrize(
    ("oid", "text", "expected"),
    [
        (pt.BOOL, "t", True),
        (pt.BOOL, "f", False),
        (pt.INT2, "-32768", -32768),
        (pt.INT4, "42", 42),
        (pt.INT8, "9223372036854775807", 9223372036854775807),
        (pt.OID, "4294967295", 4294967295),
        (pt.TEXT, "héllo", "héllo"),
        (pt.VARCHAR, "x", "x"),
        (pt.BPCHAR, "ab  ", "ab  "),
        (pt.NAME, "pg_class", "pg_class"),
        (pt.DATE, "2024-02-29", date(2024, 2, 29)),
        (pt.TIME, "03:04:05.5", time(3, 4, 5, 500000)),
        (pt.TIMETZ, "03:04:05+05:30", time(3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30)))),
        (pt.UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
        (pt.JSONB, '{"a": [1, 2.5, null, "x"]}', {"a": [1, 2.5, None, "x"]}),
        (pt.JSON, "[]", []),
        (pt.BYTEA, "\\x00ff10", b"\x00\xff\x10"),
        (pt.BYTEA, "\\x", b""),
        (pt.BYTEA, "a\\\\b\\001", b"a\\b\x01"),  # legacy escape format
        (90000, "happy", "happy"),  # enum / unknown OID → str
    ],
)
def test_scalars(oid: int, text: str, expected: Any) -> None:
    value = conv(oid, text)
    assert value == expected
    assert type(value) is type(expected)


def test_numeric_is_exact() -> None:
    v = conv(pt.NUMERIC, "12.30")
    assert v == Decimal("12.30") and str(v) == "12.30"
    assert conv(pt.NUMERIC, "0.1") + conv(pt.NUMERIC, "0.2") == Decimal("0.3")
    assert conv(pt.NUMERIC, "NaN").is_nan()
    assert conv(pt.NUMERIC, "-Infinity") == Decimal("-Infinity")
    big = "123456789012345678901234567890.123456789"
    assert str(conv(pt.NUMERIC, big)) == big


def test_floats() -> None:
    assert conv(pt.FLOAT8, "Infinity") == math.inf
    assert conv(pt.FLOAT4, "-Infinity") == -math.inf
    assert math.isnan(conv(pt.FLOAT8, "NaN"))
    assert conv(pt.FLOAT8, "1.5e-300") == 1.5e-300


def test_timestamptz_keeps_offset() -> None:
    v = conv(pt.TIMESTAMPTZ, "2024-01-02 03:04:05.123456+00")
    assert v == datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    v = conv(pt.TIMESTAMPTZ, "2024-01-02 03:04:05+05:30")
    assert v.utcoffset() == timedelta(hours=5, minutes=30)
    v = conv(pt.TIMESTAMPTZ, "1900-01-01 00:00:00+00:19:32")  # LMT offsets have seconds
    assert v.utcoffset() == timedelta(minutes=19, seconds=32)


@pytest.mark.parametrize("text", ["infinity", "-infinity", "0044-03-15 12:00:00+00 BC", "12345-01-01 00:00:00+00"])
def test_unrepresentable_timestamps_stay_strings(text: str) -> None:
    assert conv(pt.TIMESTAMPTZ, text) == text
    assert conv(pt.TIMESTAMP, text.replace("+00", "")) == text.replace("+00", "")


@pytest.mark.parametrize("text", ["infinity", "-infinity", "0044-03-15 BC", "12345-01-01"])
def test_unrepresentable_dates_stay_strings(text: str) -> None:
    assert conv(pt.DATE, text) == text


def test_time_24h_stays_string() -> None:
    assert conv(pt.TIME, "24:00:00") == "24:00:00"


def test_garbage_timestamp_raises() -> None:
    with pytest.raises(ValueError):
        conv(pt.TIMESTAMPTZ, "2024-13-45 00:00:00+00")


def test_timestamp_in_configured_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    v = conv(pt.TIMESTAMP, "2024-07-01 12:00:00", berlin)
    assert v.tzinfo is berlin and v.utcoffset() == timedelta(hours=2)
    assert conv(pt.TIMESTAMP, "2024-07-01 12:00:00").tzinfo is UTC
    [c] = build_converters([pt.TIMESTAMP], "America/New_York")
    assert c("2024-01-01 00:00:00").utcoffset() == timedelta(hours=-5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:00:00", timedelta(0)),
        ("3 days", timedelta(days=3)),
        ("1 day", timedelta(days=1)),
        ("-1 days +02:03:04.5", timedelta(days=-1, hours=2, minutes=3, seconds=4.5)),
        ("1 day -00:00:01", timedelta(days=1, seconds=-1)),
        ("-00:00:00.000001", timedelta(microseconds=-1)),
        ("1000:00:00", timedelta(hours=1000)),
        ("1 year 2 mons 3 days", "1 year 2 mons 3 days"),
        ("1 mon", "1 mon"),
    ],
)
def test_interval(text: str, expected: object) -> None:
    assert parse_interval(text) == expected


@pytest.mark.parametrize(
    ("oid", "text", "expected"),
    [
        (1009, "{}", []),
        (1009, "{a,b}", ["a", "b"]),
        (1009, '{a,"b c",NULL,"NULL","",x\\"y}', ["a", "b c", None, "NULL", "", 'x"y']),
        (1009, '{"a,b","c}d","e\\\\f"}', ["a,b", "c}d", "e\\f"]),
        (1007, "{1,NULL,3}", [1, None, 3]),
        (1007, "[0:1]={1,2}", [1, 2]),
        (1007, "{{1,2},{3,4}}", [[1, 2], [3, 4]]),
        (2951, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", [uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")]),
        (1185, '{"2024-01-02 03:04:05+00"}', [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)]),
        (3807, '{"{\\"a\\": 1}",null}', [{"a": 1}, None]),
        (1001, '{"\\\\x0102"}', [b"\x01\x02"]),
        (1000, "{t,f}", [True, False]),
    ],
)
def test_arrays(oid: int, text: str, expected: list[Any]) -> None:
    assert conv(oid, text) == expected


def test_numeric_array_exact() -> None:
    assert [str(v) for v in conv(1231, "{1.10,NaN,NULL}") if v is not None] == ["1.10", "NaN"]


def test_user_array_type_from_type_message() -> None:
    [c] = build_converters([90001], UTC, {90001: "_mood"})
    assert c("{happy,sad}") == ["happy", "sad"]
    [c] = build_converters([90000], UTC, {90000: "mood"})
    assert c("happy") == "happy"


# --- properties: generate values, render them as PostgreSQL would, parse back ---------------


def pg_array_literal(items: list[str | None]) -> str:
    """Render like array_out: quote when needed, backslash-escape quotes and backslashes."""
    out = []
    for item in items:
        if item is None:
            out.append("NULL")
        elif item == "" or item.upper() == "NULL" or any(c in item for c in '{},"\\ \t\n\r\v\f'):
            out.append('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            out.append(item)
    return "{" + ",".join(out) + "}"


@given(
    st.lists(
        st.one_of(
            st.none(), st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=12)
        )
    )
)
def test_text_array_roundtrip(items: list[str | None]) -> None:
    assert parse_array(pg_array_literal(items)) == items


@given(st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))))
def test_int_array_roundtrip(items: list[int | None]) -> None:
    literal = "{" + ",".join("NULL" if i is None else str(i) for i in items) + "}"
    assert converter_for(1016)(literal) == items


def pg_timestamptz_out(dt: datetime) -> str:
    """timestamptz_out with DateStyle ISO: fraction trimmed, offset as +HH[:MM[:SS]]."""
    text = dt.strftime("%Y-%m-%d %H:%M:%S")
    if dt.microsecond:
        text += f".{dt.microsecond:06d}".rstrip("0")
    off = dt.utcoffset()
    assert off is not None
    secs = int(off.total_seconds())
    sign = "-" if secs < 0 else "+"
    h, rem = divmod(abs(secs), 3600)
    m, s = divmod(rem, 60)
    text += f"{sign}{h:02d}"
    if m or s:
        text += f":{m:02d}"
    if s:
        text += f":{s:02d}"
    return text


offsets = st.integers(-15 * 3600, 15 * 3600).map(lambda s: timezone(timedelta(seconds=s)))


@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 30)), offsets)
def test_timestamptz_roundtrip(naive: datetime, tz: timezone) -> None:
    dt = naive.replace(tzinfo=tz)
    parsed = parse_timestamptz(pg_timestamptz_out(dt))
    assert parsed == dt
    assert isinstance(parsed, datetime) and parsed.utcoffset() == dt.utcoffset()


@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31)))
def test_timestamp_roundtrip(naive: datetime) -> None:
    text = pg_timestamptz_out(naive.replace(tzinfo=UTC))[:-3]  # drop "+00"
    assert parse_timestamp(text) == naive.replace(tzinfo=UTC)


@given(st.timedeltas(min_value=timedelta(days=-(10**6)), max_value=timedelta(days=10**6)))
def test_interval_roundtrip(td: timedelta) -> None:
    # Render in IntervalStyle postgres form: '[N days] [-]HH:MM:SS[.ffffff]' with independent signs.
    days = td.days
    micros = td.seconds * 1_000_000 + td.microseconds
    h, rem = divmod(micros, 3_600_000_000)
    m, rem = divmod(rem, 60_000_000)
    s, us = divmod(rem, 1_000_000)
    clock = f"{h:02d}:{m:02d}:{s:02d}" + (f".{us:06d}".rstrip("0") if us else "")
    parts = []
    if days:
        parts.append(f"{days} day" + ("" if abs(days) == 1 else "s"))
    if micros or not days:
        parts.append(("+" if days < 0 else "") + clock)
    assert parse_interval(" ".join(parts)) == td
