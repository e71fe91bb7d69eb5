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
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import psycopg
import structlog

from replicator.ops.http import StartResponse, WsgiApp
from replicator.ops.metrics import WEBHOOKS
from replicator.sources.crm.bottlecrm import object_of_event
from replicator.sources.crm.signature import SIGNATURE_HEADER, SignatureError, verify_bottlecrm
from replicator.state.inbox import Inbox

log = structlog.get_logger()

MAX_BODY_BYTES = 1 << 20
DELIVERY_HEADER = "X-BottleCRM-Delivery"
PING_EVENT = "ping"
_RAW_KEEP = 2000


def _environ_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


class _Unusable(Exception):
    """A verified delivery that no retry can fix: dead-lettered and answered 200."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


def _parse(body: bytes, delivery_id: str | None) -> tuple[dict[str, Any], str, str | None]:
    """The envelope, its event and the mapped object (None for a ping)."""
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _Unusable("malformed", f"the body is not JSON ({exc})") from None
    if not isinstance(envelope, dict):
        raise _Unusable("malformed", f"the body is JSON {type(envelope).__name__}, expected an object envelope")
    missing = [key for key in ("id", "event", "data") if key not in envelope]
    if missing:
        raise _Unusable("malformed", f"the envelope has no {', '.join(missing)} (expected id, event, data)")
    event = envelope["event"]
    if not isinstance(event, str) or not event:
        raise _Unusable("malformed", f"the envelope's event is {event!r}, expected a name like account.updated")
    if event == PING_EVENT:
        return envelope, event, None
    obj = object_of_event(event)
    if obj is None:
        raise _Unusable(
            "unknown",
            f"event {event!r} is not replicated (only account.*, contact.* and deal.* are); "
            "unsubscribe the webhook from it",
        )
    data = envelope["data"]
    if not isinstance(data, dict) or data.get("id") in (None, ""):
        raise _Unusable("malformed", f"event {event!r}: the envelope's data has no id")
    if not delivery_id:
        raise _Unusable(
            "malformed", f"event {event!r}: no {DELIVERY_HEADER} header, so redeliveries cannot be told apart"
        )
    return envelope, event, obj


def _respond(start_response: StartResponse, status: str, document: dict[str, Any]) -> Iterable[bytes]:
    body = orjson.dumps(document)
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _read_body(environ: dict[str, Any]) -> bytes | None:
    """The raw body, or None when it is over the limit (then it is not read at all)."""
    raw = environ.get("CONTENT_LENGTH") or "0"
    try:
        length = int(raw)
    except ValueError:
        length = -1
    if length < 0:
        raise ValueError(f"Content-Length {raw!r} is not a byte count")
    if length > MAX_BODY_BYTES:
        return None
    return environ["wsgi.input"].read(length) if length else b""


def _dead_letter_payload(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"raw": body[:_RAW_KEEP].decode("utf-8", "replace")}


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

    def count(outcome: str) -> None:
        WEBHOOKS.labels(crm=crm, outcome=outcome).inc()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") != "POST":
            start_response("405 Method Not Allowed", [("Allow", "POST"), ("Content-Type", "text/plain")])
            return [b"webhooks are POSTed\n"]
        try:
            body = _read_body(environ)
        except ValueError as exc:
            count("malformed")
            return _respond(start_response, "400 Bad Request", {"error": str(exc)})
        if body is None:
            count("malformed")
            return _respond(
                start_response, "413 Content Too Large", {"error": f"body over {MAX_BODY_BYTES} bytes, not read"}
            )

        delivery_id = environ.get(_environ_key(DELIVERY_HEADER)) or None
        try:
            verify_bottlecrm(
                environ.get(_environ_key(SIGNATURE_HEADER)), body, secret, now=clock(), tolerance_s=tolerance_s
            )
        except SignatureError as exc:
            count(exc.outcome)
            log.warning("webhook rejected", crm=crm, outcome=exc.outcome, reason=exc.message, delivery=delivery_id)
            return _respond(start_response, "401 Unauthorized", {"error": exc.message})

        try:
            envelope, event, obj = _parse(body, delivery_id)
        except _Unusable as exc:
            key = delivery_id or "sha256:" + hashlib.sha256(body).hexdigest()
            try:
                store_dead_letter(
                    entity=f"webhook:{crm}",
                    erp_key=key,
                    op="webhook",
                    reason=exc.reason,
                    payload=_dead_letter_payload(body),
                    source_table=None,
                    position=None,
                )
            except psycopg.Error as db_exc:
                count("unavailable")
                log.error("webhook dead letter not stored", crm=crm, delivery=key, error=str(db_exc))
                return _respond(start_response, "503 Service Unavailable", {"error": "state store unavailable"})
            count(exc.outcome)
            log.warning("webhook dead-lettered", crm=crm, outcome=exc.outcome, reason=exc.reason, delivery=key)
            return _respond(start_response, "200 OK", {"stored": False, "dead_letter": exc.reason})

        if obj is None:  # a ping: proves the endpoint and the secret, carries no change
            count("ping")
            return _respond(start_response, "200 OK", {"pong": True})

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
            count("unavailable")
            log.error("webhook not stored: inbox unavailable", crm=crm, delivery=delivery_id, error=str(exc))
            return _respond(start_response, "503 Service Unavailable", {"error": "inbox unavailable, retry later"})
        count("accepted" if stored else "duplicate")
        return _respond(start_response, "200 OK", {"stored": stored})

    return app
