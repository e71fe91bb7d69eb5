"""What both CRM pollers share: the loop, the checkpoint stream per object, and the inbox
notification a change becomes. How a poll finds changes is each poller's own."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import structlog

from replicator.ops import metrics
from replicator.state.inbox import Inbox
from replicator.state.store import StateStore

log = structlog.get_logger()


def epoch_us(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000)


class PollLoop:
    """Runs ``poll_once()`` every ``interval_s``; a subclass scans one object in ``_poll_object()``."""

    def __init__(
        self, crm: str, inbox: Inbox, state_dsn: str, *, objects: list[str], interval_s: float, lookback_s: float
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"poll interval_s must be > 0, got {interval_s}")
        if lookback_s < 0:
            raise ValueError(f"poll lookback_s must be >= 0, got {lookback_s}")
        self.crm = crm
        self.inbox = inbox
        self.objects = list(objects)
        self.interval_s = interval_s
        self._store = StateStore(state_dsn)

    def close(self) -> None:
        self._store.close()

    def stream(self, object: str) -> str:
        return f"poll:{self.crm}:{object}"

    def run(self, stop: threading.Event) -> None:
        """Poll every interval_s until `stop` is set; a failed poll is logged and tried again next time."""
        while not stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:
                log.warning("crm poll failed; trying again at the next interval", crm=self.crm, error=str(exc))
            stop.wait(self.interval_s)

    def poll_once(self) -> int:
        """One pass over every object; the number of notifications added to the inbox."""
        return sum(self._poll_object(obj) for obj in self.objects)

    def _poll_object(self, object: str) -> int:
        raise NotImplementedError

    def _checkpoint(self, object: str) -> str | None:
        """The position saved for `object`'s stream, if any."""
        return self._position(self.stream(object))

    def _position(self, stream: str) -> str | None:
        for row in self._store.checkpoints():
            if row["stream"] == stream:
                return str(row["position"])
        return None

    def _notify(self, object: str, crm_id: str, event: str, delivery_id: str, **extra: Any) -> int:
        """Add one notification to the inbox; 1 when it is new, 0 when the inbox had it already."""
        payload = {"event": event, "data": {"id": crm_id}, "object": object, **extra}
        if not self.inbox.add(
            crm=self.crm, delivery_id=delivery_id, event=event, object=object, crm_id=crm_id, payload=payload
        ):
            return 0
        metrics.CRM_POLLED.labels(self.crm, object).inc()
        return 1
