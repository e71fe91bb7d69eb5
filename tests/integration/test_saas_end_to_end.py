"""ERP PostgreSQL -> slot -> `replicator` processes -> the HubSpot and Salesforce sandboxes,
on a bad day (injected faults) and on a tight API budget shared by two processes.

The fixture (`saas_stack`, tests/fixtures/saas.py) builds the vendor's sample configuration
the way `script/quickstart --crm` does; the sandboxes stand in for the vendors' APIs.
"""

from __future__ import annotations

import re
import time

import pytest

from replicator.sandbox.core import Faults, Limits
from tests.fixtures.saas import VENDORS, SaasStack, SaasStackFactory

pytestmark = pytest.mark.integration

ENTITIES = {"customers": "account", "contacts": "contact", "products": "product", "orders": "opportunity"}

# About one API request in six goes wrong, in every way the sandbox knows; per-record
# failures inside otherwise good batches come on top.
FAULTS = Faults(
    rate_429=0.05,
    retry_after_s=1,
    rate_5xx=0.05,
    rate_timeout=0.03,
    timeout_s=3,
    rate_reset=0.03,
    rate_partial=0.04,
    seed=20261205,
)
REQUEST_FAULTS = ("injected_429", "injected_5xx", "injected_timeout", "injected_reset")

# Live ERP changes made while the sandbox misbehaves (or while a backfill runs): inserts of
# a parent and its children, updates of every entity, deletes, a row leaving a filter.
LIVE_CHANGES = (
    "INSERT INTO customers (id, code, name, industry) VALUES (100, 'C0100', 'Live AG', 'FIN')",
    "INSERT INTO contacts (id, customer_id, first_name, last_name, email) "
    "VALUES (500, 100, 'Lin', 'Live', 'lin@live.example')",
    "INSERT INTO sales_orders (id, order_no, customer_id, status, total) VALUES (900, 'SO-9900', 100, 'confirmed', 50)",
    "INSERT INTO products (sku, name, unit_price) VALUES ('SKU-9000', 'Live part', 10.10)",
    "UPDATE customers SET name = name || ' (live)' WHERE id IN (3, 4, 5)",
    "UPDATE contacts SET job_title = 'Fault Finder' WHERE id = 2",
    "UPDATE products SET name = name || ' (live)', unit_price = unit_price + 1 WHERE sku IN ('SKU-1001', 'SKU-1002')",
    "UPDATE sales_orders SET total = 75.50 WHERE id = 900",
    "UPDATE products SET discontinued = true WHERE sku = 'SKU-1003'",
    "DELETE FROM contacts WHERE id = (SELECT min(id) FROM contacts WHERE active AND id NOT IN (2, 500))",
    "DELETE FROM sales_orders WHERE id = (SELECT min(id) FROM sales_orders WHERE status <> 'draft' AND id <> 900)",
)


def make_live_changes(stack: SaasStack, pause_s: float = 0.2) -> None:
    for statement in LIVE_CHANGES:
        stack.sql(statement)
        time.sleep(pause_s)  # separate transactions, spread over the run


def crm_matches_erp(stack: SaasStack) -> bool:
    """Every entity's live CRM records are exactly the ERP's rows, one record per external id."""
    for entity, object in ENTITIES.items():
        found = stack.live_external_ids(object)
        if set(found) != stack.expected_external_ids(entity) or any(n != 1 for n in found.values()):
            return False
    return True


def wait_until_crm_matches_erp(stack: SaasStack, timeout: float) -> None:
    try:
        stack.wait_for("the CRM to hold each ERP row once", lambda: crm_matches_erp(stack), timeout=timeout)
    except AssertionError as timed_out:
        assert_crm_holds_each_row_once(stack)  # names what differs
        raise timed_out


def assert_crm_holds_each_row_once(stack: SaasStack) -> None:
    for entity, object in ENTITIES.items():
        found = stack.live_external_ids(object)
        expected = stack.expected_external_ids(entity)
        duplicates = {external: n for external, n in found.items() if n > 1}
        assert not duplicates, f"{stack.vendor} {object}: external ids on more than one live record: {duplicates}"
        assert set(found) == expected, (
            f"{stack.vendor} {object}: missing {sorted(expected - set(found))}, extra {sorted(set(found) - expected)}"
        )
        assert sum(found.values()) == len(expected)


def assert_reconcile_clean(stack: SaasStack) -> None:
    result = stack.cli("reconcile", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    open_letters = stack.sql("SELECT count(*) FROM replicator.dead_letters WHERE status = 'open'")[0][0]
    assert open_letters == 0, stack.cli("dlq", "list").stdout


def metric_sum(metrics: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in metrics.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


@pytest.mark.parametrize("vendor", VENDORS)
def test_faulty_crm_converges_without_duplicates_or_dead_letters(saas_stack: SaasStackFactory, vendor: str) -> None:
    stack = saas_stack(
        vendor,
        faults=FAULTS,
        overrides={
            "crm": {"timeout_s": 1.5},
            # Small batches: many requests, so every kind of fault hits some of them.
            "pipeline": {"batch_size": 5, "retry": {"max_attempts": 8, "initial_backoff_s": 0.05, "max_backoff_s": 1}},
        },
        # Salesforce: full backfill pages go through Bulk API 2.0 jobs, under faults too.
        env={"SALESFORCE_BULK_THRESHOLD": "5"},
    )
    stack.start()
    stack.wait_backfilled(timeout=150)
    make_live_changes(stack)
    wait_until_crm_matches_erp(stack, timeout=90)
    stack.wait_idle()

    stats = stack.stats()
    stack.set_faults(None)
    assert_reconcile_clean(stack)
    assert_crm_holds_each_row_once(stack)
    name = {"hubspot": "name", "salesforce": "Name"}[vendor]
    assert (stack.sink.lookup("account", "CUST-3") or {}).get(name, "").endswith(" (live)")
    # The sandbox really misbehaved, in most of its ways, not just once or twice.
    injected = {kind: stats[kind] for kind in (*REQUEST_FAULTS, "injected_partial")}
    assert sum(injected.values()) >= 0.05 * stats["requests"], (injected, stats["requests"])
    assert sum(1 for kind in REQUEST_FAULTS if injected[kind] > 0) >= 3, injected
    retries = metric_sum(stack.metrics(), "replicator_retries_total")
    assert retries > 0
    assert stack.stop() == 0


def test_live_run_and_backfill_share_one_budget(saas_stack: SaasStackFactory) -> None:
    burst, window_s = 10, 1.0
    stack = saas_stack(
        "hubspot",
        limits=Limits(burst=burst, window_s=window_s),
        overrides={"crm": {"budget": {"burst": burst, "window_s": window_s}}, "pipeline": {"batch_size": 5}},
    )
    # The service streams live changes only; the initial load is a second process on the
    # same credential, at the budget's backfill priority.
    stack.start_run("--no-backfill")
    stack.wait_for("the service", lambda: stack.health()["healthy"], timeout=60)
    backfill = stack.spawn("backfill", "--restart")
    stack.wait_for(
        "the backfill's first writes", lambda: stack.sql("SELECT count(*) FROM replicator.sync_state")[0][0] > 0
    )
    make_live_changes(stack)
    assert backfill.proc.poll() is None, "the backfill ended before the live changes: they never competed"
    assert backfill.proc.wait(150) == 0, backfill.tail()
    wait_until_crm_matches_erp(stack, timeout=60)
    stack.wait_idle()

    stats = stack.stats()
    metrics = stack.metrics()
    assert_reconcile_clean(stack)
    assert_crm_holds_each_row_once(stack)
    assert stack.stop() == 0

    requests = stats["requests"]
    assert requests > 4 * burst, f"only {requests} requests: the limit never mattered"
    assert stats["limited_burst"] == 0, stats
    busiest, start = stack.arrivals.busiest(window_s)
    assert busiest <= burst, f"{busiest} requests reached the sandbox within {window_s}s of t={start:.3f}"
    # Both processes drew from the budget: the service's live grants are in its metrics.
    assert metric_sum(metrics, "replicator_crm_budget_granted_total", crm="hubspot", priority="live") > 0
    assert metric_sum(metrics, "replicator_crm_budget_exhausted_total", crm="hubspot") == 0
