"""Two-way sync on the MariaDB sample ERP: BottleCRM (Celery + Redis, real signed webhooks)
<-> replicator <-> MariaDB. MariaDB has no replication origins, so our own ERP writes come
back through the binary log and must be recognised by the ledger."""

from __future__ import annotations

import time

from tests.fixtures.two_way import TwoWayStack, patch


def _crm_patches(stack: TwoWayStack) -> float:
    return stack.metric("replicator_crm_responses_total", method="PATCH")


def test_mariadb_two_way_edits_echoes_and_a_value_that_does_not_fit(two_way_mariadb: TwoWayStack) -> None:
    s = two_way_mariadb
    s.start()
    s.wait_backfilled()
    account = s.crm_id("account", "CUST-3")
    contact = s.crm_id("contact", "CONT-5")
    patches_before = _crm_patches(s)
    ledger_before = s.metric("replicator_echoes_suppressed_total", direction="erp_to_crm", by="ledger")

    # CRM -> MariaDB, through the webhook.
    with s.crm_api as api:
        patch(api, f"/accounts/{account}/", {"website": "https://crm-edit.example", "industry": "FINANCE"})
        patch(api, f"/contacts/{contact}/", {"first_name": "Ada-CRM", "title": "Chief of Things"})
    s.wait_for(
        "account edit in MariaDB",
        lambda: s.erp("SELECT website, industry FROM customers WHERE id = 3") == [("https://crm-edit.example", "FIN")],
    )
    s.wait_for(
        "contact edit in MariaDB",
        lambda: s.erp("SELECT first_name, job_title FROM contacts WHERE id = 5") == [("Ada-CRM", "Chief of Things")],
    )
    # Our MariaDB writes come back through the binlog: the ledger recognises both, nothing goes to the CRM.
    s.wait_for(
        "both binlog echoes suppressed by the ledger",
        lambda: (
            s.metric("replicator_echoes_suppressed_total", direction="erp_to_crm", by="ledger") - ledger_before >= 2
        ),
    )
    s.wait_idle()
    time.sleep(3)  # a late echo that escaped the ledger would PATCH the CRM by now
    s.wait_idle()
    assert _crm_patches(s) == patches_before, s.metric_lines("crm_responses", "echoes", "erp_writes")
    assert s.metric("replicator_erp_writes_total", outcome="ok") == 2, s.metric_lines("erp_writes", "echoes")

    # MariaDB -> CRM; the CRM's webhook for our own write is recognised and dropped.
    crm_echoes_before = s.metric("replicator_echoes_suppressed_total", direction="crm_to_erp", by="ledger")
    s.erp("UPDATE customers SET name = 'Renamed in MariaDB' WHERE id = 3")
    s.wait_for(
        "MariaDB rename in the CRM",
        lambda: (s.sink.lookup("account", "CUST-3") or {}).get("name") == "Renamed in MariaDB",
    )
    s.wait_for(
        "the webhook echo suppressed",
        lambda: s.metric("replicator_echoes_suppressed_total", direction="crm_to_erp", by="ledger") > crm_echoes_before,
    )
    s.wait_for("an empty inbox", lambda: s.backlog() == 0)
    s.wait_idle()
    time.sleep(2)
    assert s.metric("replicator_erp_writes_total", outcome="ok") == 2, s.metric_lines("erp_writes", "echoes")
    assert _crm_patches(s) == patches_before + 1, s.metric_lines("crm_responses", "echoes")
    reconciled = s.cli("reconcile")
    assert reconciled.returncode == 0, reconciled.stdout[-3000:] + reconciled.stderr[-3000:]

    # contacts.first_name is VARCHAR(100) on MariaDB; BottleCRM takes 255 characters.
    too_long = "Maximiliana" * 14  # 154 characters
    other = s.crm_id("contact", "CONT-6")
    before = s.erp("SELECT first_name, last_name, job_title FROM contacts WHERE id = 6")
    with s.crm_api as api:
        # Nothing of this edit may land: the row is written whole or not at all.
        patch(api, f"/contacts/{other}/", {"first_name": too_long, "title": "Not written"})
    letter = s.wait_for(
        "the dead letter for the long first name",
        lambda: s.sql(
            "SELECT reason, op FROM replicator.dead_letters WHERE entity = 'contacts' AND erp_key = %s "
            "AND status = 'open'",
            (f"crm:{other}",),
        ),
    )
    reason = letter[0][0]
    assert "first_name" in reason and "154" in reason and "100" in reason, reason
    s.wait_for("an empty inbox", lambda: s.backlog() == 0)
    s.wait_idle()
    assert s.erp("SELECT first_name, last_name, job_title FROM contacts WHERE id = 6") == before
    assert s.metric("replicator_erp_writes_total", outcome="ok") == 2, s.metric_lines("erp_writes")
    assert s.metric("replicator_erp_writes_total", outcome="rejected") >= 1, s.metric_lines("erp_writes")

    # Put the CRM back to the ERP's values: both sides agree again.
    first_name, _, job_title = before[0]
    with s.crm_api as api:
        patch(api, f"/contacts/{other}/", {"first_name": first_name, "title": job_title or ""})
    s.wait_for(
        "the CRM contact back to the ERP's values",
        lambda: (
            (c := s.sink.lookup("contact", "CONT-6") or {}).get("first_name") == first_name
            and (c.get("title") or None) == job_title
        ),
    )
    s.wait_for("an empty inbox", lambda: s.backlog() == 0)
    s.wait_idle()
    assert s.erp("SELECT first_name, last_name, job_title FROM contacts WHERE id = 6") == before
    reconciled = s.cli("reconcile")
    assert reconciled.returncode == 0, reconciled.stdout[-3000:] + reconciled.stderr[-3000:]
