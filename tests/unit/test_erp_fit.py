"""Fitting values to ERP column types: coerced exactly, or rejected with the reason and the fix."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.mapping.catalog import TableInfo
from replicator.sinks.erp.fit import FitDialect, fit_value, fit_write, parse_type
from replicator.sinks.erp.model import ChildWrite, RowWrite, WriteRejected

BERLIN = ZoneInfo("Europe/Berlin")


def fit(value: Any, type_text: str, dialect: FitDialect = "postgres") -> Any:
    return fit_value(value, table="erp.t", column="c", type_text=type_text, dialect=dialect, zone=BERLIN)


def rejected(value: Any, type_text: str, dialect: FitDialect = "postgres") -> str:
    with pytest.raises(WriteRejected) as e:
        fit(value, type_text, dialect)
    assert e.value.table == "erp.t" and e.value.column == "c"
    message = str(e.value)
    assert message.startswith("erp.t.c: value ") and type_text in message and "fix:" in message
    return message


@pytest.mark.parametrize(
    ("type_text", "dialect", "kind", "detail"),
    [
        ("character varying(20)", "postgres", "text", {"length": 20}),
        ("character varying", "postgres", "text", {"length": None}),
        ("character(3)", "postgres", "text", {"length": 3}),
        ("text", "postgres", "text", {"length": None, "byte_length": None}),
        ("numeric(14,2)", "postgres", "decimal", {"precision": 14, "scale": 2}),
        ("numeric", "postgres", "decimal", {"precision": None}),
        ("smallint", "postgres", "int", {"bits": 16}),
        ("timestamp(3) with time zone", "postgres", "timestamp", {"fsp": 3, "zone": "aware"}),
        ("timestamp without time zone", "postgres", "timestamp", {"fsp": 6, "zone": "local"}),
        ("jsonb", "postgres", "json", {"jsonb": True}),
        ("text[]", "postgres", "other", {}),
        ("varchar(32)", "mysql", "text", {"length": 32}),
        ("text", "mysql", "text", {"byte_length": 65_535}),
        ("longtext", "mysql", "text", {"byte_length": 4_294_967_295}),
        ("decimal(14,2) unsigned", "mysql", "decimal", {"precision": 14, "scale": 2, "unsigned": True}),
        ("tinyint(1)", "mysql", "int", {"bits": 8, "boolean_like": True}),
        ("int(10) unsigned", "mysql", "int", {"bits": 32, "unsigned": True}),
        ("datetime", "mysql", "timestamp", {"fsp": 0, "zone": "local"}),
        ("timestamp(6)", "mysql", "timestamp", {"fsp": 6, "zone": "utc"}),
        ("enum('a','it''s')", "mysql", "enum", {"members": ("a", "it's")}),
    ],
)
def test_catalog_types_are_understood(type_text: str, dialect: FitDialect, kind: str, detail: dict[str, Any]) -> None:
    ct = parse_type(type_text, dialect)
    assert ct.kind == kind
    assert {k: getattr(ct, k) for k in detail} == detail


# -- text


@given(value=st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",))), n=st.integers(1, 40))
def test_varchar_takes_exactly_the_strings_that_fit(value: str, n: int) -> None:
    for dialect, type_text in (("postgres", f"character varying({n})"), ("mysql", f"varchar({n})")):
        if len(value) <= n:
            assert fit(value, type_text, dialect) == value  # type: ignore[arg-type]
        else:
            assert "characters long" in rejected(value, type_text, dialect)  # type: ignore[arg-type]


def test_length_counts_characters_not_bytes() -> None:
    assert fit("äöü€😀", "varchar(5)", "mysql") == "äöü€😀"
    assert "6 characters long; at most 5 fit" in rejected("äöü€😀x", "character varying(5)")
    assert "at most 3 fit" in rejected("EURO", "character(3)")


def test_mariadb_text_is_limited_in_bytes() -> None:
    assert fit("€" * 21_845, "text", "mysql") == "€" * 21_845  # 65,535 bytes
    assert "65538 bytes long in UTF-8" in rejected("€" * 21_846, "text", "mysql")


def test_nul_bytes_are_refused_by_postgres_only() -> None:
    assert "PostgreSQL text cannot store" in rejected("a\x00b", "text")
    assert fit("a\x00b", "longtext", "mysql") == "a\x00b"


def test_awkward_text_goes_through_verbatim() -> None:
    big = ('O\'Brien "quoted" ; DROP TABLE x; -- \\ %s %% ünïcødé 😀\n') * 2_000  # > 100 KB
    assert len(big.encode()) > 100_000
    assert fit(big, "text") == big
    assert fit(big, "longtext", "mysql") == big


def test_numbers_and_dates_become_text_in_text_columns() -> None:
    assert fit(42, "text") == "42"
    assert fit(Decimal("1.50"), "varchar(10)", "mysql") == "1.50"
    assert fit(date(2026, 11, 25), "text") == "2026-11-25"
    assert "expected text, got dict" in rejected({"a": 1}, "text")
    assert "expected text, got bool" in rejected(True, "text")
    assert "lone surrogate" in rejected("a\ud800", "text")


def test_a_long_value_is_shortened_in_the_message() -> None:
    message = rejected("x" * 100_000, "character varying(10)")
    assert "100000 characters" in message and len(message) < 400


# -- numbers


def test_decimals_fit_only_without_rounding() -> None:
    assert fit("1234.50", "numeric(14,2)") == Decimal("1234.50")
    assert fit(1234.5, "decimal(14,2)", "mysql") == Decimal("1234.5")
    assert fit(" 7 ", "numeric(14,2)") == Decimal("7")
    assert fit("1.2300", "numeric(14,2)") == Decimal("1.2300")  # trailing zeros need no rounding
    assert fit("1E+2", "numeric(5,2)") == Decimal("100")
    assert fit("999999999999.99", "numeric(14,2)") == Decimal("999999999999.99")
    assert "never rounded" in rejected("1.005", "numeric(14,2)")
    assert "never rounded" in rejected(0.1 + 0.2, "numeric(14,2)")
    assert "at most 12" in rejected("1000000000000", "numeric(14,2)")
    assert "not a number" in rejected("12,50", "numeric(14,2)")
    assert "not a finite number" in rejected("NaN", "decimal(14,2)", "mysql")
    assert fit("NaN", "numeric").is_nan()
    assert "negative" in rejected("-1", "decimal(5,2) unsigned", "mysql")
    assert "boolean" in rejected(True, "numeric(5,2)")


@given(
    digits=st.integers(0, 10**18),
    exponent=st.integers(-6, 4),
    negative=st.booleans(),
    precision=st.integers(1, 20),
    scale_gap=st.integers(0, 6),
)
def test_decimal_fits_exactly_when_precision_and_scale_allow(
    digits: int, exponent: int, negative: bool, precision: int, scale_gap: int
) -> None:
    scale = min(scale_gap, precision)
    value = Decimal(f"{'-' if negative else ''}{digits}E{exponent}")
    type_text = f"numeric({precision},{scale})"
    fits = value == round(value, scale) and abs(value) < Decimal(10) ** (precision - scale)
    if fits:
        assert fit(value, type_text) == value
        assert fit(str(value), type_text) == value
    else:
        rejected(value, type_text)


def test_integers_within_their_ranges() -> None:
    assert fit("42", "integer") == 42
    assert fit(Decimal("42.0"), "bigint") == 42
    assert fit(42.0, "smallint") == 42
    assert fit(-32768, "smallint") == -32768
    assert "out of range for smallint (-32768 to 32767)" in rejected(32768, "smallint")
    assert "out of range" in rejected(-1, "int(10) unsigned", "mysql")
    assert fit(2**64 - 1, "bigint(20) unsigned", "mysql") == 2**64 - 1
    assert "out of range" in rejected(2**64, "bigint(20) unsigned", "mysql")
    assert "out of range" in rejected(128, "tinyint(4)", "mysql")
    assert fit(255, "tinyint(3) unsigned", "mysql") == 255
    assert "not a whole number" in rejected("42.5", "integer")
    assert "not a number" in rejected("forty", "integer")
    assert "boolean" in rejected(True, "integer")


def test_mariadb_booleans_are_tinyint_1() -> None:
    assert fit(True, "tinyint(1)", "mysql") == 1
    assert fit("false", "tinyint(1)", "mysql") == 0
    assert fit(0, "tinyint(1)", "mysql") == 0


def test_postgres_booleans() -> None:
    assert fit("yes", "boolean") is True
    assert fit(" F ", "boolean") is False
    assert fit(1, "boolean") is True
    assert "not a boolean" in rejected("maybe", "boolean")
    assert "not a boolean" in rejected(2, "boolean")


def test_floats() -> None:
    assert fit("1.5e3", "double precision") == 1500.0
    assert "not a number" in rejected("x", "real")
    assert "not a finite number" in rejected(float("nan"), "double", "mysql")


# -- dates and times


def test_dates() -> None:
    assert fit("2026-11-25", "date") == date(2026, 11, 25)
    assert fit(datetime(2026, 11, 25), "date") == date(2026, 11, 25)
    assert fit("2026-11-25T00:00:00", "date") == date(2026, 11, 25)
    assert "time of day" in rejected("2026-11-25T10:00:00", "date")
    assert "not a date" in rejected("25.11.2026", "date")
    assert "not a date" in rejected("2026-02-30", "date")
    assert "range" in rejected("0999-01-01", "date", "mysql")


def test_timestamps_with_time_zone() -> None:
    assert fit("2026-11-25T10:00:00Z", "timestamp with time zone") == datetime(2026, 11, 25, 10, tzinfo=UTC)
    # Naive means the ERP's zone.
    naive = fit("2026-11-25 10:00:00", "timestamp with time zone")
    assert naive == datetime(2026, 11, 25, 10, tzinfo=BERLIN) and naive.utcoffset() is not None
    assert fit(date(2026, 11, 25), "timestamp with time zone") == datetime(2026, 11, 25, tzinfo=BERLIN)
    assert "not a timestamp" in rejected("yesterday", "timestamp with time zone")
    assert "not a timestamp" in rejected(1764064800, "timestamp with time zone")


def test_wall_clock_columns_take_the_erp_zone() -> None:
    # PostgreSQL timestamp without time zone and MariaDB DATETIME hold erp.timezone wall time.
    for type_text, dialect in (("timestamp without time zone", "postgres"), ("datetime(6)", "mysql")):
        assert fit("2026-11-25T10:00:00+00:00", type_text, dialect) == datetime(2026, 11, 25, 11)  # type: ignore[arg-type]
        assert fit("2026-11-25T10:00:00", type_text, dialect) == datetime(2026, 11, 25, 10)  # type: ignore[arg-type]


def test_mariadb_timestamp_takes_utc_within_its_range() -> None:
    assert fit("2026-11-25T10:00:00", "timestamp", "mysql") == datetime(2026, 11, 25, 9)
    assert fit(datetime(2026, 7, 1, 12, tzinfo=UTC), "timestamp", "mysql") == datetime(2026, 7, 1, 12)
    assert "outside the range" in rejected("2040-01-01T00:00:00Z", "timestamp", "mysql")
    assert "outside the range" in rejected("1969-12-31T23:59:59Z", "timestamp", "mysql")


def test_fractional_seconds_are_never_dropped() -> None:
    assert "no fractional seconds" in rejected("2026-11-25T10:00:00.5Z", "datetime", "mysql")
    assert "3 fractional second digits" in rejected(
        "2026-11-25T10:00:00.1234Z", "timestamp(3) with time zone", "postgres"
    )
    assert fit("2026-11-25T10:00:00.123Z", "timestamp(3) with time zone").microsecond == 123_000
    assert fit("2026-11-25T10:00:00Z", "datetime", "mysql") == datetime(2026, 11, 25, 11)


def test_times() -> None:
    assert fit("14:30:00", "time without time zone") == time(14, 30)
    assert "not a time of day" in rejected("half past two", "time without time zone")
    assert "no fractional seconds" in rejected("14:30:00.5", "time", "mysql")


# -- other types


def test_json() -> None:
    assert fit({"a": [1, "ü"]}, "jsonb") == '{"a": [1, "ü"]}'
    assert fit('{"a": 1}', "json", "mysql") == '{"a": 1}'
    assert "not valid JSON" in rejected("{nope", "jsonb")
    assert "NUL" in rejected({"a": "x\x00"}, "jsonb")
    assert "NUL" in rejected('{"a": "\\u0000"}', "jsonb")


def test_uuid_bytes_and_enums() -> None:
    u = uuid.uuid4()
    assert fit(str(u), "uuid") == u
    assert fit(u, "uuid", "mysql") == str(u)
    assert "not a UUID" in rejected("123", "uuid")
    assert fit(b"\x00\x01", "bytea") == b"\x00\x01"
    assert "at most 2 fit" in rejected(b"abc", "varbinary(2)", "mysql")
    assert "expected bytes" in rejected("abc", "bytea")
    assert fit("it's", "enum('a','it''s')", "mysql") == "it's"
    assert "not one of 'a', \"it's\"" in rejected("b", "enum('a','it''s')", "mysql")


def test_none_is_null_for_every_type() -> None:
    for type_text in ("text", "numeric(3,1)", "date", "boolean", "jsonb"):
        assert fit(None, type_text) is None


# -- whole writes


CATALOG = {
    "erp.orders": TableInfo(
        "erp.orders",
        ("id", "order_no", "total", "crm_ref", "updated_at"),
        {
            "id": "bigint",
            "order_no": "character varying(32)",
            "total": "numeric(14,2)",
            "crm_ref": "text",
            "updated_at": "timestamp with time zone",
        },
        ("id",),
        "d",
    ),
    "erp.lines": TableInfo(
        "erp.lines",
        ("id", "order_id", "qty"),
        {"id": "bigint", "order_id": "bigint", "qty": "numeric(12,3)"},
        ("id",),
        "d",
    ),
}


def test_fit_write_fits_values_keys_adopt_by_and_children() -> None:
    w = RowWrite(
        "erp.orders",
        "insert",
        values={"order_no": "SO-1", "total": "10.50", "crm_ref": 17},
        audit={"updated_at": "now()"},
        returning=("id",),
        adopt_by={"crm_ref": 17},
        children=[ChildWrite(RowWrite("erp.lines", "insert", values={"qty": "2"}), {"order_id": "id"})],
    )
    fitted = fit_write(w, CATALOG, "postgres", BERLIN)
    assert fitted.values == {"order_no": "SO-1", "total": Decimal("10.50"), "crm_ref": "17"}
    assert fitted.adopt_by == {"crm_ref": "17"}
    assert fitted.children[0].write.values == {"qty": Decimal("2")}
    assert w.values["total"] == "10.50"  # the caller's write is left alone
    key = fit_write(RowWrite("erp.orders", "delete", key={"id": "5"}), CATALOG, "postgres", BERLIN)
    assert key.key == {"id": 5}


@pytest.mark.parametrize(
    ("w", "where", "complaint"),
    [
        (RowWrite("erp.orders", "insert", values={"nope": 1}), "erp.orders.nope", "id, order_no, total"),
        (RowWrite("erp.orders", "insert", audit={"changed": "now()"}), "erp.orders.changed", "unknown column in audit"),
        (RowWrite("erp.orders", "insert", returning=("x",)), "erp.orders.x", "unknown column in returning"),
        (RowWrite("erp.nope", "insert"), "erp.nope", "not in the ERP catalog"),
        (
            RowWrite(
                "erp.orders",
                "insert",
                children=[ChildWrite(RowWrite("erp.lines", "insert"), {"order_id": "uid"})],
            ),
            "erp.orders.uid",
            "unknown column in link",
        ),
        (
            RowWrite(
                "erp.orders",
                "insert",
                children=[ChildWrite(RowWrite("erp.lines", "insert", values={"qty": "1.0005"}), {"order_id": "id"})],
            ),
            "erp.lines.qty",
            "never rounded",
        ),
        (RowWrite("erp.orders", "update", key={"id": "x"}, values={"total": 1}), "erp.orders.id", "not a number"),
    ],
)
def test_fit_write_rejects_with_table_and_column(w: RowWrite, where: str, complaint: str) -> None:
    with pytest.raises(WriteRejected) as e:
        fit_write(w, CATALOG, "postgres", BERLIN)
    assert str(e.value).startswith(f"{where}: ")
    assert complaint in str(e.value)
