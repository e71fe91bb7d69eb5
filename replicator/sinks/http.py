"""What the CRM clients share over HTTP: the pooled client, JSON bodies, ``Retry-After``,
the shared budget's refusal, one timed, counted exchange, and that exchange through the budget.

``Retry-After`` is seconds or an HTTP date (RFC 9110, section 10.2.3). What differs per
vendor (authentication, rate-limit headers, error classification) stays in each client.
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


def pooled_client(
    *, timeout: float, max_connections: int, transport: httpx.BaseTransport | None = None, **kwargs: Any
) -> httpx.Client:
    """One httpx.Client keeping up to ``max_connections`` connections alive (it is thread-safe)."""
    return httpx.Client(
        timeout=timeout,
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        transport=transport,
        **kwargs,
    )


def encode_json(body: Any, crm_name: str) -> str:
    """``body`` as JSON text; decimals go as strings so no digit is lost to a float."""

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, datetime | date):
            return value.isoformat()
        if isinstance(value, UUID):
            return str(value)
        raise TypeError(f"cannot send {type(value).__name__} to {crm_name}: {value!r}")

    return json.dumps(body, default=default)


def retry_after(resp: httpx.Response) -> float | None:
    """Seconds the answer asks us to wait; None when it names no (readable) wait."""
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


def short_body(resp: httpx.Response, limit: int = 1000) -> str:
    """The answer's body, shortened; an HTML error page is reduced to its title."""
    text = resp.text
    if "html" in resp.headers.get("content-type", ""):
        start, end = text.find("<title>"), text.find("</title>")
        text = text[start + 7 : end].strip() if 0 <= start < end else "HTML error page"
    return text[:limit]


def acquire(budget: Budget, priority: Priority, what: str) -> None:
    """Take one call from the shared CRM API budget; its refusal raises CrmError(TRANSIENT)."""
    try:
        budget.acquire(priority)
    except BudgetExhausted as exc:
        raise CrmError(
            Result(
                Outcome.TRANSIENT,
                retry_after=exc.retry_after,
                error=f"{what}: the CRM API budget is exhausted, retry in {exc.retry_after:.0f}s",
            )
        ) from exc


def budgeted(
    budget: Budget,
    priority: Priority,
    what: str,
    crm: str,
    exchange: Callable[[], httpx.Response],
    *,
    pause: Callable[[httpx.Response], float | None],
    daily: Callable[[httpx.Response], tuple[float, float] | None],
) -> httpx.Response:
    """One exchange through the shared budget: take a call, make it, report its status with the
    pause the CRM asked for (`pause`), and pass on the credential's daily (used, limit) the answer
    carries (`daily`) to the budget and the gauges. No answer raises CrmError(TRANSIENT)."""
    acquire(budget, priority, what)
    try:
        resp = exchange()
    except CrmError:
        budget.report(0, None)  # no answer: says nothing of the limit, reported like any exchange
        raise
    budget.report(resp.status_code, pause(resp))
    usage = daily(resp)
    if usage is not None:
        used, limit = usage
        CRM_API_DAILY_USED.labels(crm).set(used)
        CRM_API_DAILY_LIMIT.labels(crm).set(limit)
        budget.observe_daily(int(used))
    return resp


def send(
    http: httpx.Client, crm: str, method: str, resource: str, url: str, *, shown_url: str | None = None, **kwargs: Any
) -> httpx.Response:
    """One exchange, timed and counted per CRM/method/resource; no answer raises CrmError(TRANSIENT).

    ``shown_url`` is the URL an error names when ``url`` is relative to the client's base URL.
    """
    start = time.perf_counter()
    try:
        resp = http.request(method, url, **kwargs)
    except httpx.TransportError as exc:
        CRM_RESPONSES.labels(crm, method, resource, "0").inc()
        raise CrmError(
            Result(Outcome.TRANSIENT, error=f"{method} {shown_url or url}: {type(exc).__name__}: {exc}")
        ) from exc
    finally:
        CRM_REQUEST_SECONDS.labels(crm, method, resource).observe(time.perf_counter() - start)
    CRM_RESPONSES.labels(crm, method, resource, str(resp.status_code)).inc()
    return resp


def send_json(
    http: httpx.Client,
    crm: str,
    crm_name: str,
    method: str,
    resource: str,
    path: str,
    *,
    params: dict[str, Any] | None,
    body: Any,
) -> httpx.Response:
    """:func:`send` to ``path`` under the client's base URL, with ``body`` as JSON (None: no body)."""
    content = encode_json(body, crm_name) if body is not None else None
    headers = {"Content-Type": "application/json"} if content is not None else None
    shown_url = str(http.base_url).rstrip("/") + path
    return send(http, crm, method, resource, path, shown_url=shown_url, params=params, content=content, headers=headers)


def expect_json(resp: httpx.Response, what: str, classify: Callable[[httpx.Response, str], Result]) -> Any:
    """The decoded body of a 2xx answer; any other answer raises CrmError(``classify(resp, what)``)."""
    if resp.is_success:
        try:
            return resp.json()
        except ValueError:
            raise CrmError(
                Result(Outcome.TRANSIENT, error=f"{what}: the answer is not JSON: {short_body(resp, 300)!r}")
            ) from None
    raise CrmError(classify(resp, what))
