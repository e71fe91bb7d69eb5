"""Which Kafka offsets may be committed: pure bookkeeping, no client.

Reads are numbered by a per-process sequence. After each read the source records,
per partition, the offset after the last record it handed out or skipped, tagged
with the generation in which it owned the partition. The pipeline acknowledges a
sequence number once every change read up to it is applied; `ack` then releases,
per partition still owned in that same generation, the highest recorded offset.

A partition that is revoked and assigned again gets a new generation, so what was
read under the old one (and dropped from the pipeline's queue) can never be
committed for it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

TP = tuple[str, int]  # (topic, partition)


class OffsetBook:
    def __init__(self) -> None:
        self._seq = 0
        self._generation = 0
        self._owned: dict[TP, int] = {}  # partition -> generation it was assigned in
        self._reads: deque[tuple[int, dict[TP, tuple[int, int]]]] = deque()
        self._acked: dict[TP, int] = {}  # next offset after the acknowledged records
        self._sent: dict[TP, int] = {}  # highest offset handed out for committing

    @property
    def seq(self) -> int:
        """The sequence number of the last recorded read (0: none yet)."""
        return self._seq

    def owned(self) -> dict[TP, int]:
        return dict(self._owned)

    def generation_of(self, tp: TP) -> int | None:
        return self._owned.get(tp)

    def assign(self, tps: Iterable[TP]) -> int:
        """Partitions joining; returns their generation. Consumption restarts at the
        committed offset, so nothing acknowledged before carries over."""
        self._generation += 1
        for tp in tps:
            self._owned[tp] = self._generation
            self._acked.pop(tp, None)
            self._sent.pop(tp, None)
        return self._generation

    def record(self, nexts: Mapping[TP, tuple[int, int]]) -> int:
        """A read consumed, per partition, records up to `next - 1` in generation `gen`
        (`nexts[tp] = (gen, next)`). Returns the read's sequence number."""
        self._seq += 1
        live = {tp: gn for tp, gn in nexts.items() if self._owned.get(tp) == gn[0]}
        if live:
            self._reads.append((self._seq, live))
        return self._seq

    def ack(self, seq: int) -> dict[TP, int]:
        """Everything read up to `seq` is applied: the offsets to commit now (only those
        that moved since the last commit, only for partitions still owned)."""
        while self._reads and self._reads[0][0] <= seq:
            _, entries = self._reads.popleft()
            for tp, (gen, nxt) in entries.items():
                if self._owned.get(tp) == gen and nxt > self._acked.get(tp, -1):
                    self._acked[tp] = nxt
        out = {tp: off for tp, off in self._acked.items() if off > self._sent.get(tp, -1)}
        self._sent.update(out)
        return out

    def revoke(self, tps: Iterable[TP]) -> dict[TP, int]:
        """Partitions leaving cleanly: their acknowledged offsets (to commit synchronously
        before they go, even if sent before: an async commit may not have landed)."""
        out: dict[TP, int] = {}
        for tp in tps:
            if tp in self._acked:
                out[tp] = self._acked[tp]
            self._forget(tp)
        return out

    def lose(self, tps: Iterable[TP]) -> None:
        """Partitions already owned by someone else: commit nothing for them."""
        for tp in tps:
            self._forget(tp)

    def acked(self) -> dict[TP, int]:
        """Acknowledged offsets of every owned partition (for the final commit at close)."""
        return {tp: off for tp, off in self._acked.items() if tp in self._owned}

    def reset(self) -> None:
        """A new consumer session: nothing owned. Sequence and generations keep counting."""
        self._owned.clear()
        self._reads.clear()
        self._acked.clear()
        self._sent.clear()

    def _forget(self, tp: TP) -> None:
        self._owned.pop(tp, None)
        self._acked.pop(tp, None)
        self._sent.pop(tp, None)
