"""Events/s through the pipeline on a real replication slot, against a decode-only baseline.

    uv run python bench/pipeline_throughput.py [--quick] [--events N] [--reps R]

Starts a throwaway PostgreSQL 15 (devstack), loads the sample ERP (schema + seed),
runs `setup(config, crm=False)` with the sample mappings and `crm: {kind: discard}`,
then for each workload:

- creates 2*R logical slots (so every repetition reads its own slot over the same WAL),
- generates N row changes in transactions of 1000 rows,
- per repetition, interleaved:
  (a) decode: PgSlotSource.read() until all N changes are received (nothing else);
  (b) full:   the real Runner (reader thread, bounded queue, batches of
      pipeline.batch_size) -> Processor.process (coalesce, route, plan, map) ->
      NullSink, with the real StateStore (sync_state / id_map writes and reads,
      checkpoints on ack) in the same database, acking the slot as `replicator run` does.
  The state tables are emptied before each full repetition so every repetition does
  the same work.

Workloads:
- distinct: 40% product inserts, 20% contact inserts, 20% product updates, 20% contact
  updates; each key changes once or twice, far apart in the WAL: no coalescing.
- hot: every transaction updates 100 products and 100 contacts 5 times each; within a
  batch the same key repeats, so coalescing folds most changes.

Prints medians per workload and the full/decode ratio; writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import _common as c
import psycopg

from replicator.change import Position
from replicator.config import parse_config
from replicator.config.model import Config
from replicator.devstack.postgres import start_cluster
from replicator.devstack.sample_erp import load_sample_erp
from replicator.jobs.setup import setup
from replicator.ops import metrics
from replicator.ops.health import Health
from replicator.pipeline.processor import Processor
from replicator.pipeline.runner import Runner
from replicator.sources.pg_admin import create_slot, drop_slot, int_to_lsn
from replicator.sources.pg_slot import PgSlotSource

TX_ROWS = 1000
STATE_TABLES = ("sync_state", "id_map", "ledger", "dead_letters", "checkpoints")


# --- workload generation ---------------------------------------------------------------


def gen_distinct(dsn: str, n: int) -> dict[str, int]:
    """Returns the row changes made, by kind (their sum is what the slot must deliver)."""
    n_ins_p, n_ins_c = int(n * 0.4), int(n * 0.2)
    n_upd_p, n_upd_c = int(n * 0.2), n - int(n * 0.4) - int(n * 0.2) - int(n * 0.2)
    with psycopg.connect(dsn, autocommit=True) as conn:
        p0 = conn.execute("SELECT coalesce(max(id), 0) FROM products").fetchone()[0]  # type: ignore[index]
        c0 = conn.execute("SELECT coalesce(max(id), 0) FROM contacts").fetchone()[0]  # type: ignore[index]
        for start in range(0, n_ins_p, TX_ROWS):
            k = min(TX_ROWS, n_ins_p - start)
            conn.execute(
                "INSERT INTO products (sku, name, description, unit_price, currency, discontinued) "
                "SELECT 'BENCH-' || g, 'Bench part ' || g, 'Generated part number ' || g, "
                "(g %% 1000) * 1.25 + 0.99, 'EUR', false FROM generate_series(%s::int, %s::int) g",
                (start + 1, start + k),
            )
        for start in range(0, n_ins_c, TX_ROWS):
            k = min(TX_ROWS, n_ins_c - start)
            conn.execute(
                "INSERT INTO contacts (customer_id, first_name, last_name, email, phone, job_title, active, "
                "updated_at) SELECT 1 + g %% 24, 'Bench', 'Person ' || g, 'bench' || g || '@example.test', "
                "'+49 30 ' || (5000000 + g), 'Buyer', true, timestamp '2024-06-01 08:00' + g * interval '1 minute' "
                "FROM generate_series(%s::int, %s::int) g",
                (start + 1, start + k),
            )
        for start in range(0, n_upd_p, TX_ROWS):
            k = min(TX_ROWS, n_upd_p - start)
            conn.execute(
                "UPDATE products SET unit_price = unit_price + 1 WHERE id BETWEEN %s AND %s",
                (p0 + start + 1, p0 + start + k),
            )
        for start in range(0, n_upd_c, TX_ROWS):
            k = min(TX_ROWS, n_upd_c - start)
            conn.execute(
                "UPDATE contacts SET job_title = 'Head of Buying' WHERE id BETWEEN %s AND %s",
                (c0 + start + 1, c0 + start + k),
            )
    return {
        "product inserts": n_ins_p,
        "contact inserts": n_ins_c,
        "product updates": n_upd_p,
        "contact updates": n_upd_c,
    }


def gen_hot(dsn: str, n: int, rounds: int = 5) -> dict[str, int]:
    """Each transaction: `rounds` x (update 100 products, update 100 contacts) = 1000 changes."""
    per_table = TX_ROWS // (2 * rounds)
    txs = n // TX_ROWS
    with psycopg.connect(dsn) as conn:
        p_ids = [r[0] for r in conn.execute("SELECT id FROM products WHERE sku LIKE 'BENCH-%%' ORDER BY id")]
        c_ids = [r[0] for r in conn.execute("SELECT id FROM contacts WHERE email LIKE 'bench%%' ORDER BY id")]
        conn.commit()
        need = txs * per_table
        if len(p_ids) < need or len(c_ids) < need:
            raise RuntimeError(f"hot workload needs {need} bench products and contacts; run the distinct one first")
        for t in range(txs):
            lo, hi = t * per_table, (t + 1) * per_table - 1
            with conn.transaction():
                for r in range(rounds):
                    conn.execute(
                        "UPDATE products SET unit_price = unit_price + 0.01 WHERE id BETWEEN %s AND %s",
                        (p_ids[lo], p_ids[hi]),
                    )
                    conn.execute(
                        "UPDATE contacts SET job_title = %s WHERE id BETWEEN %s AND %s",
                        (f"Buyer round {r}", c_ids[lo], c_ids[hi]),
                    )
    return {
        "product updates": txs * per_table * rounds,
        "contact updates": txs * per_table * rounds,
        "distinct keys": 2 * txs * per_table,
    }


# --- the two measurements --------------------------------------------------------------


def make_source(config: Config, dsn: str, slot: str) -> PgSlotSource:
    return PgSlotSource(
        dsn,
        slot=slot,
        publication=config.source.publication,
        name=slot,
        timezone=config.erp.timezone,
        drop_origins=[config.source.origin],
        status_interval=config.source.status_interval_s,
    )


def run_decode(config: Config, dsn: str, slot: str, n: int) -> dict[str, Any]:
    source = make_source(config, dsn, slot)
    got = 0
    t0 = time.perf_counter()
    source.start()
    try:
        while got < n:
            changes = source.read(timeout=0.5, max_changes=config.pipeline.batch_size)
            got += len(changes)
            if changes:
                source.ack(Position(slot, source.committed))
        elapsed = time.perf_counter() - t0
    finally:
        source.close()
    return {"events": got, "seconds": elapsed, "events_per_s": got / elapsed}


class _Timed:
    """Accumulates wall time spent in wrapped callables (main thread only)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
                self.calls[name] = self.calls.get(name, 0) + 1

        return timed


class _CountingProcessor:
    """Hands batches to the real Processor; stops the Runner once n changes went through."""

    def __init__(self, inner: Processor, n: int, timed: _Timed) -> None:
        self.inner = inner
        self.stop = inner.stop
        self.n = n
        self.count = 0
        self.batches = 0
        self.done_at: float | None = None
        self._process = timed.wrap("process", inner.process)

    def process(self, changes: Any, **kwargs: Any) -> Any:
        report = self._process(changes, **kwargs)
        self.count += len(changes)
        self.batches += 1
        if self.count >= self.n and self.done_at is None:
            self.done_at = time.perf_counter()
            self.stop.set()
        return report


def run_full(config: Config, dsn: str, slot: str, n: int) -> dict[str, Any]:
    from replicator.app import build

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(f"replicator.{t}" for t in STATE_TABLES))
    parts = build(config)
    timed = _Timed()
    store, reader = parts.store, parts.reader
    # Where the main thread's time goes (instance attributes only; replicator code untouched).
    store.record = timed.wrap("state writes (store.record)", store.record)  # type: ignore[method-assign]
    store.crm_ids = timed.wrap("state reads (crm_ids)", store.crm_ids)  # type: ignore[method-assign]
    store.last_hashes = timed.wrap("state reads (last_hashes)", store.last_hashes)  # type: ignore[method-assign]
    store.save_checkpoint = timed.wrap("checkpoint on ack", store.save_checkpoint)  # type: ignore[method-assign]
    for name in ("rows_by_key", "related_rows", "base_keys_by_join"):
        setattr(reader, name, timed.wrap(f"ERP reads ({name})", getattr(reader, name)))
    parts.sink.apply = timed.wrap("sink.apply (NullSink)", parts.sink.apply)
    stop = threading.Event()
    processor = Processor(parts.planner, reader, store, parts.sink, config.pipeline.retry, stop)
    counting = _CountingProcessor(processor, n, timed)
    source = make_source(config, dsn, slot)

    def checkpoint(position: Position) -> None:
        store.save_checkpoint(position.stream, int_to_lsn(position.offset), position.offset)

    runner = Runner(
        source,
        counting,  # type: ignore[arg-type]
        Health(config.pipeline.stall_timeout_s),
        batch_size=config.pipeline.batch_size,
        max_wait_s=config.pipeline.max_wait_ms / 1000,
        queue_size=config.pipeline.queue_size,
        on_ack=checkpoint,
    )
    coalesced0 = metrics.REGISTRY.get_sample_value("replicator_coalesced_total") or 0.0
    timeout = threading.Timer(600, stop.set)
    timeout.start()
    t0 = time.perf_counter()
    try:
        runner.run()
    finally:
        timeout.cancel()
        parts.close()
    if counting.done_at is None:
        raise RuntimeError(f"full run stopped after {counting.count} of {n} changes")
    elapsed = counting.done_at - t0
    coalesced = (metrics.REGISTRY.get_sample_value("replicator_coalesced_total") or 0.0) - coalesced0
    with psycopg.connect(dsn) as conn:
        synced = conn.execute("SELECT count(*) FROM replicator.sync_state").fetchone()[0]  # type: ignore[index]
        failed = conn.execute("SELECT count(*) FROM replicator.dead_letters WHERE status = 'open'").fetchone()[0]  # type: ignore[index]
    return {
        "events": counting.count,
        "seconds": elapsed,
        "events_per_s": counting.count / elapsed,
        "batches": counting.batches,
        "coalesced": int(coalesced),
        "sink_ops": parts.sink.applied,
        "sync_state_rows": int(synced),
        "open_dead_letters": int(failed),
        "main_thread_seconds": {k: round(v, 3) for k, v in sorted(timed.seconds.items())},
        "calls": dict(sorted(timed.calls.items())),
    }


# --- driver -------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20k events per workload")
    parser.add_argument("--events", type=int, help="row changes per workload (default 100000; quick 20000)")
    parser.add_argument("--reps", type=int, help="repetitions per workload (default 3)")
    parser.add_argument("--workloads", default="distinct,hot")
    args = parser.parse_args()
    n = args.events or (20_000 if args.quick else 100_000)
    n -= n % TX_ROWS
    reps = args.reps or 3
    workloads = args.workloads.split(",")

    base = c.workdir("throughput")
    c.say(f"cluster under {base}")
    cluster = start_cluster(base / "pg")
    results: dict[str, Any] = {"machine": c.machine(), "events": n, "reps": reps, "workloads": {}}
    try:
        dsn = load_sample_erp(cluster, "erp")
        text = c.example_config_text(
            crm={"kind": "discard"},
            source={"kind": "pg_slot", "slot": "bench_setup", "publication": "bench"},
            metrics={"listen": ""},
        )
        config = parse_config(text, "bench-config", env={"ERP_DSN": dsn})
        setup(config, crm=False)
        drop_slot(dsn, "bench_setup")
        results["batch_size"] = config.pipeline.batch_size
        results["max_wait_ms"] = config.pipeline.max_wait_ms
        for wl in workloads:
            slots = [f"bench_{wl}_{kind}_{i}" for i in range(reps) for kind in ("decode", "full")]
            for slot in slots:
                create_slot(dsn, slot)
            c.say(f"[{wl}] generating {n:,} row changes in transactions of {TX_ROWS}")
            t = time.perf_counter()
            made = gen_distinct(dsn, n) if wl == "distinct" else gen_hot(dsn, n)
            gen_s = time.perf_counter() - t
            total = sum(v for k, v in made.items() if k != "distinct keys")
            c.say(f"[{wl}] generated {made} in {gen_s:.1f} s")
            runs: list[dict[str, Any]] = []
            for i in range(reps):
                d = run_decode(config, dsn, f"bench_{wl}_decode_{i}", total)
                drop_slot(dsn, f"bench_{wl}_decode_{i}")
                rss_decode = c.peak_rss_mib()
                f = run_full(config, dsn, f"bench_{wl}_full_{i}", total)
                drop_slot(dsn, f"bench_{wl}_full_{i}")
                rss_full = c.peak_rss_mib()
                ratio = f["events_per_s"] / d["events_per_s"]
                c.say(
                    f"[{wl}] rep {i + 1}/{reps}: decode {d['events_per_s']:,.0f} ev/s, "
                    f"full {f['events_per_s']:,.0f} ev/s (ratio {ratio:.3f}), coalesced {f['coalesced']:,}, "
                    f"sink ops {f['sink_ops']:,}, peak RSS {rss_full:.0f} MiB"
                )
                c.say(f"        main thread: {f['main_thread_seconds']}")
                runs.append(
                    {
                        "decode": d,
                        "full": f,
                        "ratio": ratio,
                        "peak_rss_mib_after_decode": rss_decode,
                        "peak_rss_mib_after_full": rss_full,
                    }
                )
            results["workloads"][wl] = {
                "changes": made,
                "total_changes": total,
                "generate_seconds": gen_s,
                "runs": runs,
                "median_decode_events_per_s": c.median([r["decode"]["events_per_s"] for r in runs]),
                "median_full_events_per_s": c.median([r["full"]["events_per_s"] for r in runs]),
                "median_ratio": c.median([r["ratio"] for r in runs]),
            }
    finally:
        with contextlib.suppress(Exception):
            cluster.destroy()
    results["peak_rss_mib"] = c.peak_rss_mib()

    rows = []
    for wl, r in results["workloads"].items():
        runs = r["runs"]
        full = [x["full"] for x in runs]
        rows.append(
            [
                wl,
                r["total_changes"],
                len(runs),
                r["median_decode_events_per_s"],
                r["median_full_events_per_s"],
                f"{r['median_ratio']:.4f}",
                f"{100 * c.median([x['coalesced'] / x['events'] for x in full]):.0f}%",
                c.median([x["sink_ops"] for x in full]),
            ]
        )
    print()
    print(
        f"pipeline throughput: batch_size {results['batch_size']}, NullSink, real StateStore "
        f"(state writes included); medians over {reps} repetitions"
    )
    print(
        c.table(
            ["workload", "events", "reps", "decode ev/s", "full ev/s", "full/decode", "coalesced", "sink ops"],
            rows,
        )
    )
    print()
    print("full path, main-thread seconds per repetition (median):")
    brk = []
    for wl, r in results["workloads"].items():
        keys = sorted({k for x in r["runs"] for k in x["full"]["main_thread_seconds"]})
        for k in keys:
            brk.append([wl, k, c.median([x["full"]["main_thread_seconds"].get(k, 0.0) for x in r["runs"]])])
        brk.append([wl, "wall (N events)", c.median([x["full"]["seconds"] for x in r["runs"]])])
    print(c.table(["workload", "where", "seconds"], brk))
    print(f"\npeak RSS of the benchmark process: {results['peak_rss_mib']:.0f} MiB")
    path = c.write_results("pipeline_throughput", results)
    print(f"results: {path.relative_to(c.ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
