"""The one change model every source produces and every sink consumes.

It follows Debezium's envelope (``before``/``after``/``source``/``op``) so that the
slot source, the Kafka source and the CRM-side sources speak the same language.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

Row = dict[str, Any]


class Op(StrEnum):
    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"  # snapshot / backfill read
    TRUNCATE = "t"


@dataclass(frozen=True, order=True, slots=True)
class Position:
    """Where a change sits in its source stream.

    ``stream`` names the ordered stream (a slot, a Kafka topic-partition, a CRM
    poller); ``offset`` is monotonic inside it (an LSN, a Kafka offset, a cursor).
    Sources decide what acknowledging an offset means.
    """

    stream: str
    offset: int

    def __str__(self) -> str:
        return f"{self.stream}@{self.offset}"


@dataclass(slots=True)
class Change:
    """A committed row change.

    ``key`` holds the primary-key values in key-column order. ``before`` is only
    complete under REPLICA IDENTITY FULL; ``unchanged`` names columns whose value
    was not sent (unchanged TOAST) and must not be read as NULL.
    """

    source: str
    table: str  # schema-qualified, e.g. "public.customers"
    op: Op
    key: tuple[Any, ...]
    before: Row | None
    after: Row | None
    position: Position
    commit_ts: datetime | None = None
    txid: int | None = None
    origin: str | None = None
    unchanged: frozenset[str] = field(default_factory=frozenset)

    @property
    def row(self) -> Row | None:
        """The row's latest known state: ``after`` for writes, ``before`` for deletes."""
        return self.before if self.op is Op.DELETE else self.after
