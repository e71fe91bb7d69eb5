"""The quickstart against a SaaS CRM's sandbox: `script/quickstart --once --crm hubspot|salesforce`.

The same sample ERP and source as the BottleCRM run; the CRM is the project's sandbox of
the vendor's API (replicator/sandbox/), served from this process with the vendor's rate
limit, and the replicator runs the vendor's sample mapping (examples/erp/replicator-<crm>.yaml)
as a separate process. It syncs, times a few live ERP changes until the sandbox holds them,
reconciles every sample row against the sandbox and prints what the API budget did.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml
from rich.console import Console

from replicator.devstack.postgres import free_port, start_cluster
from replicator.devstack.quickstart_erp import QuickErp, start_erp, write_config
from replicator.devstack.replicator_process import (
    cli,
    erp_env,
    run_until_interrupted,
    spawn,
    stop,
    wait_healthy_and_idle,
)
from replicator.devstack.sample_erp import EXAMPLE
from replicator.sandbox.core import Limits, Running, serve


@dataclass(frozen=True)
class SaasCrm:
    name: str
    title: str
    env: Callable[[Running], dict[str, str]]
    start: Callable[[], Running]
    sink: Callable[[Running], Any]
    # (description, ERP statement, object, external id, field, expected value)
    edits: tuple[tuple[str, str, str, str, str, str], ...]


def _hubspot() -> SaasCrm:
    from replicator.sandbox.hubspot import HubSpotSandbox

    def sink(running: Running) -> Any:
        from replicator.sinks.hubspot import HubSpotSink

        # HubSpot answers only the properties asked for.
        wanted = {"account": ["name"], "product": ["price"], "contact": ["jobtitle"]}
        return HubSpotSink(running.url, "pat-sandbox", properties=wanted)

    return SaasCrm(
        name="hubspot",
        title="HubSpot sandbox",
        env=lambda r: {"HUBSPOT_URL": r.url, "HUBSPOT_TOKEN": "pat-sandbox"},
        # A private app's documented limit: 190 requests per rolling 10 s.
        start=lambda: serve(HubSpotSandbox(limits=Limits(burst=190, window_s=10.0, daily=650_000))),
        sink=sink,
        edits=(
            (
                "rename customer",
                "UPDATE customers SET name = 'Quickstart Renamed AG' WHERE id = 3",
                "account",
                "CUST-3",
                "name",
                "Quickstart Renamed AG",
            ),
            (
                "update product price",
                "UPDATE products SET unit_price = 123.45 WHERE sku = 'SKU-1001'",
                "product",
                "SKU-1001",
                "price",
                "123.45",
            ),
            (
                "change contact title",
                "UPDATE contacts SET job_title = 'Head of Ops' WHERE id = 2",
                "contact",
                "CONT-2",
                "jobtitle",
                "Head of Ops",
            ),
        ),
    )


def _salesforce() -> SaasCrm:
    from replicator.sandbox.salesforce import SalesforceSandbox

    def sink(running: Running) -> Any:
        from replicator.sinks.salesforce import SalesforceSink

        return SalesforceSink(running.url, client_id="sandbox-client", client_secret="sandbox-secret")

    return SaasCrm(
        name="salesforce",
        title="Salesforce sandbox",
        env=lambda r: {
            "SALESFORCE_LOGIN_URL": r.url,
            "SALESFORCE_CLIENT_ID": "sandbox-client",
            "SALESFORCE_CLIENT_SECRET": "sandbox-secret",
            # The sample is small: let the initial load go through Bulk API 2.0 all the same.
            "SALESFORCE_BULK_THRESHOLD": "20",
        },
        start=lambda: serve(SalesforceSandbox()),
        sink=sink,
        edits=(
            (
                "rename customer",
                "UPDATE customers SET name = 'Quickstart Renamed AG' WHERE id = 3",
                "account",
                "CUST-3",
                "Name",
                "Quickstart Renamed AG",
            ),
            (
                "rename product",
                "UPDATE products SET name = 'Quickstart Widget' WHERE sku = 'SKU-1001'",
                "product",
                "SKU-1001",
                "Name",
                "Quickstart Widget",
            ),
            (
                "change contact title",
                "UPDATE contacts SET job_title = 'Head of Ops' WHERE id = 2",
                "contact",
                "CONT-2",
                "Title",
                "Head of Ops",
            ),
        ),
    )


CRMS: dict[str, Callable[[], SaasCrm]] = {"hubspot": _hubspot, "salesforce": _salesforce}


def _config(erp: QuickErp, crm: SaasCrm, workdir: Path) -> Path:
    """The ERP run's configuration with the vendor's CRM section and mappings."""
    sample = yaml.safe_load((EXAMPLE / f"replicator-{crm.name}.yaml").read_text())
    return write_config(erp.config, workdir, {"crm": sample["crm"], "mappings": sample["mappings"]})


def _backfilled(erp: QuickErp, entities: list[str]) -> bool:
    try:
        with psycopg.connect(erp.state_dsn) as conn:
            done = {
                row[0]
                for row in conn.execute(
                    "SELECT stream FROM replicator.checkpoints WHERE stream LIKE 'backfill:%%' AND position = 'done'"
                ).fetchall()
            }
    except psycopg.Error:
        return False
    return all(f"backfill:{e}" in done for e in entities)


def _live_edits(erp: QuickErp, crm: SaasCrm, running: Running, say: Callable[[str], None]) -> None:
    sink = crm.sink(running)
    try:
        for what, sql, obj, external_id, field, value in crm.edits:
            start = time.monotonic()
            erp.execute(sql)
            while True:
                record = sink.lookup(obj, external_id) or {}
                if str(record.get(field)) in (value, value + "0"):
                    say(f"      {what:<38} {(time.monotonic() - start) * 1000:7.0f} ms")
                    break
                if time.monotonic() - start > 30:
                    raise TimeoutError(f"{what}: {obj} {external_id}.{field} is not {value!r} after 30 s: {record}")
                time.sleep(0.05)
    finally:
        sink.close()


def run_saas(args: Any, console: Console) -> int:
    crm = CRMS[args.crm]()
    started = time.monotonic()
    with ExitStack() as stack:
        console.print(f"[bold]1/5[/] the sample ERP on {args.erp}, read by the {args.source} source")
        cluster = start_cluster(args.state_dir / "pg")
        stack.callback(cluster.destroy)
        erp = start_erp(args.erp, args.source, cluster, args.state_dir / "erp", stack, console.print)

        console.print(f"[bold]2/5[/] the {crm.title} (the vendor's API contract, served from this process)")
        running = crm.start()
        stack.callback(running.stop)
        console.print(f"      API at {running.url}; what it holds: {running.url}/__sandbox/objects/<object>")

        metrics_port = free_port()
        env = {**erp_env(erp, metrics_port), **crm.env(running)}
        config = _config(erp, crm, args.state_dir / "erp")
        console.print(f"[bold]3/5[/] replicator setup --config {config}")
        cli(["setup", "--config", str(config)], env, check=True)

        console.print("[bold]4/5[/] replicator run (initial load, then streaming)")
        log = open(args.state_dir / "replicator.log", "w")  # noqa: SIM115 - lives as long as the process
        stack.callback(log.close)
        proc = spawn(["run"], config, env, log)
        stack.callback(stop, proc)
        entities = ["customers", "contacts", "products", "orders"]
        try:
            wait_healthy_and_idle(
                metrics_port,
                proc,
                300,
                ready=lambda: _backfilled(erp, entities),
                waiting_for="finish its initial load",
            )
            console.print(f"      initial load done in {time.monotonic() - started:.0f} s")
            console.print(f"[bold]5/5[/] live changes: ERP commit -> visible in the {crm.title}")
            _live_edits(erp, crm, running, console.print)
            wait_healthy_and_idle(metrics_port, proc, 60)
        except (RuntimeError, TimeoutError) as exc:
            console.print(f"[red]FAILED[/]: {exc}; replicator log in {args.state_dir}/replicator.log")
            return 1
        stats = httpx.get(f"{running.url}/__sandbox/stats", timeout=5).json()
        console.print(
            f"      the sandbox answered {stats.get('requests', 0)} API requests, "
            f"{stats.get('limited_burst', 0) + stats.get('limited_daily', 0)} of them over its rate limit"
        )
        jobs = getattr(running.sandbox, "bulk", None)
        if jobs is not None:
            console.print(f"      Bulk API 2.0 ingest jobs (initial load): {len(jobs.jobs)}")
        console.print(f"metrics: http://127.0.0.1:{metrics_port}/metrics   health: /healthz")
        if not args.once:
            console.print("running; edit the ERP (SQL prompt below) and watch the sandbox. Ctrl-C stops everything.")
            console.print(f"  {erp.shell}")
            run_until_interrupted(proc)
            return 0
        console.print(f"verifying: every sample row against the {crm.title} (replicator reconcile)")
        result = cli(["reconcile", "--config", str(config)], env)
        elapsed = time.monotonic() - started
        if result.returncode == 0:
            console.print(f"[green]OK[/]: the {crm.title} holds every sample row exactly as mapped ({elapsed:.0f} s)")
            return 0
        console.print(f"[red]DIFFERENCES[/]: see above; replicator log in {args.state_dir}/replicator.log")
        return 1
