"""Polling a CRM that can list records by modification time (HubSpot's search API on
`hs_lastmodifieddate`, Salesforce's SOQL on `SystemModstamp`).

The cursor is a keyset, (modification time, record id), saved in `replicator.checkpoints`
(`poll:<crm>:<object>`) after each complete page. Each poll starts again `lookback_s` before
the cursor: a record committed late with an earlier timestamp, or written while the previous
poll was reading, is still found. What the lookback finds a second time carries the same
delivery id (object, id, modification time), so the inbox keeps one notification per change.

Ties are the connector's job: `changes_after` answers records strictly after the keyset
(time, id) in ascending order, so any number of records sharing one timestamp are paged
through by id, and a page can never answer the same record twice. A connector that breaks
that promise would make the poller loop; the poller refuses such a page instead.

A modification-time cursor does not see deletions. A connector that can list them
(Salesforce's delete log, "sObject Get Deleted"; HubSpot's archived records) offers
`deleted_between`: each poll then also reads them from the last window's end (less the
lookback) to now, and each deletion becomes a `poll.deleted` notification whose delivery id
holds the deletion time, so overlapping windows add it once. The answer says where it stopped
(Salesforce's `latestDateCovered`); the next window starts there. Salesforce keeps 15 days
of deletions, HubSpot 90: after a longer outage the older ones are gone, and `reconcile`
shows them only as records missing from the CRM (a warning says so).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import structlog

from replicator.sources.crm.polling import PollLoop, epoch_us
from replicator.state.inbox import Inbox

log = structlog.get_logger()

Cursor = tuple[datetime, str]

# Asked a little inside what a delete log keeps, so a slow call is not refused.
_KEPT_MARGIN = timedelta(minutes=10)


class ChangedRecords(Protocol):
    def changes_after(self, object: str, cursor: Cursor | None, limit: int) -> list[dict[str, Any]]: ...
    def modified_at(self, record: dict[str, Any]) -> datetime | None: ...
    def record_id(self, record: dict[str, Any]) -> str: ...


@runtime_checkable
class DeletionLog(Protocol):
    deletions_kept: timedelta  # how far back the CRM lists deletions
    deletions_min_window: timedelta  # the shortest window it answers

    def deleted_between(
        self, object: str, start: datetime, end: datetime
    ) -> tuple[list[tuple[str, datetime]], datetime]: ...


class CursorBroken(RuntimeError):
    """The CRM answered a page that does not move the keyset forward."""


def _order(cursor: Cursor) -> tuple[datetime, tuple[int, str]]:
    """The keyset order the connectors page in: numeric ids (HubSpot's) as numbers, so that "100"
    comes after "99" as it does in the CRM; others (Salesforce's fixed-length ids) as text."""
    stamp, record_id = cursor
    return stamp, (len(record_id), record_id) if record_id.isdigit() else (0, record_id)


def encode_cursor(cursor: Cursor) -> str:
    return f"{cursor[0].isoformat()}|{cursor[1]}"


def decode_cursor(position: str) -> Cursor:
    stamp, _, record_id = position.partition("|")
    return datetime.fromisoformat(stamp), record_id


class CursorPoller(PollLoop):
    def __init__(
        self,
        crm: str,
        inbox: Inbox,
        records: ChangedRecords,
        state_dsn: str,
        *,
        objects: list[str],
        interval_s: float,
        lookback_s: float,
        page_size: int = 100,
    ) -> None:
        super().__init__(crm, inbox, state_dsn, objects=objects, interval_s=interval_s, lookback_s=lookback_s)
        self.records = records
        self.deletions = records if isinstance(records, DeletionLog) else None
        self.lookback = timedelta(seconds=lookback_s)
        self.page_size = page_size

    def cursor(self, object: str) -> Cursor | None:
        position = self._checkpoint(object)
        return None if position is None else decode_cursor(position)

    def _poll_object(self, object: str) -> int:
        added = self._poll_changes(object)
        if self.deletions is not None:
            try:
                added += self._poll_deletions(object, self.deletions)
            except Exception as exc:  # the next objects' changes must still be polled
                log.warning(
                    "crm deletion poll failed; trying again at the next interval",
                    crm=self.crm,
                    object=object,
                    error=str(exc),
                )
        return added

    def _poll_deletions(self, object: str, deletions: DeletionLog) -> int:
        stream = f"{self.stream(object)}:deleted"
        saved = self._position(stream)
        end = datetime.now(UTC)
        start = (datetime.fromisoformat(saved) if saved else end) - self.lookback
        start = min(start, end - deletions.deletions_min_window)
        oldest = end - deletions.deletions_kept + _KEPT_MARGIN
        if start < oldest:
            log.warning(
                "deletions older than the CRM's delete log keeps are no longer listed; `replicator reconcile` "
                "shows them as records missing from the CRM",
                crm=self.crm,
                object=object,
                since=start.isoformat(),
            )
            start = oldest
        found, covered = deletions.deleted_between(object, start, end)
        added = 0
        for record_id, at in found:
            delivery_id = f"poll:{object}:{record_id}:deleted:{epoch_us(at)}"
            added += self._notify(object, record_id, "poll.deleted", delivery_id, deleted_at=at.isoformat())
        if saved is None or covered > datetime.fromisoformat(saved):
            self._store.save_checkpoint(stream, covered.isoformat(), epoch_us(covered))
        return added

    def _poll_changes(self, object: str) -> int:
        saved = self.cursor(object)
        position: Cursor | None = None if saved is None else (saved[0] - self.lookback, "")
        added = 0
        while True:
            page = self.records.changes_after(object, position, self.page_size)
            for record in page:
                stamp = self.records.modified_at(record)
                record_id = self.records.record_id(record)
                if stamp is None:
                    raise CursorBroken(f"{self.crm} {object} {record_id}: record has no modification time")
                here = (stamp, record_id)
                if position is not None and _order(here) <= _order(position):
                    raise CursorBroken(
                        f"{self.crm} {object}: record {record_id} at {stamp.isoformat()} is not after the cursor "
                        f"{encode_cursor(position)}; the connector's changes_after must page strictly forward"
                    )
                delivery_id = f"poll:{object}:{record_id}:{epoch_us(stamp)}"
                added += self._notify(object, record_id, "poll", delivery_id, modified_at=stamp.isoformat())
                position = here
            if position is not None and (saved is None or _order(position) > _order(saved)):
                # Saved per page: a poll cut short resumes here, not from the start.
                self._store.save_checkpoint(self.stream(object), encode_cursor(position), epoch_us(position[0]))
                saved = position
            if len(page) < self.page_size:
                return added
