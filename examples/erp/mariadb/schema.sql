-- The sample ERP of ../schema.sql for MariaDB 10.11: the same tables, keys and
-- meaning. Money is DECIMAL; `contacts.updated_at` is a DATETIME holding local
-- Europe/Berlin wall-clock time (erp.timezone); the other timestamps are TIMESTAMP
-- (stored in UTC); BOOLEAN is TINYINT(1) and is read back as a boolean.
CREATE TABLE customers (
    id            BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    code          VARCHAR(32) NOT NULL UNIQUE,
    name          VARCHAR(200) NOT NULL,
    industry      VARCHAR(32),
    website       VARCHAR(255),
    credit_limit  DECIMAL(14, 2),
    active        BOOLEAN NOT NULL DEFAULT TRUE,
    notes         LONGTEXT,
    created_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP
) ENGINE = InnoDB;

CREATE TABLE contact_mechanisms (
    id           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    customer_id  BIGINT NOT NULL,
    kind         VARCHAR(16) NOT NULL CHECK (kind IN ('email', 'phone', 'fax')),
    value        VARCHAR(255) NOT NULL,
    is_primary   BOOLEAN NOT NULL DEFAULT FALSE,
    KEY (customer_id),
    FOREIGN KEY (customer_id) REFERENCES customers (id) ON DELETE CASCADE
) ENGINE = InnoDB;

CREATE TABLE addresses (
    id           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    customer_id  BIGINT NOT NULL,
    kind         VARCHAR(16) NOT NULL CHECK (kind IN ('billing', 'shipping')),
    street       VARCHAR(255),
    city         VARCHAR(100),
    postcode     VARCHAR(16),
    country      CHAR(2),                     -- ISO 3166 alpha-2
    KEY (customer_id),
    FOREIGN KEY (customer_id) REFERENCES customers (id) ON DELETE CASCADE
) ENGINE = InnoDB;

CREATE TABLE contacts (
    id           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    customer_id  BIGINT,
    first_name   VARCHAR(100) NOT NULL,
    last_name    VARCHAR(100) NOT NULL,
    email        VARCHAR(255) UNIQUE,
    phone        VARCHAR(50),
    job_title    VARCHAR(100),
    active       BOOLEAN NOT NULL DEFAULT TRUE,
    updated_at   DATETIME,                    -- no time zone: read in erp.timezone
    FOREIGN KEY (customer_id) REFERENCES customers (id) ON DELETE SET NULL
) ENGINE = InnoDB;

CREATE TABLE products (
    id           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    sku          VARCHAR(32) NOT NULL UNIQUE,
    name         VARCHAR(200) NOT NULL,
    description  TEXT,
    unit_price   DECIMAL(12, 2) NOT NULL,
    currency     CHAR(3) NOT NULL DEFAULT 'EUR',
    discontinued BOOLEAN NOT NULL DEFAULT FALSE
) ENGINE = InnoDB;

CREATE TABLE sales_orders (
    id           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_no     VARCHAR(32) NOT NULL UNIQUE,
    customer_id  BIGINT NOT NULL,
    status       VARCHAR(16) NOT NULL CHECK (status IN ('draft', 'confirmed', 'shipped', 'invoiced', 'cancelled')),
    currency     CHAR(3) NOT NULL DEFAULT 'EUR',
    total        DECIMAL(14, 2) NOT NULL DEFAULT 0,
    ordered_at   TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    promised_on  DATE,
    crm_ref      VARCHAR(64) UNIQUE,          -- the CRM deal an order was created from
    KEY (customer_id),
    FOREIGN KEY (customer_id) REFERENCES customers (id)
) ENGINE = InnoDB;

CREATE TABLE sales_order_lines (
    id           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_id     BIGINT NOT NULL,
    product_id   BIGINT NOT NULL,
    quantity     DECIMAL(12, 3) NOT NULL,
    unit_price   DECIMAL(12, 2) NOT NULL,
    KEY (order_id),
    FOREIGN KEY (order_id) REFERENCES sales_orders (id) ON DELETE CASCADE,
    FOREIGN KEY (product_id) REFERENCES products (id)
) ENGINE = InnoDB;

-- Debezium's signal table (incremental snapshots on demand); see connectors/README.md.
CREATE TABLE debezium_signal (
    id    VARCHAR(42) PRIMARY KEY,
    type  VARCHAR(32) NOT NULL,
    data  VARCHAR(2048)
) ENGINE = InnoDB;

-- Debezium's heartbeat row (see connectors/README.md): its heartbeat.action.query updates it.
CREATE TABLE debezium_heartbeat (
    id  INT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    ts  TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE = InnoDB;
