"""The quickstart against a SaaS CRM's sandbox: `script/quickstart --once --crm hubspot|salesforce`.

The same sample ERP and source as the BottleCRM run; the CRM is the project's sandbox of
the vendor's API (replicator/sandbox/), served from this process with the vendor's rate
limit, and the replicator runs the vendor's sample mapping (examples/erp/replicator-<crm>.yaml)
as a separate process. It syncs, times a few live ERP changes until the sandbox holds them,
reconciles every sample row against the sandbox and prints what the API budget did.

`--two-way` runs the vendor's two-way sample (replicator-<crm>-two-way.yaml) instead: the
HubSpot sandbox then sends signed webhooks to the replicator, the Salesforce one is polled
every second, and a CRM user's edits are timed until the ERP shows them.
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
from replicator.devstack.quickstart_saas_two_way import UserEdit, run_saas_two_way
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
    start: Callable[[str | None], Running]  # the replicator's webhook URL (two-way), or None
    sink: Callable[[Running], Any]
    # (description, ERP statement, object, external id, field, expected value)
    edits: tuple[tuple[str, str, str, str, str, str], ...]
    # Two-way: the feed's settings by the replicator's metrics port, how it is described,
    # (external id, record id) of a sandbox record, and a CRM user's edits.
    two_way_env: Callable[[int], dict[str, str]]
    feed: str
    external_id_of: Callable[[dict[str, Any]], tuple[str | None, str]]
    user_edits: tuple[UserEdit, ...]


WEBSITE_SQL = "SELECT website, industry FROM customers WHERE id = 4"
CONTACT_SQL = "SELECT first_name, job_title FROM contacts WHERE id = 5"


def _hubspot() -> SaasCrm:
    from replicator.sandbox.hubspot import HubSpotSandbox

    secret = "quickstart-client-secret"

    def start(webhook_url: str | None) -> Running:
        # A private app's documented limit: 190 requests per rolling 10 s.
        limits = Limits(burst=190, window_s=10.0, daily=650_000)
        return serve(HubSpotSandbox(limits=limits, webhook_url=webhook_url, client_secret=secret))

    def sink(running: Running) -> Any:
        from replicator.sinks.hubspot import HubSpotSink

        # HubSpot answers only the properties asked for.
        wanted = {"account": ["name"], "product": ["price"], "contact": ["jobtitle"]}
        return HubSpotSink(running.url, "pat-sandbox", properties=wanted)

    return SaasCrm(
        name="hubspot",
        title="HubSpot sandbox",
        env=lambda r: {"HUBSPOT_URL": r.url, "HUBSPOT_TOKEN": "pat-sandbox"},
        start=start,
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
        two_way_env=lambda port: {
            "HUBSPOT_CLIENT_SECRET": secret,
            "HUBSPOT_WEBHOOK_PUBLIC_URL": f"http://127.0.0.1:{port}",
        },
        feed="signed webhook",
        external_id_of=lambda r: (r["properties"].get("erp_id"), str(r["id"])),
        user_edits=(
            UserEdit(
                "company website + industry",
                "companies",
                "CUST-4",
                {"properties": {"website": "https://quickstart-hubspot.example", "industry": "FINANCIAL_SERVICES"}},
                WEBSITE_SQL,
                ("https://quickstart-hubspot.example", "FIN"),
            ),
            UserEdit(
                "contact first name + job title",
                "contacts",
                "CONT-5",
                {"properties": {"firstname": "Ada", "jobtitle": "Chief of Hubs"}},
                CONTACT_SQL,
                ("Ada", "Chief of Hubs"),
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
        start=lambda _webhook_url: serve(SalesforceSandbox()),
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
        two_way_env=lambda _port: {"SALESFORCE_POLL_INTERVAL_S": "1", "SALESFORCE_POLL_LOOKBACK_S": "5"},
        feed="poll every 1 s",
        external_id_of=lambda r: (r.get("ERP_Id__c"), str(r["Id"])),
        user_edits=(
            UserEdit(
                "account website + industry",
                "Account",
                "CUST-4",
                {"Website": "https://quickstart-salesforce.example", "Industry": "Finance"},
                WEBSITE_SQL,
                ("https://quickstart-salesforce.example", "FIN"),
            ),
            UserEdit(
                "contact first name + title",
                "Contact",
                "CONT-5",
                {"FirstName": "Ada", "Title": "Chief of Clouds"},
                CONTACT_SQL,
                ("Ada", "Chief of Clouds"),
            ),
        ),
    )


CRMS: dict[str, Callable[[], SaasCrm]] = {"hubspot": _hubspot, "salesforce": _salesforce}


def _config(erp: QuickErp, crm: SaasCrm, workdir: Path, two_way: bool) -> Path:
    """The ERP run's configuration with the vendor's CRM section and mappings."""
    name = f"replicator-{crm.name}-two-way.yaml" if two_way else f"replicator-{crm.name}.yaml"
    sample = yaml.safe_load((EXAMPLE / name).read_text())
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
    two_way = bool(getattr(args, "two_way", False))
    steps = 6 if two_way else 5
    started = time.monotonic()
    with ExitStack() as stack:
        console.print(f"[bold]1/{steps}[/] the sample ERP on {args.erp}, read by the {args.source} source")
        cluster = start_cluster(args.state_dir / "pg")
        stack.callback(cluster.destroy)
        erp = start_erp(args.erp, args.source, cluster, args.state_dir / "erp", stack, console.print)

        console.print(f"[bold]2/{steps}[/] the {crm.title} (the vendor's API contract, served from this process)")
        metrics_port = free_port()
        running = crm.start(f"http://127.0.0.1:{metrics_port}/webhooks/{crm.name}" if two_way else None)
        stack.callback(running.stop)
        console.print(f"      API at {running.url}; what it holds: {running.url}/__sandbox/objects/<object>")

        env = {**erp_env(erp, metrics_port), **crm.env(running), **(crm.two_way_env(metrics_port) if two_way else {})}
        config = _config(erp, crm, args.state_dir / "erp", two_way)
        console.print(f"[bold]3/{steps}[/] replicator setup --config {config}")
        cli(["setup", "--config", str(config)], env, check=True)

        console.print(f"[bold]4/{steps}[/] replicator run (initial load, then streaming)")
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
            console.print(f"[bold]5/{steps}[/] live changes: ERP commit -> visible in the {crm.title}")
            _live_edits(erp, crm, running, console.print)
            wait_healthy_and_idle(metrics_port, proc, 60)
            if two_way:
                console.print(f"[bold]6/{steps}[/] CRM user edits: {crm.title} -> {crm.feed} -> visible in the ERP")
                run_saas_two_way(erp, running, crm.external_id_of, crm.user_edits, metrics_port, console.print)
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
