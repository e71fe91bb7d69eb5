"""The streaming loop: source -> bounded queue -> batches -> processor -> ack.

A reader thread owns the source connection and feeds a bounded queue, so a slow
CRM slows reading instead of growing memory. After each read it enqueues a
watermark: every change of every transaction at or below it is already in the
queue. The main thread acknowledges a watermark only after processing every
change queued before it, so the source never moves past unapplied work.

A source whose ownership of its streams can change under it (Kafka partitions
moving to another group member) gets `Runner.quiesce` through `attach`: it holds
the main loop between batches and drops queued changes the source no longer owns,
so two owners never work on one key at the same time.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from replicator.change import Change, Position
from replicator.ops import metrics
from replicator.ops.health import Health
from replicator.pipeline.processor import Interrupted

log = structlog.get_logger()


class BatchProcessor(Protocol):
    """Applies a batch; when it returns, every change of it is resolved (applied, skipped or dead-lettered)."""

    stop: threading.Event

    def process(self, changes: Sequence[Change], *, force: bool = False) -> Any: ...


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
        processor: BatchProcessor,
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
        # Quiesce requests (see `quiesce`): guarded by _cv, served by the main loop between batches.
        self._cv = threading.Condition()
        self._drops: list[Callable[[Change], bool]] = []
        self._held = 0
        self._looping = False
        attach = getattr(source, "attach", None)
        if callable(attach):
            attach(self.quiesce)

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

    # -- quiescing -----------------------------------------------------------
    @contextmanager
    def quiesce(self, drop: Callable[[Change], bool]) -> Iterator[None]:
        """Wait until the main loop is between batches (the batch in flight is processed and
        acknowledged), remove every queued or half-batched change for which `drop` is true,
        and keep the main loop parked until the block exits.

        Called by the source from its reader thread (e.g. while a partition is revoked),
        or from the main thread when nothing is looping; never while holding a lock the
        main loop's `ack` needs.
        """
        with self._cv:
            self._drops.append(drop)
            self._held += 1
            while self._looping and self._drops and not self.stop.is_set():
                self._cv.wait(0.1)
            if self._drops:
                # Nobody takes from the queue (not looping, or stopping): filter it here.
                self._apply_drops([])
        try:
            yield
        finally:
            with self._cv:
                self._held -= 1
                self._cv.notify_all()

    def _apply_drops(self, taken: list[Change]) -> list[Change]:
        """With _cv held and the reader not putting: filter `taken` and the queue."""
        drops, self._drops = self._drops, []
        items = self._take_all()
        for item in items:
            if not (isinstance(item, Change) and any(d(item) for d in drops)):
                self.queue.put_nowait(item)
        self._cv.notify_all()
        return [c for c in taken if not any(d(c) for d in drops)]

    def _take_all(self) -> list[Change | Watermark | _SourceFailed]:
        items: list[Change | Watermark | _SourceFailed] = []
        while True:
            try:
                items.append(self.queue.get_nowait())
            except queue.Empty:
                return items

    def _safe_point(self, taken: list[Change], mark: Watermark | None) -> tuple[list[Change], Watermark | None]:
        """Between batches: serve a quiesce request and wait while one holds the loop.

        With nothing taken, the watermarks at the head of the queue (and one already
        taken) confirm only processed work: they are acknowledged before the request is
        answered, so a revoking source can commit them."""
        if not self._held:
            return taken, mark
        with self._cv:
            if self._drops:
                if not taken:
                    items = self._take_all()
                    while items and isinstance(head := items[0], Watermark):
                        mark = head
                        items.pop(0)
                    for item in items:
                        self.queue.put_nowait(item)
                    if mark is not None and mark.offset > self._acked:
                        self._ack(mark.offset)
                    mark = None
                taken = self._apply_drops(taken)
            while self._held and not self.stop.is_set():
                self._cv.wait(0.1)
        return taken, mark

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
        with self._cv:
            self._looping = True
        try:
            self._loop()
        finally:
            with self._cv:
                self._looping = False
                self._cv.notify_all()

    def _loop(self) -> None:
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
        on_mark = False
        while len(changes) < self.batch_size:
            changes, mark = self._safe_point(changes, mark)
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
                mark, on_mark = item, True
                if not changes:
                    # A quiet stretch: let the watermark through on its own.
                    deadline = deadline or time.monotonic()
                continue
            changes.append(item)
            on_mark = False
            if deadline is None:
                deadline = time.monotonic() + self.max_wait_s
        if changes and not on_mark:
            mark = self._through_next_mark(changes, mark)
        return self._safe_point(changes, mark)

    def _through_next_mark(self, changes: list[Change], mark: Watermark | None) -> Watermark | None:
        """Extend the batch to the end of the read it stopped in (reads hold at most
        batch_size changes, so a batch stays under twice that). Otherwise part of a read is
        processed but cannot be acknowledged until the next batch, and a revoke in between
        would hand it to another owner to process again."""
        while len(changes) < 2 * self.batch_size:
            try:
                item = self.queue.get(timeout=0.2)
            except queue.Empty:
                return mark
            if isinstance(item, _SourceFailed):
                raise item
            if isinstance(item, Watermark):
                return item
            changes.append(item)
        return mark
