"""Two-way sync end to end: BottleCRM (Celery + Redis, real signed webhooks) <-> replicator <-> ERP."""

from __future__ import annotations

import time

from tests.fixtures.two_way import TwoWayStack


def _lines(stack: TwoWayStack, *names: str) -> str:
    return "\n".join(line for line in stack.metrics().splitlines() if any(n in line for n in names) and "#" not in line)


def _crm_id(stack: TwoWayStack, object: str, external_id: str) -> str:
    found = stack.sink.lookup(object, external_id)
    assert found is not None, f"{object} {external_id} is not in the CRM"
    return str(found["id"])


def test_crm_edits_reach_the_erp_and_erp_edits_do_not_come_back(two_way: TwoWayStack) -> None:
    s = two_way
    s.start()
    s.wait_backfilled()
    account = _crm_id(s, "account", "CUST-3")
    contact = _crm_id(s, "contact", "CONT-5")

    # CRM -> ERP, through the webhook
    with s.crm_api as api:
        r = api.patch(f"/accounts/{account}/", json={"website": "https://crm-edit.example", "industry": "FINANCE"})
        assert r.status_code < 300, r.text
        r = api.patch(f"/contacts/{contact}/", json={"first_name": "Ada-CRM", "title": "Chief of Things"})
        assert r.status_code < 300, r.text
    s.wait_for(
        "account edit in the ERP",
        lambda: s.erp("SELECT website, industry FROM customers WHERE id = 3") == [("https://crm-edit.example", "FIN")],
    )
    s.wait_for(
        "contact edit in the ERP",
        lambda: s.erp("SELECT first_name, job_title FROM contacts WHERE id = 5") == [("Ada-CRM", "Chief of Things")],
    )
    # Our ERP write carries the replication origin: the slot source drops it, nothing goes back.
    s.wait_idle()
    assert s.metric("replicator_echoes_suppressed_total", direction="erp_to_crm", by="origin") >= 2
    assert s.metric("replicator_erp_writes_total", outcome="ok") == 2, _lines(s, "erp_writes", "events_out", "echoes")

    # ERP -> CRM; the CRM's webhook for our own write is recognised and dropped.
    s.erp("UPDATE customers SET name = 'Renamed in the ERP' WHERE id = 3")
    s.wait_for(
        "ERP rename in the CRM", lambda: (s.sink.lookup("account", "CUST-3") or {}).get("name") == "Renamed in the ERP"
    )
    s.wait_for(
        "the webhook echo suppressed",
        lambda: s.metric("replicator_echoes_suppressed_total", direction="crm_to_erp", by="ledger") >= 1,
    )
    time.sleep(2)
    assert s.metric("replicator_erp_writes_total", outcome="ok") == 2
    assert s.cli("reconcile").returncode == 0
