"""HTTP access to the Salesforce REST API: one request helper (token, budget, metrics, limit
headers, one re-login on an expired session), SOQL queries, and error classification.

Behaviour and where it is documented (REST API Developer Guide unless said otherwise):

- Every answer carries ``Sforce-Limit-Info: api-usage=used/limit`` ("Limit Info Header"):
  it feeds ``CRM_API_DAILY_USED`` / ``CRM_API_DAILY_LIMIT``.
- Errors are a JSON array of ``{"errorCode", "message", "fields"}`` ("Status Codes and
  Error Responses"). ``401`` with ``INVALID_SESSION_ID`` means the token expired or was
  revoked: we get a new one once and send the request again once.
- ``403`` with ``REQUEST_LIMIT_EXCEEDED`` means the org used up its API request allocation.
  That allocation is counted over a rolling 24 hours ("API Request Limits and Allocations",
  Salesforce Developer Limits and Allocations Quick Reference), so calls made a day ago age
  out continuously and some room comes back within minutes; waiting for a fixed window
  reset would wait for something that never happens. We retry after
  :data:`REQUEST_LIMIT_WAIT_S` and let the shared budget slow everyone down meanwhile.
- ``429`` and ``5xx`` are transient, with ``Retry-After`` when sent.
- Query results come in batches; ``nextRecordsUrl`` names the next one until ``done``
  ("Execute a SOQL Query").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from replicator.sinks.base import Outcome, Result
from replicator.sinks.http import budgeted, expect_json, pooled_client, retry_after, send
from replicator.sinks.salesforce.auth import Credentials, Token, TokenSource
from replicator.sinks.salesforce.headers import parse_limit_info
from replicator.state.budget import Budget, Priority

CRM = "salesforce"

# Five minutes: long enough not to burn the few calls that age out of the rolling 24-hour
# window on retries, short enough that a live change waits minutes, not a day.
REQUEST_LIMIT_WAIT_S = 300.0

# Per-record or per-request error codes that a later retry of the same payload can clear:
# record locks held by another transaction, the org's API allocation, platform hiccups.
TRANSIENT_CODES = frozenset(
    {
        "UNABLE_TO_LOCK_ROW",
        "REQUEST_LIMIT_EXCEEDED",
        "SERVER_UNAVAILABLE",
        "REQUEST_RUNNING_TOO_LONG",
        "QUERY_TIMEOUT",
        "API_CURRENTLY_DISABLED",
        "CONCURRENT_PER_ORG_LONG_TXN_EXCEEDED",
    }
)

_API_VERSION = re.compile(r"v\d+\.\d")


def error_codes(resp: httpx.Response) -> list[tuple[str, str]]:
    """(errorCode, message) pairs of an error answer; empty when the body is not Salesforce's shape."""
    try:
        data = resp.json()
    except ValueError:
        return []
    items = data if isinstance(data, list) else [data]
    return [
        (str(i.get("errorCode", "")), str(i.get("message", "")))
        for i in items
        if isinstance(i, dict) and "errorCode" in i
    ]


def classify(resp: httpx.Response, what: str) -> Result:
    """A Result for an answer the caller did not handle itself."""
    code = resp.status_code
    errors = error_codes(resp)
    codes = {c for c, _ in errors}
    text = "; ".join(f"{c}: {m}" for c, m in errors) or resp.text[:500]
    detail = f"{what}: HTTP {code}: {text}"
    if "REQUEST_LIMIT_EXCEEDED" in codes:
        return Result(
            Outcome.TRANSIENT,
            error=f"{detail} (the org's API allocation over the last 24 h is used up; it frees up as "
            "old calls age out, or raise it in Salesforce)",
            status_code=code,
            retry_after=retry_after(resp) or REQUEST_LIMIT_WAIT_S,
        )
    if code == 401:
        return Result(
            Outcome.PERMANENT,
            error=f"{detail} (a fresh token was rejected too: check that the integration user is active "
            "and has the API Enabled permission)",
            status_code=code,
        )
    if code == 429 or code >= 500 or codes & TRANSIENT_CODES:
        return Result(Outcome.TRANSIENT, error=detail, status_code=code, retry_after=retry_after(resp))
    return Result(Outcome.PERMANENT, error=detail, status_code=code)


def _pause(resp: httpx.Response) -> float | None:
    """How long the org asked everyone to wait: Retry-After, or for the daily allocation's
    403 REQUEST_LIMIT_EXCEEDED (which carries none) REQUEST_LIMIT_WAIT_S."""
    wait = retry_after(resp)
    if wait is None and resp.status_code == 403 and any(c == "REQUEST_LIMIT_EXCEEDED" for c, _ in error_codes(resp)):
        return REQUEST_LIMIT_WAIT_S
    return wait


def _invalid_session(resp: httpx.Response) -> bool:
    return resp.status_code == 401 and any(c == "INVALID_SESSION_ID" for c, _ in error_codes(resp))


def plain(record: dict[str, Any]) -> dict[str, Any]:
    """A record without Salesforce's ``attributes`` metadata."""
    return {k: v for k, v in record.items() if k != "attributes"}


class SalesforceClient:
    """Thread-safe: one pooled httpx.Client, one token shared by all threads."""

    def __init__(
        self,
        login_url: str,
        credentials: Credentials,
        *,
        api_version: str,
        budget: Budget,
        timeout: float,
        max_connections: int,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not _API_VERSION.fullmatch(api_version):
            raise ValueError(f"api_version {api_version!r} must look like v62.0")
        self.api = f"/services/data/{api_version}"
        self.budget = budget
        self.priority = Priority.LIVE
        self.http = pooled_client(timeout=timeout, max_connections=max_connections, transport=transport)
        self.tokens = TokenSource(login_url, credentials, self._post_form)

    # ------------------------------------------------------------------ sending

    def _send(self, method: str, url: str, resource: str, **kwargs: Any) -> httpx.Response:
        """One HTTP exchange through the budget, timed and counted; no response raises CrmError(TRANSIENT)."""
        return budgeted(
            self.budget,
            self.priority,
            f"{method} {resource}",
            CRM,
            lambda: send(self.http, CRM, method, resource, url, **kwargs),
            pause=_pause,
            daily=lambda resp: parse_limit_info(resp.headers.get("Sforce-Limit-Info")),
        )

    def _post_form(self, url: str, form: dict[str, str]) -> httpx.Response:
        return self._send("POST", url, "oauth_token", data=form, headers={"Accept": "application/json"})

    def request(
        self,
        method: str,
        resource: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: str | bytes | None = None,
        content_type: str | None = None,
        accept: str = "application/json",
    ) -> httpx.Response:
        """Send one API request to ``instance_url + path``; on an expired session, re-login once and resend once."""
        body = orjson.dumps(json) if json is not None else content
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        token = self.tokens.current()
        resp = self._authorised(method, resource, token, path, params, body, headers)
        if _invalid_session(resp):
            token = self.tokens.renew(token)
            resp = self._authorised(method, resource, token, path, params, body, headers)
        return resp

    def _authorised(
        self,
        method: str,
        resource: str,
        token: Token,
        path: str,
        params: dict[str, Any] | None,
        body: str | bytes | None,
        headers: dict[str, str],
    ) -> httpx.Response:
        return self._send(
            method,
            token.instance_url + path,
            resource,
            params=params,
            content=body,
            headers={**headers, "Authorization": f"Bearer {token.access_token}"},
        )

    def expect_json(self, resp: httpx.Response, what: str) -> Any:
        return expect_json(resp, what, classify)

    # ------------------------------------------------------------------ reading

    def query(self, soql: str, resource: str) -> Iterator[dict[str, Any]]:
        """Every record a SOQL query answers, following ``nextRecordsUrl`` batch by batch."""
        resp = self.request("GET", resource, f"{self.api}/query", params={"q": soql})
        while True:
            data = self.expect_json(resp, f"query {soql[:200]}")
            for record in data.get("records") or []:
                yield plain(record)
            next_url = data.get("nextRecordsUrl")
            if data.get("done", True) or not next_url:
                return
            resp = self.request("GET", resource, str(next_url))

    def close(self) -> None:
        self.http.close()
        self.budget.close()
