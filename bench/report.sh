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
# commits-after.csv, memory.csv, pg-top.txt, streams.txt. A file that is missing (a phase
# that was skipped) leaves its section saying so. The plot is drawn with
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
cpu_per_1000() {
  local orders
  orders=$(lat accepted)
  [ -n "$orders" ] && [ "$orders" -gt 0 ] && have cpu-before.txt && have cpu-after.txt || return 0
  awk -v ticks="$TICKS" -v orders="$orders" -v lg="$(lat loadgen_cpu_s)" '
    NR == FNR { before[$1] = $2; next }
    { d[$1] = ($2 - before[$1]) / ticks; total += d[$1]; order[++n] = $1 }
    END {
      d["loadgen (bench)"] = lg; order[++n] = "loadgen (bench)"; total += lg
      for (i = 1; i <= n; i++)
        printf "%s %.3f %.0f\n", order[i], d[order[i]] * 1000 / orders, 100 * d[order[i]] / total
      printf "total %.3f 100\n", total * 1000 / orders
    }' "$RUN/cpu-before.txt" "$RUN/cpu-after.txt"
}

# CPU milliseconds per second of every part while idle: "part ms_per_s".
idle_cpu() {
  have idle-before.txt && have idle-after.txt || return 0
  awk -v ticks="$TICKS" -v secs="$(res idle_s)" '
    NR == FNR { before[$1] = $2; next }
    { printf "%s %.1f\n", $1, ($2 - before[$1]) / ticks * 1000 / (secs > 0 ? secs : 1) }' \
    "$RUN/idle-before.txt" "$RUN/idle-after.txt"
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

summary() {
  local saga99 rss_max start_max gw_note
  saga99=$(lat saga_p99_ms)
  rss_max=$(awk -F, 'NR > 1 && $1 ~ /service|query-api/ { if ($2 > m) m = $2 } END { printf "%.1f", m / 1024 }' \
    "$RUN/memory.csv" 2>/dev/null || echo "")
  start_max=$(startup_figures | awk '{ if ($3 > m) m = $3 } END { printf "%.0f", m }')
  if [ "$(calc "$GMAX >= $MAX && $MAX > 0")" = 1 ]; then
    gw_note="does not cap throughput"
  else
    gw_note="**caps throughput**"
  fi
  cat <<EOF
## Summary

| figure | value | target (issue #6) |
|---|---|---|
| saga latency on an idle system ($(res baseline_rate) orders/s): p50 / p99 | $(res baseline_saga_p50_ms) / $(res baseline_saga_p99_ms) ms | |
| sustained throughput (every order to DELIVERY_ASSIGNED, saga p99 <= $BOUND ms) | **$(rate_text "$MAX")** | |
| ... as a ratio to pgbench one-row insert TPS ($TPS TPS, $(ceil pgbench_clients) clients) | $(calc "$TPS > 0 ? sprintf(\"%.3f (%.1f %%)\", $MAX / $TPS, 100 * $MAX / $TPS) : \"n/a\"") | >= 25 %: $(mark "$TPS > 0 && $MAX / $TPS >= 0.25") |
| ... as a ratio to the broker's raw produce-to-consume rate ($BROKER msg/s) | $(calc "$BROKER > 0 ? sprintf(\"%.5f\", $MAX / $BROKER) : \"n/a\"") orders per raw message; with ${EVENTS:-?} messages per order, the system moved $(calc "sprintf(\"%.0f\", $MAX * ${EVENTS:-0})") msg/s, $(calc "$BROKER > 0 ? sprintf(\"%.1f %%\", 100 * $MAX * ${EVENTS:-0} / $BROKER) : \"n/a\"") of the raw rate | |
| intake latency at $HALF orders/s (half the maximum): p50 / p95 / p99 / max | $(lat intake_p50_ms) / $(lat intake_p95_ms) / $(lat intake_p99_ms) / $(lat intake_max_ms) ms | |
| saga latency at $HALF orders/s: p50 / p95 / p99 / max | $(lat saga_p50_ms) / $(lat saga_p95_ms) / **$saga99** / $(lat saga_max_ms) ms | p99 < 250 ms: $(mark "${saga99:-1e9} < 250") |
| sustained throughput with a $(meta gateway_ms) ms payment gateway | $(rate_text "$GMAX"): $gw_note | no cap |
| largest peak RSS of a service | $rss_max MB | < 20 MB: $(mark "${rss_max:-1e9} < 20") |
| slowest service from launch to healthy (worst of $(tail -n +2 "$RUN/startup.csv" 2>/dev/null | cut -d, -f2 | sort -n | tail -n 1) starts) | $start_max ms | < 200 ms: $(mark "${start_max:-1e9} < 200") |

![latency against offered rate](latency.png)

EOF
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

ramp_section() {
  cat <<EOF
## The rate ramp

Each step offers a fixed rate for $(meta step_s) s (open loop) and waits up to
$(meta drain_s) s more for every saga; the next step starts once the system is idle
again. A step is sustained when every order was accepted, every order reached
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
the per-order figures too and weighs more the lower the rate. Peak RSS is VmHWM after the ramp and the latency run. Time to healthy runs
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
  echo
  echo "Postgres is every backend together (shared memory makes its RSS meaningless here)."
  echo "The measurement is in these figures too: the generator's own CPU is its row, and its"
  echo "$(calc "sprintf(\"%.1f\", $(lat poll_requests) / ($(lat accepted) > 0 ? $(lat accepted) : 1))") list requests per order are part of query-api's and Postgres's."
  echo
}

postgres_section() {
  echo "## Postgres during the latency run"
  echo
  if have commits-before.csv && have commits-after.csv; then
    echo "Transactions committed per order, by database:"
    echo
    echo "| database | commits per order |"
    echo "|---|---:|"
    awk -F, -v orders="$(lat accepted)" 'NR == FNR { b[$1] = $2; next }
      { printf "| %s | %.2f |\n", $1, ($2 - b[$1]) / (orders > 0 ? orders : 1) }' \
      "$RUN/commits-before.csv" "$RUN/commits-after.csv"
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
  echo "| part | user % | kernel % | total % |"
  echo "|---|---:|---:|---:|"
  awk -F, 'NR > 1 { printf "%s,%s,%s,%.1f\n", $1, $2, $3, $2 + $3 }' "$RUN/profile.csv" |
    sort -t, -k4 -rn | awk -F, '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }'
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
    ceilings_section
    if grep -q '^gateway,' "$RUN/steps.csv" 2>/dev/null; then gateway_section; fi
    streams_section
  } >"$OUT"
  plot
  echo "report: $OUT"
}

main
