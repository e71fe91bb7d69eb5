"""Reading the modification times CRMs answer with."""

from __future__ import annotations

from datetime import datetime
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
