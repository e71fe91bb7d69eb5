"""Prometheus metrics. Names are part of the public interface: dashboards and
alert rules in grafana/ and prometheus/ query them."""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_IN = Counter(
    "replicator_events_in_total",
    "Change events read from a source",
    ["source", "table", "op"],
    registry=REGISTRY,
)
EVENTS_OUT = Counter(
    "replicator_events_out_total",
    "Operations finished at a sink, by outcome (ok, skipped, dead_letter, filtered)",
    ["entity", "op", "outcome"],
    registry=REGISTRY,
)
COMMIT_TO_ACK = Histogram(
    "replicator_commit_to_ack_seconds",
    "Time from the source commit to the sink's acknowledgement",
    ["entity"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
CRM_REQUEST_SECONDS = Histogram(
    "replicator_crm_request_seconds",
    "CRM API request latency",
    ["crm", "method", "resource"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
CRM_RESPONSES = Counter(
    "replicator_crm_responses_total",
    "CRM API responses by status code (0 = no response)",
    ["crm", "method", "resource", "status"],
    registry=REGISTRY,
)
CRM_API_DAILY_USED = Gauge(
    "replicator_crm_api_daily_used",
    "API calls the CRM says were used of its daily allocation (HubSpot X-HubSpot-RateLimit-Daily*, "
    "Salesforce Sforce-Limit-Info)",
    ["crm"],
    registry=REGISTRY,
)
CRM_API_DAILY_LIMIT = Gauge(
    "replicator_crm_api_daily_limit",
    "The CRM's daily API allocation, as it reports it",
    ["crm"],
    registry=REGISTRY,
)
# -- CRM API budget (replicator/state/budget.py) ------------------------------
CRM_BUDGET_GRANTED = Counter(
    "replicator_crm_budget_granted_total",
    "CRM API requests the shared budget let go, by priority (live, backfill)",
    ["crm", "priority"],
    registry=REGISTRY,
)
CRM_BUDGET_WAIT = Histogram(
    "replicator_crm_budget_wait_seconds",
    "Time a request waited for the shared CRM API budget before it was granted",
    ["crm", "priority"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
CRM_BUDGET_EXHAUSTED = Counter(
    "replicator_crm_budget_exhausted_total",
    "Requests refused by the budget (daily quota used, or no slot within their wait limit)",
    ["crm", "priority"],
    registry=REGISTRY,
)
CRM_BUDGET_THROTTLED = Counter(
    "replicator_crm_budget_throttled_total",
    "429 responses the CRM sent despite the budget",
    ["crm"],
    registry=REGISTRY,
)
CRM_BUDGET_FACTOR = Gauge(
    "replicator_crm_budget_factor",
    "Share of the configured burst limit in use (AIMD: halved on a 429, recovers per quiet window)",
    ["crm"],
    registry=REGISTRY,
)
CRM_BUDGET_LIMIT = Gauge(
    "replicator_crm_budget_limit_per_second",
    "The configured burst limit as a rate (burst / window_s), before the AIMD factor",
    ["crm"],
    registry=REGISTRY,
)
CRM_BUDGET_WINDOW_UTILISATION = Gauge(
    "replicator_crm_budget_window_utilisation",
    "Grants in the last burst window divided by the configured burst limit",
    ["crm"],
    registry=REGISTRY,
)
CRM_BUDGET_DAILY_USED = Gauge(
    "replicator_crm_budget_daily_used",
    "Grants in the last 24 h, counted by the shared budget (all processes on the credential)",
    ["crm"],
    registry=REGISTRY,
)
CRM_BUDGET_FOREIGN = Counter(
    "replicator_crm_budget_foreign_requests_total",
    "Requests the CRM reported on the credential's daily count beyond those the budget granted "
    "(another integration on the same credential), added to the daily count",
    ["crm"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "replicator_retries_total",
    "Operations retried after a transient failure",
    ["entity", "reason"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "replicator_dead_letters_total",
    "Operations sent to the dead-letter table",
    ["entity"],
    registry=REGISTRY,
)
DEAD_LETTERS_OPEN = Gauge(
    "replicator_dead_letters_open",
    "Dead letters waiting for replay or discard",
    registry=REGISTRY,
)
SLOT_LAG_BYTES = Gauge(
    "replicator_slot_lag_bytes",
    "WAL retained by the replication slot (current WAL LSN minus confirmed_flush_lsn)",
    ["slot"],
    registry=REGISTRY,
)
PENDING_EVENTS = Gauge(
    "replicator_pending_events",
    "Events read but not yet acknowledged by the sink",
    registry=REGISTRY,
)
LAST_ACK_TIMESTAMP = Gauge(
    "replicator_last_ack_timestamp_seconds",
    "Unix time of the last sink acknowledgement",
    registry=REGISTRY,
)
SOURCE_POSITION = Gauge(
    "replicator_source_acked_position",
    "Highest source position acknowledged back to the source (LSN as a number)",
    ["stream"],
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "replicator_batch_size",
    "Changes per pipeline batch, before coalescing",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 5000),
    registry=REGISTRY,
)
COALESCED = Counter(
    "replicator_coalesced_total",
    "Changes folded into a later change of the same key within a batch",
    registry=REGISTRY,
)
HEALTHY = Gauge(
    "replicator_healthy",
    "1 when /healthz answers 200",
    registry=REGISTRY,
)
UNDECODABLE_EVENTS = Counter(
    "replicator_undecodable_events_total",
    "Kafka records that could not be decoded and went to the dead-letter table",
    ["topic"],
    registry=REGISTRY,
)
KAFKA_RECORDS = Counter(
    "replicator_kafka_records_total",
    "Kafka records consumed, by kind (change, truncate, tombstone, heartbeat, schema_change, transaction, "
    "message, undecodable)",
    ["topic", "kind"],
    registry=REGISTRY,
)
KAFKA_REBALANCES = Counter(
    "replicator_kafka_rebalances_total",
    "Partition assignment changes of this consumer, by event (assign, revoke, lost)",
    ["event"],
    registry=REGISTRY,
)
KAFKA_ASSIGNED_PARTITIONS = Gauge(
    "replicator_kafka_assigned_partitions",
    "Partitions currently assigned to this process",
    registry=REGISTRY,
)
KAFKA_CONSUMER_LAG = Gauge(
    "replicator_kafka_consumer_lag",
    "Records behind the partition's high watermark, from the group's committed offset "
    "(meaningful on Apache Kafka; brokers with wrong watermarks give wrong lag)",
    ["topic", "partition"],
    registry=REGISTRY,
)

# -- CRM -> ERP ---------------------------------------------------------------
WEBHOOKS = Counter(
    "replicator_webhooks_total",
    "CRM webhook requests by outcome: accepted, duplicate, unsigned, forged, stale (401s), malformed, "
    "unknown (dead-lettered), unavailable (inbox down: 503)",
    ["crm", "outcome"],
    registry=REGISTRY,
)
INBOX_BACKLOG = Gauge(
    "replicator_inbox_backlog",
    "CRM notifications stored but not yet applied to the ERP",
    ["crm"],
    registry=REGISTRY,
)
CRM_POLLED = Counter(
    "replicator_crm_polled_total",
    "CRM records a poller found changed and added to the inbox",
    ["crm", "object"],
    registry=REGISTRY,
)
ERP_WRITES = Counter(
    "replicator_erp_writes_total",
    "Row writes to the ERP database by outcome (ok, adopted, missing, rejected)",
    ["table", "action", "outcome"],
    registry=REGISTRY,
)
ERP_WRITE_SECONDS = Histogram(
    "replicator_erp_write_seconds",
    "Duration of one ERP write transaction",
    ["table"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
ECHOES_SUPPRESSED = Counter(
    "replicator_echoes_suppressed_total",
    "Changes recognised as the replicator's own write coming back, by direction they would have gone "
    "(erp_to_crm, crm_to_erp) and how they were recognised (origin, ledger)",
    ["direction", "by"],
    registry=REGISTRY,
)
CONFLICTS = Counter(
    "replicator_conflicts_total",
    "Fields both sides changed since the last sync, by policy and the side that won (erp, crm, parked)",
    ["entity", "policy", "winner"],
    registry=REGISTRY,
)
CONFLICTS_OPEN = Gauge(
    "replicator_conflicts_open",
    "Conflicts parked for a person to resolve",
    registry=REGISTRY,
)
CRM_TO_ERP_SECONDS = Histogram(
    "replicator_crm_to_erp_seconds",
    "Time from the CRM's modification (or the notification's arrival) to the ERP commit",
    ["entity"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)


@functools.cache
def commit_to_ack(entity: str) -> Any:
    """The entity's child of COMMIT_TO_ACK, looked up once: `labels()` takes a lock on every call."""
    return COMMIT_TO_ACK.labels(entity)


@functools.cache
def echoes(direction: str, by: str) -> Any:
    """The ECHOES_SUPPRESSED child, looked up once (counted per row on the source's hot path)."""
    return ECHOES_SUPPRESSED.labels(direction, by)
