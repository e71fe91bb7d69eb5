"""Building SOQL text safely, and reading Salesforce's datetimes back.

Only a small, documented subset of SOQL is ever emitted: ``SELECT fields FROM object
[WHERE ...] [ORDER BY ...] [LIMIT n]`` with string, number, boolean, null and datetime
literals. Values never reach a query except through :func:`literal`.

String literals follow "Quoted String Escape Sequences" and "Reserved Characters" in the
SOQL and SOSL Reference (developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta): the
single quote and the backslash are reserved and must be preceded by a backslash; new
line, carriage return and tab have the escapes ``\\n``, ``\\r`` and ``\\t``.

Datetime literals follow "Date Formats and Date Literals" of the same reference: unquoted
``YYYY-MM-DDThh:mm:ss.sssZ``. Salesforce answers datetimes as ``2026-12-05T14:20:35.000+0000``
(REST API Developer Guide, e.g. the ``SystemModstamp`` of any record).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from replicator.sinks.timestamps import parse_aware_datetime, utc_ms

_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r"[\\'\n\r\t]")
# API names: letters, digits and underscores, starting with a letter (custom ones end in __c);
# relationship paths join them with dots.
_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*")


def quote(value: str) -> str:
    """A SOQL string literal that means exactly `value`, whatever quotes or backslashes it holds."""
    return "'" + _NEEDS_ESCAPE.sub(lambda m: _ESCAPES[m.group()], value) + "'"


def datetime_literal(value: datetime) -> str:
    """An unquoted SOQL datetime literal in UTC with milliseconds (``2026-12-05T14:20:35.000Z``).

    Salesforce keeps milliseconds; finer digits are cut off (callers that care about the
    cut, like keyset paging, handle it themselves)."""
    if value.tzinfo is None:
        raise ValueError(f"datetime {value!r} has no time zone; SOQL needs an absolute time")
    return utc_ms(value)


def literal(value: Any) -> str:
    """Any value the connector ever puts into a query, as SOQL text."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return datetime_literal(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return quote(value)
    raise TypeError(f"no SOQL literal for {type(value).__name__} value {value!r}")


def field_name(name: str) -> str:
    """`name` when it is a valid API (field or object) name; raises otherwise, so nothing else is spliced in."""
    if not _FIELD.fullmatch(name):
        raise ValueError(f"{name!r} is not a Salesforce API name (letters, digits, _ and dots only)")
    return name


def in_list(values: Iterable[Any]) -> str:
    """``(v1, v2, ...)`` for ``IN``."""
    items = [literal(v) for v in values]
    if not items:
        raise ValueError("IN () needs at least one value")
    return "(" + ", ".join(items) + ")"


def select(
    fields: Sequence[str],
    sobject: str,
    *,
    where: str | None = None,
    order_by: Sequence[str] = (),
    limit: int | None = None,
) -> str:
    """A SELECT statement; `where` must have been built from :func:`literal` values."""
    if not fields:
        raise ValueError(f"SELECT from {sobject} needs at least one field")
    text = f"SELECT {', '.join(field_name(f) for f in fields)} FROM {field_name(sobject)}"
    if where:
        text += f" WHERE {where}"
    if order_by:
        text += " ORDER BY " + ", ".join(order_by)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"LIMIT must be >= 1, got {limit}")
        text += f" LIMIT {int(limit)}"
    return text


# Salesforce's ``2026-12-05T14:20:35.000+0000`` (or ``...Z``) is ISO 8601 as fromisoformat reads it.
parse_datetime = parse_aware_datetime
