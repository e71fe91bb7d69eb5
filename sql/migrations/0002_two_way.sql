-- CRM -> ERP: the inbox of CRM change notifications, the values both sides last
-- agreed on, and conflicts parked for a person to decide.

-- Every CRM notification (a signed webhook, or a change a poller found) lands here
-- before the CRM is answered, so an acknowledged delivery is never lost. The
-- (crm, delivery_id) key makes a redelivered webhook a no-op.
CREATE TABLE IF NOT EXISTS replicator.inbox (
    seq          bigserial PRIMARY KEY,        -- the order changes are applied in
    crm          text NOT NULL,                -- bottlecrm, hubspot, ...
    delivery_id  text NOT NULL,                -- the CRM's delivery id, or poll:<object>:<id>:<hash>
    event        text NOT NULL,                -- e.g. account.updated, deal.won, poll
    object       text NOT NULL,                -- account, contact, product, opportunity
    crm_id       text,
    payload      jsonb NOT NULL,               -- the notification as received
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    UNIQUE (crm, delivery_id)
);
CREATE INDEX IF NOT EXISTS inbox_pending ON replicator.inbox (seq) WHERE processed_at IS NULL;

-- The CRM-shaped values of a two-way record as both sides last agreed on them:
-- a side whose value differs from it changed since the last sync.
ALTER TABLE replicator.sync_state ADD COLUMN IF NOT EXISTS last_record jsonb;
-- Which way the last sync went: erp_to_crm, or crm_to_erp (our own ERP write,
-- whose echo from the ERP's change stream is suppressed).
ALTER TABLE replicator.sync_state ADD COLUMN IF NOT EXISTS last_direction text;

-- What a content-hash poller last saw of each CRM record (for CRMs, or objects,
-- with no modification timestamp to poll by).
CREATE TABLE IF NOT EXISTS replicator.crm_snapshot (
    crm        text NOT NULL,
    object     text NOT NULL,
    crm_id     text NOT NULL,
    hash       text NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (crm, object, crm_id)
);

-- Fields both sides changed since the last sync, under the `manual` policy (or
-- any policy that could not decide). Resolve with `replicator conflicts resolve`.
CREATE TABLE IF NOT EXISTS replicator.conflicts (
    id             bigserial PRIMARY KEY,
    entity         text NOT NULL,
    erp_key        text NOT NULL,
    crm_id         text,
    field          text NOT NULL,              -- the CRM field
    base_value     jsonb,                      -- last agreed value
    erp_value      jsonb,                      -- the ERP's value, CRM-shaped
    crm_value      jsonb,
    erp_changed_at timestamptz,
    crm_changed_at timestamptz,
    status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    resolution     text CHECK (resolution IN ('erp', 'crm')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS conflicts_open ON replicator.conflicts (entity, erp_key, field) WHERE status = 'open';
