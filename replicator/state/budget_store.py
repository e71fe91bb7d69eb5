"""Where a budget's state lives: one row per credential in PostgreSQL (shared by every
process), or memory (one process). Each `transaction()` locks the state, reads the clock
*after* taking the lock (so grant times are stored in lock order, which keeps the window log
exact across processes), drops daily buckets that left the 24 h, and writes the state back
when the block ends without an exception."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg.types.json import Jsonb

from replicator.state.budget_rules import BudgetState, daily_bucket, oldest_live_bucket

Clock = Callable[[], float]


class BudgetTxn(Protocol):
    state: BudgetState
    now: float

    def count_daily(self, requests: int = 1) -> None:
        """`requests` grants at `now` toward the daily quota (also bumps `state.daily_used`)."""

    def daily_buckets(self) -> list[tuple[int, int]]:
        """The daily buckets still inside the 24 h, as (bucket, grants), oldest first."""


class BudgetStore(Protocol):
    def transaction(self) -> AbstractContextManager[BudgetTxn]: ...

    def close(self) -> None: ...


# -- memory -------------------------------------------------------------------------------


@dataclass
class _MemoryTxn:
    state: BudgetState
    now: float
    buckets: dict[int, int]
    counted: int = field(default=0)

    def count_daily(self, requests: int = 1) -> None:
        self.counted += requests
        self.state.daily_used += requests

    def daily_buckets(self) -> list[tuple[int, int]]:
        merged = dict(self.buckets)
        if self.counted:
            merged[daily_bucket(self.now)] = merged.get(daily_bucket(self.now), 0) + self.counted
        return sorted(merged.items())


class MemoryStore:
    """One process's budget: the same rules with a lock instead of a database row."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BudgetState()
        self._buckets: dict[int, int] = {}

    @contextmanager
    def transaction(self) -> Iterator[BudgetTxn]:
        with self._lock:
            now = self._clock()
            oldest = oldest_live_bucket(now)
            for bucket in [b for b in self._buckets if b < oldest]:
                self._state.daily_used -= self._buckets.pop(bucket)
            txn = _MemoryTxn(copy.deepcopy(self._state), now, self._buckets)
            yield txn
            self._state = txn.state
            if txn.counted:
                bucket = daily_bucket(now)
                self._buckets[bucket] = self._buckets.get(bucket, 0) + txn.counted

    def close(self) -> None:
        pass


# -- PostgreSQL ---------------------------------------------------------------------------

_ENSURE = "INSERT INTO replicator.api_budget (key, crm) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING"
_LOCK = (
    "SELECT factor, blocked_until, last_429_at, last_decrease_at, increased_at, grants, live_waiters, daily_used "
    "FROM replicator.api_budget WHERE key = %s FOR UPDATE"
)
_EXPIRE = "DELETE FROM replicator.api_budget_daily WHERE key = %s AND minute < %s RETURNING grants"
_SAVE = (
    "UPDATE replicator.api_budget SET factor = %s, blocked_until = %s, last_429_at = %s, last_decrease_at = %s, "
    "increased_at = %s, grants = %s::float8[], live_waiters = %s, daily_used = %s, updated_at = now() WHERE key = %s"
)
_COUNT = (
    "INSERT INTO replicator.api_budget_daily (key, minute, grants) VALUES (%s, %s, %s) "
    "ON CONFLICT (key, minute) DO UPDATE SET grants = replicator.api_budget_daily.grants + EXCLUDED.grants"
)
_BUCKETS = "SELECT minute, grants FROM replicator.api_budget_daily WHERE key = %s ORDER BY minute"


@dataclass
class _PostgresTxn:
    conn: psycopg.Connection[Any]
    key: str
    state: BudgetState
    now: float

    def count_daily(self, requests: int = 1) -> None:
        self.conn.execute(_COUNT, (self.key, daily_bucket(self.now), requests))
        self.state.daily_used += requests

    def daily_buckets(self) -> list[tuple[int, int]]:
        return [(int(m), int(g)) for m, g in self.conn.execute(_BUCKETS, (self.key,)).fetchall()]


class PostgresStore:
    """The budget row of one key in the `replicator` schema, locked with SELECT ... FOR UPDATE.

    One connection, used by one thread at a time: the transactions are a handful of short
    statements, so threads queue on a local lock rather than each holding a connection."""

    def __init__(self, dsn: str, key: str, crm: str, clock: Clock) -> None:
        self._dsn = dsn
        self._key = key
        self._crm = crm
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._expired_below: int | None = None  # the oldest live minute at this process's last expiry
        try:
            with self._lock:
                self._connection().execute(_ENSURE, (key, crm))
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            self.close()
            raise RuntimeError(
                "the state store has no replicator.api_budget table: run `replicator setup` to apply "
                "migration 0003_api_budget"
            ) from None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # Every process using the credential queues on one row lock: a holder that stalls (a
            # paused container, a partitioned host) must not freeze them all for TCP's two hours.
            # A waiter gives up after lock_timeout (BudgetUnavailable: the request is retried), the
            # server ends a stalled holder's transaction, and keepalives notice a dead peer.
            self._conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                application_name="replicator-budget",
                connect_timeout=5,
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
            )
            # Without it each grant waits for a WAL flush. A crash of the server may then forget
            # the last few grants, which only lets a few more requests go than the CRM allows for
            # one window: its 429s cover that, and nothing else depends on these rows.
            self._conn.execute("SET synchronous_commit = off")
            self._conn.execute("SET lock_timeout = '2s'")
            self._conn.execute("SET idle_in_transaction_session_timeout = '10s'")
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[BudgetTxn]:
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction():
                    row = conn.execute(_LOCK, (self._key,)).fetchone()
                    if row is None:  # deleted by hand since we started: start afresh
                        conn.execute(_ENSURE, (self._key, self._crm))
                        row = conn.execute(_LOCK, (self._key,)).fetchone()
                    assert row is not None
                    now = self._clock()
                    factor, blocked, last_429, last_decrease, increased, grants, waiters, used = row
                    # Buckets are minutes: expiring again within the same minute finds nothing. (Another
                    # process's expiry is already in `used`; a skipped one only over-counts, the safe side.)
                    oldest = oldest_live_bucket(now)
                    expired = (
                        [] if oldest == self._expired_below else conn.execute(_EXPIRE, (self._key, oldest)).fetchall()
                    )
                    self._expired_below = oldest
                    state = BudgetState(
                        factor=factor,
                        blocked_until=blocked,
                        last_429_at=last_429,
                        last_decrease_at=last_decrease,
                        increased_at=increased,
                        grants=list(grants),
                        live_waiters=dict(waiters),
                        daily_used=max(0, used - sum(g for (g,) in expired)),
                    )
                    txn = _PostgresTxn(conn, self._key, state, now)
                    yield txn
                    s = txn.state
                    conn.execute(
                        _SAVE,
                        (
                            s.factor,
                            s.blocked_until,
                            s.last_429_at,
                            s.last_decrease_at,
                            s.increased_at,
                            s.grants,
                            Jsonb(s.live_waiters),
                            s.daily_used,
                            self._key,
                        ),
                    )
            except psycopg.OperationalError:
                # The connection is gone or broken: the next call opens a new one.
                self._drop()
                raise

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()
