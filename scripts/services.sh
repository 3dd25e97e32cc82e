# services.sh - the table of the services (services/services.tsv) for the shell
# scripts; sourced, never run.
#
#   . scripts/services.sh && deta_services_load
#
# deta_services_load sets SERVICES (the names, in the table's order: the start
# order) and DATABASES (each one's database, same order); service_default_port
# <name> prints a service's HTTP port from the table (nothing for another name).
# Design: one reader of the table for every script (stack.sh, demo.sh, bench.sh,
# bench/report.sh, tests/deploy/images.sh), so that none writes the list again;
# a malformed row stops the caller, as it stops the build (services/services.cmake).

DETA_SERVICES_TSV=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/services/services.tsv

# The rows of the table: "name port database", comment lines left out.
deta_services_rows() {
  awk -F'\t' -v file="$DETA_SERVICES_TSV" '
    /^#/ || /^[[:space:]]*$/ { next }
    NF != 3 || $1 !~ /^[a-z][a-z-]*$/ || $2 !~ /^[1-9][0-9]*$/ || $3 !~ /^[a-z_]+$/ {
      printf "%s: line %d is not service<TAB>port<TAB>database\n", file, NR > "/dev/stderr"
      exit 1
    }
    { print $1, $2, $3 }' "$DETA_SERVICES_TSV"
}

deta_services_load() {
  local rows name port db
  rows=$(deta_services_rows) || return 1
  SERVICES=()
  DATABASES=()
  while read -r name port db; do
    SERVICES+=("$name")
    DATABASES+=("$db")
  done <<<"$rows"
}

service_default_port() {
  local name port db
  while read -r name port db; do
    if [ "$name" = "$1" ]; then echo "$port"; fi
  done < <(deta_services_rows)
}
