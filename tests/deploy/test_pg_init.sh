#!/usr/bin/env bash
# test_pg_init.sh - Postgres's init files of the deployment (infra/compose:
# init-postgres.sql, then init-roles.sh; Kubernetes mounts the same text) run
# the way the postgres image's entrypoint runs them, on a private throwaway
# cluster, and the result is what the deployment promises:
#   - every database exists, each owned by its service's role;
#   - each role logs in (over TCP, with its password: scram-sha-256 like the
#     image) to its own database, creates tables there, and uses what the
#     library needs (LISTEN/NOTIFY, advisory locks);
#   - no role reaches another service's database, the superuser's database or
#     template1; a wrong password is refused; the roles hold no special power;
#   - the superuser still reaches everything (postgres/postgres keeps working);
#   - a password with quotes, blanks, '$' and '\' survives intact;
#   - a missing password stops the script with its name; running it again (or
#     sourcing it, as the entrypoint does with a non-executable script) is
#     harmless.
# The server runs with compose's settings (its postgres command's -c options:
# wal_level=logical and the rest, Kubernetes has the same) and compose's hba
# file (infra/compose/pg_hba.conf), so that for the outbox relays' logical
# decoding:
#   - each role opens a logical replication connection (replication=database)
#     to its own database (IDENTIFY_SYSTEM), creates its publication and its
#     slot there, but not to another database; a physical one
#     (replication=true, the whole cluster) is refused by the hba file;
#   - the bound: a slot nobody reads survives WAL written within
#     max_slot_wal_keep_size, and once the server runs with a small bound
#     (1MB, restarted: a -c option outranks ALTER SYSTEM), a WAL switch and a
#     checkpoint invalidate it (wal_status "lost", restart_lsn gone) instead of
#     keeping the WAL for it;
#   - group commit: the server runs compose's commit_delay and commit_siblings
#     (infra/README.md#group-commit).
# Needs the postgresql package (scripts/deps.sh) and python3-yaml, no running
# server: it starts its own on a free port and removes it at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
INIT_SQL=$ROOT/infra/compose/init-postgres.sql
INIT_ROLES=$ROOT/infra/compose/init-roles.sh
FAILS=0
CHECKS=0

fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }
ok() { CHECKS=$((CHECKS + 1)); }
# expect WHAT COMMAND...: a passed check when COMMAND succeeds, else the failure WHAT.
expect() {
  local what=$1
  shift
  if "$@"; then ok; else fail "$what"; fi
}
quietly() { "$@" >/dev/null; }

PG_BIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
[ -x "$PG_BIN/postgres" ] || { echo "test_pg_init: no Postgres server (package postgresql)" >&2; exit 1; }

TMP=$(mktemp -d /tmp/deta-pg-init.XXXXXX)
chmod 755 "$TMP"
# compose's hba file, where the server's user can read it (the clone may sit
# under a directory only root can enter).
cp "$ROOT/infra/compose/pg_hba.conf" "$TMP/pg_hba.conf"
chmod 644 "$TMP/pg_hba.conf"
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
cleanup() {
  as_owner "$PG_BIN/pg_ctl" stop -D "$TMP/data" -m immediate >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# A port nothing listens on, below Linux's ephemeral range (32768+), where
# outgoing connections would make a "free" port unbindable.
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  return 1
}

# compose's postgres command's -c options, one a line (hba_file: the copy of
# the repository's file, which compose mounts there).
compose_settings() {
  python3 - "$ROOT/infra/compose/compose.yml" "$TMP/pg_hba.conf" <<'PY'
import sys, yaml
words = [str(w) for w in yaml.safe_load(open(sys.argv[1]))["services"]["postgres"]["command"]]
for i, w in enumerate(words):
    if w == "-c":
        name = words[i + 1].split("=", 1)[0]
        print("%s=%s" % (name, sys.argv[2]) if name == "hba_file" else words[i + 1])
PY
}

# The server's options: compose's settings, then OVERRIDES ("name=value"...).
server_options() {
  local opts="-p $PORT -k $TMP/sock -c listen_addresses=127.0.0.1" line
  while read -r line; do opts+=" -c $line"; done < <(compose_settings; [ $# -eq 0 ] || printf '%s\n' "$@")
  echo "$opts"
}

start_cluster() {
  mkdir -p "$TMP/data" "$TMP/sock"
  echo "super-secret" >"$TMP/pw"
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres "$TMP"; fi
  as_owner "$PG_BIN/initdb" -D "$TMP/data" -U postgres --pwfile="$TMP/pw" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >"$TMP/initdb.log" 2>&1 ||
    { cat "$TMP/initdb.log" >&2; exit 1; }
  for _ in 1 2 3 4 5; do  # a port can be taken between the look and the bind
    PORT=$(free_port)
    if as_owner "$PG_BIN/pg_ctl" start -D "$TMP/data" -w -l "$TMP/server.log" \
      -o "$(server_options)" >/dev/null; then
      return 0
    fi
  done
  cat "$TMP/server.log" >&2
  exit 1
}

# This server is plain TCP, whatever the caller's stack uses (test.sh exports
# PGSSLMODE=verify-full for its TLS Postgres): no TLS settings leak in.
unset PGSSLMODE PGSSLROOTCERT PGSSLCERT PGSSLKEY PGUSER PGPASSWORD PGDATABASE PGPORT

# What the entrypoint does: the superuser over the Unix socket.
export PGHOST=$TMP/sock POSTGRES_USER=postgres
export ORDER_DB_PASSWORD="o'p \"w\" \$x \\y"
export INVENTORY_DB_PASSWORD=inv-pw PAYMENT_DB_PASSWORD=pay-pw
export DELIVERY_DB_PASSWORD=del-pw QUERY_DB_PASSWORD=query-pw

# psql_as ROLE PASSWORD DB SQL: over TCP with a password, as a service would.
psql_as() {
  PGPASSWORD=$2 psql -X -q -t -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U "$1" -d "$3" \
    -c "$4" 2>"$TMP/psql.err"
}

superuser() { psql -X -q -t -A -v ON_ERROR_STOP=1 -p "$PORT" -U postgres -d postgres -c "$1"; }

check_role() {
  local role=$1 db=$2 pw=$3 out other
  out=$(psql_as "$role" "$pw" "$db" \
    "CREATE TABLE t_$role (id int PRIMARY KEY); INSERT INTO t_$role VALUES (1);
     LISTEN deta_outbox; SELECT pg_notify('deta_outbox', '');
     SELECT pg_try_advisory_lock(1); SELECT count(*) FROM t_$role;") ||
    fail "$role cannot work in $db: $(cat "$TMP/psql.err")"
  # The row count, the advisory lock taken, the notification delivered.
  if grep -qx 1 <<<"$out" && grep -qx t <<<"$out" &&
    grep -q 'notification "deta_outbox" received' <<<"$out"; then ok
  else fail "$role in $db: got '$out'"; fi
  expect "$db is not owned by $role" \
    [ "$(superuser "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$db'")" = "$role" ]
  for other in order_db inventory_db delivery_eta delivery_db delivery_query postgres template1; do
    [ "$other" = "$db" ] && continue
    if psql_as "$role" "$pw" "$other" "SELECT 1" >/dev/null; then
      fail "$role reaches $other"
    elif grep -q "permission denied for database" "$TMP/psql.err"; then
      ok
    else
      fail "$role on $other: unexpected error: $(cat "$TMP/psql.err")"
    fi
  done
  if psql_as "$role" "wrong-$pw" "$db" "SELECT 1" >/dev/null; then
    fail "$role logs in with a wrong password"
  else ok; fi
  expect "$role holds a special power" \
    [ "$(superuser "SELECT rolsuper OR rolcreatedb OR rolcreaterole OR rolbypassrls
                    FROM pg_roles WHERE rolname = '$role'")" = f ]
  check_replication "$role" "$db" "$pw"
}

# repl_as ROLE PASSWORD DB MODE COMMAND: a replication connection (MODE
# database: logical, true: physical) over TCP, as a relay would open it.
repl_as() {
  PGPASSWORD=$2 psql -X -q -t -A -v ON_ERROR_STOP=1 \
    "host=127.0.0.1 port=$PORT user=$1 dbname=$3 replication=$4" -c "$5" 2>"$TMP/psql.err"
}

# The outbox relay's rights (REPLICATION): logical decoding of its own
# database, nothing of another's, no physical replication.
check_replication() {
  local role=$1 db=$2 pw=$3 out other slot=deta_outbox_$2
  expect "$role lacks REPLICATION" \
    [ "$(superuser "SELECT rolreplication FROM pg_roles WHERE rolname = '$role'")" = t ]
  out=$(repl_as "$role" "$pw" "$db" database IDENTIFY_SYSTEM) ||
    fail "$role: no logical replication connection to $db: $(cat "$TMP/psql.err")"
  if [ "$(cut -d'|' -f4 <<<"$out")" = "$db" ]; then ok
  else fail "$role: IDENTIFY_SYSTEM on $db says '$out'"; fi
  # What the relay does at start: its publication (a migration, as the owner)
  # and its slot; then what an operator does when the service goes: drop it.
  if quietly psql_as "$role" "$pw" "$db" "CREATE PUBLICATION deta_outbox FOR TABLE t_$role"; then ok
  else fail "$role cannot create its publication in $db: $(cat "$TMP/psql.err")"; fi
  if quietly psql_as "$role" "$pw" "$db" "SELECT pg_create_logical_replication_slot('$slot', 'pgoutput')"
  then ok; else fail "$role cannot create its slot in $db: $(cat "$TMP/psql.err")"; fi
  expect "$slot is not a logical pgoutput slot of $db" \
    [ "$(superuser "SELECT slot_type || ' ' || plugin || ' ' || database
                    FROM pg_replication_slots WHERE slot_name = '$slot'")" = "logical pgoutput $db" ]
  expect "the superuser cannot drop $slot" quietly superuser "SELECT pg_drop_replication_slot('$slot')"
  other=order_db
  [ "$db" = order_db ] && other=inventory_db
  if repl_as "$role" "$pw" "$other" database IDENTIFY_SYSTEM >/dev/null; then
    fail "$role opened a logical replication connection to $other"
  elif grep -q "permission denied for database" "$TMP/psql.err"; then ok
  else fail "$role to $other (replication=database): $(cat "$TMP/psql.err")"; fi
  if repl_as "$role" "$pw" "$db" true IDENTIFY_SYSTEM >/dev/null; then
    fail "$role opened a physical replication connection"
  elif grep -q "no pg_hba.conf entry for replication connection" "$TMP/psql.err"; then ok
  else fail "$role (replication=true): not refused by the hba file: $(cat "$TMP/psql.err")"; fi
}

# slot_status SLOT: its wal_status, and "no-lsn" when its restart_lsn is gone.
slot_status() {
  superuser "SELECT wal_status || CASE WHEN restart_lsn IS NULL THEN ' no-lsn' ELSE '' END
               FROM pg_replication_slots WHERE slot_name = '$1'"
}

# WAL_SEGMENTS segments of WAL past the current position: a row, then a switch
# to the next segment (each switch skips the rest of a 16MB segment), then a
# checkpoint, which is when Postgres invalidates the slots past the bound.
write_wal() {
  local _
  for _ in $(seq "$1"); do
    psql_as order_svc "$ORDER_DB_PASSWORD" order_db "INSERT INTO t_order_svc SELECT max(id) + 1 FROM t_order_svc" ||
      fail "writing WAL: $(cat "$TMP/psql.err")"
    superuser "SELECT pg_switch_wal()" >/dev/null
  done
  superuser CHECKPOINT
}

# An abandoned slot (a service removed without dropping it) cannot keep WAL
# without bound: max_slot_wal_keep_size invalidates it.
check_slot_bound() {
  local slot=deta_outbox_abandoned
  expect "the server does not run compose's bound" \
    [ "$(superuser "SHOW max_slot_wal_keep_size")" = "$(compose_settings |
      sed -n 's/^max_slot_wal_keep_size=//p')" ]
  expect "order_svc cannot create a slot" quietly psql_as order_svc "$ORDER_DB_PASSWORD" order_db \
    "SELECT pg_create_logical_replication_slot('$slot', 'pgoutput')"
  write_wal 3
  expect "a slot within the bound is not kept: $(slot_status "$slot")" \
    [ "$(slot_status "$slot")" = reserved ]
  as_owner "$PG_BIN/pg_ctl" restart -D "$TMP/data" -w -m fast -l "$TMP/server.log" \
    -o "$(server_options max_slot_wal_keep_size=1MB)" >/dev/null ||
    { cat "$TMP/server.log" >&2; exit 1; }
  write_wal 2
  expect "a slot past max_slot_wal_keep_size is not lost: $(slot_status "$slot")" \
    [ "$(slot_status "$slot")" = "lost no-lsn" ]
  expect "Postgres did not log the invalidation" \
    grep -q "invalidating slot \"$slot\" because its restart_lsn .* exceeds max_slot_wal_keep_size" \
    "$TMP/server.log"
  expect "the superuser cannot drop the lost slot" quietly superuser "SELECT pg_drop_replication_slot('$slot')"
}

# Group commit (infra/README.md#group-commit): the values compose gives are
# the ones the server runs with.
check_group_commit() {
  local name
  for name in commit_delay commit_siblings; do
    expect "the server does not run compose's $name" \
      [ "$(superuser "SELECT setting FROM pg_settings WHERE name = '$name'")" = "$(compose_settings |
        sed -n "s/^$name=//p")" ]
  done
  expect "group commit is off (commit_delay 0)" \
    [ "$(superuser "SELECT setting FROM pg_settings WHERE name = 'commit_delay'")" != 0 ]
}

main() {
  start_cluster
  psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" -U postgres -d postgres -f "$INIT_SQL" >/dev/null ||
    { echo "init-postgres.sql failed" >&2; exit 1; }
  PGPORT=$PORT sh "$INIT_ROLES" >"$TMP/roles.log" 2>&1 ||
    { cat "$TMP/roles.log" >&2; echo "init-roles.sh failed" >&2; exit 1; }

  check_role order_svc order_db "$ORDER_DB_PASSWORD"
  check_role inventory_svc inventory_db "$INVENTORY_DB_PASSWORD"
  check_role payment_svc delivery_eta "$PAYMENT_DB_PASSWORD"
  check_role delivery_svc delivery_db "$DELIVERY_DB_PASSWORD"
  check_role query_svc delivery_query "$QUERY_DB_PASSWORD"

  local db
  for db in order_db inventory_db delivery_eta delivery_db delivery_query postgres; do
    expect "the superuser cannot reach $db" env PGPASSWORD=super-secret \
      psql -X -q -t -A -h 127.0.0.1 -p "$PORT" -U postgres -d "$db" -o /dev/null -c "SELECT 1"
  done

  # A missing password stops the script and names the variable.
  if env -u QUERY_DB_PASSWORD PGPORT="$PORT" sh "$INIT_ROLES" >"$TMP/missing.log" 2>&1; then
    fail "init-roles.sh succeeded without QUERY_DB_PASSWORD"
  elif grep -q "QUERY_DB_PASSWORD is empty" "$TMP/missing.log"; then ok
  else fail "init-roles.sh without QUERY_DB_PASSWORD: $(cat "$TMP/missing.log")"; fi

  # Again, sourced by bash as the entrypoint does: harmless, passwords unchanged.
  if PGPORT=$PORT bash -c '. "$1"' _ "$INIT_ROLES" >"$TMP/again.log" 2>&1; then ok
  else fail "init-roles.sh sourced a second time failed: $(cat "$TMP/again.log")"; fi
  expect "order_svc lost its password or table after a second run" \
    quietly psql_as order_svc "$ORDER_DB_PASSWORD" order_db "SELECT count(*) FROM t_order_svc"

  check_group_commit
  check_slot_bound

  echo "test_pg_init: $CHECKS checks passed, $FAILS failed"
  [ "$FAILS" -eq 0 ]
}

main "$@"
