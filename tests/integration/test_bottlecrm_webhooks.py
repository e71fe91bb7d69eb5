"""Real BottleCRM webhook deliveries (Celery worker + beat on Redis) into the receiver and the inbox.

BottleCRM signs and sends every delivery from its Celery worker; a failed attempt is
retried by the every-minute beat sweep with the same X-BottleCRM-Delivery id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from replicator.devstack.bottlecrm import BottleCrm
from replicator.devstack.postgres import free_port
from replicator.ops.health import Health
from replicator.ops.http import HttpServer
from replicator.ops.metrics import REGISTRY
from replicator.sources.crm.signature import sign_bottlecrm
from replicator.sources.crm.webhook import make_webhook_app
from replicator.state.inbox import Inbox
from replicator.state.migrations import migrate
from replicator.state.store import StateStore

CRM = "bottlecrm"
PATH = "/webhooks/bottlecrm"
EVENTS = [
    "account.created", "account.updated", "account.deleted",
    "contact.created", "contact.updated", "contact.deleted",
    "deal.created", "deal.updated", "deal.deleted", "deal.won", "deal.lost",
]  # fmt: skip
OBJECTS = {"account": "account", "contact": "contact", "deal": "opportunity"}


@dataclass
class Receiver:
    url: str
    dsn: str
    secret: str
    endpoint_id: str | None

    def rows(self) -> list[dict[str, Any]]:
        with psycopg.connect(self.dsn) as conn:
            cur = conn.execute("SELECT delivery_id, event, object, crm_id, payload FROM replicator.inbox ORDER BY seq")
            return [dict(zip(("delivery_id", "event", "object", "crm_id", "payload"), r, strict=True)) for r in cur]

    def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(self.url, content=body, headers={"Content-Type": "application/json", **headers}, timeout=10)


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("replicator_webhooks_total", {"crm": CRM, "outcome": outcome}) or 0.0


@pytest.fixture
def start_receiver(pg_db: str) -> Iterator[Callable[[BottleCrm | None], Receiver]]:
    """`start_receiver(crm)`: the receiver on 127.0.0.1:<free port> with a real inbox; registers a webhook on
    `crm` for account.*, contact.*, deal.* (or, with None, uses a made-up secret)."""
    migrate(pg_db)
    inbox, store = Inbox(pg_db), StateStore(pg_db)
    servers: list[HttpServer] = []

    def start(crm: BottleCrm | None) -> Receiver:
        port = free_port()
        url = f"http://127.0.0.1:{port}{PATH}"
        endpoint_id, secret = crm.create_webhook(url, EVENTS) if crm else (None, "whsec_local_only")
        app = make_webhook_app(CRM, secret, inbox, store.dead_letter, tolerance_s=300)
        server = HttpServer(f"127.0.0.1:{port}", Health(60), {PATH: app})
        server.start()
        servers.append(server)
        return Receiver(url, pg_db, secret, endpoint_id)

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
        inbox.close()
        store.close()


def api(crm: BottleCrm, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = httpx.request(
        method, f"{crm.api}{path}", json=body, headers={"Authorization": f"Bearer {crm.token}"}, timeout=30
    )
    assert resp.status_code < 300, f"{method} {path}: HTTP {resp.status_code}: {resp.text[:500]}"
    return resp.json() if resp.content else {}


def wait_for(what: str, condition: Callable[[], Any], timeout: float, crm: BottleCrm) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    worker_log = crm.workdir / "celery-worker.log"
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}; worker log:\n{worker_log.read_text()[-3000:]}"
    )


def test_crm_changes_arrive_signed_once_per_delivery(
    crm_celery: BottleCrm, start_receiver: Callable[[BottleCrm | None], Receiver]
) -> None:
    receiver = start_receiver(crm_celery)
    assert receiver.endpoint_id is not None
    rejected_before = sum(counted(o) for o in ("unsigned", "forged", "stale"))
    accepted_before = counted("accepted")

    account = api(crm_celery, "POST", "/accounts/", {"name": "Webhook Works Ltd"})["id"]
    api(crm_celery, "PATCH", f"/accounts/{account}/", {"name": "Webhook Works Group"})
    deal = api(
        crm_celery,
        "POST",
        "/opportunities/",
        {"name": "Webhook deal", "account": account, "amount": "1000", "stage": "PROSPECTING"},
    )["id"]
    api(crm_celery, "PATCH", f"/opportunities/{deal}/", {"stage": "CLOSED_WON", "closed_on": "2026-11-30"})
    api(crm_celery, "DELETE", f"/opportunities/{deal}/")
    api(crm_celery, "DELETE", f"/accounts/{account}/")
    expected = {
        ("account.created", account),
        ("account.updated", account),
        ("account.deleted", account),
        ("deal.created", deal),
        ("deal.updated", deal),
        ("deal.won", deal),
        ("deal.deleted", deal),
    }

    def settled() -> list[dict[str, Any]] | None:
        log = crm_celery.deliveries(receiver.endpoint_id or "")
        seen = {(d["event"], d["payload"]["data"]["id"]) for d in log}
        done = all(d["status"] == "succeeded" for d in log)
        return log if expected <= seen and done and len(receiver.rows()) == len(log) else None

    deliveries = wait_for("every delivery to succeed and be stored", settled, 60, crm_celery)
    rows = receiver.rows()
    by_delivery = {row["delivery_id"]: row for row in rows}
    assert len(by_delivery) == len(rows) == len(deliveries), "one inbox row per delivery"
    for delivery in deliveries:
        row = by_delivery[delivery["id"]]
        assert row["event"] == delivery["event"]
        assert row["object"] == OBJECTS[delivery["event"].split(".")[0]]
        assert row["crm_id"] == str(delivery["payload"]["data"]["id"])
        assert row["payload"] == delivery["payload"]
        assert delivery["attempts"] == 1 and delivery["response_status"] == 200
    assert {(row["event"], row["crm_id"]) for row in rows} >= expected
    assert counted("accepted") == accepted_before + len(rows)
    assert sum(counted(o) for o in ("unsigned", "forged", "stale")) == rejected_before

    # A replay of a real delivery (same delivery id, freshly signed body) is stored once.
    first = deliveries[-1]
    body = orjson.dumps(first["payload"])
    replay = receiver.post(
        body,
        {
            "X-BottleCRM-Delivery": str(first["id"]),
            "X-BottleCRM-Event": first["event"],
            "X-BottleCRM-Signature": sign_bottlecrm(receiver.secret, body, int(time.time())),
        },
    )
    assert (replay.status_code, replay.json()) == (200, {"stored": False})
    assert len(receiver.rows()) == len(rows)


def test_failed_delivery_is_retried_by_beat_with_the_same_id_and_stored_once(
    crm_celery: BottleCrm, start_receiver: Callable[[BottleCrm | None], Receiver]
) -> None:
    receiver = start_receiver(crm_celery)
    endpoint = receiver.endpoint_id or ""
    unavailable_before, accepted_before = counted("unavailable"), counted("accepted")
    with psycopg.connect(receiver.dsn, autocommit=True) as conn:
        # The inbox's database refuses the write: the receiver must answer 503, not 200.
        conn.execute("ALTER TABLE replicator.inbox RENAME TO inbox_offline")
        try:
            account = api(crm_celery, "POST", "/accounts/", {"name": "Retry Me Ltd"})["id"]
            [failed] = wait_for(
                "the first attempt to fail with 503",
                lambda: [d for d in crm_celery.deliveries(endpoint) if d["attempts"] >= 1] or None,
                30,
                crm_celery,
            )
        finally:
            conn.execute("ALTER TABLE replicator.inbox_offline RENAME TO inbox")
    assert (failed["status"], failed["response_status"], failed["attempts"]) == ("pending", 503, 1)
    assert counted("unavailable") == unavailable_before + 1
    assert receiver.rows() == []

    # BottleCRM retries after 1 minute; beat's sweep runs at each minute boundary.
    [retried] = wait_for(
        "beat to retry the delivery",
        lambda: [d for d in crm_celery.deliveries(endpoint) if d["status"] != "pending"] or None,
        150,
        crm_celery,
    )
    assert (retried["id"], retried["status"], retried["attempts"]) == (failed["id"], "succeeded", 2)
    [row] = receiver.rows()
    assert (row["delivery_id"], row["event"], row["object"], row["crm_id"]) == (
        str(failed["id"]),
        "account.created",
        "account",
        str(account),
    )
    assert counted("accepted") == accepted_before + 1


def test_forged_stale_and_unsigned_requests_are_refused(
    start_receiver: Callable[[BottleCrm | None], Receiver],
) -> None:
    receiver = start_receiver(None)
    body = orjson.dumps(
        {
            "id": "evt-forged",
            "event": "account.updated",
            "created_at": "2026-11-25T05:00:00+00:00",
            "org_id": "org",
            "data": {"id": "acc-1", "name": "Mallory"},
        }
    )
    now = int(time.time())
    cases = {
        "forged": sign_bottlecrm("guessed-secret", body, now),
        "stale": sign_bottlecrm(receiver.secret, body, now - 3600),
        "unsigned": None,
    }
    for outcome, signature in cases.items():
        before = counted(outcome)
        headers = {"X-BottleCRM-Delivery": f"d-{outcome}", "X-BottleCRM-Event": "account.updated"}
        if signature:
            headers["X-BottleCRM-Signature"] = signature
        resp = receiver.post(body, headers)
        assert resp.status_code == 401, (outcome, resp.text)
        assert counted(outcome) == before + 1, outcome
    assert receiver.rows() == []

    # The same request signed correctly is stored, and a replay of it only once.
    headers = {"X-BottleCRM-Delivery": "d-good", "X-BottleCRM-Signature": sign_bottlecrm(receiver.secret, body, now)}
    assert receiver.post(body, headers).json() == {"stored": True}
    assert receiver.post(body, headers).json() == {"stored": False}
    assert [row["delivery_id"] for row in receiver.rows()] == ["d-good"]
    assert httpx.get(receiver.url, timeout=10).status_code == 405
