"""What /healthz reports: not "the process is alive" but "work is moving"."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from replicator.ops import metrics


@dataclass
class Verdict:
    healthy: bool
    reasons: list[str]
    pending: int
    seconds_since_progress: float


class Health:
    def __init__(self, stall_timeout_s: float, name: str = "") -> None:
        self.stall_timeout_s = stall_timeout_s
        self.name = name  # a part of the service (e.g. "crm->erp"); the main pipeline has none
        self._children: list[Health] = []
        self._lock = threading.Lock()
        self._pending = 0
        self._waiting = 0
        self._last_progress = time.monotonic()
        self._source_ok = False
        self._source_error: str | None = None

    def child(self, name: str) -> Health:
        """Health of another pipeline in the same service; its problems fail this verdict too."""
        part = Health(self.stall_timeout_s, name)
        with self._lock:
            self._children.append(part)
        return part

    def source_connected(self) -> None:
        with self._lock:
            self._source_ok, self._source_error = True, None

    def source_failed(self, error: str) -> None:
        with self._lock:
            self._source_ok, self._source_error = False, error

    def set_waiting(self, n: int) -> None:
        """Work stored outside the pipeline's queue (e.g. an inbox table), counted as pending."""
        with self._lock:
            self._waiting = n

    def set_pending(self, n: int) -> None:
        with self._lock:
            if n == 0:
                # Nothing waiting is progress too: an idle pipeline is not a stalled one.
                self._last_progress = time.monotonic()
            self._pending = n
        if not self.name:
            metrics.PENDING_EVENTS.set(n)

    def acked(self) -> None:
        with self._lock:
            self._last_progress = time.monotonic()
        if not self.name:
            metrics.LAST_ACK_TIMESTAMP.set(time.time())

    def verdict(self) -> Verdict:
        with self._lock:
            idle_for = time.monotonic() - self._last_progress
            reasons = []
            if not self._source_ok:
                reasons.append(f"source not connected: {self._source_error or 'starting'}")
            pending = self._pending + self._waiting
            if pending > 0 and idle_for > self.stall_timeout_s:
                reasons.append(
                    f"stalled: {pending} events pending and nothing acknowledged for {idle_for:.0f}s "
                    f"(limit {self.stall_timeout_s:.0f}s)"
                )
            children = list(self._children)
        for part in children:
            seen = part.verdict()
            reasons += [f"{part.name}: {r}" for r in seen.reasons]
            pending += seen.pending
        verdict = Verdict(not reasons, reasons, pending, idle_for)
        if not self.name:
            metrics.HEALTHY.set(1 if verdict.healthy else 0)
        return verdict
