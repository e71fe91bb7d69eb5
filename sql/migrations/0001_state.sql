-- State the replicator keeps beside the ERP data, in its own schema.
-- Ops query these tables directly: keep names and columns stable.

CREATE TABLE IF NOT EXISTS replicator.checkpoints (
    stream      text PRIMARY KEY,            -- a slot, a topic-partition, a poller
    position    text NOT NULL,               -- human form (an LSN such as 16/B374D848)
    offset_num  numeric NOT NULL,            -- the same position as an ordered number
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- ERP key <-> CRM id, per mapped entity.
CREATE TABLE IF NOT EXISTS replicator.id_map (
    entity      text NOT NULL,
    erp_key     text NOT NULL,               -- the external id written into the CRM
    crm_object  text NOT NULL,
    crm_id      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity, erp_key)
);
CREATE UNIQUE INDEX IF NOT EXISTS id_map_crm ON replicator.id_map (crm_object, crm_id);

-- Idempotency ledger: an intent is written before a CRM call that has no
-- idempotency key of its own, and resolved after it; a pending row found on
-- restart means "look the record up before creating again".
CREATE TABLE IF NOT EXISTS replicator.ledger (
    idempotency_key text PRIMARY KEY,
    entity          text NOT NULL,
    erp_key         text NOT NULL,
    action          text NOT NULL,
    payload_hash    text NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'done')),
    crm_id          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz
);
CREATE INDEX IF NOT EXISTS ledger_pending ON replicator.ledger (entity, erp_key) WHERE status = 'pending';

-- Per-row sync state: one row per mapped ERP record.
CREATE TABLE IF NOT EXISTS replicator.sync_state (
    entity          text NOT NULL,
    erp_key         text NOT NULL,
    crm_id          text,
    status          text NOT NULL CHECK (status IN ('synced', 'failed', 'deleted', 'archived', 'filtered')),
    last_op         text NOT NULL,           -- c, u, d, r (the source op)
    last_action     text,                    -- upsert, delete, archive
    last_hash       text,                    -- hash of the payload last acknowledged by the CRM
    last_position   text,
    last_synced_at  timestamptz,
    last_error      text,
    last_error_at   timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity, erp_key)
);
CREATE INDEX IF NOT EXISTS sync_state_failed ON replicator.sync_state (entity) WHERE status = 'failed';

-- Dead letters: operations that failed permanently or ran out of retries.
CREATE TABLE IF NOT EXISTS replicator.dead_letters (
    id              bigserial PRIMARY KEY,
    entity          text NOT NULL,
    erp_key         text NOT NULL,
    source_table    text,
    op              text NOT NULL,
    reason          text NOT NULL,
    payload         jsonb,
    source_position text,
    attempts        integer NOT NULL DEFAULT 1,
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'replayed', 'discarded')),
    first_seen      timestamptz NOT NULL DEFAULT now(),
    last_seen       timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz
);
-- One open letter per record: a new failure of the same record updates it.
CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_open ON replicator.dead_letters (entity, erp_key) WHERE status = 'open';

-- Views ops reach for first.
CREATE OR REPLACE VIEW replicator.sync_summary AS
SELECT entity, status, count(*) AS rows, max(last_synced_at) AS last_synced_at
FROM replicator.sync_state GROUP BY entity, status;
