"""The state store's interface held in dictionaries, for one benchmark variant only.

`bench/kafka_throughput.py` reports the pipeline twice: with the real PostgreSQL state
store (what `replicator run` does) and with this, to show what decode -> map -> coalesce
-> batch costs on its own. It keeps the same information the real store keeps (CRM ids,
last hashes, outcomes, dead letters), so the planner's decisions are the same; it is not
durable and is never used by the replicator itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from replicator.sinks.base import Operation
from replicator.state.store import SyncRecord


class MemoryState:
    def __init__(self) -> None:
        self.ids: dict[tuple[str, str], str] = {}
        self.states: dict[tuple[str, str], tuple[str | None, str]] = {}
        self.letters: list[dict[str, Any]] = []

    def crm_ids(self, entity: str, erp_keys: Iterable[str]) -> dict[str, str]:
        ids = self.ids
        return {k: ids[(entity, k)] for k in set(erp_keys) if (entity, k) in ids}

    def last_hashes(self, entity: str, erp_keys: Iterable[str]) -> dict[str, tuple[str | None, str]]:
        states = self.states
        return {k: states[(entity, k)] for k in set(erp_keys) if (entity, k) in states}

    def record(self, records: Sequence[SyncRecord]) -> None:
        for r in records:
            key = (r.entity, r.erp_key)
            self.states[key] = (r.payload_hash, r.status)
            if r.status == "deleted":
                self.ids.pop(key, None)
            elif r.crm_id and r.status in ("synced", "archived"):
                self.ids[key] = r.crm_id

    def dead_letter(self, **fields: Any) -> None:
        self.letters.append(fields)

    def begin_create(self, op: Operation) -> bool:
        return False

    def finish_create(self, op: Operation, crm_id: str) -> None:
        self.ids[(op.entity, op.external_id)] = crm_id

    def save_checkpoint(self, stream: str, position: str, offset: int) -> None:
        pass

    def close(self) -> None:
        pass
