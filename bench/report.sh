#!/usr/bin/env bash
# report.sh - turns one benchmark run's raw files into report.md and
# latency.png, in the same folder.
#
#   bench/report.sh bench/results/<run>
#
# scripts/bench.sh calls it at the end of a run; it can be run again on any
# run folder (after changing this script, say). It reads only that folder:
# meta.env, result.env, ceilings.env, startup.csv, steps.csv (one row per
# step of the ramps), latency.summary and latency-orders.csv, hops.csv,
# events-per-order.txt, cpu-before.txt / cpu-after.txt, commits-before.csv /
# commits-after.csv, memory.csv, pg-top.txt, streams.txt; for the scaling model
# pg-backends-before/after.txt, wal-before/after.txt, topics.csv,
# subscriptions.csv, and the two-instance run's scaled.summary, scaled-cpu-*,
# scaled-commits-* and scaled-idle-*. A file that is missing (a phase that was
# skipped) leaves its section saying so: no figure is printed that was not measured. The plot is drawn with
# gnuplot's pngcairo terminal (package gnuplot-nox).
set -euo pipefail

RUN=${1:?usage: bench/report.sh <run folder>}
# SERVICES: services/services.tsv.
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/services.sh"
deta_services_load
[ -d "$RUN" ] || { echo "report: no folder $RUN" >&2; exit 1; }
OUT=$RUN/report.md
TICKS=$(getconf CLK_TCK)

kv() { [ -r "$1" ] && sed -n "s/^$2=//p" "$1" | head -n 1 || true; }
calc() { awk "BEGIN { print ($1) }"; }
meta() { kv "$RUN/meta.env" "$1"; }
res() { kv "$RUN/result.env" "$1"; }
ceil() { kv "$RUN/ceilings.env" "$1"; }
lat() { kv "$RUN/latency.summary" "$1"; }
mark() { if [ "$(calc "$1")" = 1 ]; then echo "met"; else echo "**not met**"; fi; }
have() { [ -s "$RUN/$1" ]; }
# verdict <value> <condition on v, its one letter v>: met / not met, or "not measured" without a value.
verdict() {
  if [ -z "$1" ]; then echo "not measured"; else mark "${2//v/$1}"; fi
}
# A value, or the words "not measured".
shown() { if [ -n "$1" ]; then echo "$1"; else echo "not measured"; fi; }

MAX=$(res max_sustained)
GMAX=$(res gateway_max_sustained)
HALF=$(res latency_rate)
TPS=$(ceil pgbench_tps)
BROKER=$(ceil broker_produce_to_consume_per_s)
BROKER_FAST=$(ceil broker_fast_produce_to_consume_per_s)
EVENTS=$(cat "$RUN/events-per-order.txt" 2>/dev/null || echo "")
MAX=${MAX:-0}
GMAX=${GMAX:-0}
TOP_RATE=$(meta rates | tr ' ' '\n' | sort -g | tail -n 1)
BOUND=$(res bound_ms)
BOUND=${BOUND:-$(meta p99_bound_ms)}

# ---- derived figures ----------------------------------------------------------

# CPU seconds per 1000 orders of the latency run, per part: "part seconds share".
# cpu_per_1000 [file prefix orders loadgen_cpu_s]: the latency run's by default.
cpu_per_1000() {
  local p=${1:-} orders=${2:-$(lat accepted)} lgs=${3:-$(lat loadgen_cpu_s)}
  [ -n "$orders" ] && [ "$orders" -gt 0 ] 2>/dev/null && have "${p}cpu-before.txt" &&
    have "${p}cpu-after.txt" || return 0
  awk -v ticks="$TICKS" -v orders="$orders" -v lg="$lgs" '
    NR == FNR { before[$1] = $2; next }
    { d[$1] = ($2 - before[$1]) / ticks; total += d[$1]; order[++n] = $1 }
    END {
      d["loadgen (bench)"] = lg; order[++n] = "loadgen (bench)"; total += lg
      for (i = 1; i <= n; i++)
        printf "%s %.3f %.0f\n", order[i], d[order[i]] * 1000 / orders, 100 * d[order[i]] / total
      printf "total %.3f 100\n", total * 1000 / orders
    }' "$RUN/${p}cpu-before.txt" "$RUN/${p}cpu-after.txt"
}

# The CPU totals three ways, seconds per 1000 orders: "all no_loadgen system", where
# all is every part and the generator, no_loadgen leaves the generator out, and
# system leaves the mock broker out too (what a deployment on a real Kafka would
# spend on these machines). cpu_totals <file prefix> <orders> <loadgen cpu s>;
# nothing when the files are missing.
cpu_totals() {
  local p=$1 orders=$2 lg=$3
  [ -n "$orders" ] && [ "$orders" -gt 0 ] 2>/dev/null && have "${p}cpu-before.txt" &&
    have "${p}cpu-after.txt" || return 0
  awk -v ticks="$TICKS" -v orders="$orders" -v lg="${lg:-}" '
    NR == FNR { before[$1] = $2; next }
    { d = ($2 - before[$1]) / ticks; all += d; if ($1 != "broker") sys += d }
    END {
      if (lg == "") printf "- %.3f %.3f\n", all * 1000 / orders, sys * 1000 / orders
      else printf "%.3f %.3f %.3f\n", (all + lg) * 1000 / orders, all * 1000 / orders, sys * 1000 / orders
    }' "$RUN/${p}cpu-before.txt" "$RUN/${p}cpu-after.txt"
}

# The system's own commits per order: commits_total's less the load generator's reads,
# its list requests to query-api (one read-only transaction each, in delivery_query):
# own_commits <commits per order>; empty when either is not known.
# The generator's list requests per order; empty when not known.
polls_per_order() {
  local polls accepted
  polls=$(lat poll_requests)
  accepted=$(lat accepted)
  [ -n "$polls" ] && [ "${accepted:-0}" -gt 0 ] 2>/dev/null || return 0
  calc "$polls / $accepted"
}
own_commits() {
  local total=$1 per
  per=$(polls_per_order)
  [ -n "$total" ] && [ -n "$per" ] || return 0
  calc "sprintf(\"%.2f\", $total - $per)"
}

# Committed transactions per order across the five databases: commits_total <prefix> <orders>.
commits_total() {
  local p=$1 orders=$2
  [ -n "$orders" ] && [ "$orders" -gt 0 ] 2>/dev/null && have "${p}commits-before.csv" &&
    have "${p}commits-after.csv" || return 0
  awk -F, -v orders="$orders" 'NR == FNR { b[$1] = $2; next } { t += $2 - b[$1] }
    END { printf "%.2f\n", t / orders }' "$RUN/${p}commits-before.csv" "$RUN/${p}commits-after.csv"
}

# Postgres's CPU of the latency run by database, seconds per 1000 orders:
# "database seconds". Each backend's ticks (pg-backends-*.txt: pid, database,
# ticks, and since 12-07 backend_type; a backend that started during the run
# counts from zero); "(shared)" is
# the rest of Postgres's CPU: background processes (WAL writer, checkpointer,
# autovacuum) and the backends that ended during the run. With the types, one
# more line, "(walsenders) seconds count": the outbox relays' walsenders, whose
# CPU is within their databases' lines already (a sum leaves it out).
pg_cpu_by_db() {
  local orders
  orders=$(lat accepted)
  [ -n "$orders" ] && [ "$orders" -gt 0 ] 2>/dev/null && have pg-backends-before.txt &&
    have pg-backends-after.txt && have cpu-before.txt && have cpu-after.txt || return 0
  awk -v ticks="$TICKS" -v orders="$orders" '
    FILENAME ~ /cpu-before/ { if ($1 == "postgres") pb = $2; next }
    FILENAME ~ /cpu-after/ { if ($1 == "postgres") pa = $2; next }
    FILENAME ~ /backends-before/ { b[$1] = $3; next }
    { d = $3 - ($1 in b ? b[$1] : 0); if (d < 0) d = 0; db[$2] += d; sum += d }
    $4 == "walsender" { ws += d; nws++ }
    END {
      for (n in db) printf "%s %.3f\n", n, db[n] / ticks * 1000 / orders
      if (nws) printf "(walsenders) %.3f %d\n", ws / ticks * 1000 / orders, nws
      rest = pa - pb - sum
      if (rest < 0) print "(shared) -"; else printf "(shared) %.3f\n", rest / ticks * 1000 / orders
    }' "$RUN/cpu-before.txt" "$RUN/cpu-after.txt" "$RUN/pg-backends-before.txt" \
    "$RUN/pg-backends-after.txt" | sort
}

# WAL bytes per order over the latency run (pg_stat_wal, the whole cluster).
wal_per_order() {
  local orders
  orders=$(lat accepted)
  [ -n "$orders" ] && [ "$orders" -gt 0 ] 2>/dev/null && have wal-before.txt && have wal-after.txt ||
    return 0
  awk -v orders="$orders" 'NR == FNR { b = $1; br = $2; bf = $3; next }
    { printf "%.0f %.2f %.3f\n", ($1 - b) / orders, ($2 - br) / orders, ($3 - bf) / orders }' \
    "$RUN/wal-before.txt" "$RUN/wal-after.txt"
}

# CPU milliseconds per second of every part while idle: "part ms_per_s".
idle_cpu() {
  local p=${1:-}
  have "${p}idle-before.txt" && have "${p}idle-after.txt" || return 0
  awk -v ticks="$TICKS" -v secs="$(res idle_s)" '
    NR == FNR { before[$1] = $2; next }
    { printf "%s %.1f\n", $1, ($2 - before[$1]) / ticks * 1000 / (secs > 0 ? secs : 1) }' \
    "$RUN/${p}idle-before.txt" "$RUN/${p}idle-after.txt"
}

# Median and max of healthy_ms per service: "service median max first_answer_median".
startup_figures() {
  have startup.csv || return 0
  local svc
  for svc in $(tail -n +2 "$RUN/startup.csv" | cut -d, -f1 | uniq); do
    awk -F, -v s="$svc" '
      $1 == s { h[++n] = $4; a[n] = $3 }
      function median(v, n,   i, j, t) {
        for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j] < v[j - 1]; j--) {
          t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      }
      END { mx = 0; for (i = 1; i <= n; i++) if (h[i] > mx) mx = h[i]
            printf "%s %.1f %.1f %.1f\n", s, median(h, n), mx, median(a, n) }' "$RUN/startup.csv"
  done
}

# ---- sections -----------------------------------------------------------------------

header() {
  cat <<EOF
# Benchmark report: $(meta date)

Made by \`$(meta command)\` (scripts/bench.sh) at commit \`$(meta commit)\`$( [ "$(meta dirty)" = yes ] && echo ' with uncommitted changes'),
in $(meta duration_s) s, on $(meta cores) cores ($(meta cpu)), $(meta memory_mb) MB of memory.
$( [ "$(res tracing)" = 1 ] && echo 'Tracing was on at 100% sampling (`BENCH_TRACING=1`: every span exported over OTLP/HTTP to a receiver on this machine).' || echo 'Tracing was off (`BENCH_TRACING=1` turns it on; docs/observability.md#traces).')
Everything ran on this one machine: the five services, Postgres, Redis, the local broker
(librdkafka's mock cluster) and the load generator. Load average before the run
$(meta load_before), after it $(meta load_after): anything well above zero before the
run means other work shared the machine and the figures are lower than it can do.
What each figure means and how it is measured: [bench/README.md](../../README.md).

EOF
}

# "N orders/s", or "at least N" when N is the ramp's top rate (nothing broke).
rate_text() {
  if [ -n "$TOP_RATE" ] && [ "$(calc "$1 >= $TOP_RATE")" = 1 ]; then
    echo "at least $1 orders/s (the ramp's top rate did not break down: raise BENCH_RATES)"
  else
    echo "$1 orders/s"
  fi
}

# The two-instance run against the latency run: "one two percent", CPU s per 1000
# orders of the system alone (no broker, no generator); nothing when not measured.
scale_figures() {
  local one two
  have scaled.summary || return 0
  one=$(cpu_totals "" "$(lat accepted)" "$(lat loadgen_cpu_s)" | cut -d' ' -f3)
  two=$(cpu_totals scaled- "$(kv "$RUN/scaled.summary" accepted)" \
    "$(kv "$RUN/scaled.summary" loadgen_cpu_s)" | cut -d' ' -f3)
  [ -n "$one" ] && [ -n "$two" ] || return 0
  echo "$one $two $(calc "sprintf(\"%+.1f\", 100 * ($two - $one) / $one)")"
}

summary() {
  local saga99 rss_max start_max gw_note gw18 all nolg sys commits own sc margin max_text
  saga99=$(lat saga_p99_ms)
  rss_max=$(awk -F, 'NR > 1 && $1 ~ /service|query-api/ { if ($2 > m) m = $2 } END { if (m) printf "%.1f", m / 1024 }' \
    "$RUN/memory.csv" 2>/dev/null || echo "")
  start_max=$(startup_figures | awk '{ if ($3 > m) m = $3 } END { if (NR) printf "%.0f", m }')
  if [ "$(calc "$GMAX >= $MAX && $MAX > 0")" = 1 ]; then
    gw_note="does not cap throughput"
    gw18=met
  else
    gw_note="**caps throughput**"
    gw18="**not met**"
  fi
  local gw_value
  gw_value="$(rate_text "$GMAX"): $gw_note"
  grep -q '^gateway,' "$RUN/steps.csv" 2>/dev/null || { gw_value="not measured in this run"; gw18="not measured"; }
  read -r all nolg sys <<<"$(cpu_totals "" "$(lat accepted)" "$(lat loadgen_cpu_s)")"
  commits=$(commits_total "" "$(lat accepted)")
  own=$(own_commits "$commits")
  sc=$(scale_figures)
  margin=$(meta scale_margin_pct)
  max_text=$(rate_text "$MAX")
  [ "$MAX" != 0 ] || max_text="none sustained"
  cat <<EOF
## Summary

Issue #18's targets beside issue #6's. The CPU target is checked against **the system
alone**: the five services, Postgres and Redis, without the local mock broker and the
load generator, i.e. what a deployment on a real Kafka would spend on these machines
(the all-in figure is beside it). The commits target likewise counts the system's own
transactions: the generator's list requests (one read-only transaction each) are taken
out, and the count with them is beside it.

| figure | value | target (issue #6) | target (issue #18) |
|---|---|---|---|
| saga latency on an idle system ($(res baseline_rate) orders/s): p50 / p99 | $(res baseline_saga_p50_ms) / $(res baseline_saga_p99_ms) ms | | |
| sustained throughput (every order to DELIVERY_ASSIGNED, saga p99 <= $BOUND ms) | **$max_text** | | >= 400 orders/s: $(mark "$MAX >= 400") |
| ... as a ratio to pgbench one-row insert TPS ($TPS TPS, $(ceil pgbench_clients) clients) | $(calc "$TPS > 0 ? sprintf(\"%.3f (%.1f %%)\", $MAX / $TPS, 100 * $MAX / $TPS) : \"n/a\"") | >= 25 %: $(mark "$TPS > 0 && $MAX / $TPS >= 0.25") | |
| ... as a ratio to the broker's raw produce-to-consume rate ($BROKER msg/s) | $(calc "$BROKER > 0 ? sprintf(\"%.5f\", $MAX / $BROKER) : \"n/a\"") orders per raw message; with ${EVENTS:-?} messages per order, the system moved $(calc "sprintf(\"%.0f\", $MAX * ${EVENTS:-0})") msg/s, $(calc "$BROKER > 0 ? sprintf(\"%.1f %%\", 100 * $MAX * ${EVENTS:-0} / $BROKER) : \"n/a\"") of the raw rate | | |
| committed transactions per order, the five databases together, the system's own (by database: "Postgres during the latency run") | **$(shown "$own")** (with the generator's $(p=$(polls_per_order); if [ -n "$p" ]; then calc "sprintf(\"%.2f\", $p)"; else shown ""; fi) list requests: $(shown "$commits")) | | <= 8, the system's own: $(verdict "$own" "v <= 8") |
| CPU s / 1000 orders, the system alone (services, Postgres, Redis; latency run) | **$(shown "$sys")**$( [ -n "$all" ] && [ "$all" != - ] && echo " (all-in $all, with the mock broker and the generator; without the generator $nolg)") | | <= 7, the system alone: $(verdict "$sys" "v <= 7") |
| intake latency at $HALF orders/s (half the maximum): p50 / p95 / p99 / max | $(lat intake_p50_ms) / $(lat intake_p95_ms) / $(lat intake_p99_ms) / $(lat intake_max_ms) ms | | |
| saga latency at $HALF orders/s: p50 / p95 / p99 / max | $(lat saga_p50_ms) / $(lat saga_p95_ms) / **$(shown "$saga99")** / $(lat saga_max_ms) ms | p99 < 250 ms: $(verdict "$saga99" "v < 250") | p99 < 250 ms: $(verdict "$saga99" "v < 250") |
| sustained throughput with a $(meta gateway_ms) ms payment gateway | $gw_value | no cap | no cap: $gw18 |
| largest peak RSS of a service | $(shown "$rss_max") MB | < 20 MB: $(verdict "$rss_max" "v < 20") | < 20 MB: $(verdict "$rss_max" "v < 20") |
| slowest service from launch to healthy (worst of $(tail -n +2 "$RUN/startup.csv" 2>/dev/null | cut -d, -f2 | sort -n | tail -n 1) starts) | $(shown "$start_max") ms | < 200 ms: $(verdict "$start_max" "v < 200") | < 200 ms: $(verdict "$start_max" "v < 200") |
| the scaling model's claim: CPU s / 1000 orders of the system alone with $(scaled_words) against one instance each, same rate | $(scale_value "$sc") | | growth <= $margin %: $(if [ -n "$sc" ]; then mark "$(cut -d' ' -f3 <<<"$sc") <= $margin"; else echo "not measured"; fi) |

![latency against offered rate](latency.png)

EOF
}

scale_value() {
  local o t pc
  if [ -z "$1" ]; then echo "not measured in this run"; return; fi
  read -r o t pc <<<"$1"
  echo "$o -> $t: **$pc %**"
}

# "two instances of every service", or the instances of the scaled run as given.
scaled_words() {
  local given
  given=$(res scale_instances)
  if [ -z "$given" ]; then echo "more instances"; return; fi
  if [ "$(tr ' ' '\n' <<<"$given" | grep -c '=2$')" = "${#SERVICES[@]}" ]; then
    echo "two instances of every service"
  else
    echo "$given"
  fi
}

steps_table() {
  local phase=$1
  echo "| offered /s | verdict | orders | errors | not ended | intake p50 / p99 ms | saga p50 / p95 / p99 / max ms | sagas ended /s | why |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|---|"
  awk -F, -v p="$phase" 'NR > 1 && $1 == p {
    i = index($0, "\""); reason = i ? substr($0, i + 1) : ""; gsub(/"/, "", reason)
    printf "| %s | %s | %s | %s | %s | %s / %s | %s / %s / %s / %s | %s | %s |\n",
      $2, (p == "baseline" ? "idle baseline" : $3 == 1 ? "sustained" : "broke down"), $4, $6, $9, $10, $12, $14, $15, $16, $17, $18, reason
  }' "$RUN/steps.csv" | sort -t'|' -k2,2n
}

# With BENCH_FRESH_BROKER=1 (meta fresh_broker; runs before it had none) every
# ramp step and measured run had a new local broker (scripts/bench.sh's fresh_broker).
fresh_note() {
  [ "$(meta fresh_broker)" = 1 ] || return 0
  printf ', on a new local broker with the services started again against it and\n'
  printf 'a warm-up (the mock'"'"'s cost per message grows with every message it holds:\n'
  printf '[bench/README.md](../../README.md#a-new-broker-for-each-step))'
}
fresh_rss_note() {
  [ "$(meta fresh_broker)" = 1 ] || return 0
  printf ' (each step started new processes: the peak is the largest of them)'
}

ramp_section() {
  cat <<EOF
## The rate ramp

Each step offers a fixed rate for $(meta step_s) s (open loop) and waits up to
$(meta drain_s) s more for every saga; the next step starts once the system is idle
again$(fresh_note). A step is sustained when every order was accepted, every order reached
DELIVERY_ASSIGNED in the query-api within the drain time, and the saga's p99 was at
most $BOUND ms: the larger of $(meta p99_bound_ms) ms and $(meta p99_factor) times the
saga p99 of the idle baseline ($(res baseline_saga_p99_ms) ms at $(res baseline_rate) orders/s,
first row). Rates: $(meta rates), stopping at the first breakdown, then
$(meta refine) bisection(s). A broken step's saga figures count the orders that never
ended with the time they had waited at the deadline: they are lower bounds.

EOF
  steps_table baseline
  steps_table ramp | tail -n +3
  echo
}

latency_section() {
  cat <<EOF
## Latency at half the maximum rate

$HALF orders/s for $(meta latency_s) s: $(lat orders) orders, $(lat accepted) accepted,
$(lat ended_ok) at DELIVERY_ASSIGNED, $(lat incomplete) not ended. Latencies run from each
order's *intended* send instant, so a request that waited for a connection counts its wait.

| | p50 | p95 | p99 | max | mean |
|---|---:|---:|---:|---:|---:|
| intake (POST to 201) | $(lat intake_p50_ms) | $(lat intake_p95_ms) | $(lat intake_p99_ms) | $(lat intake_max_ms) | $(lat intake_mean_ms) |
| saga (POST to DELIVERY_ASSIGNED seen in the query-api) | $(lat saga_p50_ms) | $(lat saga_p95_ms) | $(lat saga_p99_ms) | $(lat saga_max_ms) | $(lat saga_mean_ms) |

The poller asked the query-api every $(lat poll_ms) ms per open window of
$(lat per_window) orders ($(lat poll_requests) list requests, $(lat poll_mean_ms) ms each on
average). Where the saga's time goes, from the instants the services recorded
(each event's occurredAt, and when the read model applied delivery.assigned; occurredAt
is cut to the millisecond, so a short hop can even show as slightly negative):

| hop | orders | p50 ms | p95 ms | p99 ms | max ms |
|---|---:|---:|---:|---:|---:|
EOF
  if have hops.csv; then
    awk -F, '{ printf "| %s | %s | %s | %s | %s | %s |\n", $2, $3, $4, $5, $6, $7 }' "$RUN/hops.csv"
  else
    echo "| (no data) | | | | | |"
  fi
  echo
}

services_section() {
  cat <<EOF
## Per service

CPU is user + system time from /proc over the latency run, from its first order until
every one of its orders was delivered (pick-up and delivery included), per 1000 orders
accepted. Idle CPU is the same measure over $(res idle_s) s with no order moving: the
background work (outbox relays, consumers' fetches, the delivery ticker), which is in
the per-order figures too and weighs more the lower the rate. Peak RSS is the largest VmHWM of the
service's processes up to the end of the latency run$(fresh_rss_note). Time to healthy runs
from the fork of the service's process (stack.sh's launcher) to its first 200 on
/actuator/health, polled every 5 ms; dependencies were up.

| part | CPU s / 1000 orders | share of CPU | idle CPU ms/s | peak RSS MB | RSS at the end MB | to healthy: median / max ms | first answer ms |
|---|---:|---:|---:|---:|---:|---:|---:|
EOF
  local cpu start idle
  cpu=$(cpu_per_1000)
  start=$(startup_figures)
  idle=$(idle_cpu)
  local part
  for part in "${SERVICES[@]}" broker redis postgres "loadgen (bench)" total; do
    local c s m
    c=$(awk -v p="$part" '{ name = $1; for (i = 2; i < NF - 1; i++) name = name " " $i
        if (name == p) print $(NF - 1), $NF "%" }' <<<"$cpu")
    s=$(awk -v p="$part" '$1 == p { print $2 " / " $3, $4 }' <<<"$start")
    m=$(awk -F, -v p="$part" '$1 == p { printf "%.1f %.1f", $2 / 1024, $3 / 1024 }' \
      "$RUN/memory.csv" 2>/dev/null || true)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$part" "$(cut -d' ' -f1 <<<"$c")" \
      "$(cut -d' ' -f2 <<<"$c")" "$(awk -v p="$part" '$1 == p { print $2 }' <<<"$idle")" \
      "$(cut -d' ' -f1 <<<"$m")" "$(cut -d' ' -f2 <<<"$m")" \
      "$(cut -d' ' -f1-3 <<<"$s")" "$(cut -d' ' -f4 <<<"$s")"
  done
  local all nolg sys
  read -r all nolg sys <<<"$(cpu_totals "" "$(lat accepted)" "$(lat loadgen_cpu_s)")"
  if [ -n "$all" ] && [ "$all" != - ]; then
    echo "| total without the generator | $nolg | $(calc "sprintf(\"%.0f%%\", 100 * $nolg / $all)") | | | | | |"
    echo "| **the system alone** (without the mock broker and the generator) | **$sys** | $(calc "sprintf(\"%.0f%%\", 100 * $sys / $all)") | | | | | |"
  fi
  echo
  echo "The totals three ways: *total* is every part and the generator (all-in); without the"
  echo "generator; and **the system alone**, without the local mock broker too: what a deployment"
  echo "on a real Kafka would spend on these machines (a real broker's cost is another machine's)."
  echo "Issue #18's target of 7 CPU s / 1000 orders is checked against the system alone."
  echo "Postgres is every backend together (shared memory makes its RSS meaningless here)."
  echo "The measurement is in these figures too: the generator's own CPU is its row, and its"
  echo "$(calc "sprintf(\"%.1f\", $(lat poll_requests) / ($(lat accepted) > 0 ? $(lat accepted) : 1))") list requests per order are part of query-api's and Postgres's."
  echo
}

postgres_section() {
  echo "## Postgres during the latency run"
  echo
  if have commits-before.csv && have commits-after.csv; then
    local bydb
    bydb=$(pg_cpu_by_db)
    echo "Transactions committed per order, by database (pg_stat_database's xact_commit, read-only"
    echo "transactions included), and Postgres's CPU by database: each backend's own CPU time"
    echo "(the backends pg_stat_activity names a database of); *(shared)* is the rest of Postgres's"
    echo "CPU, its background processes (WAL writer, checkpointer, autovacuum) and backends that"
    echo "ended during the run:"
    echo
    echo "| database | commits per order | Postgres CPU s / 1000 orders |"
    echo "|---|---:|---:|"
    awk -F, -v orders="$(lat accepted)" 'NR == FNR { b[$1] = $2; next }
      { printf "%s %.2f\n", $1, ($2 - b[$1]) / (orders > 0 ? orders : 1) }' \
      "$RUN/commits-before.csv" "$RUN/commits-after.csv" |
      while read -r db c; do
        echo "| $db | $c | $(shown "$(awk -v d="$db" '$1 == d { print $2 }' <<<"$bydb")") |"
      done
    awk '$1 == "(walsenders)" { print "| ... of which the outbox relays'"'"' " $3 " walsenders (within the database rows above; each decodes the whole server'"'"'s WAL and is woken by each of its flushes) | | " $2 " |" }' <<<"$bydb"
    [ -z "$bydb" ] || echo "| (shared) | | $(awk '$1 == "(shared)" { print ($2 == "-" ? "none left over (the backends summed to Postgres'"'"'s whole CPU, within the readings'"'"' resolution)" : $2) }' <<<"$bydb") |"
    echo "| **all five** | **$(commits_total "" "$(lat accepted)")** | $(shown "$(awk '$1 != "(walsenders)" { t += $2; n++ } END { if (n) printf "%.3f", t }' <<<"$bydb")") |"
    echo "| the system's own (all five less the generator's $(lat poll_requests) list requests, each a read-only transaction in delivery_query) | **$(own_commits "$(commits_total "" "$(lat accepted)")")** | |"
    echo
    local wal
    wal=$(wal_per_order)
    if [ -n "$wal" ]; then
      read -r wb wr wf <<<"$wal"
      echo "WAL written per order (pg_stat_wal over the latency run, the whole cluster: all five"
      echo "databases, the benchmark's own reads and background work included): $wb bytes in $wr"
      echo "records, $wf full-page images."
    else
      echo "WAL per order: not measured in this run (no pg_stat_wal readings)."
    fi
    echo
  fi
  if have pg-top.txt; then
    echo "The statements that took the most time (pg_stat_statements: planning and execution"
    echo "inside Postgres; not the protocol, not the commits' WAL flushes, which is why these"
    echo "add up to much less than Postgres's CPU above):"
    echo
    echo "| database | calls | calls per order | exec ms | mean exec ms | plan ms | statement |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    awk -F'|' -v orders="$(lat accepted)" '{
      gsub(/`/, "", $6)
      printf "| %s | %s | %.2f | %s | %s | %s | `%s` |\n", $1, $2, $2 / (orders > 0 ? orders : 1), $3, $4, $5, $6 }' \
      "$RUN/pg-top.txt"
    echo
  fi
}

# Where the CPU went at the highest sustained rate (perf), and what the commits
# per order say about the pgbench ratio.
profile_section() {
  echo "## Where the CPU goes at the highest sustained rate"
  echo
  if ! have profile.csv; then
    echo "No profile in this run (perf, package linux-perf, was missing or not allowed)."
    echo
    return
  fi
  echo "perf sampled every CPU for $(meta profile_s) s while the generator offered $MAX orders/s (no"
  echo "call graphs: each sample is charged to the part whose thread ran, in user space or in"
  echo "the kernel). Shares of all samples, idle included:"
  echo
  echo "| part | user % | kernel % | total % | share of the system alone % |"
  echo "|---|---:|---:|---:|---:|"
  awk -F, 'NR > 1 { printf "%s,%s,%s,%.1f\n", $1, $2, $3, $2 + $3 }' "$RUN/profile.csv" |
    sort -t, -k4 -rn | awk -F, -v sys="$(profile_system_sum)" '{
      s = ($1 == "idle" || $1 == "other" || $1 == "broker" || $1 == "loadgen" || sys <= 0) ? "" : sprintf("%.1f", 100 * $4 / sys)
      printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, s }'
  awk -F, 'NR > 1 && $1 != "idle" {
      t = $2 + $3; all += t
      if ($1 != "loadgen") nolg += t
      if ($1 != "loadgen" && $1 != "broker" && $1 != "other") sys += t }
    END {
      printf "| busy, all parts (other included) | | | %.1f | |\n", all
      printf "| busy without the generator | | | %.1f | |\n", nolg
      printf "| **busy, the system alone** (services, Postgres, Redis) | | | **%.1f** | 100 |\n", sys }' \
    "$RUN/profile.csv"
  echo
  echo "The busy shares three ways, as the CPU totals: all parts; without the generator; the"
  echo "system alone, without the mock broker, the generator and *other* (kernel threads and"
  echo "processes outside the stack, perf included). The last column is each part's share of"
  echo "the system alone: where a deployment on a real Kafka would spend its CPU."
  echo
  if have commits-before.csv && have commits-after.csv && [ "${TPS:-0}" -gt 0 ] 2>/dev/null; then
    local per_order
    per_order=$(awk -F, -v orders="$(lat accepted)" 'NR == FNR { b[$1] = $2; next }
      { t += $2 - b[$1] } END { printf "%.1f", t / (orders > 0 ? orders : 1) }' \
      "$RUN/commits-before.csv" "$RUN/commits-after.csv")
    echo "What bounds the ratio to pgbench: one order commits $per_order transactions across the five"
    echo "databases (the latency run's pg_stat_database, read-only ones included), where a pgbench"
    echo "transaction is one insert. Even if every one of them cost no more than pgbench's, and the"
    echo "services, the broker and HTTP cost nothing, the system could reach $TPS / $per_order ="
    echo "$(calc "sprintf(\"%.0f\", $TPS / $per_order)") orders/s, $(calc "sprintf(\"%.1f\", 100 / $per_order)") % of pgbench's rate. 25 % would need four orders per"
    echo "pgbench transaction: under one commit per order for five services that each own a"
    echo "database and a transactional outbox."
    echo
  fi
}

# What the cores allow: the latency run's CPU per order against the machine's cores,
# and what issue #18's 400 orders/s would leave the system alone once the mock
# broker and the generator have taken their share (their cost per order as measured).
cores_bound() {
  local all nolg sys cores
  read -r all nolg sys <<<"$(cpu_totals "" "$(lat accepted)" "$(lat loadgen_cpu_s)")"
  cores=$(meta cores)
  [ -n "$all" ] && [ "$all" != - ] && [ -n "$cores" ] || return 0
  local harness budget left
  harness=$(calc "sprintf(\"%.3f\", $all - $sys)")
  budget=$(calc "sprintf(\"%.3f\", $cores * 1000 / 400)")
  left=$(calc "sprintf(\"%.3f\", $budget - $harness)")
  local rate
  rate=$(lat rate)
  echo "What the cores allow: the latency run spent $all CPU s per 1000 orders in all, of which"
  echo "$harness were the mock broker's and the generator's. 400 orders/s on $cores cores allows $budget"
  echo "CPU s per 1000 orders in all. With the broker and the generator costing per order what"
  echo "they did here${rate:+ at $rate orders/s} (their idle share would weigh a little less at 400), that"
  echo "leaves $left for the system alone (services, Postgres, Redis), against its $sys in this"
  echo "run. The system alone at issue #18's 7 CPU s per 1000 orders would allow"
  echo "$(calc "sprintf(\"%.0f\", $cores * 1000 / (7 + $harness))") orders/s on these cores beside the mock broker: the two targets can hold together"
  echo "only with a broker that costs less than this one, or on more cores (a real Kafka runs on"
  echo "machines of its own)."
  echo
}

# ---- the scaling model ------------------------------------------------------------

# The model's inputs from this run, one fact a line: "cpu <part> <s per order>",
# "pg <database> <commits per order> <cpu s per order or ->", "pgshared <s>",
# "wal <bytes per order>", "topic <name> <messages per order> <bytes per message or -> <read>",
# "sub <group> <topic>".
model_facts() {
  local orders bydb
  orders=$(lat accepted)
  [ -n "$orders" ] && [ "$orders" -gt 0 ] 2>/dev/null || return 0
  if have cpu-before.txt && have cpu-after.txt; then
    awk -v ticks="$TICKS" -v orders="$orders" 'NR == FNR { b[$1] = $2; next }
      $1 != "broker" { printf "cpu %s %.6f\n", $1, ($2 - b[$1]) / ticks / orders }' \
      "$RUN/cpu-before.txt" "$RUN/cpu-after.txt"
  fi
  bydb=$(pg_cpu_by_db)
  if have commits-before.csv && have commits-after.csv; then
    awk -F, -v orders="$orders" 'NR == FNR { b[$1] = $2; next } { printf "%s %.4f\n", $1, ($2 - b[$1]) / orders }' \
      "$RUN/commits-before.csv" "$RUN/commits-after.csv" |
      while read -r db c; do
        echo "pg $db $c $(awk -v d="$db" '$1 == d { printf "%.6f", $2 / 1000; f = 1 } END { if (!f) print "-" }' <<<"$bydb")"
      done
  fi
  awk '$1 == "(shared)" && $2 != "-" { printf "pgshared %.6f\n", $2 / 1000 }' <<<"$bydb"
  wal_per_order | awk '{ print "wal", $1 }'
  if have topics.csv; then
    awk -F, -v orders="$orders" 'NR > 1 && $2 > 0 {
      printf "topic %s %.4f %s %s\n", $1, $2 / orders, ($3 > 0 ? sprintf("%.0f", ($4 + $5 + $6) / $3) : "-"), $3 }' \
      "$RUN/topics.csv"
  fi
  if have subscriptions.csv; then
    awk -F, 'NR > 1 && NF == 2 { print "sub", $1, $2 }' "$RUN/subscriptions.csv"
  fi
}

# The tables of the model at one rate, from model_facts.
model_tables() {
  local rate=$1 facts=$2
  awk -v R="$rate" -v H="$(meta model_headroom)" -v C="$(meta model_instance_cores)" \
    -v tps="${TPS:-0}" -v services="${SERVICES[*]}" '
    function ceil(x) { return x == int(x) ? x : int(x) + 1 }
    $1 == "cpu" { cpu[$2] = $3 }
    $1 == "pg" { pgn[++npg] = $2; commits[$2] = $3; pgcpu[$2] = $4 }
    $1 == "pgshared" { pgshared = $2; haveshared = 1 }
    $1 == "wal" { wal = $2; havewal = 1 }
    $1 == "topic" { tn[++nt] = $2; tmsg[$2] = $3; tbytes[$2] = $4; tread[$2] = $5 }
    $1 == "sub" { groups[$3] = groups[$3] (groups[$3] == "" ? "" : " ") $2; ngroups[$3]++; subgroup[$2, $3] = 1 }
    END {
      ns = split(services, svc, " ")
      printf "**Cores and instances at %d orders/s.** Cores = CPU s per order x %d, planned with x%s headroom; instances at %s core(s) each.\n\n", R, R, H, C
      print "| part | CPU s / 1000 orders (this run) | cores needed | cores planned | instances |"
      print "|---|---:|---:|---:|---:|"
      for (i = 1; i <= ns; i++) {
        s = svc[i]
        if (!(s in cpu)) { printf "| %s | not measured | | | |\n", s; continue }
        need = cpu[s] * R; plan = need * H; inst[s] = ceil(plan / C); if (inst[s] < 1) inst[s] = 1
        tot += need
        printf "| %s | %.3f | %.2f | %.2f | %d |\n", s, cpu[s] * 1000, need, plan, inst[s]
      }
      if ("redis" in cpu) {
        need = cpu["redis"] * R; tot += need
        printf "| redis | %.3f | %.2f | %.2f | %s |\n", cpu["redis"] * 1000, need, need * H, \
          (need * H > 1 ? "one core at most per process: shard the keys" : "1")
      }
      if ("postgres" in cpu) {
        need = cpu["postgres"] * R; tot += need
        printf "| postgres (every database; by database below) | %.3f | %.2f | %.2f | |\n", cpu["postgres"] * 1000, need, need * H
      }
      printf "| **the system alone** | | **%.2f** | **%.2f** | |\n\n", tot, tot * H
      if (npg) {
        printf "**Postgres at %d orders/s**, by database (each could be a server of its own):\n\n", R
        print "| database | commits per order | commits/s | CPU s / 1000 orders | cores needed | cores planned | commits/s as a multiple of this run'"'"'s pgbench TPS |"
        print "|---|---:|---:|---:|---:|---:|---:|"
        for (i = 1; i <= npg; i++) {
          d = pgn[i]; cs = commits[d] * R
          if (pgcpu[d] == "-") c1 = "not measured"; else c1 = sprintf("%.3f", pgcpu[d] * 1000)
          if (pgcpu[d] == "-") { cn = ""; cp = "" } else { cn = sprintf("%.2f", pgcpu[d] * R); cp = sprintf("%.2f", pgcpu[d] * R * H) }
          tc += cs
          printf "| %s | %.2f | %.0f | %s | %s | %s | %s |\n", d, commits[d], cs, c1, cn, cp, (tps > 0 ? sprintf("%.2f x", cs / tps) : "pgbench not measured")
        }
        if (haveshared) printf "| (shared: background, ended backends) | | | %.3f | %.2f | %.2f | |\n", pgshared * 1000, pgshared * R, pgshared * R * H
        printf "| **all five** | | **%.0f** | | | | %s |\n\n", tc, (tps > 0 ? sprintf("%.2f x", tc / tps) : "")
      }
      if (havewal) printf "WAL: %.1f MB/s (%.0f bytes per order, all databases together).\n\n", wal * R / 1e6, wal
      else print "WAL: not measured in this run.\n"
      if (!nt) { print "The broker: not measured in this run (no topic counts).\n"; exit }
      printf "**The broker at %d orders/s.** Bytes are key, value and headers (no Kafka framing, no compression, no replication). Partitions: at least the largest number of instances of a group reading the topic (each instance needs a partition of its own; the workers of one instance share its partitions, dispatching by key).\n\n", R
      print "| topic | messages per order | messages/s in | bytes per message | MB/s in | groups reading | MB/s out | partitions at least | messages/s per partition |"
      print "|---|---:|---:|---:|---:|---|---:|---:|---:|"
      for (i = 1; i <= nt; i++) {
        t = tn[i]; m = tmsg[t] * R; tm += m
        bytes = tbytes[t]; mb = (bytes == "-") ? "" : sprintf("%.2f", m * bytes / 1e6)
        mbo = (bytes == "-") ? "" : sprintf("%.2f", m * bytes * ngroups[t] / 1e6)
        if (bytes != "-") { tin += m * bytes; tout += m * bytes * ngroups[t] }
        p = 1; n = split(groups[t], g, " ")
        for (k = 1; k <= n; k++) if ((g[k] in inst) && inst[g[k]] > p) p = inst[g[k]]
        tmo += m * ngroups[t]
        printf "| %s | %.2f | %.0f | %s | %s | %s | %s | %d | %.0f |\n", t, tmsg[t], m, (bytes == "-" ? "not read" : bytes), mb, (groups[t] == "" ? "none seen" : groups[t]), mbo, p, m / p
      }
      printf "| **all** | | **%.0f** | | **%.2f** | %.0f messages/s delivered | **%.2f** | | |\n\n", tm, tin / 1e6, tmo, tout / 1e6
    }' <<<"$facts"
}

model_section() {
  local facts rate orders
  echo "## The scaling model"
  echo
  facts=$(model_facts)
  if [ -z "$facts" ]; then
    echo "Not computed: this run has no latency run to take the figures from."
    echo
    return
  fi
  orders=$(lat accepted)
  cat <<EOF
What $(meta model_rates | sed 's/ / and /g') orders/s would need, computed from this run's own figures:
the latency run's CPU per order of each part ($orders orders at $HALF orders/s, background
work included), its commits per order by database and Postgres's CPU by database, its
WAL per order, and the messages and bytes the system put through the broker in that
run (bench/topicstat, every topic's watermarks before and after, and the messages read
back). Assumptions:

- each service scales linearly with its instances: its CPU per order stays what it was
  here (the two-instance run below checks this claim at this rate);
- an instance is given $(meta model_instance_cores) core(s), and $(meta model_headroom) times the measured need is
  planned (room for peaks, rebalances and restarts); the instance counts are the
  minimum for the cores, before any count for availability;
- the broker is a real Kafka cluster on machines of its own: the mock broker's CPU here
  is not in the system's figures; its load is given as messages and bytes;
- each service database may have a Postgres of its own; the CPU per database is its
  backends' own, and the shared part (WAL writer, checkpointer) grows with the commits;
- the figures are this 2-core run's, everything co-located with the generator and the
  benchmark's poller (whose list requests are in query-api's and delivery_query's
  figures): on other machines, and with no neighbours, the CPU per order differs;
- no other cost grows with the rate (connection counts, lock contention, network), which
  only a run at that rate can show.

EOF
  for rate in $(meta model_rates); do
    echo "### $rate orders/s"
    echo
    model_tables "$rate" "$facts"
  done
  local missing
  missing=$(have topics.csv && awk -F, 'NR > 1 && $2 == 0 { printf "%s%s", s, $1; s = ", " }' "$RUN/topics.csv")
  [ -z "$missing" ] || { echo "Topics that carried nothing in the latency run: $missing."; echo; }
  if have topics.csv && awk -F, 'NR > 1 && $3 < $2 { f = 1 } END { exit !f }' "$RUN/topics.csv"; then
    echo "Some messages of the window were no longer on the mock broker when read back (it keeps a"
    echo "few MB per partition): their bytes per message are the mean of those read."
    echo
  fi
}

# The model's testable claim: the latency run again with more instances.
scaled_section() {
  echo "## The model's claim, measured: more instances, same CPU per order"
  echo
  if ! have scaled.summary; then
    echo "Not measured in this run (BENCH_SCALE_INSTANCES=none, or no rate was sustained)."
    echo
    return
  fi
  local sc one two pc s k
  sc=$(scale_figures)
  cat <<EOF
After the latency run, $(res scale_instances) (\`stack.sh scale\`: the instances
STACK_INSTANCES starts, each in its service's consumer group, so the partitions are
shared; the generator still posts to the first order-service and polls the first
query-api), a warm-up, and the latency run again at $HALF orders/s for $(meta latency_s) s:
$(kv "$RUN/scaled.summary" accepted) orders accepted, $(kv "$RUN/scaled.summary" ended_ok) at DELIVERY_ASSIGNED, saga p99
$(kv "$RUN/scaled.summary" saga_p99_ms) ms. Every instance's CPU is summed into its service's.

| part | CPU s / 1000 orders, one instance each | with more instances | idle CPU ms/s, one each | idle, more instances |
|---|---:|---:|---:|---:|
EOF
  local a b ia ib
  a=$(cpu_per_1000)
  b=$(cpu_per_1000 scaled- "$(kv "$RUN/scaled.summary" accepted)" "$(kv "$RUN/scaled.summary" loadgen_cpu_s)")
  ia=$(idle_cpu)
  ib=$(idle_cpu scaled-)
  for s in "${SERVICES[@]}" broker redis postgres; do
    echo "| $s | $(awk -v p="$s" '$1 == p { print $2 }' <<<"$a") | $(awk -v p="$s" '$1 == p { print $2 }' <<<"$b") | $(awk -v p="$s" '$1 == p { print $2 }' <<<"$ia") | $(awk -v p="$s" '$1 == p { print $2 }' <<<"$ib") |"
  done
  if [ -n "$sc" ]; then
    read -r one two pc <<<"$sc"
    echo "| **the system alone** | **$one** | **$two** | $(awk '$1 != "broker" { t += $2 } END { printf "%.1f", t }' <<<"$ia") | $(awk '$1 != "broker" { t += $2 } END { printf "%.1f", t }' <<<"$ib") |"
    echo
    k=$(mark "$pc <= $(meta scale_margin_pct)")
    echo "CPU per order of the system alone: $one -> $two s / 1000 orders, **$pc %**, against a"
    echo "margin of $(meta scale_margin_pct) % (BENCH_SCALE_MARGIN_PCT): $k. The idle columns show the part of it that"
    echo "every instance costs whatever the rate (relay and consumer polling, tickers): at a low rate"
    echo "it weighs more, so a growth here at a low rate is mostly that fixed cost. It is not simply"
    echo "additive: on this machine, idle CPU x wall time, subtracted, left almost nothing of the"
    echo "two-instance run's CPU (the background under load is less than idle), so it is not"
    echo "subtracted here; it says how much of a growth at a low rate is fixed cost."
  else
    echo
    echo "CPU per order with more instances: not measured (the CPU readings are missing)."
  fi
  echo
}

# The profile's busy share of the system alone (services, Postgres, Redis).
profile_system_sum() {
  awk -F, 'NR > 1 && $1 != "idle" && $1 != "loadgen" && $1 != "broker" && $1 != "other" {
    t += $2 + $3 } END { printf "%.1f", t }' "$RUN/profile.csv"
}

ceilings_section() {
  cat <<EOF
## The machine's ceilings, same run

| ceiling | value |
|---|---|
| pgbench: one-row INSERT, $(ceil pgbench_clients) clients, prepared, $(ceil pgbench_seconds) s, same Postgres | $TPS TPS |
| local broker, producer like the services' (idempotent, acks=all, linger 5 ms), consumer with librdkafka's defaults as the services | $BROKER msg/s produced and consumed ($(ceil broker_size) B); one hop $(ceil broker_hop_p50_ms) ms p50, $(ceil broker_hop_p99_ms) ms p99 |
| the same with the consumer's fetch.wait.max.ms = 10 | $BROKER_FAST msg/s; one hop $(ceil broker_fast_hop_p50_ms) ms p50, $(ceil broker_fast_hop_p99_ms) ms p99 |

The mock broker answers a consumer's fetch only when fetch.wait.max.ms has passed, even
when messages arrive sooner (a real Kafka answers at once): with librdkafka's default of
500 ms, each hop of the saga through the broker waits up to half a second.

EOF
}

gateway_section() {
  cat <<EOF
## Payment gateway at $(meta gateway_ms) ms

payment-service restarted with PAYMENT_GATEWAY_LATENCY_MS=$(meta gateway_ms) (the
original's gateway), the ramp run again: $GMAX orders/s sustained, against $MAX without it.

EOF
  steps_table gateway
  echo
}

# ---- the plot -------------------------------------------------------------------------------

plot() {
  command -v gnuplot >/dev/null 2>&1 || { echo "report: no gnuplot; latency.png not drawn" >&2; return 0; }
  local phase
  for phase in ramp gateway latency; do
    awk -F, -v p="$phase" 'NR > 1 && $1 == p { print $2, $12, $14, $16, $3 }' "$RUN/steps.csv" |
      sort -n >"$RUN/plot-$phase.dat"
  done
  [ -s "$RUN/plot-ramp.dat" ] || return 0
  local gw="" lt=""
  [ -s "$RUN/plot-gateway.dat" ] &&
    gw=", '$RUN/plot-gateway.dat' using 1:4 with linespoints lw 2 pt 9 dt 2 lc rgb '#d62728' title 'saga p99, $(meta gateway_ms) ms gateway'"
  [ -s "$RUN/plot-latency.dat" ] &&
    lt=", '$RUN/plot-latency.dat' using 1:4 with points pt 13 ps 2 lc rgb '#9467bd' title 'saga p99, latency run'"
  gnuplot <<EOF
set terminal pngcairo size 1100,620 font 'sans,10'
set output '$RUN/latency.png'
set title 'Latency against offered rate ($(meta date), $(meta cores) cores)'
set xlabel 'offered rate (orders/s, open loop)'
set ylabel 'latency (ms, from the intended send)'
set logscale xy 2
set logscale y 10
set grid
set key outside right top vertical
set arrow from graph 0, first $BOUND to graph 1, first $BOUND nohead dt 3 lc rgb '#888888'
set label 'breakdown bound' at graph 0.01, first $BOUND offset 0,0.7 textcolor rgb '#888888'
set arrow from graph 0, first 250 to graph 1, first 250 nohead dt 3 lc rgb '#2ca02c'
set label 'saga p99 target' at graph 0.01, first 250 offset 0,0.7 textcolor rgb '#2ca02c'
plot '$RUN/plot-ramp.dat' using 1:3 with linespoints lw 2 pt 7 lc rgb '#1f77b4' title 'saga p50', \
     '$RUN/plot-ramp.dat' using 1:4 with linespoints lw 2 pt 5 lc rgb '#ff7f0e' title 'saga p99', \
     '$RUN/plot-ramp.dat' using 1:2 with linespoints lw 1 pt 6 lc rgb '#7f7f7f' title 'intake p99', \
     '$RUN/plot-ramp.dat' using 1:(\$5 == 0 ? \$4 : 1/0) with points pt 2 ps 3 lw 2 lc rgb '#000000' title 'broke down'$gw$lt
EOF
}

# The block that READMEs quote between their bench:latest markers.
latest_block() {
  echo "Latest figures: $(meta date), \`$(meta command)\` at commit \`$(meta commit)\`, $(meta cores) cores,"
  echo "load average $(meta load_before) before the run. Full report:"
  echo "[bench/results/latest/report.md](bench/results/latest/report.md)."
  echo
  summary | sed -n '/^| figure/,/^$/p' | sed '/^$/d'
}

streams_section() {
  echo "## The console's live streams"
  echo
  if [ -z "$(res stream_kb_per_stream)$(res stream_delay_p50_ms)$(res page_delay_p50_ms)" ]; then
    echo "Not measured in this run."
    echo
    return
  fi
  echo "query-api's Server-Sent Events (docs/console.md, \"Live updates\"), after the ramps:"
  echo
  echo "| figure | value |"
  echo "|---|---:|"
  echo "| open streams allowed per instance (QUERY_STREAM_MAX) | $(res stream_limit) |"
  echo "| query-api's memory per idle stream, $(res stream_idle_streams) open | $(res stream_kb_per_stream) kB |"
  echo "| feed row to a stream's client, p50 / p99 ($(res stream_delay_samples) rows) | $(res stream_delay_p50_ms) / $(res stream_delay_p99_ms) ms |"
  if [ -n "$(res page_delay_p50_ms)" ]; then
    echo "| feed row to its line on an order's page in chromium, p50 / p99 ($(res page_delay_samples) lines) | $(res page_delay_p50_ms) / $(res page_delay_p99_ms) ms |"
  else
    echo "| feed row to an order's page | not measured (no chromium or npm install) |"
  fi
  echo
  echo "A feed row's created_at is its insert's clock_timestamp(), a little before its commit:"
  echo "the delays are an upper bound of commit to client. bench/README.md, \"The console's streams\"."
  echo
}

main() {
  latest_block >"$RUN/latest-block.md"
  {
    header
    summary
    ramp_section
    if have latency.summary; then latency_section; else printf '## Latency at half the maximum rate\n\nSkipped: no rate was sustained.\n\n'; fi
    services_section
    postgres_section
    profile_section
    cores_bound
    model_section
    scaled_section
    ceilings_section
    if grep -q '^gateway,' "$RUN/steps.csv" 2>/dev/null; then gateway_section; fi
    streams_section
  } >"$OUT"
  plot
  echo "report: $OUT"
}

main
