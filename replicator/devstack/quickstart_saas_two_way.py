"""The quickstart's CRM -> ERP step against a vendor sandbox (`--crm hubspot|salesforce --two-way`):
a CRM user's edits, made in the sandbox the way the vendor's UI makes them, reach the ERP (by
HubSpot's signed webhooks, or by Salesforce polling), each as one ERP write, and the
replicator's own CRM writes never come back as ERP writes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx

from replicator.devstack.quickstart_erp import QuickErp
from replicator.devstack.quickstart_two_way import StepFailed, metric_sum
from replicator.sandbox.core import Running

TIMEOUT_S = 30.0
QUIET_S = 3.0


@dataclass(frozen=True)
class UserEdit:
    what: str
    object: str  # the sandbox's name of the object: companies, Contact...
    external_id: str
    fields: dict[str, Any]  # the user's change, in the shape the sandbox's user-edit endpoint takes
    sql: str  # what the ERP answers once the edit arrived
    expected: tuple[Any, ...]


def _shows(erp: QuickErp, edit: UserEdit) -> bool:
    return erp.query(edit.sql) == [edit.expected]


def _wait(what: str, check: Callable[[], bool], start: float, timeout: float = TIMEOUT_S) -> None:
    while not check():
        if time.monotonic() - start > timeout:
            raise StepFailed(f"{what}: not seen after {timeout:.0f} s")
        time.sleep(0.02)


def run_saas_two_way(
    erp: QuickErp,
    running: Running,
    external_id_of: Callable[[dict[str, Any]], tuple[str | None, str]],
    edits: tuple[UserEdit, ...],
    metrics_port: int,
    say: Callable[[str], None],
) -> None:
    """Make each user edit, time it until the ERP shows it, then check that the run went quiet
    with exactly one ERP write per edit. `external_id_of` reads (external id, record id) from
    one of the sandbox's records."""
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    def erp_writes() -> float:
        return metric_sum(httpx.get(metrics_url, timeout=5).text, "replicator_erp_writes_total", outcome="ok")

    def inbox_empty() -> bool:
        return metric_sum(httpx.get(metrics_url, timeout=5).text, "replicator_inbox_backlog") == 0

    before = erp_writes()
    for edit in edits:
        listed = httpx.get(f"{running.url}/__sandbox/objects/{edit.object}", timeout=10).json()["results"]
        ids = dict(external_id_of(r) for r in listed)
        record_id = ids.get(edit.external_id)
        if record_id is None:
            raise StepFailed(
                f"{edit.object} {edit.external_id} is not in the sandbox: the ERP -> CRM sync did not bring it"
            )
        start = time.monotonic()
        resp = httpx.post(f"{running.url}/__sandbox/objects/{edit.object}/{record_id}", json=edit.fields, timeout=10)
        if resp.status_code != 200:
            raise StepFailed(f"the user edit of {edit.object} {record_id} was refused: {resp.text[:300]}")
        _wait(f"{edit.what} in the ERP (expected {edit.expected} from: {edit.sql})", partial(_shows, erp, edit), start)
        say(f"      {edit.what:<38} {(time.monotonic() - start) * 1000:7.0f} ms")
    start = time.monotonic()
    _wait("an empty inbox", inbox_empty, start)
    writes = erp_writes()
    time.sleep(QUIET_S)  # our own CRM writes come back (webhooks, polls): none may become an ERP write
    _wait("an empty inbox", inbox_empty, start)
    quiet = erp_writes()
    if writes - before != len(edits) or quiet != writes:
        raise StepFailed(
            f"expected one ERP write per CRM edit ({len(edits)}) and none in quiet; "
            f"saw {writes - before:.0f}, then {quiet - writes:.0f} more"
        )
    say(f"      {'one ERP write per edit, none in quiet':<38} {len(edits)} writes")
