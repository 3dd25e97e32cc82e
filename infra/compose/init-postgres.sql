-- init-postgres.sql - every database of the system, created by Postgres's
-- entrypoint on the first start of an empty data directory (mounted into
-- /docker-entrypoint-initdb.d/; Kubernetes mounts the same text from the
-- ConfigMap in ../k8s/postgres.yaml, and tests/deploy checks they are equal).
--
-- One database per service, as the seed and docs/contracts.md name them; the
-- query-api's read model (delivery_query) is a Postgres database here as on
-- the local stack. Owners and access are set by init-roles.sh, which runs
-- after this file.
CREATE DATABASE order_db;
CREATE DATABASE inventory_db;
CREATE DATABASE delivery_eta;
CREATE DATABASE delivery_db;
CREATE DATABASE delivery_query;
