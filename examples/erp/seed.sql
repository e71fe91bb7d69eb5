-- Deterministic sample data (no random()): the quickstart verifies every row.
INSERT INTO customers (code, name, industry, website, credit_limit, active, notes, created_at)
SELECT format('C%04s', g),
       (ARRAY['Acme', 'Globex', 'Initech', 'Umbrella', 'Stark', 'Wayne', 'Wonka', 'Tyrell', 'Cyberdyne', 'Soylent'])[1 + g % 10]
           || ' ' || (ARRAY['Industries', 'Trading', 'Logistics', 'Foods', 'Systems'])[1 + (g / 10) % 5] || ' ' || g,
       (ARRAY['MFG', 'RETAIL', 'TECH', 'FIN', NULL])[1 + g % 5],
       CASE WHEN g % 3 = 0 THEN NULL ELSE format('https://www.customer%s.example', g) END,
       (g * 1234.5)::numeric(14, 2),
       g % 11 <> 0,
       -- customer 1's notes are large and incompressible enough to be stored out of line (TOAST)
       CASE WHEN g = 1 THEN (SELECT string_agg(md5(i::text), ' ') FROM generate_series(1, 400) AS i) ELSE 'Key account since ' || (2000 + g % 20) END,
       timestamptz '2024-01-01 09:00:00+01' + g * interval '1 day'
FROM generate_series(1, 24) AS g;

INSERT INTO contact_mechanisms (customer_id, kind, value, is_primary)
SELECT c.id, 'email', format('info@customer%s.example', c.id), true FROM customers c
UNION ALL
SELECT c.id, 'email', format('billing@customer%s.example', c.id), false FROM customers c WHERE c.id % 2 = 0
UNION ALL
SELECT c.id, 'phone', format('+49 30 %s', 1000000 + c.id * 37), true FROM customers c WHERE c.id % 4 <> 0;

INSERT INTO addresses (customer_id, kind, street, city, postcode, country)
SELECT c.id, 'billing', format('%s Main Street', c.id),
       (ARRAY['Berlin', 'Paris', 'Lyon', 'München', 'Zürich', 'Wien'])[1 + c.id % 6],
       format('%s', 10000 + c.id), (ARRAY['DE', 'FR', 'FR', 'DE', 'CH', 'AT'])[1 + c.id % 6]
FROM customers c
UNION ALL
SELECT c.id, 'shipping', 'Dock ' || c.id, 'Hamburg', '20095', 'DE' FROM customers c WHERE c.id % 3 = 0;

INSERT INTO contacts (customer_id, first_name, last_name, email, phone, job_title, active, updated_at)
SELECT 1 + (g % 24),
       (ARRAY['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Frances', 'Ken'])[1 + g % 8],
       (ARRAY['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Knuth', 'Allen', 'Thompson'])[1 + (g / 8) % 8] || g,
       format('person%s@customer%s.example', g, 1 + (g % 24)),
       CASE WHEN g % 5 = 0 THEN NULL ELSE format('+33 1 %s', 4000000 + g) END,
       (ARRAY['Buyer', 'CFO', 'Head of Operations', NULL])[1 + g % 4],
       g % 13 <> 0,
       timestamp '2024-06-01 08:30:00' + g * interval '1 hour'
FROM generate_series(1, 36) AS g;

INSERT INTO products (sku, name, description, unit_price, currency, discontinued)
SELECT format('SKU-%s', 1000 + g),
       (ARRAY['Widget', 'Gadget', 'Sprocket', 'Gear', 'Flange'])[1 + g % 5] || ' Mk ' || g,
       CASE WHEN g % 4 = 0 THEN NULL ELSE 'Industrial grade part number ' || g END,
       (g * 3.75 + 0.99)::numeric(12, 2),
       'EUR',
       g % 9 = 0
FROM generate_series(1, 18) AS g;

INSERT INTO sales_orders (order_no, customer_id, status, currency, ordered_at, promised_on)
SELECT format('SO-%s', 5000 + g), 1 + (g % 24),
       (ARRAY['draft', 'confirmed', 'shipped', 'invoiced', 'cancelled'])[1 + g % 5], 'EUR',
       timestamptz '2024-09-01 10:00:00+00' + g * interval '3 days',
       date '2024-10-01' + g * 3
FROM generate_series(1, 20) AS g;

INSERT INTO sales_order_lines (order_id, product_id, quantity, unit_price)
SELECT o.id, 1 + ((o.id + l) % 18), (l * 2.5)::numeric(12, 3), p.unit_price
FROM sales_orders o CROSS JOIN generate_series(1, 3) AS l
JOIN products p ON p.id = 1 + ((o.id + l) % 18);

UPDATE sales_orders o SET total = s.total
FROM (SELECT order_id, sum(quantity * unit_price)::numeric(14, 2) AS total FROM sales_order_lines GROUP BY order_id) s
WHERE s.order_id = o.id;
