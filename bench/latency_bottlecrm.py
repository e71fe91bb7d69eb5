"""ERP commit -> BottleCRM acknowledgement latency, against the raw BottleCRM write latency.

    uv run python bench/latency_bottlecrm.py [--quick] [--updates K] [--interval S]

Starts a throwaway PostgreSQL 15 with the sample ERP (schema + seed) and a real
BottleCRM (devstack; its install/migration is cached and its startup is not timed),
runs `replicator setup` and `replicator run` as a subprocess, waits until the initial
backfill is done and /healthz reports healthy with nothing pending, then:

- K single-row updates, alternating a product's price and a customer's name, started
  open-loop on a jittered schedule (gaps uniform in [0.5, 1.5] x `--interval`, default
  0.1 s: a steady low rate whose phase does not lock onto the replicator's polling).
  For each: UPDATE in autocommit, then `SELECT clock_timestamp()` on the same
  connection (the commit time as seen by the server, a round trip late). A poller
  watches replicator.sync_state until the record's last_synced_at (now() of the
  state-write transaction the replicator opens right after BottleCRM acknowledged) is
  later. latency = last_synced_at - commit time: both timestamps come from the same
  server clock, so the poll interval does not affect the figure. Several updates may
  be in flight (and share a batch); a record is only updated again once acknowledged.
- Cross-check: the replicator's own histogram replicator_commit_to_ack_seconds
  (scraped from /metrics before and after; quantiles estimated from buckets as
  Prometheus' histogram_quantile does) and replicator_crm_request_seconds.
- Baseline, same run, replicator idle: the same K records written directly with httpx
  on the same schedule (PATCH /api/accounts/ID/ or PUT /api/invoices/products/ID/, the
  verb the sink uses, the payload shape the sink sends, a kept-alive connection): the
  CRM's own share of the latency.

Prints p50/p95/p99 and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import subprocess
import time
from collections import defaultdict
from datetime import datetime
from typing import Any

import _common as c
import httpx
import psycopg

from replicator.devstack.bottlecrm import start_bottlecrm
from replicator.devstack.postgres import free_port, start_cluster
from replicator.devstack.sample_erp import load_sample_erp

CONFIG = c.CONFIG
_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\}\s+([0-9.eE+-]+|NaN|\+Inf)$")


# --- /metrics ---------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = frozenset(tuple(kv.split("=", 1)) for kv in re.findall(r'(\w+="[^"]*")', m.group(2)))
        labels = frozenset((k, v.strip('"')) for k, v in labels)
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def histogram_delta(
    before: dict[Any, float], after: dict[Any, float], name: str, match: dict[str, str]
) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) buckets of the difference after - before, summed over
    series whose labels include `match`."""
    acc: dict[float, float] = defaultdict(float)
    for (metric, labels), value in after.items():
        if metric != f"{name}_bucket":
            continue
        d = dict(labels)
        if any(d.get(k) != v for k, v in match.items()):
            continue
        le = math.inf if d["le"] == "+Inf" else float(d["le"])
        acc[le] += value - before.get((metric, labels), 0.0)
    return sorted(acc.items())


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return math.nan


# --- the measurement --------------------------------------------------------------------


def crm_payload(env: dict[str, str], entity: str, key: tuple[Any, ...]) -> tuple[str, str, dict[str, Any]]:
    """(object, crm_id, body) as the sink would send it for this ERP row now."""
    from replicator.app import build
    from replicator.change import Change, Op, Position
    from replicator.config import load_config
    from replicator.mapping.plan import Target

    parts = build(load_config(CONFIG, env))
    try:
        ent = parts.entities[entity]
        row = next(iter(parts.reader.rows_by_key(ent.table, ent.key, [key], types=ent.key_types).values()))
        target = Target(ent, key, Change("bench", ent.table, Op.READ, key, None, row, Position("bench", 0)), row)
        planned = parts.planner.plan([target], parts.reader, parts.store.crm_ids, lambda *_: {})[0]
        assert planned.op is not None and planned.op.crm_id, planned
        body = dict(planned.op.record)
        # Mirrors BottleCrmSink._body: products carry their SKU, the others the external-id custom field.
        if planned.op.object == "product":
            body["sku"] = planned.op.external_id
        else:
            body["custom_fields"] = {"erp_id": planned.op.external_id}
        return planned.op.object, planned.op.crm_id, body
    finally:
        parts.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 updates")
    parser.add_argument("--updates", type=int, help="number of ERP updates (default 200; quick 20)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between update starts (default 0.1)")
    parser.add_argument("--poll", type=float, default=0.01, help="sync_state poll interval in seconds")
    args = parser.parse_args()
    k_updates = args.updates or (20 if args.quick else 200)

    base = c.workdir("latency")
    results: dict[str, Any] = {"machine": c.machine(), "updates": k_updates, "interval_s": args.interval}
    proc: subprocess.Popen[str] | None = None
    crm = None
    cluster = None
    try:
        t = time.perf_counter()
        cluster = start_cluster(base / "pg")
        erp_dsn = load_sample_erp(cluster, "erp")
        crm = start_bottlecrm(cluster, base / "crm")
        results["stack_start_seconds"] = time.perf_counter() - t
        c.say(f"PostgreSQL + BottleCRM up in {results['stack_start_seconds']:.1f} s ({crm.url}); workdir {base}")

        metrics_port = free_port()
        env = {
            **os.environ,
            "ERP_DSN": erp_dsn,
            "BOTTLECRM_URL": crm.url,
            "BOTTLECRM_TOKEN": crm.token,
            "REPLICATOR_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        }
        log_path = base / "replicator.log"
        t = time.perf_counter()
        proc = c.run_until_backfilled(CONFIG, env, erp_dsn, log_path, metrics_port)
        conn = psycopg.connect(erp_dsn, autocommit=True)
        poll = psycopg.connect(erp_dsn, autocommit=True)
        results["backfill_seconds"] = time.perf_counter() - t
        c.say(f"backfill done and idle after {results['backfill_seconds']:.1f} s; measuring {k_updates} updates")

        products = [
            (r[0], r[1], float(r[2]))
            for r in conn.execute("SELECT id, sku, unit_price FROM products WHERE NOT discontinued ORDER BY id")
        ]
        customers = [(r[0], f"CUST-{r[0]}") for r in conn.execute("SELECT id FROM customers WHERE active ORDER BY id")]
        # CRM ids and payload shapes for the direct-write baseline.
        targets: dict[tuple[str, int], tuple[str, str, dict[str, Any]]] = {}
        for pid, sku, _ in products:
            targets[("products", pid)] = crm_payload(env, "products", (sku,))
        for cid, _ in customers:
            targets[("customers", cid)] = crm_payload(env, "customers", (cid,))
        http = httpx.Client(
            base_url=crm.url, headers={"Authorization": f"Bearer {crm.token}", "Accept": "application/json"}, timeout=30
        )

        before = scrape(metrics_port)
        rng = random.Random(42)
        plan: list[tuple[str, str, tuple[str, int], str, tuple[Any, ...], dict[str, Any]]] = []
        for i in range(k_updates):
            if i % 2 == 0:
                pid, sku, price = products[(i // 2) % len(products)]
                new_price = round(price + 0.01 * (i + 1), 2)
                plan.append(
                    (
                        "products",
                        sku,
                        ("products", pid),
                        "UPDATE products SET unit_price = %s WHERE id = %s",
                        (new_price, pid),
                        {"price": f"{new_price + 1000:.2f}"},
                    )
                )
            else:
                cid, erp_key = customers[(i // 2) % len(customers)]
                plan.append(
                    (
                        "customers",
                        erp_key,
                        ("customers", cid),
                        "UPDATE customers SET name = %s WHERE id = %s",
                        (f"Bench Customer {cid} r{i}", cid),
                        {"name": f"Bench Customer {cid} direct {i}"},
                    )
                )
        # Open loop: update i starts at a jittered schedule (mean `interval`), whatever the
        # acknowledgements do; several may be in flight. A key is only reused once acked.
        offsets, t_acc = [], 0.0
        for _ in range(k_updates):
            offsets.append(t_acc)
            t_acc += args.interval * rng.uniform(0.5, 1.5)
        samples: list[dict[str, Any]] = []
        pending: dict[tuple[str, str], tuple[int, datetime]] = {}
        waited_for_key = 0
        start = time.monotonic()
        i = 0
        while i < k_updates or pending:
            now = time.monotonic()
            if i < k_updates and now >= start + offsets[i]:
                entity, erp_key, _, stmt, params, _ = plan[i]
                if (entity, erp_key) in pending:
                    waited_for_key += 1  # previous update of this record not acked yet: wait for it
                else:
                    conn.execute(stmt, params)
                    committed: datetime = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
                    pending[(entity, erp_key)] = (i, committed)
                    i += 1
                    if i % 50 == 0:
                        c.say(f"  {i}/{k_updates}")
                    continue
            if pending:
                keys = list(pending)
                rows = poll.execute(
                    "SELECT entity, erp_key, last_synced_at FROM replicator.sync_state "
                    "WHERE (entity, erp_key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                    ([k[0] for k in keys], [k[1] for k in keys]),
                ).fetchall()
                for entity, erp_key, synced in rows:
                    idx, committed = pending[(entity, erp_key)]
                    if synced is not None and synced > committed:
                        del pending[(entity, erp_key)]
                        samples.append(
                            {
                                "i": idx,
                                "entity": entity,
                                "erp_key": erp_key,
                                "latency_s": (synced - committed).total_seconds(),
                            }
                        )
                for (entity, erp_key), (idx, _committed) in pending.items():
                    if time.monotonic() - start - offsets[idx] > 30:
                        raise TimeoutError(f"update {idx} ({entity} {erp_key}) not acked in 30 s; log {log_path}")
            time.sleep(args.poll)
        results["elapsed_s"] = time.monotonic() - start
        results["updates_delayed_for_key_reuse"] = waited_for_key
        samples.sort(key=lambda s: s["i"])
        after = scrape(metrics_port)
        # Baseline in the same run, replicator idle: the same records written directly,
        # as the sink writes them, on the same schedule.
        direct: list[dict[str, Any]] = []
        start = time.monotonic()
        for i in range(k_updates):
            slot = start + offsets[i]
            if slot > time.monotonic():
                time.sleep(slot - time.monotonic())
            entity, _, tkey, _, _, change = plan[i]
            obj, crm_id, body = targets[tkey]
            path = f"/api/invoices/products/{crm_id}/" if obj == "product" else f"/api/accounts/{crm_id}/"
            method = "PUT" if obj == "product" else "PATCH"
            t0 = time.perf_counter()
            resp = http.request(method, path, json={**body, **change})
            elapsed = time.perf_counter() - t0
            if not resp.is_success:
                raise RuntimeError(f"direct {method} {path}: HTTP {resp.status_code}: {resp.text[:300]}")
            direct.append({"i": i, "entity": entity, "direct_write_s": elapsed})
        http.close()
        conn.close()
        poll.close()
    finally:
        c.stop_stack(proc, crm, cluster)

    results["samples"] = samples
    results["direct"] = direct
    rows = []
    summary: dict[str, Any] = {}

    def add(label: str, values: list[float]) -> None:
        ms = [v * 1000 for v in values]
        stats = {
            "n": len(ms),
            "p50_ms": c.percentile(ms, 50),
            "p95_ms": c.percentile(ms, 95),
            "p99_ms": c.percentile(ms, 99),
            "max_ms": max(ms) if ms else math.nan,
        }
        summary[label] = stats
        rows.append([label, stats["n"], stats["p50_ms"], stats["p95_ms"], stats["p99_ms"], stats["max_ms"]])

    for entity in ("all", "products", "customers"):
        pick = [s for s in samples if entity == "all" or s["entity"] == entity]
        add(f"commit -> CRM ack, sync_state ({entity})", [s["latency_s"] for s in pick])
    for entity in ("all", "products", "customers"):
        pick = [s for s in direct if entity == "all" or s["entity"] == entity]
        add(f"direct BottleCRM write, httpx ({entity})", [s["direct_write_s"] for s in pick])

    hist_rows = []
    for entity in ("products", "customers"):
        b = histogram_delta(before, after, "replicator_commit_to_ack_seconds", {"entity": entity})
        n = b[-1][1] if b else 0
        est = {q: bucket_quantile(q, b) * 1000 for q in (0.5, 0.95, 0.99)}
        summary[f"metric commit_to_ack ({entity})"] = {"n": n, **{f"p{int(q * 100)}_ms": v for q, v in est.items()}}
        hist_rows.append([f"replicator_commit_to_ack_seconds{{entity={entity}}}", int(n), *est.values()])
    for resource, method in (("product", "PUT"), ("account", "PATCH")):
        b = histogram_delta(before, after, "replicator_crm_request_seconds", {"resource": resource, "method": method})
        n = b[-1][1] if b else 0
        est = {q: bucket_quantile(q, b) * 1000 for q in (0.5, 0.95, 0.99)}
        summary[f"metric crm_request {method} {resource}"] = {
            "n": n,
            **{f"p{int(q * 100)}_ms": v for q, v in est.items()},
        }
        hist_rows.append([f"replicator_crm_request_seconds{{{method} {resource}}}", int(n), *est.values()])

    p50_e2e = summary["commit -> CRM ack, sync_state (all)"]["p50_ms"]
    p50_direct = summary["direct BottleCRM write, httpx (all)"]["p50_ms"]
    results["summary"] = summary
    results["ratio_p50_e2e_over_direct"] = p50_e2e / p50_direct
    results["overhead_p50_ms"] = p50_e2e - p50_direct
    results["peak_rss_mib"] = c.peak_rss_mib()

    print()
    print(
        f"commit -> BottleCRM ack latency: {k_updates} single-row updates, one per {args.interval:g} s "
        f"(jittered, open loop); {results['elapsed_s']:.1f} s in all"
    )
    print(c.table(["measure", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows))
    print()
    print("replicator's own histograms (delta over the measurement; bucket-interpolated estimates)")
    print(c.table(["metric", "n", "p50 ms", "p95 ms", "p99 ms"], hist_rows))
    print()
    print(
        f"p50 end-to-end / p50 direct CRM write = {results['ratio_p50_e2e_over_direct']:.2f}; "
        f"replicator overhead at p50 = {results['overhead_p50_ms']:.0f} ms"
    )
    print(
        f"stack start (not measured) {results['stack_start_seconds']:.1f} s; backfill + idle "
        f"{results['backfill_seconds']:.1f} s"
    )
    path = c.write_results("latency_bottlecrm", results)
    print(f"results: {path.relative_to(c.ROOT)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
