"""The HubSpot sandbox: the CRM API v3 objects/properties/search and v4 associations a connector uses.

See the package docstring for what is implemented and what is not; each handler names the
HubSpot documentation page it follows.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from replicator.sandbox.core import BadRequest, Faults, Limits, Request, Response, Sandbox, _Hang, _Reset, _seconds

from . import schema
from .schema import OBJECT_TYPES, InvalidValue, iso_ms
from .search import MAX_PAGE, SearchError, check_limits, matches, sort_value
from .webhooks import WebhookSender

MAX_BATCH = 100
MAX_BATCH_WITH_HISTORY = 50
MAX_LIST_PAGE = 100
MAX_ASSOCIATION_BATCH = 1000
# HubSpot's Professional private-app burst limit, advertised when no burst limit is configured.
ADVERTISED_BURST = 190

_V3 = "/crm/v3/objects/(?P<object_type>[^/]+)"


class HubSpotError(BadRequest):
    """A refusal shaped like HubSpot's error body: status, message, correlationId, category, ..."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        category: str = "VALIDATION_ERROR",
        *,
        context: dict[str, list[str]] | None = None,
        errors: list[dict[str, Any]] | None = None,
        sub_category: str | None = None,
    ) -> None:
        super().__init__(message, status, category)
        self.category = category
        self.context = context
        self.errors = errors
        self.sub_category = sub_category


@dataclass
class _Record:
    id: str
    properties: dict[str, str]
    created_ms: int
    updated_ms: int
    archived: bool = False
    archived_ms: int | None = None
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _correlation_id() -> str:
    return str(uuid.uuid4())


def _error_body(
    message: str,
    category: str,
    *,
    context: dict[str, list[str]] | None = None,
    errors: list[dict[str, Any]] | None = None,
    sub_category: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "error", "message": message, "correlationId": _correlation_id()}
    if context:
        body["context"] = context
    if errors:
        body["errors"] = errors
    body["category"] = category
    if sub_category:
        body["subCategory"] = sub_category
    return body


def _batch_error(
    category: str, message: str, context: dict[str, list[str]], sub_category: str | None = None
) -> dict[str, Any]:
    """One entry of a multi-status answer's ``errors`` ("Error handling" page, "Multi-status errors")."""
    entry: dict[str, Any] = {"status": "error", "category": category, "message": message, "context": context}
    if sub_category:
        entry["subCategory"] = sub_category
    return entry


def _names(req: Request, key: str) -> list[str] | None:
    """A list query parameter, given repeated or comma-separated (``properties=a,b&properties=c``)."""
    values = req.query.get(key)
    if not values:
        return None
    return [name for value in values for name in value.split(",") if name]


class HubSpotSandbox(Sandbox):
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
        self._records: dict[str, dict[str, _Record]] = {name: {} for name in OBJECT_TYPES}
        # (object, property, lower-cased value) -> record ids: unique-value checks and lookups by
        # an id property in O(1), so a sandbox holding thousands of records answers as fast as a small one.
        self._by_value: dict[tuple[str, str, str], set[str]] = {}
        self._links: dict[tuple[str, str], set[tuple[str, str]]] = {}
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

    # ------------------------------------------------------------ clock

    def now_ms(self) -> int:
        with self.lock:
            return self._frozen_ms if self._frozen_ms is not None else int(time.time() * 1000)

    def freeze_clock(self, ms: int | None) -> None:
        """Every write until unfrozen (None) gets modification time ``ms``: many records share one timestamp."""
        with self.lock:
            self._frozen_ms = ms

    def advance_clock(self, ms: int) -> int:
        """Move a frozen clock forward (freezing it at now first if it runs); returns the new time."""
        with self.lock:
            self._frozen_ms = self.now_ms() + ms
            return self._frozen_ms

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
        return Response(401, _error_body(message, "INVALID_AUTHENTICATION"))

    def rate_limited(self, req: Request, retry_after: float, daily: bool) -> Response:
        """429 body per "API usage guidelines and limits": policyName TEN_SECONDLY_ROLLING or DAILY."""
        body = {
            "status": "error",
            "message": "You have reached your daily limit."
            if daily
            else "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": _correlation_id(),
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
        return Response(status, _error_body(messages[status], "INTERNAL_ERROR" if status == 500 else "UNAVAILABLE"))

    def bad_request(self, req: Request, exc: BadRequest) -> Response:
        if isinstance(exc, HubSpotError):
            body = _error_body(
                exc.message, exc.category, context=exc.context, errors=exc.errors, sub_category=exc.sub_category
            )
        else:
            category = exc.code or ("VALIDATION_ERROR" if exc.status == 400 else "UNKNOWN")
            body = _error_body(exc.message, category)
        return Response(exc.status, body)

    def not_found(self, req: Request) -> Response:
        return Response(404, _error_body(f"No route for {req.method} {req.path}", "OBJECT_NOT_FOUND"))

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

    # ------------------------------------------------------------ Properties API

    def _object(self, raw: str) -> str:
        obj = schema.object_name(raw)
        if obj is None:
            raise HubSpotError(f"Unable to infer object type from: {raw}", 400, "VALIDATION_ERROR")
        return obj

    def list_properties(self, req: Request, object_type: str) -> Response:
        """GET /crm/v3/properties/{objectType} ("Properties" guide, "Retrieve properties")."""
        obj = self._object(object_type)
        with self.lock:
            return Response(200, {"results": [dict(d) for d in self._properties[obj].values()]})

    def get_property(self, req: Request, object_type: str, name: str) -> Response:
        """GET /crm/v3/properties/{objectType}/{propertyName}."""
        obj = self._object(object_type)
        with self.lock:
            definition = self._properties[obj].get(name)
            if definition is None:
                raise HubSpotError(
                    f"Unable to find property {name} for object type {OBJECT_TYPES[obj][0]}", 404, "OBJECT_NOT_FOUND"
                )
            return Response(200, dict(definition))

    def create_property(self, req: Request, object_type: str) -> Response:
        """POST /crm/v3/properties/{objectType} ("Properties" guide, "Create a property"): 201, 409 if it exists."""
        obj = self._object(object_type)
        body = req.json()
        if not isinstance(body, dict):
            raise HubSpotError("Invalid input JSON: expected a property definition object")
        missing = [key for key in ("name", "label", "type", "fieldType", "groupName") if not body.get(key)]
        if missing:
            raise HubSpotError(
                f"Property definition is missing required fields: {', '.join(missing)}",
                errors=[{"message": f"{key} is required", "code": "REQUIRED_FIELD"} for key in missing],
            )
        name, type_, field_type = str(body["name"]), str(body["type"]), str(body["fieldType"])
        if not name[:1].isalpha() or not all(c.islower() or c.isdigit() or c == "_" for c in name):
            raise HubSpotError(f"Property name {name!r} must start with a letter and hold only a-z, 0-9 and _")
        if type_ not in schema.PROPERTY_TYPES:
            raise HubSpotError(f"Invalid property type {type_!r}; use one of {sorted(schema.PROPERTY_TYPES)}")
        if field_type not in schema.PROPERTY_TYPES[type_]:
            raise HubSpotError(
                f"fieldType {field_type!r} is not valid for type {type_!r}; use one of "
                f"{sorted(schema.PROPERTY_TYPES[type_])}"
            )
        with self.lock:
            if name in self._properties[obj]:
                raise HubSpotError(f"Property named '{name}' already exists.", 409, "OBJECT_ALREADY_EXISTS")
            definition = schema.property_definition(
                name,
                type_,
                str(body["groupName"]),
                label=str(body["label"]),
                field_type=field_type,
                options=list(body.get("options") or []),
                has_unique_value=bool(body.get("hasUniqueValue", False)),
                hubspot_defined=False,
                description=str(body.get("description") or ""),
                now_iso=iso_ms(self.now_ms()),
            )
            self._properties[obj][name] = definition
            return Response(201, dict(definition))

    # ------------------------------------------------------------ validation and writes

    def _kind(self, obj: str) -> Any:
        defs = self._properties[obj]
        return lambda name: defs[name]["type"] if name in defs else "string"

    def _validated(self, obj: str, values: Any, *, allow_read_only: bool = False) -> dict[str, str]:
        """Normalized values, or the VALIDATION_ERROR HubSpot gives ("Property values were not valid")."""
        if not isinstance(values, dict):
            raise HubSpotError("Invalid input JSON: 'properties' must be an object of property name to value")
        defs = self._properties[obj]
        out: dict[str, str] = {}
        problems: list[tuple[str, str, str]] = []  # (name, code, message)
        for name, raw in values.items():
            definition = defs.get(name)
            if definition is None:
                problems.append((name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'))
                continue
            if name in schema.READ_ONLY and not allow_read_only:
                problems.append(
                    (name, "READ_ONLY_VALUE", f'"{name}" is a read only property; its value cannot be set.')
                )
                continue
            try:
                out[name] = schema.normalize(definition, "" if raw is None else raw)
            except InvalidValue as exc:
                problems.append((name, exc.code, exc.message))
        if problems:
            raise self._property_error(problems)
        return out

    def _property_error(self, problems: list[tuple[str, str, str]]) -> HubSpotError:
        detail = [
            {
                "isValid": False,
                "message": message,
                "error": code,
                "name": name,
                "localizedErrorMessage": message,
                "portalId": self.portal_id,
            }
            for name, code, message in problems
        ]
        return HubSpotError(
            f"Property values were not valid: {orjson.dumps(detail).decode()}",
            errors=[
                {"message": message, "code": code, "context": {"propertyName": [name]}}
                for name, code, message in problems
            ],
        )

    def _unique_names(self, obj: str) -> set[str]:
        defs = self._properties[obj]
        builtin = schema.BUILTIN_ID_PROPERTIES.get(obj, frozenset({"hs_object_id"}))
        return {n for n, d in defs.items() if d["hasUniqueValue"]} | (builtin - {"hs_object_id"})

    def _conflict(self, obj: str, values: dict[str, str], own_id: str | None) -> HubSpotError | None:
        """A unique-value clash with another live record (contacts: email, case-insensitive)."""
        for name in self._unique_names(obj) & set(values):
            wanted = values[name].lower()
            if not wanted:
                continue
            for rec in self._holding(obj, name, wanted):
                if rec.id != own_id and not rec.archived:
                    singular = OBJECT_TYPES[obj][1].replace("_", " ").capitalize()
                    return HubSpotError(
                        f"{singular} already exists. Existing ID: {rec.id}",
                        409,
                        "CONFLICT",
                        context={"id": [rec.id], "propertyName": [name]},
                    )
        return None

    def _find(self, obj: str, key: str, id_property: str | None, *, archived: bool = False) -> _Record | None:
        records = self._records[obj]
        if not id_property or id_property == "hs_object_id":
            rec = records.get(str(key))
            return rec if rec is not None and rec.archived == archived else None
        for rec in self._holding(obj, id_property, str(key)):
            if rec.archived == archived:
                return rec
        return None

    def _check_id_property(self, obj: str, id_property: str | None) -> None:
        if not id_property or id_property == "hs_object_id":
            return
        if id_property not in self._properties[obj]:
            raise HubSpotError(f'Property "{id_property}" does not exist', 400, "VALIDATION_ERROR")
        if id_property not in self._unique_names(obj):
            raise HubSpotError(
                f"{id_property} is not a unique identifier property for {OBJECT_TYPES[obj][1]}: use hs_object_id or "
                "a property created with hasUniqueValue=true",
                400,
                "VALIDATION_ERROR",
            )

    def _create(self, obj: str, values: dict[str, str], source: str, now: int) -> _Record:
        record_id = str(self._next_id)
        self._next_id += 1
        rec = _Record(id=record_id, properties={}, created_ms=now, updated_ms=now)
        self._records[obj][record_id] = rec
        system = {"hs_object_id": record_id, "createdate": iso_ms(now)}
        for name, value in system.items():
            self._set(obj, rec, name, value)
            rec.history[name] = [{"value": value, "timestamp": iso_ms(now), "sourceType": source}]
        self._emit(obj, rec, "creation", None, source, now)
        self._write(obj, rec, values, source=source, now=now)
        return rec

    def _write(self, obj: str, rec: _Record, values: dict[str, str], *, source: str, now: int) -> None:
        """Apply property values; every write bumps the modification time, as HubSpot's does."""
        changed: dict[str, str] = {}
        for name, value in values.items():
            if rec.properties.get(name, "") == value:
                continue
            self._set(obj, rec, name, value)
            changed[name] = value
            rec.history.setdefault(name, []).insert(0, {"value": value, "timestamp": iso_ms(now), "sourceType": source})
        rec.updated_ms = now
        rec.properties["hs_lastmodifieddate"] = iso_ms(now)
        modified = schema.MODIFIED_PROPERTY.get(obj)
        if modified:
            rec.properties[modified] = iso_ms(now)
        for name, value in changed.items():
            if name not in schema.SYSTEM:
                self._emit(obj, rec, "propertyChange", (name, value), source, now)

    def _set(self, obj: str, rec: _Record, name: str, value: str) -> None:
        """Set (or, with "", remove) a property, keeping the value index current."""
        old = rec.properties.get(name)
        if old is not None:
            self._by_value.get((obj, name, old.lower()), set()).discard(rec.id)
        if value == "":
            rec.properties.pop(name, None)
            return
        rec.properties[name] = value
        self._by_value.setdefault((obj, name, value.lower()), set()).add(rec.id)

    def _holding(self, obj: str, name: str, value: str) -> list[_Record]:
        """Records whose property `name` equals `value` (case-insensitively), lowest id first."""
        ids = self._by_value.get((obj, name, value.lower()), set())
        records = self._records[obj]
        return sorted((records[i] for i in ids if i in records), key=lambda r: int(r.id))

    def _archive(self, obj: str, rec: _Record, now: int) -> None:
        rec.archived = True
        rec.archived_ms = now
        rec.updated_ms = now
        for other in self._links.pop((obj, rec.id), set()):
            self._links.get(other, set()).discard((obj, rec.id))
        self._emit(obj, rec, "deletion", None, "INTEGRATION", now)

    def _emit(self, obj: str, rec: _Record, kind: str, change: tuple[str, str] | None, source: str, now: int) -> None:
        """Queue one webhook event (Webhooks API, "Webhook payloads")."""
        if self._sender is None:
            return
        singular = OBJECT_TYPES[obj][1]
        subscription_type = f"{singular}.{kind}"
        event: dict[str, Any] = {
            "eventId": self._next_event,
            "subscriptionId": self._subscription_id(subscription_type),
            "portalId": self.portal_id,
            "appId": self.app_id,
            "occurredAt": now,
            "subscriptionType": subscription_type,
            "attemptNumber": 0,
            "objectId": int(rec.id),
            "changeSource": source,
            "sourceId": f"userId:{self.portal_id}01" if source == "CRM_UI" else str(self.app_id),
        }
        if change is not None:
            event["propertyName"], event["propertyValue"] = change
        if kind in {"creation", "deletion"}:
            event["changeFlag"] = "CREATED" if kind == "creation" else "DELETED"
        self._next_event += 1
        self._sender.enqueue([event])

    @staticmethod
    def _subscription_id(subscription_type: str) -> int:
        return 100_000 + sum(ord(c) * (i + 1) for i, c in enumerate(subscription_type))

    # ------------------------------------------------------------ rendering

    def _render(
        self,
        obj: str,
        rec: _Record,
        names: list[str] | None,
        *,
        with_history: list[str] | None = None,
        associations: list[str] | None = None,
    ) -> dict[str, Any]:
        """A record as the objects API returns it: requested (or default) properties, unset ones null."""
        defined = self._properties[obj]
        # Unknown names are left out, as HubSpot does; known but unset ones come back null.
        wanted = [n for n in names if n in defined] if names else list(schema.DEFAULT_PROPERTIES[obj])
        for always in ("hs_object_id", "createdate", "hs_lastmodifieddate", schema.MODIFIED_PROPERTY.get(obj)):
            if always is not None and always not in wanted:
                wanted.append(always)
        out: dict[str, Any] = {
            "id": rec.id,
            "properties": {name: rec.properties.get(name) for name in wanted},
            "createdAt": iso_ms(rec.created_ms),
            "updatedAt": iso_ms(rec.updated_ms),
            "archived": rec.archived,
        }
        if rec.archived and rec.archived_ms is not None:
            out["archivedAt"] = iso_ms(rec.archived_ms)
        if with_history:
            out["propertiesWithHistory"] = {name: list(rec.history.get(name, [])) for name in with_history}
        if associations:
            linked: dict[str, Any] = {}
            for raw in associations:
                other = schema.object_name(raw)
                if other is None:
                    continue
                ids = sorted(i for o, i in self._links.get((obj, rec.id), set()) if o == other)
                label = f"{OBJECT_TYPES[obj][1]}_to_{OBJECT_TYPES[other][1]}"
                if ids:
                    linked[other] = {"results": [{"id": i, "type": label} for i in ids]}
            if linked:
                out["associations"] = linked
        return out

    def _full(self, obj: str, rec: _Record) -> dict[str, Any]:
        out = self._render(obj, rec, sorted(rec.properties))
        out["properties"] = dict(sorted(rec.properties.items()))
        out["associations"] = {}
        for other, other_id in sorted(self._links.get((obj, rec.id), set())):
            out["associations"].setdefault(other, []).append(other_id)
        return out

    # ------------------------------------------------------------ batch writes

    def _inputs(self, req: Request, limit: int = MAX_BATCH) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        body = req.json()
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            raise HubSpotError("Invalid input JSON: expected an object with an 'inputs' list")
        inputs = body["inputs"]
        if len(inputs) > limit:
            raise HubSpotError(
                f"The maximum number of inputs supported in a batch is {limit}. Please reduce the number of items "
                "and try again"
            )
        for index, item in enumerate(inputs):
            if not isinstance(item, dict):
                raise HubSpotError(f"Invalid input JSON: inputs[{index}] must be an object")
        return body, inputs

    @staticmethod
    def _duplicates(keys: list[str]) -> None:
        unique = sorted(key for key, n in Counter(keys).items() if n > 1)
        if unique:
            raise HubSpotError(
                f"Duplicate IDs found in batch input: [{', '.join(unique)}]. IDs must be unique",
                context={"ids": unique},
            )

    def _batch_answer(
        self, status: int, results: list[dict[str, Any]], errors: list[dict[str, Any]], started: int
    ) -> Response:
        body: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
        body["startedAt"] = iso_ms(started)
        body["completedAt"] = iso_ms(int(time.time() * 1000))
        return Response(207 if errors else status, body)

    def _run_batch(self, obj: str, inputs: list[dict[str, Any]], plan: Any, success_status: int) -> Response:
        """Validate every input, then write; per-input refusals follow "Error handling", "Multi-status errors".

        Without an ``objectWriteTraceId`` on every input, one invalid input refuses the whole batch
        (nothing written), as HubSpot does; with them, each invalid input gets its own error and the
        others are written. Inputs naming a record that does not exist (OBJECT_NOT_FOUND) and injected
        partial failures always fail only their input.
        """
        started = int(time.time() * 1000)
        traced = bool(inputs) and all(isinstance(i.get("objectWriteTraceId"), str) for i in inputs)
        with self.lock:
            now = self.now_ms()
            planned: list[tuple[dict[str, Any], Any]] = []
            errors: list[dict[str, Any]] = []
            for item in inputs:
                try:
                    planned.append((item, plan(item, now, dry_run=True)))
                except HubSpotError as exc:
                    # A missing record is that input's problem; an invalid one refuses the batch.
                    if not traced and exc.category != "OBJECT_NOT_FOUND":
                        raise
                    errors.append(_batch_error(exc.category, exc.message, self._context(item, exc)))
            results: list[dict[str, Any]] = []
            for item, _ in planned:
                if self.partial_failure():
                    errors.append(
                        _batch_error(
                            "INTERNAL_ERROR",
                            "This input could not be processed because of an internal error; retry it.",
                            self._context(item, None),
                        )
                    )
                    continue
                try:
                    result = plan(item, now, dry_run=False)
                    if isinstance(item.get("objectWriteTraceId"), str):
                        result["objectWriteTraceId"] = item["objectWriteTraceId"]
                    results.append(result)
                except HubSpotError as exc:  # a clash with an input written earlier in this batch
                    errors.append(_batch_error(exc.category, exc.message, self._context(item, exc)))
            return self._batch_answer(success_status, results, errors, started)

    @staticmethod
    def _context(item: dict[str, Any], exc: HubSpotError | None) -> dict[str, list[str]]:
        context: dict[str, list[str]] = dict(exc.context or {}) if exc is not None else {}
        if "id" in item and "ids" not in context:
            context["ids"] = [str(item["id"])]
        if isinstance(item.get("objectWriteTraceId"), str):
            context["objectWriteTraceId"] = [item["objectWriteTraceId"]]
        return context

    def batch_upsert(self, req: Request, object_type: str) -> Response:
        """POST /crm/v3/objects/{objectType}/batch/upsert ("Create or update a batch of objects by unique
        property values"): ``inputs[{id, idProperty, properties}]``, result entries carry ``new``."""
        obj = self._object(object_type)
        _, inputs = self._inputs(req)
        for index, item in enumerate(inputs):
            if item.get("id") in (None, ""):
                raise HubSpotError(f"inputs[{index}].id is required: the value of the idProperty to match on")
        self._duplicates([str(i["id"]) for i in inputs])
        with self.lock:
            for item in inputs:
                self._check_id_property(obj, item.get("idProperty"))

        def plan(item: dict[str, Any], now: int, *, dry_run: bool) -> Any:
            id_property = item.get("idProperty") or "hs_object_id"
            key = str(item["id"])
            values = self._validated(obj, item.get("properties") or {})
            rec = self._find(obj, key, id_property)
            if rec is None and id_property == "hs_object_id":
                raise HubSpotError(
                    f"Could not find {OBJECT_TYPES[obj][1]} with hs_object_id {key}; upsert creates records only when "
                    "matching on a unique property",
                    404,
                    "OBJECT_NOT_FOUND",
                    context={"ids": [key]},
                )
            if rec is None:
                values = {**values, id_property: schema.normalize(self._properties[obj][id_property], key)}
            clash = self._conflict(obj, values, rec.id if rec else None)
            if clash is not None:
                raise clash
            if dry_run:
                return None
            new = rec is None
            if rec is None:
                rec = self._create(obj, values, "INTEGRATION", now)
            else:
                self._write(obj, rec, values, source="INTEGRATION", now=now)
            return {**self._render(obj, rec, list(values) or None), "new": new}

        return self._run_batch(obj, inputs, plan, 200)

    def batch_create(self, req: Request, object_type: str) -> Response:
        """POST /crm/v3/objects/{objectType}/batch/create ("Create a batch of objects"): 201."""
        obj = self._object(object_type)
        _, inputs = self._inputs(req)

        def plan(item: dict[str, Any], now: int, *, dry_run: bool) -> Any:
            values = self._validated(obj, item.get("properties") or {})
            links = self._input_associations(obj, item.get("associations") or [])
            clash = self._conflict(obj, values, None)
            if clash is not None:
                raise clash
            if dry_run:
                return None
            rec = self._create(obj, values, "INTEGRATION", now)
            for other, other_id in links:
                self._link(obj, rec.id, other, other_id)
            return self._render(obj, rec, list(values) or None)

        return self._run_batch(obj, inputs, plan, 201)

    def batch_update(self, req: Request, object_type: str) -> Response:
        """POST /crm/v3/objects/{objectType}/batch/update ("Update a batch of objects by internal ID, or
        unique property values")."""
        obj = self._object(object_type)
        _, inputs = self._inputs(req)
        self._duplicates([str(i.get("id")) for i in inputs])
        with self.lock:
            for item in inputs:
                self._check_id_property(obj, item.get("idProperty"))

        def plan(item: dict[str, Any], now: int, *, dry_run: bool) -> Any:
            key = str(item.get("id"))
            values = self._validated(obj, item.get("properties") or {})
            rec = self._find(obj, key, item.get("idProperty"))
            if rec is None:
                raise HubSpotError(
                    f"Could not get some {OBJECT_TYPES[obj][1].upper()} objects, they may be deleted or not exist. "
                    "Check that ids are valid.",
                    404,
                    "OBJECT_NOT_FOUND",
                    context={"ids": [key]},
                )
            clash = self._conflict(obj, values, rec.id)
            if clash is not None:
                raise clash
            if dry_run:
                return None
            self._write(obj, rec, values, source="INTEGRATION", now=now)
            return self._render(obj, rec, list(values) or None)

        return self._run_batch(obj, inputs, plan, 200)

    def _input_associations(self, obj: str, associations: Any) -> list[tuple[str, str]]:
        """Associations given inline on create: ``[{to: {id}, types: [{associationTypeId}]}]``."""
        by_type = {type_id: pair for pair, type_id in schema.DEFAULT_ASSOCIATION_TYPES.items()}
        links: list[tuple[str, str]] = []
        for entry in associations if isinstance(associations, list) else []:
            to_id = str((entry.get("to") or {}).get("id", ""))
            for spec in entry.get("types") or []:
                pair = by_type.get(spec.get("associationTypeId"))
                if pair is None or pair[0] != obj:
                    raise HubSpotError(
                        f"associationTypeId {spec.get('associationTypeId')} is not a default association from {obj}"
                    )
                if self._find(pair[1], to_id, None) is None:
                    raise HubSpotError(
                        f"No {OBJECT_TYPES[pair[1]][1]} with ID {to_id} to associate with", 400, "VALIDATION_ERROR"
                    )
                links.append((pair[1], to_id))
        return links

    # ------------------------------------------------------------ batch read / archive

    def batch_read(self, req: Request, object_type: str) -> Response:
        """POST /crm/v3/objects/{objectType}/batch/read ("Read a batch of objects by internal ID, or unique
        property values"): unknown ids → 207 with one OBJECT_NOT_FOUND error listing them."""
        obj = self._object(object_type)
        body = req.json()
        history = body.get("propertiesWithHistory") if isinstance(body, dict) else None
        _, inputs = self._inputs(req, MAX_BATCH_WITH_HISTORY if history else MAX_BATCH)
        if history and len(inputs) > MAX_BATCH_WITH_HISTORY:  # pragma: no cover - _inputs already refused it
            raise HubSpotError("too many inputs")
        id_property = body.get("idProperty")
        archived = req.arg("archived", "false") == "true"
        started = int(time.time() * 1000)
        with self.lock:
            self._check_id_property(obj, id_property)
            results: list[dict[str, Any]] = []
            missing: list[str] = []
            for item in inputs:
                key = str(item.get("id"))
                rec = self._find(obj, key, id_property, archived=archived)
                if rec is None:
                    missing.append(key)
                    continue
                results.append(
                    self._render(obj, rec, list(body.get("properties") or []) or None, with_history=history or None)
                )
            errors = []
            if missing:
                errors.append(
                    _batch_error(
                        "OBJECT_NOT_FOUND",
                        f"Could not get some {OBJECT_TYPES[obj][1].upper()} objects, they may be deleted or not "
                        "exist. Check that ids are valid.",
                        {"ids": missing},
                    )
                )
            return self._batch_answer(200, results, errors, started)

    def batch_archive(self, req: Request, object_type: str) -> Response:
        """POST /crm/v3/objects/{objectType}/batch/archive ("Archive a batch of objects by ID"): 204, unknown
        ids ignored."""
        obj = self._object(object_type)
        _, inputs = self._inputs(req)
        with self.lock:
            now = self.now_ms()
            for item in inputs:
                rec = self._find(obj, str(item.get("id")), None)
                if rec is not None:
                    self._archive(obj, rec, now)
        return Response(204)

    # ------------------------------------------------------------ single records and listing

    def get_record(self, req: Request, object_type: str, record_id: str) -> Response:
        """GET /crm/v3/objects/{objectType}/{objectId} ("Retrieve records"): ``idProperty``,
        ``properties``, ``propertiesWithHistory``, ``associations``, ``archived``; 404 OBJECT_NOT_FOUND."""
        obj = self._object(object_type)
        id_property = req.arg("idProperty")
        with self.lock:
            self._check_id_property(obj, id_property)
            rec = self._find(obj, record_id, id_property, archived=req.arg("archived", "false") == "true")
            if rec is None:
                raise HubSpotError(
                    f"Object not found.  objectId are usually numeric. ({OBJECT_TYPES[obj][1]} {record_id})",
                    404,
                    "OBJECT_NOT_FOUND",
                    context={"id": [record_id]},
                )
            return Response(
                200,
                self._render(
                    obj,
                    rec,
                    _names(req, "properties"),
                    with_history=_names(req, "propertiesWithHistory"),
                    associations=_names(req, "associations"),
                ),
            )

    def create_record(self, req: Request, object_type: str) -> Response:
        """POST /crm/v3/objects/{objectType} ("Create records"): 201; a unique-value clash → 409 CONFLICT."""
        obj = self._object(object_type)
        body = req.json()
        if not isinstance(body, dict):
            raise HubSpotError("Invalid input JSON: expected {properties: {...}}")
        with self.lock:
            values = self._validated(obj, body.get("properties") or {})
            links = self._input_associations(obj, body.get("associations") or [])
            clash = self._conflict(obj, values, None)
            if clash is not None:
                raise clash
            rec = self._create(obj, values, "INTEGRATION", self.now_ms())
            for other, other_id in links:
                self._link(obj, rec.id, other, other_id)
            return Response(201, self._render(obj, rec, list(values) or None))

    def update_record(self, req: Request, object_type: str, record_id: str) -> Response:
        """PATCH /crm/v3/objects/{objectType}/{objectId} ("Update records"), optionally by ``idProperty``."""
        obj = self._object(object_type)
        body = req.json()
        if not isinstance(body, dict):
            raise HubSpotError("Invalid input JSON: expected {properties: {...}}")
        id_property = req.arg("idProperty")
        with self.lock:
            self._check_id_property(obj, id_property)
            rec = self._find(obj, record_id, id_property)
            if rec is None:
                raise HubSpotError(
                    f"Object not found.  objectId are usually numeric. ({OBJECT_TYPES[obj][1]} {record_id})",
                    404,
                    "OBJECT_NOT_FOUND",
                    context={"id": [record_id]},
                )
            values = self._validated(obj, body.get("properties") or {})
            clash = self._conflict(obj, values, rec.id)
            if clash is not None:
                raise clash
            self._write(obj, rec, values, source="INTEGRATION", now=self.now_ms())
            return Response(200, self._render(obj, rec, list(values) or None))

    def archive_record(self, req: Request, object_type: str, record_id: str) -> Response:
        """DELETE /crm/v3/objects/{objectType}/{objectId} ("Delete records": moved to the recycling bin): 204."""
        obj = self._object(object_type)
        with self.lock:
            rec = self._find(obj, record_id, None)
            if rec is not None:
                self._archive(obj, rec, self.now_ms())
        return Response(204)

    def list_records(self, req: Request, object_type: str) -> Response:
        """GET /crm/v3/objects/{objectType} ("Retrieve records", list): ``limit`` ≤ 100, ``after`` cursor,
        ``properties``, ``archived``; ordered by id."""
        obj = self._object(object_type)
        limit = self._int_arg(req, "limit", 10)
        if not 1 <= limit <= MAX_LIST_PAGE:
            raise HubSpotError(f"limit must be between 1 and {MAX_LIST_PAGE}; was {limit}")
        after = self._int_arg(req, "after", 0)
        archived = req.arg("archived", "false") == "true"
        with self.lock:
            ordered = sorted(
                (r for r in self._records[obj].values() if r.archived == archived and int(r.id) > after),
                key=lambda r: int(r.id),
            )
            page = ordered[:limit]
            body: dict[str, Any] = {
                "results": [
                    self._render(obj, r, _names(req, "properties"), associations=_names(req, "associations"))
                    for r in page
                ]
            }
            if len(ordered) > limit:
                token = page[-1].id
                body["paging"] = {"next": {"after": token, "link": f"{req.url.split('?')[0]}?after={token}"}}
            return Response(200, body)

    @staticmethod
    def _int_arg(req: Request, name: str, default: int) -> int:
        raw = req.arg(name)
        if raw in (None, ""):
            return default
        try:
            return int(raw)
        except ValueError:
            raise HubSpotError(f"{name} must be an integer; was {raw!r}") from None

    # ------------------------------------------------------------ search

    def search(self, req: Request, object_type: str) -> Response:
        """POST /crm/v3/objects/{objectType}/search ("Search the CRM"); see search.py for the rules.

        Real search results are eventually consistent (a write shows up after a few seconds); the
        sandbox answers from its current state.
        """
        obj = self._object(object_type)
        body = req.json() or {}
        if not isinstance(body, dict):
            raise HubSpotError("Invalid input JSON: expected a search request object")
        try:
            groups = check_limits(body.get("filterGroups"))
        except SearchError as exc:
            raise HubSpotError(str(exc)) from None
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or not 0 <= limit <= MAX_PAGE:
            raise HubSpotError(f"limit must be an integer between 0 and {MAX_PAGE}; was {limit!r}")
        try:
            offset = int(body.get("after") or 0)
        except (TypeError, ValueError):
            raise HubSpotError(
                f"after must be the paging.next.after of a previous page; was {body.get('after')!r}"
            ) from None
        if offset >= self.search_cap:
            raise HubSpotError(
                f"The search API pages through at most {self.search_cap} results per query; after={offset} is "
                "beyond it. Narrow the query (e.g. filter on hs_lastmodifieddate) and page within it."
            )
        sorts = body.get("sorts") or []
        if not isinstance(sorts, list) or len(sorts) > 1:
            raise HubSpotError("sorts takes at most one sort: [{propertyName, direction}]")
        with self.lock:
            kind = self._kind(obj)
            hits = [r for r in self._records[obj].values() if not r.archived and matches(r.properties, groups, kind)]
            hits.sort(key=lambda r: int(r.id))
            if sorts:
                sort = sorts[0] if isinstance(sorts[0], dict) else {"propertyName": sorts[0]}
                name = str(sort.get("propertyName", "hs_object_id"))
                descending = str(sort.get("direction", "ASCENDING")).upper() == "DESCENDING"
                present = [r for r in hits if sort_value(r.properties, name, kind) is not None]
                absent = [r for r in hits if sort_value(r.properties, name, kind) is None]
                present.sort(key=lambda r: sort_value(r.properties, name, kind), reverse=descending)
                hits = present + absent
            end = min(offset + limit, self.search_cap)
            page = hits[offset:end]
            names = list(body.get("properties") or []) or None
            answer: dict[str, Any] = {"total": len(hits), "results": [self._render(obj, r, names) for r in page]}
            if end < len(hits) and end < self.search_cap:
                answer["paging"] = {"next": {"after": str(end), "link": f"?after={end}"}}
            return Response(200, answer)

    # ------------------------------------------------------------ associations v4

    def _link(self, a_obj: str, a_id: str, b_obj: str, b_id: str) -> None:
        self._links.setdefault((a_obj, a_id), set()).add((b_obj, b_id))
        self._links.setdefault((b_obj, b_id), set()).add((a_obj, a_id))

    def _pair(self, from_type: str, to_type: str) -> tuple[str, str, int]:
        from_obj, to_obj = self._object(from_type), self._object(to_type)
        type_id = schema.DEFAULT_ASSOCIATION_TYPES.get((from_obj, to_obj))
        if type_id is None:
            raise HubSpotError(
                f"No default association type between {from_obj} and {to_obj} in this sandbox; supported pairs: "
                f"{sorted(schema.DEFAULT_ASSOCIATION_TYPES)}"
            )
        return from_obj, to_obj, type_id

    def associate_default(self, req: Request, from_type: str, to_type: str) -> Response:
        """POST /crm/v4/associations/{from}/{to}/batch/associate/default ("Associations v4", "Associate records
        without a label"): creates the unlabeled type both ways; results list both directions. An input
        naming a record that does not exist gets its own error (207)."""
        from_obj, to_obj, type_id = self._pair(from_type, to_type)
        _, inputs = self._inputs(req, MAX_ASSOCIATION_BATCH)
        reverse_id = schema.DEFAULT_ASSOCIATION_TYPES[(to_obj, from_obj)]
        started = int(time.time() * 1000)
        with self.lock:
            results: list[dict[str, Any]] = []
            errors: list[dict[str, Any]] = []
            for item in inputs:
                from_id = str((item.get("from") or {}).get("id", ""))
                to_id = str((item.get("to") or {}).get("id", ""))
                absent = [(o, i) for o, i in ((from_obj, from_id), (to_obj, to_id)) if self._find(o, i, None) is None]
                if absent:
                    what = ", ".join(f"{OBJECT_TYPES[o][1]} {i}" for o, i in absent)
                    errors.append(
                        _batch_error(
                            "VALIDATION_ERROR",
                            f"One or more object ids do not exist: {what}",
                            {"fromObjectId": [from_id], "toObjectId": [to_id]},
                            "crm.associations.INVALID_OBJECT_IDS",
                        )
                    )
                    continue
                self._link(from_obj, from_id, to_obj, to_id)
                for a, b, tid in ((from_id, to_id, type_id), (to_id, from_id, reverse_id)):
                    results.append(
                        {
                            "from": {"id": a},
                            "to": {"id": b},
                            "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": tid},
                        }
                    )
            return self._batch_answer(200, results, errors, started)

    def read_associations(self, req: Request, from_type: str, to_type: str) -> Response:
        """POST /crm/v4/associations/{from}/{to}/batch/read ("Associations v4", "Retrieve associated records"):
        ``results[{from:{id}, to:[{toObjectId, associationTypes:[{category, typeId, label}]}]}]``; an id
        with none → a NO_ASSOCIATIONS_FOUND error for it (207)."""
        from_obj, to_obj, type_id = self._pair(from_type, to_type)
        _, inputs = self._inputs(req, MAX_ASSOCIATION_BATCH)
        started = int(time.time() * 1000)
        with self.lock:
            results: list[dict[str, Any]] = []
            errors: list[dict[str, Any]] = []
            for item in inputs:
                from_id = str(item.get("id", ""))
                linked = sorted(
                    (int(i) for o, i in self._links.get((from_obj, from_id), set()) if o == to_obj),
                )
                if not linked:
                    errors.append(
                        _batch_error(
                            "OBJECT_NOT_FOUND",
                            f"No {OBJECT_TYPES[to_obj][1]} is associated with {OBJECT_TYPES[from_obj][1]} {from_id}.",
                            {"fromObjectId": [from_id]},
                            "crm.associations.NO_ASSOCIATIONS_FOUND",
                        )
                    )
                    continue
                types = [{"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": None}]
                results.append(
                    {"from": {"id": from_id}, "to": [{"toObjectId": i, "associationTypes": types} for i in linked]}
                )
            return self._batch_answer(200, results, errors, started)

    def archive_associations(self, req: Request, from_type: str, to_type: str) -> Response:
        """POST /crm/v4/associations/{from}/{to}/batch/archive ("Associations v4", "Remove associations"):
        ``inputs[{from:{id}, to:[{id}]}]``, 204."""
        from_obj, to_obj, _ = self._pair(from_type, to_type)
        _, inputs = self._inputs(req, MAX_ASSOCIATION_BATCH)
        with self.lock:
            for item in inputs:
                from_id = str((item.get("from") or {}).get("id", ""))
                for target in item.get("to") or []:
                    to_id = str((target or {}).get("id", ""))
                    self._links.get((from_obj, from_id), set()).discard((to_obj, to_id))
                    self._links.get((to_obj, to_id), set()).discard((from_obj, from_id))
        return Response(204)


__all__ = ["HubSpotError", "HubSpotSandbox"]
