"""The HubSpot sandbox: the CRM API v3 objects/properties/search and v4 associations a connector uses.

See the package docstring for what is implemented and what is not; each handler names the
HubSpot documentation page it follows. This module holds the class itself (routing, the clock
endpoint, auth, rate limits, errors, inspection and the helpers tests use); the endpoints live in
``objects.py``, ``batch.py``, ``properties.py`` and ``associations.py``, the state in ``records.py``.
"""

from __future__ import annotations

from typing import Any

from replicator.sandbox.core import BadRequest, Faults, Limits, Request, Response, _Hang, _Reset, _seconds

from . import schema
from .associations import AssociationsAPI
from .batch import BatchAPI
from .errors import HubSpotError, correlation_id, error_body
from .objects import ObjectsAPI
from .properties import PropertiesAPI
from .schema import OBJECT_TYPES
from .webhooks import WebhookSender

# HubSpot's Professional private-app burst limit, advertised when no burst limit is configured.
ADVERTISED_BURST = 190

_V3 = "/crm/v3/objects/(?P<object_type>[^/]+)"


class HubSpotSandbox(ObjectsAPI, BatchAPI, PropertiesAPI, AssociationsAPI):
    vendor = "hubspot"

    def __init__(
        self,
        token: str = "pat-sandbox",
        *,
        faults: Faults | None = None,
        limits: Limits | None = None,
        webhook_url: str | None = None,
        client_secret: str = "sandbox-client-secret",
        app_id: int = 4242,
        portal_id: int = 62515,
        search_cap: int = 10_000,
        daily_limit_header: int = 650_000,
        freeze_ms: int | None = None,
        webhook_retry_base_s: float = 0.2,
    ) -> None:
        super().__init__(faults=faults, limits=limits)
        self.token = token
        self.client_secret = client_secret
        self.app_id = app_id
        self.portal_id = portal_id
        self.search_cap = search_cap
        self.daily_limit_header = daily_limit_header
        self.webhook_url = webhook_url
        self._frozen_ms = freeze_ms
        self._properties = schema.seeded_properties()
        self._records = {name: {} for name in OBJECT_TYPES}
        self._by_value = {}
        self._links = {}
        self._next_id = 1001
        self._next_event = 1
        self._sender = (
            WebhookSender(webhook_url, client_secret, self.count, retry_base_s=webhook_retry_base_s)
            if webhook_url
            else None
        )
        self.route("GET", "/crm/v3/properties/(?P<object_type>[^/]+)", self.list_properties)
        self.route("POST", "/crm/v3/properties/(?P<object_type>[^/]+)", self.create_property)
        self.route("GET", "/crm/v3/properties/(?P<object_type>[^/]+)/(?P<name>[^/]+)", self.get_property)
        self.route("POST", _V3 + "/batch/upsert", self.batch_upsert)
        self.route("POST", _V3 + "/batch/create", self.batch_create)
        self.route("POST", _V3 + "/batch/update", self.batch_update)
        self.route("POST", _V3 + "/batch/read", self.batch_read)
        self.route("POST", _V3 + "/batch/archive", self.batch_archive)
        self.route("POST", _V3 + "/search", self.search)
        self.route("GET", _V3, self.list_records)
        self.route("POST", _V3, self.create_record)
        self.route("GET", _V3 + "/(?P<record_id>[^/]+)", self.get_record)
        self.route("PATCH", _V3 + "/(?P<record_id>[^/]+)", self.update_record)
        self.route("DELETE", _V3 + "/(?P<record_id>[^/]+)", self.archive_record)
        v4 = "/crm/v4/associations/(?P<from_type>[^/]+)/(?P<to_type>[^/]+)/batch"
        self.route("POST", v4 + "/associate/default", self.associate_default)
        self.route("POST", v4 + "/read", self.read_associations)
        self.route("POST", v4 + "/archive", self.archive_associations)

    def dispatch(self, req: Request) -> Response | _Hang | _Reset:
        # POST /__sandbox/clock {"freeze_ms": int | null, "advance_ms": int}: steer the clock.
        if req.path.rstrip("/") == "/__sandbox/clock":
            return self._clock(req)
        return super().dispatch(req)

    def _clock(self, req: Request) -> Response:
        if req.method == "GET":
            return Response(200, {"now_ms": self.now_ms(), "frozen": self._frozen_ms is not None})
        try:
            body = req.json() or {}
        except BadRequest as exc:
            return Response(400, {"error": exc.message})
        if not isinstance(body, dict) or not set(body) <= {"freeze_ms", "advance_ms"}:
            return Response(400, {"error": 'clock body is {"freeze_ms": ms or null} and/or {"advance_ms": ms}'})
        if "freeze_ms" in body:
            if body["freeze_ms"] is not None and not isinstance(body["freeze_ms"], int):
                return Response(400, {"error": "freeze_ms must be epoch milliseconds (an integer) or null"})
            self.freeze_clock(body["freeze_ms"])
        if "advance_ms" in body:
            if not isinstance(body["advance_ms"], int):
                return Response(400, {"error": "advance_ms must be an integer number of milliseconds"})
            self.advance_clock(body["advance_ms"])
        return Response(200, {"now_ms": self.now_ms(), "frozen": self._frozen_ms is not None})

    # ------------------------------------------------------------ vendor hooks

    def authenticate(self, req: Request) -> Response | None:
        """Private-app access token as a bearer token ("Authentication overview", private apps)."""
        header = req.header("authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip() == self.token:
            return None
        message = (
            "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
            "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
        )
        return Response(401, error_body(message, "INVALID_AUTHENTICATION"))

    def rate_limited(self, req: Request, retry_after: float, daily: bool) -> Response:
        """429 body per "API usage guidelines and limits": policyName TEN_SECONDLY_ROLLING or DAILY."""
        body = {
            "status": "error",
            "message": "You have reached your daily limit."
            if daily
            else "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": correlation_id(),
            "policyName": "DAILY" if daily else "TEN_SECONDLY_ROLLING",
        }
        resp = Response(429, body, {"Retry-After": _seconds(retry_after)})
        self._rate_headers(resp)
        return resp

    def server_error(self, req: Request) -> Response:
        with self.lock:
            status = self.rng.choice((500, 502, 503, 504))
        messages = {
            500: "internal error",
            502: "Bad Gateway",
            503: "Service Unavailable",
            504: "Gateway Timeout",
        }
        return Response(status, error_body(messages[status], "INTERNAL_ERROR" if status == 500 else "UNAVAILABLE"))

    def bad_request(self, req: Request, exc: BadRequest) -> Response:
        if isinstance(exc, HubSpotError):
            body = error_body(
                exc.message, exc.category, context=exc.context, errors=exc.errors, sub_category=exc.sub_category
            )
        else:
            category = exc.code or ("VALIDATION_ERROR" if exc.status == 400 else "UNKNOWN")
            body = error_body(exc.message, category)
        return Response(exc.status, body)

    def not_found(self, req: Request) -> Response:
        return Response(404, error_body(f"No route for {req.method} {req.path}", "OBJECT_NOT_FOUND"))

    def decorate(self, req: Request, resp: Response) -> None:
        # "API usage guidelines": search responses do not carry the rate-limit headers.
        if not req.path.endswith("/search"):
            self._rate_headers(resp)

    def _rate_headers(self, resp: Response) -> None:
        """X-HubSpot-RateLimit-* per "API usage guidelines and limits" (burst window and daily)."""
        burst_used, daily_used = self.window_usage()
        burst = self.limits.burst or ADVERTISED_BURST
        daily = self.limits.daily or self.daily_limit_header
        resp.headers.update(
            {
                "X-HubSpot-RateLimit-Max": str(burst),
                "X-HubSpot-RateLimit-Remaining": str(max(burst - burst_used, 0)),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.limits.window_s * 1000)),
                "X-HubSpot-RateLimit-Daily": str(daily),
                "X-HubSpot-RateLimit-Daily-Remaining": str(max(daily - daily_used, 0)),
            }
        )

    def inspect_objects(self, object: str) -> list[dict[str, Any]]:
        return self.records(object)

    def user_edit(self, object: str, record_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """A CRM user's edit in the HubSpot UI: new modification time, webhooks with changeSource CRM_UI."""
        obj = schema.object_name(object)
        if obj is None:
            raise BadRequest(f"HubSpot sandbox has no object {object!r}; use one of {sorted(OBJECT_TYPES)}", 404)
        values = fields.get("properties") if isinstance(fields.get("properties"), dict) else fields
        with self.lock:
            rec = self._records[obj].get(record_id)
            if rec is None or rec.archived:
                raise BadRequest(f"no {obj} record with id {record_id!r} to edit", 404)
            try:
                normalized = self._validated(obj, values, allow_read_only=False)
            except HubSpotError as exc:
                raise BadRequest(exc.message, 400) from None
            self._write(obj, rec, normalized, source="CRM_UI", now=self.now_ms())
            return self._full(obj, rec)

    def reset_state(self) -> None:
        with self.lock:
            self._properties = schema.seeded_properties()
            self._records = {name: {} for name in OBJECT_TYPES}
            self._by_value.clear()
            self._links.clear()
            self._next_id = 1001
            self._frozen_ms = None
        if self._sender is not None:
            self._sender.clear()

    # ------------------------------------------------------------ Python helpers for tests

    def records(self, object_type: str) -> list[dict[str, Any]]:
        """Every record of the object (archived ones too), all properties, with associated ids."""
        obj = schema.object_name(object_type)
        if obj is None:
            raise BadRequest(f"HubSpot sandbox has no object {object_type!r}; use one of {sorted(OBJECT_TYPES)}", 404)
        with self.lock:
            return [self._full(obj, rec) for rec in sorted(self._records[obj].values(), key=lambda r: int(r.id))]

    def associations(self, from_type: str, record_id: str) -> dict[str, list[str]]:
        """The ids associated with one record, per object type."""
        obj = schema.object_name(from_type)
        if obj is None:
            raise ValueError(f"no HubSpot object {from_type!r}")
        with self.lock:
            out: dict[str, list[str]] = {}
            for other, other_id in sorted(self._links.get((obj, record_id), set())):
                out.setdefault(other, []).append(other_id)
            return out

    def webhooks_idle(self, timeout_s: float = 10.0) -> bool:
        """Wait until queued webhook events were delivered (or given up on)."""
        return True if self._sender is None else self._sender.idle(timeout_s)

    def close(self) -> None:
        """Stop the webhook thread (serve()'s stop() leaves it to die with the process)."""
        if self._sender is not None:
            self._sender.close()


__all__ = ["HubSpotError", "HubSpotSandbox"]
