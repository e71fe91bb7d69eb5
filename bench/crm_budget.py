"""How much of a CRM's rate limit the shared API budget uses, and how many 429s it draws.

Against each vendor sandbox (replicator/sandbox/, served from this process with a rate
limit), `--procs` separate worker processes upsert records as fast as their sink lets them
for `--seconds`, all with one credential:

- `budget`: the replicator's way: each sink goes through one `SharedBudget` (state in a
  throwaway PostgreSQL), as several `replicator run` processes would;
- `baseline`: no budget, each process only honours the `Retry-After` of the 429s it gets
  (what a plain client does), measured in the same run.

Figures per mode: records acknowledged per second, the share of the limit used (accepted
API requests / what the limit allows over the run, and the median over its windows), and
the share of requests answered 429.

    uv run python bench/crm_budget.py [--quick] [--seconds S] [--procs N] [--vendor hubspot|salesforce]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, median, say, table, workdir, write_results

from replicator.devstack.postgres import start_cluster
from replicator.sandbox.core import Limits, serve
from replicator.state import migrations

# HubSpot: a private app's documented limit. Salesforce documents no per-second limit, only a
# daily allocation; the bench gives its sandbox one so the budget has something to pace.
LIMITS = {
    "hubspot": Limits(burst=190, window_s=10.0),
    "salesforce": Limits(burst=100, window_s=10.0),
}
# Four calls per apply (100 per HubSpot batch upsert, 200 per Salesforce collection), sent two at a time:
# enough demand that the limit, not the workers, sets the pace.
BATCH = {"hubspot": 400, "salesforce": 800}


class _NoLedger:
    def begin_create(self, op: Any) -> bool:
        return False

    def finish_create(self, op: Any, crm_id: str) -> None:
        pass


def _sink(vendor: str, url: str, budget: Any) -> Any:
    if vendor == "hubspot":
        from replicator.sinks.hubspot import HubSpotSink

        return HubSpotSink(url, "pat-sandbox", budget=budget, concurrency=2)
    from replicator.sinks.salesforce import SalesforceSink

    return SalesforceSink(url, client_id="sandbox-client", client_secret="sandbox-secret", budget=budget, concurrency=2)


def _worker(vendor: str, url: str, dsn: str | None, seconds: float, worker: int, out: Any) -> None:
    from replicator.sinks.base import Action, Operation, Outcome
    from replicator.state.budget import BudgetLimits, SharedBudget, UnlimitedBudget, budget_key

    limits = LIMITS[vendor]
    budget: Any = UnlimitedBudget()
    if dsn is not None:
        assert limits.burst is not None
        budget = SharedBudget(
            dsn,
            budget_key(vendor, url, "bench"),
            BudgetLimits(burst=limits.burst, window_s=limits.window_s, daily=None),
            crm=vendor,
        )
    sink = _sink(vendor, url, budget)
    name_field = "name" if vendor == "hubspot" else "Name"
    acked = 0
    n = 0
    deadline = time.monotonic() + seconds
    pending: list[Any] = []
    while time.monotonic() < deadline:
        while len(pending) < BATCH[vendor]:
            n += 1
            key = f"W{worker}-{n % 5000}"  # a working set of 5,000 records per worker: creates, then updates
            pending.append(Operation("customers", "account", Action.UPSERT, key, {name_field: f"Bench {key} {n}"}))
        results = sink.apply(pending, _NoLedger())
        retry = [op for op, r in zip(pending, results, strict=True) if r.outcome is Outcome.TRANSIENT]
        acked += sum(1 for r in results if r.outcome is Outcome.OK)
        waits = [r.retry_after for r in results if r.outcome is Outcome.TRANSIENT and r.retry_after]
        pending = retry
        if waits:
            time.sleep(min(max(waits), 10.0))  # what the pipeline's retry does with Retry-After
    sink.close()  # and its budget
    out.put(acked)


def _run(vendor: str, mode: str, dsn: str | None, seconds: float, procs: int) -> dict[str, Any]:
    from replicator.sandbox.hubspot import HubSpotSandbox
    from replicator.sandbox.salesforce import SalesforceSandbox

    limits = LIMITS[vendor]
    assert limits.burst is not None
    sandbox: Any = HubSpotSandbox(limits=limits) if vendor == "hubspot" else SalesforceSandbox(limits=limits)
    running = serve(sandbox)
    try:
        from replicator.state.budget import UnlimitedBudget

        setup = _sink(vendor, running.url, UnlimitedBudget())
        setup.ensure_setup()  # HubSpot: the unique id property the upserts key on
        setup.close()
        # Setup's own requests sit in the sandbox's window but not in the budget: let them age out.
        time.sleep(limits.window_s)
        before = dict(running.sandbox.stats)
        windows: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            # Accepted requests per window of the limit, read off the sandbox's own counters.
            last = before.get("requests", 0)
            while not stop.wait(limits.window_s):
                stats = running.sandbox.stats
                accepted = stats["requests"] - stats["limited_burst"] - stats["limited_daily"]
                windows.append(accepted - last)
                last = accepted

        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        workers = [ctx.Process(target=_worker, args=(vendor, running.url, dsn, seconds, i, out)) for i in range(procs)]
        for w in workers:
            w.start()
        started = time.monotonic()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        acked = sum(out.get(timeout=seconds + 120) for _ in workers)
        elapsed = time.monotonic() - started
        stop.set()
        for w in workers:
            w.join(30)
        stats = {k: v - before.get(k, 0) for k, v in running.sandbox.stats.items()}
    finally:
        running.stop()  # also when a worker failed: nothing is left serving
    limited = stats.get("limited_burst", 0) + stats.get("limited_daily", 0) + stats.get("injected_429", 0)
    accepted = stats.get("requests", 0) - limited
    allowed = elapsed / limits.window_s * limits.burst
    # The first and last windows are partial (workers starting, stopping).
    full = windows[1:-1] or windows
    return {
        "vendor": vendor,
        "mode": mode,
        "procs": procs,
        "seconds": round(elapsed, 1),
        "records_acked": acked,
        "records_per_s": round(acked / elapsed, 1),
        "requests": stats.get("requests", 0),
        "requests_429": limited,
        "share_429": limited / max(stats.get("requests", 0), 1),
        "utilisation": accepted / allowed,
        "utilisation_median_window": median([w / limits.burst for w in full]),
        "windows": windows,
        "limit": f"{limits.burst} per {limits.window_s:g} s",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 s per run")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--vendor", choices=("hubspot", "salesforce"), action="append")
    args = parser.parse_args()
    seconds = 20.0 if args.quick else args.seconds
    vendors = args.vendor or ["hubspot", "salesforce"]

    base = workdir("bench-budget-")
    cluster = start_cluster(base / "pg")
    rows = []
    try:
        cluster.create_database("budget")
        dsn = cluster.dsn("budget")
        migrations.migrate(dsn)
        for vendor in vendors:
            for mode in ("baseline", "budget"):
                say(f"{vendor}: {mode}, {args.procs} processes, {seconds:.0f} s")
                rows.append(_run(vendor, mode, dsn if mode == "budget" else None, seconds, args.procs))
    finally:
        cluster.destroy()
    print(
        table(
            ["vendor", "mode", "limit", "records/s", "limit used", "median window", "429s", "requests"],
            [
                [
                    r["vendor"],
                    r["mode"],
                    r["limit"],
                    r["records_per_s"],
                    f"{r['utilisation']:.1%}",
                    f"{r['utilisation_median_window']:.1%}",
                    f"{r['share_429']:.2%}",
                    r["requests"],
                ]
                for r in rows
            ],
        )
    )
    path = write_results("crm_budget", {"machine": machine(), "seconds": seconds, "procs": args.procs, "runs": rows})
    say(f"raw figures: {path}")


if __name__ == "__main__":
    main()
