"""The CLI's answers to good and bad input, on a real ERP and CRM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fixtures.stack import Stack


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicator.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_bad_config_names_file_path_and_fix(stack: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = stack.config_path.read_text().replace("object: contact\n", "object: contact\n    colour: blue\n")
    bad.write_text(text)
    result = run(["check", "--config", str(bad)], stack.env)
    assert result.returncode == 2
    assert f"invalid configuration in {bad}" in result.stderr
    assert "mappings.contacts.colour" in result.stderr
    assert "unknown key" in result.stderr


def test_unknown_column_fails_at_startup_with_its_location(stack: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(stack.config_path.read_text().replace("first_name: first_name", "first_name: firstname"))
    result = run(["run", "--config", str(bad)], stack.env)
    assert result.returncode == 2
    assert "mappings.contacts.fields.first_name" in result.stderr
    assert "first_name" in result.stderr  # the suggestion


def test_missing_secret_is_reported_before_connecting(stack: Stack) -> None:
    env = {k: v for k, v in stack.env.items() if k != "BOTTLECRM_TOKEN"}
    result = run(["run", "--config", str(stack.config_path)], env)
    assert result.returncode == 2
    assert "BOTTLECRM_TOKEN is not set" in result.stderr


def test_check_passes_on_a_set_up_stack_and_fails_without_a_slot(stack: Stack) -> None:
    ok = stack.cli("check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "wal_level" in ok.stdout and "logical" in ok.stdout
    stack.sql(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()"
    )
    failed = stack.cli("check")
    assert failed.returncode == 1
    assert "replicator setup" in failed.stdout


def test_preview_prints_the_payload_without_sending(stack: Stack) -> None:
    result = stack.cli("preview", "customers", "2")
    assert result.returncode == 0, result.stderr
    assert '"external_id": "CUST-2"' in result.stdout
    assert '"email": "info@customer2.example"' in result.stdout
    assert stack.sink.lookup("account", "CUST-2") is None  # nothing was sent
    missing = stack.cli("preview", "customers", "99999")
    assert missing.returncode == 1
    assert "no row in public.customers" in missing.stderr


def test_check_warns_when_the_slot_retains_too_much_wal(stack: Stack, tmp_path: Path) -> None:
    config = tmp_path / "lag.yaml"
    config.write_text(
        stack.config_path.read_text().replace("  publication: pub_", "  lag_warn_bytes: 1024\n  publication: pub_")
    )
    # Nobody consumes the slot: every write below is WAL it must retain.
    stack.sql("UPDATE customers SET notes = repeat('x', 5000)")
    result = run(["check", "--config", str(config)], stack.env)
    assert result.returncode == 0, result.stdout + result.stderr  # a warning, not a failure
    line = next(line for line in result.stdout.splitlines() if "slot slot_" in line)
    assert "warn" in line and "retains" in line
    assert "the replicator is behind or stopped" in result.stdout
