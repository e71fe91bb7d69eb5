"""The CRM poller: the safety net under webhooks, and the only feed for objects without them
(BottleCRM sends no product events).

Each poll lists every record of each object and hashes its content (sorted JSON, without
fields that change by themselves). A record whose hash differs from the one in
`replicator.crm_snapshot` goes into the inbox as a "poll" notification; a record gone from
a complete listing (and answering 404) as a "poll.deleted" one. The snapshot row is written
only after the inbox insert committed, so a crash in between adds the same notification
again, which the inbox drops by its delivery id.

BottleCRM's list endpoints take no ordering and no modified-since filter (accounts and
opportunities list by id, contacts by creation, products by name), so there is nothing to
page newest-first and stop early on: every poll reads every page. For objects with an
`updated_at` the poller still keeps a cursor in `replicator.checkpoints`
(`poll:<crm>:<object>`): the newest modification a complete scan saw, i.e. the time up to
which every change has been noticed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

import orjson
import psycopg

from replicator.sources.crm.polling import PollLoop, epoch_us
from replicator.state.inbox import Inbox


class ListedRecords(Protocol):
    def iter_records(self, object: str) -> Iterable[dict[str, Any]]: ...
    def fetch(self, object: str, crm_id: str) -> dict[str, Any] | None: ...
    def modified_at(self, record: dict[str, Any]) -> datetime | None: ...
    def volatile(self, object: str) -> frozenset[str]: ...


def _ref(value: Any) -> Any:
    # A nested reference ({"id": ..., "name": ...}) counts by its id: renaming the account
    # must not make every contact of it look changed.
    return value["id"] if isinstance(value, dict) and "id" in value else value


def _normalised(value: Any) -> Any:
    if isinstance(value, list):
        return [{k: _ref(v) for k, v in item.items()} if isinstance(item, dict) else item for item in value]
    return _ref(value)


def content_hash(record: dict[str, Any], volatile: frozenset[str] = frozenset()) -> str:
    """sha256 of the record's content, nested references reduced to their ids, volatile fields left out."""
    content = {k: _normalised(v) for k, v in record.items() if k not in volatile}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()


class Poller(PollLoop):
    def __init__(
        self,
        crm: str,
        inbox: Inbox,
        records: ListedRecords,
        state_dsn: str,
        *,
        objects: list[str],
        interval_s: float,
        lookback_s: float,
    ) -> None:
        super().__init__(crm, inbox, state_dsn, objects=objects, interval_s=interval_s, lookback_s=lookback_s)
        self.records = records
        # Kept for CRMs whose lists can be read newest-first; BottleCRM's cannot (see the module docstring).
        self.lookback_s = lookback_s
        self._conn = psycopg.connect(state_dsn, autocommit=True, application_name="replicator-poller")

    def close(self) -> None:
        self._conn.close()
        super().close()

    # -- polling -------------------------------------------------------------
    def _poll_object(self, object: str) -> int:
        volatile = self.records.volatile(object)
        known = self._snapshot(object)
        seen: set[str] = set()
        newest: datetime | None = None
        added = 0
        for record in self.records.iter_records(object):
            crm_id = str(record["id"])
            if crm_id in seen:
                continue  # offset pages shifted under us by a concurrent create
            seen.add(crm_id)
            ts = self.records.modified_at(record)
            if ts is not None and (newest is None or ts > newest):
                newest = ts
            digest = content_hash(record, volatile)
            before = known.get(crm_id)
            if before is not None and before[0] == digest:
                continue
            # The previous state's time is part of the delivery id: content that returns to an earlier
            # value (Paris -> Lyon -> Paris) is a new change, while the same change found twice is not.
            since = epoch_us(before[1]) if before is not None else 0
            added += self._notify(object, crm_id, "poll", f"poll:{object}:{crm_id}:{digest[:16]}:{since}")
            self._conn.execute(
                "INSERT INTO replicator.crm_snapshot (crm, object, crm_id, hash) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (crm, object, crm_id) DO UPDATE SET hash = excluded.hash, seen_at = now()",
                (self.crm, object, crm_id, digest),
            )
        for crm_id in sorted(set(known) - seen):
            # Offset pagination can skip a record when another is deleted mid-scan: ask before believing it gone.
            if self.records.fetch(object, crm_id) is not None:
                continue
            added += self._notify(object, crm_id, "poll.deleted", f"poll:{object}:{crm_id}:deleted")
            self._conn.execute(
                "DELETE FROM replicator.crm_snapshot WHERE crm = %s AND object = %s AND crm_id = %s",
                (self.crm, object, crm_id),
            )
        if newest is not None:
            self._advance_cursor(object, newest)
        return added

    # -- state ---------------------------------------------------------------
    def _snapshot(self, object: str) -> dict[str, tuple[str, datetime]]:
        rows = self._conn.execute(
            "SELECT crm_id, hash, seen_at FROM replicator.crm_snapshot WHERE crm = %s AND object = %s",
            (self.crm, object),
        ).fetchall()
        return {crm_id: (digest, seen_at) for crm_id, digest, seen_at in rows}

    def cursor(self, object: str) -> datetime | None:
        """The newest modification time a complete scan of `object` saw, if it has one."""
        position = self._checkpoint(object)
        return None if position is None else datetime.fromisoformat(position)

    def _advance_cursor(self, object: str, newest: datetime) -> None:
        # A complete scan saw every record at `newest`, so records sharing that timestamp are all
        # accounted for; the cursor never moves backwards (a newest record deleted meanwhile).
        current = self.cursor(object)
        if current is not None and newest <= current:
            return
        self._store.save_checkpoint(self.stream(object), newest.isoformat(), epoch_us(newest))
