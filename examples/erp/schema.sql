-- A small but realistic ERP: normalised the way real ERPs are. A customer's
-- email and phone live in contact_mechanisms, its addresses in addresses.
CREATE TABLE customers (
    id            bigserial PRIMARY KEY,
    code          text NOT NULL UNIQUE,
    name          text NOT NULL,
    industry      text,
    website       text,
    credit_limit  numeric(14, 2),
    active        boolean NOT NULL DEFAULT true,
    notes         text,                       -- can be TOAST-sized
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE contact_mechanisms (
    id           bigserial PRIMARY KEY,
    customer_id  bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('email', 'phone', 'fax')),
    value        text NOT NULL,
    is_primary   boolean NOT NULL DEFAULT false
);
CREATE INDEX ON contact_mechanisms (customer_id);

CREATE TABLE addresses (
    id           bigserial PRIMARY KEY,
    customer_id  bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('billing', 'shipping')),
    street       text,
    city         text,
    postcode     text,
    country      text                         -- ISO 3166 alpha-2
);
CREATE INDEX ON addresses (customer_id);

CREATE TABLE contacts (
    id           bigserial PRIMARY KEY,
    customer_id  bigint REFERENCES customers (id) ON DELETE SET NULL,
    first_name   text NOT NULL,
    last_name    text NOT NULL,
    email        text UNIQUE,
    phone        text,
    job_title    text,
    active       boolean NOT NULL DEFAULT true,
    updated_at   timestamp                    -- without time zone: read in erp.timezone
);

CREATE TABLE products (
    id           bigserial PRIMARY KEY,
    sku          text NOT NULL UNIQUE,
    name         text NOT NULL,
    description  text,
    unit_price   numeric(12, 2) NOT NULL,
    currency     char(3) NOT NULL DEFAULT 'EUR',
    discontinued boolean NOT NULL DEFAULT false
);

CREATE TABLE sales_orders (
    id           bigserial PRIMARY KEY,
    order_no     text NOT NULL UNIQUE,
    customer_id  bigint NOT NULL REFERENCES customers (id),
    status       text NOT NULL CHECK (status IN ('draft', 'confirmed', 'shipped', 'invoiced', 'cancelled')),
    currency     char(3) NOT NULL DEFAULT 'EUR',
    total        numeric(14, 2) NOT NULL DEFAULT 0,
    ordered_at   timestamptz NOT NULL DEFAULT now(),
    promised_on  date,
    crm_ref      text UNIQUE                  -- the CRM deal an order was created from
);
CREATE INDEX ON sales_orders (customer_id);

CREATE TABLE sales_order_lines (
    id           bigserial PRIMARY KEY,
    order_id     bigint NOT NULL REFERENCES sales_orders (id) ON DELETE CASCADE,
    product_id   bigint NOT NULL REFERENCES products (id),
    quantity     numeric(12, 3) NOT NULL,
    unit_price   numeric(12, 2) NOT NULL
);
CREATE INDEX ON sales_order_lines (order_id);

-- The ERP keeps its own modification times (the replicator's `latest_wins` compares them).
CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER customers_touch BEFORE UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Debezium's signal table (incremental snapshots on demand); see connectors/README.md.
CREATE TABLE debezium_signal (
    id    varchar(42) PRIMARY KEY,
    type  varchar(32) NOT NULL,
    data  varchar(2048)
);

-- Debezium's heartbeat row (see connectors/README.md): its heartbeat.action.query updates it, so
-- the connector's slot keeps advancing while no captured table changes.
CREATE TABLE debezium_heartbeat (
    id  int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    ts  timestamptz NOT NULL DEFAULT now()
);
