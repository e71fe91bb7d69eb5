"""The BottleCRM webhook receiver as a WSGI app, on a real inbox and state store (PostgreSQL)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import pytest

from replicator.ops.health import Health
from replicator.ops.http import make_app
from replicator.ops.metrics import REGISTRY
from replicator.sources.crm.signature import sign_bottlecrm
from replicator.sources.crm.webhook import MAX_BODY_BYTES, make_webhook_app
from replicator.state.inbox import Inbox
from replicator.state.migrations import migrate
from replicator.state.store import StateStore

CRM = "bottlecrm-unit"
SECRET = "whsec_unit_secret"
NOW = 1_764_000_000.0


def envelope(event: str = "account.updated", crm_id: Any = "7f0c", **extra: Any) -> dict[str, Any]:
    doc = {
        "id": "evt-1",
        "event": event,
        "created_at": "2026-11-25T05:00:00+00:00",
        "org_id": "org-1",
        "data": {"id": crm_id, "name": "Acme"},
    }
    doc.update(extra)
    return doc


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


@dataclass
class Receiver:
    dsn: str
    inbox: Inbox
    store: StateStore
    app: Any

    def post(
        self,
        body: bytes,
        *,
        delivery: str | None = "d-1",
        signature: str | None = "sign",
        method: str = "POST",
        length: str | None = None,
    ) -> Answer:
        if signature == "sign":
            signature = sign_bottlecrm(SECRET, body, int(NOW))
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "PATH_INFO": "/webhooks/bottlecrm",
            "CONTENT_LENGTH": length if length is not None else str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
        if signature is not None:
            environ["HTTP_X_BOTTLECRM_SIGNATURE"] = signature
        if delivery is not None:
            environ["HTTP_X_BOTTLECRM_DELIVERY"] = delivery
        status: list[str] = []
        out = b"".join(self.app(environ, lambda s, headers: status.append(s)))
        try:
            doc = orjson.loads(out)
        except orjson.JSONDecodeError:
            doc = {"text": out.decode()}
        return Answer(int(status[0].split()[0]), doc)

    def rows(self) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(
                "SELECT delivery_id, event, object, crm_id, payload FROM replicator.inbox ORDER BY seq"
            ).fetchall()


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("replicator_webhooks_total", {"crm": CRM, "outcome": outcome}) or 0.0


@pytest.fixture
def receiver(pg_db: str) -> Iterator[Receiver]:
    migrate(pg_db)
    inbox, store = Inbox(pg_db), StateStore(pg_db)
    app = make_webhook_app(CRM, SECRET, inbox, store.dead_letter, tolerance_s=300, clock=lambda: NOW)
    try:
        yield Receiver(pg_db, inbox, store, app)
    finally:
        inbox.close()
        store.close()


def test_signed_change_is_stored_once_and_duplicate_answered(receiver: Receiver) -> None:
    accepted, duplicate = counted("accepted"), counted("duplicate")
    body = orjson.dumps(envelope("deal.won", crm_id="d-42"))
    first = receiver.post(body, delivery="del-1")
    assert (first.status, first.body) == (200, {"stored": True})
    again = receiver.post(body, delivery="del-1")
    assert (again.status, again.body) == (200, {"stored": False})
    [(delivery, event, obj, crm_id, payload)] = receiver.rows()
    assert (delivery, event, obj, crm_id) == ("del-1", "deal.won", "opportunity", "d-42")
    assert payload == envelope("deal.won", crm_id="d-42")
    assert counted("accepted") == accepted + 1
    assert counted("duplicate") == duplicate + 1


def test_integer_ids_are_stored_as_text(receiver: Receiver) -> None:
    assert receiver.post(orjson.dumps(envelope(crm_id=12)), delivery="d-int").status == 200
    assert receiver.rows()[0][3] == "12"


@pytest.mark.parametrize(
    ("signature", "outcome"),
    [
        (None, "unsigned"),
        (sign_bottlecrm("not-the-secret", b"{}", int(NOW)), "forged"),
        ("t=1,v1", "forged"),
        ("stale", "stale"),
    ],
)
def test_bad_signatures_are_401_and_write_nothing(receiver: Receiver, signature: str | None, outcome: str) -> None:
    body = orjson.dumps(envelope())
    if signature == "stale":
        signature = sign_bottlecrm(SECRET, body, int(NOW) - 301)
    before = counted(outcome)
    answer = receiver.post(body, signature=signature)
    assert answer.status == 401
    assert "X-BottleCRM-Signature" in answer.body["error"]
    assert counted(outcome) == before + 1
    assert receiver.rows() == []
    assert receiver.store.dead_letters(entity=f"webhook:{CRM}") == []


@pytest.mark.parametrize(
    ("body", "delivery", "outcome", "reason_mentions"),
    [
        (b"{not json", "m-1", "malformed", "not JSON"),
        (b"[1, 2]", "m-2", "malformed", "expected an object"),
        (orjson.dumps({"id": "e", "event": "account.created"}), "m-3", "malformed", "no data"),
        (orjson.dumps(envelope(crm_id=None)), "m-4", "malformed", "data has no id"),
        (orjson.dumps(envelope(event="")), "m-5", "malformed", "event"),
        (orjson.dumps(envelope()), None, "malformed", "X-BottleCRM-Delivery"),
        (orjson.dumps(envelope(event="lead.created")), "u-1", "unknown", "'lead.created'"),
        (orjson.dumps(envelope(event="invoice.paid")), "u-2", "unknown", "'invoice.paid'"),
    ],
)
def test_signed_but_unusable_is_dead_lettered_and_200(
    receiver: Receiver, body: bytes, delivery: str | None, outcome: str, reason_mentions: str
) -> None:
    before = counted(outcome)
    answer = receiver.post(body, delivery=delivery)
    assert answer.status == 200 and answer.body["stored"] is False
    assert counted(outcome) == before + 1
    assert receiver.rows() == []
    [letter] = receiver.store.dead_letters(entity=f"webhook:{CRM}")
    assert reason_mentions in letter.reason
    assert letter.op == "webhook" and letter.source_table is None
    if delivery is not None:
        assert letter.erp_key == delivery
    else:
        assert letter.erp_key.startswith("sha256:")
    try:
        assert letter.payload == orjson.loads(body)
    except orjson.JSONDecodeError:
        assert letter.payload == {"raw": body.decode()}


def test_ping_is_answered_and_not_stored(receiver: Receiver) -> None:
    before = counted("ping")
    answer = receiver.post(orjson.dumps(envelope("ping", crm_id=None) | {"data": {"endpoint_id": "e"}}))
    assert (answer.status, answer.body) == (200, {"pong": True})
    assert counted("ping") == before + 1
    assert receiver.rows() == []


def test_only_post(receiver: Receiver) -> None:
    answer = receiver.post(b"", method="GET")
    assert answer.status == 405


def test_oversized_body_is_413_unread(receiver: Receiver) -> None:
    answer = receiver.post(b"", length=str(MAX_BODY_BYTES + 1))
    assert answer.status == 413
    assert receiver.post(b"", length="lots").status == 400
    assert receiver.rows() == []


def test_inbox_down_is_503_so_the_crm_retries(receiver: Receiver) -> None:
    before = counted("unavailable")
    body = orjson.dumps(envelope())
    with psycopg.connect(receiver.dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE replicator.inbox RENAME TO inbox_away")
        try:
            answer = receiver.post(body, delivery="retry-me")
        finally:
            conn.execute("ALTER TABLE replicator.inbox_away RENAME TO inbox")
    assert answer.status == 503
    assert counted("unavailable") == before + 1
    # BottleCRM's retry (same delivery id) is then stored.
    assert receiver.post(body, delivery="retry-me").body == {"stored": True}
    assert [row[0] for row in receiver.rows()] == ["retry-me"]


def test_state_store_down_for_a_dead_letter_is_503(receiver: Receiver) -> None:
    with psycopg.connect(receiver.dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE replicator.dead_letters RENAME TO dead_letters_away")
        try:
            answer = receiver.post(b"{not json")
        finally:
            conn.execute("ALTER TABLE replicator.dead_letters_away RENAME TO dead_letters")
    assert answer.status == 503


def test_uses_the_clock_for_freshness(pg_db: str) -> None:
    migrate(pg_db)
    inbox, store = Inbox(pg_db), StateStore(pg_db)
    try:
        app = make_webhook_app(CRM, SECRET, inbox, store.dead_letter, tolerance_s=300)  # real time.time
        receiver = Receiver(pg_db, inbox, store, app)
        body = orjson.dumps(envelope())
        assert receiver.post(body, signature=sign_bottlecrm(SECRET, body, int(time.time()))).status == 200
        assert receiver.post(body, signature=sign_bottlecrm(SECRET, body, int(NOW)), delivery="d-2").status == 401
    finally:
        inbox.close()
        store.close()


def test_http_server_dispatches_the_route_to_the_receiver(receiver: Receiver) -> None:
    app = make_app(Health(60), {"/webhooks/bottlecrm": receiver.app})
    routed = Receiver(receiver.dsn, receiver.inbox, receiver.store, app)
    assert routed.post(orjson.dumps(envelope()), delivery="via-route").body == {"stored": True}
    assert [row[0] for row in receiver.rows()] == ["via-route"]
    with pytest.raises(ValueError, match="/metrics"):
        make_app(Health(60), {"/metrics": receiver.app})
