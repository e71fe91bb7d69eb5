"""Opening the configured change source for `replicator run`.

Each kind of source comes with what the service needs around it: how an
acknowledged position is checkpointed and which gauges are sampled. The
service itself does not know which kind it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from replicator.change import Position

if TYPE_CHECKING:
    from replicator.app import Parts
    from replicator.pipeline.runner import StreamSource


@dataclass
class OpenedSource:
    source: StreamSource
    describe: str  # "slot replicator", "kafka group replicator (12 topics)"
    on_ack: Callable[[Position], None] | None = None
    gauges: list[Callable[[], None]] = field(default_factory=list)  # sampled every few seconds


def open_source(parts: Parts) -> OpenedSource:
    """Raises StartupError when the source is not ready (e.g. no slot: run `replicator setup`)."""
    kind = parts.config.source.kind
    if kind == "kafka":
        from replicator.sources.kafka import open_kafka_source

        return open_kafka_source(parts)
    if kind == "mysql_binlog":
        from replicator.sources.binlog import open_binlog_source

        return open_binlog_source(parts)
    return _open_slot_source(parts)


def _open_slot_source(parts: Parts) -> OpenedSource:
    from replicator.app import StartupError
    from replicator.config.model import SlotSourceConfig
    from replicator.sources.pg_admin import int_to_lsn, slot_info
    from replicator.sources.pg_slot import PgSlotSource

    cfg = parts.config
    src = cfg.source
    assert isinstance(src, SlotSourceConfig)
    dsn = cfg.erp.dsn.get_secret_value()
    if not slot_info(dsn, src.slot).exists:
        raise StartupError(f"replication slot {src.slot!r} does not exist; run `replicator setup`")
    store = parts.store

    def checkpoint(position: Position) -> None:
        store.save_checkpoint(position.stream, int_to_lsn(position.offset), position.offset)

    def sample_lag() -> Any:
        return slot_info(dsn, src.slot)  # sets the slot lag gauge

    source = PgSlotSource(
        dsn,
        slot=src.slot,
        publication=src.publication,
        name=src.slot,
        timezone=cfg.erp.timezone,
        drop_origins=[src.origin],
        status_interval=src.status_interval_s,
    )
    return OpenedSource(source, f"slot {src.slot}", on_ack=checkpoint, gauges=[sample_lag])
