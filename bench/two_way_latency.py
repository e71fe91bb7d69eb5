"""CRM edit -> ERP row latency on the webhook path, against ERP edit -> CRM in the same run.

    uv run python bench/two_way_latency.py [--quick] [--edits N]

Starts a throwaway PostgreSQL 15 with the sample ERP (schema + seed) and a real
BottleCRM in Celery + Redis mode (devstack; install, migrations and startup are not
timed), registers a signed webhook (account.*, contact.*, deal.*) pointing at the
replicator's port, runs `replicator setup` and `replicator run` as a subprocess with
examples/erp/replicator-two-way.yaml (polling off: the webhook path only), waits until
the backfill is done, /healthz reports idle and the inbox is empty (the backfill's own
creates come back as webhooks and are checked as echoes first), then:

- CRM -> ERP: N sequential edits (default 100) through BottleCRM's REST API (PATCH,
  kept-alive connection) of four fields of four accounts and four contacts: account
  website, account industry (FINANCE -> 'FIN' ...: the mapping's reverse), contact first
  name, contact title (-> job_title). Each is timed until a 5 ms poll of the ERP row
  shows the mapped value, both from the PATCH's return and from before the PATCH.
  BottleCRM answers the PATCH first and sends the webhook from a Celery task queued by
  the request, so the CRM's own delay (task pickup, its HTTP POST) is part of the figure.
  Breakdown per edit from replicator.inbox.received_at (the webhook stored, on the same
  host's clock): PATCH return -> webhook in the inbox (BottleCRM + Celery + delivery),
  inbox -> ERP row seen (the replicator: fetch the CRM record, plan, write, commit, plus
  the poll). Cross-check: the replicator's histogram replicator_crm_to_erp_seconds
  (accounts have no updated_at in BottleCRM, so theirs starts at the webhook's arrival;
  contacts' at the CRM's updated_at).
- Baseline, same run, same records and fields: N sequential ERP UPDATEs (autocommit),
  each timed from the commit's return until a 5 ms poll of replicator.sync_state shows
  the record acknowledged by BottleCRM after the commit (polling the CRM itself with
  GETs would compete with the replicator for BottleCRM's two workers); a GET then
  checks that the CRM shows the value.

Prints p50/p90/p99/max and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import _common as c
import httpx
import psycopg
from latency_bottlecrm import bucket_quantile, histogram_delta, scrape

from replicator.devstack.bottlecrm import start_bottlecrm
from replicator.devstack.postgres import free_port, start_cluster
from replicator.devstack.quickstart_two_way import register_webhook
from replicator.devstack.replicator_process import wait_healthy_and_idle
from replicator.devstack.sample_erp import EXAMPLE, load_sample_erp
from replicator.sinks.bottlecrm import BottleCrmSink

CONFIG = EXAMPLE / "replicator-two-way.yaml"
RECORDS = (3, 4, 5, 6)  # customers.id and contacts.id
INDUSTRIES = (("FINANCE", "FIN"), ("TECHNOLOGY", "TECH"), ("MANUFACTURING", "MFG"))


class Edit:
    """One field of one record: how to change it on either side and how to read it on the other."""

    def __init__(self, kind: str, record: int, crm_id: str, i: int, nth: int) -> None:
        self.kind, self.record, self.crm_id = kind, record, crm_id
        self.object = "account" if kind.startswith("account") else "contact"
        self.crm_path = f"/api/{self.object}s/{crm_id}/"
        if kind == "account website":
            self.crm_body: dict[str, Any] = {"website": f"https://e{i}.bench.example"}
            self.erp_value: Any = self.crm_body["website"]
            self.erp_sql = "SELECT website FROM customers WHERE id = %s"
            self.erp_update = "UPDATE customers SET website = %s WHERE id = %s"
            self.crm_field, self.crm_value = "website", self.erp_value
        elif kind == "account industry":
            crm, erp = INDUSTRIES[nth % len(INDUSTRIES)]
            self.crm_body, self.erp_value = {"industry": crm}, erp
            self.erp_sql = "SELECT industry FROM customers WHERE id = %s"
            self.erp_update = "UPDATE customers SET industry = %s WHERE id = %s"
            self.crm_field, self.crm_value = "industry", crm
        elif kind == "contact first name":
            self.crm_body = {"first_name": f"Bench{i}"}
            self.erp_value = self.crm_body["first_name"]
            self.erp_sql = "SELECT first_name FROM contacts WHERE id = %s"
            self.erp_update = "UPDATE contacts SET first_name = %s, updated_at = now() WHERE id = %s"
            self.crm_field, self.crm_value = "first_name", self.erp_value
        else:
            self.crm_body = {"title": f"Title {i}"}
            self.erp_value = self.crm_body["title"]
            self.erp_sql = "SELECT job_title FROM contacts WHERE id = %s"
            self.erp_update = "UPDATE contacts SET job_title = %s, updated_at = now() WHERE id = %s"
            self.crm_field, self.crm_value = "title", self.erp_value


KINDS = ("account website", "account industry", "contact first name", "contact title")


def plan(n: int, crm_ids: dict[tuple[str, int], str], offset: int, edited: dict[tuple[str, int], int]) -> list[Edit]:
    """Edit i changes kind i % 4 of record (i // 4) % 4 to a value that field did not hold before
    (`edited` counts each field's edits across calls; the seed's industries are FIN, NULL, MFG, RETAIL)."""
    edits = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        record = RECORDS[(i // len(KINDS)) % len(RECORDS)]
        obj = "account" if kind.startswith("account") else "contact"
        edited[(kind, record)] = nth = edited.get((kind, record), 0) + 1
        edits.append(Edit(kind, record, crm_ids[(obj, record)], i + offset, nth))
    return edits


def wait_until(what: str, check: Callable[[], bool], poll_s: float, timeout: float = 30.0) -> float:
    """perf_counter() when `check` first held."""
    start = time.perf_counter()
    while True:
        if check():
            return time.perf_counter()
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"{what}: not seen after {timeout:.0f} s")
        time.sleep(poll_s)


def stats(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": c.percentile(ms, 50),
        "p90_ms": c.percentile(ms, 90),
        "p99_ms": c.percentile(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 edits each way")
    parser.add_argument("--edits", type=int, help="edits each way (default 100; quick 20)")
    args = parser.parse_args()
    n = args.edits or (20 if args.quick else 100)

    base = c.workdir("two-way")
    results: dict[str, Any] = {"machine": c.machine(), "edits": n, "config": str(CONFIG.relative_to(c.ROOT))}
    proc: subprocess.Popen[str] | None = None
    crm = cluster = None
    try:
        t = time.perf_counter()
        cluster = start_cluster(base / "pg")
        erp_dsn = load_sample_erp(cluster, "erp")
        crm = start_bottlecrm(cluster, base / "crm", celery=True)
        metrics_port = free_port()
        secret = register_webhook(crm, metrics_port)
        results["stack_start_seconds"] = time.perf_counter() - t
        c.say(f"PostgreSQL + BottleCRM (Celery) up in {results['stack_start_seconds']:.1f} s; workdir {base}")
        env = {
            **os.environ,
            "ERP_DSN": erp_dsn,
            "BOTTLECRM_URL": crm.url,
            "BOTTLECRM_TOKEN": crm.token,
            "BOTTLECRM_WEBHOOK_SECRET": secret,
            "BOTTLECRM_POLL_INTERVAL_S": "0",  # the webhook path only
            "REPLICATOR_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        }
        log_path = base / "replicator.log"
        t = time.perf_counter()
        proc = c.run_until_backfilled(CONFIG, env, erp_dsn, log_path, metrics_port)
        conn = psycopg.connect(erp_dsn, autocommit=True)
        # The backfill's own creates come back as webhooks (account.created ...) and are checked
        # as echoes one by one; /healthz does not count them, and the first edit would wait behind them.
        wait_until(
            "the backfill's webhooks processed",
            lambda: conn.execute("SELECT count(*) FROM replicator.inbox WHERE processed_at IS NULL").fetchone() == (0,),
            0.2,
            120,
        )
        results["backfill_seconds"] = time.perf_counter() - t
        c.say(f"backfill done and idle after {results['backfill_seconds']:.1f} s; {n} CRM edits, then {n} ERP edits")

        sink = BottleCrmSink(crm.url, crm.token)
        crm_ids: dict[tuple[str, int], str] = {}
        for record in RECORDS:
            for obj, prefix in (("account", "CUST"), ("contact", "CONT")):
                found = sink.lookup(obj, f"{prefix}-{record}")
                if found is None:
                    raise RuntimeError(f"{obj} {prefix}-{record} is not in the CRM after the backfill")
                crm_ids[(obj, record)] = str(found["id"])
        http = httpx.Client(
            base_url=crm.url, headers={"Authorization": f"Bearer {crm.token}", "Accept": "application/json"}, timeout=30
        )

        def erp_shows(e: Edit) -> bool:
            return conn.execute(e.erp_sql, (e.record,)).fetchone() == (e.erp_value,)

        def crm_acked(e: Edit, committed: datetime) -> bool:
            row = conn.execute(
                "SELECT last_synced_at FROM replicator.sync_state WHERE entity = %s AND erp_key = %s",
                (
                    "customers" if e.object == "account" else "contacts",
                    f"{'CUST' if e.object == 'account' else 'CONT'}-{e.record}",
                ),
            ).fetchone()
            return bool(row and row[0] and row[0] > committed)

        # CRM -> ERP
        edited: dict[tuple[str, int], int] = {}
        before = scrape(metrics_port)
        crm_samples: list[dict[str, Any]] = []
        started = time.monotonic()
        for i, edit in enumerate(plan(n, crm_ids, 0, edited)):
            wall0 = datetime.now(UTC)
            t0 = time.perf_counter()
            resp = http.patch(edit.crm_path, json=edit.crm_body)
            t1 = time.perf_counter()
            wall1 = datetime.now(UTC)
            if not resp.is_success:
                raise RuntimeError(f"PATCH {edit.crm_path}: HTTP {resp.status_code}: {resp.text[:300]}")
            seen = wait_until(
                f"CRM edit {i} ({edit.kind} of {edit.record}) in the ERP; log {log_path}",
                partial(erp_shows, edit),
                0.005,
            )
            crm_samples.append(
                {
                    "i": i,
                    "kind": edit.kind,
                    "crm_id": edit.crm_id,
                    "patch_s": t1 - t0,
                    "from_return_s": seen - t1,
                    "from_before_s": seen - t0,
                    "wall_before": wall0,
                    "wall_return": wall1,
                    "wall_seen": wall1 + timedelta(seconds=seen - t1),
                }
            )
            if (i + 1) % 25 == 0:
                c.say(f"  CRM -> ERP {i + 1}/{n}")
        results["crm_to_erp_elapsed_s"] = time.monotonic() - started
        wait_healthy_and_idle(metrics_port, proc, 60)
        mid = scrape(metrics_port)

        # When each edit's webhook was stored: the first notification of that record after the PATCH began.
        inbox = conn.execute(
            "SELECT crm_id, received_at FROM replicator.inbox WHERE event <> 'poll' ORDER BY received_at"
        ).fetchall()
        for s in crm_samples:
            arrived = [r for cid, r in inbox if cid == s["crm_id"] and s["wall_before"] <= r <= s["wall_seen"]]
            if arrived:
                s["return_to_inbox_s"] = (arrived[0] - s["wall_return"]).total_seconds()
                s["inbox_to_seen_s"] = (s["wall_seen"] - arrived[0]).total_seconds()

        # ERP -> CRM baseline, same records and fields
        erp_samples: list[dict[str, Any]] = []
        started = time.monotonic()
        for i, edit in enumerate(plan(n, crm_ids, n, edited)):
            t0 = time.perf_counter()
            conn.execute(edit.erp_update, (edit.erp_value, edit.record))
            t1 = time.perf_counter()
            committed: datetime = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            seen = wait_until(
                f"ERP edit {i} ({edit.kind} of {edit.record}) acknowledged by the CRM; log {log_path}",
                partial(crm_acked, edit, committed),
                0.005,
            )
            shown = (sink.get(edit.object, edit.crm_id) or {}).get(edit.crm_field)
            if shown != edit.crm_value:
                raise RuntimeError(f"ERP edit {i}: the CRM acknowledged but shows {shown!r}, not {edit.crm_value!r}")
            erp_samples.append(
                {"i": i, "kind": edit.kind, "commit_s": t1 - t0, "from_return_s": seen - t1, "from_before_s": seen - t0}
            )
            if (i + 1) % 25 == 0:
                c.say(f"  ERP -> CRM {i + 1}/{n}")
        results["erp_to_crm_elapsed_s"] = time.monotonic() - started
        wait_healthy_and_idle(metrics_port, proc, 60)
        after = scrape(metrics_port)
        http.close()
        sink.close()
        conn.close()
    finally:
        c.stop_stack(proc, crm, cluster)

    for s in crm_samples:
        for key in ("wall_before", "wall_return", "wall_seen"):
            s[key] = s[key].isoformat()
    results["crm_samples"] = crm_samples
    results["erp_samples"] = erp_samples
    summary: dict[str, Any] = {}
    rows = []

    def add(label: str, values: list[float]) -> None:
        summary[label] = st = stats(values)
        rows.append([label, st["n"], st["p50_ms"], st["p90_ms"], st["p99_ms"], st["max_ms"]])

    add("CRM PATCH -> ERP row, from PATCH return", [s["from_return_s"] for s in crm_samples])
    add("CRM PATCH -> ERP row, from before PATCH", [s["from_before_s"] for s in crm_samples])
    add("  the PATCH itself", [s["patch_s"] for s in crm_samples])
    add("  PATCH return -> webhook in inbox", [s["return_to_inbox_s"] for s in crm_samples if "return_to_inbox_s" in s])
    add("  webhook in inbox -> ERP row seen", [s["inbox_to_seen_s"] for s in crm_samples if "inbox_to_seen_s" in s])
    for kind in KINDS:
        add(f"  {kind}, from PATCH return", [s["from_return_s"] for s in crm_samples if s["kind"] == kind])
    add("ERP UPDATE -> CRM ack, from commit return", [s["from_return_s"] for s in erp_samples])
    add("ERP UPDATE -> CRM ack, from before UPDATE", [s["from_before_s"] for s in erp_samples])
    for kind in KINDS:
        add(f"  {kind}, from commit return", [s["from_return_s"] for s in erp_samples if s["kind"] == kind])

    hist_rows = []
    for name, match, b0, b1 in (
        ("replicator_crm_to_erp_seconds", {"entity": "customers"}, before, mid),
        ("replicator_crm_to_erp_seconds", {"entity": "contacts"}, before, mid),
        ("replicator_erp_write_seconds", {}, before, mid),
        ("replicator_commit_to_ack_seconds", {}, mid, after),
    ):
        b = histogram_delta(b0, b1, name, match)
        count = b[-1][1] if b else 0
        est = {q: bucket_quantile(q, b) * 1000 for q in (0.5, 0.9, 0.99)}
        label = f"{name}{{{','.join(f'{k}={v}' for k, v in match.items())}}}"
        summary[f"metric {label}"] = {"n": count, **{f"p{int(q * 100)}_ms": v for q, v in est.items()}}
        hist_rows.append([label, int(count), *est.values()])

    p50_crm = summary["CRM PATCH -> ERP row, from PATCH return"]["p50_ms"]
    p50_erp = summary["ERP UPDATE -> CRM ack, from commit return"]["p50_ms"]
    results["summary"] = summary
    results["ratio_p50_crm_to_erp_over_erp_to_crm"] = p50_crm / p50_erp
    results["peak_rss_mib"] = c.peak_rss_mib()

    print()
    print(f"two-way latency: {n} sequential edits each way, 4 fields of 4 accounts / 4 contacts")
    print(c.table(["measure", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows))
    print()
    print("replicator's own histograms (delta over each phase; bucket-interpolated estimates)")
    print(c.table(["metric", "n", "p50 ms", "p90 ms", "p99 ms"], hist_rows))
    print()
    print(f"p50 CRM -> ERP / p50 ERP -> CRM = {results['ratio_p50_crm_to_erp_over_erp_to_crm']:.2f}")
    print(
        f"stack start (not measured) {results['stack_start_seconds']:.1f} s; backfill + idle "
        f"{results['backfill_seconds']:.1f} s; phases {results['crm_to_erp_elapsed_s']:.1f} s and "
        f"{results['erp_to_crm_elapsed_s']:.1f} s"
    )
    path = c.write_results("two_way_latency", results)
    print(f"results: {path.relative_to(c.ROOT)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
