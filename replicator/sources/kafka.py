"""Debezium change events from Kafka topics, consumed in a consumer group.

Every replicator process of a deployment joins one group; Kafka spreads the
partitions over them and, because Debezium keys records by primary key, each key
lives in one partition, read in order by one process at a time.

Offsets are committed only for records the pipeline acknowledged (see
`kafka_offsets`), with auto-commit off: asynchronously after each acknowledged
batch, synchronously when partitions are revoked and at close. Records with no CRM
effect (tombstones, heartbeats, schema changes, transaction metadata, logical
decoding messages) and undecodable records (dead-lettered here, with their topic,
partition and offset) count as handled, so a partition never stalls on them.

When partitions are revoked the source quiesces the pipeline (`Runner.quiesce`):
the batch in flight finishes and is acknowledged, changes of the revoked partitions
still queued are dropped, the acknowledged offsets are committed, and only then may
the partitions move. The new owner re-reads from there; nobody works on a key twice.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from replicator.change import Change, Position
from replicator.ops import metrics
from replicator.sources.debezium import DebeziumDecodeError, DebeziumDecoder
from replicator.sources.kafka_letters import DeadLetters
from replicator.sources.kafka_offsets import TP, OffsetBook

if TYPE_CHECKING:
    from replicator.app import Parts
    from replicator.sources.open import OpenedSource

log = structlog.get_logger()

Quiesce = Callable[[Callable[[Change], bool]], AbstractContextManager[None]]

# librdkafka recovers from non-fatal errors itself (reconnects, metadata refresh): log them, not every time.
_TRANSIENT_LOG_EVERY_S = 30.0
# Polls while the queue is full come this often: far inside max.poll.interval.ms (default 300 s).
_KEEPALIVE_POLL_S = 1.0


def tp_of(change: Change) -> TP:
    """The partition a change was read from: its position stream is "<topic>/<partition>"."""
    topic, _, partition = change.position.stream.rpartition("/")
    return topic, int(partition)


class KafkaSource:
    def __init__(
        self,
        settings: dict[str, Any],
        topics: list[str],
        decoder: DebeziumDecoder,
        *,
        name: str = "kafka",
        letters: DeadLetters | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.topics = topics
        self.decoder = decoder
        self.letters = letters
        self._book = OffsetBook()
        self._lock = threading.Lock()  # the book, between the reader (reads, rebalances) and the main loop (acks)
        self._client_lock = threading.Lock()  # the consumer's lifetime, for the gauge sampler
        self._consumer: Consumer | None = None
        self._quiesce: Quiesce | None = None
        self._fatal: KafkaError | None = None
        self._rebalances = 0
        self._paused = False
        self._last_poll = time.monotonic()
        self._to_commit: dict[TP, int] = {}  # acknowledged, for the reader thread to commit
        self._acked: dict[TP, int] = {}  # acknowledged since `take_acked`
        self._last_warning = 0.0

    # -- wiring ------------------------------------------------------------
    def attach(self, quiesce: Quiesce) -> None:
        """The Runner hands over its quiesce hook (see the module docstring)."""
        self._quiesce = quiesce

    @property
    def committed(self) -> int:
        """The sequence number of the last read (the Runner acknowledges these)."""
        return self._book.seq

    def send_status(self) -> None:
        # The Runner calls this from the reader thread while the queue is full. librdkafka
        # heartbeats from its own thread; acknowledged offsets still need committing.
        consumer = self._consumer
        if consumer is not None:
            self._flush_commits(consumer)
            self._keep_membership(consumer)

    def _keep_membership(self, consumer: Consumer) -> None:
        """Poll with every partition paused while the pipeline cannot take more.

        A consumer that does not poll for max.poll.interval.ms leaves the group (a long CRM
        outage fills the queue and stops reading). Its partitions would move while its batch
        is still in flight, and the new owner could write a key's older state after this
        member wrote a newer one. Paused, poll() keeps the membership and delivers nothing.
        """
        if time.monotonic() - self._last_poll < _KEEPALIVE_POLL_S:
            return
        assignment = consumer.assignment()
        if assignment:
            consumer.pause(assignment)
            self._paused = True
        msg = consumer.poll(0)
        self._last_poll = time.monotonic()
        if msg is not None and msg.error() is None:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if topic is not None and partition is not None and offset is not None:
                # Fetched before the pause: rewind, so it is read again once the queue has room.
                consumer.seek(TopicPartition(topic, partition, offset))
        self._raise_fatal()

    def _resume(self, consumer: Consumer) -> None:
        if self._paused:
            self._paused = False
            assignment = consumer.assignment()
            if assignment:
                consumer.resume(assignment)

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            self._book.reset()
            self._to_commit.clear()
        self._fatal = None
        consumer = Consumer({**self.settings, "on_commit": self._on_commit, "error_cb": self._on_error})
        consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        with self._client_lock:
            self._consumer = consumer
        log.info("kafka consumer started", group=self.settings.get("group.id"), topics=len(self.topics))

    def close(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        with self._lock:
            offsets = self._book.acked()
            self._to_commit.clear()
        try:
            if offsets:
                self._commit(consumer, offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("final offset commit failed; the next owner re-reads from the last commit", error=str(exc))
        with self._client_lock:
            self._consumer = None
            try:
                consumer.close()  # leaves the group; on_revoke runs here, in this thread
            except (KafkaException, RuntimeError) as exc:
                log.warning("kafka consumer close failed", error=str(exc))
        with self._lock:
            self._book.reset()
        if self.letters is not None:
            self.letters.close()

    # -- reading -----------------------------------------------------------
    def read(self, timeout: float, max_changes: int = 1000) -> list[Change]:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("kafka source not started")
        self._flush_commits(consumer)
        self._resume(consumer)
        out: list[tuple[Change, TP, int]] = []
        nexts: dict[TP, tuple[int, int]] = {}
        kinds: Counter[tuple[str, str]] = Counter()
        rebalances = self._rebalances
        deadline = time.monotonic() + timeout
        wait = timeout
        while len(out) < max_changes:
            # consume() hands over what librdkafka has fetched in one call; poll() per record
            # cost ~18 µs each, as much as decoding the record.
            msgs = consumer.consume(max_changes - len(out), wait)
            self._last_poll = time.monotonic()
            self._raise_fatal()
            if not msgs:
                if out or nexts or time.monotonic() >= deadline:
                    break
                wait = max(0.0, deadline - time.monotonic())
                continue
            wait = 0.0  # something arrived: take what is already fetched, then hand over
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    self._on_message_error(err)
                    continue
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                assert topic is not None and partition is not None and offset is not None
                tp = (topic, partition)
                gen = self._book.generation_of(tp)
                if gen is None:
                    continue  # not ours (any more): whoever owns it reads it from the committed offset
                kind = self._handle(msg, topic, partition, offset, tp, gen, out)
                kinds[(topic, kind)] += 1
                nexts[tp] = (gen, offset + 1)
        if self._rebalances != rebalances:
            # Partitions moved during this read: what was read under an older generation is stale.
            out = [item for item in out if self._book.generation_of(item[1]) == item[2]]
        with self._lock:
            self._book.record(nexts)
        for (topic, kind), n in kinds.items():
            metrics.KAFKA_RECORDS.labels(topic, kind).inc(n)
        changes = [c for c, _, _ in out]
        for (table, op), n in Counter((c.table, c.op.value) for c in changes).items():
            metrics.EVENTS_IN.labels(self.name, table, op).inc(n)
        return changes

    def _handle(
        self, msg: Message, topic: str, partition: int, offset: int, tp: TP, gen: int, out: list[tuple[Change, TP, int]]
    ) -> str:
        try:
            decoded = self.decoder.decode(msg.key(), msg.value(), topic=topic, partition=partition, offset=offset)
        except DebeziumDecodeError as exc:
            if self.letters is None:
                raise
            self.letters.undecodable(topic, partition, offset, msg.key(), msg.value(), str(exc))
            metrics.UNDECODABLE_EVENTS.labels(topic).inc()
            log.error("undecodable record dead-lettered", topic=topic, partition=partition, offset=offset, error=exc)
            return "undecodable"
        if decoded.change is not None:
            out.append((decoded.change, tp, gen))
        return decoded.kind

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise KafkaException(self._fatal)

    def _on_message_error(self, err: KafkaError) -> None:
        if err.fatal():
            raise KafkaException(err)
        if err.code() == KafkaError._PARTITION_EOF:
            return
        self._warn("kafka consumer error (librdkafka retries)", err)

    def _on_error(self, err: KafkaError) -> None:
        # Runs inside poll(). Lost brokers are retried by librdkafka; only fatal errors end the session.
        if err.fatal():
            self._fatal = err
        else:
            self._warn("kafka client error (librdkafka retries)", err)

    def _warn(self, what: str, err: KafkaError) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _TRANSIENT_LOG_EVERY_S:
            self._last_warning = now
            log.warning(what, error=err.str(), code=err.name())

    # -- acknowledging -----------------------------------------------------
    def ack(self, position: Position) -> None:
        """Called by the main loop. The commit itself is left to the reader thread: a client
        call from here would block while a rebalance callback runs inside the reader's poll,
        and that callback waits for the main loop (quiesce)."""
        with self._lock:
            offsets = self._book.ack(position.offset)
            self._to_commit.update(offsets)
            self._acked.update(offsets)

    def take_acked(self) -> dict[TP, int]:
        """Acknowledged offsets (next offset to read, per partition) since the last call;
        the reader thread commits them on its next poll."""
        with self._lock:
            out, self._acked = self._acked, {}
        return out

    def _flush_commits(self, consumer: Consumer) -> None:
        with self._lock:
            offsets, self._to_commit = self._to_commit, {}
        if offsets:
            # Partitions are revoked only in this thread (inside poll), so these are still owned.
            self._commit(consumer, offsets, asynchronous=True)

    def _commit(self, consumer: Consumer, offsets: dict[TP, int], *, asynchronous: bool) -> None:
        parts = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        if asynchronous:
            consumer.commit(offsets=parts, asynchronous=True)
        else:
            failed = [tp for tp in consumer.commit(offsets=parts, asynchronous=False) if tp.error is not None]
            if failed:
                raise KafkaException(failed[0].error)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None and err.code() != KafkaError._NO_OFFSET:
            # The offsets stay uncommitted: the next commit or the next owner covers them.
            log.warning("offset commit failed", error=err.str())

    # -- rebalancing (callbacks run inside poll, in the reader thread, or in close) --
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        with self._lock:
            self._book.assign(tps)
            owned = len(self._book.owned())
        self._rebalances += 1
        metrics.KAFKA_REBALANCES.labels("assign").inc()
        metrics.KAFKA_ASSIGNED_PARTITIONS.set(owned)
        log.info("partitions assigned", partitions=_names(tps), owned=owned)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._rebalances += 1
        with self._quiesced(tps), self._lock:
            offsets = self._book.revoke(tps)
            owned = len(self._book.owned())
            for tp in tps:
                self._to_commit.pop(tp, None)  # committed right here, synchronously
            if offsets:
                try:
                    self._commit(consumer, offsets, asynchronous=False)
                except KafkaException as exc:
                    log.warning("commit on revoke failed; the next owner re-reads those records", error=str(exc))
        metrics.KAFKA_REBALANCES.labels("revoke").inc()
        metrics.KAFKA_ASSIGNED_PARTITIONS.set(owned)
        log.info("partitions revoked", partitions=_names(tps), committed=len(offsets), owned=owned)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._rebalances += 1
        with self._quiesced(tps), self._lock:
            self._book.lose(tps)
            owned = len(self._book.owned())
            for tp in tps:
                self._to_commit.pop(tp, None)
        metrics.KAFKA_REBALANCES.labels("lost").inc()
        metrics.KAFKA_ASSIGNED_PARTITIONS.set(owned)
        log.warning("partitions lost (another member owns them now); nothing committed for them", owned=owned)

    def _quiesced(self, tps: list[TP]) -> AbstractContextManager[None]:
        if self._quiesce is None:
            return nullcontext()
        gone = set(tps)
        return self._quiesce(lambda change: tp_of(change) in gone)

    # -- observing ---------------------------------------------------------
    def sample_lag(self) -> None:
        """Sets the consumer-lag gauge: high watermark (as last fetched) minus committed offset."""
        with self._client_lock:
            consumer = self._consumer
            if consumer is None:
                return
            try:
                assigned = consumer.assignment()
                committed = consumer.committed(assigned, timeout=5) if assigned else []
                lags = {}
                for tp in committed:
                    _, high = consumer.get_watermark_offsets(tp, cached=True)
                    if high >= 0:
                        lags[(tp.topic, tp.partition)] = max(0, high - max(tp.offset, 0))
            except (KafkaException, RuntimeError) as exc:
                log.debug("lag sample failed", error=str(exc))
                return
        metrics.KAFKA_CONSUMER_LAG.clear()
        for (topic, partition), lag in lags.items():
            metrics.KAFKA_CONSUMER_LAG.labels(topic, str(partition)).set(lag)


def _names(tps: list[TP]) -> str:
    return ", ".join(f"{t}/{p}" for t, p in sorted(tps))


def open_kafka_source(parts: Parts) -> OpenedSource:
    """Raises StartupError when no broker answers or topics are missing."""
    from replicator.sources.kafka_open import open_kafka

    return open_kafka(parts)
