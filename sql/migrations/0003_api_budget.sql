-- The CRM API budget every process sharing one credential draws from
-- (replicator/state/budget.py). Times are unix seconds, as the processes' clocks read them.

-- One row per credential, locked (SELECT ... FOR UPDATE) for each grant.
CREATE TABLE IF NOT EXISTS replicator.api_budget (
    key               text PRIMARY KEY,                        -- crm:sha256(crm, URL, client id...): never a secret
    crm               text NOT NULL,                           -- hubspot, salesforce, ...
    factor            double precision NOT NULL DEFAULT 1.0,   -- AIMD share of the burst limit in use
    blocked_until     double precision NOT NULL DEFAULT 0,     -- the CRM's last Retry-After
    last_429_at       double precision NOT NULL DEFAULT 0,
    last_decrease_at  double precision NOT NULL DEFAULT 0,
    increased_at      double precision NOT NULL DEFAULT 0,     -- start of the current additive-increase step
    grants            double precision[] NOT NULL DEFAULT '{}', -- grant times still inside the burst window
    live_waiters      jsonb NOT NULL DEFAULT '{}',             -- live acquirer -> registration expiry
    daily_used        integer NOT NULL DEFAULT 0,              -- grants in the last 24 h (sum of api_budget_daily)
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Grants per minute, for the rolling 24 h daily quota; minutes older than a day are deleted.
CREATE TABLE IF NOT EXISTS replicator.api_budget_daily (
    key     text NOT NULL REFERENCES replicator.api_budget (key) ON DELETE CASCADE,
    minute  bigint NOT NULL,                                   -- floor(unix seconds / 60)
    grants  integer NOT NULL,
    PRIMARY KEY (key, minute)
);

-- What ops ask first: is a credential throttled, blocked, or near its daily quota?
CREATE OR REPLACE VIEW replicator.api_budget_status AS
SELECT key, crm, factor,
       CASE WHEN blocked_until > 0 THEN to_timestamp(blocked_until) END AS blocked_until,
       CASE WHEN last_429_at > 0 THEN to_timestamp(last_429_at) END AS last_429_at,
       cardinality(grants) AS recent_grants,
       daily_used,
       updated_at
FROM replicator.api_budget;
