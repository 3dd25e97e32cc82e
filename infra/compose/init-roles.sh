#!/bin/sh
# init-roles.sh - least privilege: one login role per service, owning its own
# database and reaching no other. Run by Postgres's entrypoint after
# init-postgres.sql, on the first start of an empty data directory only
# (changing a password later: ALTER ROLE ... PASSWORD, as the superuser).
# scripts/stack.sh runs it too, on every start of the local stack's Postgres:
# run again, it sets each role's password (and its lack of rights) anew.
#
#   role           database         password from
#   order_svc      order_db         ORDER_DB_PASSWORD
#   inventory_svc  inventory_db     INVENTORY_DB_PASSWORD
#   payment_svc    delivery_eta     PAYMENT_DB_PASSWORD
#   delivery_svc   delivery_db      DELIVERY_DB_PASSWORD
#   query_svc      delivery_query   QUERY_DB_PASSWORD
#
# Design: passwords come from the environment (compose's .env, Kubernetes'
# Secret), never from this file, and never pass through a command line: psql
# reads each with \getenv and quotes it with format(%L). Owning its database
# lets a service run its own migrations (in Postgres 15 the public schema
# belongs to the database owner); CONNECT is revoked from PUBLIC on every
# database, the superuser's included, so a role logs in to its own database
# only. REPLICATION lets a service's outbox relay open a logical replication
# connection (replication=database) to its own database and create its slot
# there; the hba files give physical replication (the whole cluster) to the
# superuser only (docs/security.md#least-privilege). The superuser
# (POSTGRES_USER/POSTGRES_PASSWORD) is untouched.
# The entrypoint may source this file rather than execute it, so it defines
# uniquely named functions and stops with `exit 1` only on a real failure.

deta_init_role() {
  deta_role=$1 deta_db=$2 deta_var=$3
  if [ -z "$(printenv "$deta_var")" ]; then
    echo "init-roles.sh: $deta_var is empty: cannot create role $deta_role" >&2
    exit 1
  fi
  psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v role="$deta_role" -v db="$deta_db" -v pwvar="$deta_var" <<'SQL' || exit 1
\getenv password :pwvar
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'password')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE REPLICATION PASSWORD %L', :'role', :'password') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'role') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', :'db', :'role') \gexec
SQL
  echo "init-roles.sh: role $deta_role owns database $deta_db"
}

deta_init_roles() {
  deta_init_role order_svc order_db ORDER_DB_PASSWORD
  deta_init_role inventory_svc inventory_db INVENTORY_DB_PASSWORD
  deta_init_role payment_svc delivery_eta PAYMENT_DB_PASSWORD
  deta_init_role delivery_svc delivery_db DELIVERY_DB_PASSWORD
  deta_init_role query_svc delivery_query QUERY_DB_PASSWORD
  # The service roles reach nothing else: not the superuser's database, not the templates.
  psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -c 'REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC' \
    -c 'REVOKE CONNECT ON DATABASE template1 FROM PUBLIC' || exit 1
}

deta_init_roles
