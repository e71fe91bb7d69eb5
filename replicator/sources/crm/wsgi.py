"""What the webhook receivers share: the POST-only WSGI shell with a bounded body, JSON
answers, counting, and parking a delivery no retry can fix as a dead letter.

A receiver supplies one ``handle(environ, body) -> Answer``; the shell answers 405 to
anything but POST, 400 to a bad Content-Length and 413 to a body it will not read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson
import psycopg
import structlog

from replicator.ops.http import StartResponse, WsgiApp
from replicator.ops.metrics import WEBHOOKS
from replicator.sources.crm.signature import SignatureError

log = structlog.get_logger()

MAX_BODY_BYTES = 1 << 20
RAW_KEEP = 2000  # characters of a non-JSON body a dead letter keeps

# (HTTP status line, JSON document) a receiver answers with.
Answer = tuple[str, dict[str, Any]]
INBOX_UNAVAILABLE: Answer = ("503 Service Unavailable", {"error": "inbox unavailable, retry later"})


class Unusable(Exception):
    """A verified delivery that no retry can fix: dead-lettered and answered 200."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


def environ_key(header: str) -> str:
    """Where WSGI puts a request header (PEP 3333): ``X-Foo-Bar`` -> ``HTTP_X_FOO_BAR``."""
    return "HTTP_" + header.upper().replace("-", "_")


def count(crm: str, outcome: str, n: int = 1) -> None:
    WEBHOOKS.labels(crm=crm, outcome=outcome).inc(n)


def read_body(environ: dict[str, Any]) -> bytes | None:
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


def dead_letter_payload(body: bytes) -> Any:
    """The body as JSON when it is, else its start as text."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"raw": body[:RAW_KEEP].decode("utf-8", "replace")}


def rejected(crm: str, exc: SignatureError, **context: Any) -> Answer:
    """The answer to a delivery whose signature failed: nothing is written."""
    count(crm, exc.outcome)
    log.warning("webhook rejected", crm=crm, outcome=exc.outcome, reason=exc.message, **context)
    return "401 Unauthorized", {"error": exc.message}


def store_dead_letter_as(crm: str, store_dead_letter: Callable[..., None], key: str, reason: str, payload: Any) -> None:
    """Park one delivery or event; ``store_dead_letter`` takes StateStore.dead_letter's keyword arguments."""
    store_dead_letter(
        entity=f"webhook:{crm}",
        erp_key=key,
        op="webhook",
        reason=reason,
        payload=payload,
        source_table=None,
        position=None,
    )


def dead_lettered(
    crm: str, store_dead_letter: Callable[..., None], key: str, exc: Unusable, body: bytes, answer: dict[str, Any]
) -> Answer:
    """Park a whole unusable delivery and answer ``answer`` (200), or 503 when it cannot be parked."""
    try:
        store_dead_letter_as(crm, store_dead_letter, key, exc.reason, dead_letter_payload(body))
    except psycopg.Error as db_exc:
        count(crm, "unavailable")
        log.error("webhook dead letter not stored", crm=crm, delivery=key, error=str(db_exc))
        return "503 Service Unavailable", {"error": "state store unavailable"}
    count(crm, exc.outcome)
    log.warning("webhook dead-lettered", crm=crm, outcome=exc.outcome, reason=exc.reason, delivery=key)
    return "200 OK", answer


def post_only_app(crm: str, handle: Callable[[dict[str, Any], bytes], Answer]) -> WsgiApp:
    """A WSGI app that reads a POST's body (bounded) and answers what ``handle`` makes of it as JSON."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") != "POST":
            start_response("405 Method Not Allowed", [("Allow", "POST"), ("Content-Type", "text/plain")])
            return [b"webhooks are POSTed\n"]
        try:
            body = read_body(environ)
        except ValueError as exc:
            count(crm, "malformed")
            status, document = "400 Bad Request", {"error": str(exc)}
        else:
            if body is None:
                count(crm, "malformed")
                status, document = "413 Content Too Large", {"error": f"body over {MAX_BODY_BYTES} bytes, not read"}
            else:
                status, document = handle(environ, body)
        answer = orjson.dumps(document)
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
        return [answer]

    return app
