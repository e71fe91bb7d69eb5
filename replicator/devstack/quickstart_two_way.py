"""The quickstart's CRM -> ERP steps (`--two-way`): BottleCRM's signed webhooks reach the
replicator, CRM edits become ERP rows, edits bounce between both sides exactly once, and
a deal won in the CRM becomes a sales order with its lines."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx

from replicator.devstack.bottlecrm import BottleCrm
from replicator.devstack.quickstart_erp import QuickErp

WEBHOOK_PATH = "/webhooks/bottlecrm"
WEBHOOK_EVENTS = [
    *(f"account.{e}" for e in ("created", "updated", "deleted")),
    *(f"contact.{e}" for e in ("created", "updated", "deleted")),
    *(f"deal.{e}" for e in ("created", "updated", "deleted", "won", "lost")),
]
TIMEOUT_S = 30.0
QUIET_S = 3.0
Timings = list[tuple[str, float]]


class StepFailed(RuntimeError):
    """A two-way step did not reach its expected state; the message says which and what was seen."""


def register_webhook(crm: BottleCrm, metrics_port: int) -> str:
    """Point BottleCRM's webhooks at the replicator's receiver; returns the signing secret."""
    _, secret = crm.create_webhook(
        f"http://127.0.0.1:{metrics_port}{WEBHOOK_PATH}", WEBHOOK_EVENTS, description="replicator quickstart"
    )
    return secret


def metric_sum(text: str, name: str, **labels: str | tuple[str, ...]) -> float:
    """Sum of a metric's samples whose labels match (a tuple value: any of these)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) in (v if isinstance(v, tuple) else (v,)) for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class TwoWaySteps:
    def __init__(self, erp: QuickErp, crm: BottleCrm, metrics_port: int) -> None:
        from replicator.sinks.bottlecrm import BottleCrmSink

        self.erp = erp
        self.sink = BottleCrmSink(crm.url, crm.token)
        self.api = httpx.Client(base_url=crm.api, headers={"Authorization": f"Bearer {crm.token}"}, timeout=30)
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    def close(self) -> None:
        self.api.close()
        self.sink.close()

    # --- helpers -------------------------------------------------------------------------

    def crm_id(self, object: str, external_id: str) -> str:
        found = self.sink.lookup(object, external_id)
        if found is None:
            raise StepFailed(f"{object} {external_id} is not in the CRM: the ERP -> CRM sync did not bring it")
        return str(found["id"])

    def request(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.api.request(method, path, json=body)
        if resp.status_code >= 300:
            raise StepFailed(f"BottleCRM {method} /api{path} answered HTTP {resp.status_code}: {resp.text[:300]}")
        return resp.json() if resp.content else {}

    def wait(self, what: str, check: Callable[[], Any], start: float, timeout: float = TIMEOUT_S) -> Any:
        """Poll `check` until truthy; returns its value. Fails with `what` after `timeout` from `start`."""
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() - start > timeout:
                raise StepFailed(f"{what}: not seen after {timeout:.0f} s")
            time.sleep(0.05)

    def _crm_name_is(self, account: str, name: str) -> bool:
        return (self.sink.get("account", account) or {}).get("name") == name

    def _erp_name_is(self, customer: int, name: str) -> bool:
        return self.erp.query("SELECT name FROM customers WHERE id = %s", (customer,)) == [(name,)]

    def metrics(self) -> str:
        return httpx.get(self.metrics_url, timeout=5).text

    def writes(self) -> tuple[float, float]:
        """(CRM writes, ERP writes) the replicator made so far."""
        text = self.metrics()
        crm = metric_sum(text, "replicator_crm_responses_total", method=("PATCH", "PUT"))
        erp = metric_sum(text, "replicator_erp_writes_total", outcome="ok")
        return crm, erp

    def settled(self, start: float, timeout: float = TIMEOUT_S) -> None:
        """Every webhook received is processed."""
        self.wait("an empty inbox", lambda: metric_sum(self.metrics(), "replicator_inbox_backlog") == 0, start, timeout)

    # --- the steps -----------------------------------------------------------------------

    def crm_edits(self) -> Timings:
        """Edit an account and a contact through BottleCRM's REST API; time each until the ERP row shows it."""
        timings: Timings = []
        account, contact = self.crm_id("account", "CUST-3"), self.crm_id("contact", "CONT-5")

        def timed(what: str, path: str, body: dict[str, Any], sql: str, expected: tuple[Any, ...]) -> None:
            start = time.monotonic()
            self.request("PATCH", path, body)
            self.wait(f"{what} (expected {expected} from: {sql})", lambda: self.erp.query(sql) == [expected], start)
            timings.append((what, time.monotonic() - start))

        timed(
            "account website + industry",
            f"/accounts/{account}/",
            {"website": "https://crm-edit.example", "industry": "FINANCE"},
            "SELECT website, industry FROM customers WHERE id = 3",
            ("https://crm-edit.example", "FIN"),  # the mapping's reverse: FINANCE -> FIN
        )
        timed(
            "contact first name + title",
            f"/contacts/{contact}/",
            {"first_name": "Ada-CRM", "title": "Chief of Things"},
            "SELECT first_name, job_title FROM contacts WHERE id = 5",
            ("Ada-CRM", "Chief of Things"),
        )
        return timings

    def ping_pong(self, edits: int = 20) -> tuple[float, float, float, float]:
        """Alternate ERP and CRM edits of one account's name, each waited for on the other side.

        Each edit must make exactly one write on the other side (the replicator's /metrics),
        and nothing may follow in a quiet period: no echo comes back. Returns (seconds in all,
        median ERP -> CRM, median CRM -> ERP, quiet seconds)."""
        customer = 1
        account = self.crm_id("account", f"CUST-{customer}")
        crm_before, erp_before = self.writes()
        started = time.monotonic()
        to_crm: list[float] = []
        to_erp: list[float] = []
        for i in range(edits):
            name = f"Ping-pong {i}"
            start = time.monotonic()
            if i % 2 == 0:
                self.erp.query("UPDATE customers SET name = %s WHERE id = %s", (name, customer))
                self.wait(
                    f"ping-pong edit {i}: ERP name {name!r} in the CRM",
                    partial(self._crm_name_is, account, name),
                    start,
                )
                to_crm.append(time.monotonic() - start)
            else:
                self.request("PATCH", f"/accounts/{account}/", {"name": name})
                self.wait(
                    f"ping-pong edit {i}: CRM name {name!r} in the ERP",
                    partial(self._erp_name_is, customer, name),
                    start,
                )
                to_erp.append(time.monotonic() - start)
        elapsed = time.monotonic() - started
        self.settled(time.monotonic())
        quiet_from = self.writes()
        time.sleep(QUIET_S)
        crm_after, erp_after = self.writes()
        crm_edits, erp_edits = edits // 2, edits - edits // 2
        problems = []
        if crm_after - crm_before != erp_edits:
            problems.append(f"{crm_after - crm_before:.0f} CRM writes for {erp_edits} ERP edits")
        if erp_after - erp_before != crm_edits:
            problems.append(f"{erp_after - erp_before:.0f} ERP writes for {crm_edits} CRM edits")
        if (crm_after, erp_after) != quiet_from:
            problems.append(
                f"writes went on during the {QUIET_S:.0f} s quiet period: {quiet_from} -> {(crm_after, erp_after)}"
            )
        if problems:
            raise StepFailed("ping-pong: " + "; ".join(problems) + " (an echo was not suppressed, or a write was lost)")
        return elapsed, _median(to_crm), _median(to_erp), QUIET_S

    def won_deal(self) -> Timings:
        """A deal won in the CRM, for an ERP customer and an ERP product, becomes one sales order with its line."""
        timings: Timings = []
        account, product = self.crm_id("account", "CUST-1"), self.crm_id("product", "SKU-1002")
        start = time.monotonic()
        deal = str(
            self.request(
                "POST",
                "/opportunities/",
                {"name": "Quickstart won deal", "account": account, "stage": "PROSPECTING", "amount": "100.00",
                 "currency": "EUR"},
            )["id"]
        )  # fmt: skip
        self.request(
            "POST",
            f"/opportunities/{deal}/line-items/",
            {"product_id": product, "quantity": "2", "unit_price": "50.00"},
        )
        timings.append(("create deal + line item (REST)", time.monotonic() - start))
        start = time.monotonic()
        self.request(
            "PATCH", f"/opportunities/{deal}/", {"stage": "CLOSED_WON", "closed_on": "2026-12-01", "amount": "100.00"}
        )
        order = self.wait(
            f"won deal {deal} -> a sales_orders row with crm_ref = {deal}",
            lambda: self.erp.query(
                "SELECT id, customer_id, status, total FROM sales_orders WHERE crm_ref = %s", (deal,)
            ),
            start,
        )
        order_id, customer_id, status, total = order[0]
        if (customer_id, status, str(total)) != (1, "confirmed", "100.00"):
            raise StepFailed(
                f"won deal {deal}: sales order {order_id} has customer {customer_id}, status {status}, total {total}; "
                "expected customer 1 (CUST-1), confirmed, 100.00"
            )
        sku_id = self.erp.query("SELECT id FROM products WHERE sku = 'SKU-1002'")[0][0]
        lines = self.wait(
            f"sales order {order_id}: its sales_order_lines row",
            lambda: self.erp.query(
                "SELECT product_id, quantity, unit_price FROM sales_order_lines WHERE order_id = %s", (order_id,)
            ),
            start,
        )
        got = [(p, f"{float(q):g}", f"{float(u):.2f}") for p, q, u in lines]
        if got != [(sku_id, "2", "50.00")]:
            raise StepFailed(f"sales order {order_id}: lines {got}, expected [(product {sku_id} = SKU-1002, 2, 50.00)]")
        timings.append((f"won deal -> sales order {order_id} + line", time.monotonic() - start))
        # The order goes back to the CRM as the deal's ERP record: the deal carries SO-<id> and stays won.
        self.wait(
            f"deal {deal} linked to SO-{order_id} and still won",
            lambda: (self.sink.lookup("opportunity", f"SO-{order_id}") or {}).get("stage") == "CLOSED_WON",
            start,
        )
        timings.append((f"deal carries SO-{order_id} (round trip)", time.monotonic() - start))
        return timings


def _median(values: list[float]) -> float:
    s = sorted(values)
    return (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2 if s else 0.0


def run_two_way(erp: QuickErp, crm: BottleCrm, metrics_port: int, say: Callable[[str], None]) -> None:
    """The CRM -> ERP steps, printed like the ERP -> CRM ones; raises StepFailed on any failure."""
    steps = TwoWaySteps(erp, crm, metrics_port)
    try:
        # The initial load's creates come back as webhooks and are checked as echoes first.
        steps.settled(time.monotonic(), timeout=120)
        for what, seconds in steps.crm_edits():
            say(f"      {what:<38} {seconds * 1000:7.0f} ms")
        elapsed, to_crm, to_erp, quiet = steps.ping_pong()
        say(f"      {'ping-pong: 20 alternating edits':<38} {elapsed * 1000:7.0f} ms")
        say(f"      {'  median ERP -> CRM':<38} {to_crm * 1000:7.0f} ms")
        say(f"      {'  median CRM -> ERP':<38} {to_erp * 1000:7.0f} ms")
        say(f"      {'  one write per edit, none in quiet':<38} {quiet * 1000:7.0f} ms")
        for what, seconds in steps.won_deal():
            say(f"      {what:<38} {seconds * 1000:7.0f} ms")
    finally:
        steps.close()
