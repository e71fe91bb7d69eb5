"""The CRM change source and the poller on a real BottleCRM server and a real state database.

Inbox entries are added the way the webhook receiver stores BottleCRM deliveries (the
delivery envelope as payload), for records created through BottleCRM's REST API.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from replicator.change import Change, Op, Position
from replicator.devstack.bottlecrm import BottleCrm
from replicator.sinks.base import Action, Operation, Outcome
from replicator.sinks.bottlecrm import BottleCrmSink, CrmError
from replicator.sources.crm.bottlecrm import CRM_FIELDS, BottleCrmRecords
from replicator.sources.crm.inbox_source import InboxSource
from replicator.sources.crm.poll import Poller
from replicator.state.inbox import Inbox
from replicator.state.migrations import migrate

pytestmark = pytest.mark.integration

CRM = "bottlecrm"
MAPPED = {"account", "contact", "opportunity", "product"}


class NoLedger:
    def begin_create(self, op: Operation) -> bool:
        return False

    def finish_create(self, op: Operation, crm_id: str) -> None:
        pass


def create(sink: BottleCrmSink, obj: str, ext: str, record: dict[str, Any]) -> str:
    op = Operation(entity=obj, object=obj, action=Action.UPSERT, external_id=ext, record=record)
    [result] = sink.apply([op], NoLedger())
    assert result.outcome is Outcome.OK and result.crm_id, result.error
    return result.crm_id


def update(sink: BottleCrmSink, obj: str, crm_id: str, ext: str, record: dict[str, Any]) -> None:
    op = Operation(entity=obj, object=obj, action=Action.UPSERT, external_id=ext, record=record, crm_id=crm_id)
    [result] = sink.apply([op], NoLedger())
    assert result.outcome is Outcome.OK, result.error


def delete(sink: BottleCrmSink, obj: str, crm_id: str) -> None:
    path = {"account": "/api/accounts/", "contact": "/api/contacts/", "opportunity": "/api/opportunities/"}[obj]
    resp = sink.client.request("DELETE", obj, f"{path}{crm_id}/")
    assert resp.is_success, resp.text


def add_line(sink: BottleCrmSink, opp: str, product: str, quantity: str, price: str) -> None:
    body = {"product_id": product, "quantity": quantity, "unit_price": price}
    resp = sink.client.request("POST", "line_item", f"/api/opportunities/{opp}/line-items/", body=body)
    assert resp.status_code == 201, resp.text


def deliver(inbox: Inbox, event: str, data: dict[str, Any]) -> None:
    """What the webhook receiver stores for one BottleCRM delivery."""
    prefix = event.split(".")[0]
    obj = {"account": "account", "contact": "contact", "deal": "opportunity"}.get(prefix, prefix)
    envelope = {"id": str(uuid.uuid4()), "event": event, "created_at": datetime.now(UTC).isoformat(), "data": data}
    assert inbox.add(
        crm=CRM, delivery_id=str(uuid.uuid4()), event=event, object=obj, crm_id=str(data["id"]), payload=envelope
    )


def read_all(source: InboxSource, want: int, tries: int = 10) -> list[Change]:
    changes: list[Change] = []
    for _ in range(tries):
        changes += source.read(timeout=0.5, max_changes=100)
        if len(changes) >= want:
            break
    return changes


def pending_rows(dsn: str) -> list[tuple[str, str, str | None]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT event, object, crm_id FROM replicator.inbox WHERE processed_at IS NULL ORDER BY seq"
        ).fetchall()


@pytest.fixture
def state(pg_db: str) -> str:
    migrate(pg_db)
    return pg_db


@pytest.fixture
def inbox(state: str) -> Iterator[Inbox]:
    box = Inbox(state)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def records(crm: BottleCrmSink) -> BottleCrmRecords:
    return BottleCrmRecords(crm)


@pytest.fixture
def poller(crm: BottleCrmSink, inbox: Inbox, records: BottleCrmRecords, state: str) -> Iterator[Poller]:
    p = Poller(CRM, inbox, records, state, objects=["account", "contact", "product"], interval_s=60, lookback_s=300)
    try:
        yield p
    finally:
        p.close()


def test_field_lists_match_the_server(crm: BottleCrmSink, records: BottleCrmRecords) -> None:
    acc = create(crm, "account", "A1", {"name": "Acme"})
    ids = {
        "account": acc,
        "contact": create(crm, "contact", "C1", {"first_name": "Ada", "last_name": "L", "email": "ada@x.test"}),
        "product": create(crm, "product", "SKU-1", {"name": "Widget", "price": Decimal("9.50")}),
        "opportunity": create(crm, "opportunity", "O1", {"name": "Deal", "account": acc, "stage": "PROSPECTING"}),
    }
    for obj, crm_id in ids.items():
        record = records.fetch(obj, crm_id)
        assert record is not None
        assert set(record) == CRM_FIELDS[obj], obj
    assert records.fetch("contact", str(uuid.uuid4())) is None


def test_webhook_notifications_become_changes_and_acks_mark_them(
    crm: BottleCrmSink, inbox: Inbox, records: BottleCrmRecords, state: str
) -> None:
    acc = create(crm, "account", "A1", {"name": "Acme", "city": "Paris"})
    con = create(crm, "contact", "C1", {"first_name": "Ada", "last_name": "L", "email": "ada@x.test", "account": acc})
    prod = create(crm, "product", "SKU-7", {"name": "Widget", "price": Decimal("9.50")})
    opp = create(crm, "opportunity", "O1", {"name": "Deal", "account": acc, "stage": "PROSPECTING"})
    add_line(crm, opp, prod, "3", "9.50")
    update(crm, "contact", con, "C1", {"title": "Countess"})

    deliver(inbox, "account.created", {"id": acc, "name": "Acme"})
    deliver(inbox, "contact.created", {"id": con, "first_name": "Ada"})
    deliver(inbox, "deal.created", {"id": opp, "name": "Deal"})
    deliver(inbox, "contact.updated", {"id": con, "title": "Countess"})
    deliver(inbox, "lead.created", {"id": str(uuid.uuid4())})  # no CRM -> ERP mapping: acknowledged, no change

    source = InboxSource(CRM, inbox, records, objects={"account", "contact", "opportunity"})
    source.start()
    changes = read_all(source, 3)
    assert [(c.table, c.op, c.key) for c in changes] == [
        ("crm.account", Op.CREATE, (acc,)),
        ("crm.contact", Op.CREATE, (con,)),  # created and updated in one read: one fetch, the newest state
        ("crm.opportunity", Op.CREATE, (opp,)),
    ]
    account, contact, deal = changes
    assert all(c.source == CRM and c.before is None for c in changes)
    assert account.after is not None and account.after["city"] == "Paris" and account.after["external_id"] == "A1"
    assert contact.after is not None and contact.after["title"] == "Countess"
    assert contact.commit_ts == datetime.fromisoformat(contact.after["updated_at"])
    assert account.commit_ts is not None and account.commit_ts <= datetime.now(UTC)  # received_at: no updated_at
    assert deal.after is not None
    [line] = deal.after["line_items"]
    assert line["product"]["sku"] == "SKU-7" and Decimal(line["quantity"]) == 3
    assert {c.position for c in changes} == {Position("crm:bottlecrm", source.committed)}

    assert source.read(timeout=0.3) == []  # read, not yet acknowledged: not handed out twice
    source.ack(Position("crm:bottlecrm", source.committed))
    assert pending_rows(state) == []
    assert inbox.backlog(CRM) == 0

    delete(crm, "contact", con)
    deliver(inbox, "contact.deleted", {"id": con, "first_name": "Ada", "email": "ada@x.test"})
    [gone] = read_all(source, 1)
    assert gone.op is Op.DELETE and gone.after is None and gone.key == (con,)
    assert gone.before == {"id": con, "first_name": "Ada", "email": "ada@x.test"}
    source.ack(gone.position)
    source.close()

    fresh = InboxSource(CRM, inbox, records, objects={"account", "contact", "opportunity"})
    fresh.start()
    assert fresh.read(timeout=0.3) == []


def test_unacknowledged_notifications_come_again_after_a_reconnect(
    crm: BottleCrmSink, inbox: Inbox, records: BottleCrmRecords, state: str
) -> None:
    acc = create(crm, "account", "A1", {"name": "Acme"})
    deliver(inbox, "account.updated", {"id": acc})
    source = InboxSource(CRM, inbox, records, objects={"account"})
    source.start()
    [first] = read_all(source, 1)
    deliver(inbox, "account.updated", {"id": acc})
    [second] = read_all(source, 1)  # only the new entry: the first is in flight
    assert second.position.offset == first.position.offset + 1
    source.ack(first.position)
    assert [r[0] for r in pending_rows(state)] == ["account.updated"]  # the second read's entry

    source.close()  # the pipeline lost the source before acknowledging the second read
    source.start()
    [again] = read_all(source, 1)
    assert again.key == (acc,) and again.op is Op.UPDATE
    assert again.position.offset > second.position.offset  # read numbers keep counting across sessions
    source.ack(second.position)  # a stale acknowledgement from the old session marks nothing
    assert len(pending_rows(state)) == 1
    source.ack(again.position)
    assert pending_rows(state) == []


def test_a_failing_fetch_loses_nothing(crm: BottleCrmSink, inbox: Inbox, records: BottleCrmRecords, state: str) -> None:
    acc = create(crm, "account", "A1", {"name": "Acme"})
    deliver(inbox, "account.updated", {"id": acc})
    down = BottleCrmSink("http://127.0.0.1:9", "token", timeout=2)
    try:
        broken = InboxSource(CRM, inbox, BottleCrmRecords(down), objects={"account"})
        broken.start()
        with pytest.raises(CrmError) as failed:
            broken.read(timeout=0.3)
        assert failed.value.result.outcome is Outcome.TRANSIENT
        broken.close()
    finally:
        down.close()
    assert len(pending_rows(state)) == 1
    source = InboxSource(CRM, inbox, records, objects={"account"})  # what the runner's reconnect amounts to
    source.start()
    [change] = read_all(source, 1)
    assert change.key == (acc,)


def test_poller_finds_new_changed_and_deleted_records_once(
    crm: BottleCrmSink, inbox: Inbox, records: BottleCrmRecords, poller: Poller, state: str
) -> None:
    acc = create(crm, "account", "A1", {"name": "Acme", "city": "Paris"})
    kept = create(crm, "contact", "C1", {"first_name": "Ada", "last_name": "L", "email": "ada@x.test"})
    doomed = create(crm, "contact", "C2", {"first_name": "Bob", "last_name": "M", "email": "bob@x.test"})
    assert poller.poll_once() == 3  # a first poll hands over what it has not seen
    assert poller.poll_once() == 0
    with psycopg.connect(state, autocommit=True) as conn:
        conn.execute("UPDATE replicator.inbox SET processed_at = now()")

    prod = create(crm, "product", "SKU-9", {"name": "Gadget", "price": Decimal("5.00")})
    update(crm, "account", acc, "A1", {"city": "Lyon"})
    delete(crm, "contact", doomed)
    assert poller.poll_once() == 3
    assert sorted(pending_rows(state)) == [
        ("poll", "account", acc),
        ("poll", "product", prod),
        ("poll.deleted", "contact", doomed),
    ]
    assert poller.poll_once() == 0  # same content again: nothing added

    source = InboxSource(CRM, inbox, records, objects=MAPPED)
    source.start()
    changes = {c.table: c for c in read_all(source, 3)}
    product, account = changes["crm.product"], changes["crm.account"]
    assert product.op is Op.UPDATE and product.after is not None and product.after["sku"] == "SKU-9"
    assert account.op is Op.UPDATE and account.after is not None and account.after["city"] == "Lyon"
    assert changes["crm.contact"].op is Op.DELETE and changes["crm.contact"].key == (doomed,)
    assert changes["crm.contact"].before == {"id": doomed}
    source.ack(Position("crm:bottlecrm", source.committed))

    # Back to an earlier content is a change too, and still added once.
    update(crm, "account", acc, "A1", {"city": "Paris"})
    assert poller.poll_once() == 1
    assert poller.poll_once() == 0
    assert kept not in {r[2] for r in pending_rows(state)}


def test_poller_neither_skips_nor_repeats_records_sharing_one_timestamp(
    crm: BottleCrmSink, bottlecrm: BottleCrm, poller: Poller, state: str
) -> None:
    tie = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

    def stamp(ids: list[str]) -> None:
        bottlecrm.cluster.execute(
            "UPDATE contacts SET updated_at = '{}' WHERE id IN ({})".format(
                tie.isoformat(), ", ".join(f"'{i}'" for i in ids)
            ),
            dbname=bottlecrm.database,
        )

    ids = [
        create(crm, "contact", f"C{n}", {"first_name": f"P{n}", "last_name": "T", "email": f"p{n}@x.test"})
        for n in range(3)
    ]
    stamp(ids)
    assert poller.poll_once() == 3
    assert poller.cursor("contact") == tie
    assert poller.poll_once() == 0  # at the cursor, nothing loops

    late = create(crm, "contact", "C9", {"first_name": "Late", "last_name": "T", "email": "late@x.test"})
    stamp([late])  # modified "at" the cursor, after the poll that set it
    assert poller.poll_once() == 1
    assert poller.poll_once() == 0
    assert [r[2] for r in pending_rows(state)].count(late) == 1

    update(crm, "contact", ids[0], "C0", {"title": "Boss"})
    assert poller.poll_once() == 1
    cursor = poller.cursor("contact")
    assert cursor is not None and cursor > tie
