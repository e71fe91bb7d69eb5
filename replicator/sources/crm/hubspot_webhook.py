"""The HubSpot webhook receiver: a WSGI app mounted on the service's HTTP server.

HubSpot POSTs a JSON array of events (up to 100 per request) to the app's target URL
(Webhooks API, developers.hubspot.com/docs/api-reference/webhooks/guide, "Webhook
payloads"): each event has ``eventId``, ``subscriptionType`` (``contact.propertyChange``,
``company.creation``, ``deal.deletion``, ...), ``objectId``, ``occurredAt``,
``changeSource``, ``sourceId`` and more. Requests are signed with
``X-HubSpot-Signature-v3`` (see ``signature.py``) over the full URL HubSpot called, so
behind a proxy the receiver needs ``public_url``, the externally visible base URL.

As for BottleCRM (``webhook.py``), the receiver only verifies, parses and stores: each
event goes to the inbox (committed) before HubSpot is answered, and the CRM change
source fetches the record later. Answers:

- 401: signature missing, wrong or stale; nothing is written.
- 200: every event stored (or already stored: a redelivery has the same ``delivery_id``), or
  dead-lettered when it cannot be used (not JSON, not an array, an event without
  ``eventId``/``objectId``, a subscription type we do not replicate). A retry would
  send the same bytes, so such events are parked for a person, each with its reason.
- 503: the inbox could not be written; HubSpot retries a failed delivery later.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import orjson
import psycopg
import structlog

from replicator.ops.http import WsgiApp
from replicator.sources.crm.signature import (
    HUBSPOT_SIGNATURE_HEADER,
    HUBSPOT_TIMESTAMP_HEADER,
    SignatureError,
    verify_hubspot_v3,
)
from replicator.sources.crm.wsgi import (
    INBOX_UNAVAILABLE,
    Answer,
    Unusable,
    count,
    dead_lettered,
    environ_key,
    post_only_app,
    rejected,
    store_dead_letter_as,
)
from replicator.state.inbox import Inbox

log = structlog.get_logger()

CRM = "hubspot"

# subscriptionType prefix -> our object.
EVENT_OBJECTS: dict[str, str] = {
    "company": "account",
    "contact": "contact",
    "deal": "opportunity",
    "product": "product",
    "line_item": "line_item",
}
# Generic ("object.*") subscriptions name the type by objectTypeId instead.
OBJECT_TYPE_IDS: dict[str, str] = {
    "0-1": "contact",
    "0-2": "account",
    "0-3": "opportunity",
    "0-7": "product",
    "0-8": "line_item",
}
EVENT_ACTIONS = frozenset(
    {"creation", "deletion", "propertyChange", "associationChange", "merge", "restore", "privacyDeletion"}
)


# HubSpot's actions in the inbox's vocabulary (`<object>.created|updated|deleted`, as BottleCRM
# names them), which the change source reads to tell creates and deletes from updates.
INBOX_ACTIONS: dict[str, str] = {"creation": "created", "deletion": "deleted", "privacyDeletion": "deleted"}


def inbox_event(subscription_type: str) -> str:
    """``contact.deletion`` -> ``contact.deleted``; property, association, merge and restore events are updates."""
    prefix, _, action = subscription_type.partition(".")
    return f"{prefix}.{INBOX_ACTIONS.get(action, 'updated')}"


def object_of_event(event: dict[str, Any]) -> str | None:
    """Our object for an event's subscription type, None when we do not replicate it."""
    subscription = event.get("subscriptionType")
    if not isinstance(subscription, str):
        return None
    prefix, dot, action = subscription.partition(".")
    if not dot or action not in EVENT_ACTIONS:
        return None
    if prefix == "object":
        return OBJECT_TYPE_IDS.get(str(event.get("objectTypeId")))
    return EVENT_OBJECTS.get(prefix)


def delivery_id(event: dict[str, Any]) -> str:
    """The event's key in the inbox: ``eventId`` plus what tells events apart.

    HubSpot does not promise ``eventId`` unique ("Webhook payloads": "not guaranteed to be
    unique"), so alone it could merge distinct events. A retry resends the same event with
    the same fields, so ``eventId``, ``subscriptionId``, ``objectId``, ``occurredAt`` (and
    ``propertyName`` for property changes) still match on a redelivery.
    """
    parts = [event.get(k) for k in ("eventId", "subscriptionId", "objectId", "occurredAt")]
    if event.get("propertyName") not in (None, ""):
        parts.append(event["propertyName"])
    return ":".join("" if p is None else str(p) for p in parts)


def _check(event: Any, position: int) -> tuple[dict[str, Any], str]:
    """The event and its object, or Unusable naming what is wrong."""
    if not isinstance(event, dict):
        raise Unusable("malformed", f"event #{position} is JSON {type(event).__name__}, expected an object")
    missing = [k for k in ("eventId", "subscriptionType", "objectId") if event.get(k) in (None, "")]
    if missing:
        raise Unusable("malformed", f"event #{position} has no {', '.join(missing)}")
    obj = object_of_event(event)
    if obj is None:
        raise Unusable(
            "unknown",
            f"event {event['eventId']}: subscription type {event['subscriptionType']!r} is not replicated "
            f"(only {', '.join(sorted(EVENT_OBJECTS))} creation/deletion/propertyChange/... events are); "
            "remove the subscription from the HubSpot app",
        )
    return event, obj


def request_url(environ: dict[str, Any], public_url: str | None) -> str:
    """The full URL HubSpot called: ``public_url`` (or the Host we saw) + path + query."""
    if public_url:
        base = public_url.rstrip("/")
    else:
        host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
        base = f"{environ.get('wsgi.url_scheme', 'http')}://{host}"
    # PEP 3333 hands the path over decoded, in latin-1; HubSpot hashes UTF-8.
    path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1").decode("utf-8", "replace")
    query = environ.get("QUERY_STRING", "")
    return f"{base}{path}?{query}" if query else f"{base}{path}"


def make_hubspot_webhook_app(
    client_secret: str,
    inbox: Inbox,
    store_dead_letter: Callable[..., None],
    *,
    public_url: str | None,
    tolerance_s: float = 300.0,
    clock: Callable[[], float] = time.time,
) -> WsgiApp:
    """A WSGI app receiving HubSpot's signed webhooks into ``inbox``.

    ``store_dead_letter`` takes StateStore.dead_letter's keyword arguments.
    """

    def handle(environ: dict[str, Any], body: bytes) -> Answer:
        url = request_url(environ, public_url)
        try:
            verify_hubspot_v3(
                environ.get(environ_key(HUBSPOT_SIGNATURE_HEADER)),
                environ.get(environ_key(HUBSPOT_TIMESTAMP_HEADER)),
                "POST",
                url,
                body,
                client_secret,
                now=clock(),
                tolerance_s=tolerance_s,
            )
        except SignatureError as exc:
            return rejected(CRM, exc, url=url)

        try:
            try:
                events = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise Unusable("malformed", f"the body is not JSON ({exc})") from None
            if not isinstance(events, list):
                raise Unusable("malformed", f"the body is JSON {type(events).__name__}, expected an array of events")
        except Unusable as exc:
            key = "sha256:" + hashlib.sha256(body).hexdigest()
            return dead_lettered(CRM, store_dead_letter, key, exc, body, {"stored": 0, "dead_letters": [exc.reason]})

        stored = duplicates = 0
        reasons: list[str] = []
        for position, raw in enumerate(events):
            try:
                try:
                    event, obj = _check(raw, position)
                except Unusable as exc:
                    key = (
                        str(raw["eventId"])
                        if isinstance(raw, dict) and raw.get("eventId") not in (None, "")
                        else "sha256:" + hashlib.sha256(orjson.dumps(raw)).hexdigest()
                    )
                    store_dead_letter_as(CRM, store_dead_letter, key, exc.reason, raw)
                    count(CRM, exc.outcome)
                    reasons.append(exc.reason)
                    log.warning("webhook event dead-lettered", crm=CRM, reason=exc.reason, delivery=key)
                    continue
                added = inbox.add(
                    crm=CRM,
                    delivery_id=delivery_id(event),
                    event=inbox_event(str(event["subscriptionType"])),
                    object=obj,
                    crm_id=str(event["objectId"]),
                    payload=event,
                )
            except psycopg.Error as exc:
                # Events stored so far stay stored; HubSpot's retry brings them again as duplicates.
                count(CRM, "unavailable")
                log.error("webhook not stored: inbox unavailable", crm=CRM, error=str(exc))
                return INBOX_UNAVAILABLE
            if added:
                stored += 1
            else:
                duplicates += 1
        if stored:
            count(CRM, "accepted", stored)
        if duplicates:
            count(CRM, "duplicate", duplicates)
        return "200 OK", {"stored": stored, "duplicates": duplicates, "dead_letters": reasons}

    return post_only_app(CRM, handle)
