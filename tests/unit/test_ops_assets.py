"""Checks for the operations assets: docker-compose.yml, Dockerfile, Prometheus config and alert rules,
the Grafana dashboard and provisioning, and the Debezium connector config.

Metric names are the contract between replicator/ops/metrics.py and the dashboard / alerts: every
replicator_* name a query uses must be a series the service actually exports.

Tests that need `promtool` (Debian package `prometheus`) skip locally when it is missing, but FAIL
under CI=true so a CI image without it cannot pass silently.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from replicator.ops.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROM_DIR = ROOT / "prometheus"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
GRAFANA_DS = ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_DASH_PROVIDER = ROOT / "grafana" / "provisioning" / "dashboards" / "replicator.yml"
CONNECTOR = ROOT / "connectors" / "debezium-postgres.json"
CONNECTOR_README = ROOT / "connectors" / "README.md"

ERP_TABLES = [
    "public.customers",
    "public.contact_mechanisms",
    "public.addresses",
    "public.contacts",
    "public.products",
    "public.sales_orders",
    "public.sales_order_lines",
]
SIGNAL_TABLE = "public.debezium_signal"

# Bind-mount sources other workstreams provide (the sample ERP's SQL). Everything else a service
# mounts must exist in the repository.
PROVIDED_ELSEWHERE = {"examples/erp/schema.sql", "examples/erp/seed.sql"}

SECRET_KEY_RE = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|PRIVATE_?KEY|CREDENTIAL", re.I)
# A value that is only a variable reference without a default: ${VAR} or ${VAR:?message} / ${VAR?message}.
ENV_REF_RE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")


# --------------------------------------------------------------------------- helpers


def require_promtool() -> str:
    path = shutil.which("promtool")
    if path:
        return path
    msg = "promtool not found: install the Debian package `prometheus` (apt-get install -y prometheus)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + " -- required under CI=true")
    pytest.skip(msg)


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    promtool = require_promtool()
    proc = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict), "no services in docker-compose.yml"
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def dashboards() -> list[tuple[Path, dict[str, Any]]]:
    assert DASHBOARDS, "no dashboard in grafana/dashboards/"
    return [(p, json.loads(p.read_text())) for p in DASHBOARDS]


@pytest.fixture(scope="module")
def connector() -> dict[str, Any]:
    return json.loads(CONNECTOR.read_text())


def is_one_shot(svc: dict[str, Any]) -> bool:
    """Init jobs (restart: "no") run to completion; a healthcheck means nothing for them."""
    return str(svc.get("restart", "no")) == "no"


def env_of(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # panels nested in collapsed rows
    return out


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in all_panels(dashboard) for t in p.get("targets", []) if t.get("expr")]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var.get("query")
            exprs.append(q.get("query", "") if isinstance(q, dict) else str(q or ""))
    return exprs


def exported_series() -> dict[str, str]:
    """Series names the registry exposes, mapped to the collector's type.

    REGISTRY.collect() names counter families without `_total`; histograms expose _bucket/_sum/_count.
    """
    names: dict[str, str] = {}
    for family in REGISTRY.collect():
        if family.type == "counter":
            names[family.name + "_total"] = "counter"
        elif family.type == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                names[family.name + suffix] = "histogram"
        else:
            names[family.name] = family.type
    return names


METRIC_RE = re.compile(r"replicator_[a-z_]+")


def unknown_metric_names(exprs: list[str]) -> set[str]:
    """replicator_* names used in PromQL that the service does not export."""
    exported = exported_series()
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n, t in exported.items() if t == "histogram"}
    unknown: set[str] = set()
    for expr in exprs:
        for name in METRIC_RE.findall(expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name in exported or (base != name and base in families):
                continue
            unknown.add(name)
    return unknown


def used_metric_names(exprs: list[str]) -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", n) for e in exprs for n in METRIC_RE.findall(e)}


# --------------------------------------------------------------------------- docker-compose.yml


def test_compose_every_service_has_image_or_build(services: dict[str, dict[str, Any]]) -> None:
    missing = [name for name, svc in services.items() if not (svc.get("image") or svc.get("build"))]
    assert not missing, f"services without image or build: {missing}"
    for name, svc in services.items():
        image = svc.get("image", "")
        if image and not svc.get("build"):
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin an image tag, got {image!r}"


def test_compose_expected_stack(services: dict[str, dict[str, Any]]) -> None:
    images = {name: str(svc.get("image", "")) for name, svc in services.items()}
    assert images["erp-db"].startswith("postgres:15")
    assert images["kafka"].startswith("apache/kafka:")
    assert images["connect"].startswith("quay.io/debezium/connect:3.")
    assert images["prometheus"].startswith("prom/prometheus:")
    assert images["grafana"].startswith("grafana/")
    assert services["replicator"].get("build"), "the replicator is built from the repo's Dockerfile"
    command = " ".join(map(str, services["erp-db"].get("command", [])))
    for setting in ("wal_level=logical", "max_replication_slots=10", "max_wal_senders=10"):
        assert setting in command, f"erp-db must run postgres with -c {setting}"


def test_compose_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    missing = [
        name
        for name, svc in services.items()
        if not is_one_shot(svc) and not (svc.get("healthcheck") or {}).get("test")
    ]
    assert not missing, f"long-running services without a healthcheck: {missing}"
    for name, svc in services.items():
        assert not (svc.get("healthcheck") or {}).get("disable"), f"{name}: healthcheck disabled"


def test_compose_depends_on_targets_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for target, spec in deps.items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            assert target != name, f"{name} depends on itself"
            condition = (spec or {}).get("condition", "service_started")
            if condition == "service_healthy":
                assert (services[target].get("healthcheck") or {}).get("test"), (
                    f"{name} waits for {target} to be healthy, but {target} has no healthcheck"
                )
            elif condition == "service_completed_successfully":
                assert is_one_shot(services[target]), (
                    f"{name} waits for {target} to complete, but {target} restarts (not a one-shot job)"
                )
            else:
                assert condition == "service_started", f"{name}: unknown depends_on condition {condition!r}"


def test_compose_replicator_waits_for_its_dependencies(services: dict[str, dict[str, Any]]) -> None:
    deps = services["replicator"]["depends_on"]
    assert deps["erp-db"]["condition"] == "service_healthy"
    assert deps["replicator-setup"]["condition"] == "service_completed_successfully"
    setup_cmd = services["replicator-setup"].get("entrypoint") or []
    assert setup_cmd[:2] == ["replicator", "setup"] and "--config" in setup_cmd
    # Prometheus in another container can only scrape a non-loopback listener.
    assert env_of(services["replicator"]).get("REPLICATOR_METRICS_LISTEN") == "0.0.0.0:9108"


def test_compose_has_no_literal_secrets(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for key, value in env_of(svc).items():
            if SECRET_KEY_RE.search(key):
                assert ENV_REF_RE.match(value), (
                    f"{name}: {key} must come from the environment as ${{VAR:?...}} without a default, got {value!r}"
                )
    text = COMPOSE.read_text()
    # Credentials inside URLs/DSNs (scheme://user:password@host) that are not variable references.
    for match in re.finditer(r"://[^/\s:@]+:([^@\s]+)@", text):
        assert match.group(1).startswith("${"), f"literal credential in a URL: {match.group(0)!r}"
    assert not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text)


def test_compose_required_user_settings_are_enforced(services: dict[str, dict[str, Any]]) -> None:
    env = env_of(services["replicator"])
    for var in ("CRM_URL", "BOTTLECRM_TOKEN"):
        assert re.fullmatch(r"\$\{" + var + r":\?[^}]+\}", env.get(var, "")), (
            f"replicator must take {var} from the environment and refuse to start without it"
        )


def test_compose_volumes(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set((compose.get("volumes") or {}).keys())
    used_named: set[str] = set()
    for name, svc in services.items():
        for vol in svc.get("volumes") or []:
            if isinstance(vol, dict):
                kind, source = vol.get("type"), str(vol.get("source", ""))
            else:
                source = str(vol).split(":", 1)[0]
                kind = "bind" if source.startswith((".", "/", "~", "$")) else "volume"
            if kind == "volume":
                used_named.add(source)
                assert source in declared, f"{name}: named volume {source!r} not declared at top level"
                continue
            default = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", source)
            if default:  # user-supplied file (e.g. REPLICATOR_CONFIG): nothing to check in the repo
                continue
            rel = os.path.normpath(source)
            if rel in PROVIDED_ELSEWHERE:
                continue
            assert (ROOT / rel).exists(), f"{name}: bind source {source!r} does not exist in the repo"
    for stateful in ("erp-db", "kafka", "prometheus", "grafana"):
        svc_vols = [
            str(v.get("source") if isinstance(v, dict) else v).split(":", 1)[0] for v in services[stateful]["volumes"]
        ]
        assert any(v in declared for v in svc_vols), f"{stateful} keeps its data in a named volume"
    assert declared <= used_named, f"declared but unused volumes: {declared - used_named}"


def test_compose_mounts_match_configs(services: dict[str, dict[str, Any]]) -> None:
    prom_cmd = " ".join(services["prometheus"].get("command", []))
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom_cmd
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]

    provider = yaml.safe_load(GRAFANA_DASH_PROVIDER.read_text())
    dash_path = provider["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{dash_path}:ro" in services["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in services["grafana"]["volumes"]

    # The Grafana datasource and the Prometheus scrape targets point at compose services.
    ds = yaml.safe_load(GRAFANA_DS.read_text())["datasources"][0]
    assert ds["type"] == "prometheus"
    assert re.match(r"https?://([^:/]+)", ds["url"]).group(1) in services  # type: ignore[union-attr]
    prom = yaml.safe_load(PROM_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    targets = [t for sc in jobs["replicator"]["static_configs"] for t in sc["targets"]]
    assert targets == ["replicator:9108"], "scrape the compose service on metrics.listen's default port"


def test_compose_connector_registration_matches_connector(
    services: dict[str, dict[str, Any]], connector: dict[str, Any]
) -> None:
    reg = services["connect-register"]
    script = " ".join(map(str, reg.get("command") or []))
    assert f"/connectors/{CONNECTOR.name}" in script
    assert f"/{connector['name']}" in script, "the register job checks for the connector by its name"
    assert "./connectors:/connectors:ro" in reg["volumes"]
    # Every ${env:VAR} in the connector config must be set on the Connect worker, and the worker must
    # enable the env config provider that resolves them.
    connect_env = env_of(services["connect"])
    refs = set(re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", json.dumps(connector)))
    assert refs, "the connector should take credentials from ${env:...}"
    assert refs <= set(connect_env), f"connect service lacks env vars {refs - set(connect_env)}"
    assert connect_env.get("CONNECT_CONFIG_PROVIDERS") == "env"
    assert connect_env.get("CONNECT_CONFIG_PROVIDERS_ENV_CLASS", "").endswith("EnvVarConfigProvider")


# --------------------------------------------------------------------------- Dockerfile


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile() -> None:
    ins = _dockerfile_instructions()
    ops = [op for op, _ in ins]
    assert ins[0] == ("FROM", "python:3.11-slim")
    assert any(op == "RUN" and re.search(r"pip install (\S+ )*\.(\s|$)", rest) for op, rest in ins)
    assert "HEALTHCHECK" in ops and any("/healthz" in rest for op, rest in ins if op in ("HEALTHCHECK", "ENV"))
    assert "USER" in ops, "run as a non-root user"
    entry = json.loads(next(rest for op, rest in ins if op == "ENTRYPOINT"))
    cmd = json.loads(next(rest for op, rest in ins if op == "CMD"))
    assert entry + cmd == ["replicator", "run", "--config", "/etc/replicator/replicator.yaml"]


def test_dockerignore_keeps_what_the_build_copies() -> None:
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]
    copied = []
    for op, rest in _dockerfile_instructions():
        if op == "COPY" and "--from" not in rest:
            copied.extend(rest.split()[:-1])
    assert copied
    for src in copied:
        assert (ROOT / src).exists(), f"COPY source {src} missing"
        # The last matching pattern wins (Docker semantics); "!x" re-includes x.
        included = True
        for pat in patterns:
            neg = pat.startswith("!")
            p = pat[1:] if neg else pat
            if p == "*" or src.rstrip("/") == p.rstrip("/"):
                included = neg
        assert included, f".dockerignore excludes {src}, which the Dockerfile copies"
    for must_exclude in (".venv", ".git", "tests"):
        assert not any(p.lstrip("!").rstrip("/") == must_exclude for p in patterns if p.startswith("!"))
    assert patterns[0] == "*", "allow-list context: exclude everything, re-include what the image needs"


# --------------------------------------------------------------------------- metric names


def test_metric_name_checker_catches_mistakes() -> None:
    assert unknown_metric_names(["rate(replicator_events_in_total[5m])"]) == set()
    assert unknown_metric_names(["histogram_quantile(0.9, rate(replicator_commit_to_ack_seconds_bucket[5m]))"]) == set()
    # Counter family name without _total, a histogram without a suffix, and a typo: all not series.
    assert unknown_metric_names(
        ["rate(replicator_events_in[5m]) + replicator_commit_to_ack_seconds + replicator_pending_event"]
    ) == {"replicator_events_in", "replicator_commit_to_ack_seconds", "replicator_pending_event"}
    # _bucket only on histograms.
    assert unknown_metric_names(["replicator_pending_events_bucket"]) == {"replicator_pending_events_bucket"}


def test_dashboard_metric_names_exist(dashboards: list[tuple[Path, dict[str, Any]]]) -> None:
    for path, dash in dashboards:
        exprs = dashboard_exprs(dash)
        assert exprs, f"{path.name}: no queries"
        unknown = unknown_metric_names(exprs)
        assert not unknown, f"{path.name} queries metrics the replicator does not export: {sorted(unknown)}"


def test_alert_metric_names_exist(alert_rules: list[dict[str, Any]]) -> None:
    unknown = unknown_metric_names([r["expr"] for r in alert_rules])
    assert not unknown, f"alerts.yml queries metrics the replicator does not export: {sorted(unknown)}"


# --------------------------------------------------------------------------- Grafana


def test_dashboard_structure(dashboards: list[tuple[Path, dict[str, Any]]]) -> None:
    for path, dash in dashboards:
        assert dash.get("uid") and dash.get("title"), f"{path.name}: uid and title required"
        panels = all_panels(dash)
        ids = [p.get("id") for p in panels]
        assert None not in ids, f"{path.name}: panel without id"
        dupes = {i for i in ids if ids.count(i) > 1}
        assert not dupes, f"{path.name}: duplicate panel ids {dupes}"
        for p in panels:
            assert {"h", "w", "x", "y"} <= set(p.get("gridPos", {})), f"{path.name}: panel {p['id']} lacks gridPos"
            if p.get("type") == "row":
                continue
            targets = p.get("targets") or []
            assert targets, f"{path.name}: panel {p['id']} ({p.get('title')}) has no query"
            ref_ids = [t.get("refId") for t in targets]
            assert len(set(ref_ids)) == len(ref_ids), f"{path.name}: panel {p['id']} repeats a refId"
            for t in targets:
                ds = t.get("datasource")
                assert isinstance(ds, dict) and ds.get("uid") and ds.get("type") == "prometheus", (
                    f"{path.name}: panel {p['id']} ({p.get('title')}) target {t.get('refId')} has no datasource"
                )
                assert "$instance" in t["expr"], (
                    f"{path.name}: panel {p['id']} ({p.get('title')}) ignores the instance variable: {t['expr']}"
                )


def test_dashboard_templating(dashboards: list[tuple[Path, dict[str, Any]]]) -> None:
    for path, dash in dashboards:
        variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
        assert "instance" in variables, f"{path.name}: templated by instance"
        ds_uids = {
            t["datasource"]["uid"] for p in all_panels(dash) for t in p.get("targets", []) if t.get("datasource")
        }
        for uid in ds_uids:
            var = re.fullmatch(r"\$\{?(\w+)\}?", uid)
            if var:
                assert variables.get(var.group(1), {}).get("type") == "datasource", f"{path.name}: {uid} undefined"
            else:
                provisioned = {d["uid"] for d in yaml.safe_load(GRAFANA_DS.read_text())["datasources"]}
                assert uid in provisioned, f"{path.name}: datasource uid {uid} is not provisioned"


def test_dashboard_covers_the_signals_ops_needs(dashboards: list[tuple[Path, dict[str, Any]]]) -> None:
    used: set[str] = set()
    for _, dash in dashboards:
        used |= used_metric_names(dashboard_exprs(dash))
    required = {
        "replicator_events_in_total",
        "replicator_events_out_total",
        "replicator_commit_to_ack_seconds",
        "replicator_crm_request_seconds",
        "replicator_crm_responses_total",
        "replicator_retries_total",
        "replicator_dead_letters_total",
        "replicator_dead_letters_open",
        "replicator_slot_lag_bytes",
        "replicator_pending_events",
        "replicator_last_ack_timestamp_seconds",
        "replicator_healthy",
        # CRM -> ERP
        "replicator_webhooks_total",
        "replicator_inbox_backlog",
        "replicator_crm_polled_total",
        "replicator_erp_writes_total",
        "replicator_erp_write_seconds",
        "replicator_crm_to_erp_seconds",
        "replicator_echoes_suppressed_total",
        "replicator_conflicts_total",
        "replicator_conflicts_open",
        # the shared CRM API budget
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
    assert required <= used, f"dashboard lacks panels for {sorted(required - used)}"


def test_grafana_provisioning_files() -> None:
    ds = yaml.safe_load(GRAFANA_DS.read_text())
    assert ds["apiVersion"] == 1 and any(d["type"] == "prometheus" for d in ds["datasources"])
    provider = yaml.safe_load(GRAFANA_DASH_PROVIDER.read_text())
    assert provider["apiVersion"] == 1 and provider["providers"][0]["type"] == "file"


def test_dashboard_queries_are_valid_promql(dashboards: list[tuple[Path, dict[str, Any]]], tmp_path: Path) -> None:
    """Grafana is not installable here: check each query's PromQL by loading it as a recording rule."""
    rules = []
    for path, dash in dashboards:
        for i, expr in enumerate(dashboard_exprs(dash)):
            promql = (
                expr.replace("$__rate_interval", "5m")
                .replace("$__interval", "1m")
                .replace("${instance}", ".*")
                .replace("$instance", ".*")
            )
            if promql.startswith("label_values("):
                continue  # Grafana templating function, not PromQL
            assert "$" not in promql, f"{path.name}: unhandled Grafana variable in {expr}"
            rules.append({"record": f"dashboard:{path.stem.replace('-', '_')}:q{i}", "expr": promql})
    rule_file = tmp_path / "dashboard_rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool("check", "rules", str(rule_file))


# --------------------------------------------------------------------------- Prometheus


REQUIRED_ALERTS = {
    "ReplicatorPipelineStalled",
    "ReplicatorDown",
    "ReplicatorSlotLagHigh",
    "ReplicatorSlotLagCritical",
    "ReplicatorDeadLettersRising",
    "ReplicatorCrmErrorRate",
    "ReplicatorCrm429",
    "ReplicatorCommitToAckSlow",
    "ReplicatorUnhealthy",
    "ReplicatorWebhooksRejected",
    "ReplicatorInboxBacklog",
    "ReplicatorErpWritesRejected",
    "ReplicatorConflictsOpen",
    "ReplicatorCrmBudgetThrottled",
    "ReplicatorCrmDailyQuotaLow",
    "ReplicatorCrmBudgetExhausted",
}


def test_alert_rules_are_documented(alert_rules: list[dict[str, Any]]) -> None:
    names = [r["alert"] for r in alert_rules if "alert" in r]
    assert set(names) == REQUIRED_ALERTS, f"alerts differ: {set(names) ^ REQUIRED_ALERTS}"
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in alert_rules:
        ann = rule.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            assert len(ann.get(key, "")) > 20, f"{rule['alert']}: {key} missing or too short"
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, f"{rule['alert']}: severity"
    runbooks = " ".join(r["annotations"]["runbook"] for r in alert_rules)
    for hint in (
        "replicator status",
        "replicator dlq list",
        "replicator check",
        "replicator conflicts list",
        "SELECT * FROM replicator.sync_state WHERE status = 'failed'",
    ):
        assert hint in runbooks, f"no runbook tells ops to run {hint!r}"


def test_alert_tests_cover_every_alert(alert_rules: list[dict[str, Any]]) -> None:
    doc = yaml.safe_load(ALERTS_TEST.read_text())
    assert doc["rule_files"] == [ALERTS.name]
    fired: set[str] = set()
    quiet: set[str] = set()
    for test in doc["tests"]:
        for check in test.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules}
    assert names <= fired, f"no firing test for {sorted(names - fired)}"
    assert names <= quiet, f"no not-firing test for {sorted(names - quiet)}"


def test_promtool_check_config() -> None:
    run_promtool("check", "config", str(PROM_CONFIG))


def test_promtool_check_rules() -> None:
    run_promtool("check", "rules", str(ALERTS))


def test_promtool_test_rules() -> None:
    proc = run_promtool("test", "rules", ALERTS_TEST.name, cwd=PROM_DIR)
    assert "SUCCESS" in proc.stdout


# --------------------------------------------------------------------------- Debezium connector


def test_connector_config(connector: dict[str, Any]) -> None:
    assert set(connector) == {"name", "config"}, "body of POST /connectors: {name, config}"
    cfg = connector["config"]
    assert all(isinstance(v, str) for v in cfg.values()), "Connect configs are strings"
    expected = {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "plugin.name": "pgoutput",
        "publication.autocreate.mode": "filtered",
        "decimal.handling.mode": "string",
        "signal.data.collection": SIGNAL_TABLE,
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
    }
    for key, value in expected.items():
        assert cfg.get(key) == value, f"{key} should be {value!r}, got {cfg.get(key)!r}"
    for key in ("database.hostname", "database.port", "database.dbname", "database.user", "topic.prefix"):
        assert cfg.get(key), f"{key} missing"
    # Own slot and publication: the embedded source owns "replicator".
    for key in ("slot.name", "publication.name"):
        assert cfg.get(key) and cfg[key] != "replicator", f"{key} must not be the embedded source's 'replicator'"
    assert re.fullmatch(r"[a-z0-9_]+", cfg["slot.name"]), "slot names: lower-case letters, digits, underscore"
    tables = [t.strip() for t in cfg["table.include.list"].split(",")]
    assert set(ERP_TABLES) <= set(tables), f"missing tables {set(ERP_TABLES) - set(tables)}"
    assert SIGNAL_TABLE in tables, "the signal table must be captured for source signals to work"
    assert int(cfg["heartbeat.interval.ms"]) > 0
    assert cfg.get("heartbeat.action.query", "").strip(), "heartbeat.action.query required"
    assert re.fullmatch(r"\$\{env:[A-Za-z_]\w*\}", cfg["database.password"]), "no literal password"


def test_connector_readme_explains_every_non_default_setting(connector: dict[str, Any]) -> None:
    readme = CONNECTOR_README.read_text()
    explicit_defaults = {"connector.class", "snapshot.mode"}
    unexplained = [key for key in connector["config"] if key not in explicit_defaults and f"`{key}" not in readme]
    assert not unexplained, f"connectors/README.md does not explain {unexplained}"


def test_compose_kafka_profile_scales_out_with_the_kafka_config(services: dict[str, dict[str, Any]]) -> None:
    import posixpath

    svc = services["replicator-kafka"]
    assert svc["profiles"] == ["kafka"] and svc["deploy"]["replicas"] >= 2
    assert svc["command"] == ["run", "--config", "/etc/replicator/replicator-kafka.yaml"]
    assert env_of(svc).get("REPLICATOR_METRICS_LISTEN") == "0.0.0.0:9108"
    assert services["replicator-kafka-setup"]["entrypoint"][:2] == ["replicator", "setup"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in svc["volumes"]}
    assert mounts["/etc/replicator"] == "./examples/erp"
    # The config's connector path, resolved inside the container, lands in the mounted connectors folder.
    config = yaml.safe_load((ROOT / "examples" / "erp" / "replicator-kafka.yaml").read_text())
    for connector in config["source"]["connect"]["connectors"]:
        in_container = posixpath.normpath(posixpath.join("/etc/replicator", connector))
        folder, name = posixpath.split(in_container)
        assert folder in mounts, f"{connector} resolves to {in_container}, which is not mounted"
        assert (ROOT / mounts[folder] / name).exists()
    prometheus = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "replicator")
    assert any("replicator-kafka" in sd["names"] for sd in job.get("dns_sd_configs", []))
