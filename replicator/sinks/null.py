"""A sink that acknowledges everything and keeps nothing: dry runs and benchmarks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from replicator.sinks.base import Action, IntentLedger, Operation, Outcome, Result


class NullSink:
    name = "null"

    def __init__(self) -> None:
        self.applied = 0

    def apply(self, ops: Sequence[Operation], ledger: IntentLedger) -> list[Result]:
        self.applied += len(ops)
        return [
            Result(
                Outcome.OK,
                crm_id=op.crm_id or f"null:{op.object}:{op.external_id}",
                created=op.crm_id is None and op.action is Action.UPSERT,
            )
            for op in ops
        ]

    def lookup(self, object: str, external_id: str) -> dict[str, Any] | None:
        return None

    def iter_records(self, object: str) -> Iterator[dict[str, Any]]:
        return iter(())

    def comparable(self, object: str, raw: dict[str, Any]) -> dict[str, Any]:
        return raw

    def is_archived(self, object: str, raw: dict[str, Any]) -> bool:
        return False

    def close(self) -> None:
        pass
