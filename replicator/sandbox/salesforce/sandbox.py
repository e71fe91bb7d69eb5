"""The Salesforce sandbox server: OAuth 2.0, REST sObject rows, sObject Collections, SOQL, Bulk API 2.0.

Each handler names the page of the REST API Developer Guide (developer.salesforce.com/docs/
atlas.en-us.api_rest.meta, "REST API Developer Guide"), the Bulk API 2.0 guide or the
Salesforce Help OAuth pages it follows. Cross-cutting behaviour:

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
from collections import Counter, deque
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

from replicator.sandbox.core import BadRequest, Faults, Limits, Request, Response, Sandbox, _seconds

from . import soql
from .bulk import BulkJobs
from .schema import PREFIXES, SOBJECTS, RecordError, SObjectType, make_id, normalize_id, parse_datetime
from .store import Record, Store

MAX_COLLECTION = 200  # "sObject Collections": up to 200 records per create/update/upsert/delete
MAX_COLLECTION_GET = 2000  # "Get Records Using sObject Collections": up to 2,000 ids
CURSOR_IDLE_S = 15 * 60  # "Execute a SOQL Query": a query locator expires after 15 minutes idle
ORG_ID = "00D5g0000000001EAA"
USER_ID = "0055g0000000001AAA"
_DATA = r"/services/data/v(?P<version>\d+\.\d)"
_SEG = r"[^/]+"
ROLLED_BACK = RecordError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone header",
)


class SalesforceError(BadRequest):
    """An API error answered as ``[{"message", "errorCode", "fields"}]``."""

    def __init__(self, code: str, message: str, status: int = 400, fields: list[str] | None = None) -> None:
        super().__init__(message, status, code)
        self.fields = fields or []

    @classmethod
    def of(cls, exc: RecordError, status: int = 400) -> SalesforceError:
        if exc.status_code in ("ENTITY_IS_DELETED", "NOT_FOUND"):
            status = 404
        return cls(exc.status_code, exc.message, status, exc.fields)


class SalesforceSandbox(Sandbox):
    """A Salesforce org in a box: Account, Contact, Product2, Opportunity with ``ERP_Id__c``.

    Python-side helpers for tests: `records`, `expire_tokens`, `issue_token`, `freeze_clock`,
    `api_usage`. Extra inspection endpoints besides the shared ones: ``POST
    /__sandbox/expire_tokens`` and ``GET``/``POST /__sandbox/clock`` (``{"freeze": iso|null}``).
    """

    vendor = "salesforce"

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
                self.count("limited_allocation")
                raise SalesforceError("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", 403)
            self._usage.append(now)

    def _expire_usage(self, now: float) -> None:
        while self._usage and self._usage[0] <= now - 86_400:
            self._usage.popleft()

    def _sobject(self, name: str) -> SObjectType:
        otype = SOBJECTS.get(name) or next((t for n, t in SOBJECTS.items() if n.lower() == name.lower()), None)
        if otype is None:
            raise SalesforceError("NOT_FOUND", "The requested resource does not exist", 404)
        return otype

    def _ext_field(self, otype: SObjectType, name: str) -> str:
        f = otype.field(name)
        if f is None:
            raise SalesforceError(
                "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {name}", 404
            )
        if not (f.external_id or f.type == "id"):
            raise SalesforceError(
                "INVALID_FIELD",
                f"Field name provided, {f.name} is not an External ID or indexed field for {otype.name}",
            )
        return f.name

    @staticmethod
    def _json(req: Request) -> Any:
        try:
            return req.json()
        except BadRequest as exc:
            raise SalesforceError("JSON_PARSER_ERROR", exc.message) from None

    def _render(self, otype: SObjectType, record: Record, version: str, fields: list[str] | None = None) -> Record:
        out: Record = {
            "attributes": {"type": otype.name, "url": f"/services/data/{version}/sobjects/{otype.name}/{record['Id']}"}
        }
        for name in fields if fields is not None else list(otype.fields):
            out[name] = record.get(name)
        return out

    def _field_list(self, otype: SObjectType, text: str | None) -> list[str] | None:
        if not text:
            return None
        names = []
        for name in text.split(","):
            f = otype.field(name.strip())
            if f is None:
                raise SalesforceError(
                    "INVALID_FIELD", f"No such column '{name.strip()}' on sobject of type {otype.name}", 400
                )
            names.append(f.name)
        return names

    def _version(self, req: Request) -> str:
        return "v" + req.path.split("/services/data/v", 1)[1].split("/", 1)[0]

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

    # ------------------------------------------------------------ sObject rows

    def _row(self, otype: SObjectType, record_id: str) -> Record:
        full = normalize_id(record_id)
        if full is None:
            # The API reads a non-id path segment as an external id field name.
            raise SalesforceError(
                "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {record_id}", 404
            )
        record = self.store.records[otype.name].get(full)
        if record is None:
            raise SalesforceError("NOT_FOUND", "The requested resource does not exist", 404)
        if record["IsDeleted"]:
            raise SalesforceError("ENTITY_IS_DELETED", "entity is deleted", 404)
        return record

    def create_row(self, req: Request, sobject: str) -> Response:
        """ "Create a Record": POST /sobjects/{SObject} → 201 ``{"id", "success", "errors"}``."""
        otype = self._sobject(sobject)
        body = self._json(req)
        if not isinstance(body, dict):
            raise SalesforceError("JSON_PARSER_ERROR", f"The body must be a JSON object of {otype.name} fields")
        with self.lock:
            try:
                record_id = self.store.insert(otype.name, body)
            except RecordError as exc:
                raise SalesforceError.of(exc) from None
        return Response(201, {"id": record_id, "success": True, "errors": []})

    def get_row(self, req: Request, sobject: str, record_id: str) -> Response:
        """ "Get Field Values from a Standard Object Record": GET /sobjects/{SObject}/{id}[?fields=]."""
        otype = self._sobject(sobject)
        fields = self._field_list(otype, req.arg("fields"))
        with self.lock:
            return Response(200, self._render(otype, self._row(otype, record_id), self._version(req), fields))

    def update_row(self, req: Request, sobject: str, record_id: str) -> Response:
        """ "Update a Record": PATCH /sobjects/{SObject}/{id} → 204."""
        otype = self._sobject(sobject)
        body = self._json(req)
        if not isinstance(body, dict):
            raise SalesforceError("JSON_PARSER_ERROR", f"The body must be a JSON object of {otype.name} fields")
        with self.lock:
            record = self._row(otype, record_id)
            try:
                self.store.update(otype.name, record["Id"], body)
            except RecordError as exc:
                raise SalesforceError.of(exc) from None
        return Response(204)

    def delete_row(self, req: Request, sobject: str, record_id: str) -> Response:
        """ "Delete a Record": DELETE /sobjects/{SObject}/{id} → 204; 404 ENTITY_IS_DELETED when already deleted."""
        otype = self._sobject(sobject)
        with self.lock:
            record = self._row(otype, record_id)
            self.store.delete(otype.name, record["Id"])
        return Response(204)

    def get_by_external_id(self, req: Request, sobject: str, field: str, value: str) -> Response:
        """ "Get Records Using sObject External ID": GET /sobjects/{SObject}/{field}/{value}."""
        otype = self._sobject(sobject)
        ext = self._ext_field(otype, field)
        fields = self._field_list(otype, req.arg("fields"))
        with self.lock:
            record = self.store.find(otype.name, ext, value)
            if record is None:
                raise SalesforceError("NOT_FOUND", "The requested resource does not exist", 404)
            return Response(200, self._render(otype, record, self._version(req), fields))

    def upsert_row(self, req: Request, sobject: str, field: str, value: str) -> Response:
        """ "Insert or Update (Upsert) a Record Using an External ID": 201 created / 200 updated,
        both with ``{"id", "success", "errors", "created"}`` (API 46.0 and later)."""
        otype = self._sobject(sobject)
        ext = self._ext_field(otype, field)
        body = self._json(req)
        if not isinstance(body, dict):
            raise SalesforceError("JSON_PARSER_ERROR", f"The body must be a JSON object of {otype.name} fields")
        body = dict(body)
        for key in [k for k in body if k.lower() == ext.lower()]:
            if str(body.pop(key)) != value:
                raise SalesforceError(
                    "INVALID_FIELD", f"The {ext} value in the body differs from the one in the URL: {value}", 400, [ext]
                )
        with self.lock:
            if (req.arg("updateOnly") or "").lower() == "true" and self.store.find(otype.name, ext, value) is None:
                raise SalesforceError("NOT_FOUND", "The requested resource does not exist", 404)
            try:
                record_id, created = self.store.upsert(otype.name, ext, value, body)
            except RecordError as exc:
                raise SalesforceError.of(exc) from None
        return Response(201 if created else 200, {"id": record_id, "success": True, "errors": [], "created": created})

    def delete_by_external_id(self, req: Request, sobject: str, field: str, value: str) -> Response:
        """ "Delete Records Using sObject External ID": 204, 404 when no live record matches."""
        otype = self._sobject(sobject)
        ext = self._ext_field(otype, field)
        with self.lock:
            record = self.store.find(otype.name, ext, value)
            if record is None:
                raise SalesforceError("NOT_FOUND", "The requested resource does not exist", 404)
            self.store.delete(otype.name, record["Id"])
        return Response(204)

    # ------------------------------------------------------------ SOQL

    def query(self, req: Request) -> Response:
        """ "Execute a SOQL Query": ``{"totalSize", "done", "records", "nextRecordsUrl"?}`` in pages of up
        to 2,000 (or ``Sforce-Query-Options: batchSize=n``, 200-2,000; or the sandbox's query_page_size)."""
        text = req.arg("q")
        if not text:
            raise SalesforceError("MALFORMED_QUERY", "A SOQL query is required in the q parameter: /query?q=SELECT...")
        try:
            parsed = soql.parse(text)
        except soql.QueryError as exc:
            raise SalesforceError(exc.code, exc.message) from None
        version = self._version(req)
        names = [f.name for f in parsed.fields]
        with self.lock:
            rows = soql.execute(parsed, list(self.store.live(parsed.sobject.name)))
            rendered = [self._render(parsed.sobject, r, version, names) for r in rows]
            return Response(200, self._page(rendered, 0, self._page_size(req), version, None))

    def query_more(self, req: Request, locator: str) -> Response:
        """ "Execute a SOQL Query" → nextRecordsUrl: GET /query/{locator}-{offset}."""
        cursor_id, _, offset_text = locator.rpartition("-")
        with self.lock:
            self._expire_cursors()
            cursor = self._cursors.get(cursor_id)
            if cursor is None or not offset_text.isdigit() or int(offset_text) > len(cursor[0]):
                raise SalesforceError("INVALID_QUERY_LOCATOR", "invalid query locator")
            rows = cursor[0]
            return Response(
                200, self._page(rows, int(offset_text), self._page_size(req), self._version(req), cursor_id)
            )

    def _page_size(self, req: Request) -> int:
        size = self.query_page_size
        for option in (req.header("Sforce-Query-Options") or "").split(","):
            name, _, value = option.strip().partition("=")
            if name == "batchSize" and value.isdigit():
                size = min(size, max(200, min(int(value), 2000)))
        return size

    def _page(
        self, rows: list[dict[str, Any]], offset: int, size: int, version: str, cursor_id: str | None
    ) -> dict[str, Any]:
        page = rows[offset : offset + size]
        body: dict[str, Any] = {"totalSize": len(rows), "done": offset + size >= len(rows), "records": page}
        if not body["done"]:
            if cursor_id is None:
                self._cursor_serial += 1
                cursor_id = make_id("01g", self._cursor_serial)[:15]
            self._cursors[cursor_id] = (rows, time.monotonic())
            body["nextRecordsUrl"] = f"/services/data/{version}/query/{cursor_id}-{offset + size}"
        elif cursor_id is not None:
            self._cursors.pop(cursor_id, None)
        return body

    def _expire_cursors(self) -> None:
        now = time.monotonic()
        for cursor_id in [c for c, (_, used) in self._cursors.items() if used < now - CURSOR_IDLE_S]:
            del self._cursors[cursor_id]

    # ------------------------------------------------------------ sObject Collections

    def _collection_body(self, req: Request, sobject: str | None) -> tuple[list[dict[str, Any]], bool]:
        """(records, allOrNone) of a collections body; 400 for what the API refuses as a whole."""
        body = self._json(req)
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise SalesforceError("JSON_PARSER_ERROR", 'The body must be {"allOrNone": bool, "records": [{...}]}')
        if len(records) > MAX_COLLECTION:
            raise SalesforceError(
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {MAX_COLLECTION} records into this call",
            )
        for record in records:
            kind = (record.get("attributes") or {}).get("type") if isinstance(record.get("attributes"), dict) else None
            if not kind:
                raise SalesforceError("INVALID_TYPE", "Must send a concrete entity type.")
            if kind not in SOBJECTS or (sobject is not None and kind != sobject):
                raise SalesforceError(
                    "INVALID_TYPE",
                    f"Record type {kind} is not supported here"
                    + (f"; this request takes {sobject} records only" if sobject else ""),
                )
        all_or_none = body.get("allOrNone", False)
        if not isinstance(all_or_none, bool):
            raise SalesforceError("JSON_PARSER_ERROR", f"allOrNone must be true or false, got {all_or_none!r}")
        return records, all_or_none

    def _apply(self, records: list[Any], all_or_none: bool, one: Any) -> list[dict[str, Any]]:
        """Run `one(record) -> success dict` per record, per-record errors in place, allOrNone rollback."""
        results: list[dict[str, Any]] = []
        with self.lock, self.store.transaction():
            for record in records:
                try:
                    if self.partial_failure():
                        raise RecordError(
                            "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record or 1 records"
                        )
                    results.append(one(record))
                except RecordError as exc:
                    results.append({"success": False, "errors": [exc.as_json()]})
            if all_or_none and not all(r["success"] for r in results):
                self.store.rollback()
                results = [
                    r if not r["success"] else {"success": False, "errors": [ROLLED_BACK.as_json()]} for r in results
                ]
        return results

    def collection_upsert(self, req: Request, sobject: str, field: str) -> Response:
        """ "Upsert Records Using sObject Collections": PATCH /composite/sobjects/{SObject}/{ExternalIdField},
        up to 200 records of one type, per-record UpsertResults in request order."""
        otype = self._sobject(sobject)
        ext = self._ext_field(otype, field)
        records, all_or_none = self._collection_body(req, otype.name)

        def ext_value(record: dict[str, Any]) -> Any:
            return next((v for k, v in record.items() if k.lower() == ext.lower()), None)

        seen = Counter(str(v) for v in map(ext_value, records) if v not in (None, ""))

        def one(record: dict[str, Any]) -> dict[str, Any]:
            value = ext_value(record)
            values = {k: v for k, v in record.items() if k != "attributes" and k.lower() != ext.lower()}
            if value in (None, "") and ext != "Id":
                raise RecordError("MISSING_ARGUMENT", f"{ext} not specified", [ext])
            if value not in (None, "") and seen[str(value)] > 1:
                raise RecordError("DUPLICATE_VALUE", f"Duplicate external id specified: {value}", [ext])
            record_id, created = self.store.upsert(otype.name, ext, value, values)
            return {"id": record_id, "success": True, "errors": [], "created": created}

        return Response(200, self._apply(records, all_or_none, one))

    def collection_create(self, req: Request) -> Response:
        """ "Create Records Using sObject Collections": POST /composite/sobjects, SaveResults in order."""
        records, all_or_none = self._collection_body(req, None)

        def one(record: dict[str, Any]) -> dict[str, Any]:
            values = {k: v for k, v in record.items() if k != "attributes"}
            return {"id": self.store.insert(record["attributes"]["type"], values), "success": True, "errors": []}

        return Response(200, self._apply(records, all_or_none, one))

    def collection_update(self, req: Request) -> Response:
        """ "Update Records Using sObject Collections": PATCH /composite/sobjects, each record with its Id."""
        records, all_or_none = self._collection_body(req, None)

        def one(record: dict[str, Any]) -> dict[str, Any]:
            values = {k: v for k, v in record.items() if k not in ("attributes", "Id", "id")}
            record_id = record.get("Id") or record.get("id")
            if not record_id:
                raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
            self.store.update(record["attributes"]["type"], str(record_id), values)
            return {"id": normalize_id(str(record_id)), "success": True, "errors": []}

        return Response(200, self._apply(records, all_or_none, one))

    def collection_delete(self, req: Request) -> Response:
        """ "Delete Records Using sObject Collections": DELETE /composite/sobjects?ids=...&allOrNone=, up to 200."""
        ids = [i for i in (req.arg("ids") or "").split(",") if i]
        if not ids:
            raise SalesforceError("MISSING_ARGUMENT", "ids parameter is required: ?ids=001...,003...", 400)
        if len(ids) > MAX_COLLECTION:
            raise SalesforceError(
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {MAX_COLLECTION} records into this call",
            )
        all_or_none = (req.arg("allOrNone") or "false").lower() == "true"

        def one(record_id: str) -> dict[str, Any]:
            full = normalize_id(record_id)
            if full is None:
                raise RecordError("MALFORMED_ID", f"malformed id {record_id}")
            sobject = PREFIXES.get(full[:3])
            if sobject is None:
                raise RecordError("INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {record_id}")
            self.store.delete(sobject, full)
            return {"id": full, "success": True, "errors": []}

        return Response(200, self._apply(ids, all_or_none, one))

    def collection_get(self, req: Request, sobject: str) -> Response:
        """ "Get Records Using sObject Collections": GET /composite/sobjects/{SObject}?ids=&fields=;
        null for an id that matches no live record."""
        otype = self._sobject(sobject)
        ids = [i for i in (req.arg("ids") or "").split(",") if i]
        fields = self._field_list(otype, req.arg("fields"))
        if not ids or fields is None:
            raise SalesforceError("MISSING_ARGUMENT", "ids and fields parameters are required", 400)
        if len(ids) > MAX_COLLECTION_GET:
            raise SalesforceError(
                "EXCEEDED_ID_LIMIT", f"record limit reached. cannot submit more than {MAX_COLLECTION_GET} records"
            )
        version = self._version(req)
        out: list[Any] = []
        with self.lock:
            for record_id in ids:
                full = normalize_id(record_id)
                if full is None:
                    raise SalesforceError("MALFORMED_ID", f"malformed id {record_id}", 400)
                record = self.store.records[otype.name].get(full)
                live = record is not None and not record["IsDeleted"]
                out.append(self._render(otype, record, version, fields) if live and record else None)
        return Response(200, out)

    # ------------------------------------------------------------ Bulk API 2.0

    def job_create(self, req: Request) -> Response:
        """Bulk API 2.0 "Create a Job": POST /jobs/ingest → 200 job info, state Open."""
        body = self._json(req)
        with self.lock:
            job = self.bulk.create(body, self._version(req))
            info = job.info()
        return Response(200, {k: info[k] for k in _CREATE_KEYS if k in info})

    def job_list(self, req: Request) -> Response:
        """Bulk API 2.0 "Get All Jobs"."""
        with self.lock:
            records = [job.info() for job in self.bulk.jobs.values()]
        return Response(200, {"done": True, "records": records, "nextRecordsUrl": None})

    def job_info(self, req: Request, job_id: str) -> Response:
        """Bulk API 2.0 "Get Job Info"."""
        with self.lock:
            return Response(200, self.bulk.get(job_id).info())

    def job_state(self, req: Request, job_id: str) -> Response:
        """Bulk API 2.0 "Upload Complete" / "Close or Abort a Job": ``{"state": "UploadComplete"|"Aborted"}``."""
        body = self._json(req)
        with self.lock:
            return Response(200, self.bulk.set_state(job_id, body).info())

    def job_delete(self, req: Request, job_id: str) -> Response:
        """Bulk API 2.0 "Delete a Job" → 204."""
        with self.lock:
            self.bulk.delete(job_id)
        return Response(204)

    def job_upload(self, req: Request, job_id: str) -> Response:
        """Bulk API 2.0 "Upload Job Data": PUT text/csv → 201 Created, empty body."""
        with self.lock:
            self.bulk.upload(job_id, req.body, req.header("Content-Type"))
        return Response(201)

    def job_results(self, req: Request, job_id: str, kind: str) -> Response:
        """Bulk API 2.0 "Get Job Successful/Failed/Unprocessed Record Results": CSV."""
        with self.lock:
            text = self.bulk.results(job_id, kind)
        return Response(200, text, content_type="text/csv")


_CREATE_KEYS = [
    "id",
    "operation",
    "object",
    "createdById",
    "createdDate",
    "systemModstamp",
    "state",
    "externalIdFieldName",
    "concurrencyMode",
    "contentType",
    "apiVersion",
    "contentUrl",
    "lineEnding",
    "columnDelimiter",
]
