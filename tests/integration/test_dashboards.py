"""Every Grafana dashboard query and every alert expression, run against a real Prometheus that scrapes a
real `replicator run` after traffic that makes every metric family exist.

Checks per expression:
- the real engine accepts it and evaluates it (status success; alert rules report health "ok");
- every metric selector in it matches series, and every label name it uses (matchers, by/on/without/
  ignoring lists, legendFormat {{label}}, annotation $labels.label) exists on the series it applies to,
  so a misspelled name cannot hide behind `or`, `unless` or an empty alert condition;
- dashboard queries return samples; alert conditions (normally empty on a healthy system) are
  evaluated with `bool` added to their comparisons, which keeps the series the condition would filter,
  and must return samples too.

The CRM -> ERP panels and alerts are checked against a two-way run (signed webhooks from a real
BottleCRM, polling, ERP writes, echoes, a parked conflict); the CRM API budget's against a run on the
HubSpot sandbox (a tight limit, injected 429s, the initial load at backfill priority, then live changes);
everything else against a one-way run.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from replicator.sandbox.core import Faults, Limits
from replicator.sources.crm.signature import sign_bottlecrm
from tests.fixtures.prometheus import Prometheus, prometheus_binary
from tests.fixtures.saas import SaasStack, SaasStackFactory
from tests.fixtures.stack import Stack
from tests.fixtures.two_way import TwoWayStack

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "replicator.json"
ALERTS = ROOT / "prometheus" / "alerts.yml"
RATE_WINDOW = "1m"  # stands in for $__rate_interval / $__interval / $__range

# Metrics only the CRM -> ERP direction produces: queries on them are checked against the two-way run.
CRM_TO_ERP_METRICS = {
    "replicator_webhooks_total",
    "replicator_inbox_backlog",
    "replicator_crm_polled_total",
    "replicator_erp_writes_total",
    "replicator_erp_write_seconds",
    "replicator_crm_to_erp_seconds",
    "replicator_echoes_suppressed_total",
    "replicator_conflicts_total",
    "replicator_conflicts_open",
}

# Metrics only a replicator on a metered CRM (HubSpot, Salesforce) exports: the shared API budget and the
# CRM's own daily count. Queries on them are checked against the HubSpot run.
CRM_BUDGET_METRICS = {
    "replicator_crm_budget_granted_total",
    "replicator_crm_budget_wait_seconds",
    "replicator_crm_budget_exhausted_total",
    "replicator_crm_budget_throttled_total",
    "replicator_crm_budget_factor",
    "replicator_crm_budget_window_utilisation",
    "replicator_crm_budget_daily_used",
    "replicator_crm_budget_limit_per_second",
    "replicator_crm_budget_foreign_requests_total",
    "replicator_crm_api_daily_used",
    "replicator_crm_api_daily_limit",
}

# Queries that stay empty even after the traffic below, keyed by dashboard "title #panel id/refId" or alert
# name: (the label matcher whose value cannot be produced, why). The check still requires the query to
# be empty as it stands (a stale entry fails) and to return data with that matcher relaxed to =~".+".
MAY_BE_EMPTY: dict[str, tuple[str, str]] = {
    "CRM error share (5xx + no response) #20/B": (
        'status="429"',
        "the real BottleCRM has no API rate limiting (no DRF throttle classes): it never answers 429",
    ),
    "ReplicatorCrm429": ('status="429"', "same: no 429s from the real BottleCRM"),
}

# --------------------------------------------------------------------------- a small PromQL reader

TOKEN_RE = re.compile(
    r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<matchers>\{(?:"(?:\\.|[^"\\])*"|[^}"])*\})
  | (?P<range>\[[^\]]*\])
  | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?[A-Za-z]*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<cmp>==|!=|>=|<=|>|<)
  | (?P<space>\s+)
  | (?P<other>.)
    """,
    re.X | re.S,
)
MATCHER_RE = re.compile(
    r"""\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)\s*(?:,|$)"""
)
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
}  # fmt: skip
LEGEND_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
ANNOTATION_LABEL_RE = re.compile(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class Selector:
    name: str
    labels: list[str]
    text: str  # the selector alone, without range or offset


@dataclass
class Parsed:
    selectors: list[Selector] = field(default_factory=list)
    grouping_labels: set[str] = field(default_factory=set)


def _tokens(expr: str) -> list[tuple[str, str]]:
    return [(m.lastgroup or "", m.group()) for m in TOKEN_RE.finditer(expr)]


def parse_promql(expr: str) -> Parsed:
    """Metric selectors and grouping label names of an expression (enough PromQL for our queries)."""
    toks = [t for t in _tokens(expr) if t[0] != "space"]
    out = Parsed()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ("", "")
        if kind == "matchers":
            raise ValueError(f"selector without a metric name in {expr!r}")
        if kind == "ident":
            low = text.lower()
            if low in GROUPING:
                if nxt[1] == "(":
                    i += 2
                    while toks[i][1] != ")":
                        if toks[i][0] == "ident":
                            out.grouping_labels.add(toks[i][1])
                        i += 1
                i += 1
                continue
            if low not in KEYWORDS and low not in AGGREGATIONS and nxt[1] != "(":
                labels: list[str] = []
                selector = text
                if nxt[0] == "matchers":
                    body = nxt[1][1:-1]
                    pos = 0
                    while pos < len(body.rstrip()):
                        m = MATCHER_RE.match(body, pos)
                        if not m:
                            raise ValueError(f"cannot read label matchers {nxt[1]!r} in {expr!r}")
                        labels.append(m.group(1))
                        pos = m.end()
                    selector += nxt[1]
                    i += 1
                out.selectors.append(Selector(text, labels, selector))
        i += 1
    return out


def with_bool(expr: str) -> str:
    """`a > 0` -> `a > bool 0`: the comparison yields 0/1 for every series instead of filtering them out."""
    toks = _tokens(expr)
    out: list[str] = []
    for i, (kind, text) in enumerate(toks):
        out.append(text)
        if kind == "cmp":
            rest = [t for t in toks[i + 1 :] if t[0] != "space"]
            if not (rest and rest[0][1].lower() == "bool"):
                out.append(" bool")
    return "".join(out)


# --------------------------------------------------------------------------- the check


@dataclass
class Query:
    key: str  # "panel title #panel id/refId" or the alert name
    expr: str
    label_refs: set[str]  # labels a legend or an annotation prints: they must be on the result
    condition: bool  # an alert condition: evaluate it with `bool` comparisons


def dashboard_queries(dashboard: dict[str, Any], substitute: Callable[[str], str]) -> list[Query]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows
    queries = []
    for panel in panels:
        for target in panel.get("targets", []):
            if target.get("expr"):
                queries.append(
                    Query(
                        f"{panel.get('title')} #{panel.get('id')}/{target.get('refId')}",
                        substitute(target["expr"]),
                        set(LEGEND_RE.findall(target.get("legendFormat", ""))),
                        condition=False,
                    )
                )
    return queries


def alert_queries(rules: list[dict[str, Any]]) -> list[Query]:
    return [
        Query(
            rule["alert"],
            rule["expr"],
            set(ANNOTATION_LABEL_RE.findall(json.dumps(rule.get("annotations", {})))),
            condition=True,
        )
        for rule in rules
    ]


class Checker:
    def __init__(self, prom: Prometheus) -> None:
        self.prom = prom
        self._labels: dict[str, set[str]] = {}

    def metric_labels(self, name: str) -> set[str]:
        """Label names on any series of this metric name (empty: the name does not exist)."""
        if name not in self._labels:
            self._labels[name] = {k for s in self.prom.series(name) for k in s} - {"__name__"}
        return self._labels[name]

    def problems(self, q: Query) -> list[str]:
        answer = self.prom.query_raw(q.expr)
        if answer.get("status") != "success":
            return [f"rejected by Prometheus: {answer.get('errorType')}: {answer.get('error')}"]
        problems: list[str] = []
        relax = MAY_BE_EMPTY.get(q.key)
        parsed = parse_promql(q.expr)
        if not parsed.selectors:
            problems.append("no metric selector found")
        known_labels: set[str] = set()
        for sel in parsed.selectors:
            known = self.metric_labels(sel.name)
            if not known:
                problems.append(f"metric {sel.name} is not exported")
                continue
            known_labels |= known
            problems += [f"{sel.name} has no label {label!r}" for label in sel.labels if label not in known]
            if not (relax and relax[0] in sel.text) and not self.prom.query(sel.text):
                problems.append(f"selector {sel.text} matches no series")
        problems += [
            f"grouping label {label!r} is on none of the series queried"
            for label in sorted(parsed.grouping_labels - known_labels)
        ]

        probe = with_bool(q.expr) if q.condition else q.expr
        result = self.prom.query(probe)
        if relax:
            assert relax[0] in probe, f"{q.key}: allow-listed matcher {relax[0]} is not in the query"
            if result:
                problems.append("allow-listed as empty but returns data: remove its MAY_BE_EMPTY entry")
            name = relax[0].split("=", 1)[0]
            result = self.prom.query(probe.replace(relax[0], f'{name}=~".+"'))
        if not result:
            problems.append(f"returns no samples: {probe}")
        elif not q.condition and all(math.isnan(float(r["value"][1])) for r in result):
            problems.append(f"returns only NaN: {probe}")
        for label in sorted(q.label_refs):
            if any(label not in r["metric"] for r in result):
                problems.append(f"prints label {label!r}, which the result does not carry")
        return problems


# --------------------------------------------------------------------------- tests


def test_promql_reader() -> None:
    parsed = parse_promql(
        'sum by (instance, job, crm) (rate(x_total{status=~"5..|0", instance=~"a:1"}[10m])) / '
        "sum by (instance, job, crm) (rate(x_total[10m])) > 0.05 "
        "and on (instance) (time() - y offset 15m) > 60 or histogram_quantile(0.9, sum(z_bucket) by (le))"
    )
    assert [(s.name, s.labels) for s in parsed.selectors] == [
        ("x_total", ["status", "instance"]),
        ("x_total", []),
        ("y", []),
        ("z_bucket", []),
    ]
    assert parsed.selectors[0].text == 'x_total{status=~"5..|0", instance=~"a:1"}'
    assert parsed.grouping_labels == {"instance", "job", "crm", "le"}
    assert with_bool('up{job!="a"} == 0 or b >= bool 1 < 2') == 'up{job!="a"} == bool 0 or b >= bool 1 < bool 2'


def load_alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def queries_any(q: Query, metrics: set[str]) -> bool:
    return any(re.sub(r"_(bucket|sum|count)$", "", sel.name) in metrics for sel in parse_promql(q.expr).selectors)


def is_crm_to_erp(q: Query) -> bool:
    return queries_any(q, CRM_TO_ERP_METRICS)


def is_crm_budget(q: Query) -> bool:
    return queries_any(q, CRM_BUDGET_METRICS)


def scraped_after(prom: Prometheus, t: float, scrapes: int = 1) -> bool:
    up = f'up{{job="replicator", instance="{prom.target}"}}'
    last = prom.query(f"timestamp({up})")
    return bool(last) and float(last[0]["value"][1]) > t + scrapes - 0.5


def wait_first_scrape(prom: Prometheus) -> None:
    # Prometheus applies new targets after ~5 s: its first scrapes must precede the traffic, or rate()
    # windows see only the counters' final values (rates of 0, quantiles of NaN).
    prom.wait_for(
        "a first scrape of the replicator", lambda: prom.query(f'up{{job="replicator", instance="{prom.target}"}} == 1')
    )


def wait_scrapes_after_traffic(prom: Prometheus) -> None:
    """Several scrapes, the last two after the traffic."""
    up = f'up{{job="replicator", instance="{prom.target}"}}'
    done = time.time()
    prom.wait_for(
        "two scrapes after the traffic",
        lambda: (
            scraped_after(prom, done, scrapes=2)
            and float(prom.query(f"count_over_time({up}[{RATE_WINDOW}])")[0]["value"][1]) >= 5
        ),
    )


def assert_alert_rules_healthy(prom: Prometheus, rules: list[dict[str, Any]]) -> None:
    def evaluated() -> list[dict[str, Any]]:
        loaded = [r for r in prom.rules() if r.get("type") == "alerting"]
        return loaded if all(r["health"] != "unknown" for r in loaded) else []

    loaded = prom.wait_for("every alert rule evaluated", evaluated)
    assert {r["name"] for r in loaded} == {r["alert"] for r in rules}
    broken_rules = {r["name"]: r.get("lastError") for r in loaded if r["health"] != "ok"}
    assert not broken_rules, f"alert rules failing in the real engine: {broken_rules}"


def substitution(prom: Prometheus) -> Callable[[str], str]:
    def substitute(expr: str) -> str:
        for var in ("__rate_interval", "__interval", "__range"):
            expr = expr.replace(f"${{{var}}}", RATE_WINDOW).replace(f"${var}", RATE_WINDOW)
        expr = expr.replace("${instance}", prom.target).replace("$instance", prom.target)
        assert "$" not in expr, f"unhandled Grafana variable in {expr}"
        return expr

    return substitute


def assert_queries_work(
    checker: Checker, queries: list[Query], mutants: list[tuple[str, str, str, set[str] | None]]
) -> None:
    """Every query works on the real metrics, and the check catches each mutant (key, old, new, legend refs)."""
    problems = {q.key: p for q in queries if (p := checker.problems(q))}
    assert not problems, "queries that do not work against the real metrics:\n" + "\n".join(
        f"  {key}: {'; '.join(p)}" for key, p in problems.items()
    )
    by_key = {q.key: q for q in queries}
    broken = []
    for key, old, new, refs in mutants:
        q = by_key[key]
        assert old in q.expr, f"{key}: {old!r} not in {q.expr}"
        broken.append(Query(key, q.expr.replace(old, new, 1), q.label_refs if refs is None else refs, q.condition))
    undetected = [f"{q.key}: {q.expr} (refs {sorted(q.label_refs)})" for q in broken if not checker.problems(q)]
    assert not undetected, "the check misses broken queries:\n" + "\n".join(undetected)


def generate_traffic(stack: Stack, frozen_crm: Callable[[bool], None]) -> None:
    """Backfill, a dead letter, a CRM freeze (timeouts, retries), then streamed inserts/updates/deletes."""
    sink = stack.sink
    stack.wait_backfilled()

    # BottleCRM rejects a malformed email with a 400: a dead letter.
    stack.sql(
        "INSERT INTO contacts (id, customer_id, first_name, last_name, email) "
        "VALUES (700, 1, 'Bad', 'Email', 'not-an-email')"
    )
    stack.wait_for(
        "a dead letter", lambda: stack.sql("SELECT 1 FROM replicator.dead_letters WHERE erp_key = 'CONT-700'")
    )

    # A frozen CRM: requests time out (status "0"), operations are retried.
    frozen_crm(True)
    try:
        stack.sql("UPDATE products SET name = name || ' (freeze)' WHERE sku = 'SKU-1001'")
        stack.wait_for("a retry", lambda: "replicator_retries_total{" in stack.metrics(), timeout=30)
    finally:
        frozen_crm(False)
    stack.wait_for(
        "the change made during the freeze",
        lambda: str((sink.lookup("product", "SKU-1001") or {}).get("name", "")).endswith("(freeze)"),
    )

    # Streamed inserts, updates (two of one key in one transaction: coalesced), deletes.
    stack.sql("INSERT INTO customers (id, code, name, industry) VALUES (100, 'C0100', 'Streamed AG', 'FIN')")
    stack.sql("INSERT INTO products (sku, name, unit_price) VALUES ('SKU-9000', 'Streamed part', 10.10)")
    stack.sql(
        "UPDATE customers SET name = 'Streamed AG (1)' WHERE id = 100; "
        "UPDATE customers SET name = 'Streamed AG (2)' WHERE id = 100"
    )
    stack.sql("UPDATE products SET unit_price = 19.99 WHERE sku = 'SKU-9000'")
    stack.wait_for("the streamed product", lambda: sink.lookup("product", "SKU-9000"))
    stack.wait_for(
        "the streamed account", lambda: (sink.lookup("account", "CUST-100") or {}).get("name") == "Streamed AG (2)"
    )
    stack.sql("DELETE FROM products WHERE sku = 'SKU-9000'")
    stack.sql("DELETE FROM customers WHERE id = 100")
    stack.wait_for("the deleted account", lambda: sink.lookup("account", "CUST-100") is None)
    stack.wait_idle()


def test_every_dashboard_query_and_alert_expression_works_on_real_metrics(
    stack: Stack, frozen_crm: Callable[[bool], None], start_prometheus: Callable[[int], Prometheus]
) -> None:
    stack.config_path.write_text(
        stack.config_path.read_text().replace("concurrency: 4", "concurrency: 4\n  timeout_s: 1")
    )
    prom = start_prometheus(stack.metrics_port)
    stack.start()
    wait_first_scrape(prom)

    generate_traffic(stack, frozen_crm)
    # Labelled series are born at their first event: rate() sees no increase (and a latency quantile is
    # NaN) until a series scraped before has grown. A second round after a scrape makes every one grow.
    first_round = time.time()
    prom.wait_for("a scrape after the first round", lambda: scraped_after(prom, first_round))
    stack.sql("UPDATE customers SET name = name || ' (2nd)' WHERE id = 2")
    stack.sql("UPDATE products SET name = name || ' (2nd)' WHERE sku = 'SKU-1002'")
    stack.sql("UPDATE contacts SET job_title = 'Second round' WHERE id = 1")
    stack.wait_for(
        "the second round", lambda: str((stack.sink.lookup("account", "CUST-2") or {}).get("name")).endswith("(2nd)")
    )
    stack.wait_idle()
    wait_scrapes_after_traffic(prom)

    rules = load_alert_rules()
    assert_alert_rules_healthy(prom, rules)

    # The dashboard's $instance variable: label_values(<metric>, instance) must list the scraped target.
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    definition = variables["instance"]["definition"]
    m = re.fullmatch(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)", definition)
    assert m, f"unexpected $instance definition {definition!r}"
    instances = {s.get(m.group(2)) for s in prom.series(m.group(1))}
    assert instances == {prom.target}, f"$instance would list {instances}"

    every = dashboard_queries(dashboard, substitution(prom)) + alert_queries(rules)
    assert len(every) == len({q.key for q in every}), "duplicate panel id/refId"
    assert set(MAY_BE_EMPTY) <= {q.key for q in every}, "MAY_BE_EMPTY names a query that no longer exists"
    # The CRM -> ERP and CRM API budget queries are checked by the tests below.
    queries = [q for q in every if not is_crm_to_erp(q) and not is_crm_budget(q)]

    # The check itself catches a misspelled metric or label name, even where the expression would still
    # return data (behind `or`/`unless`, in an `on` list, in a legend).
    assert_queries_work(
        Checker(prom),
        queries,
        [
            ("ReplicatorUnhealthy", "replicator_healthy", "replicator_helthy", None),
            (
                "ReplicatorDeadLettersRising",
                "replicator_dead_letters_total offset",
                "replicator_dead_letter_total offset",
                None,
            ),
            ("ReplicatorPipelineStalled", "on (instance, job)", "on (instanse, job)", None),
            ("ReplicatorCrmErrorRate", 'status=~"5..|0"', 'statuz=~"5..|0"', None),
            ("ReplicatorSlotLagHigh", "replicator_slot_lag_bytes", "replicator_slot_lag_byte", None),
            ("ReplicatorUnhealthy", "replicator_healthy", "replicator_healthy", {"slot"}),
            ("Health #2/A", "instance=~", "instanse=~", None),
            ("Events in by table / op #9/A", "by (source, table, op)", "by (source, tabel, op)", None),
            ("Events in by table / op #9/A", "by (source, table, op)", "by (source, op)", None),  # legend: {{table}}
            ("Dead letters #23/B", "replicator_dead_letters_open", "replicator_dead_letter_open", None),
        ],
    )


def generate_crm_to_erp_traffic(s: TwoWayStack) -> None:
    """A parked conflict and polled records, webhooks accepted and forged, ERP writes ok and rejected,
    echoes both ways."""
    s.wait_backfilled()
    account = str((s.sink.lookup("account", "CUST-3") or {})["id"])
    rejected = str((s.sink.lookup("account", "CUST-5") or {})["id"])
    contact = str((s.sink.lookup("contact", "CONT-6") or {})["id"])
    # The ERP refuses long websites for one customer: the CRM's value cannot be written.
    s.erp("ALTER TABLE customers ADD CONSTRAINT short_website CHECK (id <> 5 OR length(website) <= 30)")

    # Both sides change a `manual` field while the replicator is down: the conflict is parked; the
    # poller (on, every 2 s) finds the CRM edit.
    s.stop()
    s.erp("UPDATE contacts SET phone = '+1 555 0100' WHERE id = 6")
    with s.crm_api as api:
        r = api.patch(f"/contacts/{contact}/", json={"phone": "+2 555 0200"})
        assert r.status_code < 300, r.text
    s.start()
    s.wait_for("the parked conflict", lambda: s.sql("SELECT 1 FROM replicator.conflicts WHERE status = 'open'"), 90)

    # Webhooks: two CRM edits (one the ERP accepts, one it rejects) and a forged request.
    with s.crm_api as api:
        for crm_id, website in ((account, "https://dash.example"), (rejected, "https://far-too-long.example/path")):
            r = api.patch(f"/accounts/{crm_id}/", json={"website": website})
            assert r.status_code < 300, r.text
    body = b'{"id": "evt-forged", "event": "account.updated", "data": {"id": "1"}}'
    forged = httpx.post(
        f"http://127.0.0.1:{s.metrics_port}/webhooks/bottlecrm",
        content=body,
        headers={
            "X-BottleCRM-Event": "account.updated",
            "X-BottleCRM-Delivery": "d-forged",
            "X-BottleCRM-Signature": sign_bottlecrm("not-the-secret", body, int(time.time())),
        },
        timeout=10,
    )
    assert forged.status_code == 401, forged.text
    s.wait_for(
        "the accepted CRM edit in the ERP",
        lambda: s.erp("SELECT website FROM customers WHERE id = 3") == [("https://dash.example",)],
    )
    s.wait_for("the rejected write", lambda: s.metric("replicator_erp_writes_total", outcome="rejected") >= 1)

    # ERP -> CRM; the CRM's webhook for our own write comes back and is recognised.
    s.erp("UPDATE customers SET name = 'Dashboard AG' WHERE id = 3")
    s.wait_for(
        "the ERP echo suppressed",
        lambda: s.metric("replicator_echoes_suppressed_total", direction="crm_to_erp") >= 1,
    )
    s.wait_for("an empty inbox", lambda: s.metric("replicator_inbox_backlog") == 0)
    s.wait_idle()


def test_crm_to_erp_panels_and_alerts_work_on_real_metrics(
    two_way: TwoWayStack, start_prometheus: Callable[[int], Prometheus]
) -> None:
    s = two_way
    s.env["BOTTLECRM_POLL_INTERVAL_S"] = "2"
    prom = start_prometheus(s.metrics_port)
    s.start()
    wait_first_scrape(prom)
    generate_crm_to_erp_traffic(s)
    # A second CRM edit after a scrape: the latency histograms grow inside the rate window.
    first_round = time.time()
    prom.wait_for("a scrape after the first round", lambda: scraped_after(prom, first_round))
    account = str((s.sink.lookup("account", "CUST-3") or {})["id"])
    with s.crm_api as api:
        r = api.patch(f"/accounts/{account}/", json={"website": "https://dash-2nd.example"})
        assert r.status_code < 300, r.text
    s.wait_for(
        "the second CRM edit in the ERP",
        lambda: s.erp("SELECT website FROM customers WHERE id = 3") == [("https://dash-2nd.example",)],
    )
    s.wait_idle()
    wait_scrapes_after_traffic(prom)

    rules = load_alert_rules()
    assert_alert_rules_healthy(prom, rules)
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [q for q in dashboard_queries(dashboard, substitution(prom)) + alert_queries(rules) if is_crm_to_erp(q)]
    titles = {q.key.split(" #")[0] for q in queries}
    assert {"Webhooks by outcome", "Open conflicts", "ReplicatorConflictsOpen", "ReplicatorInboxBacklog"} <= titles
    assert_queries_work(
        Checker(prom),
        queries,
        [
            ("ReplicatorWebhooksRejected", 'outcome=~"unsigned', 'outcom=~"unsigned', None),
            (
                "ReplicatorErpWritesRejected",
                'unless replicator_erp_writes_total{outcome="rejected"} offset',
                'unless replicator_erp_write_total{outcome="rejected"} offset',
                None,
            ),
            ("ReplicatorInboxBacklog", "delta(replicator_inbox_backlog", "delta(replicator_inbox_backlogs", None),
            (
                "ERP writes by table / action / outcome #32/A",
                "by (table, action, outcome)",
                "by (table, outcome)",
                None,
            ),
            ("Conflicts by entity / policy / winner #36/A", "policy, winner", "policy, winer", None),
        ],
    )


# The HubSpot run's budget: a burst small enough that the initial load queues for slots (wait times) and
# lasts several scrapes, so its backfill-priority grants are seen growing.
BUDGET_BURST = 5
BUDGET_WINDOW_S = 1.0


def live_changes(s: SaasStack, tag: str) -> None:
    """ERP updates streamed at live priority, until the sandbox holds the last of them."""
    s.sql(f"UPDATE customers SET name = name || ' ({tag})' WHERE id IN (1, 2, 3)")
    s.sql(f"UPDATE products SET name = name || ' ({tag})' WHERE sku IN ('SKU-1001', 'SKU-1002')")

    def arrived() -> bool:
        props = [r["properties"] for r in s.crm_records("account") if not r["archived"]]
        return any(p.get("erp_id") == "CUST-3" and str(p.get("name", "")).endswith(f"({tag})") for p in props)

    s.wait_for(f"the {tag} live changes in the sandbox", arrived)
    s.wait_idle()


def test_crm_budget_panels_and_alerts_work_on_real_metrics(
    saas_stack: SaasStackFactory, start_prometheus: Callable[[int], Prometheus]
) -> None:
    s = saas_stack(
        "hubspot",
        limits=Limits(burst=BUDGET_BURST, window_s=BUDGET_WINDOW_S, daily=100_000),
        overrides={
            "crm": {"budget": {"burst": BUDGET_BURST, "window_s": BUDGET_WINDOW_S}},
            "pipeline": {"batch_size": 20, "retry": {"max_attempts": 8, "initial_backoff_s": 0.05, "max_backoff_s": 1}},
        },
    )
    # The sandbox's limiter matches the budget, so it never answers 429 itself: the 429s are injected,
    # as from a CRM whose real limit is lower than the configured one.
    s.set_faults(Faults(rate_429=0.15, retry_after_s=0.2, seed=7))
    prom = start_prometheus(s.metrics_port)
    s.start()  # the initial load draws from the budget at backfill priority
    wait_first_scrape(prom)
    s.wait_backfilled(timeout=120)
    first_round = time.time()
    prom.wait_for("a scrape after the initial load", lambda: scraped_after(prom, first_round))
    live_changes(s, "1st")
    # A second round after a scrape: the live series scraped before grow inside the rate window.
    second_round = time.time()
    prom.wait_for("a scrape after the first round", lambda: scraped_after(prom, second_round))
    live_changes(s, "2nd")
    wait_scrapes_after_traffic(prom)

    # The run did what the checks below rely on: both priorities granted and waited while scraped,
    # and the CRM's 429s counted.
    window = f"[{RATE_WINDOW}]"
    for priority in ("live", "backfill"):
        grown = prom.query(f'increase(replicator_crm_budget_wait_seconds_count{{priority="{priority}"}}{window}) > 0')
        assert grown, f"no {priority} budget grants seen growing by Prometheus; log:\n{s.log_tail()}"
    assert prom.query("replicator_crm_budget_throttled_total > 0"), s.stats()

    rules = load_alert_rules()
    assert_alert_rules_healthy(prom, rules)
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [q for q in dashboard_queries(dashboard, substitution(prom)) + alert_queries(rules) if is_crm_budget(q)]
    titles = {q.key.split(" #")[0] for q in queries}
    assert {
        "Budget grants by priority",
        "Budget wait time by priority",
        "Daily API calls vs the vendor's daily limit",
        "ReplicatorCrmBudgetThrottled",
        "ReplicatorCrmDailyQuotaLow",
        "ReplicatorCrmBudgetExhausted",
    } <= titles
    assert_queries_work(
        Checker(prom),
        queries,
        [
            (
                "ReplicatorCrmBudgetThrottled",
                "replicator_crm_budget_throttled_total",
                "replicator_crm_budget_throttle_total",
                None,
            ),
            ("ReplicatorCrmDailyQuotaLow", "replicator_crm_api_daily_limit", "replicator_crm_api_daily_limits", None),
            ("ReplicatorCrmBudgetExhausted", "crm, priority", "crm, priorty", None),
            ("Budget grants by priority #39/A", "by (crm, priority)", "by (crm)", None),  # legend: {{priority}}
            ("Budget wait time by priority #43/B", "le, crm, priority", "le, crm, prio", None),
            ("Share of the budget window used #40/A", "window_utilisation{", "window_utilization{", None),
        ],
    )


@pytest.mark.parametrize(
    ("expr", "message"),
    [("sum({job='x'})", "without a metric name"), ('up{job="x" instance="y"}', "cannot read label matchers")],
)
def test_promql_reader_refuses_what_it_cannot_read(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_promql(expr)


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_prometheus_fails_under_ci_and_skips_locally(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="prometheus not found"):
        prometheus_binary()
