"""HTTP access to HubSpot's CRM API: one request helper (budget, metrics, rate-limit
headers) and the classification of answers into sink Results.

Authentication is a private app's access token sent as ``Authorization: Bearer``
(developers.hubspot.com/docs/apps/legacy-apps/private-apps/overview). Rate limits follow
"API usage guidelines and limits" (developers.hubspot.com/docs/developer-tooling/platform/
usage-guidelines): a 429 names the policy it hit, and responses carry
``X-HubSpot-RateLimit-Max/-Remaining/-Interval-Milliseconds`` (the burst window) and, for
private apps, ``X-HubSpot-RateLimit-Daily/-Daily-Remaining``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from replicator.sinks.base import CrmError, Outcome, Result
from replicator.sinks.http import budgeted, expect_json, pooled_client, send_json
from replicator.sinks.http import retry_after as parse_retry_after
from replicator.state.budget import Budget, Priority

CRM = "hubspot"
BATCH_LIMIT = 100  # inputs per batch call (objects and associations batch endpoints)

# Our object name -> HubSpot object type in URLs.
OBJECT_TYPES: dict[str, str] = {
    "account": "companies",
    "contact": "contacts",
    "product": "products",
    "opportunity": "deals",
    "line_item": "line_items",
}


# The property holding a record's last modification: contacts keep HubSpot's older name
# (CRM search guide, default properties per object: contacts return `lastmodifieddate`,
# companies, deals, products and line items `hs_lastmodifieddate`).
MODIFIED_PROPERTY: dict[str, str] = {obj: "hs_lastmodifieddate" for obj in OBJECT_TYPES} | {
    "contact": "lastmodifieddate"
}


def object_type(object: str) -> str:
    try:
        return OBJECT_TYPES[object]
    except KeyError:
        raise CrmError(
            Result(Outcome.PERMANENT, error=f"HubSpot sink has no object {object!r}; use one of {list(OBJECT_TYPES)}")
        ) from None


def _float_header(resp: httpx.Response, name: str) -> float | None:
    raw = resp.headers.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def daily_usage(resp: httpx.Response) -> tuple[float, float] | None:
    """(used, limit) of the account's daily quota from ``X-HubSpot-RateLimit-Daily[-Remaining]``."""
    limit = _float_header(resp, "X-HubSpot-RateLimit-Daily")
    remaining = _float_header(resp, "X-HubSpot-RateLimit-Daily-Remaining")
    if limit is None or remaining is None:
        return None
    return max(limit - remaining, 0.0), limit


def retry_after(resp: httpx.Response) -> float | None:
    """Seconds to wait, from Retry-After, else from an exhausted burst window's length."""
    wait = parse_retry_after(resp)
    if wait is not None:
        return wait
    if resp.status_code == 429 and _float_header(resp, "X-HubSpot-RateLimit-Remaining") == 0:
        interval_ms = _float_header(resp, "X-HubSpot-RateLimit-Interval-Milliseconds")
        if interval_ms is not None:
            return interval_ms / 1000
    return None


def body_text(resp: httpx.Response, limit: int = 1000) -> str:
    """HubSpot's error message (its JSON ``message``) or the raw body, shortened."""
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:limit]
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        category = data.get("category")
        return (f"{category}: " if category else "") + data["message"][:limit]
    return resp.text[:limit]


def classify(resp: httpx.Response, what: str) -> Result:
    """Map a non-2xx answer to a Result (for answers the caller did not handle itself)."""
    code = resp.status_code
    detail = f"{what}: HTTP {code}: {body_text(resp)}"
    if code == 401:
        return Result(
            Outcome.PERMANENT,
            error=f"token rejected: {detail} (check the HubSpot private app access token)",
            status_code=code,
        )
    if code == 403:
        return Result(
            Outcome.PERMANENT,
            error=f"not allowed: {detail} (give the private app the crm.objects.*.read/write and "
            "crm.schemas.*.read/write scopes of the objects synced)",
            status_code=code,
        )
    if code == 429 or code >= 500:
        return Result(Outcome.TRANSIENT, error=detail, status_code=code, retry_after=retry_after(resp))
    return Result(Outcome.PERMANENT, error=detail, status_code=code)


class HubSpotClient:
    """One pooled httpx.Client; every request passes the shared CRM API budget first."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        budget: Budget,
        priority: Callable[[], Priority],
        timeout: float,
        max_connections: int,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.budget = budget
        self._priority = priority
        self.http = pooled_client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
            max_connections=max_connections,
            transport=transport,
        )

    def request(
        self,
        method: str,
        resource: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> httpx.Response:
        """Send one request; an exhausted budget and transport failures raise CrmError(TRANSIENT)."""
        return budgeted(
            self.budget,
            self._priority(),
            f"{method} {path}",
            CRM,
            lambda: send_json(self.http, CRM, "HubSpot", method, resource, path, params=params, body=body),
            pause=lambda resp: retry_after(resp) if resp.status_code in (429, 503) else None,
            daily=daily_usage,
        )

    def expect_json(self, resp: httpx.Response, what: str) -> Any:
        return expect_json(resp, what, classify)

    def close(self) -> None:
        self.http.close()
        self.budget.close()
