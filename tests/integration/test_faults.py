"""Faults on purpose: a frozen CRM, a severed replication connection.

`frozen_crm` lives in tests/fixtures/stack.py (shared with tests/integration/test_dashboards.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.fixtures.stack import Stack


def test_crm_outage_is_retried_and_nothing_is_dead_lettered(stack: Stack, frozen_crm: Callable[[bool], None]) -> None:
    stack.config_path.write_text(
        stack.config_path.read_text().replace("concurrency: 4", "concurrency: 4\n  timeout_s: 1")
    )
    stack.start()
    stack.wait_backfilled()
    frozen_crm(True)
    try:
        stack.sql("UPDATE products SET name = name || ' (outage)' WHERE sku IN ('SKU-1001', 'SKU-1002')")
        stack.wait_for("a retry", lambda: "replicator_retries_total{" in stack.metrics(), timeout=30)
        time.sleep(1.0)
    finally:
        frozen_crm(False)
    for sku in ("SKU-1001", "SKU-1002"):
        stack.wait_for(
            f"{sku} after the outage",
            lambda sku=sku: str((stack.sink.lookup("product", sku) or {}).get("name", "")).endswith("(outage)"),
            timeout=60,
        )
    assert stack.sql("SELECT count(*) FROM replicator.dead_letters")[0][0] == 0
    stack.wait_idle()
    assert stack.health()["healthy"]


def test_severed_replication_connection_reconnects_without_loss(stack: Stack) -> None:
    stack.start()
    stack.wait_backfilled()
    slot = f"slot_{stack.dsn.split('dbname=')[1].split()[0]}"
    stack.sql("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    stack.sql("UPDATE customers SET name = name || ' after reconnect' WHERE id = 3")
    stack.wait_for(
        "the change made while reconnecting",
        lambda: str((stack.sink.lookup("account", "CUST-3") or {}).get("name", "")).endswith("after reconnect"),
        timeout=60,
    )
    assert stack.proc is not None and stack.proc.poll() is None  # the service survived
    assert "source connection lost; reconnecting" in stack.log_tail(200)
    stack.wait_idle()


def test_outage_longer_than_the_retry_budget_is_waited_out_not_dead_lettered(
    stack: Stack, frozen_crm: Callable[[bool], None]
) -> None:
    text = stack.config_path.read_text()
    text = text.replace("concurrency: 4", "concurrency: 4\n  timeout_s: 0.5")
    text = text.replace("stall_timeout_s: 60", "stall_timeout_s: 2\n  retry: {max_attempts: 2, max_backoff_s: 0.5}")
    stack.config_path.write_text(text)
    stack.start()
    stack.wait_backfilled()
    frozen_crm(True)
    try:
        stack.sql("UPDATE products SET name = name || ' (long outage)' WHERE sku = 'SKU-1004'")
        # /healthz tells the truth while the CRM is gone ...
        stack.wait_for("an unhealthy verdict", lambda: not stack.health()["healthy"], timeout=30)
        assert "stalled" in " ".join(stack.health()["reasons"])
        time.sleep(3)  # several times the retry budget
    finally:
        frozen_crm(False)
    stack.wait_for(
        "the change after the outage",
        lambda: str((stack.sink.lookup("product", "SKU-1004") or {}).get("name", "")).endswith("(long outage)"),
        timeout=60,
    )
    # ... and nothing was parked as a dead letter: the records were fine, the CRM was not.
    assert stack.sql("SELECT count(*) FROM replicator.dead_letters")[0][0] == 0
    stack.wait_for("a healthy verdict again", lambda: stack.health()["healthy"], timeout=30)


def test_lost_state_connection_exits_for_a_restart_that_resumes(stack: Stack) -> None:
    stack.start()
    stack.wait_backfilled()
    stack.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name IN ('replicator-state', 'replicator-reader')"
    )
    stack.sql("UPDATE customers SET name = name || ' (state lost)' WHERE id = 5")
    assert stack.proc is not None
    assert stack.proc.wait(60) == 3
    assert "lost the ERP/state database" in stack.log_tail()
    stack.start()
    stack.wait_for(
        "the change after the restart",
        lambda: str((stack.sink.lookup("account", "CUST-5") or {}).get("name", "")).endswith("(state lost)"),
        timeout=60,
    )
    assert stack.sql("SELECT count(*) FROM replicator.dead_letters")[0][0] == 0
