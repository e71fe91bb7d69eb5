"""The BottleCRM webhook receiver: a WSGI app mounted on the service's HTTP server.

It only verifies, parses and stores: every notification goes to the inbox (committed)
before BottleCRM is answered, and the CRM change source does the slow part (fetching
the current record, writing the ERP) later. So an answered delivery is never lost, and
the answer comes well within BottleCRM's 10 s timeout.

Answers, and why:
- 401: the signature is missing, wrong or stale; nothing is written. BottleCRM retries,
  which only helps if the secret was being rotated, but it must not look accepted.
- 200 + dead letter: signed but unusable (not JSON, no event/data/id, an event we do not
  map). A retry would send the same bytes, so the delivery is parked for a person.
- 200: stored, or already stored (a redelivery keeps its X-BottleCRM-Delivery id).
- 503: the inbox could not be written (database down): BottleCRM retries after 1, 5,
  30 minutes ...

The delivery id header is not covered by the signature. A captured request replayed
within the tolerance under a new delivery id is stored twice; that is harmless, as the
change source always fetches the record's current state.
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
from replicator.sources.crm.bottlecrm import object_of_event
from replicator.sources.crm.signature import SIGNATURE_HEADER, SignatureError, verify_bottlecrm
from replicator.sources.crm.wsgi import (
    INBOX_UNAVAILABLE,
    MAX_BODY_BYTES,
    Answer,
    Unusable,
    count,
    dead_lettered,
    environ_key,
    post_only_app,
    rejected,
)
from replicator.state.inbox import Inbox

log = structlog.get_logger()

DELIVERY_HEADER = "X-BottleCRM-Delivery"
PING_EVENT = "ping"

# MAX_BODY_BYTES is the shared WSGI shell's limit, named here too for the receiver's users.
__all__ = ["DELIVERY_HEADER", "MAX_BODY_BYTES", "PING_EVENT", "make_webhook_app"]


def _parse(body: bytes, delivery_id: str | None) -> tuple[dict[str, Any], str, str | None]:
    """The envelope, its event and the mapped object (None for a ping)."""
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Unusable("malformed", f"the body is not JSON ({exc})") from None
    if not isinstance(envelope, dict):
        raise Unusable("malformed", f"the body is JSON {type(envelope).__name__}, expected an object envelope")
    missing = [key for key in ("id", "event", "data") if key not in envelope]
    if missing:
        raise Unusable("malformed", f"the envelope has no {', '.join(missing)} (expected id, event, data)")
    event = envelope["event"]
    if not isinstance(event, str) or not event:
        raise Unusable("malformed", f"the envelope's event is {event!r}, expected a name like account.updated")
    if event == PING_EVENT:
        return envelope, event, None
    obj = object_of_event(event)
    if obj is None:
        raise Unusable(
            "unknown",
            f"event {event!r} is not replicated (only account.*, contact.* and deal.* are); "
            "unsubscribe the webhook from it",
        )
    data = envelope["data"]
    if not isinstance(data, dict) or data.get("id") in (None, ""):
        raise Unusable("malformed", f"event {event!r}: the envelope's data has no id")
    if not delivery_id:
        raise Unusable(
            "malformed", f"event {event!r}: no {DELIVERY_HEADER} header, so redeliveries cannot be told apart"
        )
    return envelope, event, obj


def make_webhook_app(
    crm: str,
    secret: str,
    inbox: Inbox,
    store_dead_letter: Callable[..., None],
    *,
    tolerance_s: float,
    clock: Callable[[], float] = time.time,
) -> WsgiApp:
    """A WSGI app receiving ``crm``'s signed webhooks into ``inbox``.

    ``store_dead_letter`` takes StateStore.dead_letter's keyword arguments.
    """

    def handle(environ: dict[str, Any], body: bytes) -> Answer:
        delivery_id = environ.get(environ_key(DELIVERY_HEADER)) or None
        try:
            verify_bottlecrm(
                environ.get(environ_key(SIGNATURE_HEADER)), body, secret, now=clock(), tolerance_s=tolerance_s
            )
        except SignatureError as exc:
            return rejected(crm, exc, delivery=delivery_id)

        try:
            envelope, event, obj = _parse(body, delivery_id)
        except Unusable as exc:
            key = delivery_id or "sha256:" + hashlib.sha256(body).hexdigest()
            return dead_lettered(crm, store_dead_letter, key, exc, body, {"stored": False, "dead_letter": exc.reason})

        if obj is None:  # a ping: proves the endpoint and the secret, carries no change
            count(crm, "ping")
            return "200 OK", {"pong": True}

        assert delivery_id is not None  # _parse refused a change without one
        try:
            stored = inbox.add(
                crm=crm,
                delivery_id=delivery_id,
                event=event,
                object=obj,
                crm_id=str(envelope["data"]["id"]),
                payload=envelope,
            )
        except psycopg.Error as exc:
            count(crm, "unavailable")
            log.error("webhook not stored: inbox unavailable", crm=crm, delivery=delivery_id, error=str(exc))
            return INBOX_UNAVAILABLE
        count(crm, "accepted" if stored else "duplicate")
        return "200 OK", {"stored": stored}

    return post_only_app(crm, handle)
