"""The streaming loop's acknowledgement rules, with a scripted in-memory source."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from replicator.change import Change, Op, Position
from replicator.ops.health import Health
from replicator.pipeline.processor import BatchReport, Interrupted
from replicator.pipeline.runner import Runner


class ScriptedSource:
    """Hands out pre-built reads; `committed` follows the script, like a slot's Commit messages."""

    name = "slot"

    def __init__(self, reads: list[tuple[list[Change], int]]) -> None:
        self.reads = reads
        self.acks: list[int] = []
        self._committed = 0
        self.closed = False

    def start(self) -> None:
        pass

    def read(self, timeout: float, max_changes: int = 1000) -> list[Change]:
        if not self.reads:
            time.sleep(timeout)
            return []
        changes, committed = self.reads.pop(0)
        self._committed = committed
        return changes

    @property
    def committed(self) -> int:
        return self._committed

    def ack(self, position: Position) -> None:
        self.acks.append(position.offset)

    def send_status(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class RecordingProcessor:
    def __init__(self, fail_on: int | None = None) -> None:
        self.stop = threading.Event()
        self.seen: list[int] = []
        self.fail_on = fail_on

    def process(self, changes: Sequence[Change], *, force: bool = False) -> BatchReport:
        for c in changes:
            if c.position.offset == self.fail_on:
                raise Interrupted()
            self.seen.append(c.position.offset)
        return BatchReport(changes=len(changes))


def ch(key: int, lsn: int) -> Change:
    return Change("slot", "public.t", Op.UPDATE, (key,), None, {"id": key}, Position("slot", lsn))


def run_until(runner: Runner, source: ScriptedSource, condition: Any, timeout: float = 5.0) -> None:
    thread = threading.Thread(target=runner.run)
    thread.start()
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    runner.stop.set()
    thread.join(timeout)
    assert not thread.is_alive()


def test_acks_only_committed_transactions_after_processing() -> None:
    # tx 100 complete in the first read; tx 200 split across reads, complete in the second.
    source = ScriptedSource([([ch(1, 100), ch(2, 100), ch(3, 200)], 100), ([ch(4, 200)], 200)])
    processor = RecordingProcessor()
    runner = Runner(source, processor, Health(60), batch_size=2, max_wait_s=0.01)  # type: ignore[arg-type]
    run_until(runner, source, lambda: 200 in source.acks)
    assert processor.seen == [100, 100, 200, 200]
    assert source.acks == sorted(source.acks)
    assert source.acks[-1] == 200
    # tx 200 was never acknowledged before its last change was processed
    assert all(a <= 100 for a in source.acks[:-1])
    assert source.closed


def test_interrupted_batch_is_not_acknowledged() -> None:
    source = ScriptedSource([([ch(1, 100)], 100), ([ch(2, 200)], 200)])
    processor = RecordingProcessor(fail_on=200)
    runner = Runner(source, processor, Health(60), batch_size=1, max_wait_s=0.01)  # type: ignore[arg-type]
    run_until(runner, source, lambda: runner.stop.is_set())
    assert 200 not in source.acks
    assert processor.seen == [100]


def test_backpressure_bounds_the_queue() -> None:
    many = [([ch(i, 10 + i)], 10 + i) for i in range(50)]
    source = ScriptedSource(many)
    gate = threading.Event()

    class Slow(RecordingProcessor):
        def process(self, changes: Sequence[Change], *, force: bool = False) -> BatchReport:
            gate.wait(5)
            return super().process(changes)

    processor = Slow()
    runner = Runner(source, processor, Health(60), batch_size=1, max_wait_s=0.0, queue_size=4)  # type: ignore[arg-type]
    thread = threading.Thread(target=runner.run)
    thread.start()
    time.sleep(0.3)
    assert runner.queue.qsize() <= 4
    assert len(source.reads) > 40  # the reader is held back, not buffering everything
    gate.set()
    deadline = time.monotonic() + 5
    while source.reads and time.monotonic() < deadline:
        time.sleep(0.01)
    runner.stop.set()
    thread.join(5)
    assert processor.seen[:5] == [10, 11, 12, 13, 14]


def test_health_reports_a_stall() -> None:
    health = Health(stall_timeout_s=0.05)
    health.source_connected()
    health.set_pending(0)
    assert health.verdict().healthy
    health.set_pending(5)
    time.sleep(0.1)
    verdict = health.verdict()
    assert not verdict.healthy
    assert "stalled: 5 events pending" in verdict.reasons[0]
    health.acked()
    assert health.verdict().healthy


def test_lost_source_reconnects_and_redelivered_changes_are_processed() -> None:
    class FlakySource(ScriptedSource):
        def __init__(self) -> None:
            super().__init__([([ch(1, 100)], 100)])
            self.starts = 0

        def start(self) -> None:
            self.starts += 1
            if self.starts == 2:
                # The slot replays from its confirmed position after a reconnect.
                replay = [] if 100 in self.acks else [ch(1, 100)]
                self.reads = [([*replay, ch(2, 200)], 200)]

        def read(self, timeout: float, max_changes: int = 1000) -> list[Change]:
            if self.starts == 1 and not self.reads:
                raise ConnectionError("server closed the connection unexpectedly")
            return super().read(timeout, max_changes)

    source = FlakySource()
    processor = RecordingProcessor()
    health = Health(60)
    runner = Runner(source, processor, health, batch_size=10, max_wait_s=0.01)  # type: ignore[arg-type]
    run_until(runner, source, lambda: 200 in source.acks)
    assert source.starts == 2
    # 100 may have been applied before the loss or only after the replay: never skipped, never acked early.
    assert processor.seen[-2:] == [100, 200] or processor.seen == [100, 200]
    assert 100 in processor.seen and processor.seen.index(100) < processor.seen.index(200)
    assert source.acks[-1] == 200 and source.acks == sorted(source.acks)


class KeyRecorder(RecordingProcessor):
    """Records keys; the first batch waits for `gate`."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.in_first_batch = threading.Event()
        self.keys: list[int] = []

    def process(self, changes: Sequence[Change], *, force: bool = False) -> BatchReport:
        if not self.keys:
            self.in_first_batch.set()
            self.gate.wait(5)
        self.keys.extend(c.key[0] for c in changes)
        return super().process(changes)


def test_quiesce_waits_for_the_batch_in_flight_drops_queued_changes_and_holds_the_loop() -> None:
    source = ScriptedSource([([ch(1, 10)], 10), ([ch(2, 20), ch(3, 20), ch(4, 20)], 20)])
    gate = threading.Event()
    processor = KeyRecorder(gate)
    runner = Runner(source, processor, Health(60), batch_size=1, max_wait_s=0.0)  # type: ignore[arg-type]
    thread = threading.Thread(target=runner.run)
    thread.start()
    # The first batch must be in flight and the rest queued before the revoke, whatever the
    # threads' timing: a queue filled before the loop took its first batch proves nothing here.
    assert processor.in_first_batch.wait(5)
    deadline = time.monotonic() + 5
    while runner.queue.qsize() < 4 and time.monotonic() < deadline:  # ch2..ch4 and the watermark 20
        time.sleep(0.01)
    assert runner.queue.qsize() >= 4
    entered, release = threading.Event(), threading.Event()

    def revoke() -> None:
        with runner.quiesce(lambda c: c.key[0] in (2, 4)):
            entered.set()
            release.wait(5)

    revoker = threading.Thread(target=revoke)
    revoker.start()
    try:
        time.sleep(0.2)
        assert not entered.is_set(), "quiesce must wait for the batch in flight"
        gate.set()
        assert entered.wait(5)
        assert processor.keys == [1] and source.acks == [10]  # the batch in flight finished and was acknowledged
        time.sleep(0.3)
        assert processor.keys == [1], "the main loop must stay parked while quiesced"
        release.set()
        revoker.join(5)
        deadline = time.monotonic() + 5
        while 20 not in source.acks and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        gate.set()
        release.set()
        runner.stop.set()
        thread.join(5)
    assert processor.keys == [1, 3]  # 2 and 4 were dropped from the queue, never processed
    assert source.acks == [10, 20]


def test_quiesce_without_a_running_loop_filters_the_queue_at_once() -> None:
    source = ScriptedSource([])
    runner = Runner(source, RecordingProcessor(), Health(60))  # type: ignore[arg-type]
    for key in (1, 2, 3):
        runner.queue.put(ch(key, 10))
    with runner.quiesce(lambda c: c.key[0] == 2):
        left = [runner.queue.get_nowait().key[0] for _ in range(runner.queue.qsize())]  # type: ignore[union-attr]
    assert left == [1, 3]


def test_runner_attaches_itself_to_a_source_that_asks() -> None:
    class Attaching(ScriptedSource):
        hook: Any = None

        def attach(self, quiesce: Any) -> None:
            self.hook = quiesce

    source = Attaching([])
    runner = Runner(source, RecordingProcessor(), Health(60))  # type: ignore[arg-type]
    assert source.hook == runner.quiesce


def test_a_full_batch_runs_on_to_the_end_of_its_read() -> None:
    # Reads of up to batch_size changes, each followed by its watermark: a batch that stopped
    # mid-read would leave processed work unacknowledged until the next batch.
    source = ScriptedSource([([ch(1, 10), ch(2, 10), ch(3, 10)], 10), ([ch(4, 20)], 20)])
    batches: list[list[int]] = []

    class Batches(RecordingProcessor):
        def process(self, changes: Sequence[Change], *, force: bool = False) -> BatchReport:
            batches.append([c.key[0] for c in changes])
            return super().process(changes)

    runner = Runner(source, Batches(), Health(60), batch_size=2, max_wait_s=0.05)  # type: ignore[arg-type]
    run_until(runner, source, lambda: 20 in source.acks)
    assert batches[0] == [1, 2, 3]
    assert source.acks == [10, 20]
