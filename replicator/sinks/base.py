"""What mapping hands to a sink, and what a sink answers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Action(StrEnum):
    UPSERT = "upsert"
    DELETE = "delete"
    ARCHIVE = "archive"


@dataclass(slots=True)
class Operation:
    """One target-side effect for one record.

    ``object`` is the CRM object type (account, contact, product, opportunity);
    ``external_id`` is the ERP identity written into the CRM's external-id field;
    ``record`` holds CRM field values (already mapped, lookups resolved to CRM ids);
    ``crm_id`` is the id-map entry when one is known; ``idempotency_key`` is stable
    for the same intended effect, so a replay after a crash is recognised.
    """

    entity: str
    object: str
    action: Action
    external_id: str
    record: dict[str, Any] = field(default_factory=dict)
    crm_id: str | None = None
    idempotency_key: str = ""
    payload_hash: str = ""


class Outcome(StrEnum):
    OK = "ok"
    TRANSIENT = "transient"  # worth retrying: timeouts, 5xx, 429, connection errors
    PERMANENT = "permanent"  # retrying the same payload will not help: dead-letter it


@dataclass(slots=True)
class Result:
    outcome: Outcome
    crm_id: str | None = None
    error: str | None = None
    status_code: int | None = None
    retry_after: float | None = None  # seconds, when the CRM said so
    created: bool = False  # a new CRM record was made (vs found/updated)


class CrmError(Exception):
    """A CRM request that got no usable answer; carries the Result it maps to."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.error)
        self.result = result


class IntentLedger(Protocol):
    """Durable record of create intents, so a crash between the CRM call and the
    ledger write is resolved by looking the external id up instead of creating again."""

    def begin_create(self, op: Operation) -> bool:
        """Record the intent; True if an earlier, unresolved intent already existed."""
        ...

    def finish_create(self, op: Operation, crm_id: str) -> None: ...


class Sink(Protocol):
    name: str

    def apply(self, ops: Sequence[Operation], ledger: IntentLedger) -> list[Result]:
        """Apply operations, answering one result per operation, same order.

        Operations for the same external id never appear twice in one call; the
        caller orders parents before children and may apply a call's operations
        concurrently only across objects of the same rank.
        """
        ...

    def lookup(self, object: str, external_id: str) -> dict[str, Any] | None:
        """The CRM record holding this external id, or None."""
        ...

    def close(self) -> None: ...


class ReadableSink(Sink, Protocol):
    """A sink whose records can be read back, for reconcile."""

    def iter_records(self, object: str) -> Iterator[dict[str, Any]]:
        """Every record of `object`, each with an `external_id` key (None when not ours)."""
        ...

    def comparable(self, object: str, raw: dict[str, Any]) -> dict[str, Any]:
        """A read record in the shape `Operation.record` is written in, to compare field by field."""
        ...

    def is_archived(self, object: str, raw: dict[str, Any]) -> bool: ...
