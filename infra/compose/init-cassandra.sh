#!/bin/bash
# init-cassandra.sh - Cassandra with authentication, and query-api's role in it.
# Runs in the seed's own image (cassandra:4.1, for cqlsh): compose's cassandra
# and cassandra-init containers, and in Kubernetes the Deployment cassandra,
# the Job cassandra-init and query-api's init container (../k8s/cassandra.yaml
# holds the same text; tests/deploy checks it).
#
#   init-cassandra.sh --server  the server: PasswordAuthenticator and
#                               CassandraAuthorizer in cassandra.yaml (the image
#                               reads no variable for them), then the image's
#                               own entrypoint
#   init-cassandra.sh           one-shot, idempotent: the superuser's password
#                               from CASSANDRA_SUPERUSER_PASSWORD, then each
#                               service role (below) with its password and grants
#   init-cassandra.sh --wait    until query_api logs in (Kubernetes: query-api
#                               starts after the Job's work)
#
# Settings: CQLSH_HOST, CQLSH_PORT (read by cqlsh itself; default
# 127.0.0.1:9042), CASSANDRA_SUPERUSER_PASSWORD, CASSANDRA_QUERY_API_PASSWORD,
# CASSANDRA_INIT_TIMEOUT_S (600: how long the one-shot waits for the server).
#
# Design:
# - The superuser keeps its name (cassandra) and gets the password of the
#   secrets file: Cassandra creates it as cassandra/cassandra on its first start
#   and offers no setting for it, so the first run logs in with that default
#   and changes it; a later run logs in with the new one and leaves it.
#   Rotating it is by hand (README: ALTER ROLE first, then the secrets file).
# - query_api is a login role, never a superuser, whose password is set to the
#   secrets file's on every run (CREATE ... IF NOT EXISTS, then ALTER): rotating
#   it is a new value in the secrets file and this script run again.
# - Its one grant is CREATE ON ALL KEYSPACES: query-api creates its keyspace
#   and tables itself on start (as each Postgres role runs its own migrations),
#   and Cassandra checks that permission for CREATE KEYSPACE even when the
#   keyspace exists (IF NOT EXISTS is evaluated after the permission). As the
#   keyspace's creator the role is granted every permission on it, and on
#   nothing else: it reads and writes no other keyspace, and manages no role.
# - No password passes through this file or a CQL command line: they come from
#   the environment, and the statements that carry them reach cqlsh on its
#   standard input. cqlsh takes a login password only as -p, so that one is
#   on the argument list of a cqlsh run inside this container, for its length.
# - cqlsh's exit status after statements read from standard input is not
#   relied on: each step is verified afterwards (a login with the new password,
#   the role's superuser flag).
set -euo pipefail

SUPERUSER=cassandra
# The password Cassandra gives its superuser on a first start; replaced below.
DEFAULT_SUPERUSER_PASSWORD=cassandra
TIMEOUT_S=${CASSANDRA_INIT_TIMEOUT_S:-600}

log() { echo "init-cassandra: $*"; }
die() { echo "init-cassandra: error: $*" >&2; exit 1; }

# ---- the server ---------------------------------------------------------------

# Turns authentication and authorization on, then runs the image's entrypoint
# (which sets the cluster name, the snitch and the datacenter from the
# environment, and steps down to the cassandra user).
server() {
  local conf=${CASSANDRA_CONF:-/etc/cassandra} tmp
  local yaml=$conf/cassandra.yaml
  [ -f "$yaml" ] || die "no $yaml"
  tmp=$(mktemp)
  # Only a key with a class name for value (4.1's layout): in Cassandra 5's, the
  # key holds a mapping on the lines below, which this must not leave dangling.
  sed -E -e 's/^authenticator:[[:space:]]*[A-Za-z0-9_.]+[[:space:]]*$/authenticator: PasswordAuthenticator/' \
    -e 's/^authorizer:[[:space:]]*[A-Za-z0-9_.]+[[:space:]]*$/authorizer: CassandraAuthorizer/' \
    "$yaml" >"$tmp"
  # Written over, not moved: cassandra.yaml may be a bind-mounted file.
  cat "$tmp" >"$yaml"
  rm -f "$tmp"
  # A cassandra.yaml of another layout must stop the start here rather than
  # run a server that lets anyone in.
  grep -qx 'authenticator: PasswordAuthenticator' "$yaml" ||
    die "$yaml: could not set authenticator: PasswordAuthenticator"
  grep -qx 'authorizer: CassandraAuthorizer' "$yaml" ||
    die "$yaml: could not set authorizer: CassandraAuthorizer"
  log "PasswordAuthenticator and CassandraAuthorizer on"
  exec docker-entrypoint.sh cassandra -f
}

# ---- CQL helpers --------------------------------------------------------------

# A value as a CQL string literal's content: ' doubled.
cql_quote() { printf '%s' "${1//\'/\'\'}"; }

# can_login USER PASSWORD: the server is up and accepts USER's password.
can_login() {
  cqlsh -u "$1" -p "$2" -e 'SELECT release_version FROM system.local' >/dev/null 2>&1
}

# run_cql USER PASSWORD: the statements on standard input, as USER.
run_cql() { cqlsh -u "$1" -p "$2" >/dev/null; }

# await_login USER PASSWORD SECONDS: true once USER logs in (the credentials
# cache may answer with the old password for a moment after a change).
await_login() {
  local deadline=$(($(date +%s) + $3))
  until can_login "$1" "$2"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 2
  done
}

require_password() {
  local var=$1
  [ -n "${!var:-}" ] || die "$var is empty"
  [ "${!var}" != "$DEFAULT_SUPERUSER_PASSWORD" ] ||
    die "$var is the image's default password: use another (make-env.sh writes one)"
}

# ---- the one-shot ---------------------------------------------------------------

# Prints the superuser's working password once the server accepts one: the
# configured password, or the default on a first start, which it replaces.
superuser_password() {
  local want=$CASSANDRA_SUPERUSER_PASSWORD deadline=$(($(date +%s) + TIMEOUT_S))
  while :; do
    if can_login "$SUPERUSER" "$want"; then
      log "superuser $SUPERUSER: its password is the secrets file's" >&2
      break
    fi
    if can_login "$SUPERUSER" "$DEFAULT_SUPERUSER_PASSWORD"; then
      run_cql "$SUPERUSER" "$DEFAULT_SUPERUSER_PASSWORD" <<CQL
ALTER ROLE $SUPERUSER WITH PASSWORD = '$(cql_quote "$want")';
CQL
      await_login "$SUPERUSER" "$want" 30 ||
        die "the superuser's new password is not accepted"
      log "superuser $SUPERUSER: default password replaced" >&2
      break
    fi
    [ "$(date +%s)" -lt "$deadline" ] ||
      die "no login as $SUPERUSER within ${TIMEOUT_S} s, with the secrets file's password or the default (server down, or the password changed by hand: see infra/README.md)"
    log "waiting for Cassandra at ${CQLSH_HOST:-127.0.0.1}:${CQLSH_PORT:-9042}" >&2
    sleep 5
  done
  printf '%s' "$want"
}

# init_role ROLE PASSWORD_VAR: a login role, not a superuser, whose password is
# the variable's (created, or set again: a rotation).
init_role() {
  local role=$1 var=$2 admin=$3 pw
  require_password "$var"
  pw=$(cql_quote "${!var}")
  run_cql "$SUPERUSER" "$admin" <<CQL
CREATE ROLE IF NOT EXISTS $role WITH PASSWORD = '$pw' AND LOGIN = true AND SUPERUSER = false;
ALTER ROLE $role WITH PASSWORD = '$pw' AND LOGIN = true AND SUPERUSER = false;
CQL
  await_login "$role" "${!var}" 30 || die "role $role does not log in with $var"
  cqlsh -u "$SUPERUSER" -p "$admin" \
    -e "SELECT is_superuser FROM system_auth.roles WHERE role = '$role'" | grep -qw False ||
    die "role $role is a superuser, or its flag cannot be read"
  log "role $role: login, not a superuser, password from $var"
}

# grant ROLE ADMIN_PASSWORD PERMISSION ON RESOURCE (GRANT is idempotent).
grant() {
  local role=$1 admin=$2
  shift 2
  run_cql "$SUPERUSER" "$admin" <<CQL
GRANT $* TO $role;
CQL
  log "role $role: $*"
}

init() {
  local admin
  require_password CASSANDRA_SUPERUSER_PASSWORD
  admin=$(superuser_password)
  #          role       password from
  init_role  query_api  CASSANDRA_QUERY_API_PASSWORD "$admin"
  grant query_api "$admin" CREATE ON ALL KEYSPACES
  log "done"
}

# ---- the wait ---------------------------------------------------------------------

wait_for_role() {
  require_password CASSANDRA_QUERY_API_PASSWORD
  until can_login query_api "$CASSANDRA_QUERY_API_PASSWORD"; do
    log "waiting for role query_api at ${CQLSH_HOST:-127.0.0.1}:${CQLSH_PORT:-9042}"
    sleep 5
  done
  log "role query_api logs in"
}

case "${1:-}" in
  --server) server ;;
  --wait) wait_for_role ;;
  "") init ;;
  *) echo "usage: init-cassandra.sh [--server | --wait]" >&2; exit 2 ;;
esac
