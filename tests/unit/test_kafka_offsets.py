"""Offset bookkeeping of the Kafka source: what may be committed, and when.

A model of the pipeline drives the book: partitions are assigned, revoked or lost,
reads hand records to a queue (tombstones only advance the offset), the main loop
processes the queue in order and acknowledges each read's sequence number, and a
revoke drops the revoked partitions' queued records the way `Runner.quiesce` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from replicator.sources.kafka_offsets import TP, OffsetBook

TPS: list[TP] = [("a", 0), ("a", 1), ("b", 0)]


def is_tombstone(offset: int) -> bool:
    return offset % 5 == 3


@dataclass
class Model:
    book: OffsetBook = field(default_factory=OffsetBook)
    broker: dict[TP, int] = field(default_factory=lambda: dict.fromkeys(TPS, 0))  # committed offsets
    position: dict[TP, int] = field(default_factory=dict)  # next offset the consumer fetches
    gen: dict[TP, int] = field(default_factory=dict)
    recorded: dict[TP, int] = field(default_factory=dict)  # highest next offset read in the current generation
    queue: list[tuple[str, TP, int]] = field(default_factory=list)  # ("change", tp, offset) | ("mark", tp, seq)
    processed: set[tuple[TP, int]] = field(default_factory=set)
    commits: int = 0

    def commit(self, offsets: dict[TP, int], owned: dict[TP, int]) -> None:
        for tp, off in offsets.items():
            assert tp in owned, f"commit for {tp}, which is not owned"
            assert off <= self.recorded.get(tp, -1), f"commit {tp}@{off} past what this generation read"
            for o in range(self.broker[tp], off):
                assert is_tombstone(o) or (tp, o) in self.processed, f"commit {tp}@{off} skips unprocessed {o}"
            assert off >= self.broker[tp], f"commit of {tp} went backwards: {self.broker[tp]} -> {off}"
            self.broker[tp] = off
            self.commits += 1

    def assign(self, tps: list[TP]) -> None:
        fresh = [tp for tp in tps if tp not in self.gen]
        if not fresh:
            return
        g = self.book.assign(fresh)
        for tp in fresh:
            self.gen[tp] = g
            self.position[tp] = self.broker[tp]  # Kafka resumes at the committed offset
            self.recorded.pop(tp, None)

    def leave(self, tps: list[TP], clean: bool) -> None:
        gone = [tp for tp in tps if tp in self.gen]
        if not gone:
            return
        # Runner.quiesce: queued changes of the leaving partitions are dropped.
        self.queue = [item for item in self.queue if item[0] == "mark" or item[1] not in gone]
        if clean:
            owned = self.book.owned()
            self.commit(self.book.revoke(gone), owned)
        else:
            self.book.lose(gone)
        for tp in gone:
            del self.gen[tp]
            del self.position[tp]
            self.recorded.pop(tp, None)

    def read(self, counts: dict[TP, int], stale: bool) -> None:
        nexts: dict[TP, tuple[int, int]] = {}
        for tp, n in counts.items():
            if tp not in self.gen or n == 0:
                continue
            start = self.position[tp]
            if stale:
                # A read tagged with an older generation (a rebalance raced it): the book must ignore it.
                nexts[tp] = (self.gen[tp] - 1, start + n)
                continue
            for o in range(start, start + n):
                if not is_tombstone(o):
                    self.queue.append(("change", tp, o))
            self.position[tp] = start + n
            self.recorded[tp] = start + n
            nexts[tp] = (self.gen[tp], start + n)
        seq = self.book.record(nexts)
        self.queue.append(("mark", ("", 0), seq))

    def process(self, n: int) -> None:
        for _ in range(min(n, len(self.queue))):
            kind, tp, value = self.queue.pop(0)
            if kind == "change":
                assert self.gen.get(tp) is not None, "a revoked partition's change was processed"
                self.processed.add((tp, value))
            else:
                self.commit(self.book.ack(value), self.book.owned())


subsets = st.lists(st.sampled_from(TPS), unique=True, min_size=1)
steps = st.one_of(
    st.tuples(st.just("assign"), subsets),
    st.tuples(st.just("revoke"), subsets),
    st.tuples(st.just("lose"), subsets),
    st.tuples(st.just("read"), st.dictionaries(st.sampled_from(TPS), st.integers(0, 6)), st.booleans()),
    st.tuples(st.just("process"), st.integers(1, 12)),
)


def run(model: Model, script: list[tuple]) -> None:  # type: ignore[type-arg]
    for step in script:
        if step[0] == "assign":
            model.assign(step[1])
        elif step[0] == "revoke":
            model.leave(step[1], clean=True)
        elif step[0] == "lose":
            model.leave(step[1], clean=False)
        elif step[0] == "read":
            model.read(step[1], stale=step[2])
        else:
            model.process(step[1])


@given(st.lists(steps, max_size=60))
def test_no_interleaving_commits_past_unprocessed_work_or_for_a_revoked_generation(script: list[tuple]) -> None:  # type: ignore[type-arg]
    model = Model()
    model.assign(list(TPS))
    run(model, script)
    # Liveness: once the queue is drained, every owned partition is committable up to what it read.
    model.process(len(model.queue))
    for tp, nxt in model.recorded.items():
        assert model.book.acked().get(tp) == nxt or model.broker[tp] == nxt


def test_ack_commits_only_reads_up_to_the_acknowledged_sequence() -> None:
    book = OffsetBook()
    g = book.assign([("t", 0), ("t", 1)])
    s1 = book.record({("t", 0): (g, 5)})
    s2 = book.record({("t", 0): (g, 9), ("t", 1): (g, 3)})
    assert book.ack(s1) == {("t", 0): 5}
    assert book.ack(s1) == {}  # nothing new
    assert book.ack(s2) == {("t", 0): 9, ("t", 1): 3}
    assert book.seq == s2


def test_revoked_then_reassigned_partition_ignores_reads_of_the_old_generation() -> None:
    book = OffsetBook()
    g1 = book.assign([("t", 0)])
    s1 = book.record({("t", 0): (g1, 10)})
    assert book.revoke([("t", 0)]) == {}  # nothing acknowledged yet: nothing to commit
    g2 = book.assign([("t", 0)])
    assert g2 != g1
    s2 = book.record({("t", 0): (g2, 4)})
    assert book.ack(s1) == {}  # the old generation's read never commits
    assert book.ack(s2) == {("t", 0): 4}


def test_revoke_returns_acknowledged_offsets_even_when_already_sent() -> None:
    book = OffsetBook()
    g = book.assign([("t", 0), ("t", 1)])
    s = book.record({("t", 0): (g, 7), ("t", 1): (g, 2)})
    assert book.ack(s) == {("t", 0): 7, ("t", 1): 2}
    # An async commit may not have landed: a clean revoke commits again, synchronously.
    assert book.revoke([("t", 0)]) == {("t", 0): 7}
    assert book.acked() == {("t", 1): 2}
    book.lose([("t", 1)])
    assert book.acked() == {}


def test_reset_keeps_counting_sequences_and_generations() -> None:
    book = OffsetBook()
    g1 = book.assign([("t", 0)])
    s1 = book.record({("t", 0): (g1, 1)})
    book.reset()
    assert book.owned() == {}
    g2 = book.assign([("t", 0)])
    s2 = book.record({("t", 0): (g2, 1)})
    assert g2 > g1 and s2 > s1
