"""Hostile and odd input on the CRM -> ERP path, on real parts (PostgreSQL sample ERP,
Celery-mode BottleCRM, `replicator run`): requests that are not BottleCRM's, deliveries
that are BottleCRM's but unusable, CRM text meant to break SQL, and lost webhooks."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from replicator.sources.crm.signature import sign_bottlecrm
from tests.fixtures.two_way import TwoWayStack, patch

REJECTED = ("unsigned", "forged", "stale")


def _post(s: TwoWayStack, body: bytes, *, delivery: str | None, event: str, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json", "X-BottleCRM-Event": event}
    if delivery is not None:
        headers["X-BottleCRM-Delivery"] = delivery
    if signature is not None:
        headers["X-BottleCRM-Signature"] = signature
    return httpx.post(
        f"http://127.0.0.1:{s.metrics_port}/webhooks/bottlecrm", content=body, headers=headers, timeout=10
    )


def _signed(s: TwoWayStack, body: bytes, at: float | None = None) -> str:
    return sign_bottlecrm(s.env["BOTTLECRM_WEBHOOK_SECRET"], body, int(time.time() if at is None else at))


def _envelope(event: str, crm_id: str, event_id: str) -> bytes:
    return orjson.dumps({"id": event_id, "event": event, "created_at": "2026-11-25T06:00:00Z", "data": {"id": crm_id}})


def _outcomes(s: TwoWayStack) -> dict[str, float]:
    names = (*REJECTED, "accepted", "duplicate", "malformed", "unknown")
    return {o: s.metric("replicator_webhooks_total", crm="bottlecrm", outcome=o) for o in names}


def _inbox(s: TwoWayStack, delivery: str) -> int:
    return int(s.sql("SELECT count(*) FROM replicator.inbox WHERE delivery_id = %s", (delivery,))[0][0])


def _settled(s: TwoWayStack) -> None:
    s.wait_for("an empty inbox", lambda: s.backlog() == 0)
    s.wait_idle()


def _open_letter(s: TwoWayStack, entity: str, erp_key: str) -> list[tuple[Any, ...]]:
    return s.sql(
        "SELECT reason, payload FROM replicator.dead_letters WHERE entity = %s AND erp_key = %s AND status = 'open'",
        (entity, erp_key),
    )


def test_requests_not_signed_by_the_crm_are_refused_and_signed_junk_is_dead_lettered(two_way: TwoWayStack) -> None:
    s = two_way
    s.start()
    s.wait_backfilled()
    account = s.crm_id("account", "CUST-3")
    # With the CRM's own webhook gone (and polling off), the CRM edit below reaches the ERP
    # only if one of our requests is believed.
    assert s.crm.delete_webhooks() >= 1
    with s.crm_api as api:
        patch(api, f"/accounts/{account}/", {"website": "https://only-if-believed.example"})
    website_before = s.erp("SELECT website FROM customers WHERE id = 3")
    assert website_before != [("https://only-if-believed.example",)]
    inbox_before = int(s.sql("SELECT count(*) FROM replicator.inbox")[0][0])
    writes_before = s.metric("replicator_erp_writes_total", outcome="ok")
    counts = _outcomes(s)

    body = _envelope("account.updated", account, "evt-refused")
    secret = s.env["BOTTLECRM_WEBHOOK_SECRET"]
    now = int(time.time())
    refused = [
        ("unsigned", "d-unsigned", body, None),
        ("unsigned", "d-blank", body, ""),
        ("forged", "d-wrong-secret", body, sign_bottlecrm("not-the-secret", body, now)),
        ("forged", "d-other-body", body, sign_bottlecrm(secret, _envelope("account.updated", "1", "evt-x"), now)),
        ("forged", "d-moved-t", body, _signed(s, body, now).replace(f"t={now}", f"t={now + 1}", 1)),
        ("forged", "d-garbage", body, "t=yesterday,v1=deadbeef"),
        ("stale", "d-old", body, _signed(s, body, now - 3600)),
        ("stale", "d-future", body, _signed(s, body, now + 3600)),
    ]
    for _outcome, delivery, payload, signature in refused:
        r = _post(s, payload, delivery=delivery, event="account.updated", signature=signature)
        assert r.status_code == 401, f"{delivery}: {r.status_code} {r.text}"
        assert "error" in r.json(), r.text
    after = _outcomes(s)
    for outcome in REJECTED:
        expected = sum(1 for o, *_ in refused if o == outcome)
        assert after[outcome] - counts[outcome] == expected, (outcome, after, counts)
    assert after["accepted"] == counts["accepted"]
    s.wait_idle()
    time.sleep(3)  # what was believed would be fetched and written by now
    s.wait_idle()
    assert int(s.sql("SELECT count(*) FROM replicator.inbox")[0][0]) == inbox_before
    refused_ids = [delivery for _, delivery, *_ in refused]
    assert s.sql("SELECT erp_key FROM replicator.dead_letters WHERE erp_key = ANY(%s)", (refused_ids,)) == []
    assert s.erp("SELECT website FROM customers WHERE id = 3") == website_before
    assert s.metric("replicator_erp_writes_total", outcome="ok") == writes_before

    # Signed, but unusable: answered 200 (a retry sends the same bytes) and parked with the reason.
    junk = [
        ("d-not-json", "account.updated", b'{"id": "evt-1", "event": "account.updated", "data": {"id": ', "not JSON"),
        ("d-no-data", "account.updated", orjson.dumps({"id": "evt-2", "event": "account.updated"}), "no data"),
        ("d-lead", "lead.created", _envelope("lead.created", account, "evt-3"), "'lead.created' is not replicated"),
    ]
    for delivery, event, payload, why in junk:
        r = _post(s, payload, delivery=delivery, event=event, signature=_signed(s, payload))
        assert r.status_code == 200, f"{delivery}: {r.status_code} {r.text}"
        assert r.json().get("stored") is False, r.text
        letter = _open_letter(s, "webhook:bottlecrm", delivery)
        assert len(letter) == 1, f"no dead letter for {delivery}"
        assert why in letter[0][0], letter[0][0]
        assert _inbox(s, delivery) == 0
    after_junk = _outcomes(s)
    assert after_junk["malformed"] - after["malformed"] == 2
    assert after_junk["unknown"] - after["unknown"] == 1

    # A replayed delivery (same X-BottleCRM-Delivery) is stored once; then the one believed request is applied.
    for attempt in range(3):
        r = _post(s, body, delivery="d-real", event="account.updated", signature=_signed(s, body))
        assert r.status_code == 200, r.text
        assert r.json() == {"stored": attempt == 0}, r.text
    assert _inbox(s, "d-real") == 1
    final = _outcomes(s)
    assert (final["accepted"] - after_junk["accepted"], final["duplicate"] - after_junk["duplicate"]) == (1, 2)
    s.wait_for(
        "the signed delivery applied",
        lambda: s.erp("SELECT website FROM customers WHERE id = 3") == [("https://only-if-believed.example",)],
    )
    _settled(s)
    assert s.metric("replicator_erp_writes_total", outcome="ok") == writes_before + 1


SQL = "'; DROP TABLE customers; --"
QUOTES = 'O\'Brien said "hi" \\ back\\slash `tick` $$dollar$$ %s %(x)s {0} \\x00'
UNICODE = "Zoë Ünïcødé 日本語 עברית \u200f🚀 👩\u200d💻 e\u0301 \ufeff"


def test_crm_text_reaches_the_erp_verbatim_and_nul_does_not(two_way: TwoWayStack) -> None:
    s = two_way
    s.start()
    s.wait_backfilled()
    account = s.crm_id("account", "CUST-3")
    contact = s.crm_id("contact", "CONT-5")
    customers = s.erp("SELECT count(*) FROM customers")[0][0]
    filler = "".join(f"{i:05d} lorem ipsum ünïcode 🚀\n" for i in range(4200))
    description = f"{SQL}\n{QUOTES}\n{UNICODE}\n{filler}".strip()  # DRF trims the ends
    assert len(description.encode()) > 100_000
    title = f"{SQL} {QUOTES} {UNICODE}".strip()
    first_name = "Zoë 🚀 O'Brien; DROP TABLE contacts"
    with s.crm_api as api:
        patch(api, f"/accounts/{account}/", {"description": description})
        patch(api, f"/contacts/{contact}/", {"title": title, "first_name": first_name})
        # What the CRM kept is what must arrive; check it kept what we sent.
        stored = api.get(f"/accounts/{account}/").json()["account_obj"]["description"]
        assert stored == description, "BottleCRM changed the description on its own"
    s.wait_for(
        "the description in the ERP",
        lambda: s.erp("SELECT notes FROM customers WHERE id = 3") == [(description,)],
        90,
    )
    s.wait_for(
        "the contact text in the ERP",
        lambda: s.erp("SELECT job_title, first_name FROM contacts WHERE id = 5") == [(title, first_name)],
    )
    assert s.erp("SELECT to_regclass('customers') IS NOT NULL, count(*) FROM customers") == [(True, customers)]
    _settled(s)
    letters = s.sql("SELECT entity, reason FROM replicator.dead_letters WHERE status = 'open'")
    assert letters == [], letters

    # NUL: PostgreSQL text cannot hold it. BottleCRM (on PostgreSQL too) may refuse it itself.
    writes_before = s.metric("replicator_erp_writes_total", outcome="ok")
    with s.crm_api as api:
        r = api.patch(f"/contacts/{contact}/", json={"title": "before\x00after"})
    if r.status_code == 400:
        assert "nul" in r.text.lower(), r.text[:300]
        with s.crm_api as api:
            assert api.get(f"/contacts/{contact}/").json()["contact_obj"]["title"] == title
        time.sleep(3)
        _settled(s)
        assert _open_letter(s, "contacts", f"crm:{contact}") == []
    else:
        assert r.status_code < 300, f"PATCH with NUL: {r.status_code} {r.text[:300]}"
        letter = s.wait_for("the NUL dead letter", lambda: _open_letter(s, "contacts", f"crm:{contact}"))
        reason = letter[0][0]
        assert "NUL" in reason and "job_title" in reason, reason
        _settled(s)
    assert s.erp("SELECT job_title, first_name FROM contacts WHERE id = 5") == [(title, first_name)]
    assert s.metric("replicator_erp_writes_total", outcome="ok") == writes_before


def test_polling_brings_crm_edits_when_the_webhook_is_gone(two_way: TwoWayStack) -> None:
    s = two_way
    s.env["BOTTLECRM_POLL_INTERVAL_S"] = "2"
    s.start()
    s.wait_backfilled()
    account = s.crm_id("account", "CUST-5")
    assert s.crm.delete_webhooks() >= 1
    _settled(s)
    last_seq = int(s.sql("SELECT coalesce(max(seq), 0) FROM replicator.inbox")[0][0])
    polled_before = s.metric("replicator_crm_polled_total", object="account")
    with s.crm_api as api:
        patch(api, f"/accounts/{account}/", {"website": "https://found-by-polling.example", "industry": "TECHNOLOGY"})
    s.wait_for(
        "the polled edit in the ERP",
        lambda: (
            s.erp("SELECT website, industry FROM customers WHERE id = 5")
            == [("https://found-by-polling.example", "TECH")]
        ),
        60,
    )
    events = s.sql("SELECT DISTINCT event FROM replicator.inbox WHERE seq > %s AND crm_id = %s", (last_seq, account))
    assert events == [("poll",)], events
    assert s.metric("replicator_crm_polled_total", object="account") > polled_before
