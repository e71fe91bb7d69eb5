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

import json
import time
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any
from uuid import UUID

import httpx

from replicator.ops.metrics import CRM_API_DAILY_LIMIT, CRM_API_DAILY_USED, CRM_REQUEST_SECONDS, CRM_RESPONSES
from replicator.sinks.base import CrmError, Outcome, Result
from replicator.state.budget import Budget, BudgetExhausted, Priority

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


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"cannot send {type(value).__name__} to HubSpot: {value!r}")


def _float_header(resp: httpx.Response, name: str) -> float | None:
    raw = resp.headers.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def retry_after(resp: httpx.Response) -> float | None:
    """Seconds to wait, from Retry-After, else from an exhausted burst window's length."""
    raw = resp.headers.get("Retry-After")
    if raw:
        try:
            return max(float(raw), 0.0)
        except ValueError:
            pass
        try:
            return max(parsedate_to_datetime(raw).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            pass
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
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
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
        try:
            self.budget.acquire(self._priority())
        except BudgetExhausted as exc:
            raise CrmError(
                Result(
                    Outcome.TRANSIENT,
                    retry_after=exc.retry_after,
                    error=f"{method} {path}: the CRM API budget is exhausted, retry in {exc.retry_after:.0f}s",
                )
            ) from exc
        content = json.dumps(body, default=_json_default) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        start = time.perf_counter()
        try:
            resp = self.http.request(method, path, params=params, content=content, headers=headers)
        except httpx.TransportError as exc:
            self.budget.report(0, None)
            CRM_RESPONSES.labels(CRM, method, resource, "0").inc()
            raise CrmError(
                Result(Outcome.TRANSIENT, error=f"{method} {self.url}{path}: {type(exc).__name__}: {exc}")
            ) from exc
        finally:
            CRM_REQUEST_SECONDS.labels(CRM, method, resource).observe(time.perf_counter() - start)
        CRM_RESPONSES.labels(CRM, method, resource, str(resp.status_code)).inc()
        self.budget.report(resp.status_code, retry_after(resp) if resp.status_code in (429, 503) else None)
        self._note_daily(resp)
        return resp

    @staticmethod
    def _note_daily(resp: httpx.Response) -> None:
        limit = _float_header(resp, "X-HubSpot-RateLimit-Daily")
        remaining = _float_header(resp, "X-HubSpot-RateLimit-Daily-Remaining")
        if limit is not None:
            CRM_API_DAILY_LIMIT.labels(CRM).set(limit)
            if remaining is not None:
                CRM_API_DAILY_USED.labels(CRM).set(max(limit - remaining, 0.0))

    def expect_json(self, resp: httpx.Response, what: str) -> Any:
        if resp.is_success:
            try:
                return resp.json()
            except ValueError:
                raise CrmError(Result(Outcome.TRANSIENT, error=f"{what}: non-JSON answer: {resp.text[:300]}")) from None
        raise CrmError(classify(resp, what))

    def close(self) -> None:
        self.http.close()
