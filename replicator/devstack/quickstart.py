"""The quickstart: a throwaway ERP with the sample data, a real BottleCRM, and the replicator.

`--once` syncs, makes a few live ERP changes and times their arrival in the CRM,
then reconciles every sample row against the CRM and exits 0 only when nothing
differs.

`--erp postgres|mariadb` picks the ERP database; `--source` how its changes are read:
`embedded` (default: the PostgreSQL replication slot, or the MariaDB binary log) or
`debezium` (Debezium on Kafka Connect into a Kafka-protocol broker, then the Kafka
source). The configuration the replicator runs with is written to the state folder.

`--crm hubspot|salesforce` runs the same ERP against the project's sandbox of that vendor's
API instead of BottleCRM (see quickstart_saas.py).

`--two-way` also syncs the CRM back to the ERP: BottleCRM runs with Celery + Redis and
sends signed webhooks to the replicator, which runs the two-way sample configuration.
After the ERP -> CRM steps it edits CRM records and times each until the ERP row shows
it, bounces edits of one record between both sides (one write each, no echo), and wins
a deal in the CRM until the ERP holds its sales order and line.
"""

from __future__ import annotations

import argparse
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.live import Live
from rich.table import Table

from replicator.devstack.bottlecrm import BottleCrm, start_bottlecrm
from replicator.devstack.postgres import free_port, start_cluster
from replicator.devstack.quickstart_erp import QuickErp, start_erp
from replicator.devstack.quickstart_two_way import WEBHOOK_PATH, StepFailed, register_webhook, run_two_way
from replicator.devstack.replicator_process import (
    cli,
    erp_env,
    run_until_interrupted,
    spawn,
    stop,
    wait_healthy_and_idle,
)

ROOT = Path(__file__).resolve().parents[2]
console = Console()


def replicator_env(
    erp: QuickErp, crm: BottleCrm, metrics_port: int, webhook_secret: str | None = None
) -> dict[str, str]:
    two_way = {"BOTTLECRM_WEBHOOK_SECRET": webhook_secret} if webhook_secret else {}
    return {**erp_env(erp, metrics_port), "BOTTLECRM_URL": crm.url, "BOTTLECRM_TOKEN": crm.token, **two_way}


def counts(erp: QuickErp) -> dict[str, tuple[int, int]]:
    """entity -> (synced or archived rows, rows in the ERP)."""
    with psycopg.connect(erp.state_dsn) as conn:
        synced: dict[str, int] = dict(
            conn.execute(
                "SELECT entity, count(*) FROM replicator.sync_state "
                "WHERE status IN ('synced', 'archived') GROUP BY entity"
            ).fetchall()
        )
    totals = {
        "customers": "SELECT count(*) FROM customers",
        "contacts": "SELECT count(*) FROM contacts",
        "products": "SELECT count(*) FROM products",
        "orders": "SELECT count(*) FROM sales_orders WHERE status <> 'draft'",
    }
    return {entity: (int(synced.get(entity, 0)), erp.scalar(query)) for entity, query in totals.items()}


def progress_table(erp: QuickErp) -> Table:
    table = Table("entity", "in CRM", "ERP rows", title=f"replicator: {erp.title} -> BottleCRM")
    try:
        for entity, (done, total) in counts(erp).items():
            table.add_row(entity, str(done), str(total))
    except psycopg.Error:
        table.add_row("(state schema not ready yet)", "", "")
    return table


def live_changes(erp: QuickErp, crm: BottleCrm) -> list[tuple[str, float]]:
    """Make ERP changes and time each one until the CRM shows it."""
    from replicator.sinks.bottlecrm import BottleCrmSink

    sink = BottleCrmSink(crm.url, crm.token)
    timings: list[tuple[str, float]] = []
    new_customer = "SELECT id FROM customers WHERE code = 'C9001'"

    def timed(what: str, sql: str, check: Any) -> None:
        start = time.monotonic()
        erp.execute(sql)
        while time.monotonic() - start < 30:
            if check():
                timings.append((what, time.monotonic() - start))
                return
            time.sleep(0.05)
        raise TimeoutError(f"{what}: not in the CRM after 30 s")

    try:
        timed(
            "insert customer",
            "INSERT INTO customers (code, name, industry, active) "
            "VALUES ('C9001', 'Quickstart Live GmbH', 'TECH', true)",
            # The id comes from the database's sequence (MariaDB may skip values after a bulk insert).
            lambda: (
                (sink.lookup("account", f"CUST-{erp.scalar(new_customer)}") or {}).get("name") == "Quickstart Live GmbH"
            ),
        )
        timed(
            "update product price",
            "UPDATE products SET unit_price = 123.45 WHERE sku = 'SKU-1001'",
            lambda: str((sink.lookup("product", "SKU-1001") or {}).get("price")) in ("123.45", "123.450"),
        )
        timed(
            "change primary email (related row)",
            "UPDATE contact_mechanisms SET value = 'sales@customer2.example' WHERE customer_id = 2 AND kind = 'email' "
            "AND is_primary",
            lambda: (sink.lookup("account", "CUST-2") or {}).get("email") == "sales@customer2.example",
        )
        timed(
            "delete order",
            "DELETE FROM sales_order_lines WHERE order_id = 2;\nDELETE FROM sales_orders WHERE id = 2",
            lambda: sink.lookup("opportunity", "SO-2") is None,
        )
    finally:
        sink.close()
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="script/quickstart", description=__doc__)
    parser.add_argument("--once", action="store_true", help="sync, verify, exit 0 only if the CRM matches")
    parser.add_argument("--erp", choices=("postgres", "mariadb"), default="postgres", help="the ERP database")
    parser.add_argument(
        "--source",
        choices=("embedded", "debezium"),
        default="embedded",
        help="embedded: PostgreSQL slot / MariaDB binlog, no Kafka; debezium: Kafka Connect + broker + Kafka source",
    )
    parser.add_argument(
        "--two-way",
        action="store_true",
        help="also CRM -> ERP with the two-way sample configuration: BottleCRM webhooks (Celery + Redis), "
        "HubSpot sandbox webhooks, Salesforce sandbox polling",
    )
    parser.add_argument(
        "--crm",
        choices=("bottlecrm", "hubspot", "salesforce"),
        default="bottlecrm",
        help="bottlecrm: a real BottleCRM; hubspot, salesforce: the project's sandbox of the vendor's API",
    )
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".state" / "quickstart")
    args = parser.parse_args(argv)
    shutil.rmtree(args.state_dir, ignore_errors=True)
    args.state_dir.mkdir(parents=True)
    if args.crm != "bottlecrm":
        from replicator.devstack.quickstart_saas import run_saas

        return run_saas(args, console)
    steps = 6 if args.two_way else 5
    started = time.monotonic()
    with ExitStack() as stack:
        console.print(f"[bold]1/{steps}[/] the sample ERP on {args.erp}, read by the {args.source} source")
        cluster = start_cluster(args.state_dir / "pg")
        stack.callback(cluster.destroy)
        erp = start_erp(
            args.erp, args.source, cluster, args.state_dir / "erp", stack, console.print, two_way=args.two_way
        )

        mode = " with Celery + Redis for its webhooks" if args.two_way else ""
        console.print(
            f"[bold]2/{steps}[/] BottleCRM{mode} (first run installs it and migrates its database: a few minutes)"
        )
        crm = start_bottlecrm(cluster, args.state_dir / "crm", celery=args.two_way)
        stack.callback(crm.stop)
        console.print(f"      BottleCRM API at {crm.url}")

        metrics_port = free_port()
        secret = None
        if args.two_way:
            secret = register_webhook(crm, metrics_port)
            console.print(
                f"      webhook: account.*, contact.*, deal.* -> http://127.0.0.1:{metrics_port}{WEBHOOK_PATH}"
            )
        env = replicator_env(erp, crm, metrics_port, secret)
        config = str(erp.config)
        console.print(f"[bold]3/{steps}[/] replicator setup --config {config}")
        cli(["setup", "--config", config], env, check=True)

        console.print(f"[bold]4/{steps}[/] replicator run (initial load, then streaming)")
        log = open(args.state_dir / "replicator.log", "w")  # noqa: SIM115 - lives as long as the process
        stack.callback(log.close)
        proc = spawn(["run"], config, env, log)
        stack.callback(stop, proc)
        with Live(progress_table(erp), console=console, refresh_per_second=4) as live:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                live.update(progress_table(erp))
                try:
                    if all(done >= total for done, total in counts(erp).values()):
                        break
                except psycopg.Error:
                    pass
                if proc.poll() is not None:
                    console.print(f"[red]replicator exited ({proc.returncode}); see {args.state_dir}/replicator.log")
                    return 1
                time.sleep(0.25)
        wait_healthy_and_idle(metrics_port, proc, 120)

        console.print(f"[bold]5/{steps}[/] live changes: ERP commit -> visible in BottleCRM")
        for what, seconds in live_changes(erp, crm):
            console.print(f"      {what:<38} {seconds * 1000:7.0f} ms")
        wait_healthy_and_idle(metrics_port, proc, 60)
        if args.two_way:
            console.print(f"[bold]6/{steps}[/] CRM edits: BottleCRM REST API -> webhook -> visible in the ERP")
            try:
                run_two_way(erp, crm, metrics_port, console.print)
            except StepFailed as exc:
                console.print(f"[red]FAILED[/]: {exc}; replicator log in {args.state_dir}/replicator.log")
                return 1
            wait_healthy_and_idle(metrics_port, proc, 60)
        console.print(f"metrics: http://127.0.0.1:{metrics_port}/metrics   health: /healthz")

        if not args.once:
            where = "the ERP (SQL prompt below) or BottleCRM" if args.two_way else "the ERP (SQL prompt below)"
            console.print(f"running; edit {where} and watch the other side. Ctrl-C stops everything.")
            console.print(f"  {erp.shell}")
            console.print(f"  curl -H 'Authorization: Bearer {crm.token}' {crm.url}/api/accounts/")
            run_until_interrupted(proc)
            return 0

        console.print("verifying: every sample row against the CRM (replicator reconcile)")
        result = cli(["reconcile", "--config", config], env)
        elapsed = time.monotonic() - started
        if result.returncode == 0:
            console.print(f"[green]OK[/]: the CRM holds every sample row exactly as mapped ({elapsed:.0f} s in all)")
            return 0
        console.print(f"[red]DIFFERENCES[/]: see above; replicator log in {args.state_dir}/replicator.log")
        return 1
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
