"""Reading the modification times CRMs answer with, and writing times the way they read them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse_aware_datetime(value: Any) -> datetime | None:
    """An aware datetime from ISO 8601 text (``...Z``, ``...+0000``, ``...+00:00``).

    None when the value is absent, unreadable or has no time zone: a naive time cannot be
    ordered against the others, so it is treated as unknown rather than guessed.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def utc_ms(value: datetime) -> str:
    """``2026-12-05T14:20:35.000Z``: UTC with milliseconds, as Salesforce keeps times (finer digits
    are cut off). A naive time is taken as UTC already."""
    utc = value.astimezone(UTC) if value.tzinfo else value
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
