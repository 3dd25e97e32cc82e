#!/usr/bin/env bash
# deps.sh - install the Debian packages this project builds and runs with.
#
# Idempotent and quiet when there is nothing to do: every package is checked
# with dpkg first, and apt is touched only for what is missing: apt-get update
# (skipped when the package lists were refreshed in the last 30 minutes, e.g.
# by .ci/run just before), then apt-get install -y. Runs apt as root directly,
# through sudo when the caller is not root and sudo exists, and otherwise stops
# with the list of what is missing so that someone with root can install it.
# Then the npm packages of the Node tests: `npm ci` in tests/browser and
# tests/openapi, each skipped when its package-lock.json has not changed since
# the last install.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  librdkafka-dev libpq-dev postgresql redis-server libhiredis-dev
  libmicrohttpd-dev libjansson-dev uuid-dev libcmocka-dev libcurl4-openssl-dev
  kcat curl gnuplot-nox linux-perf python3 python3-yaml openssl
  podman runc debootstrap
)
# What only tests use, kept apart from PACKAGES: the image's build stage
# (infra/docker/Dockerfile) installs PACKAGES' -dev packages, which
# tests/deploy/check_dockerfile.py compares with PACKAGES, and none of these.
# python3-cassandra: the CQL codec's conformance test (tests/conformance) and the
# check of the model CQL server (tests/support/test_cql_model_server.py);
# clang and libclang-rt-14-dev (libFuzzer's runtime): tests/fuzz/run.sh;
# chromium and nodejs: the web console's browser tests (tests/browser), which
# drive Debian's chromium with puppeteer-core from npm (it never downloads a browser).
# prometheus: promtool for the alert rules' tests (tests/observability), and the
# local stack's Prometheus (stack.sh, STACK_OBSERVE=on). Where systemd runs, the package
# also starts a Prometheus of its own on port 9090: stack.sh's takes the next free port.
TEST_PACKAGES=(python3-cassandra clang libclang-rt-14-dev chromium nodejs prometheus)

# Prints the packages that are not installed, one per line.
missing_packages() {
  local p
  for p in "${PACKAGES[@]}" "${TEST_PACKAGES[@]}"; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
      echo "$p"
    fi
  done
}

# npm is checked by its command, not its package: a nodejs from elsewhere (such
# as NodeSource's) brings npm itself and conflicts with Debian's npm package.
missing_npm() {
  command -v npm >/dev/null 2>&1 || echo npm
}

# The npm packages of the tests written for Node (each folder's package-lock.json:
# tests/browser drives chromium, tests/openapi validates the OpenAPI documents),
# installed with `npm ci` only when the lock file changed since the last install,
# so that a machine that has them needs no network. PUPPETEER_SKIP_DOWNLOAD:
# puppeteer never fetches a browser of its own (puppeteer-core does not anyway).
node_test_modules() {
  local dir stamp
  for dir in tests/browser tests/openapi; do
    stamp=$dir/node_modules/.deta-lock
    if [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; then
      continue
    fi
    echo "deps.sh: npm ci in $dir"
    (cd "$dir" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund)
    cp "$dir/package-lock.json" "$stamp"
  done
}

# True when apt's package lists exist and are less than 30 minutes old.
apt_lists_fresh() {
  [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -30 -print -quit 2>/dev/null)" ]
}

# Runs its arguments as root: directly, or through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  else
    sudo "$@"
  fi
}

main() {
  if ! command -v dpkg >/dev/null 2>&1; then
    echo "deps.sh: this script needs a Debian-based system (dpkg/apt-get)" >&2
    exit 1
  fi
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  local missing
  mapfile -t missing < <(missing_packages; missing_npm)
  if [ "${#missing[@]}" -eq 0 ]; then
    echo "deps.sh: all $((${#PACKAGES[@]} + ${#TEST_PACKAGES[@]} + 1)) packages already installed"
    node_test_modules
    return 0
  fi
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "deps.sh: missing packages: ${missing[*]}" >&2
    echo "deps.sh: not root and no sudo: as root run: apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "deps.sh: installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt_lists_fresh; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
  node_test_modules
}

main "$@"
