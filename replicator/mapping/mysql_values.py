"""One value model for MariaDB/MySQL rows, whether read with SQL or from the binary log.

PyMySQL and the binlog decoder disagree on a few types (SET, BIT, MariaDB's JSON);
both give naive datetimes. Each column gets a converter from its catalog type so that
the mapping sees what the PostgreSQL sources give: DECIMAL as Decimal, booleans
(TINYINT(1)) as bool, DATETIME in `erp.timezone`, TIMESTAMP in UTC, JSON parsed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

from replicator.change import Row

Converter = Callable[[Any], Any]

_SET_MEMBERS = re.compile(r"'((?:[^']|'')*)'")


def _boolean(value: Any) -> Any:
    return bool(value) if isinstance(value, int) else value


def _zoned(zone: tzinfo) -> Converter:
    def convert(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.replace(tzinfo=zone) if value.tzinfo is None else value
        if isinstance(value, str):  # a zero date ('0000-00-00 ...') is no point in time
            return None
        return value

    return convert


def _date(value: Any) -> Any:
    return None if isinstance(value, str) else value


def _json(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    return json.loads(value) if isinstance(value, str) else value


def _bit(value: Any) -> Any:
    if isinstance(value, bytes):
        return int.from_bytes(value, "big")
    if isinstance(value, str):  # the binlog decoder spells bits out: '101'
        return int(value, 2)
    return value


def _set(members: list[str]) -> Converter:
    def convert(value: Any) -> Any:
        if isinstance(value, set | frozenset):  # the binlog decoder gives a Python set
            return ",".join(m for m in members if m in value)
        return value

    return convert


def converter(column_type: str, zone: tzinfo) -> Converter | None:
    """The converter for a column of `column_type` (information_schema COLUMN_TYPE), or None."""
    kind = column_type.lower()
    if kind.startswith("tinyint(1)"):
        return _boolean
    if kind.startswith("datetime"):
        return _zoned(zone)
    if kind.startswith("timestamp"):
        return _zoned(UTC)
    if kind == "date":
        return _date
    if kind == "json":
        return _json
    if kind.startswith("bit"):
        return _bit
    if kind.startswith("set("):
        return _set([m.replace("''", "'") for m in _SET_MEMBERS.findall(column_type)])
    return None


def converters(types: Mapping[str, str], zone: tzinfo) -> dict[str, Converter]:
    out = {}
    for column, column_type in types.items():
        conv = converter(column_type, zone)
        if conv is not None:
            out[column] = conv
    return out


def convert_row(row: Row, convs: Mapping[str, Converter]) -> Row:
    """Converts `row` in place (and returns it); NULL stays None."""
    for column, conv in convs.items():
        value = row.get(column)
        if value is not None:
            row[column] = conv(value)
    return row


def to_param(value: Any, zone: tzinfo) -> Any:
    """A value bound into a query: an aware datetime goes back to the wall time its column holds
    (DATETIME values carry `erp.timezone`, TIMESTAMP values UTC, the session's zone)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(zone if value.tzinfo is zone else UTC).replace(tzinfo=None)
    return value
