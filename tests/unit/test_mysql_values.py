"""MariaDB/MySQL value conversion, DSN parsing and SQL rendering (no server)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.mapping.entity import Related, _erp_sql, _order_by_sql
from replicator.mapping.mysql_conn import parse_dsn
from replicator.mapping.mysql_reader import after_key, after_key_params, in_list, related_query, table_sql
from replicator.mapping.mysql_values import convert_row, converter, converters, to_param

BERLIN = ZoneInfo("Europe/Berlin")


def test_each_type_gets_the_value_model_of_the_postgres_sources() -> None:
    types = {
        "id": "bigint(20)",
        "active": "tinyint(1)",
        "level": "tinyint(4)",
        "local": "datetime",
        "local6": "datetime(6)",
        "stamp": "timestamp",
        "day": "date",
        "doc": "json",
        "flags": "bit(3)",
        "tags": "set('a','b','it''s')",
        "price": "decimal(12,2)",
        "at": "time",
    }
    convs = converters(types, BERLIN)
    assert set(convs) == {"active", "local", "local6", "stamp", "day", "doc", "flags", "tags"}
    row = convert_row(
        {
            "id": 7,
            "active": 1,
            "level": 3,
            "local": datetime(2024, 6, 1, 8, 30),
            "local6": None,
            "stamp": datetime(2024, 1, 1, 8, 0),
            "day": date(2024, 10, 1),
            "doc": '{"a": [1, 2.5], "n": null}',
            "flags": "101",
            "tags": {"it's", "a"},
            "price": Decimal("12.50"),
            "at": timedelta(hours=1),
        },
        convs,
    )
    assert row == {
        "id": 7,
        "active": True,
        "level": 3,
        "local": datetime(2024, 6, 1, 8, 30, tzinfo=BERLIN),
        "local6": None,
        "stamp": datetime(2024, 1, 1, 8, 0, tzinfo=UTC),
        "day": date(2024, 10, 1),
        "doc": {"a": [1, 2.5], "n": None},
        "flags": 5,
        "tags": "a,it's",
        "price": Decimal("12.50"),
        "at": timedelta(hours=1),
    }
    assert row["active"] is True


def test_sql_reads_and_binlog_reads_agree_where_the_drivers_differ() -> None:
    # PyMySQL gives BIT as bytes, SET as text and MariaDB JSON as text; the binlog decoder gives
    # '101', a Python set and (MySQL) parsed JSON. Both must end up as one value.
    bit = converter("bit(3)", UTC)
    tags = converter("set('a','b','c')", UTC)
    doc = converter("json", UTC)
    assert bit is not None and tags is not None and doc is not None
    assert bit(b"\x05") == bit("101") == 5
    assert tags("a,c") == tags({"c", "a"}) == "a,c"
    assert doc('{"k": 1}') == doc(b'{"k": 1}') == doc({"k": 1}) == {"k": 1}
    zero = converter("datetime", BERLIN)
    assert zero is not None and zero("0000-00-00 00:00:00") is None


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2037, 1, 1)))
def test_a_converted_datetime_binds_back_to_the_stored_wall_time(naive: datetime) -> None:
    local = converter("datetime", BERLIN)
    stamp = converter("timestamp", BERLIN)
    assert local is not None and stamp is not None
    assert to_param(local(naive), BERLIN) == naive
    assert to_param(stamp(naive), BERLIN) == naive
    assert to_param(stamp(naive), UTC) == naive


def test_dsn_parsing() -> None:
    assert parse_dsn("mysql://rep:p%40ss@db.example:3307/erp?connect_timeout=5") == {
        "host": "db.example",
        "port": 3307,
        "user": "rep",
        "password": "p@ss",
        "database": "erp",
        "connect_timeout": 5,
    }
    assert parse_dsn("mariadb://root@127.0.0.1/")["port"] == 3306
    with pytest.raises(ValueError, match="unknown option 'sslmode'"):
        parse_dsn("mysql://u@h/db?sslmode=require")
    with pytest.raises(ValueError, match="mysql:// or mariadb://"):
        parse_dsn("postgresql://u@h/db")


def test_identifiers_are_backtick_quoted_and_values_are_placeholders() -> None:
    assert table_sql("erp.order`s") == "`erp`.`order``s`"
    assert in_list(["id"], 3) == "`id` IN (%s, %s, %s)"
    assert in_list(["a", "b"], 2) == "(`a`, `b`) IN ((%s, %s), (%s, %s))"
    assert after_key(["a"]) == "((`a` > %s))"
    assert after_key(["a", "b", "c"]) == (
        "((`a` > %s) OR (`a` = %s AND `b` > %s) OR (`a` = %s AND `b` = %s AND `c` > %s))"
    )
    assert after_key_params((1, "x", 3)) == [1, 1, "x", 1, "x", 3]


def test_related_rows_use_a_window_function_not_distinct_on() -> None:
    rel = Related(
        alias="email",
        table="erp.contact_mechanisms",
        join={"customer_id": "id"},
        where_sql=_erp_sql("kind = 'email' AND is_primary", "w", "mysql"),
        order_by_sql=_order_by_sql("id DESC", "o", "mysql"),
        columns=("id", "customer_id", "kind", "value", "is_primary"),
    )
    assert related_query(rel, 2) == (
        # PostgreSQL sorts NULLs first in a descending order: the MySQL rendering keeps that meaning.
        "SELECT * FROM (SELECT r.*, ROW_NUMBER() OVER (PARTITION BY `customer_id` "
        "ORDER BY CASE WHEN id IS NULL THEN 1 ELSE 0 END DESC, id DESC) AS _replicator_rank "
        "FROM `erp`.`contact_mechanisms` AS r WHERE `customer_id` IN (%s, %s) "
        "AND (kind = 'email' AND is_primary)) AS ranked WHERE _replicator_rank = 1"
    )


def test_related_where_is_rendered_in_the_erps_dialect() -> None:
    where = """"Kind" = 'email' AND value ILIKE '%@x.example' AND note || '!' <> 'a'"""
    assert _erp_sql(where, "w", "postgres") == where
    mysql = _erp_sql(where, "w", "mysql")
    assert "`Kind` = 'email'" in mysql
    assert "ILIKE" not in mysql and "||" not in mysql
    assert _order_by_sql('"Rank" DESC NULLS LAST', "o", "mysql").startswith("ORDER BY")
