#!/usr/bin/env bash
# stack.sh - the whole system on one machine, without Docker: Postgres, Redis,
# the local Kafka broker (tools/local-broker) and every service built so far.
#
#   stack.sh up | down | status | env | clean
#   stack.sh start <part> | stop <part> | kill <part>
#   stack.sh scale <service> <N>
#   stack.sh broker <down N|up N|down all|up all|leader T P N|preferred|errors K C N|clear>
#
# Parts: postgres redis broker, prometheus (STACK_OBSERVE), the services of services/services.tsv
# (order-service inventory-service payment-service delivery-service query-api,
# started in that order), and further instances of a service, named
# <service>.<K> (K = 2..99; <service>.1 is <service> itself). A service is
# started only when its binary exists in $BUILD_DIR/services/, so the stack
# grows as services are written.
#
# Design. Every part runs in the background in its own session (setsid), so it
# outlives this script; its pid goes to $STACK_DIR/pids/<part>.pid and its
# output to $STACK_DIR/logs/<part>.log. Everything later (status, stop, down)
# works from those pid files alone: down stops exactly what up started, and a
# pid is trusted only while /proc says it is still the program we launched.
# Ports: each part has a preferred port (env PG_PORT, REDIS_PORT,
# ORDER_SERVICE_PORT, ...); a taken one is reported and the next free port is
# used, skipping the other parts' preferred ports. The chosen ports and the
# broker's address (the mock picks ephemeral ports) are written to
# $STACK_DIR/stack.env, which tests and people source. Every start waits until
# the part is healthy, and stops waiting at once if its process dies.
#
# Instances. Instance K of a service is a part of its own (pid, log and port
# files named <service>.<K>) running the same binary in the same consumer group
# (the group is the service's name), so the instances share the partitions of
# its topics. Its preferred port is the service's plus 10*(K-1) (8082, 8092,
# 8102, ...; env PAYMENT_SERVICE_2_PORT overrides), it gets
# INSTANCE_ID=<service>-<K> (the Kafka client id and the log's instance), and
# stack.env says PAYMENT_SERVICE_2_PORT and PAYMENT_SERVICE_2_URL. `scale`
# brings a service to exactly N running instances; `down` stops them all.
#
# kill sends SIGKILL, as a crash would: to a service instance, to redis-server,
# or to the postmaster and every process it started (a power cut for Postgres,
# whose next start then runs crash recovery). `start` brings the part back.
#
# Settings (env): STACK_DIR (.local), BUILD_DIR (build/release), both relative
# to the repository; PG_PORT REDIS_PORT ORDER_SERVICE_PORT PAYMENT_SERVICE_PORT
# INVENTORY_SERVICE_PORT DELIVERY_SERVICE_PORT QUERY_API_PORT; KAFKA_PARTITIONS
# (6), KAFKA_BROKERS (1), LOG_LEVEL (info), STACK_TIMEOUT (30 s per part);
# PG_CHECKPOINT_TIMEOUT (Postgres's own default unless set, e.g. 30s);
# STACK_SERVICES ("order-service payment-service": start only these services);
# STACK_INSTANCES ("payment-service=2 delivery-service=3": `up` starts that many
# instances of those services; one of every other).
# Services inherit the caller's environment, so their own settings pass through.
# PAYMENT_GATEWAY_LEDGER (the simulated gateway's charges, one file for every
# payment-service instance) is the caller's, or $STACK_DIR/payment-gateway.ledger.
# The web console (docs/console.md): query-api gets QUERY_CONSOLE_DIR (the
# repository's frontend/), QUERY_CONSOLE_ORDER_URL and QUERY_CONSOLE_INVENTORY_URL
# (http://localhost:<their ports>); order-service and inventory-service get
# HTTP_CORS_ORIGINS, query-api's origin as http://localhost:<port> and
# http://127.0.0.1:<port>. The caller's values of these win. The console is at
# http://localhost:<query-api's port>/ (stack.env's CONSOLE_URL).
# OPERATOR_TOKEN (the operator routes: stock changes, query-api's dead-letter
# administration; docs/security.md) and READER_TOKEN (the reading endpoints when
# HTTP_READS_NEED_AUTH closes them) are the caller's, or else made at random once
# per stack directory (operator.token, reader.token, mode 0600); stack.env carries
# both. OPERATOR_TOKEN goes only to the services with operator routes
# (inventory-service, query-api), READER_TOKEN to every service.
#
# Least privilege. Each service logs in to Postgres as its own role, owning its
# own database and reaching no other: the roles of infra/compose/init-roles.sh
# (the one table of them; run here on every Postgres start), with passwords made
# at random once per stack directory ($STACK_DIR/secrets/, mode 0600). Redis
# runs with the default user off and the users of infra/compose/redis-users.sh:
# deta-admin (every command and key: the tests) and payment-service (its own key
# patterns, the few commands it sends). A service gets its own credentials only (PGUSER/PGPASSWORD, and
# REDIS_USERNAME/REDIS_PASSWORD for payment-service); the others' are removed
# from its environment. stack.env carries them all for the tests: PGUSER and
# PGPASSWORD stay the superuser's (inspection), REDIS_USERNAME/REDIS_PASSWORD are
# deta-admin's, <X>_DB_PASSWORD each role's, PAYMENT_REDIS_USERNAME and
# PAYMENT_REDIS_PASSWORD payment-service's.
# STACK_OBSERVE=on: `up` also starts the part prometheus, Debian's Prometheus
# scraping every service of the stack with the repository's alert rules
# (scripts/observe.sh; port PROMETHEUS_PORT, 9090; stack.env's PROMETHEUS_URL);
# `stack.sh start prometheus` adds it to a running stack, `down` stops it.
# PG_TLS=on: Postgres accepts TLS connections only (hostssl, no plain host
# line), with a certificate for localhost and 127.0.0.1 signed by a CA made with
# openssl once per stack directory ($STACK_DIR/tls/ca.crt); services get
# PGSSLMODE=verify-full and PGSSLROOTCERT=that CA, and so does stack.env.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# A path relative to the repository root made absolute.
absolute() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$ROOT" "$1" ;;
  esac
}

STACK_DIR=$(absolute "${STACK_DIR:-.local}")
BUILD_DIR=$(absolute "${BUILD_DIR:-build/release}")
STACK_TIMEOUT=${STACK_TIMEOUT:-30}
LOG_LEVEL=${LOG_LEVEL:-info}

INFRA=(postgres redis broker)
# SERVICES, DATABASES and service_default_port: services/services.tsv.
. "$ROOT/scripts/services.sh"
deta_services_load
# The part prometheus (STACK_OBSERVE=on): start_prometheus, observe_targets.
. "$ROOT/scripts/observe.sh"
BOOTSTRAP_FILE=$STACK_DIR/kafka.bootstrap
CONTROL_FIFO=$STACK_DIR/broker.ctl
ENV_FILE=$STACK_DIR/stack.env

say() { printf 'stack: %s\n' "$*"; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# ---- parts, ports and pids ------------------------------------------------

is_service() {
  local s
  for s in "${SERVICES[@]}"; do [ "$s" = "$1" ] && return 0; done
  return 1
}

MAX_INSTANCES=99

# True for <service>.<K> with K in 1..MAX_INSTANCES (no leading zero).
is_instance_name() {
  local base=${1%.*} k=${1##*.}
  [[ "$1" == *.* ]] && is_service "$base" && [[ "$k" =~ ^[1-9][0-9]?$ ]]
}

is_part() {
  case "$1" in postgres | redis | broker | prometheus) return 0 ;; esac
  is_service "$1" || is_instance_name "$1"
}

# The canonical name of a part: <service>.1 is <service>.
canonical_part() {
  if is_instance_name "$1" && [ "${1##*.}" = 1 ]; then echo "${1%.*}"; else echo "$1"; fi
}

# The service a part runs (itself for infrastructure), and which instance it is.
part_service() { if is_instance_name "$1"; then echo "${1%.*}"; else echo "$1"; fi; }
part_instance() { if is_instance_name "$1"; then echo "${1##*.}"; else echo 1; fi; }

# The part of instance K of a service.
instance_part() { if [ "$2" = 1 ]; then echo "$1"; else echo "$1.$2"; fi; }

# postgres -> PG_PORT, order-service -> ORDER_SERVICE_PORT,
# order-service.2 -> ORDER_SERVICE_2_PORT, ...
port_var() {
  local base k v
  base=$(part_service "$1")
  k=$(part_instance "$1")
  case "$base" in
    postgres) echo PG_PORT ;;
    *)
      v=${base//-/_}
      if [ "$k" = 1 ]; then echo "${v^^}_PORT"; else echo "${v^^}_${k}_PORT"; fi
      ;;
  esac
}

default_port() {
  case "$1" in
    postgres) echo 5432 ;;
    redis) echo 6379 ;;
    prometheus) echo 9090 ;;
    *) if is_service "$1"; then service_default_port "$1"; else echo 0; fi ;;
  esac
}

# Instance K prefers the service's port plus 10*(K-1), unless its own variable
# says otherwise.
preferred_port() {
  local var base k
  var=$(port_var "$1")
  base=$(part_service "$1")
  k=$(part_instance "$1")
  if [ "$k" = 1 ]; then
    echo "${!var:-$(default_port "$1")}"
  else
    echo "${!var:-$(($(preferred_port "$base") + 10 * (k - 1)))}"
  fi
}

pid_file() { echo "$STACK_DIR/pids/$1.pid"; }
port_file() { echo "$STACK_DIR/ports/$1.port"; }
log_file() { echo "$STACK_DIR/logs/$1.log"; }
read_first_line() { if [ -r "$1" ]; then head -n 1 "$1"; fi; }
part_pid() { read_first_line "$(pid_file "$1")"; }
part_port() { read_first_line "$(port_file "$1")"; }

# The instances beyond the first that have a pid file (running or stale), in
# order of service and instance.
extra_instances() {
  local f name
  for f in "$STACK_DIR"/pids/*.pid; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .pid)
    if is_instance_name "$name" && [ "${name##*.}" != 1 ]; then echo "$name"; fi
  done | sort -t. -k1,1 -k2,2n
}

# Every service part this stack knows of: each service followed by its
# further instances.
all_service_parts() {
  local s extra
  extra=$(extra_instances)
  for s in "${SERVICES[@]}"; do
    echo "$s"
    if [ -n "$extra" ]; then grep "^$s\." <<<"$extra" || true; fi
  done
}

# The name a part's process has on its command line.
part_program() {
  case "$1" in
    redis) echo redis-server ;;
    broker) echo local-broker ;;
    *) part_service "$1" ;;
  esac
}

# True for a live process (a zombie is dead: it only waits to be reaped).
pid_alive() {
  local pid=$1 state
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# True when the part's pid file names a live process running its program, so
# that a recycled pid is never taken for ours.
part_running() {
  local pid
  pid=$(part_pid "$1")
  pid_alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$(part_program "$1")"
}

# True when something listens on 127.0.0.1:port (or on every address).
port_in_use() {
  if command -v ss >/dev/null 2>&1; then
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
  else
    timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
  fi
}

# Ports this part must not take: the preferred ports of the other parts and
# the ports the other running parts (instances included) use.
ports_of_others() {
  local p
  for p in "${INFRA[@]}" "${SERVICES[@]}"; do
    [ "$p" = "$1" ] && continue
    [ "$p" = broker ] || preferred_port "$p"
    part_running "$p" && part_port "$p"
  done
  for p in $(extra_instances); do
    [ "$p" = "$1" ] && continue
    part_running "$p" && part_port "$p"
  done
  return 0
}

# Sets CHOSEN_PORT: the preferred port, or the next free one (said aloud).
choose_port() {
  local part=$1 pref port others
  pref=$(preferred_port "$part")
  others=" $(ports_of_others "$part" | tr '\n' ' ') "
  for ((port = pref; port < pref + 200; port++)); do
    if [ "$port" != "$pref" ] && [[ "$others" == *" $port "* ]]; then continue; fi
    if ! port_in_use "$port"; then
      [ "$port" = "$pref" ] || say "$part: port $pref is taken; using $port instead"
      CHOSEN_PORT=$port
      echo "$port" >"$(port_file "$part")"
      return 0
    fi
  done
  die "$part: no free port in $pref..$((pref + 199))"
}

# ---- starting and stopping -------------------------------------------------

need_command() {
  command -v "$1" >/dev/null 2>&1 ||
    die "'$1' not found (package $2): install the dependencies with scripts/deps.sh"
}

log_tail() {
  local log
  log=$(log_file "$1")
  echo "----- last lines of $log -----" >&2
  tail -n 30 "$log" >&2 2>/dev/null || true
  echo "-----" >&2
}

# Starts "$@" in its own session with cwd $2, output appended to the part's
# log; the process writes its own pid (it is the one that execs the program).
# It must not inherit the lock (fd 9), or the lock would live as long as it.
# Sets LAUNCHED_PID.
launch() {
  local part=$1 cwd=$2 pidf log
  shift 2
  pidf=$(pid_file "$part")
  log=$(log_file "$part")
  rm -f "$pidf"
  printf '=== stack.sh: starting %s at %s ===\n' "$part" "$(date -Is)" >>"$log"
  # shellcheck disable=SC2016 # expanded by the inner bash
  setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0"; cd "$1" || exit 1; shift; exec "$@"' \
    "$pidf" "$cwd" "$@" </dev/null >>"$log" 2>&1 9>&- &
  local i
  for ((i = 0; i < 50; i++)); do
    [ -s "$pidf" ] && break
    sleep 0.1
  done
  LAUNCHED_PID=$(read_first_line "$pidf")
  [ -n "$LAUNCHED_PID" ] || die "$part: could not be launched (see $log)"
}

# Is the part answering? Quick checks, each bounded by a short timeout.
part_healthy() {
  local part=$1 port=$2
  case "$part" in
    postgres) pg_superuser pg_isready -q -h 127.0.0.1 -p "$port" -t 2 ;;
    redis)
      [ "$(REDISCLI_AUTH=$(stack_secret REDIS_PASSWORD) timeout 2 redis-cli --no-auth-warning \
        -h 127.0.0.1 -p "$port" --user "$REDIS_ADMIN_USER" ping 2>/dev/null)" = PONG ]
      ;;
    broker) broker_reachable ;;
    prometheus) curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/-/ready" 2>/dev/null ;;
    *) curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/actuator/health" 2>/dev/null ;;
  esac
}

# Waits until the part is healthy; fails at once when its process dies, or
# after STACK_TIMEOUT seconds (then stops it: nothing half-started is left
# behind), showing the end of its log either way.
wait_healthy() {
  local part=$1 pid=$2 port=$3 deadline=$((SECONDS + STACK_TIMEOUT))
  while ((SECONDS < deadline)); do
    part_healthy "$part" "$port" && return 0
    if ! pid_alive "$pid"; then
      local status=0
      wait "$pid" 2>/dev/null || status=$?
      echo "stack: error: $part (pid $pid) exited during startup (status $status)" >&2
      log_tail "$part"
      rm -f "$(pid_file "$part")"
      return 1
    fi
    sleep 0.2
  done
  echo "stack: error: $part not healthy after ${STACK_TIMEOUT}s; stopping it (pid $pid)" >&2
  log_tail "$part"
  terminate "$part" "$pid"
  rm -f "$(pid_file "$part")"
  return 1
}

# SIGTERM, up to 10 s, then SIGKILL.
# A service bounds its own shutdown (DETA_SHUTDOWN_TIMEOUT_MS, 10 s by default)
# and exits 1 when the bound passes; the SIGKILL here comes later than that, so
# that a service's own exit is what normally ends it.
terminate() {
  local part=$1 pid=$2 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 150; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  say "$part (pid $pid) ignored SIGTERM for 15 s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

stop_part() {
  local part=$1 pidf pid
  pidf=$(pid_file "$part")
  if [ ! -e "$pidf" ]; then
    return 0
  fi
  pid=$(part_pid "$part")
  if ! part_running "$part"; then
    say "$part: not running (stale pid file removed)"
    rm -f "$pidf"
    return 0
  fi
  say "stopping $part (pid $pid)"
  if [ "$part" = postgres ]; then
    stop_postgres "$pid"
  else
    terminate "$part" "$pid"
  fi
  rm -f "$pidf"
  [ "$part" != broker ] || rm -f "$BOOTSTRAP_FILE"
}

# ---- postgres --------------------------------------------------------------

pg_bin_dir() {
  local d
  d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  if [ ! -x "$d/postgres" ]; then
    die "the Postgres server is not installed (package postgresql): run scripts/deps.sh"
  fi
  echo "$d"
}

# Runs a Postgres program as the user that owns the cluster: postgres when we
# are root (the server refuses to run as root), else ourselves.
pg_as() {
  if is_root; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# Sets PG_DATA and PG_SOCK. The data normally lives in $STACK_DIR/pg; when we
# are root and the postgres user cannot reach $STACK_DIR (a 0700 home or temp
# directory, as in CI), it lives under /var/tmp and $STACK_DIR/pg links to it.
pg_layout() {
  local link=$STACK_DIR/pg base
  base=/var/tmp/deta-pg-$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-16)
  if [ -L "$link" ] || { [ ! -e "$link" ] && is_root && ! pg_as test -x "$STACK_DIR"; }; then
    if [ ! -L "$link" ]; then
      say "postgres: user postgres cannot reach $STACK_DIR; its data goes to $base (linked from $link)"
    fi
    mkdir -p "$base/data" "$base/run"
    chown -R postgres:postgres "$base"
    chmod 0700 "$base/data"
    ln -sfn "$base/data" "$link"
    ln -sfn "$base/run" "$STACK_DIR/run"
    PG_DATA=$base/data
    PG_SOCK=$base/run
    return 0
  fi
  mkdir -p "$link" "$STACK_DIR/run"
  if is_root; then chown postgres:postgres "$link" "$STACK_DIR/run"; fi
  chmod 0700 "$link"
  PG_DATA=$link
  PG_SOCK=$STACK_DIR/run
}

# initdb once: user postgres with password postgres, scram-sha-256 over TCP,
# trust on the local socket.
pg_init_once() {
  local bin=$1 pwfile log
  [ -f "$PG_DATA/PG_VERSION" ] && return 0
  log=$(log_file postgres)
  if [ -n "$(ls -A "$PG_DATA" 2>/dev/null)" ]; then
    say "postgres: $PG_DATA holds an unfinished cluster; starting it afresh"
    find "$PG_DATA" -mindepth 1 -delete
  fi
  say "postgres: initdb in $PG_DATA"
  pwfile=$(mktemp /tmp/deta-pgpw.XXXXXX)
  echo postgres >"$pwfile"
  if is_root; then chown postgres "$pwfile"; fi
  if ! pg_as "$bin/initdb" -D "$PG_DATA" -U postgres --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >>"$log" 2>&1; then
    rm -f "$pwfile"
    echo "stack: error: initdb failed" >&2
    log_tail postgres
    exit 1
  fi
  rm -f "$pwfile"
}

pg_create_databases() {
  local bin=$1 port=$2 db exists
  for db in "${DATABASES[@]}"; do
    exists=$(pg_superuser "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres \
      -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'") ||
      die "postgres: cannot list databases"
    if [ "$exists" != 1 ]; then
      pg_superuser "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db" ||
        die "postgres: cannot create database $db"
      say "postgres: database $db created"
    fi
  done
}

start_postgres() {
  local bin
  bin=$(pg_bin_dir)
  need_command pg_isready postgresql-client
  if is_root; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' user (package postgresql): run scripts/deps.sh"
  fi
  pg_layout
  pg_init_once "$bin"
  choose_port postgres
  local pg_cmd=("$bin/postgres" -D "$PG_DATA" -p "$CHOSEN_PORT" -k "$PG_SOCK"
    -c listen_addresses=127.0.0.1 -c max_connections=200)
  # The outbox relays read their outbox from the WAL (logical decoding), as in
  # compose and Kubernetes (infra/README.md#logical-replication-slots): the
  # same settings and the same bound on what an abandoned slot may hold.
  pg_cmd+=(-c wal_level=logical -c max_replication_slots=10 -c max_wal_senders=24
    -c max_slot_wal_keep_size=1GB)
  # Group commit, as in compose and Kubernetes (infra/README.md#group-commit):
  # a commit that finds two other writing transactions waits 1 ms for them to
  # share its WAL flush. Every commit is still flushed before it returns.
  pg_cmd+=(-c commit_delay=1000 -c commit_siblings=2)
  rm -f "$STACK_DIR/tls/on"
  if pg_tls_wanted; then
    pg_tls_setup
    pg_cmd+=(-c ssl=on -c "ssl_cert_file=$PG_DATA/server.crt" -c "ssl_key_file=$PG_DATA/server.key"
      -c "hba_file=$PG_DATA/deta_hba_tls.conf")
  else
    pg_hba_plain
    pg_cmd+=(-c "hba_file=$PG_DATA/deta_hba.conf")
  fi
  # A stack killed with SIGKILL at random (chaos.sh) recovers from the last
  # checkpoint on every start: PG_CHECKPOINT_TIMEOUT keeps that replay short.
  [ -z "${PG_CHECKPOINT_TIMEOUT:-}" ] || pg_cmd+=(-c "checkpoint_timeout=$PG_CHECKPOINT_TIMEOUT")
  if is_root; then pg_cmd=(runuser -u postgres -- "${pg_cmd[@]}"); fi
  launch postgres / "${pg_cmd[@]}"
  wait_healthy postgres "$LAUNCHED_PID" "$CHOSEN_PORT" || exit 1
  # The pid to keep is the postmaster's (runuser, when used, is its parent).
  read_first_line "$PG_DATA/postmaster.pid" >"$(pid_file postgres)"
  if pg_tls_wanted; then touch "$STACK_DIR/tls/on"; fi
  pg_create_databases "$bin" "$CHOSEN_PORT"
  pg_init_roles "$bin" "$CHOSEN_PORT"
}

# ---- least privilege: the services' roles and secrets ----------------------

INIT_ROLES=$ROOT/infra/compose/init-roles.sh

# A secret of this stack, made at random once per stack directory and kept
# (mode 0600) in $STACK_DIR/secrets/<name>.
stack_secret() {
  local dir=$STACK_DIR/secrets file=$STACK_DIR/secrets/$1
  if [ ! -s "$file" ]; then
    (umask 077 && mkdir -p "$dir" &&
      od -An -N18 -tx1 /dev/urandom | tr -d ' \n' >"$file.tmp" && mv "$file.tmp" "$file")
  fi
  read_first_line "$file"
}

# "role database PASSWORD_VARIABLE", one line per service: init-roles.sh's own
# table (its deta_init_role lines), so that the roles are listed once.
role_rows() {
  awk '$1 == "deta_init_role" && NF == 4 { print $2, $3, $4 }' "$INIT_ROLES"
}

# "role PASSWORD_VARIABLE" of a service, through its database (services.tsv).
service_role() {
  local i
  for i in "${!SERVICES[@]}"; do
    if [ "${SERVICES[i]}" = "$1" ]; then
      role_rows | awk -v db="${DATABASES[i]}" '$2 == db { print $1, $3 }'
      return 0
    fi
  done
}

# Runs a Postgres client as the superuser, over TLS (verified against the
# stack's CA) when the stack runs it, whatever the caller's PGSSL* say.
pg_superuser() {
  local ssl=(PGSSLMODE=prefer)
  if pg_tls_running; then ssl=(PGSSLMODE=verify-full "PGSSLROOTCERT=$STACK_DIR/tls/ca.crt"); fi
  env -u PGSSLCERT -u PGSSLKEY -u PGSSLROOTCERT "${ssl[@]}" PGPASSWORD=postgres "$@"
}

# init-roles.sh, as compose runs it, with this stack's passwords (through the
# environment only), then each database's tables handed to its role: a stack
# made before the roles existed has them owned by the superuser.
pg_init_roles() {
  local bin=$1 port=$2 role db var log
  log=$(log_file postgres)
  [ -n "$(role_rows)" ] || die "no roles in $INIT_ROLES"
  (
    while read -r role db var; do export "$var=$(stack_secret "$var")"; done < <(role_rows)
    pg_superuser env PATH="$bin:$PATH" POSTGRES_USER=postgres PGHOST=127.0.0.1 \
      PGPORT="$port" PGUSER=postgres sh "$INIT_ROLES"
  ) >>"$log" 2>&1 || { log_tail postgres; die "postgres: init-roles.sh failed"; }
  while read -r role db var; do
    pg_superuser "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$db" \
      -v role="$role" >>"$log" 2>&1 <<'SQL' || die "postgres: cannot give $db's tables to $role"
SELECT format('ALTER %s %s OWNER TO %I', CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
              c.oid::regclass, :'role')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg_toast%' AND pg_get_userbyid(c.relowner) <> :'role'
   AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                     AND d.objid = c.oid AND d.deptype IN ('a', 'i')) \gexec
SQL
  done < <(role_rows)
  say "postgres: one role per service, each owning its own database"
}

# ---- Postgres over TLS (PG_TLS=on) -------------------------------------------

pg_tls_wanted() {
  case "${PG_TLS:-off}" in
    on | true | yes | 1) return 0 ;;
    off | false | no | 0) return 1 ;;
    *) die "PG_TLS: \"$PG_TLS\" is not on or off" ;;
  esac
}

# True when this stack's Postgres was started with TLS required.
pg_tls_running() { [ -e "$STACK_DIR/tls/on" ]; }

# A CA (once per stack directory) and a server certificate it signs, for
# localhost and 127.0.0.1 (subject and SAN: verify-full checks the SAN), put
# where the server reads them (owned by the server's user, key 0600); and an
# hba file that takes TLS connections only (hostssl: a plain one finds no line
# and is refused), with trust on the local socket as initdb set it.
pg_tls_setup() {
  local dir=$STACK_DIR/tls
  need_command openssl openssl
  mkdir -p "$dir"
  if [ ! -s "$dir/ca.crt" ] || [ ! -s "$dir/server.crt" ]; then
    say "postgres: making a CA and a server certificate in $dir (openssl)"
    (umask 077 &&
      openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 3650 -subj "/CN=delivery-eta local stack CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign &&
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/server.key" -out "$dir/server.csr" -subj "/CN=localhost" &&
      printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'basicConstraints=CA:FALSE' \
        'keyUsage=critical,digitalSignature,keyEncipherment' 'extendedKeyUsage=serverAuth' \
        >"$dir/server.ext" &&
      openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 825 -extfile "$dir/server.ext" -out "$dir/server.crt") \
      >>"$(log_file postgres)" 2>&1 || die "postgres: openssl could not make the certificates"
    chmod 0644 "$dir/ca.crt" "$dir/server.crt"
  fi
  chmod 0755 "$dir"
  cp "$dir/server.crt" "$PG_DATA/server.crt"
  cp "$dir/server.key" "$PG_DATA/server.key"
  printf '%s\n' '# stack.sh (PG_TLS=on): TLS connections only' 'local all all trust' \
    'hostssl all all 127.0.0.1/32 scram-sha-256' 'hostssl all all ::1/128 scram-sha-256' \
    'local replication postgres trust' 'hostssl replication postgres 127.0.0.1/32 scram-sha-256' \
    >"$PG_DATA/deta_hba_tls.conf"
  chmod 0600 "$PG_DATA/server.key"
  if is_root; then
    chown postgres:postgres "$PG_DATA/server.crt" "$PG_DATA/server.key" "$PG_DATA/deta_hba_tls.conf"
  fi
}

# The hba file of a plain (PG_TLS=off) stack, written on every start (a stack
# made before it had initdb's): initdb's lines, but physical replication
# (`replication` lines: the whole cluster, BASE_BACKUP) for the superuser
# only. The service roles have REPLICATION for their relays' logical
# replication connections (replication=database), which match the database
# lines like any connection and reach only the role's own database
# (docs/security.md#least-privilege).
pg_hba_plain() {
  printf '%s\n' '# stack.sh: initdb'"'"'s lines; physical replication for the superuser only' \
    'local all all trust' 'host all all 127.0.0.1/32 scram-sha-256' 'host all all ::1/128 scram-sha-256' \
    'local replication postgres trust' 'host replication postgres 127.0.0.1/32 scram-sha-256' \
    >"$PG_DATA/deta_hba.conf"
  if is_root; then chown postgres:postgres "$PG_DATA/deta_hba.conf"; fi
}

stop_postgres() {
  local pid=$1 bin
  bin=$(pg_bin_dir)
  pg_layout
  if ! pg_as "$bin/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 10 >>"$(log_file postgres)" 2>&1; then
    say "postgres: pg_ctl stop failed; signalling pid $pid"
    terminate postgres "$pid"
  fi
}

# ---- redis -----------------------------------------------------------------

start_redis() {
  need_command redis-server redis-server
  need_command redis-cli redis-tools
  mkdir -p "$STACK_DIR/redis"
  redis_acl_file
  choose_port redis
  launch redis "$STACK_DIR/redis" redis-server --bind 127.0.0.1 --port "$CHOSEN_PORT" \
    --dir "$STACK_DIR/redis" --appendonly yes --daemonize no --aclfile "$STACK_DIR/redis/users.acl"
  wait_healthy redis "$LAUNCHED_PID" "$CHOSEN_PORT" || exit 1
}

REDIS_ADMIN_USER=deta-admin
REDIS_PAYMENT_USER=payment-service

# Redis's users: infra/compose/redis-users.sh's ACL file (the default user off,
# deta-admin with every right for the tests and the health check, payment-service
# on its own keys and commands), with this stack's passwords (environment only).
redis_acl_file() {
  (
    REDIS_ADMIN_PASSWORD=$(stack_secret REDIS_PASSWORD)
    REDIS_PAYMENT_PASSWORD=$(stack_secret PAYMENT_REDIS_PASSWORD)
    export REDIS_ADMIN_PASSWORD REDIS_PAYMENT_PASSWORD
    sh "$ROOT/infra/compose/redis-users.sh" "$STACK_DIR/redis/users.acl"
  ) || die "redis: infra/compose/redis-users.sh failed"
}

# ---- broker ----------------------------------------------------------------

broker_bootstrap() { read_first_line "$BOOTSTRAP_FILE"; }

# The Kafka settings tuned to librdkafka's mock cluster, not to a real broker
# (libdeta's defaults are a real cluster's: README.md, Configuration). Every
# service the stack starts gets them, and stack.env carries them to the tests
# and the benchmark. The mock answers a fetch only when fetch.wait.max.ms has
# passed (a real broker answers when data arrives), so 10 ms instead of 500
# keeps each hop of the saga quick; and a stopped or killed member leaves its
# group after 6 s instead of 45, so tests that restart services wait less.
mock_tuning() {
  printf '%s\n' KAFKA_FETCH_WAIT_MAX_MS=10 KAFKA_SESSION_TIMEOUT_MS=6000
}

# The bootstrap file exists and its first address accepts a TCP connection.
broker_reachable() {
  local first host port
  first=$(broker_bootstrap | cut -d, -f1)
  [ -n "$first" ] || return 1
  host=${first%:*}
  port=${first##*:}
  timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null
}

start_broker() {
  local bin=$BUILD_DIR/tools/local-broker
  [ -x "$bin" ] || die "no local broker at $bin: build it first (make, or cmake --build $BUILD_DIR)"
  rm -f "$BOOTSTRAP_FILE"
  launch broker "$ROOT" env LOG_LEVEL="$LOG_LEVEL" "$bin" \
    --bootstrap-file "$BOOTSTRAP_FILE" --control "$CONTROL_FIFO" \
    --partitions "${KAFKA_PARTITIONS:-6}" --brokers "${KAFKA_BROKERS:-1}"
  wait_healthy broker "$LAUNCHED_PID" 0 || exit 1
  broker_bootstrap | cut -d, -f1 | sed 's/.*://' >"$(port_file broker)"
}

# stack.sh broker <command...>: one line to the broker's control FIFO.
broker_command() {
  [ $# -gt 0 ] || die "usage: stack.sh broker <down N|up N|down all|up all|leader T P N|preferred|errors K C N|clear>"
  part_running broker || die "the broker is not running (stack.sh up)"
  [ -p "$CONTROL_FIFO" ] || die "no control FIFO at $CONTROL_FIFO"
  # shellcheck disable=SC2016 # expanded by the inner bash
  timeout 5 bash -c 'printf "%s\n" "$1" >"$0"' "$CONTROL_FIFO" "$*" ||
    die "could not write to $CONTROL_FIFO"
  say "sent to broker: $*"
}

# ---- services --------------------------------------------------------------

service_binary() { echo "$BUILD_DIR/services/$1"; }

# The port of a service: its port file while it runs, else the one it will ask
# for (order-service and inventory-service start before query-api, whose origin
# they allow).
service_port() {
  if part_running "$1" && [ -n "$(part_port "$1")" ]; then part_port "$1"; else preferred_port "$1"; fi
}

# The web console's settings (docs/console.md), one VAR=value a line: query-api
# serves frontend/ (when the tree has it) and tells the page where order-service
# and inventory-service are; those two allow query-api's origin, by both names a
# browser may use for it. The caller's values win.
console_env() {
  local q
  case "$(part_service "$1")" in
    order-service | inventory-service)
      q=$(service_port query-api)
      echo "HTTP_CORS_ORIGINS=${HTTP_CORS_ORIGINS:-http://localhost:$q,http://127.0.0.1:$q}"
      ;;
    query-api)
      if [ -n "${QUERY_CONSOLE_DIR:-}" ]; then
        echo "QUERY_CONSOLE_DIR=$QUERY_CONSOLE_DIR"
      elif [ -d "$ROOT/frontend" ]; then
        echo "QUERY_CONSOLE_DIR=$ROOT/frontend"
      fi
      echo "QUERY_CONSOLE_ORDER_URL=${QUERY_CONSOLE_ORDER_URL:-http://localhost:$(service_port order-service)}"
      echo "QUERY_CONSOLE_INVENTORY_URL=${QUERY_CONSOLE_INVENTORY_URL:-http://localhost:$(service_port inventory-service)}"
      ;;
  esac
}

# The arguments of env(1) that give a service its own credentials and no
# other's: every stack secret unset (-u), then its role's PGUSER/PGPASSWORD,
# the stack's CA when Postgres runs TLS, and for payment-service its Redis user.
service_credentials() {
  local service=$1 role var line
  for var in $(role_rows | cut -d' ' -f3) REDIS_USERNAME REDIS_PASSWORD PAYMENT_REDIS_USERNAME \
    PAYMENT_REDIS_PASSWORD PGSSLCERT PGSSLKEY; do
    printf '%s\n' -u "$var"
  done
  line=$(service_role "$service")
  [ -n "$line" ] || die "$service: no role for its database in $INIT_ROLES"
  role=${line% *}
  var=${line#* }
  echo "PGUSER=$role"
  echo "PGPASSWORD=$(stack_secret "$var")"
  if pg_tls_running; then
    echo PGSSLMODE=verify-full
    echo "PGSSLROOTCERT=$STACK_DIR/tls/ca.crt"
  fi
  if [ "$service" = payment-service ]; then
    echo "REDIS_USERNAME=$REDIS_PAYMENT_USER"
    echo "REDIS_PASSWORD=$(stack_secret PAYMENT_REDIS_PASSWORD)"
  fi
}

start_service() {
  local name=$1 bin pg redis k instance=()
  bin=$(service_binary "$(part_service "$name")")
  [ -x "$bin" ] || die "no $name binary at $bin: build it first (make)"
  part_running broker || die "$name needs the broker: start it first (stack.sh up)"
  pg=$(part_port postgres)
  redis=$(part_port redis)
  part_running postgres || die "$name needs postgres: start it first (stack.sh up)"
  part_running redis || die "$name needs redis: start it first (stack.sh up)"
  choose_port "$name"
  k=$(part_instance "$name")
  if [ "$k" != 1 ]; then instance=(INSTANCE_ID="$(part_service "$name")-$k"); fi
  local console=() creds=() tuning=()
  mapfile -t console < <(console_env "$name")
  mapfile -t tuning < <(mock_tuning)
  mapfile -t creds < <(service_credentials "$(part_service "$name")")
  # env's options (-u) before its assignments.
  local unset=(-u OPERATOR_TOKEN) tokens=()
  case "$(part_service "$name")" in
    inventory-service | query-api) unset=() tokens=(OPERATOR_TOKEN="$(stack_token operator)") ;;
  esac
  launch "$name" "$ROOT" env "${unset[@]}" "${creds[@]}" "${tokens[@]}" "${instance[@]}" "${console[@]}" HTTP_PORT="$CHOSEN_PORT" \
    KAFKA_BOOTSTRAP_SERVERS="$(broker_bootstrap)" "${tuning[@]}" \
    PGHOST=127.0.0.1 PGPORT="$pg" \
    REDIS_HOST=127.0.0.1 REDIS_PORT="$redis" LOG_LEVEL="$LOG_LEVEL" \
    READER_TOKEN="$(stack_token reader)" PAYMENT_GATEWAY_LEDGER="$(gateway_ledger)" "$bin"
  wait_healthy "$name" "$LAUNCHED_PID" "$CHOSEN_PORT" || exit 1
}

running_services() {
  local s
  for s in $(all_service_parts); do
    if part_running "$s"; then echo "$s"; fi
  done
}

# ---- the commands ----------------------------------------------------------

# Starts one part unless it runs already. A fresh broker has a new address and
# no data, so services still running are restarted to pick it up.
start_part() {
  local part=$1 services=()
  if part_running "$part"; then
    say "$part already running (pid $(part_pid "$part"))"
    return 0
  fi
  if [ "$part" = broker ]; then mapfile -t services < <(running_services); fi
  say "starting $part"
  case "$part" in
    postgres) start_postgres ;;
    redis) start_redis ;;
    broker) start_broker ;;
    prometheus) start_prometheus ;;
    *) start_service "$part" ;;
  esac
  say "$part is up (pid $(part_pid "$part"), port $(part_port "$part"))"
  if [ "${#services[@]}" -gt 0 ]; then
    say "the broker is new (new address, no data): restarting ${services[*]}"
    local s
    for s in "${services[@]}"; do stop_part "$s"; done
    for s in "${services[@]}"; do start_part "$s"; done
  fi
}

# KEY=value, single-quoted only when the value holds characters a shell or a
# plain KEY=value reader would take differently.
env_line() {
  if [[ "$2" =~ ^[A-Za-z0-9_.,:/@%+=-]*$ ]]; then
    printf '%s=%s\n' "$1" "$2"
  else
    printf "%s='%s'\n" "$1" "${2//\'/\'\\\'\'}"
  fi
}

# Writes stack.env for the parts that run (atomically); removes it when none.
# The simulated gateway's ledger of charges, shared by every payment-service
# instance of the stack: the caller's PAYMENT_GATEWAY_LEDGER, else a file in
# the stack's directory (kept until `clean`, like the databases).
gateway_ledger() {
  printf '%s\n' "${PAYMENT_GATEWAY_LEDGER:-$STACK_DIR/payment-gateway.ledger}"
}

write_env() {
  local tmp=$ENV_FILE.tmp s var port any=0
  {
    env_line STACK_DIR "$STACK_DIR"
    if part_running broker; then
      env_line KAFKA_BOOTSTRAP_SERVERS "$(broker_bootstrap)"
      mock_tuning
      any=1
    fi
    if part_running postgres; then
      port=$(part_port postgres)
      env_line PGHOST 127.0.0.1
      env_line PGPORT "$port"
      env_line PG_PORT "$port"
      env_line PGUSER postgres
      env_line PGPASSWORD postgres
      if pg_tls_running; then
        env_line PGSSLMODE verify-full
        env_line PGSSLROOTCERT "$STACK_DIR/tls/ca.crt"
      fi
      local role db pwvar
      while read -r role db pwvar; do env_line "$pwvar" "$(stack_secret "$pwvar")"; done < <(role_rows)
      any=1
    fi
    if part_running redis; then
      env_line REDIS_HOST 127.0.0.1
      env_line REDIS_PORT "$(part_port redis)"
      env_line REDIS_USERNAME "$REDIS_ADMIN_USER"
      env_line REDIS_PASSWORD "$(stack_secret REDIS_PASSWORD)"
      env_line PAYMENT_REDIS_USERNAME "$REDIS_PAYMENT_USER"
      env_line PAYMENT_REDIS_PASSWORD "$(stack_secret PAYMENT_REDIS_PASSWORD)"
      any=1
    fi
    env_line OPERATOR_TOKEN "$(stack_token operator)"
    env_line READER_TOKEN "$(stack_token reader)"
    if part_running query-api; then
      env_line CONSOLE_URL "http://localhost:$(part_port query-api)/"
    fi
    if part_running payment-service; then
      env_line PAYMENT_GATEWAY_LEDGER "$(gateway_ledger)"
    fi
    if part_running prometheus; then
      env_line PROMETHEUS_PORT "$(part_port prometheus)"
      env_line PROMETHEUS_URL "http://127.0.0.1:$(part_port prometheus)"
    fi
    for s in $(all_service_parts); do
      part_running "$s" || continue
      port=$(part_port "$s")
      var=$(port_var "$s")
      env_line "$var" "$port"
      env_line "${var%_PORT}_URL" "http://127.0.0.1:$port"
      any=1
    done
  } >"$tmp"
  observe_targets
  if [ "$any" = 1 ]; then
    # The secrets alone (names ending in _PASSWORD or _TOKEN), kept after `down` until
    # `clean`, for scripts/scan-secrets.sh to look for in the stack's logs.
    (umask 077 && grep -E '^[A-Za-z_][A-Za-z0-9_]*_(PASSWORD|TOKEN)=' "$tmp" >"$STACK_DIR/secrets.env" || true)
    mv "$tmp" "$ENV_FILE"
  else
    rm -f "$tmp" "$ENV_FILE"
  fi
}

# The stack's operator or reader token ($1: operator or reader): the caller's
# OPERATOR_TOKEN / READER_TOKEN, else one made at random once per stack directory
# and kept (mode 0600) in $STACK_DIR/$1.token.
stack_token() {
  local file=$STACK_DIR/$1.token var
  var=$(printf '%s_TOKEN' "$1" | tr '[:lower:]' '[:upper:]')
  if [ -n "${!var:-}" ]; then
    printf '%s\n' "${!var}"
    return
  fi
  if [ ! -s "$file" ]; then
    (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$file.tmp" && mv "$file.tmp" "$file")
  fi
  read_first_line "$file"
}

prepare_dirs() {
  mkdir -p "$STACK_DIR/pids" "$STACK_DIR/ports" "$STACK_DIR/logs"
}

# One stack.sh at a time changes a given stack.
take_lock() {
  prepare_dirs
  exec 9>"$STACK_DIR/.lock"
  flock -w 60 9 || die "another stack.sh holds $STACK_DIR/.lock"
}

# On a failed up or start: what did start keeps running, and says so.
after_failed_start() {
  local status=$?
  [ "$status" -eq 0 ] && return 0
  write_env || true
  echo "stack: the parts that started are still running (scripts/stack.sh status);" \
    "stop them with scripts/stack.sh down" >&2
  return "$status"
}

# How many instances STACK_INSTANCES asks of a service ("svc=N ..."; 1 when
# it does not name it). A malformed entry stops `up` before anything starts.
wanted_instances() {
  local entry n=1
  for entry in ${STACK_INSTANCES:-}; do
    if ! [[ "$entry" =~ ^([a-z-]+)=([1-9][0-9]?)$ ]] || ! is_service "${BASH_REMATCH[1]}"; then
      die "STACK_INSTANCES: \"$entry\" is not <service>=<1..$MAX_INSTANCES>"
    fi
    if [ "${BASH_REMATCH[1]}" = "$1" ]; then n=${BASH_REMATCH[2]}; fi
  done
  echo "$n"
}

cmd_up() {
  local part k n
  wanted_instances order-service >/dev/null
  take_lock
  trap after_failed_start EXIT
  for part in "${INFRA[@]}"; do start_part "$part"; done
  for part in "${SERVICES[@]}"; do
    if [ -n "${STACK_SERVICES:-}" ] && [[ " $STACK_SERVICES " != *" $part "* ]]; then
      say "$part: not in STACK_SERVICES, skipped"
    elif [ -x "$(service_binary "$part")" ]; then
      n=$(wanted_instances "$part")
      for ((k = 1; k <= n; k++)); do start_part "$(instance_part "$part" "$k")"; done
    else
      say "$part: not built yet ($(service_binary "$part") missing), skipped"
    fi
  done
  if observe_wanted; then start_part prometheus; fi
  write_env
  say "stack is up; its settings: $ENV_FILE (source it, or: scripts/stack.sh env)"
}

cmd_down() {
  local i part
  take_lock
  stop_part prometheus
  for part in $(extra_instances | sort -r); do stop_part "$part"; done
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do stop_part "${SERVICES[i]}"; done
  stop_part broker
  stop_part redis
  stop_part postgres
  rm -f "$ENV_FILE"
  say "stack is down"
}

cmd_status() {
  local part pid port state health
  printf '%-22s %-8s %-6s %-8s %s\n' PART PID PORT STATE HEALTH
  local observe=
  if observe_wanted || [ -e "$(pid_file prometheus)" ]; then observe=prometheus; fi
  for part in "${INFRA[@]}" $(all_service_parts) $observe; do
    pid=- port=- state=stopped health=DOWN
    if part_running "$part"; then
      pid=$(part_pid "$part")
      port=$(part_port "$part")
      state=running
      if part_healthy "$part" "$port"; then health=UP; fi
    fi
    printf '%-22s %-8s %-6s %-8s %s\n' "$part" "$pid" "${port:--}" "$state" "$health"
  done
}

PARTS_HELP="parts: ${INFRA[*]} ${SERVICES[*]} prometheus, or <service>.<K> for instance K"

cmd_start() {
  is_part "${1:-}" || die "usage: stack.sh start <part> ($PARTS_HELP)"
  local part
  part=$(canonical_part "$1")
  take_lock
  trap after_failed_start EXIT
  start_part "$part"
  write_env
}

cmd_stop() {
  is_part "${1:-}" || die "usage: stack.sh stop <part> ($PARTS_HELP)"
  local part
  part=$(canonical_part "$1")
  take_lock
  if ! part_running "$part"; then say "$part is not running"; fi
  stop_part "$part"
  write_env
}

# The pids of the processes whose working directory is $1: every process of a
# Postgres cluster works in its data directory, orphans included.
pids_working_in() {
  local cwd d
  for d in /proc/[0-9]*; do
    cwd=$(readlink "$d/cwd" 2>/dev/null) || continue
    if [ "$cwd" = "$1" ]; then echo "${d#/proc/}"; fi
  done
}

# After the postmaster's SIGKILL, every process left in the data directory
# (backends and helpers, orphaned: each is a session of its own, so a process
# group would miss them). With the postmaster dead nothing forks any more, so
# a few sweeps find them all; one left behind would keep the shared memory and
# the next start would fail.
kill_postgres_orphans() {
  local data pids i
  data=$(readlink -f "$STACK_DIR/pg")
  for ((i = 0; i < 20; i++)); do
    mapfile -t pids < <(pids_working_in "$data")
    [ "${#pids[@]}" -gt 0 ] || return 0
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.1
  done
  say "postgres: processes still in $data after SIGKILL: ${pids[*]}"
}

# SIGKILL, as a crash: the part's process, and for Postgres every process of
# the cluster, as a power cut would. Waits until they are gone, so that the
# next start finds the ports and Postgres's shared memory free.
cmd_kill() {
  is_part "${1:-}" || die "usage: stack.sh kill <part> ($PARTS_HELP)"
  local part pid victims i
  part=$(canonical_part "$1")
  take_lock
  if ! part_running "$part"; then
    say "$part is not running"
    return 0
  fi
  pid=$(part_pid "$part")
  victims=("$pid")
  say "killing $part (SIGKILL to pid $pid)"
  kill -KILL "$pid" 2>/dev/null || true
  if [ "$part" = postgres ]; then kill_postgres_orphans; fi
  printf '=== stack.sh: %s killed (SIGKILL) at %s ===\n' "$part" "$(date -Is)" >>"$(log_file "$part")"
  for ((i = 0; i < 100; i++)); do
    local alive=0 v
    for v in "${victims[@]}"; do if pid_alive "$v"; then alive=1; fi; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  [ "$part" != broker ] || rm -f "$BOOTSTRAP_FILE"
  write_env
}

# Brings a service to exactly N running instances: starts the missing ones of
# 1..N, stops those above N (0 stops them all).
cmd_scale() {
  local service=${1:-} n=${2:-} k part
  if ! is_service "$service" || ! [[ "$n" =~ ^(0|[1-9][0-9]?)$ ]]; then
    die "usage: stack.sh scale <service> <0..$MAX_INSTANCES> (services: ${SERVICES[*]})"
  fi
  take_lock
  trap after_failed_start EXIT
  for part in $(extra_instances | sort -r) "$service"; do
    if [ "$(part_service "$part")" = "$service" ] && [ "$(part_instance "$part")" -gt "$n" ]; then
      stop_part "$part"
    fi
  done
  for ((k = 1; k <= n; k++)); do start_part "$(instance_part "$service" "$k")"; done
  write_env
}

cmd_env() {
  [ -r "$ENV_FILE" ] || die "no $ENV_FILE: the stack is not up (scripts/stack.sh up)"
  cat "$ENV_FILE"
}

# Removes the stack's data (it must be down), including a Postgres data
# directory that lives under /var/tmp.
cmd_clean() {
  local part target
  [ -d "$STACK_DIR" ] || return 0
  case "$STACK_DIR" in / | "$ROOT" | "$HOME") die "refusing to remove $STACK_DIR" ;; esac
  for part in "${INFRA[@]}" $(all_service_parts) prometheus; do
    if part_running "$part"; then die "$part is running: scripts/stack.sh down first"; fi
  done
  if [ -L "$STACK_DIR/pg" ]; then
    target=$(dirname "$(readlink "$STACK_DIR/pg")")
    case "$target" in /var/tmp/deta-pg-*) rm -rf "$target" ;; esac
  fi
  rm -rf "$STACK_DIR"
  say "removed $STACK_DIR"
}

usage() {
  sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
  local cmd=${1:-}
  [ $# -gt 0 ] && shift
  case "$cmd" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    kill) cmd_kill "$@" ;;
    scale) cmd_scale "$@" ;;
    broker) broker_command "$@" ;;
    env) cmd_env ;;
    clean) cmd_clean ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
