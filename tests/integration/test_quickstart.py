"""The quickstart end to end, for every ERP and every path of its changes: the same
sample reaches the real BottleCRM and `replicator reconcile` finds no difference.

These are the project's end-to-end runs of the Debezium paths (PostgreSQL or MariaDB ->
Kafka Connect with Debezium -> broker -> Kafka source -> BottleCRM) and of the MariaDB
binary-log path, through the same command users run; of two-way sync (`--two-way`):
BottleCRM's real webhooks back into the ERP; and of the HubSpot and Salesforce connectors
against the project's sandboxes of those APIs (`--crm`).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "args",
    [
        ["--source", "debezium"],
        ["--erp", "mariadb"],
        ["--erp", "mariadb", "--source", "debezium"],
    ],
    ids=["postgres-debezium", "mariadb-binlog", "mariadb-debezium"],
)
def test_quickstart_once_reconciles_clean(args: list[str], tmp_path: Path) -> None:
    out, detail = _quickstart(args, tmp_path)
    assert "OK: the CRM holds every sample row exactly as mapped" in out, detail
    # Every live change was seen in the CRM (the quickstart times each one and fails on a timeout).
    for change in ("insert customer", "update product price", "change primary email", "delete order"):
        assert change in out, detail
    if "--source" in args:
        config = (tmp_path / "erp" / "replicator.yaml").read_text()
        assert "kind: kafka" in config


@pytest.mark.parametrize(
    "args",
    [[], ["--erp", "mariadb"], ["--source", "debezium"]],
    ids=["postgres-slot", "mariadb-binlog", "postgres-debezium"],
)
def test_quickstart_two_way_once_reconciles_clean(args: list[str], tmp_path: Path) -> None:
    out, detail = _quickstart(["--two-way", *args], tmp_path)
    assert "OK: the CRM holds every sample row exactly as mapped" in out, detail
    # Each step waits for its result on the other side and fails the run when it does not come.
    for step in (
        "insert customer",
        "account website + industry",
        "contact first name + title",
        "ping-pong: 20 alternating edits",
        "one write per edit, none in quiet",
        "won deal -> sales order",
        "deal carries SO-",
    ):
        assert step in out, detail
    assert "FAILED" not in out, detail
    if "--source" in args:
        config = (tmp_path / "erp" / "replicator.yaml").read_text()
        assert "kind: kafka" in config and "webhooks:" in config, config


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_quickstart_against_a_vendor_sandbox_reconciles_clean(crm: str, tmp_path: Path) -> None:
    out, detail = _quickstart(["--crm", crm], tmp_path)
    assert "holds every sample row exactly as mapped" in out, detail
    for change in ("rename customer", "change contact title"):
        assert change in out, detail
    config = (tmp_path / "erp" / "replicator.yaml").read_text()
    assert f"kind: {crm}" in config, config
    # The vendor's own limit was in force and the shared budget kept the run under it.
    assert ", 0 of them over its rate limit" in out, detail
    if crm == "salesforce":  # the initial load goes by Bulk API 2.0 above SALESFORCE_BULK_THRESHOLD (20)
        jobs = re.search(r"Bulk API 2.0 ingest jobs \(initial load\): (\d+)", out)
        assert jobs is not None and int(jobs.group(1)) >= 2, detail


def _quickstart(args: list[str], tmp_path: Path) -> tuple[str, str]:
    """Runs `script/quickstart --once ARGS`; asserts exit 0; returns (output, detail for assertions)."""
    run = subprocess.run(
        [sys.executable, "-m", "replicator.devstack.quickstart", "--once", "--state-dir", str(tmp_path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=500,
    )
    out = run.stdout + run.stderr
    log = tmp_path / "replicator.log"
    detail = out[-4000:] + ("\n--- replicator.log:\n" + log.read_text()[-4000:] if log.exists() else "")
    assert run.returncode == 0, detail
    return out, detail


@pytest.mark.parametrize(
    "args",
    [["--crm", "hubspot"], ["--crm", "salesforce", "--erp", "mariadb"]],
    ids=["hubspot-webhooks-postgres", "salesforce-polling-mariadb"],
)
def test_quickstart_two_way_against_a_vendor_sandbox(args: list[str], tmp_path: Path) -> None:
    out, detail = _quickstart(["--two-way", *args], tmp_path)
    assert "holds every sample row exactly as mapped" in out, detail
    # Each user edit is waited for in the ERP, and the run must go quiet with one write per edit.
    for step in ("website + industry", "contact first name +", "one ERP write per edit, none in quiet  2 writes"):
        assert step in out, detail
    assert "FAILED" not in out and ", 0 of them over its rate limit" in out, detail
    config = (tmp_path / "erp" / "replicator.yaml").read_text()
    assert ("webhooks:" if "hubspot" in args else "lookback_s:") in config, config
