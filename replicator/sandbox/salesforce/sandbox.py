"""The Salesforce sandbox server: OAuth 2.0, REST sObject rows, sObject Collections, SOQL, Bulk API 2.0.

Each handler names the page of the REST API Developer Guide (developer.salesforce.com/docs/
atlas.en-us.api_rest.meta, "REST API Developer Guide"), the Bulk API 2.0 guide or the
Salesforce Help OAuth pages it follows. This module holds the routing table, authentication,
limits, inspection, OAuth, versions, org limits and describe; the other handlers live in
``rows`` (sObject rows), ``sobject_collections`` (sObject Collections), ``query`` (SOQL) and
``bulk_api`` (Bulk API 2.0), sharing ``api``. Cross-cutting behaviour:

- Errors are JSON arrays ``[{"message", "errorCode", "fields"?}]`` ("Status Codes and Error
  Responses"); per-record errors inside collection answers are ``{"statusCode", "message",
  "fields"}``.
- Every API answer carries ``Sforce-Limit-Info: api-usage=used/allocation`` ("Response
  Headers" → Limit Info Header). Each API request (REST and Bulk API 2.0; not the OAuth token
  endpoint) counts against the rolling 24 h allocation (``daily_allocation``, or
  ``Limits.daily`` when set); over it the answer is 403 REQUEST_LIMIT_EXCEEDED ("API Request
  Limits and Allocations").
- Salesforce documents no HTTP 429 for the REST API. The burst limit (``Limits.burst``) and
  the injected 429 fault are sandbox behaviour for exercising clients: 429 with
  ``Retry-After`` and a Salesforce-shaped error array. Injected 5xx answers 500
  UNKNOWN_EXCEPTION like a Salesforce internal error.

Not implemented: other sObjects, relationship fields in bodies or queries, queryAll, the
Composite/Batch/Tree resources, If-Modified-Since, HEAD, XML, gzip, OAuth flows other than
client credentials / refresh token / username-password, token revocation and introspection.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import secrets
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

from replicator.sandbox.core import BadRequest, Faults, Limits, Request, Response, _seconds

from .api import SalesforceError
from .bulk import BulkJobs
from .bulk_api import BulkApiMixin
from .query import QueryMixin
from .rows import RowsMixin
from .schema import SOBJECTS, RecordError, parse_datetime
from .sobject_collections import MAX_COLLECTION, CollectionsMixin
from .store import Record, Store

ORG_ID = "00D5g0000000001EAA"
USER_ID = "0055g0000000001AAA"
_DATA = r"/services/data/v(?P<version>\d+\.\d)"
_SEG = r"[^/]+"


class SalesforceSandbox(RowsMixin, CollectionsMixin, QueryMixin, BulkApiMixin):
    """A Salesforce org in a box: Account, Contact, Product2, Opportunity with ``ERP_Id__c``.

    Python-side helpers for tests: `records`, `expire_tokens`, `issue_token`, `freeze_clock`,
    `api_usage`. Extra inspection endpoints besides the shared ones: ``POST
    /__sandbox/expire_tokens`` and ``GET``/``POST /__sandbox/clock`` (``{"freeze": iso|null}``).
    """

    vendor = "salesforce"
    # The org's allocation counts API calls, not OAuth token requests: `_charge` enforces it
    # (``Limits.daily`` or `daily_allocation`), alone, so the two never count differently.
    enforces_daily = False

    def __init__(
        self,
        client_id: str = "sandbox-client",
        client_secret: str = "sandbox-secret",
        *,
        token_ttl_s: float = 3600,
        faults: Faults | None = None,
        limits: Limits | None = None,
        api_version: str = "v62.0",
        daily_allocation: int = 100_000,
        bulk_poll_delay_s: float = 0.2,
        query_page_size: int = 2000,
        refresh_token: str = "sandbox-refresh-token",
        username: str = "integration@sandbox.example",
        password: str = "sandbox-password",
    ) -> None:
        super().__init__(faults=faults, limits=limits)
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl_s = token_ttl_s
        self.api_version = api_version
        self.daily_allocation = daily_allocation
        self.query_page_size = query_page_size
        self.refresh_token = refresh_token
        self.username = username
        self.password = password
        self.store = Store()
        self.bulk = BulkJobs(self, bulk_poll_delay_s)
        self._tokens: dict[str, float] = {}  # access token -> monotonic expiry
        self._usage: deque[float] = deque()  # monotonic times of API requests in the last 24 h
        self._cursors: dict[str, tuple[list[dict[str, Any]], float]] = {}
        self._cursor_serial = 0
        self._routes_salesforce()

    # ------------------------------------------------------------ python-side helpers

    def records(self, sobject: str, *, include_deleted: bool = False) -> list[Record]:
        """Copies of the records of `sobject` in creation order."""
        with self.lock:
            rows = self.store.records[self._sobject(sobject).name].values()
            return [copy.deepcopy(r) for r in rows if include_deleted or not r["IsDeleted"]]

    def expire_tokens(self) -> int:
        """Invalidate every access token (as a session timeout would); returns how many there were."""
        with self.lock:
            count = len(self._tokens)
            self._tokens.clear()
            return count

    def issue_token(self) -> str:
        """An access token as the OAuth endpoint would issue it (for tests that skip the login)."""
        with self.lock:
            token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(48)}"
            self._tokens[token] = time.monotonic() + self.token_ttl_s
            return token

    def freeze_clock(self, moment: datetime | None) -> None:
        """Stamp every write with `moment` (None: the wall clock again)."""
        with self.lock:
            self.store.clock.frozen = moment.astimezone(UTC) if moment is not None else None

    def api_usage(self) -> tuple[int, int]:
        """(API requests in the last 24 h, the allocation) as ``Sforce-Limit-Info`` reports them."""
        with self.lock:
            self._expire_usage(time.monotonic())
            return len(self._usage), self.allocation()

    def allocation(self) -> int:
        return self.limits.daily if self.limits.daily is not None else self.daily_allocation

    # ------------------------------------------------------------ core hooks

    def dispatch(self, req: Request) -> Any:
        if req.path == "/__sandbox/expire_tokens" and req.method == "POST":
            return Response(200, {"expired": self.expire_tokens()})
        if req.path == "/__sandbox/clock":
            if req.method == "POST":
                body = req.json() if req.body else {}
                frozen = body.get("freeze") if isinstance(body, dict) else None
                moment = parse_datetime(frozen) if isinstance(frozen, str) else None
                if frozen is not None and moment is None:
                    return Response(400, {"error": f"freeze must be an ISO 8601 datetime or null, got {frozen!r}"})
                self.freeze_clock(moment)
            with self.lock:
                return Response(200, {"now": self.store.clock.now(), "frozen": self.store.clock.frozen is not None})
        return super().dispatch(req)

    def authenticate(self, req: Request) -> Response | None:
        """ "Status Codes and Error Responses": 401 INVALID_SESSION_ID for a missing, unknown or expired token."""
        if req.path.startswith("/services/oauth2/") or req.path.rstrip("/") == "/services/data":
            return None
        header = req.header("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme not in ("Bearer", "OAuth") or not token:
            return Response(401, [{"message": "INVALID_HEADER_TYPE", "errorCode": "INVALID_AUTH_HEADER"}])
        with self.lock:
            expiry = self._tokens.get(token.strip())
            if expiry is not None and expiry > time.monotonic():
                return None
            self._tokens.pop(token.strip(), None)
        return Response(401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])

    def rate_limited(self, req: Request, retry_after: float, daily: bool) -> Response:
        if daily:
            resp = Response(403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
        else:
            resp = Response(
                429,
                [
                    {
                        "message": "Too many requests (sandbox-injected rate limit; Salesforce documents no 429 for "
                        "its REST API). Retry after the Retry-After header's seconds.",
                        "errorCode": "REQUEST_LIMIT_EXCEEDED",
                    }
                ],
                {"Retry-After": _seconds(retry_after)},
            )
        self.decorate(req, resp)
        return resp

    def server_error(self, req: Request) -> Response:
        return Response(
            500,
            [
                {
                    "message": "An unexpected error occurred. Please include this ErrorId if you contact support: "
                    f"{secrets.randbelow(10**9)}-{secrets.randbelow(10**5)} (-{secrets.randbelow(10**9)})",
                    "errorCode": "UNKNOWN_EXCEPTION",
                }
            ],
        )

    def bad_request(self, req: Request, exc: BadRequest) -> Response:
        code = exc.code or {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status, "JSON_PARSER_ERROR")
        error: dict[str, Any] = {"message": exc.message, "errorCode": code}
        if isinstance(exc, SalesforceError) and exc.fields:
            error["fields"] = exc.fields
        return Response(exc.status, [error])

    def not_found(self, req: Request) -> Response:
        return Response(404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])

    def decorate(self, req: Request, resp: Response) -> None:
        """ "Limit Info Header" on every REST and Bulk API answer."""
        if req.path.startswith("/services/data/v"):
            used, allocation = self.api_usage()
            resp.headers["Sforce-Limit-Info"] = f"api-usage={used}/{allocation}"

    def inspect_objects(self, object: str) -> list[dict[str, Any]]:
        return self.records(object, include_deleted=True)

    def user_edit(self, object: str, record_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        sobject = self._sobject(object).name
        with self.lock:
            try:
                return self.store.edit_as_user(sobject, record_id, fields)
            except RecordError as exc:
                raise BadRequest(f"{exc.status_code}: {exc.message} (record {sobject} {record_id})", 400) from None

    def reset_state(self) -> None:
        with self.lock:
            self.store = Store()
            self.bulk.reset()
            self._usage.clear()
            self._cursors.clear()

    # ------------------------------------------------------------ plumbing

    def _routes_salesforce(self) -> None:
        self.route("POST", r"/services/oauth2/token", self.oauth_token)
        self.route("GET", r"/services/data/?", self.versions)
        api = self._api
        api("GET", r"/limits/?", self.limits_resource)
        api("GET", r"/sobjects/?", self.describe_global)
        api("GET", rf"/sobjects/(?P<sobject>{_SEG})/describe/?", self.describe)
        api("POST", rf"/sobjects/(?P<sobject>{_SEG})/?", self.create_row)
        api("GET", rf"/sobjects/(?P<sobject>{_SEG})/deleted/?", self.get_deleted)
        api("GET", rf"/sobjects/(?P<sobject>{_SEG})/(?P<record_id>{_SEG})", self.get_row)
        api("PATCH", rf"/sobjects/(?P<sobject>{_SEG})/(?P<record_id>{_SEG})", self.update_row)
        api("DELETE", rf"/sobjects/(?P<sobject>{_SEG})/(?P<record_id>{_SEG})", self.delete_row)
        api("GET", rf"/sobjects/(?P<sobject>{_SEG})/(?P<field>{_SEG})/(?P<value>{_SEG})", self.get_by_external_id)
        api("PATCH", rf"/sobjects/(?P<sobject>{_SEG})/(?P<field>{_SEG})/(?P<value>{_SEG})", self.upsert_row)
        api("DELETE", rf"/sobjects/(?P<sobject>{_SEG})/(?P<field>{_SEG})/(?P<value>{_SEG})", self.delete_by_external_id)
        api("GET", r"/query/?", self.query)
        api("GET", rf"/query/(?P<locator>{_SEG})", self.query_more)
        api("POST", r"/composite/sobjects/?", self.collection_create)
        api("PATCH", r"/composite/sobjects/?", self.collection_update)
        api("DELETE", r"/composite/sobjects/?", self.collection_delete)
        api("GET", rf"/composite/sobjects/(?P<sobject>{_SEG})/?", self.collection_get)
        api("PATCH", rf"/composite/sobjects/(?P<sobject>{_SEG})/(?P<field>{_SEG})/?", self.collection_upsert)
        api("POST", r"/jobs/ingest/?", self.job_create)
        api("GET", r"/jobs/ingest/?", self.job_list)
        api("GET", rf"/jobs/ingest/(?P<job_id>{_SEG})/?", self.job_info)
        api("PATCH", rf"/jobs/ingest/(?P<job_id>{_SEG})/?", self.job_state)
        api("DELETE", rf"/jobs/ingest/(?P<job_id>{_SEG})/?", self.job_delete)
        api("PUT", rf"/jobs/ingest/(?P<job_id>{_SEG})/batches/?", self.job_upload)
        api(
            "GET",
            rf"/jobs/ingest/(?P<job_id>{_SEG})/(?P<kind>successfulResults|failedResults|unprocessedrecords)/?",
            self.job_results,
        )

    def _api(self, method: str, pattern: str, handler: Any) -> None:
        """Register a versioned API route that checks the version and charges the daily allocation."""

        def charged(req: Request, version: str, **groups: str) -> Response:
            if float(version) > float(self.api_version.lstrip("v")):
                raise SalesforceError("NOT_FOUND", "The requested resource does not exist", 404)
            self._charge()
            return handler(req, **{k: unquote(v) for k, v in groups.items()})

        self.route(method, _DATA + pattern, charged)

    def _charge(self) -> None:
        with self.lock:
            now = time.monotonic()
            self._expire_usage(now)
            if len(self._usage) >= self.allocation():
                self.count("limited_daily")  # the daily allocation, as the core names it
                raise SalesforceError("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", 403)
            self._usage.append(now)

    def _expire_usage(self, now: float) -> None:
        while self._usage and self._usage[0] <= now - 86_400:
            self._usage.popleft()

    # ------------------------------------------------------------ OAuth 2.0

    def oauth_token(self, req: Request) -> Response:
        """Salesforce Help, "OAuth 2.0 Client Credentials Flow for Server-to-Server Integration",
        "OAuth 2.0 Refresh Token Flow for Renewed Sessions", "OAuth 2.0 Username-Password Flow for
        Special Scenarios": form-encoded POST; errors are ``{"error", "error_description"}`` with 400."""
        form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
        grant = form.get("grant_type")

        def refuse(error: str, description: str) -> Response:
            return Response(400, {"error": error, "error_description": description})

        if grant not in ("client_credentials", "refresh_token", "password"):
            return refuse("unsupported_grant_type", "grant type not supported")
        if form.get("client_id") != self.client_id:
            return (
                refuse("invalid_client_id", "client identifier invalid")
                if grant != "client_credentials"
                else (refuse("invalid_client", "invalid client credentials"))
            )
        if grant == "client_credentials" and form.get("client_secret") != self.client_secret:
            return refuse("invalid_client", "invalid client credentials")
        if grant != "client_credentials" and "client_secret" in form and form["client_secret"] != self.client_secret:
            return refuse("invalid_client", "invalid client credentials")
        if grant == "refresh_token" and form.get("refresh_token") != self.refresh_token:
            return refuse("invalid_grant", "expired access/refresh token")
        if grant == "password" and (form.get("username"), form.get("password")) != (self.username, self.password):
            return refuse("invalid_grant", "authentication failure")
        instance = req.url.split("/services/", 1)[0]
        issued_at = str(int(time.time() * 1000))
        identity = f"{instance}/id/{ORG_ID}/{USER_ID}"
        signature = base64.b64encode(
            hmac.new(self.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
        ).decode()
        return Response(
            200,
            {
                "access_token": self.issue_token(),
                "instance_url": instance,
                "id": identity,
                "token_type": "Bearer",
                "issued_at": issued_at,
                "signature": signature,
                "scope": "api",
            },
        )

    def versions(self, req: Request) -> Response:
        """ "List Available REST API Versions" (no authentication needed)."""
        version = self.api_version.lstrip("v")
        return Response(200, [{"label": "Winter '25", "url": f"/services/data/v{version}", "version": version}])

    def limits_resource(self, req: Request) -> Response:
        """ "List Org Limits": the daily API request allocation and what is left of it."""
        used, allocation = self.api_usage()
        return Response(200, {"DailyApiRequests": {"Max": allocation, "Remaining": max(allocation - used, 0)}})

    # ------------------------------------------------------------ sObject metadata

    def describe_global(self, req: Request) -> Response:
        """ "Describe Global": the sObjects this org has."""
        version = self._version(req)
        return Response(
            200,
            {
                "encoding": "UTF-8",
                "maxBatchSize": MAX_COLLECTION,
                "sobjects": [
                    {k: v for k, v in t.describe(version).items() if k != "fields"} for t in SOBJECTS.values()
                ],
            },
        )

    def describe(self, req: Request, sobject: str) -> Response:
        """ "sObject Describe": every field with name, type, externalId, unique, nillable, createable..."""
        return Response(200, self._sobject(sobject).describe(self._version(req)))
