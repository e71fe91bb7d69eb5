"""One CRM API budget per credential, shared by every replicator process that uses it.

Connectors call `budget.acquire(priority)` before each HTTP request and
`budget.report(status, retry_after)` after it. Vendors limit a credential, not a process:
HubSpot private apps get e.g. 190 requests per rolling 10 s plus a daily quota (API usage
guidelines, developers.hubspot.com/docs/guides/apps/api-usage/usage-details); Salesforce
counts a rolling 24 h allocation per org (API Request Limits and Allocations). A consumer
group and a backfill running beside the service therefore have to draw from one budget.

Why PostgreSQL: every replicator process already holds a connection to the state store, it
is transactional, and it needs no new infrastructure (no Redis to run, secure and monitor).
Each grant is one short transaction on one row per credential, locked with
`SELECT ... FOR UPDATE`: processes are serialised exactly, so the burst limit holds across
them and not merely per process. The cost is one short transaction (six statements on one
row; 1-2 ms measured on a busy two-core host with a local server) per CRM request: at the
~20 requests/s the vendors allow that is a few percent of one core, and nothing beside the
HTTP request it guards.

Grant times come from the processes' clocks (`clock`, time.time): processes on different
hosts must keep them in sync (NTP); a skew of a few milliseconds is inside `margin_s` (2 % of
the window, at least 50 ms), the amount the window is widened by because the CRM counts on
arrival, slightly after our grant.

The budget counts what it grants, and corrects that count from the CRM's own: HubSpot and
Salesforce report the credential's daily usage on every answer (`observe_daily`). Requests the
CRM counted beyond our grants were made by something else on the same credential (another
integration, a script); they join the daily count, so the quota is not found exhausted by a
refusal from the CRM. The count is only ever raised from the CRM's figure, never lowered: an
answer overtaken on the way reports an older figure, and HubSpot's day ends at midnight while
ours rolls over 24 h.

The rules themselves (window log, daily buckets, AIMD, priorities) are in
`replicator.state.budget_rules`; the storage in `replicator.state.budget_store`.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Protocol

import psycopg
import structlog

from replicator.ops import metrics
from replicator.state.budget_rules import (
    LIVE_GRACE_S,
    BudgetLimits,
    BudgetState,
    Priority,
    Verdict,
    daily_allowance,
    daily_reopens_in,
    decide,
    settle,
    throttled,
)
from replicator.state.budget_store import BudgetStore, MemoryStore, PostgresStore

__all__ = [
    "Budget",
    "BudgetExhausted",
    "BudgetLimits",
    "BudgetUnavailable",
    "LocalBudget",
    "Priority",
    "SharedBudget",
    "UnlimitedBudget",
    "budget_key",
]

log = structlog.get_logger()

# The least a waiter sleeps, so a rounding error never turns waiting into spinning.
_MIN_SLEEP_S = 0.001


class BudgetExhausted(Exception):
    """No request may go within the caller's wait limit: the daily quota is used up, the CRM
    asked for a longer pause (Retry-After), or the queue is longer than `max_wait_s`.
    `retry_after`: seconds until a request may go, as far as the budget knows."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BudgetUnavailable(BudgetExhausted):
    """The state store holding the shared budget could not be reached; retry shortly."""


class Budget(Protocol):
    def acquire(self, priority: Priority = Priority.LIVE, *, max_wait_s: float = 60.0) -> None:
        """Block until one request may be sent. Raises BudgetExhausted when the daily quota is
        gone (or when waiting would exceed max_wait_s because of it)."""

    def report(self, status: int, retry_after: float | None = None) -> None:
        """After each response (status 0 = no response): 429 -> multiplicative decrease and, with
        Retry-After, nobody sends before it passes; success -> additive increase.

        A `retry_after` given with any other status (a 503's Retry-After, a quota error's wait)
        also blocks everyone until it passes, without slowing down afterwards. Quiet windows restore
        the share of the limit by themselves; a success report only brings that into the gauges
        sooner (while the share is below 1, at most once a window)."""

    def observe_daily(self, used: int) -> None:
        """The CRM's own count of the credential's requests in its daily period, as an answer
        reported it. Requests no replicator process was granted (another integration on the
        same credential, or grants a state-store crash forgot) are added to the count."""

    def close(self) -> None:
        """Release the state-store connection (the sink that holds the budget closes it)."""


class UnlimitedBudget:
    """No limit at all: for BottleCRM (self-hosted, unmetered) and tests."""

    def acquire(self, priority: Priority = Priority.LIVE, *, max_wait_s: float = 60.0) -> None:
        return None

    def report(self, status: int, retry_after: float | None = None) -> None:
        return None

    def observe_daily(self, used: int) -> None:
        return None

    def close(self) -> None:
        return None


def budget_key(crm: str, *identity: str) -> str:
    """Stable key for a credential (sha256 of crm kind + e.g. URL + token/client id), never the secret itself.

    Readable prefix, so ops can tell the rows of `replicator.api_budget` apart."""
    digest = hashlib.sha256("\x00".join((crm, *identity)).encode()).hexdigest()
    return f"{crm}:{digest[:32]}"


class _Gate:
    """acquire/report over a store: the waiting loop, the registration of live waiters, metrics."""

    def __init__(
        self,
        store: BudgetStore,
        limits: BudgetLimits,
        *,
        crm: str,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        margin_s: float | None,
    ) -> None:
        self.limits = limits
        self.crm = crm
        self._store = store
        self._clock = clock
        self._sleep = sleep
        # The CRM counts a request when it arrives, a little after our grant, and requests overtake
        # each other on the way: 2 % of the window (at least 50 ms) absorbs that jitter on a busy
        # host, for 2 % of the limit. A measured 0.05 s alone drew a 429 in a minute at 190 per 10 s.
        self._margin_s = margin_s if margin_s is not None else max(0.05, 0.02 * limits.window_s)
        # The factor as last seen, and when: a success report needs a transaction only while the
        # factor is below 1, and then at most once a window (acquire settles it as well).
        self._factor_seen = 1.0
        self._seen_at = 0.0
        # The daily count as last seen: a CRM's count within one burst of it is explained by other
        # processes' grants since then, and needs no transaction to check.
        self._daily_seen = 0
        self._foreign = metrics.CRM_BUDGET_FOREIGN.labels(crm)
        self._factor_gauge = metrics.CRM_BUDGET_FACTOR.labels(crm)
        self._utilisation_gauge = metrics.CRM_BUDGET_WINDOW_UTILISATION.labels(crm)
        self._daily_gauge = metrics.CRM_BUDGET_DAILY_USED.labels(crm)
        self._throttled = metrics.CRM_BUDGET_THROTTLED.labels(crm)
        self._granted = {p: metrics.CRM_BUDGET_GRANTED.labels(crm, p.value) for p in Priority}
        self._waited = {p: metrics.CRM_BUDGET_WAIT.labels(crm, p.value) for p in Priority}
        self._exhausted = {p: metrics.CRM_BUDGET_EXHAUSTED.labels(crm, p.value) for p in Priority}
        if limits.burst is not None:
            metrics.CRM_BUDGET_LIMIT.labels(crm).set(limits.burst / limits.window_s)

    def acquire(self, priority: Priority = Priority.LIVE, *, max_wait_s: float = 60.0) -> None:
        started = self._clock()
        deadline = started + max_wait_s
        waiter = uuid.uuid4().hex[:16]
        while True:
            patience = deadline - self._clock()
            try:
                verdict = self._attempt(priority, waiter, patience)
            except psycopg.Error as exc:
                self._exhausted[priority].inc()
                raise BudgetUnavailable(
                    f"{self.crm} API budget: the state store is unreachable ({exc}); check the state DSN", 1.0
                ) from exc
            if verdict.kind == "grant":
                self._granted[priority].inc()
                self._waited[priority].observe(max(0.0, self._clock() - started))
                return
            if verdict.kind == "exhausted" or verdict.delay > patience:
                self._exhausted[priority].inc()
                if verdict.kind == "wait":
                    reason = f"{verdict.reason}: the next slot is {verdict.delay:.1f}s away, beyond max_wait_s"
                else:
                    reason = verdict.reason
                raise BudgetExhausted(f"{self.crm} API budget: {reason}; retry in {verdict.delay:.0f}s", verdict.delay)
            self._sleep(max(_MIN_SLEEP_S, verdict.delay))

    def _attempt(self, priority: Priority, waiter: str, patience: float) -> Verdict:
        with self._store.transaction() as txn:
            state, now = txn.state, txn.now
            settle(state, self.limits, now, self._margin_s)
            verdict = decide(state, self.limits, now, priority, self._margin_s)
            if verdict.kind == "grant":
                if self.limits.burst is not None:
                    state.grants.append(now)
                txn.count_daily()
                state.live_waiters.pop(waiter, None)
            elif verdict.kind == "exhausted":
                allowance = daily_allowance(self.limits, priority) or 0
                reopens = daily_reopens_in(txn.daily_buckets(), state.daily_used, allowance, now)
                verdict = Verdict("exhausted", reopens, verdict.reason)
                state.live_waiters.pop(waiter, None)
            elif priority is Priority.LIVE and verdict.delay <= patience:
                state.live_waiters[waiter] = now + verdict.delay + LIVE_GRACE_S
            else:
                state.live_waiters.pop(waiter, None)
            self._observe(state, now)
        return verdict

    def report(self, status: int, retry_after: float | None = None) -> None:
        # A pause the CRM asked for holds whatever the status: Retry-After on a 429 or 503, or
        # the wait a connector chose for a quota error (Salesforce's 403 REQUEST_LIMIT_EXCEEDED).
        blocks = retry_after is not None and retry_after > 0
        if status == 429:
            self._throttled.inc()
        elif not blocks and not (self._factor_seen < 1.0 and 200 <= status < 400 and self._window_passed()):
            return  # nothing to record: the common case costs no transaction
        try:
            with self._store.transaction() as txn:
                settle(txn.state, self.limits, txn.now, self._margin_s)
                if status == 429:
                    if throttled(txn.state, self.limits, txn.now, retry_after):
                        log.warning(
                            "crm budget throttled", crm=self.crm, factor=txn.state.factor, retry_after=retry_after
                        )
                elif blocks:
                    assert retry_after is not None
                    txn.state.blocked_until = max(txn.state.blocked_until, txn.now + retry_after)
                self._observe(txn.state, txn.now)
        except psycopg.Error as exc:
            # The response is already in the connector's hands; a lost report only delays the
            # AIMD reaction, so it must not fail the request.
            log.warning("crm budget report not stored", crm=self.crm, status=status, error=str(exc))

    def observe_daily(self, used: int) -> None:
        # Only ever raised: answers arrive out of order, and the CRM counts a request when it
        # arrives, after our grant, so a count below ours is stale and says nothing. The gap is
        # booked at `now`, so it leaves the rolling 24 h no sooner than the CRM's own requests did.
        if self.limits.daily is None or used <= self._daily_seen + (self.limits.burst or 0):
            return
        try:
            with self._store.transaction() as txn:
                settle(txn.state, self.limits, txn.now, self._margin_s)
                gap = used - txn.state.daily_used
                if gap > 0:
                    txn.count_daily(gap)
                    self._foreign.inc(gap)
                    log.warning(
                        "the crm counts requests no replicator process made; another integration may use "
                        "this credential",
                        crm=self.crm,
                        crm_count=used,
                        added=gap,
                    )
                self._observe(txn.state, txn.now)
        except psycopg.Error as exc:
            log.warning("crm daily usage not stored", crm=self.crm, used=used, error=str(exc))

    def _window_passed(self) -> bool:
        return self._clock() - self._seen_at >= self.limits.window_s

    def _observe(self, state: BudgetState, now: float) -> None:
        self._factor_seen, self._seen_at = state.factor, now
        self._daily_seen = state.daily_used
        self._factor_gauge.set(state.factor)
        if self.limits.burst is not None:
            self._utilisation_gauge.set(len(state.grants) / self.limits.burst)
        self._daily_gauge.set(state.daily_used)

    def close(self) -> None:
        self._store.close()


class LocalBudget(_Gate):
    """The same rules for one process only (state in memory): single-process tools and tests."""

    def __init__(
        self,
        limits: BudgetLimits,
        *,
        crm: str,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        margin_s: float | None = None,
    ) -> None:
        super().__init__(MemoryStore(clock), limits, crm=crm, clock=clock, sleep=sleep, margin_s=margin_s)


class SharedBudget(_Gate):
    """The budget of credential `key`, shared through the `replicator` schema of the state store.

    Thread-safe: a sink's worker threads share one instance (and its one connection). A
    credential used by one process only (configuration `shared: false`) gets a LocalBudget."""

    def __init__(
        self,
        dsn: str,
        key: str,
        limits: BudgetLimits,
        *,
        crm: str,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        margin_s: float | None = None,
    ) -> None:
        super().__init__(
            PostgresStore(dsn, key, crm, clock), limits, crm=crm, clock=clock, sleep=sleep, margin_s=margin_s
        )
        self.key = key
