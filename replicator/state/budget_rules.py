"""The arithmetic of the CRM API budget, free of storage and of time: every function takes
the state and `now` (unix seconds) and decides. `replicator.state.budget` runs it against
PostgreSQL (shared by processes) or memory (one process).

The rules:

- **Burst window.** A log of recent grant times; a request may go when fewer than
  `burst * factor` grants lie in the last `window_s + margin_s`. A log, not a token bucket:
  it is what the vendors count (HubSpot: "requests per 10 seconds", API usage guidelines,
  developers.hubspot.com/docs/guides/apps/api-usage/usage-details), so it is exact.
- **Daily quota** over a rolling 24 h, counted in one-minute buckets. Salesforce counts its
  allocation over the preceding 24 hours ("calls are blocked until usage for the preceding
  24 hours drops below the limit", Salesforce Help, System Overview: API Usage; API Request
  Limits and Allocations). HubSpot resets its daily limit at midnight in the account's time
  zone; a rolling 24 h never exceeds that either and needs no time zone setting. A bucket
  counts until its *end* has left the 24 h, which errs on the safe side by under a minute.
- **AIMD.** A 429 halves the factor (at most once per window: the requests already in flight
  when it came answer 429 too, and are one congestion signal, not many), down to `FACTOR_FLOOR`;
  each full window without a 429 adds `FACTOR_STEP` back, up to 1.0.
- **Retry-After** sets `blocked_until`; nobody is granted before it.
- **Priorities.** A LIVE acquirer that has to wait registers in `live_waiters` with an expiry
  it refreshes while waiting; BACKFILL is never granted while any registration is current. An
  expiry, not a counter, so a killed process cannot leave backfill blocked for good. BACKFILL
  also never takes the last `live_reserve` share of a window or of the daily quota, so a live
  change arriving behind a backfill finds a slot at once and the day's last calls stay for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

FACTOR_DECREASE = 0.5
FACTOR_FLOOR = 0.1
FACTOR_STEP = 0.1
DAY_S = 86_400.0
DAILY_BUCKET_S = 60
# How long a LIVE waiter's registration outlives its planned wake-up: long enough to be
# scheduled and take the lock on a loaded host, short enough that a crashed waiter does not
# hold backfill up for noticeable time.
LIVE_GRACE_S = 0.5
# A BACKFILL acquirer held back by a live waiter looks again no sooner than this.
BACKFILL_POLL_S = 0.05


class Priority(StrEnum):
    LIVE = "live"
    BACKFILL = "backfill"


@dataclass(frozen=True)
class BudgetLimits:
    """One credential's allowance, as the vendor states it."""

    burst: int | None  # requests allowed in any rolling window (None: no burst limit)
    window_s: float  # the window, e.g. 10.0
    daily: int | None  # requests per rolling 24 h (None: no daily quota)
    # Share of each window and of the daily quota that BACKFILL never takes.
    live_reserve: float = 0.05

    def __post_init__(self) -> None:
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"budget burst must be at least 1 request per window, got {self.burst}")
        if self.window_s <= 0:
            raise ValueError(f"budget window_s must be positive seconds, got {self.window_s}")
        if self.daily is not None and self.daily < 1:
            raise ValueError(f"budget daily must be at least 1 or None for no daily quota, got {self.daily}")
        if not 0.0 <= self.live_reserve < 1.0:
            raise ValueError(f"budget live_reserve is a share in [0, 1), got {self.live_reserve}")


@dataclass
class BudgetState:
    """What all processes sharing one credential agree on (one row in PostgreSQL)."""

    factor: float = 1.0
    blocked_until: float = 0.0
    last_429_at: float = 0.0
    last_decrease_at: float = 0.0
    increased_at: float = 0.0  # where the current additive-increase step started
    grants: list[float] = field(default_factory=list)  # grant times in the current window, ascending
    live_waiters: dict[str, float] = field(default_factory=dict)  # waiter -> registration expiry
    daily_used: int = 0


@dataclass(frozen=True)
class Verdict:
    """`grant`; `wait` `delay` seconds, then ask again; or `exhausted` for `delay` seconds."""

    kind: str  # grant, wait, exhausted
    delay: float = 0.0
    reason: str = ""


GRANT = Verdict("grant")


def window_allowance(limits: BudgetLimits, factor: float, priority: Priority) -> int | None:
    """Grants `priority` may find in the window and still be granted; None: no burst limit."""
    if limits.burst is None:
        return None
    allowed = max(1, math.floor(limits.burst * factor + 1e-9))
    if priority is Priority.BACKFILL:
        allowed = max(1, math.floor(allowed * (1.0 - limits.live_reserve) + 1e-9))
    return allowed


def daily_allowance(limits: BudgetLimits, priority: Priority) -> int | None:
    if limits.daily is None or priority is Priority.LIVE:
        return limits.daily
    return max(1, math.floor(limits.daily * (1.0 - limits.live_reserve) + 1e-9))


def settle(state: BudgetState, limits: BudgetLimits, now: float, margin_s: float) -> None:
    """Bring the state up to `now`: additive increase for each quiet window, forget grants
    that left the window and waiter registrations that expired."""
    if state.factor < 1.0:
        since = max(state.last_429_at, state.increased_at)
        quiet_windows = math.floor((now - since) / limits.window_s)
        if quiet_windows > 0:
            state.factor = min(1.0, state.factor + FACTOR_STEP * quiet_windows)
            state.increased_at = since + quiet_windows * limits.window_s
    horizon = now - (limits.window_s + margin_s)
    state.grants = sorted(t for t in state.grants if t > horizon)
    state.live_waiters = {w: until for w, until in state.live_waiters.items() if until > now}


def throttled(state: BudgetState, limits: BudgetLimits, now: float, retry_after: float | None) -> bool:
    """A 429 arrived: multiplicative decrease (once per window) and Retry-After. True if decreased."""
    state.last_429_at = max(state.last_429_at, now)
    if retry_after is not None and retry_after > 0:
        state.blocked_until = max(state.blocked_until, now + retry_after)
    if now - state.last_decrease_at < limits.window_s:
        return False
    state.factor = max(FACTOR_FLOOR, state.factor * FACTOR_DECREASE)
    state.last_decrease_at = now
    return True


def decide(state: BudgetState, limits: BudgetLimits, now: float, priority: Priority, margin_s: float) -> Verdict:
    """May one request of `priority` go now? `state` must be settled at `now`."""
    if state.blocked_until > now:
        return Verdict("wait", state.blocked_until - now, "the CRM's Retry-After")
    daily = daily_allowance(limits, priority)
    if daily is not None and state.daily_used >= daily:
        return Verdict("exhausted", 0.0, f"daily quota used: {state.daily_used} of {daily} for {priority} requests")
    if priority is Priority.BACKFILL and state.live_waiters:
        # Look again when the first live waiter is due to be granted (its registration's planned
        # wake-up): sooner only finds it still waiting, and each look is a transaction on the row
        # every process shares. A waiter that died is looked past once its registration expires.
        due = min(state.live_waiters.values()) - LIVE_GRACE_S
        return Verdict("wait", max(BACKFILL_POLL_S, due - now), "live requests are waiting")
    allowed = window_allowance(limits, state.factor, priority)
    if allowed is None or len(state.grants) < allowed:
        return GRANT
    # The grant whose expiry brings the count below `allowed`.
    leaving = state.grants[len(state.grants) - allowed]
    return Verdict("wait", max(0.0, leaving + limits.window_s + margin_s - now), "burst window full")


def daily_bucket(at: float) -> int:
    return math.floor(at / DAILY_BUCKET_S)


def oldest_live_bucket(now: float) -> int:
    """Buckets before this one have ended more than 24 h ago and no longer count."""
    return daily_bucket(now - DAY_S)


def daily_reopens_in(buckets: Sequence[tuple[int, int]], used: int, allowance: int, now: float) -> float:
    """Seconds until fewer than `allowance` grants lie in the last 24 h, given the daily
    buckets (bucket, grants) oldest first."""
    must_expire = used - allowance + 1
    for bucket, grants in buckets:
        must_expire -= grants
        if must_expire <= 0:
            return max(0.0, (bucket + 1) * DAILY_BUCKET_S + DAY_S - now)
    return DAY_S
