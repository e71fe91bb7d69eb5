"""The streaming loop: source -> bounded queue -> batches -> processor -> ack.

A reader thread owns the source connection and feeds a bounded queue, so a slow
CRM slows reading instead of growing memory. After each read it enqueues a
watermark: every change of every transaction at or below it is already in the
queue. The main thread acknowledges a watermark only after processing every
change queued before it, so the source never moves past unapplied work.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from replicator.change import Change, Position
from replicator.ops import metrics
from replicator.ops.health import Health
from replicator.pipeline.processor import Interrupted, Processor

log = structlog.get_logger()


class StreamSource(Protocol):
    name: str

    def start(self) -> None: ...
    def read(self, timeout: float, max_changes: int = 1000) -> list[Change]: ...
    def ack(self, position: Position) -> None: ...
    def send_status(self) -> None: ...
    def close(self) -> None: ...
    @property
    def committed(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Watermark:
    offset: int


class _SourceFailed(Exception):
    """The reader thread lost the source; carried through the queue to the main loop."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class Runner:
    def __init__(
        self,
        source: StreamSource,
        processor: Processor,
        health: Health,
        *,
        batch_size: int = 500,
        max_wait_s: float = 0.05,
        queue_size: int = 10_000,
        on_ack: Callable[[Position], None] | None = None,
    ) -> None:
        self.source = source
        self.processor = processor
        self.health = health
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.queue: queue.Queue[Change | Watermark | _SourceFailed] = queue.Queue(maxsize=queue_size)
        self.stop = processor.stop
        self.on_ack = on_ack
        self._acked = 0
        self._acked_since_connect = False
        self._in_flight = 0

    # -- reader thread -----------------------------------------------------
    def _put(self, item: Change | Watermark | _SourceFailed, session: threading.Event) -> bool:
        while not session.is_set():
            try:
                self.queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                # Backpressure: keep the server's wal_sender_timeout at bay while we wait.
                self.source.send_status()
        return False

    def _read_loop(self, session: threading.Event) -> None:
        try:
            while not session.is_set():
                changes = self.source.read(timeout=0.2, max_changes=self.batch_size)
                for change in changes:
                    if not self._put(change, session):
                        return
                committed = self.source.committed
                if committed and not self._put(Watermark(committed), session):
                    return
        except BaseException as exc:  # handed to the main loop, which reconnects
            self._put(_SourceFailed(exc), session)

    # -- main loop -----------------------------------------------------------
    def run(self) -> None:
        """Stream until stopped. A lost source connection is re-established with
        backoff; what was queued but not applied is dropped and comes again,
        because nothing past the last acknowledged transaction was confirmed."""
        attempt = 0
        try:
            while not self.stop.is_set():
                session = threading.Event()
                try:
                    self.source.start()
                except Exception as exc:
                    attempt += 1
                    self._source_down(exc, attempt)
                    continue
                self.health.source_connected()
                reader = threading.Thread(target=self._read_loop, args=(session,), name="source-reader", daemon=True)
                reader.start()
                try:
                    self._process_until_stopped()
                    return
                except _SourceFailed as failed:
                    # A connection that made progress was healthy: start the backoff over.
                    attempt = 1 if self._acked_since_connect else attempt + 1
                    self._source_down(failed.error, attempt)
                finally:
                    session.set()
                    self._drain()
                    reader.join(timeout=5)
                    self.source.close()
                    self._drain()
        finally:
            self.stop.set()

    def _source_down(self, error: BaseException, attempt: int) -> None:
        delay = min(30.0, 0.5 * 2 ** min(attempt - 1, 6))
        log.warning("source connection lost; reconnecting", error=str(error), attempt=attempt, wait_s=delay)
        self.health.source_failed(str(error))
        self.stop.wait(delay)

    def _drain(self) -> None:
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return

    def _process_until_stopped(self) -> None:
        self._acked_since_connect = False
        while not self.stop.is_set():
            changes, mark = self._next_batch()
            self._in_flight = len(changes)
            self.health.set_pending(self.queue.qsize() + self._in_flight)
            if changes:
                try:
                    self.processor.process(changes)
                except Interrupted:
                    return
            self._in_flight = 0
            if mark is not None and mark.offset > self._acked:
                self._ack(mark.offset)
                self._acked_since_connect = True
            self.health.set_pending(self.queue.qsize())

    def _ack(self, offset: int) -> None:
        position = Position(self.source.name, offset)
        self.source.ack(position)
        self._acked = offset
        self.health.acked()
        metrics.SOURCE_POSITION.labels(self.source.name).set(offset)
        if self.on_ack is not None:
            self.on_ack(position)

    def _next_batch(self) -> tuple[list[Change], Watermark | None]:
        changes: list[Change] = []
        mark: Watermark | None = None
        deadline: float | None = None
        while len(changes) < self.batch_size:
            timeout = 0.2 if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self.queue.get(timeout=timeout)
            except queue.Empty:
                if deadline is not None or self.stop.is_set():
                    break
                if mark is not None:
                    break
                continue
            if isinstance(item, _SourceFailed):
                raise item
            if isinstance(item, Watermark):
                mark = item
                if not changes:
                    # A quiet stretch: let the watermark through on its own.
                    deadline = deadline or time.monotonic()
                continue
            changes.append(item)
            if deadline is None:
                deadline = time.monotonic() + self.max_wait_s
        return changes, mark
