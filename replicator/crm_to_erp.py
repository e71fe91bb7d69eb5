"""Building the CRM -> ERP half from a validated configuration.

Only entities with a `crm_to_erp:` section take part. Everything that can be
checked before the first webhook is checked here: reverse expressions against
the CRM's field names and the ERP catalog, a feed for CRM changes (webhooks or
polling), a CRM that can be read back, an ERP writer that can connect.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from replicator.app import Parts, StartupError
from replicator.config.model import Config, SlotSourceConfig
from replicator.mapping.reverse import ReverseEntity, compile_reverse
from replicator.ops.health import Health
from replicator.pipeline.two_way import ForwardGuard
from replicator.sinks.erp.model import ErpWriter
from replicator.sources.crm import feeds
from replicator.state.inbox import Inbox
from replicator.state.twoway import TwoWayStore

WsgiApp = Callable[..., Any]


@dataclass
class TwoWay:
    reverse: dict[str, ReverseEntity]
    inbox: Inbox
    two_way: TwoWayStore
    crm_name: str
    writer: ErpWriter | None = None
    routes: dict[str, WsgiApp] = field(default_factory=dict)
    records: Any = None

    def close(self) -> None:
        closers = [self.inbox.close, self.two_way.close]
        if self.writer is not None:
            closers.append(self.writer.close)
        for closer in closers:
            with suppress(Exception):
                closer()


def reverse_mappings(config: Config, parts: Parts) -> dict[str, ReverseEntity]:
    """The compiled reverse mappings (empty when nothing syncs CRM -> ERP)."""
    if not any(e.crm_to_erp for e in config.mappings.values()):
        return {}
    return compile_reverse(config.mappings, parts.entities, parts.catalog, feeds.crm_fields(config, parts.sink))


def forward_guard(parts: Parts) -> ForwardGuard | None:
    """The guard of two-way records for an ERP -> CRM processor (its state connection closes with parts)."""
    reverse = reverse_mappings(parts.config, parts)
    if not reverse:
        return None
    store = TwoWayStore(parts.config.state_dsn)
    parts.closers.append(store.close)
    return ForwardGuard(reverse, store, parts.sink, parts.crm_writes)


def writer_origin(config: Config) -> str | None:
    """The replication origin our ERP writes carry: the slot source drops transactions with it."""
    if config.erp.dialect != "postgres":
        return None  # MariaDB has none; the ledger comparison recognises our writes' echoes
    return config.source.origin if isinstance(config.source, SlotSourceConfig) else "replicator"


def build_two_way(parts: Parts, *, writer: bool = True) -> TwoWay | None:
    """The CRM -> ERP parts, or None when no mapping writes CRM changes back."""
    config = parts.config
    reverse = reverse_mappings(config, parts)
    if not reverse:
        return None
    crm = config.crm
    poll = feeds.poll_config(config)
    if poll is None:
        raise StartupError(f"mappings with crm_to_erp need a CRM to read changes from; crm.kind {crm.kind!r} has none")
    if feeds.webhook_path(config) is None and poll.interval_s == 0:
        raise StartupError(
            "crm_to_erp is configured but no CRM change reaches the replicator: set crm.webhooks "
            "and/or crm.poll.interval_s > 0"
        )
    from replicator.sinks.erp.open import open_writer

    inbox = Inbox(config.state_dsn)
    two_way = TwoWayStore(config.state_dsn)
    tw = TwoWay(reverse, inbox, two_way, crm.kind, records=feeds.records_for(config, parts.sink))
    try:
        if writer:
            tw.writer = open_writer(
                config.erp.dsn.get_secret_value(),
                config.erp.dialect,
                parts.catalog,
                origin=writer_origin(config),
                timezone=config.erp.timezone,
            )
        path = feeds.webhook_path(config)
        receiver = feeds.webhook_app(config, inbox, parts.store.dead_letter)
        if path is not None and receiver is not None:
            tw.routes[path] = receiver
    except Exception:
        tw.close()
        raise
    return tw


# One process at a time applies the inbox: it is one ordered stream, like a slot.
_LEADER_LOCK = 0x5EB1_0C2E


class CrmToErpService:
    """The CRM -> ERP pipeline inside `replicator run`: inbox -> reverse processor -> ERP writer,
    plus the poller. With several replicator processes, one leads (an advisory lock on the
    state database) and the others stand by to take over."""

    def __init__(self, parts: Parts, tw: TwoWay, stop: threading.Event, health: Health, gate: threading.Lock) -> None:
        self.parts = parts
        self.tw = tw
        self.stop = stop
        self.health = health.child("crm->erp")
        self.gate = gate
        self.failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="crm-to-erp", daemon=True)
        self._thread.start()

    def join(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def gauges(self) -> list[Callable[[], None]]:
        from replicator.ops import metrics

        def sample() -> None:
            backlog = self.tw.inbox.backlog(self.tw.crm_name)
            metrics.INBOX_BACKLOG.labels(self.tw.crm_name).set(backlog)
            metrics.CONFLICTS_OPEN.set(self.tw.two_way.open_conflicts())
            # CRM changes stored but not yet read are pending work too: /healthz must not call it idle.
            self.health.set_waiting(backlog)

        return [sample]

    def _run(self) -> None:
        import psycopg
        import structlog

        log = structlog.get_logger()
        try:
            with psycopg.connect(self.parts.config.state_dsn, autocommit=True) as lock:
                while not self.stop.is_set():
                    row = lock.execute("SELECT pg_try_advisory_lock(%s)", (_LEADER_LOCK,)).fetchone()
                    if row and row[0]:
                        break
                    self.health.source_connected()  # standing by is healthy
                    self.stop.wait(5.0)
                if self.stop.is_set():
                    return
                log.info("applying CRM changes to the ERP", crm=self.tw.crm_name)
                self._lead()
        except BaseException as exc:  # handed to the service, which exits for a restart
            self.failure = exc
            log.error("CRM -> ERP pipeline failed", error=str(exc))
        finally:
            self.stop.set()

    def _lead(self) -> None:
        from replicator.app import open_reader
        from replicator.pipeline.reverse import ReverseProcessor
        from replicator.pipeline.runner import Runner
        from replicator.sources.crm.inbox_source import InboxSource
        from replicator.state.store import StateStore

        cfg = self.parts.config
        assert isinstance(cfg.crm, feeds.TWO_WAY_CRMS) and self.tw.writer is not None
        reader = open_reader(cfg)
        store = StateStore(cfg.state_dsn)
        inbox = Inbox(cfg.state_dsn, self.tw.inbox.arrived)  # woken by the webhook receiver's stores
        poller_thread = None
        poller = feeds.make_poller(cfg, self.tw.records, inbox, objects=sorted(self.tw.reverse))
        try:
            if poller is not None:
                poller_thread = threading.Thread(target=poller.run, args=(self.stop,), name="crm-poller", daemon=True)
                poller_thread.start()
            source = InboxSource(self.tw.crm_name, inbox, self.tw.records, objects=set(self.tw.reverse), fetch=False)
            processor = ReverseProcessor(
                self.tw.reverse,
                self.parts.planner,
                reader,
                store,
                self.tw.two_way,
                self.tw.writer,
                self.parts.sink,
                cfg.pipeline.retry,
                self.stop,
                gate=self.gate,
                records=self.tw.records,
                writes=self.parts.crm_writes,
                readers=cfg.crm.concurrency,
            )
            Runner(source, processor, self.health, batch_size=100, max_wait_s=0.01, queue_size=1000).run()
        finally:
            if poller_thread is not None:
                poller_thread.join(timeout=5)
            if poller is not None:
                with suppress(Exception):
                    poller.close()
            for closer in (inbox.close, store.close, reader.close):
                with suppress(Exception):
                    closer()
