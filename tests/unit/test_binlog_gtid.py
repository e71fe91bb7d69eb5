"""GTID positions, binlog offsets and statement parsing of the binlog source."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.sources.binlog import truncated_table
from replicator.sources.binlog_gtid import (
    GtidError,
    advance,
    format_position,
    offset,
    parse_position,
    purged_domains,
)


def test_positions_parse_format_and_advance_per_domain() -> None:
    state = parse_position("0-1-42, 1-7-3")
    assert state == {0: (1, 42), 1: (7, 3)}
    assert format_position(advance(state, "0-2-43")) == "0-2-43,1-7-3"
    assert format_position(advance(state, "5-1-1")) == "0-1-42,1-7-3,5-1-1"
    assert parse_position("") == {}
    with pytest.raises(GtidError, match="domain-server-sequence"):
        parse_position("mariadb-bin.000001:4")


@given(st.lists(st.tuples(st.integers(1, 999_999), st.integers(4, 2**32 - 1)), min_size=2, max_size=20, unique=True))
def test_offsets_order_like_binlog_coordinates(coords: list[tuple[int, int]]) -> None:
    ordered = sorted(coords)
    offsets = [offset(f"mariadb-bin.{index:06d}", pos) for index, pos in ordered]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


def test_purged_domains_compare_with_the_oldest_binlogs_gtid_list() -> None:
    assert purged_domains("0-1-10", "0-1-10") == []
    assert purged_domains("0-1-11,1-1-5", "0-1-10") == []
    assert purged_domains("0-1-9", "0-1-10") == ["0-1-10"]
    assert purged_domains("0-1-50", "0-1-10,2-3-4") == ["2-3-4"]  # a domain the position never saw


@pytest.mark.parametrize(
    ("query", "table"),
    [
        ("TRUNCATE items", "erp.items"),
        ("truncate table `items`", "erp.items"),
        ("TRUNCATE TABLE other.`my items`", "other.my items"),
        ("  TRUNCATE `shop` . orders", "shop.orders"),
        ("DELETE FROM items", None),
        ("ALTER TABLE items ADD COLUMN x INT", None),
    ],
)
def test_truncate_statements_name_their_table(query: str, table: str | None) -> None:
    assert truncated_table(query, "erp") == table
