"""The HubSpot webhook receiver as a WSGI app, on a real inbox and state store (PostgreSQL)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import pytest

from replicator.ops.metrics import REGISTRY
from replicator.sources.crm.hubspot_webhook import make_hubspot_webhook_app
from replicator.sources.crm.signature import sign_hubspot_v3
from replicator.state.inbox import Inbox
from replicator.state.migrations import migrate
from replicator.state.store import StateStore

SECRET = "hubspot-client-secret"
NOW = 1_764_000_000.0
PUBLIC = "https://erp.example.com/base"
PATH = "/webhooks/hubspot"


def event(
    event_id: int, subscription: str = "contact.propertyChange", object_id: int = 501, **extra: Any
) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "subscriptionId": 77,
        "portalId": 62515,
        "appId": 54321,
        "occurredAt": int(NOW * 1000) - 500,
        "subscriptionType": subscription,
        "attemptNumber": 0,
        "objectId": object_id,
        "changeSource": "CRM_UI",
        "sourceId": "userId:45678",
        **extra,
    }


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


@dataclass
class Receiver:
    dsn: str
    app: Any

    def post(
        self,
        body: bytes,
        *,
        signed_url: str = PUBLIC + PATH,
        timestamp_ms: int | None = None,
        secret: str = SECRET,
        signature: str | None = "sign",
        query: str = "",
    ) -> Answer:
        ts = int(NOW * 1000) if timestamp_ms is None else timestamp_ms
        if signature == "sign":
            signature = sign_hubspot_v3(secret, "POST", signed_url, body, ts)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": PATH,
            "QUERY_STRING": query,
            "HTTP_HOST": "10.0.0.5:9108",  # what the proxy forwards: not the URL HubSpot signed
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "HTTP_X_HUBSPOT_REQUEST_TIMESTAMP": str(ts),
        }
        if signature is not None:
            environ["HTTP_X_HUBSPOT_SIGNATURE_V3"] = signature
        status: list[str] = []
        out = b"".join(self.app(environ, lambda s, headers: status.append(s)))
        return Answer(int(status[0].split()[0]), orjson.loads(out))

    def inbox(self) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(
                "SELECT delivery_id, event, object, crm_id FROM replicator.inbox WHERE crm = 'hubspot' ORDER BY seq"
            ).fetchall()

    def dead_letters(self) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(
                "SELECT erp_key, reason FROM replicator.dead_letters WHERE entity = 'webhook:hubspot' ORDER BY id"
            ).fetchall()


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("replicator_webhooks_total", {"crm": "hubspot", "outcome": outcome}) or 0.0


@pytest.fixture
def receiver(pg_db: str) -> Iterator[Receiver]:
    migrate(pg_db)
    inbox, store = Inbox(pg_db), StateStore(pg_db)
    app = make_hubspot_webhook_app(SECRET, inbox, store.dead_letter, public_url=PUBLIC + "/", clock=lambda: NOW)
    try:
        yield Receiver(pg_db, app)
    finally:
        inbox.close()
        store.close()


def test_each_event_of_the_array_is_stored_once(receiver: Receiver) -> None:
    accepted, duplicate = counted("accepted"), counted("duplicate")
    body = orjson.dumps(
        [
            event(1),
            event(2, "company.creation", 601),
            event(3, "deal.deletion", 701),
            event(4, "line_item.creation", 801),
            event(5, "object.propertyChange", 901, objectTypeId="0-7"),
        ]
    )
    first = receiver.post(body)
    assert (first.status, first.body) == (200, {"stored": 5, "duplicates": 0, "dead_letters": []})
    again = receiver.post(body)
    assert (again.status, again.body) == (200, {"stored": 0, "duplicates": 5, "dead_letters": []})
    # Stored in the inbox's vocabulary, which the change source reads to tell creates and deletes apart.
    at = int(NOW * 1000) - 500
    assert receiver.inbox() == [
        (f"1:77:501:{at}", "contact.updated", "contact", "501"),
        (f"2:77:601:{at}", "company.created", "account", "601"),
        (f"3:77:701:{at}", "deal.deleted", "opportunity", "701"),
        (f"4:77:801:{at}", "line_item.created", "line_item", "801"),
        (f"5:77:901:{at}", "object.updated", "product", "901"),
    ]
    assert (counted("accepted"), counted("duplicate")) == (accepted + 5, duplicate + 5)


def test_the_signed_url_is_the_public_one_with_its_query(receiver: Receiver) -> None:
    body = orjson.dumps([event(10)])
    assert receiver.post(body, signed_url=PUBLIC + PATH + "?portal=1", query="portal=1").status == 200
    # Signed for the address the proxy forwarded to: not what HubSpot would have signed.
    assert receiver.post(body, signed_url="http://10.0.0.5:9108" + PATH).status == 401


@pytest.mark.parametrize(("kind", "outcome"), [("unsigned", "unsigned"), ("forged", "forged"), ("stale", "stale")])
def test_bad_signatures_are_401_and_write_nothing(receiver: Receiver, kind: str, outcome: str) -> None:
    before = counted(outcome)
    body = orjson.dumps([event(20)])
    if kind == "unsigned":
        answer = receiver.post(body, signature=None)
    elif kind == "forged":
        answer = receiver.post(body, secret="not-the-secret")
    else:
        answer = receiver.post(body, timestamp_ms=int(NOW * 1000) - 301_000)
    assert answer.status == 401 and answer.body["error"]
    assert receiver.inbox() == [] and receiver.dead_letters() == []
    assert counted(outcome) == before + 1


def test_unusable_events_are_dead_lettered_one_by_one(receiver: Receiver) -> None:
    unknown_before = counted("unknown")
    body = orjson.dumps(
        [
            event(30),
            event(31, "ticket.creation"),
            {"subscriptionType": "contact.creation"},
            event(32, "deal.creation", 702),
        ]
    )
    answer = receiver.post(body)
    assert answer.status == 200 and answer.body["stored"] == 2 and len(answer.body["dead_letters"]) == 2
    assert [row[0].split(":")[0] for row in receiver.inbox()] == ["30", "32"]
    letters = receiver.dead_letters()
    assert letters[0][0] == "31" and "ticket.creation" in letters[0][1] and "not replicated" in letters[0][1]
    assert letters[1][0].startswith("sha256:") and "eventId" in letters[1][1]
    assert counted("unknown") == unknown_before + 1


@pytest.mark.parametrize(("body", "reason"), [(b"not json", "not JSON"), (b'{"eventId": 1}', "expected an array")])
def test_a_malformed_body_is_one_dead_letter(receiver: Receiver, body: bytes, reason: str) -> None:
    answer = receiver.post(body)
    assert answer.status == 200 and answer.body["stored"] == 0
    [(key, stored_reason)] = receiver.dead_letters()
    assert key.startswith("sha256:") and reason in stored_reason
    assert receiver.inbox() == []


def test_events_sharing_an_event_id_are_told_apart_but_retries_are_not(receiver: Receiver) -> None:
    # eventId is not guaranteed unique: another object, subscription, time or property is another event.
    events = [
        event(40, "contact.propertyChange", 501, propertyName="email"),
        event(40, "contact.propertyChange", 501, propertyName="phone"),
        event(40, "contact.propertyChange", 502, propertyName="email"),
        event(40, "contact.propertyChange", 501, propertyName="email", subscriptionId=78),
        event(40, "contact.propertyChange", 501, propertyName="email", occurredAt=1),
    ]
    assert receiver.post(orjson.dumps(events)).body["stored"] == 5
    # HubSpot's retry of the same event (attemptNumber aside) is the same delivery.
    retry = [{**e, "attemptNumber": 1} for e in events]
    assert receiver.post(orjson.dumps(retry)).body == {"stored": 0, "duplicates": 5, "dead_letters": []}
    assert len(receiver.inbox()) == 5
