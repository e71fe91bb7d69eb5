-- The deterministic sample data of ../seed.sql, row for row (same ids and values).
-- seq_1_to_N is MariaDB's built-in sequence engine; ELT(n, ...) picks the n-th item.
-- Literal TIMESTAMP values below are UTC.
SET time_zone = '+00:00';

INSERT INTO customers (code, name, industry, website, credit_limit, active, notes, created_at)
SELECT CONCAT('C', LPAD(g, 4, ' ')),
       CONCAT(ELT(1 + g % 10, 'Acme', 'Globex', 'Initech', 'Umbrella', 'Stark', 'Wayne', 'Wonka', 'Tyrell', 'Cyberdyne', 'Soylent'),
              ' ', ELT(1 + (g DIV 10) % 5, 'Industries', 'Trading', 'Logistics', 'Foods', 'Systems'), ' ', g),
       ELT(1 + g % 5, 'MFG', 'RETAIL', 'TECH', 'FIN', NULL),
       CASE WHEN g % 3 = 0 THEN NULL ELSE CONCAT('https://www.customer', g, '.example') END,
       CAST(g * 1234.5 AS DECIMAL(14, 2)),
       g % 11 <> 0,
       -- customer 1's notes are large (~13 kB), like the PostgreSQL sample's TOAST-stored value
       CASE WHEN g = 1 THEN (SELECT GROUP_CONCAT(MD5(i.seq) ORDER BY i.seq SEPARATOR ' ') FROM seq_1_to_400 AS i)
            ELSE CONCAT('Key account since ', 2000 + g % 20) END,
       TIMESTAMP '2024-01-01 08:00:00' + INTERVAL g DAY
FROM (SELECT seq AS g FROM seq_1_to_24) AS s
ORDER BY g;

-- One statement per table: InnoDB leaves gaps in AUTO_INCREMENT between INSERT ... SELECT
-- statements, and the ids must match the PostgreSQL sample's.
INSERT INTO contact_mechanisms (customer_id, kind, value, is_primary)
SELECT customer_id, kind, value, is_primary FROM (
    SELECT 1 AS part, c.id AS customer_id, 'email' AS kind, CONCAT('info@customer', c.id, '.example') AS value,
           TRUE AS is_primary FROM customers c
    UNION ALL
    SELECT 2, c.id, 'email', CONCAT('billing@customer', c.id, '.example'), FALSE FROM customers c WHERE c.id % 2 = 0
    UNION ALL
    SELECT 3, c.id, 'phone', CONCAT('+49 30 ', 1000000 + c.id * 37), TRUE FROM customers c WHERE c.id % 4 <> 0
) AS m
ORDER BY part, customer_id;

INSERT INTO addresses (customer_id, kind, street, city, postcode, country)
SELECT customer_id, kind, street, city, postcode, country FROM (
    SELECT 1 AS part, c.id AS customer_id, 'billing' AS kind, CONCAT(c.id, ' Main Street') AS street,
           ELT(1 + c.id % 6, 'Berlin', 'Paris', 'Lyon', 'München', 'Zürich', 'Wien') AS city,
           CONCAT(10000 + c.id) AS postcode, ELT(1 + c.id % 6, 'DE', 'FR', 'FR', 'DE', 'CH', 'AT') AS country
    FROM customers c
    UNION ALL
    SELECT 2, c.id, 'shipping', CONCAT('Dock ', c.id), 'Hamburg', '20095', 'DE' FROM customers c WHERE c.id % 3 = 0
) AS a
ORDER BY part, customer_id;

INSERT INTO contacts (customer_id, first_name, last_name, email, phone, job_title, active, updated_at)
SELECT 1 + (g % 24),
       ELT(1 + g % 8, 'Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Frances', 'Ken'),
       CONCAT(ELT(1 + (g DIV 8) % 8, 'Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Knuth', 'Allen', 'Thompson'), g),
       CONCAT('person', g, '@customer', 1 + (g % 24), '.example'),
       CASE WHEN g % 5 = 0 THEN NULL ELSE CONCAT('+33 1 ', 4000000 + g) END,
       ELT(1 + g % 4, 'Buyer', 'CFO', 'Head of Operations', NULL),
       g % 13 <> 0,
       TIMESTAMP '2024-06-01 08:30:00' + INTERVAL g HOUR
FROM (SELECT seq AS g FROM seq_1_to_36) AS s
ORDER BY g;

INSERT INTO products (sku, name, description, unit_price, currency, discontinued)
SELECT CONCAT('SKU-', 1000 + g),
       CONCAT(ELT(1 + g % 5, 'Widget', 'Gadget', 'Sprocket', 'Gear', 'Flange'), ' Mk ', g),
       CASE WHEN g % 4 = 0 THEN NULL ELSE CONCAT('Industrial grade part number ', g) END,
       CAST(g * 3.75 + 0.99 AS DECIMAL(12, 2)),
       'EUR',
       g % 9 = 0
FROM (SELECT seq AS g FROM seq_1_to_18) AS s
ORDER BY g;

INSERT INTO sales_orders (order_no, customer_id, status, currency, ordered_at, promised_on)
SELECT CONCAT('SO-', 5000 + g), 1 + (g % 24),
       ELT(1 + g % 5, 'draft', 'confirmed', 'shipped', 'invoiced', 'cancelled'), 'EUR',
       TIMESTAMP '2024-09-01 10:00:00' + INTERVAL (g * 3) DAY,
       DATE '2024-10-01' + INTERVAL (g * 3) DAY
FROM (SELECT seq AS g FROM seq_1_to_20) AS s
ORDER BY g;

INSERT INTO sales_order_lines (order_id, product_id, quantity, unit_price)
SELECT o.id, 1 + ((o.id + l.seq) % 18), CAST(l.seq * 2.5 AS DECIMAL(12, 3)), p.unit_price
FROM sales_orders o CROSS JOIN seq_1_to_3 AS l
JOIN products p ON p.id = 1 + ((o.id + l.seq) % 18)
ORDER BY l.seq, o.id;

UPDATE sales_orders o
JOIN (SELECT order_id, CAST(SUM(quantity * unit_price) AS DECIMAL(14, 2)) AS total
      FROM sales_order_lines GROUP BY order_id) s ON s.order_id = o.id
SET o.total = s.total;
