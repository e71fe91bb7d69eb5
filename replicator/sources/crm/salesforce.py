"""What the CRM change poller needs from Salesforce: records changed after a cursor, in order,
read with SOQL keyset paging on ``(SystemModstamp, Id)``.

``SystemModstamp`` is the time a record was last changed by a user or by the system
(indexed; "System Fields", Salesforce Object Reference). Paging on it alone would loop or
skip when more records share one timestamp than fit a page (a bulk load stamps thousands
with the same millisecond), so the cursor is the pair and the query is the keyset form::

    WHERE SystemModstamp > T OR (SystemModstamp = T AND Id > 'last')
    ORDER BY SystemModstamp, Id LIMIT n

Each page starts strictly after the last record of the previous one, whatever the number of
ties. Salesforce keeps milliseconds: a cursor time with finer digits lies between two
possible stamps, so it becomes ``SystemModstamp > T`` with T cut to the millisecond, and the
tie clause is left out (no record can have been stamped exactly at it). A cursor without an id
(the poller's lookback start) is ``SystemModstamp >= T``.

Deletions leave no record to select: they come from Salesforce's delete log ("sObject Get
Deleted"), which the poller reads for the same objects (see `cursor_poll`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from replicator.sinks.base import CrmError
from replicator.sinks.salesforce import SOBJECTS, SalesforceSink, soql

MODSTAMP = "SystemModstamp"

# Fields that change without anyone editing the record's content: views, activity roll-ups
# and the modification stamps themselves. A content hash leaves them out.
VOLATILE_FIELDS = frozenset({"LastViewedDate", "LastReferencedDate", "LastActivityDate", MODSTAMP, "LastModifiedDate"})


def keyset_after(cursor: tuple[datetime, str] | None) -> str | None:
    """The WHERE condition selecting records strictly after `cursor` in (SystemModstamp, Id) order."""
    if cursor is None:
        return None
    at, last_id = cursor
    if at.tzinfo is None:
        raise ValueError(f"cursor time {at!r} has no time zone")
    stamp = soql.datetime_literal(at)  # cut to milliseconds
    if at.microsecond % 1000:
        return f"{MODSTAMP} > {stamp}"
    if not last_id:
        # A cursor moved back by the lookback has no id: every record at T is after it. `Id > ''`
        # is refused (INVALID_QUERY_FILTER_OPERATOR): an Id is compared only with a valid Id
        # ("fieldExpression Syntax", SOQL and SOSL Reference).
        return f"{MODSTAMP} >= {stamp}"
    return f"{MODSTAMP} > {stamp} OR ({MODSTAMP} = {stamp} AND Id > {soql.quote(last_id)})"


class SalesforceRecords:
    """Salesforce records the way the CRM change poller (changed ids) and inbox source (full records) use them."""

    def __init__(self, sink: SalesforceSink) -> None:
        self.sink = sink

    def changes_after(self, object: str, cursor: tuple[datetime, str] | None, limit: int) -> list[dict[str, Any]]:
        """Records whose (SystemModstamp, Id) is strictly greater than `cursor` (None: from the
        beginning), ascending, at most `limit`.

        Each holds at least the id and modification time (``Id``, ``SystemModstamp`` and the
        external id), enough for record_id() and modified_at(): the poller needs no more, and
        the inbox source fetches the full record later."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        return list(
            self.sink.query(
                object,
                where=keyset_after(cursor),
                order_by=(f"{MODSTAMP} ASC", "Id ASC"),
                limit=limit,
                fields=["Id", MODSTAMP, self.sink.field],
            )
        )

    # "sObject Get Deleted": 15 days of deletions, a window of more than one minute, seconds
    # ignored (two minutes stay over one once both ends lose their seconds).
    deletions_kept = timedelta(days=15)
    deletions_min_window = timedelta(minutes=2)

    def deleted_between(
        self, object: str, start: datetime, end: datetime
    ) -> tuple[list[tuple[str, datetime]], datetime]:
        """Records deleted in the window, from Salesforce's delete log, and where the log's answer stops."""
        return self.sink.deleted(object, start, end)

    def fetch(self, object: str, crm_id: str) -> dict[str, Any] | None:
        """The record with every readable field and its external id; None when it is gone.

        Raises CrmError on any other failure (TRANSIENT for 5xx and transport errors)."""
        return self.sink.get(object, crm_id)

    def modified_at(self, record: dict[str, Any]) -> datetime | None:
        return soql.parse_datetime(record.get(MODSTAMP))

    def record_id(self, record: dict[str, Any]) -> str:
        return str(record["Id"])

    def iter_records(self, object: str) -> Iterator[dict[str, Any]]:
        return self.sink.iter_records(object)

    def volatile(self, object: str) -> frozenset[str]:
        return VOLATILE_FIELDS

    def crm_fields(self) -> dict[str, frozenset[str]] | None:
        """Readable fields per object from describe (plus ``external_id`` and ``id``); None when unreachable."""
        try:
            return {
                object: frozenset(self.sink.field_names(sobject)) | {"external_id", "id"}
                for object, sobject in SOBJECTS.items()
            }
        except CrmError:
            return None
