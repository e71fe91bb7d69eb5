"""Response headers every Salesforce answer may carry.

``Sforce-Limit-Info: api-usage=used/limit`` ("Limit Info Header", REST API Developer Guide);
``Retry-After`` in seconds or as an HTTP date (RFC 9110), sent with 429 and some 503s.
"""

from __future__ import annotations

import re
import time
from email.utils import parsedate_to_datetime

import httpx

_API_USAGE = re.compile(r"(?:^|[;,\s])api-usage=(\d+)/(\d+)")


def parse_limit_info(header: str | None) -> tuple[int, int] | None:
    """(used, limit) from ``Sforce-Limit-Info: api-usage=18/5000; per-app-api-usage=...``."""
    if not header:
        return None
    match = _API_USAGE.search(header)
    return (int(match.group(1)), int(match.group(2))) if match else None


def retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(raw).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None
