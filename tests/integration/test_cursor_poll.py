"""The cursor poller over a CRM that lists by (modification time, id): ties, lookback, resume."""

from __future__ import annotations

import bisect
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from replicator.sources.crm.cursor_poll import CursorBroken, CursorPoller
from replicator.state import migrations
from replicator.state.inbox import Inbox

T0 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


class KeysetCrm:
    """Records listed strictly after a (time, id) keyset, as the HubSpot and Salesforce adapters promise."""

    def __init__(self) -> None:
        self.rows: dict[str, datetime] = {}
        self.pages = 0

    def touch(self, record_id: str, at: datetime) -> None:
        self.rows[record_id] = at

    def changes_after(self, object: str, cursor: tuple[datetime, str] | None, limit: int) -> list[dict[str, Any]]:
        self.pages += 1
        ordered = sorted((ts, rid) for rid, ts in self.rows.items())
        start = 0 if cursor is None else bisect.bisect_right(ordered, cursor)
        return [{"id": rid, "modified": ts} for ts, rid in ordered[start : start + limit]]

    def modified_at(self, record: dict[str, Any]) -> datetime | None:
        return record["modified"]

    def record_id(self, record: dict[str, Any]) -> str:
        return str(record["id"])


@pytest.fixture
def state(pg_db: str) -> str:
    migrations.migrate(pg_db)
    return pg_db


def _inbox_ids(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT crm_id, delivery_id FROM replicator.inbox ORDER BY seq").fetchall()


def test_thousands_of_records_on_one_timestamp_are_each_notified_once(state: str) -> None:
    crm = KeysetCrm()
    for i in range(2_345):
        crm.touch(f"{i:06d}", T0)  # one batch update: every record shares the millisecond
    crm.touch("later", T0 + timedelta(seconds=1))
    inbox = Inbox(state)
    poller = CursorPoller("fake", inbox, crm, state, objects=["contact"], interval_s=1, lookback_s=0, page_size=100)
    try:
        assert poller.poll_once() == 2_346
        ids = [crm_id for crm_id, _ in _inbox_ids(state)]
        assert len(ids) == len(set(ids)) == 2_346
        assert poller.cursor("contact") == (T0 + timedelta(seconds=1), "later")
        # Nothing changed: the next poll (lookback 0) reads one empty page and adds nothing.
        pages = crm.pages
        assert poller.poll_once() == 0
        assert crm.pages == pages + 1
    finally:
        poller.close()
        inbox.close()


def test_lookback_finds_a_late_commit_and_repeats_nothing_else(state: str) -> None:
    crm = KeysetCrm()
    crm.touch("a", T0)
    crm.touch("b", T0 + timedelta(seconds=10))
    inbox = Inbox(state)
    poller = CursorPoller("fake", inbox, crm, state, objects=["account"], interval_s=1, lookback_s=60, page_size=10)
    try:
        assert poller.poll_once() == 2
        # A transaction that committed late carries a time before the cursor.
        crm.touch("late", T0 + timedelta(seconds=5))
        crm.touch("a", T0 + timedelta(seconds=20))  # a real new change of a known record
        assert poller.poll_once() == 2
        assert sorted(crm_id for crm_id, _ in _inbox_ids(state)) == ["a", "a", "b", "late"]
        assert poller.poll_once() == 0
    finally:
        poller.close()
        inbox.close()


def test_a_restarted_poller_resumes_from_its_saved_cursor(state: str) -> None:
    crm = KeysetCrm()
    for i in range(30):
        crm.touch(f"r{i:02d}", T0 + timedelta(milliseconds=i))
    inbox = Inbox(state)
    first = CursorPoller("fake", inbox, crm, state, objects=["account"], interval_s=1, lookback_s=0, page_size=7)
    first.poll_once()
    first.close()
    crm.touch("new", T0 + timedelta(seconds=1))
    second = CursorPoller("fake", inbox, crm, state, objects=["account"], interval_s=1, lookback_s=0, page_size=7)
    try:
        assert second.poll_once() == 1
        assert second.cursor("account") == (T0 + timedelta(seconds=1), "new")
    finally:
        second.close()
        inbox.close()


class BackwardsCrm(KeysetCrm):
    def changes_after(self, object: str, cursor: tuple[datetime, str] | None, limit: int) -> list[dict[str, Any]]:
        return [{"id": "x", "modified": T0}] * limit  # ignores the cursor: would loop forever


def test_a_connector_that_does_not_page_forward_is_refused_not_looped(state: str) -> None:
    inbox = Inbox(state)
    poller = CursorPoller(
        "fake", inbox, BackwardsCrm(), state, objects=["account"], interval_s=1, lookback_s=0, page_size=5
    )
    try:
        with pytest.raises(CursorBroken, match="must page strictly forward"):
            poller.poll_once()
    finally:
        poller.close()
        inbox.close()


class NumericIdCrm(KeysetCrm):
    """Ids that are numbers, ordered as numbers within a tie (HubSpot's hs_object_id)."""

    def changes_after(self, object: str, cursor: tuple[datetime, str] | None, limit: int) -> list[dict[str, Any]]:
        self.pages += 1
        ordered = sorted((ts, int(rid), rid) for rid, ts in self.rows.items())
        after = None if cursor is None else (cursor[0], int(cursor[1]) if cursor[1] else -1)
        rows = [(ts, rid) for ts, n, rid in ordered if after is None or (ts, n) > after]
        return [{"id": rid, "modified": ts} for ts, rid in rows[:limit]]


def test_numeric_ids_sharing_a_timestamp_page_forward_across_a_change_of_length(state: str) -> None:
    crm = NumericIdCrm()
    for rid in ("98", "99", "100", "101", "9999999999", "10000000000"):
        crm.touch(rid, T0)
    inbox = Inbox(state)
    poller = CursorPoller("fake", inbox, crm, state, objects=["contact"], interval_s=1, lookback_s=0, page_size=2)
    try:
        assert poller.poll_once() == 6
        assert poller.cursor("contact") == (T0, "10000000000")
    finally:
        poller.close()
        inbox.close()


class DeletingCrm(KeysetCrm):
    """A CRM with a delete log, as Salesforce's "sObject Get Deleted": seconds ignored, the answer
    covering up to the last whole minute."""

    deletions_kept = timedelta(days=15)
    deletions_min_window = timedelta(minutes=2)

    def __init__(self) -> None:
        super().__init__()
        self.deleted: dict[str, datetime] = {}
        self.windows: list[tuple[datetime, datetime]] = []

    def deleted_between(
        self, object: str, start: datetime, end: datetime
    ) -> tuple[list[tuple[str, datetime]], datetime]:
        self.windows.append((start, end))
        start, end = start.replace(second=0, microsecond=0), end.replace(second=0, microsecond=0)
        assert end - start > timedelta(minutes=1), "Salesforce refuses a window of a minute or less"
        assert start >= datetime.now(UTC) - timedelta(days=15), "Salesforce keeps 15 days of deletions"
        return sorted(((rid, at) for rid, at in self.deleted.items() if start <= at < end), key=lambda x: x[1]), end


def test_deletions_from_the_crms_delete_log_are_notified_once_across_overlapping_windows(state: str) -> None:
    crm = DeletingCrm()
    now = datetime.now(UTC)
    crm.deleted["gone-1"] = now - timedelta(minutes=1, seconds=30)
    inbox = Inbox(state)
    poller = CursorPoller("fake", inbox, crm, state, objects=["contact"], interval_s=1, lookback_s=60, page_size=10)
    try:
        assert poller.poll_once() == 1  # the first window reaches back two minutes, the least the log accepts
        crm.deleted["gone-2"] = datetime.now(UTC) - timedelta(seconds=61)
        assert poller.poll_once() == 1  # gone-1 again in the overlap: the same delivery, not added
        assert poller.poll_once() == 0
        rows = [(crm_id, d) for crm_id, d in _inbox_ids(state)]
        assert [crm_id for crm_id, _ in rows] == ["gone-1", "gone-2"]
        assert all(":deleted:" in d for _, d in rows)
        with psycopg.connect(state) as conn:
            events = conn.execute("SELECT DISTINCT event FROM replicator.inbox").fetchall()
        assert events == [("poll.deleted",)]
        # Each window starts at the last one's covered end less the lookback, or two minutes
        # before its own end if that is earlier.
        (_, first_end), (second_start, second_end) = crm.windows[0], crm.windows[1]
        covered = first_end.replace(second=0, microsecond=0)
        assert second_start == min(covered - timedelta(seconds=60), second_end - timedelta(minutes=2))
    finally:
        poller.close()
        inbox.close()


def test_after_an_outage_longer_than_the_delete_log_the_window_starts_where_the_log_does(state: str) -> None:
    crm = DeletingCrm()
    inbox = Inbox(state)
    poller = CursorPoller("fake", inbox, crm, state, objects=["contact"], interval_s=1, lookback_s=60)
    long_ago = datetime.now(UTC) - timedelta(days=40)
    poller._store.save_checkpoint("poll:fake:contact:deleted", long_ago.isoformat(), 0)
    try:
        assert poller.poll_once() == 0  # refused by the CRM without the clamp (the fake asserts it)
        start, end = crm.windows[0]
        assert timedelta(days=14) < end - start < timedelta(days=15)
    finally:
        poller.close()
        inbox.close()


def test_a_failing_deletion_listing_holds_back_no_changes(state: str) -> None:
    class Refusing(DeletingCrm):
        def deleted_between(
            self, object: str, start: datetime, end: datetime
        ) -> tuple[list[tuple[str, datetime]], datetime]:
            raise RuntimeError("INVALID_REPLICATION_DATE")

    crm = Refusing()
    crm.touch("a", T0)
    inbox = Inbox(state)
    poller = CursorPoller("fake", inbox, crm, state, objects=["account", "contact"], interval_s=1, lookback_s=0)
    try:
        assert poller.poll_once() == 2  # "a" under both objects: the second is polled after the first's failure
        assert poller.cursor("contact") == (T0, "a")
    finally:
        poller.close()
        inbox.close()
