-- Least-privilege role for the replicator service. Run as a superuser (or a
-- role with CREATEROLE and ownership of the ERP tables), in the ERP database.
-- psql variables: role name and password, e.g.
--   psql -v role=replicator -v password="'s3cret'" -f sql/roles/replicator_role.sql
\if :{?role}
\else
  \set role replicator
\endif

SELECT format('CREATE ROLE %I WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
\if :{?password}
ALTER ROLE :"role" PASSWORD :password;
\endif

-- Reads the mapped tables (backfill, related rows, reconcile).
GRANT USAGE ON SCHEMA public TO :"role";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"role";
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO :"role";

-- Owns its own state schema.
CREATE SCHEMA IF NOT EXISTS replicator AUTHORIZATION :"role";

-- Creating a publication needs ownership of the tables, so a DBA creates it:
--   CREATE PUBLICATION replicator FOR TABLE public.customers, ...;
-- (`replicator setup` prints the exact statement for the configured mapping.)

-- Echo suppression for writes back into the ERP: tag our own transactions.
GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text) TO :"role";
GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text) TO :"role";
GRANT EXECUTE ON FUNCTION pg_replication_origin_oid(text) TO :"role";

-- Optional, only when CRM changes are written back into the ERP (entities with
-- `crm_to_erp:`): grant writes on exactly the tables the reverse mapping writes,
-- nothing more. Left commented out so the default role stays read-only on ERP tables.
--   GRANT INSERT, UPDATE ON public.customers, public.contacts, public.products TO :"role";
--   GRANT INSERT, UPDATE, DELETE ON public.sales_orders, public.sales_order_lines TO :"role";
--   GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO :"role";  -- bigserial ids of inserted rows
-- The ERP writer tags its transactions with a replication origin (see above); it also
-- creates that origin on first use, hence the EXECUTE grant on pg_replication_origin_create.
