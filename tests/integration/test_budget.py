"""The shared CRM API budget on a real PostgreSQL: several instances (threads, and separate OS
processes) drawing from one credential's budget must together honour its limits."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from replicator.state import migrations
from replicator.state.budget import BudgetExhausted, BudgetLimits, Priority, SharedBudget, budget_key

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BURST = 20
WINDOW_S = 1.0
RUN_S = 4.0

# One acquirer in its own OS process: waits for a common start time, acquires as fast as it
# may until the run ends, and prints its grant times.
WORKER = r"""
import json, sys, time
from replicator.state.budget import BudgetLimits, Priority, SharedBudget

dsn, key, priority, start_at, run_s, burst, window_s = sys.argv[1:8]
budget = SharedBudget(
    dsn, key, BudgetLimits(burst=int(burst), window_s=float(window_s), daily=None), crm="itest-process"
)
time.sleep(max(0.0, float(start_at) - time.time()))
stop = float(start_at) + float(run_s)
grants = []
while time.time() < stop:
    budget.acquire(Priority(priority), max_wait_s=30.0)
    grants.append(time.time())
budget.close()
print(json.dumps(grants))
"""


def start_worker(
    dsn: str, key: str, priority: Priority, start_at: float, run_s: float, burst: int
) -> subprocess.Popen[str]:
    args = [dsn, key, priority.value, repr(start_at), repr(run_s), str(burst), repr(WINDOW_S)]
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def worker_grants(proc: subprocess.Popen[str]) -> list[float]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    grants: list[float] = json.loads(out)
    return grants


def acquire_until(budget: SharedBudget, priority: Priority, start_at: float, stop: float, into: list[float]) -> None:
    time.sleep(max(0.0, start_at - time.time()))
    while time.time() < stop:
        budget.acquire(priority, max_wait_s=30.0)
        into.append(time.time())


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def assert_limit_held_and_used(grants: list[float], start_at: float) -> None:
    assert max_in_window(grants, WINDOW_S) <= BURST, "a rolling window held more grants than the burst limit"
    in_run = [t for t in grants if start_at <= t < start_at + RUN_S]
    theoretical = BURST * RUN_S / WINDOW_S
    assert len(in_run) >= 0.9 * theoretical, f"{len(in_run)} grants of a possible {theoretical:g}"


@pytest.fixture
def state_dsn(pg_db: str) -> str:
    migrations.migrate(pg_db)
    return pg_db


def shared(dsn: str, key: str, limits: BudgetLimits) -> SharedBudget:
    return SharedBudget(dsn, key, limits, crm="itest")


def test_two_instances_in_threads_share_one_burst_limit(state_dsn: str) -> None:
    key = budget_key("itest", "threads")
    limits = BudgetLimits(burst=BURST, window_s=WINDOW_S, daily=None)
    budgets = [shared(state_dsn, key, limits) for _ in range(2)]
    grants: list[list[float]] = [[], []]
    start_at = time.time() + 0.5
    threads = [
        threading.Thread(target=acquire_until, args=(b, Priority.LIVE, start_at, start_at + RUN_S, g))
        for b, g in zip(budgets, grants, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for b in budgets:
        b.close()
    assert all(grants), "each instance got grants"
    assert_limit_held_and_used(grants[0] + grants[1], start_at)


def test_two_os_processes_share_one_burst_limit(state_dsn: str) -> None:
    key = budget_key("itest", "processes")
    # Leave time for each interpreter to import the replicator before the common start.
    start_at = time.time() + 3.0
    procs = [start_worker(state_dsn, key, Priority.LIVE, start_at, RUN_S, BURST) for _ in range(2)]
    grants = [worker_grants(p) for p in procs]
    assert all(grants), "each process got grants"
    assert_limit_held_and_used(grants[0] + grants[1], start_at)


def test_live_waiters_in_one_process_stop_backfill_in_another(state_dsn: str) -> None:
    burst = 10
    key = budget_key("itest", "priorities")
    start_at = time.time() + 3.0
    backfill = start_worker(state_dsn, key, Priority.BACKFILL, start_at, 5.0, burst)
    # More live threads than the burst: some are always waiting, as when live changes pile up.
    live_start, live_stop = start_at + 1.5, start_at + 3.0
    budget = shared(state_dsn, key, BudgetLimits(burst=burst, window_s=WINDOW_S, daily=None))
    live: list[float] = []
    threads = [
        threading.Thread(target=acquire_until, args=(budget, Priority.LIVE, live_start, live_stop, live))
        for _ in range(burst + 2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    live_done = time.time()
    budget.close()
    backfilled = worker_grants(backfill)

    assert len([t for t in backfilled if t < live_start]) >= burst, "backfill ran before live work came"
    # Once the live threads wait (a few ms after live_start), backfill takes nothing until they stop.
    during = [t for t in backfilled if live_start + 0.3 < t < live_stop - 0.1]
    assert during == [], f"backfill was granted {len(during)} times while live requests waited"
    assert len([t for t in live if live_start + 0.3 < t < live_stop]) >= 0.9 * burst * 1.0
    assert len([t for t in backfilled if t > live_done]) >= burst // 2, "backfill resumed after live work"
    assert max_in_window(live + backfilled, WINDOW_S) <= burst


def test_a_429_slows_and_blocks_every_instance(state_dsn: str) -> None:
    key = budget_key("itest", "aimd")
    limits = BudgetLimits(burst=BURST, window_s=WINDOW_S, daily=None)
    reporter, other = shared(state_dsn, key, limits), shared(state_dsn, key, limits)
    reporter.report(429, retry_after=0.5)
    reported_at = time.time()
    other.acquire()
    assert time.time() - reported_at >= 0.45, "the other instance honoured the Retry-After"
    granted = 1
    while True:
        try:
            other.acquire(max_wait_s=0.0)
        except BudgetExhausted:
            break
        granted += 1
    assert granted == BURST // 2, "the halved factor holds for the instance that did not see the 429"
    with psycopg.connect(state_dsn) as conn:
        row = conn.execute("SELECT factor FROM replicator.api_budget_status WHERE key = %s", (key,)).fetchone()
    assert row == (0.5,)
    reporter.close()
    other.close()


def test_the_daily_quota_is_shared(state_dsn: str) -> None:
    key = budget_key("itest", "daily")
    limits = BudgetLimits(burst=1000, window_s=WINDOW_S, daily=30)
    first, second = shared(state_dsn, key, limits), shared(state_dsn, key, limits)
    for _ in range(20):
        first.acquire()
    for _ in range(10):
        second.acquire()
    for budget in (first, second):
        with pytest.raises(BudgetExhausted, match="daily quota used: 30 of 30") as caught:
            budget.acquire()
        assert 86_000 < caught.value.retry_after <= 86_460
    with psycopg.connect(state_dsn) as conn:
        row = conn.execute("SELECT sum(grants) FROM replicator.api_budget_daily WHERE key = %s", (key,)).fetchone()
    assert row == (30,)
    first.close()
    second.close()


def test_a_missing_migration_names_the_fix(pg_db: str) -> None:
    with pytest.raises(RuntimeError, match="replicator setup"):
        SharedBudget(pg_db, budget_key("itest", "unmigrated"), BudgetLimits(1, 1.0, None), crm="itest")


def test_another_integrations_requests_on_the_credential_count_from_hubspots_own_figure(state_dsn: str) -> None:
    """HubSpot tells every answer how much of the day's quota the token has left. Requests made
    by something other than a replicator (here: plain HTTP with the same token) join the shared
    count at the next answer, so every process stops before HubSpot's daily limit, not after."""
    import httpx

    from replicator.sandbox.core import Limits
    from replicator.sinks.hubspot import HubSpotSink
    from tests.fixtures.sandbox import start_sandbox

    # A count within one burst of the budget's own is left unchecked (other processes' grants
    # explain it): the 300 foreign requests are beyond the burst of 100.
    running = start_sandbox("hubspot", limits=Limits(burst=400, window_s=10.0, daily=400))
    key = budget_key("hubspot", running.url, "foreign")
    limits = BudgetLimits(burst=100, window_s=10.0, daily=400)
    ours, other = shared(state_dsn, key, limits), shared(state_dsn, key, limits)
    sink = HubSpotSink(running.url, "pat-sandbox", budget=ours)
    try:
        sink.ensure_setup()
        own = daily_used(state_dsn, key)
        assert own > 0
        with httpx.Client(base_url=running.url, headers={"Authorization": "Bearer pat-sandbox"}) as foreign:
            for _ in range(300):
                assert foreign.get("/crm/v3/objects/companies", params={"limit": 1}).status_code == 200
        assert daily_used(state_dsn, key) == own  # nobody has heard of them yet
        # The sink's next answer carries HubSpot's count.
        assert sink.client.request("GET", "object", "/crm/v3/objects/companies", params={"limit": 1}).is_success
        stats = httpx.get(f"{running.url}/__sandbox/stats", timeout=5).json()
        assert daily_used(state_dsn, key) == stats["daily_used"] >= own + 300
        # The other process draws on the corrected count: what is left of the 400, then no more.
        left = 400 - daily_used(state_dsn, key)
        for _ in range(left):
            other.acquire()
        with pytest.raises(BudgetExhausted, match="daily quota used: 400 of 400"):
            other.acquire()
    finally:
        sink.close()
        other.close()
        running.stop()


def daily_used(dsn: str, key: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT daily_used FROM replicator.api_budget WHERE key = %s", (key,)).fetchone()
    assert row is not None
    return int(row[0])
