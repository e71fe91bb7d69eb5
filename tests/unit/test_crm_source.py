"""The CRM change source without a server: read bookkeeping, collapsing notifications into
one Change per record, event names, and the poller's content hash."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from replicator.change import Op, Position
from replicator.sources.crm.bottlecrm import CRM_FIELDS, VOLATILE_FIELDS, object_of_event, parse_timestamp
from replicator.sources.crm.inbox_source import ReadBook, collapse, to_change
from replicator.sources.crm.poll import content_hash
from replicator.state.inbox import InboxEntry

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def entry(seq: int, event: str, obj: str, crm_id: str | None, data: dict[str, Any] | None = None) -> InboxEntry:
    payload = {"id": f"d{seq}", "event": event, "data": data if data is not None else {"id": crm_id}}
    return InboxEntry(seq, "bottlecrm", f"d{seq}", event, obj, crm_id, payload, T0 + timedelta(seconds=seq))


# -- read bookkeeping -------------------------------------------------------


@dataclass
class Model:
    """The inbox and the pipeline around a ReadBook: reads take pending, not excluded entries;
    the pipeline acknowledges reads in order, possibly lagging; a reconnect resets the book."""

    book: ReadBook = field(default_factory=ReadBook)
    inbox: dict[int, bool] = field(default_factory=dict)  # seq -> processed
    next_seq: int = 1
    reads: dict[int, list[int]] = field(default_factory=dict)  # this session's reads
    acked: int = 0
    marked: list[int] = field(default_factory=list)

    def add(self, n: int) -> None:
        for _ in range(n):
            self.inbox[self.next_seq] = False
            self.next_seq += 1

    def read(self, limit: int) -> None:
        exclude = set(self.book.unacked())
        taken = [s for s, done in sorted(self.inbox.items()) if not done and s not in exclude][:limit]
        if not taken:
            return
        for seqs in self.reads.values():
            assert not set(seqs) & set(taken), "an unacknowledged seq was read twice"
        self.reads[self.book.record(taken)] = taken

    def ack(self, lag: int) -> None:
        """The pipeline acknowledges the read `lag` reads behind the newest (acks never go back)."""
        upto = max(self.acked, self.book.seq - lag)
        seqs = self.book.ack(upto)
        expected = sorted(s for n, ss in self.reads.items() if n <= upto for s in ss)
        assert sorted(seqs) == expected, "an ack must mark exactly the seqs of reads up to it"
        for s in seqs:
            assert not self.inbox[s], f"seq {s} marked twice"
            self.inbox[s] = True
        self.marked.extend(seqs)
        self.reads = {n: ss for n, ss in self.reads.items() if n > upto}
        self.acked = upto

    def reconnect(self) -> None:
        self.book.reset()
        self.reads.clear()


actions = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 5)),
        st.tuples(st.just("read"), st.integers(1, 4)),
        st.tuples(st.just("ack"), st.integers(0, 3)),
        st.tuples(st.just("reconnect"), st.just(0)),
    ),
    max_size=60,
)


@given(actions)
def test_acks_mark_only_read_seqs_and_every_read_seq_once_acknowledged(steps: list[tuple[str, int]]) -> None:
    model = Model()
    seqs_before = 0
    for action, arg in steps:
        if action == "add":
            model.add(arg)
        elif action == "read":
            model.read(arg)
        elif action == "ack":
            model.ack(arg)
        else:
            model.reconnect()
        assert model.book.seq >= seqs_before, "read numbers never go back, not even across reconnects"
        seqs_before = model.book.seq
    # Drain: read and acknowledge until the inbox is empty; everything ends up marked exactly once.
    for _ in range(len(model.inbox) + 1):
        model.read(3)
        model.ack(0)
    assert all(model.inbox.values())
    assert sorted(model.marked) == sorted(model.inbox)


def test_ack_from_before_a_reconnect_marks_nothing_read_after_it() -> None:
    book = ReadBook()
    first = book.record([1, 2])
    book.reset()
    second = book.record([1, 2, 3])
    assert second > first
    assert book.ack(first) == []
    assert book.unacked() == [1, 2, 3]
    assert book.ack(second) == [1, 2, 3]
    assert book.unacked() == []


# -- collapsing ---------------------------------------------------------------


def test_entries_of_one_record_collapse_into_one_change_in_first_mention_order() -> None:
    entries = [
        entry(1, "contact.updated", "contact", "c1"),
        entry(2, "account.created", "account", "a1"),
        entry(3, "contact.updated", "contact", "c1"),
        entry(4, "lead.created", "lead", "l1"),  # not mapped: acknowledged, no change
        entry(5, "account.updated", "account", None),  # names no record
    ]
    notes = collapse(entries, {"account", "contact"})
    assert [(n.object, n.crm_id, [e.seq for e in n.entries]) for n in notes] == [
        ("contact", "c1", [1, 3]),
        ("account", "a1", [2]),
    ]
    pos = Position("crm:bottlecrm", 7)
    change = to_change("bottlecrm", notes[0], {"id": "c1", "first_name": "Ada"}, None, pos)
    assert change.op is Op.UPDATE
    assert change.table == "crm.contact" and change.key == ("c1",) and change.source == "bottlecrm"
    assert change.before is None and change.after == {"id": "c1", "first_name": "Ada"}
    assert change.commit_ts == T0 + timedelta(seconds=3)  # the newest notification, the record has no updated_at
    assert change.position == pos
    created = to_change("bottlecrm", notes[1], {"id": "a1"}, T0, pos)
    assert created.op is Op.CREATE and created.commit_ts == T0


def test_a_record_gone_is_a_delete_carrying_the_delete_notifications_data() -> None:
    entries = [
        entry(1, "deal.created", "opportunity", "o1", {"id": "o1", "name": "Big"}),
        entry(2, "deal.deleted", "opportunity", "o1", {"id": "o1", "name": "Big", "stage": "CLOSED_LOST"}),
        entry(3, "poll", "opportunity", "o1"),
    ]
    [notes] = collapse(entries, {"opportunity"})
    change = to_change("bottlecrm", notes, None, None, Position("crm:bottlecrm", 1))
    assert change.op is Op.DELETE
    assert change.after is None
    assert change.before == {"id": "o1", "name": "Big", "stage": "CLOSED_LOST"}
    # A 404 after an update notification is a delete too; before is what the CRM last told us.
    [notes] = collapse([entry(4, "deal.updated", "opportunity", "o2", {"id": "o2", "stage": "X"})], {"opportunity"})
    assert to_change("bottlecrm", notes, None, None, Position("crm:bottlecrm", 2)).before == {"id": "o2", "stage": "X"}


def test_a_delete_notification_for_a_record_that_still_exists_is_an_update() -> None:
    [notes] = collapse([entry(1, "poll.deleted", "contact", "c1")], {"contact"})
    change = to_change("bottlecrm", notes, {"id": "c1"}, None, Position("crm:bottlecrm", 1))
    assert change.op is Op.UPDATE and change.before is None


# -- events and fields --------------------------------------------------------


def test_event_names_map_to_objects() -> None:
    assert object_of_event("account.created") == "account"
    assert object_of_event("contact.deleted") == "contact"
    assert object_of_event("deal.won") == "opportunity"
    assert object_of_event("deal.lost") == "opportunity"
    assert object_of_event("lead.created") is None
    assert object_of_event("invoice.paid") is None
    assert object_of_event("account") is None
    assert object_of_event("account.") is None
    assert object_of_event("deal") is None


def test_field_lists_cover_identity_and_volatile_fields() -> None:
    for obj, fields in CRM_FIELDS.items():
        assert {"id", "external_id", "is_active"} <= fields, obj
        assert VOLATILE_FIELDS[obj] - {"next_activity"} <= fields, obj  # next_activity is list-only
    assert "line_items" in CRM_FIELDS["opportunity"]
    assert "custom_fields" not in CRM_FIELDS["product"]


def test_timestamps_parse_only_with_a_zone() -> None:
    assert parse_timestamp("2026-11-25T05:18:49.864809Z") == datetime(2026, 11, 25, 5, 18, 49, 864809, tzinfo=UTC)
    assert parse_timestamp("2026-11-25T05:18:49") is None
    assert parse_timestamp(None) is None
    assert parse_timestamp("yesterday") is None


# -- content hash ---------------------------------------------------------------


def test_content_hash_ignores_key_order_volatile_fields_and_reference_names() -> None:
    a = {"id": "1", "name": "W", "used_on": 3, "account": {"id": "a1", "name": "Acme"}}
    b = {"account": {"id": "a1", "name": "Acme Renamed"}, "used_on": 9, "name": "W", "id": "1"}
    assert content_hash(a, frozenset({"used_on"})) == content_hash(b, frozenset({"used_on"}))
    assert content_hash(a) != content_hash(b)
    assert content_hash(a, frozenset({"used_on"})) != content_hash({**a, "name": "X"}, frozenset({"used_on"}))
    lines = {"line_items": [{"id": "l1", "quantity": "2.00", "product": {"id": "p1", "price": "9.50"}}]}
    repriced = {"line_items": [{"id": "l1", "quantity": "2.00", "product": {"id": "p1", "price": "12.00"}}]}
    more = {"line_items": [{"id": "l1", "quantity": "3.00", "product": {"id": "p1", "price": "9.50"}}]}
    assert content_hash(lines) == content_hash(repriced)  # a product's own change is the product's
    assert content_hash(lines) != content_hash(more)
