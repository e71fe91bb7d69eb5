"""The CRM API budget's rules and waiting loop, on a fake clock (no database: LocalBudget runs
the same rules as SharedBudget against memory)."""

from __future__ import annotations

import math
from collections.abc import Callable

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.ops.metrics import REGISTRY
from replicator.state.budget import BudgetExhausted, BudgetLimits, LocalBudget, Priority, budget_key
from replicator.state.budget_rules import (
    BACKFILL_POLL_S,
    DAY_S,
    FACTOR_FLOOR,
    FACTOR_STEP,
    LIVE_GRACE_S,
    BudgetState,
    daily_reopens_in,
    decide,
    settle,
    throttled,
)

T0 = 1_700_000_000.0
MARGIN = 0.05


class FakeClock:
    def __init__(self, start: float = T0) -> None:
        self.now = start
        self.slept: list[float] = []
        self.on_sleep: Callable[[float], None] | None = None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep(seconds)
        self.now += seconds


def local(limits: BudgetLimits, clock: FakeClock, crm: str = "unit") -> LocalBudget:
    return LocalBudget(limits, crm=crm, clock=clock, sleep=clock.sleep, margin_s=MARGIN)


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


# -- AIMD ------------------------------------------------------------------------------------


def test_429_halves_the_factor_once_per_window_down_to_the_floor() -> None:
    limits = BudgetLimits(burst=100, window_s=10.0, daily=None)
    state = BudgetState()
    assert throttled(state, limits, T0, None)
    assert state.factor == pytest.approx(0.5)
    # Requests already in flight answer 429 too: one congestion signal, not several.
    assert not throttled(state, limits, T0 + 3.0, None)
    assert state.factor == pytest.approx(0.5)
    for i in range(1, 10):
        throttled(state, limits, T0 + 10.0 * i, None)
    assert state.factor == pytest.approx(FACTOR_FLOOR)


def test_each_quiet_window_adds_back_a_step_up_to_one() -> None:
    limits = BudgetLimits(burst=100, window_s=10.0, daily=None)
    state = BudgetState()
    throttled(state, limits, T0, None)
    settle(state, limits, T0 + 9.9, MARGIN)
    assert state.factor == pytest.approx(0.5)
    settle(state, limits, T0 + 30.0, MARGIN)  # three quiet windows
    assert state.factor == pytest.approx(0.5 + 3 * FACTOR_STEP)
    settle(state, limits, T0 + 35.0, MARGIN)  # half a window more: no step yet
    assert state.factor == pytest.approx(0.5 + 3 * FACTOR_STEP)
    settle(state, limits, T0 + 40.0, MARGIN)
    assert state.factor == pytest.approx(0.5 + 4 * FACTOR_STEP)
    settle(state, limits, T0 + 10_000.0, MARGIN)
    assert state.factor == 1.0


def test_a_later_429_restarts_the_quiet_window() -> None:
    limits = BudgetLimits(burst=100, window_s=10.0, daily=None)
    state = BudgetState()
    throttled(state, limits, T0, None)
    throttled(state, limits, T0 + 8.0, None)  # not a second decrease, but the window was not quiet
    settle(state, limits, T0 + 12.0, MARGIN)
    assert state.factor == pytest.approx(0.5)
    settle(state, limits, T0 + 18.0, MARGIN)
    assert state.factor == pytest.approx(0.5 + FACTOR_STEP)


def test_after_a_429_only_half_the_burst_goes_in_a_window() -> None:
    clock = FakeClock()
    budget = local(BudgetLimits(burst=10, window_s=1.0, daily=None), clock)
    budget.report(429)
    grants = []
    for _ in range(5):
        budget.acquire()
        grants.append(clock.now)
    assert clock.slept == []
    budget.acquire()  # the sixth waits for the first to leave the widened window
    assert clock.now == pytest.approx(T0 + 1.0 + MARGIN)


def test_success_reports_restore_the_factor() -> None:
    clock = FakeClock()
    budget = local(BudgetLimits(burst=10, window_s=1.0, daily=None), clock, crm="unit-aimd")
    budget.report(429)
    assert REGISTRY.get_sample_value("replicator_crm_budget_factor", {"crm": "unit-aimd"}) == pytest.approx(0.5)
    clock.now += 4.0
    budget.report(200)
    restored = REGISTRY.get_sample_value("replicator_crm_budget_factor", {"crm": "unit-aimd"})
    assert restored == pytest.approx(0.5 + 4 * FACTOR_STEP)
    throttled_total = REGISTRY.get_sample_value("replicator_crm_budget_throttled_total", {"crm": "unit-aimd"})
    assert throttled_total == 1.0


# -- burst window ----------------------------------------------------------------------------


def test_burst_is_honoured_and_waiting_sleeps_until_the_slot_frees() -> None:
    clock = FakeClock()
    budget = local(BudgetLimits(burst=5, window_s=1.0, daily=None), clock)
    grants = []
    for _ in range(12):
        budget.acquire()
        grants.append(clock.now)
    assert max_in_window(grants, 1.0 + MARGIN) == 5
    # No busy loop: one sleep per wait, each exactly until the oldest grant leaves.
    assert clock.slept == pytest.approx([1.0 + MARGIN, 1.0 + MARGIN])
    assert grants[5] == pytest.approx(T0 + 1.0 + MARGIN)


@given(
    steps=st.lists(
        st.tuples(st.sampled_from(list(Priority)), st.floats(min_value=0.0, max_value=0.7)),
        min_size=1,
        max_size=60,
    ),
    burst=st.integers(min_value=1, max_value=8),
)
def test_no_window_ever_holds_more_than_the_burst(steps: list[tuple[Priority, float]], burst: int) -> None:
    clock = FakeClock()
    budget = local(BudgetLimits(burst=burst, window_s=1.0, daily=None), clock)
    grants = []
    for priority, pause in steps:
        clock.now += pause
        budget.acquire(priority)
        grants.append(clock.now)
    assert max_in_window(grants, 1.0 + MARGIN) <= burst


def test_a_queue_longer_than_max_wait_raises_with_the_time_to_the_next_slot() -> None:
    clock = FakeClock()
    budget = local(BudgetLimits(burst=1, window_s=10.0, daily=None), clock)
    budget.acquire()
    with pytest.raises(BudgetExhausted, match="burst window full") as caught:
        budget.acquire(max_wait_s=2.0)
    assert caught.value.retry_after == pytest.approx(10.0 + MARGIN)
    assert clock.slept == []  # it knew it could not make it, so it did not wait first


# -- Retry-After -----------------------------------------------------------------------------


def test_retry_after_blocks_every_acquirer_until_it_passes() -> None:
    clock = FakeClock()
    budget = local(BudgetLimits(burst=100, window_s=10.0, daily=None), clock)
    budget.report(429, retry_after=30.0)
    with pytest.raises(BudgetExhausted, match="Retry-After") as caught:
        budget.acquire(max_wait_s=5.0)
    assert caught.value.retry_after == pytest.approx(30.0)
    budget.acquire(Priority.BACKFILL, max_wait_s=60.0)
    assert clock.now == pytest.approx(T0 + 30.0)


@pytest.mark.parametrize("status", [503, 403])
def test_a_pause_asked_with_another_status_blocks_without_slowing_down(status: int) -> None:
    clock = FakeClock()
    budget = local(BudgetLimits(burst=4, window_s=1.0, daily=None), clock, crm="unit-503")
    budget.report(status, retry_after=2.0)
    budget.acquire()
    assert clock.now == pytest.approx(T0 + 2.0)
    for _ in range(3):
        budget.acquire()
    assert clock.now == pytest.approx(T0 + 2.0)  # the full burst is still there
    assert REGISTRY.get_sample_value("replicator_crm_budget_factor", {"crm": "unit-503"}) == 1.0


# -- daily quota -----------------------------------------------------------------------------


def test_daily_quota_raises_with_the_time_until_the_oldest_grants_leave_the_24h() -> None:
    clock = FakeClock(start=T0 + 17.0)  # inside a minute bucket, not at its start
    budget = local(BudgetLimits(burst=100, window_s=10.0, daily=3), clock)
    for _ in range(3):
        budget.acquire()
        clock.now += 1.0
    with pytest.raises(BudgetExhausted, match="daily quota used: 3 of 3") as caught:
        budget.acquire()
    bucket_end = (math.floor((T0 + 17.0) / 60) + 1) * 60
    assert caught.value.retry_after == pytest.approx(bucket_end + DAY_S - clock.now)
    # The first grant (3 s ago) leaves the 24 h no earlier than a day after it was made, and its
    # minute bucket errs on the safe side by less than a minute.
    assert DAY_S - 3.0 <= caught.value.retry_after < DAY_S - 3.0 + 60.0
    clock.now += caught.value.retry_after
    budget.acquire()  # the day's grants have left: the quota is back


def test_daily_reopens_when_enough_old_buckets_expire() -> None:
    now = 1_000 * 60 + DAY_S + 30.0  # half a minute after bucket 1000 ended... a day ago
    buckets = [(1001, 5), (1002, 3), (1010, 4)]
    # 12 used, allowance 10: three grants must leave, which bucket 1001 does at its end + 24 h.
    assert daily_reopens_in(buckets, 12, 10, now) == pytest.approx(1002 * 60 + DAY_S - now)
    # allowance 5: eight must leave: buckets 1001 and 1002.
    assert daily_reopens_in(buckets, 12, 5, now) == pytest.approx(1003 * 60 + DAY_S - now)


def test_backfill_leaves_the_last_of_the_daily_quota_to_live_changes() -> None:
    clock = FakeClock()
    budget = local(BudgetLimits(burst=1000, window_s=10.0, daily=100, live_reserve=0.1), clock)
    for _ in range(90):
        budget.acquire(Priority.BACKFILL)
    with pytest.raises(BudgetExhausted, match="90 of 90 for backfill"):
        budget.acquire(Priority.BACKFILL)
    for _ in range(10):
        budget.acquire(Priority.LIVE)
    with pytest.raises(BudgetExhausted, match="100 of 100 for live"):
        budget.acquire(Priority.LIVE)


# -- priorities ------------------------------------------------------------------------------


def test_a_live_registration_holds_backfill_back_until_it_expires() -> None:
    limits = BudgetLimits(burst=10, window_s=1.0, daily=None)
    state = BudgetState(live_waiters={"crashed-waiter": T0 + 0.4})
    settle(state, limits, T0, MARGIN)
    backfill = decide(state, limits, T0, Priority.BACKFILL, MARGIN)
    assert (backfill.kind, backfill.reason) == ("wait", "live requests are waiting")
    assert decide(state, limits, T0, Priority.LIVE, MARGIN).kind == "grant"
    # A waiter that died without cleaning up stops mattering once its registration expires.
    settle(state, limits, T0 + 0.5, MARGIN)
    assert decide(state, limits, T0 + 0.5, Priority.BACKFILL, MARGIN).kind == "grant"


def test_backfill_gets_no_slot_while_a_live_acquirer_waits_for_one() -> None:
    clock = FakeClock()
    budget = local(BudgetLimits(burst=4, window_s=1.0, daily=None, live_reserve=0.0), clock)
    for _ in range(4):
        budget.acquire(Priority.BACKFILL)
    refusals: list[str] = []

    def backfill_tries_meanwhile(_seconds: float) -> None:
        with pytest.raises(BudgetExhausted) as caught:
            budget.acquire(Priority.BACKFILL, max_wait_s=0.0)
        refusals.append(str(caught.value))

    clock.on_sleep = backfill_tries_meanwhile
    budget.acquire(Priority.LIVE)  # waits a window; backfill tries while it sleeps
    clock.on_sleep = None
    assert len(refusals) == 1
    assert "live requests are waiting" in refusals[0]
    # Once the live request has its slot, backfill may take the others.
    for _ in range(3):
        budget.acquire(Priority.BACKFILL, max_wait_s=0.0)


def test_backfill_never_takes_the_live_share_of_a_window() -> None:
    clock = FakeClock()
    budget = local(BudgetLimits(burst=20, window_s=1.0, daily=None, live_reserve=0.1), clock)
    for _ in range(18):
        budget.acquire(Priority.BACKFILL, max_wait_s=0.0)
    with pytest.raises(BudgetExhausted):
        budget.acquire(Priority.BACKFILL, max_wait_s=0.0)
    budget.acquire(Priority.LIVE, max_wait_s=0.0)
    budget.acquire(Priority.LIVE, max_wait_s=0.0)
    with pytest.raises(BudgetExhausted):
        budget.acquire(Priority.LIVE, max_wait_s=0.0)


def test_grants_and_waits_are_counted_per_priority() -> None:
    clock = FakeClock()
    budget = local(BudgetLimits(burst=2, window_s=1.0, daily=None, live_reserve=0.0), clock, crm="unit-metrics")
    for priority in (Priority.LIVE, Priority.BACKFILL, Priority.BACKFILL):
        budget.acquire(priority)
    labels = {"crm": "unit-metrics"}
    assert REGISTRY.get_sample_value("replicator_crm_budget_granted_total", {**labels, "priority": "live"}) == 1
    assert REGISTRY.get_sample_value("replicator_crm_budget_granted_total", {**labels, "priority": "backfill"}) == 2
    waited = REGISTRY.get_sample_value("replicator_crm_budget_wait_seconds_sum", {**labels, "priority": "backfill"})
    assert waited == pytest.approx(1.0 + MARGIN)
    assert REGISTRY.get_sample_value("replicator_crm_budget_window_utilisation", labels) == pytest.approx(0.5)
    assert REGISTRY.get_sample_value("replicator_crm_budget_daily_used", labels) == 3


# -- limits and keys -------------------------------------------------------------------------


def test_budget_key_is_stable_per_credential_and_hides_the_secret() -> None:
    key = budget_key("hubspot", "https://api.hubapi.com", "pat-na1-secret")
    assert key == budget_key("hubspot", "https://api.hubapi.com", "pat-na1-secret")
    assert key.startswith("hubspot:")
    assert "secret" not in key
    assert key != budget_key("hubspot", "https://api.hubapi.com", "pat-na1-other")
    assert key != budget_key("salesforce", "https://api.hubapi.com", "pat-na1-secret")
    # Parts are separated, not glued: ("ab", "c") is another credential than ("a", "bc").
    assert budget_key("x", "ab", "c") != budget_key("x", "a", "bc")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"burst": 0, "window_s": 1.0, "daily": None}, "burst"),
        ({"burst": 1, "window_s": 0.0, "daily": None}, "window_s"),
        ({"burst": 1, "window_s": 1.0, "daily": 0}, "daily"),
        ({"burst": 1, "window_s": 1.0, "daily": None, "live_reserve": 1.0}, "live_reserve"),
    ],
)
def test_limits_name_the_wrong_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BudgetLimits(**kwargs)  # type: ignore[arg-type]


def test_no_burst_limit_still_honours_the_daily_quota() -> None:
    clock = FakeClock()
    budget = local(BudgetLimits(burst=None, window_s=10.0, daily=50), clock)
    for _ in range(50):
        budget.acquire()
    assert clock.slept == []
    with pytest.raises(BudgetExhausted, match="daily quota"):
        budget.acquire()


def test_a_budget_not_shared_keeps_its_state_in_the_process() -> None:
    from replicator.app import make_budget
    from replicator.config import parse_config

    text = """
erp: {dsn: "host=127.0.0.1 port=1 dbname=x"}
crm: {kind: hubspot, token: t, budget: {burst: 3, window_s: 1, shared: %s}}
mappings: {customers: {table: customers, object: account, fields: {name: name}}}
"""
    assert isinstance(make_budget(parse_config(text % "false", "c.yaml", {})), LocalBudget)  # no state store needed
    shared_budget = parse_config(text % "true", "c.yaml", {})
    with pytest.raises(psycopg.OperationalError):
        make_budget(shared_budget)  # a shared budget opens the state store at once (refused here)


# -- the CRM's own count ----------------------------------------------------------------------


def foreign_added() -> float:
    return REGISTRY.get_sample_value("replicator_crm_budget_foreign_requests_total", {"crm": "unit-foreign"}) or 0.0


def test_requests_the_crm_counted_but_no_process_was_granted_join_the_daily_count() -> None:
    clock = FakeClock()
    budget = local(BudgetLimits(burst=5, window_s=10.0, daily=100), clock, crm="unit-foreign")
    before = foreign_added()
    for _ in range(3):
        budget.acquire()
    budget.observe_daily(3)  # the CRM saw exactly ours
    budget.observe_daily(8)  # within one burst of ours: other processes' grants explain it, untested
    assert foreign_added() == before
    budget.observe_daily(60)  # another integration made 57 requests on this credential
    assert foreign_added() - before == 57
    budget.observe_daily(40)  # a stale answer, overtaken on the way: never lowers the count
    assert foreign_added() - before == 57
    for _ in range(40):
        clock.now += 10.0
        budget.acquire()
    with pytest.raises(BudgetExhausted, match="daily quota used: 100 of 100"):
        budget.acquire()


def test_the_crms_count_matters_only_with_a_daily_quota() -> None:
    clock = FakeClock()
    budget = local(BudgetLimits(burst=5, window_s=10.0, daily=None), clock, crm="unit-foreign")
    before = foreign_added()
    budget.observe_daily(1_000_000)
    assert foreign_added() == before
    for _ in range(5):
        budget.acquire()


def test_backfill_held_back_by_a_live_waiter_looks_again_when_it_is_due_not_every_poll() -> None:
    limits = BudgetLimits(burst=10, window_s=1.0, daily=None)
    # Two live waiters, due at T0 + 0.8 and T0 + 1.6 (registrations carry the grace on top).
    state = BudgetState(live_waiters={"a": T0 + 0.8 + LIVE_GRACE_S, "b": T0 + 1.6 + LIVE_GRACE_S})
    assert decide(state, limits, T0, Priority.BACKFILL, MARGIN).delay == pytest.approx(0.8)
    # Past its planned wake-up but still registered (slow, or dead): look again soon.
    assert decide(state, limits, T0 + 0.9, Priority.BACKFILL, MARGIN).delay == pytest.approx(BACKFILL_POLL_S)
