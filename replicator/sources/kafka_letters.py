"""Undecodable Kafka records into the dead-letter table, from the source's reader thread.

The reader thread gets its own state-store connection (opened on the first letter):
the main loop's connection is busy with the batch being processed.
"""

from __future__ import annotations

from typing import Any

from replicator.state.store import StateStore

ENTITY = "undecodable"  # not a mapped entity: `replay` says to discard these once the cause is fixed
_MAX_TEXT = 64 * 1024


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    # jsonb refuses NUL characters; a huge value is cut, its size kept.
    text = raw[:_MAX_TEXT].decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    return text if len(raw) <= _MAX_TEXT else f"{text}... ({len(raw)} bytes)"


class DeadLetters:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._store: StateStore | None = None

    def undecodable(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, reason: str
    ) -> None:
        if self._store is None:
            self._store = StateStore(self._dsn)
        position = f"{topic}/{partition}@{offset}"
        payload: dict[str, Any] = {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key": _text(key),
            "value": _text(value),
        }
        self._store.dead_letter(
            entity=ENTITY,
            erp_key=position,
            op="?",
            reason=reason,
            payload=payload,
            source_table=topic,
            position=position,
        )

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
