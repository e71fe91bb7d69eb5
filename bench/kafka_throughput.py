"""Debezium events/s through the Kafka source and pipeline, against Debezium's own capture rate.

    uv run python bench/kafka_throughput.py [--quick] [--events N] [--reps R]

Starts a throwaway PostgreSQL 15 with the sample ERP, the tansu broker and Kafka Connect
with Debezium 3.6.3 (devstack), registers the Debezium PostgreSQL connector for the
sample ERP and waits for its snapshot, then:

1. capture: generates N row changes on products and contacts (40 % product inserts,
   20 % contact inserts, 20 % product updates, 20 % contact updates, transactions of
   1000 rows) and waits until Debezium has produced all N events into the broker. The
   capture rate is N over the time from the first commit to the last event's broker
   timestamp: what Debezium itself sustains into Kafka here.
2. consume, R repetitions, each with a new consumer group reading the same topics from
   the beginning (all pre-produced: the snapshot plus the N changes), interleaved:
   (a) decode:   KafkaSource.read() (poll + decode into Change) until every event is read;
   (b) pipeline: the real Runner -> Processor (coalesce, route, plan, map, hash, batch)
                 -> NullSink, with the state in memory (bench/_memory_state.py): the
                 decode -> map -> coalesce -> batch chain on its own;
   (c) +state:   the same with the real PostgreSQL state store (sync_state, id_map,
                 checkpoints per partition), as `replicator run` does it.

Everything except the broker, Connect and PostgreSQL runs in this one Python process;
the pipeline is single-threaded apart from the source's reader thread (one core).
Prints medians and the ratios pipeline/capture; writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from typing import Any

import _common as c
import psycopg
from _memory_state import MemoryState
from pipeline_throughput import STATE_TABLES, TX_ROWS, gen_distinct  # the same distinct-keys workload

from replicator.app import build
from replicator.change import Position
from replicator.config import parse_config
from replicator.config.model import Config
from replicator.devstack.connect import start_connect, wait_for_records
from replicator.devstack.postgres import start_cluster
from replicator.devstack.sample_erp import load_sample_erp
from replicator.devstack.tansu import TANSU_CONSUMER_SETTINGS, start_broker
from replicator.jobs.connect import ConnectClient, load_connector_file, register
from replicator.jobs.setup import setup
from replicator.ops import metrics
from replicator.ops.health import Health
from replicator.pipeline.processor import Processor
from replicator.pipeline.runner import Runner
from replicator.sources.open import open_source

TOPIC_TABLES = ("public.products", "public.contacts")


def register_postgres(url: str, host: str, port: int, prefix: str) -> None:
    """connectors/debezium-postgres.json, as `replicator setup` registers it."""
    env = {
        "ERP_DB_HOST": host,
        "ERP_DB_PORT": str(port),
        "ERP_DB_NAME": "erp",
        "DEBEZIUM_TOPIC_PREFIX": prefix,
        "KAFKA_TOPIC_PARTITIONS": "1",
    }
    connector = load_connector_file(c.ROOT / "connectors" / "debezium-postgres.json", env)
    client = ConnectClient(url)
    try:
        (done,) = register(client, [connector], wait_s=60)
    finally:
        client.close()
    if done.state is None or not done.state.healthy:
        raise RuntimeError(f"Debezium connector not running: {done.state}")


def scalar(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def group_config(text: str, bootstrap: str, prefix: str, erp_dsn: str) -> Config:
    """The sample config with a kafka source reading this run's topics as a fresh group."""
    return parse_config(
        text,
        "bench-config",
        env={
            "ERP_DSN": erp_dsn,
            "KAFKA_BOOTSTRAP": bootstrap,
            "TOPIC_PREFIX": prefix,
            "GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
        },
    )


def config_text(batch_size: int) -> str:
    return c.example_config_text(
        crm={"kind": "discard"},
        source={
            "kind": "kafka",
            "bootstrap_servers": "${KAFKA_BOOTSTRAP}",
            "group_id": "${GROUP_ID}",
            "topic_prefix": "${TOPIC_PREFIX}",
            "topics": [f"${{TOPIC_PREFIX}}.{t}" for t in TOPIC_TABLES],
            "consumer": {k: v for k, v in TANSU_CONSUMER_SETTINGS.items()},
        },
        state={"dsn": "${ERP_DSN}"},
        metrics={"listen": ""},
        pipeline={"batch_size": batch_size},
    )


class _Counting:
    """Hands batches to the real Processor; stops the Runner once n changes went through."""

    def __init__(self, inner: Processor, n: int) -> None:
        self.inner = inner
        self.stop = inner.stop
        self.n = n
        self.count = 0
        self.done_at: float | None = None
        self.cpu_at = 0.0

    def process(self, changes: Any, **kwargs: Any) -> Any:
        report = self.inner.process(changes, **kwargs)
        self.count += len(changes)
        if self.count >= self.n and self.done_at is None:
            self.done_at = time.perf_counter()
            self.cpu_at = time.process_time()
            self.stop.set()
        return report


def run_decode(config: Config, n: int) -> dict[str, Any]:
    parts = build(config)
    opened = open_source(parts)
    source = opened.source
    got = 0
    try:
        source.start()
        t0: float | None = None
        cpu0 = 0.0
        while got < n:
            changes = source.read(timeout=0.5, max_changes=config.pipeline.batch_size)
            if changes and t0 is None:
                # From the first record: the group join (session.timeout.ms / 2 on tansu) is not decoding.
                t0, cpu0 = time.perf_counter(), time.process_time()
            got += len(changes)
        elapsed = time.perf_counter() - (t0 or time.perf_counter())
        cpu = time.process_time() - cpu0
    finally:
        source.close()
        parts.close()
    return {
        "events": got,
        "seconds": elapsed,
        "events_per_s": got / elapsed,
        "cpu_s": cpu,
        "events_per_cpu_s": got / cpu,
    }


def run_pipeline(config: Config, n: int, *, with_state: bool) -> dict[str, Any]:
    parts = build(config)
    if with_state:
        with psycopg.connect(config.state_dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE " + ", ".join(f"replicator.{t}" for t in STATE_TABLES))
        store: Any = parts.store
    else:
        store = MemoryState()
    opened = open_source(parts)
    stop = threading.Event()
    processor = Processor(parts.planner, parts.reader, store, parts.sink, config.pipeline.retry, stop)
    counting = _Counting(processor, n)
    first: list[float] = []
    inner_process = processor.process

    def process(changes: Any, **kwargs: Any) -> Any:
        if not first:
            first.extend((time.perf_counter(), time.process_time()))
        return inner_process(changes, **kwargs)

    processor.process = process  # type: ignore[method-assign]

    def on_ack(position: Position) -> None:
        if with_state and opened.on_ack is not None:
            opened.on_ack(position)

    runner = Runner(
        opened.source,
        counting,
        Health(config.pipeline.stall_timeout_s),
        batch_size=config.pipeline.batch_size,
        max_wait_s=config.pipeline.max_wait_ms / 1000,
        queue_size=config.pipeline.queue_size,
        on_ack=on_ack,
    )
    coalesced0 = metrics.REGISTRY.get_sample_value("replicator_coalesced_total") or 0.0
    timeout = threading.Timer(600, stop.set)
    timeout.start()
    try:
        runner.run()
    finally:
        timeout.cancel()
        parts.close()
    if counting.done_at is None or not first:
        raise RuntimeError(f"pipeline stopped after {counting.count} of {n} changes")
    elapsed = counting.done_at - first[0]
    cpu = counting.cpu_at - first[1]
    coalesced = (metrics.REGISTRY.get_sample_value("replicator_coalesced_total") or 0.0) - coalesced0
    return {
        "events": counting.count,
        "seconds": elapsed,
        "events_per_s": counting.count / elapsed,
        "cpu_s": cpu,
        "events_per_cpu_s": counting.count / cpu,
        "coalesced": int(coalesced),
        "sink_ops": parts.sink.applied,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20k changes")
    parser.add_argument("--events", type=int, help="row changes to capture (default 100000; quick 20000)")
    parser.add_argument("--reps", type=int, help="repetitions (default 3)")
    parser.add_argument("--batch-size", type=int, default=2000)
    args = parser.parse_args()
    n = args.events or (20_000 if args.quick else 100_000)
    n -= n % TX_ROWS
    reps = args.reps or 3

    base = c.workdir("kafka")
    c.say(f"work under {base}")
    cluster = start_cluster(base / "pg")
    broker = connect = None
    results: dict[str, Any] = {"machine": c.machine(), "changes": n, "reps": reps, "batch_size": args.batch_size}
    try:
        dsn = load_sample_erp(cluster, "erp")
        broker = start_broker(base / "tansu")
        t = time.perf_counter()
        connect = start_connect(
            base / "connect", broker.bootstrap, env={"ERP_DB_USER": "postgres", "ERP_DB_PASSWORD": ""}
        )
        results["connect_start_s"] = round(time.perf_counter() - t, 1)
        prefix = "bench"
        text = config_text(args.batch_size)
        config = group_config(text, broker.bootstrap, prefix, dsn)
        setup(config, crm=False)

        register_postgres(connect.url, cluster.host, cluster.port, prefix)
        seed = {t: scalar(dsn, f"SELECT count(*) FROM {t}") for t in TOPIC_TABLES}
        for table in TOPIC_TABLES:
            wait_for_records(broker.bootstrap, f"{prefix}.{table}", seed[table], timeout=300)
        c.say(f"snapshot in the broker: {seed}")

        c.say(f"capture: generating {n:,} row changes in transactions of {TX_ROWS}")
        t0 = time.time()
        made = gen_distinct(dsn, n)
        gen_s = time.time() - t0
        counts = {t: seed[t] for t in TOPIC_TABLES}
        counts["public.products"] += made["product inserts"] + made["product updates"]
        counts["public.contacts"] += made["contact inserts"] + made["contact updates"]
        last_ms = 0
        for table in TOPIC_TABLES:
            got = wait_for_records(broker.bootstrap, f"{prefix}.{table}", counts[table], timeout=900)
            last_ms = max(last_ms, got.last_ms or 0)
        capture_s = last_ms / 1000 - t0
        capture = {
            "changes": n,
            "generate_s": round(gen_s, 2),
            "first_commit_to_last_event_s": round(capture_s, 2),
            "events_per_s": n / capture_s,
        }
        results["capture"] = capture
        c.say(
            f"capture: {n:,} changes generated in {gen_s:.1f} s, all in the broker after {capture_s:.1f} s "
            f"-> Debezium captures {capture['events_per_s']:,.0f} ev/s"
        )

        total = sum(counts.values())
        runs: list[dict[str, Any]] = []
        for i in range(reps):
            d = run_decode(group_config(text, broker.bootstrap, prefix, dsn), total)
            p = run_pipeline(group_config(text, broker.bootstrap, prefix, dsn), total, with_state=False)
            s = run_pipeline(group_config(text, broker.bootstrap, prefix, dsn), total, with_state=True)
            c.say(
                f"rep {i + 1}/{reps}: decode {d['events_per_s']:,.0f} ev/s ({d['events_per_cpu_s']:,.0f}/CPU-s), "
                f"pipeline {p['events_per_s']:,.0f} ev/s ({p['events_per_cpu_s']:,.0f}/CPU-s), "
                f"+state {s['events_per_s']:,.0f} ev/s ({s['events_per_cpu_s']:,.0f}/CPU-s) "
                f"(coalesced {p['coalesced']:,}, sink ops {p['sink_ops']:,}), peak RSS {c.peak_rss_mib():.0f} MiB"
            )
            runs.append({"decode": d, "pipeline": p, "pipeline_with_state": s})
        kinds = ("decode", "pipeline", "pipeline_with_state")
        med = {k: c.median([r[k]["events_per_s"] for r in runs]) for k in kinds}
        med_cpu = {k: c.median([r[k]["events_per_cpu_s"] for r in runs]) for k in kinds}
        cap = capture["events_per_s"]
        results["runs"] = runs
        results["median_events_per_s"] = med
        results["median_events_per_cpu_s"] = med_cpu
        results["ratio_to_capture"] = {k: v / cap for k, v in med.items()}
        names = {
            "decode": "decode (consume + decode)",
            "pipeline": "pipeline, state in memory",
            "pipeline_with_state": "pipeline, PostgreSQL state",
        }
        print()
        print(
            c.table(
                ["measure", "events", "median ev/s (wall)", "x capture", "median ev per CPU-s of this process"],
                [["Debezium capture into the broker", n, cap, 1.0, "-"]]
                + [[names[k], total, med[k], med[k] / cap, med_cpu[k]] for k in kinds],
            )
        )
        print(f"results: {c.write_results('kafka_throughput', results)}")
    finally:
        if connect is not None:
            connect.stop()
        if broker is not None:
            broker.stop()
        cluster.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
