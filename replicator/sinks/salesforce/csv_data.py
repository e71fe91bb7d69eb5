"""CSV the way Bulk API 2.0 reads and writes it.

Following "Prepare CSV Files" (Bulk API 2.0 and Bulk API Developer Guide): UTF-8; the
first row names the fields; comma delimiter; line ending LF (we create every job with
``lineEnding: LF``); a value holding the delimiter, a double quote or a line break is
enclosed in double quotes, with inner double quotes doubled; values are not trimmed, and
whitespace outside the quotes is an error, so nothing is ever padded. An empty value leaves
the field as it is on update; ``#N/A`` sets it to null.

Our convention for a row: a field absent from the record is written empty (left alone);
``None`` and ``""`` are written ``#N/A`` (cleared), because the ERP said "no value".
A literal text value ``#N/A`` cannot be told apart from null by Salesforce; it is sent
quoted, which is the best CSV can say.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from replicator.sinks.timestamps import utc_ms

NULL = "#N/A"
_QUOTE_WHEN = frozenset(',"\n\r')


def cell(value: Any) -> str:
    """One value as CSV text (quoted when it must be)."""
    if value is None or value == "":
        return NULL
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, datetime):
        text = utc_ms(value)
    elif isinstance(value, date):
        text = value.isoformat()
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, int | Decimal | str):
        text = str(value)
    else:
        raise TypeError(f"cannot write {type(value).__name__} value {value!r} to a Bulk API CSV")
    if text == NULL or any(ch in _QUOTE_WHEN for ch in text):
        return '"' + text.replace('"', '""') + '"'
    return text


def header_cell(name: str) -> str:
    if any(ch in _QUOTE_WHEN for ch in name):
        raise ValueError(f"field name {name!r} cannot be a CSV column for Bulk API")
    return name


def header_line(columns: Sequence[str]) -> str:
    return ",".join(header_cell(c) for c in columns)


def row_line(columns: Sequence[str], row: Mapping[str, Any]) -> str:
    """One row without its line ending; a column the row lacks is left empty."""
    return ",".join(cell(row[c]) if c in row else "" for c in columns)


def join_lines(header: str, lines: Iterable[str]) -> str:
    """The CSV text: the header, then each line, every one LF-terminated."""
    return "\n".join([header, *lines]) + "\n"


def build_csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """A header line and one LF-terminated line per row; a column a row lacks is left empty."""
    return join_lines(header_line(columns), (row_line(columns, row) for row in rows))


def parse_csv(text: str) -> list[dict[str, str]]:
    """Rows of a Bulk API result CSV, keyed by its header (values are raw text)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return []
    return [dict(zip(header, row, strict=False)) for row in reader if row]
