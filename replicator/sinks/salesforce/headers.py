"""Response headers every Salesforce answer may carry.

``Sforce-Limit-Info: api-usage=used/limit`` ("Limit Info Header", REST API Developer Guide).
``Retry-After``, sent with 429 and some 503s, is read by :func:`replicator.sinks.http.retry_after`.
"""

from __future__ import annotations

import re

_API_USAGE = re.compile(r"(?:^|[;,\s])api-usage=(\d+)/(\d+)")


def parse_limit_info(header: str | None) -> tuple[int, int] | None:
    """(used, limit) from ``Sforce-Limit-Info: api-usage=18/5000; per-app-api-usage=...``."""
    if not header:
        return None
    match = _API_USAGE.search(header)
    return (int(match.group(1)), int(match.group(2))) if match else None
