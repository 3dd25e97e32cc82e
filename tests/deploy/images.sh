#!/usr/bin/env bash
# images.sh - the five service images, built with podman from
# infra/docker/Dockerfile exactly as compose builds them, checked, and run:
# a saga through the five containers against the local stack's Postgres, Redis
# and broker (`make images`; `make test` runs it last).
#
#   tests/deploy/images.sh
#
# 1. The base: tests/deploy/base-image.sh (debian:12 from debootstrap, cached
#    for BASE_MAX_AGE_DAYS; a real debian:12 is used when there is one).
# 2. Build: for each service, compose's own build section (compose_service.py
#    build: context, Dockerfile, SERVICE and HTTP_PORT) with the Dockerfile's
#    ignore file, `--format docker` (podman drops HEALTHCHECK from OCI images)
#    and the tag <compose's image>:images-test (never the developer's :dev).
# 3. Check each image: user 10001:10001; the HEALTHCHECK runs the probe; the
#    only programs are the service, the probe and the dynamic loader (every
#    other regular file with an execute bit is a shared library): no shell, no
#    package manager, no compiler; the loader inside the image resolves every
#    library of the service (ld.so --list, what ldd runs); the dpkg records of
#    the packages inside; the size.
# 4. Run: Postgres, Redis and the broker of a stack of its own (stack.sh start,
#    in IMAGES_STACK_DIR), one login role per service made by compose's own
#    init-roles.sh and Redis's users by redis-users.sh (stack.sh runs both), then the five containers with compose's environment
#    (compose_service.py env) where only the addresses differ (host network:
#    127.0.0.1 and this stack's ports), the Kafka session timeout (the
#    local broker's 6 s, as stack.sh gives every service: see write_env_file)
#    and query-api's store (Postgres: no Cassandra here), plus the demo's
#    gateway and clock settings; an address of a service as compose publishes it
#    (localhost:<its port>, in the console's settings and the CORS origins) names
#    this run's port instead. As Kubernetes runs them: read-only root, every capability
#    dropped, no new privileges. Each must pass its own HEALTHCHECK (its
#    command, run inside the container with `podman exec`: podman's timer
#    needs systemd).
# 5. The saga through them with deta-cli: one order delivered, one rejected for
#    stock, one declined by the gateway (each read back from the containerized
#    query-api in its end state), then `deta-cli demo` (IMAGES_ORDERS orders,
#    every one ended, stock and numbers checked).
# 6. The web console from query-api's container (the files the image carries,
#    served with compose's settings), in Debian's chromium: the browser tests'
#    test_place_order.mjs with the page's origin the container's query-api (an
#    order placed through the form, with CORS to order-service's container,
#    reaches its end state on its page live). Skipped, and said, without node,
#    chromium or the browser tests' npm install (scripts/deps.sh installs them).
# 7. Stop: SIGTERM to each container (order-service first), with the engine's
#    grace period set to the services' shutdown bound (DETA_SHUTDOWN_TIMEOUT_MS
#    from compose, plus 2 s): a service that overruns it is killed (137), so
#    the check is an exit status of 0.
# On every exit (trap): the containers and every image this run made (the
# layers too: `podman images -a` before and after) are removed, the stack is
# stopped and its data removed; the containers' logs stay in
# IMAGES_STACK_DIR/logs. IMAGES_KEEP=1 keeps the images (to try them by hand).
#
# Settings (env): BUILD_DIR (build/release: deta-cli and the local broker),
# IMAGES_STACK_DIR (.local/images), IMAGES_PORT_BASE (31080: the services on
# 31080..31084, Postgres +352, Redis +299; below Linux's ephemeral ports,
# 32768..60999, which the containers' own connections take: a service port in
# that range was once taken by one of them before query-api could bind it),
# IMAGES_ORDERS (60), IMAGES_KEEP,
# PODMAN_RUNTIME (runc when installed: crun refuses this kind of machine's
# hybrid cgroups), BASE_MAX_AGE_DAYS. Needs root (podman, debootstrap).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tests/deploy
cd "$ROOT"

BUILD_DIR=${BUILD_DIR:-build/release}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
export BUILD_DIR
export STACK_DIR=${IMAGES_STACK_DIR:-.local/images}
PORT_BASE=${IMAGES_PORT_BASE:-31080}
ORDERS=${IMAGES_ORDERS:-60}
KEEP=${IMAGES_KEEP:-0}
TAG=images-test
RUN_ID=deta-images-$$
. "$ROOT/scripts/services.sh"
deta_services_load
# The engine's own limits: podman's defaults exceed what this machine allows.
ULIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
# As infra/k8s runs the containers.
HARDENING=(--read-only --cap-drop=ALL --security-opt=no-new-privileges)
# The demo's settings (scripts/demo.sh), so that the saga's end states are known.
SAGA_ENV=(DELIVERY_CLOCK_SPEED=600 DELIVERY_DRIVERS=10 DELIVERY_DRIVER_CAPACITY=2
  'PAYMENT_DECLINE_CUSTOMERS=decline-*' PAYMENT_DECLINE_ABOVE=10000.00 PAYMENT_DECLINE_RATE=0)

if [ -z "${PODMAN_RUNTIME:-}" ] && command -v runc >/dev/null; then PODMAN_RUNTIME=runc; fi
PODMAN=(podman)
if [ -n "${PODMAN_RUNTIME:-}" ]; then PODMAN+=(--runtime "$PODMAN_RUNTIME"); fi

declare -A IMAGE=() PORT=() SIZE=()
REWRITE=() # sed expressions: compose's published addresses to this run's
IMAGES_BEFORE=""
FAILS=0
STARTED=$(date +%s)

step() { printf '\n==> images: %s\n' "$*"; }
say() { printf 'images: %s\n' "$*"; }
fail() { printf 'images: FAIL: %s\n' "$*" >&2; FAILS=$((FAILS + 1)); }
die() { printf 'images: error: %s\n' "$*" >&2; exit 1; }
ms_now() { date +%s%3N; }
container() { echo "$RUN_ID-$1"; }

# ---- cleanup ----------------------------------------------------------------

images_made() {
  comm -13 <(printf '%s\n' "$IMAGES_BEFORE" | sort -u) \
    <(podman images -a -q --no-trunc | sort -u)
}

cleanup() {
  local status=$? s ids
  set +e
  for s in "${SERVICES[@]}"; do
    if podman container exists "$(container "$s")"; then
      podman logs "$(container "$s")" >"$STACK_DIR/logs/container-$s.log" 2>&1
      podman rm -f -t 0 "$(container "$s")" >/dev/null 2>&1
    fi
  done
  podman rm -f -t 0 "$RUN_ID-files" >/dev/null 2>&1
  if [ "$KEEP" = 1 ]; then
    say "IMAGES_KEEP=1: the images stay (podman images | grep $TAG)"
  elif [ -n "$IMAGES_BEFORE" ]; then
    ids=$(images_made)
    # One rmi of them all; a second try for a layer still held by an image
    # the first pass had not yet removed.
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086
      podman rmi -f $ids >/dev/null 2>&1 || podman rmi -f $ids >/dev/null 2>&1
    fi
    ids=$(images_made)
    if [ -n "$ids" ]; then
      echo "images: FAIL: images this run made are left: $ids" >&2
      status=1
    fi
  fi
  # The stack's data goes; the logs (services', containers', builds') stay.
  scripts/stack.sh down >/dev/null 2>&1
  rm -rf "$STACK_DIR.logs"
  mv "$STACK_DIR/logs" "$STACK_DIR.logs" 2>/dev/null
  scripts/stack.sh clean >/dev/null 2>&1
  mkdir -p "$STACK_DIR" && mv "$STACK_DIR.logs" "$STACK_DIR/logs" 2>/dev/null
  say "took $(($(date +%s) - STARTED)) s"
  exit "$status"
}

# ---- preflight and base -----------------------------------------------------

preflight() {
  local c
  for c in podman python3; do
    command -v "$c" >/dev/null || die "no $c (scripts/deps.sh installs it)"
  done
  python3 -c 'import yaml' 2>/dev/null || die "no python3-yaml (scripts/deps.sh installs it)"
  for c in deta-cli local-broker; do
    [ -x "$BUILD_DIR/tools/$c" ] || die "no $BUILD_DIR/tools/$c: build first (make, or BUILD_DIR=...)"
  done
}

deta_cli() { "$BUILD_DIR/tools/deta-cli" "$@"; }

# ---- build ------------------------------------------------------------------

# build SERVICE: the image as compose builds it, tagged :images-test.
build_image() {
  local svc=$1 key value image="" context="" dockerfile="" args=()
  while read -r key value; do
    case "$key" in
      image) image=$value ;;
      context) context=$value ;;
      dockerfile) dockerfile=$value ;;
      arg) args+=(--build-arg "$value") ;;
    esac
  done < <(python3 "$HERE/compose_service.py" build "$svc")
  [ -n "$image" ] && [ -n "$context" ] && [ -n "$dockerfile" ] ||
    die "compose.yml: no build for $svc"
  IMAGE[$svc]=${image%:*}:$TAG
  # BuildKit (docker, compose) reads <Dockerfile>.dockerignore by itself.
  "${PODMAN[@]}" build --network host --pull=never --format docker \
    -f "$dockerfile" --ignorefile "$dockerfile.dockerignore" \
    -t "${IMAGE[$svc]}" "${args[@]}" "$context" >"$STACK_DIR/logs/build-$svc.log" 2>&1 ||
    { tail -n 30 "$STACK_DIR/logs/build-$svc.log" >&2; die "podman build of $svc failed"; }
}

# ---- checks of one image ----------------------------------------------------

# The files of an image: "TYPE MODE PATH" lines (TYPE x for an executable
# regular file, f for another, d, l or h; MODE octal), read from `podman
# export` of a container that never runs.
list_files() {
  local img=$1
  podman create --no-healthcheck --name "$RUN_ID-files" "$img" >/dev/null
  podman export "$RUN_ID-files" | python3 -c '
import sys, tarfile
kinds = {tarfile.REGTYPE: "f", tarfile.DIRTYPE: "d", tarfile.SYMTYPE: "l", tarfile.LNKTYPE: "h"}
for m in tarfile.open(fileobj=sys.stdin.buffer, mode="r|"):
    kind = kinds.get(m.type, "?")
    if kind == "f" and m.mode & 0o111:
        kind = "x"
    print(kind, "%o" % m.mode, "/" + m.name.lstrip("./"))'
  podman rm -f "$RUN_ID-files" >/dev/null
}

check_image() {
  local svc=$1 img=${IMAGE[$svc]} user hc
  user=$(podman image inspect --format '{{.Config.User}}' "$img")
  [ "$user" = 10001:10001 ] || fail "$svc: runs as '$user', not 10001:10001"
  hc=$(podman image inspect --format '{{.Config.Healthcheck}}' "$img")
  [[ "$hc" == *"/usr/local/bin/deta-healthcheck"* ]] || fail "$svc: HEALTHCHECK is '$hc'"
  SIZE[$svc]=$(podman image inspect --format '{{.Size}}' "$img")
  list_files "$img" >"$STACK_DIR/logs/files-$svc.txt"
  check_image_files "$svc"
  check_image_libraries "$svc"
}

# Programs: the service, the probe and the loader; nothing else is executable
# but shared libraries. No shell, package manager or compiler by name either.
check_image_files() {
  local svc=$1 listing=$STACK_DIR/logs/files-$svc.txt bin want stray tool
  bin=$(awk '$3 ~ "^/usr/local/bin/" {print $1 ":" $3}' "$listing" | sort | tr '\n' ' ')
  want=$(printf '%s\n' "x:/usr/local/bin/$svc" x:/usr/local/bin/deta-healthcheck \
    l:/usr/local/bin/deta-service | sort | tr '\n' ' ')
  [ "$bin" = "$want" ] ||
    fail "$svc: /usr/local/bin holds '$bin', not the service, the probe and deta-service"
  stray=$(awk '$1 == "x" {print $3}' "$listing" |
    grep -v -E '^/usr/local/bin/|\.so(\.[0-9]+)*$' || true)
  [ -z "$stray" ] || fail "$svc: executables besides the service and the probe: $stray"
  for tool in sh bash dash busybox apt apt-get dpkg gcc cc ld as perl python3; do
    if awk '$1 != "d" {print $3}' "$listing" | grep -q -E "/$tool\$"; then fail "$svc: the image has $tool"; fi
  done
  grep -q '^f [0-7]* /var/lib/dpkg/status.d/libc6$' "$listing" ||
    fail "$svc: no dpkg record of libc6 in /var/lib/dpkg/status.d (image scanners read them)"
}

check_image_libraries() {
  local svc=$1 img=${IMAGE[$svc]} out
  if ! out=$("${PODMAN[@]}" run --rm --no-healthcheck "${ULIMITS[@]}" --network none \
    --entrypoint /lib64/ld-linux-x86-64.so.2 "$img" --list "/usr/local/bin/$svc" 2>&1); then
    fail "$svc: the image's loader cannot list the service's libraries: $out"
    return
  fi
  if grep -q 'not found' <<<"$out"; then
    fail "$svc: libraries missing in the image: $(grep 'not found' <<<"$out" | tr -s ' \t' ' ')"
  fi
  say "$svc: $(grep -c '=>' <<<"$out") libraries, all resolved inside the image"
}

# ---- the stack around the containers ----------------------------------------

start_infra() {
  local pw
  export PG_PORT=$((PORT_BASE + 352)) REDIS_PORT=$((PORT_BASE + 299))
  for part in postgres redis broker; do
    scripts/stack.sh start "$part" >"$STACK_DIR/logs/start-$part.out" 2>&1 ||
      { cat "$STACK_DIR/logs/start-$part.out" >&2; die "the stack's $part did not start"; }
  done
  set -a
  # shellcheck disable=SC1091
  . "$STACK_DIR/stack.env"
  set +a
  # The credentials compose takes from .env. The roles' passwords (*_DB_PASSWORD)
  # and the Redis users' are the stack's (stack.env): stack.sh ran compose's own
  # init-roles.sh and redis-users.sh with them, so each container logs in as its
  # role, to its database only, and payment-service as its Redis user. The rest
  # are made up for this run, but OPERATOR_TOKEN and READER_TOKEN, the stack's (stack.env),
  # so that scripts/scan-secrets.sh looks for the containers' tokens in this stack's logs.
  for pw in ORDER_DB_PASSWORD INVENTORY_DB_PASSWORD PAYMENT_DB_PASSWORD DELIVERY_DB_PASSWORD \
    QUERY_DB_PASSWORD PAYMENT_REDIS_PASSWORD REDIS_PASSWORD; do
    [ -n "${!pw:-}" ] || die "stack.env has no $pw"
  done
  export REDIS_PAYMENT_PASSWORD=$PAYMENT_REDIS_PASSWORD REDIS_ADMIN_PASSWORD=$REDIS_PASSWORD
  for pw in CASSANDRA_QUERY_API_PASSWORD; do
    export "$pw=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  done
  # Kafka's SASL and client-key passwords: set, and empty as .env.example has them
  # (the local broker speaks PLAINTEXT only: docs/security.md).
  for svc in ORDER INVENTORY PAYMENT DELIVERY QUERY; do
    export "${svc}_KAFKA_PASSWORD=" "${svc}_KAFKA_SSL_KEY_PASSWORD="
  done
  say "Postgres :$PGPORT, Redis :$REDIS_PORT, broker $KAFKA_BOOTSTRAP_SERVERS; one role per service"
}

# The container's environment: compose's, with this stack's addresses, and the
# session timeout every service gets on the local broker (stack.sh): the mock
# cluster holds a group's rebalance until a member's session times out
# (scripts/README.md), so with compose's 45 s, query-api's second
# consumer of its group waits up to 45 s for its first assignment, and a
# SIGTERM in that time overruns the shutdown bound. A real broker does not.
# Likewise the mock's fetch wait (10 ms for compose's 500: the mock answers a
# fetch only when the wait is over; stack.sh's mock_tuning).
# query-api's store, too: compose runs it on Cassandra (QUERY_STORE=cassandra),
# and no Cassandra runs here (no server package, no registry to pull
# cassandra:4.1 from), so its container keeps the read model in this stack's
# Postgres (QUERY_STORE=postgres, the code's default); the CASSANDRA_* settings
# stay as compose gives them, unused. The Cassandra part of compose is checked
# from the files (check_compose.py).
write_env_file() {
  local svc=$1 file=$STACK_DIR/env-$svc
  python3 "$HERE/compose_service.py" env "$svc" >"$file.compose" ||
    die "compose.yml: no environment for $svc"
  {
    grep -v -E '^(KAFKA_BOOTSTRAP_SERVERS|KAFKA_SESSION_TIMEOUT_MS|KAFKA_FETCH_WAIT_MAX_MS|PGHOST|PGPORT|REDIS_HOST|REDIS_PORT|HTTP_PORT|QUERY_STORE)=' \
      "$file.compose" | sed "${REWRITE[@]}"
    printf '%s\n' "KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS" KAFKA_SESSION_TIMEOUT_MS=6000 \
      KAFKA_FETCH_WAIT_MAX_MS=10 \
      PGHOST=127.0.0.1 "PGPORT=$PGPORT" REDIS_HOST=127.0.0.1 "REDIS_PORT=$REDIS_PORT" \
      "HTTP_PORT=${PORT[$svc]}" "${SAGA_ENV[@]}"
    if [ "$svc" = query-api ]; then echo QUERY_STORE=postgres; fi
  } >"$file"
  chmod 600 "$file" "$file.compose"
  echo "$file"
}

# Compose publishes each service on its HTTP_PORT; the browser reaches them as
# localhost:<that port> (the console's settings, the CORS origins).
published_addresses() {
  local svc p
  for svc in "${SERVICES[@]}"; do
    p=$(python3 "$HERE/compose_service.py" env "$svc" | sed -n 's/^HTTP_PORT=//p')
    [[ "$p" =~ ^[0-9]+$ ]] || die "compose.yml: no HTTP_PORT for $svc"
    REWRITE+=(-e "s#//localhost:$p\b#//localhost:${PORT[$svc]}#g"
      -e "s#//127\.0\.0\.1:$p\b#//127.0.0.1:${PORT[$svc]}#g")
  done
}

run_container() {
  local svc=$1 env_file
  env_file=$(write_env_file "$svc")
  "${PODMAN[@]}" run -d --name "$(container "$svc")" --network host "${ULIMITS[@]}" \
    "${HARDENING[@]}" --no-healthcheck --env-file "$env_file" "${IMAGE[$svc]}" \
    >/dev/null || die "podman run of $svc failed"
}

# Waits until the container's own HEALTHCHECK passes: its command (from the
# image) run inside the container. Run by hand, not by podman's timer, which
# needs systemd, and this machine has none.
await_healthy() {
  local svc=$1 ctr deadline probe
  ctr=$(container "$svc")
  probe=$(podman image inspect --format '{{range $i, $a := .Config.Healthcheck.Test}}{{if $i}}{{$a}} {{end}}{{end}}' "${IMAGE[$svc]}" 2>/dev/null || true)
  # shellcheck disable=SC2206
  probe=(${probe# })
  [ "${#probe[@]}" -gt 0 ] || die "$svc: the image has no HEALTHCHECK command"
  deadline=$(($(date +%s) + 90))
  until podman exec "$ctr" "${probe[@]}" >/dev/null 2>&1; do
    if [ "$(podman inspect --format '{{.State.Running}}' "$ctr")" != true ]; then
      podman logs --tail 20 "$ctr" >&2
      die "$svc's container stopped before it was healthy"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      podman logs --tail 20 "$ctr" >&2
      die "$svc's container was not healthy within 90 s"
    fi
    sleep 1
  done
  say "$svc: healthy on :${PORT[$svc]} (its HEALTHCHECK, ${probe[*]}, run inside the container)"
}

# ---- the saga ---------------------------------------------------------------

# order_ends WHAT STATUS ARGS...: creates an order, follows it on the query-api
# until it ends, and checks that its end state there is STATUS.
order_ends() {
  local what=$1 want=$2 id status
  shift 2
  id=$(deta_cli create "$@" | python3 -c 'import json,sys; print(json.load(sys.stdin)["orderId"])') ||
    { fail "$what: the order was not accepted"; return; }
  deta_cli watch "$id" --timeout 120 >"$STACK_DIR/logs/watch-$what.out" 2>&1 || true
  status=$(deta_cli get "$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  if [ "$status" = "$want" ]; then
    say "$what order $id: $status on the query-api"
  else
    fail "$what order $id ended $status on the query-api, expected $want"
  fi
}

run_saga() {
  export ORDER_SERVICE_URL=http://127.0.0.1:${PORT[order-service]}
  export QUERY_API_URL=http://127.0.0.1:${PORT[query-api]}
  export INVENTORY_SERVICE_URL=http://127.0.0.1:${PORT[inventory-service]}
  order_ends delivered DELIVERED --customer images-1 --currency EUR --item sku-1:2:9.99
  order_ends rejected INVENTORY_REJECTED --customer images-2 --currency EUR \
    --item sku-limited:1000:1.00
  order_ends declined PAYMENT_FAILED --customer decline-images --currency EUR \
    --item sku-2:1:5.00
  if deta_cli demo --orders "$ORDERS" --concurrency 4 --wait 180 >"$STACK_DIR/logs/demo.out" 2>&1; then
    say "deta-cli demo: $ORDERS orders through the containers, every one ended, the numbers add up"
  else
    tail -n 40 "$STACK_DIR/logs/demo.out" >&2
    fail "deta-cli demo through the containers (its report: $STACK_DIR/logs/demo.out)"
  fi
}

# ---- the console --------------------------------------------------------------

run_console() {
  local out=$STACK_DIR/logs/console.out
  if ! command -v node >/dev/null || [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ] ||
    [ ! -d tests/browser/node_modules/puppeteer-core ]; then
    say "the console in chromium: skipped (node, chromium or tests/browser's npm install is missing; scripts/deps.sh)"
    return
  fi
  if CONSOLE_URL=http://localhost:${PORT[query-api]} BROWSER_SHOTS_DIR=$STACK_DIR/logs/console-shots \
    PUPPETEER_SKIP_DOWNLOAD=1 node --test --test-timeout=300000 tests/browser/test_place_order.mjs \
    >"$out" 2>&1; then
    say "the console from query-api's container, in chromium: an order placed through its form reached its end state on its page"
  else
    tail -n 40 "$out" >&2
    fail "the console from query-api's container (tests/browser/test_place_order.mjs; $out)"
  fi
}

# ---- stop -------------------------------------------------------------------

stop_containers() {
  local svc ctr bound_ms grace t0 elapsed code
  bound_ms=$(grep -E '^DETA_SHUTDOWN_TIMEOUT_MS=' "$STACK_DIR/env-order-service" | cut -d= -f2)
  [[ "$bound_ms" =~ ^[0-9]+$ ]] || die "compose sets no DETA_SHUTDOWN_TIMEOUT_MS"
  grace=$(((bound_ms + 999) / 1000 + 2))
  for svc in "${SERVICES[@]}"; do
    ctr=$(container "$svc")
    t0=$(ms_now)
    podman stop -t "$grace" "$ctr" >/dev/null
    elapsed=$(($(ms_now) - t0))
    code=$(podman inspect --format '{{.State.ExitCode}}' "$ctr")
    if [ "$code" = 0 ]; then
      say "$svc: SIGTERM, exit 0 after $elapsed ms (bound ${bound_ms} ms, grace ${grace} s)"
    else
      fail "$svc: exit status $code after SIGTERM ($elapsed ms; grace ${grace} s)"
    fi
  done
}

# ---- main -------------------------------------------------------------------

report_sizes() {
  local svc
  printf '\n%-45s %10s\n' image "size (MB)"
  for svc in "${SERVICES[@]}"; do
    printf '%-45s %10s\n' "${IMAGE[$svc]}" "$(awk -v b="${SIZE[$svc]}" 'BEGIN {printf "%.1f", b / 1e6}')"
  done
}

main() {
  local svc k=0 t0
  if [ "$(id -u)" -ne 0 ]; then
    # podman (rootful: rootless needs subuids and a cgroup delegation we cannot
    # count on) and debootstrap need root.
    command -v sudo >/dev/null || die "needs root (podman, debootstrap), and there is no sudo"
    exec sudo env BUILD_DIR="$BUILD_DIR" IMAGES_STACK_DIR="$STACK_DIR" IMAGES_PORT_BASE="$PORT_BASE" \
      IMAGES_ORDERS="$ORDERS" IMAGES_KEEP="$KEEP" PODMAN_RUNTIME="${PODMAN_RUNTIME:-}" \
      BASE_MAX_AGE_DAYS="${BASE_MAX_AGE_DAYS:-7}" "$0" "$@"
  fi
  preflight
  scripts/stack.sh down >/dev/null 2>&1 || true
  scripts/stack.sh clean >/dev/null
  mkdir -p "$STACK_DIR/logs"
  step "the debian:12 base"
  "$HERE/base-image.sh"
  IMAGES_BEFORE=$(podman images -a -q --no-trunc)
  trap cleanup EXIT
  step "building the five images as compose does (podman, runtime ${PODMAN_RUNTIME:-default})"
  for svc in "${SERVICES[@]}"; do
    t0=$(date +%s)
    build_image "$svc"
    PORT[$svc]=$((PORT_BASE + k))
    k=$((k + 1))
    say "$svc: ${IMAGE[$svc]} built in $(($(date +%s) - t0)) s"
  done
  step "checking each image"
  for svc in "${SERVICES[@]}"; do check_image "$svc"; done
  report_sizes
  step "Postgres, Redis and the broker (stack.sh, $STACK_DIR)"
  start_infra
  step "running the five containers"
  published_addresses
  for svc in "${SERVICES[@]}"; do run_container "$svc"; done
  for svc in "${SERVICES[@]}"; do await_healthy "$svc"; done
  step "a saga through the containers"
  run_saga
  step "the web console from query-api's container"
  run_console
  step "SIGTERM to each container"
  stop_containers
  if [ "$FAILS" -gt 0 ]; then
    printf '\n==> images: %d check(s) FAILED\n' "$FAILS" >&2
    exit 1
  fi
  printf '\n==> images: all passed\n'
}

main "$@"
