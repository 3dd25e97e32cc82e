#!/usr/bin/env bash
# test_init_topics.sh - infra/compose/init-topics.sh (Kubernetes runs the same
# text) run for real against stand-ins for kafka-topics and kafka-configs (no
# broker here): executables first on PATH that append their argv to a log and
# keep a model of the cluster (a file per topic: partitions, replication
# factor, configs), answering --list, --describe, --create and --alter the way
# the real tools print. Each case compares the exact calls, output and
# resulting topics:
#   - the defaults on an empty cluster: each of the ten topics created with 6
#     partitions, replication 3, min.insync.replicas=2, retention.ms 7 days
#     (raw.*) or 30 days (dlq.*), and nothing else called;
#   - compose's values (replication 1, min.insync.replicas 1); other accepted
#     values at their bounds (retention -1 and 3600000);
#   - existing topics: not created again, their two configs set with
#     kafka-configs --alter (a second run makes the same calls and changes
#     nothing); one with fewer partitions than asked is reported with the
#     warning and keeps them; topics of replication 1 get no
#     min.insync.replicas of 2 (every acks=all write would be refused), only
#     their retention, with the warnings;
#   - bad settings (replication 0, min.insync 4 with replication 3, retention
#     "7d", retention 5, ...) exit 2 naming the variable, before any call to
#     a Kafka tool (--wait mode too);
#   - --wait returns once every topic is listed.
# Needs bash and coreutils only.
set -euo pipefail
shopt -s nullglob

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SCRIPT=$ROOT/infra/compose/init-topics.sh
B=kafka:9092
RAW=(raw.order-events raw.inventory-events raw.payment-events raw.delivery-events raw.eta-events)
DLQ=(dlq.order-events dlq.inventory-events dlq.payment-events dlq.delivery-events dlq.eta-events)
TOPICS=("${RAW[@]}" "${DLQ[@]}")
WEEK=604800000
MONTH=2592000000
FAILS=0
CHECKS=0

TMP=$(mktemp -d /tmp/deta-init-topics.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
mkdir "$TMP/bin" "$TMP/state"

# ---- the stand-ins ------------------------------------------------------------
# A topic is the file $STUB_STATE/<name>: partitions=N, replicas=N, then its
# configs as key=value lines.
cat >"$TMP/bin/kafka-topics" <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
echo "kafka-topics $*" >>"$STUB_LOG"
action='' topic='' partitions='' replicas='' if_not_exists='' configs=()
while [ $# -gt 0 ]; do
  case $1 in
    --bootstrap-server)
      [ "$2" = "$STUB_BOOTSTRAP" ] || { echo "stand-in: bootstrap $2" >&2; exit 1; }
      shift ;;
    --list | --describe | --create) action=$1 ;;
    --if-not-exists) if_not_exists=1 ;;
    --topic) topic=$2; shift ;;
    --partitions) partitions=$2; shift ;;
    --replication-factor) replicas=$2; shift ;;
    --config) configs+=("$2"); shift ;;
    *) echo "kafka-topics stand-in: unexpected argument $1" >&2; exit 1 ;;
  esac
  shift
done
f=$STUB_STATE/$topic
case $action in
  --list) ls "$STUB_STATE" ;;
  --create)
    if [ -e "$f" ]; then
      [ -n "$if_not_exists" ] && exit 0
      echo "Error while executing topic command : Topic '$topic' already exists." >&2
      exit 1
    fi
    { echo "partitions=$partitions"; echo "replicas=$replicas"
      [ "${#configs[@]}" -eq 0 ] || printf '%s\n' "${configs[@]}"; } >"$f"
    echo "Created topic $topic." ;;
  --describe)
    if [ ! -e "$f" ]; then
      echo "Error while executing topic command : Topic '$topic' does not exist as expected" >&2
      exit 1
    fi
    p=$(sed -n 's/^partitions=//p' "$f")
    r=$(sed -n 's/^replicas=//p' "$f")
    cfg=$(grep -v -e '^partitions=' -e '^replicas=' "$f" | paste -sd, - || true)
    printf 'Topic: %s\tTopicId: q1WvVtq9T0uL3bCPrHzBSg\tPartitionCount: %s\tReplicationFactor: %s\tConfigs: %s\n' \
      "$topic" "$p" "$r" "$cfg"
    ids=$(seq -s, 1 "$r")
    for ((i = 0; i < p; i++)); do
      printf '\tTopic: %s\tPartition: %d\tLeader: 1\tReplicas: %s\tIsr: %s\n' "$topic" "$i" "$ids" "$ids"
    done ;;
  *) echo "kafka-topics stand-in: no action" >&2; exit 1 ;;
esac
EOF
cat >"$TMP/bin/kafka-configs" <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
echo "kafka-configs $*" >>"$STUB_LOG"
if [ $# -ne 9 ] || [ "$1 $2 $3 $4 $5 $6 $8" != \
     "--bootstrap-server $STUB_BOOTSTRAP --alter --entity-type topics --entity-name --add-config" ]; then
  echo "kafka-configs stand-in: unexpected arguments: $*" >&2
  exit 1
fi
f=$STUB_STATE/$7
if [ ! -e "$f" ]; then
  echo "Error while executing config command: UnknownTopicOrPartitionException: $7" >&2
  exit 1
fi
IFS=, read -ra pairs <<<"$9"
for kv in "${pairs[@]}"; do
  { grep -v "^${kv%%=*}=" "$f" || true; echo "$kv"; } >"$f.new"
  mv "$f.new" "$f"
done
echo "Completed updating config for topic $7."
EOF
chmod +x "$TMP/bin/kafka-topics" "$TMP/bin/kafka-configs"

# ---- helpers ------------------------------------------------------------------
ok() { CHECKS=$((CHECKS + 1)); }
fail() {
  echo "FAIL: $*" >&2
  FAILS=$((FAILS + 1))
  CHECKS=$((CHECKS + 1))
}
# same WHAT EXPECTED ACTUAL: the exact text, else the difference.
same() {
  if [ "$2" == "$3" ]; then
    ok
  else
    fail "$1 (< expected, > actual):"
    diff <(printf '%s\n' "$2") <(printf '%s\n' "$3") | sed 's/^/    /' >&2 || true
  fi
}

# run [NAME=VALUE...] [-- ARG...]: the script with only these settings (and
# KAFKA_BOOTSTRAP_SERVERS) in its environment, the stand-ins first on PATH;
# sets STATUS, OUT, ERR and LOG (the stand-ins' calls).
run() {
  local settings=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do settings+=("$1"); shift; done
  [ $# -eq 0 ] || shift
  : >"$TMP/log"
  STATUS=0
  env -i PATH="$TMP/bin:$PATH" STUB_LOG="$TMP/log" STUB_STATE="$TMP/state" STUB_BOOTSTRAP=$B \
    KAFKA_BOOTSTRAP_SERVERS=$B "${settings[@]}" \
    bash "$SCRIPT" "$@" >"$TMP/out" 2>"$TMP/err" || STATUS=$?
  OUT=$(<"$TMP/out")
  ERR=$(<"$TMP/err")
  LOG=$(<"$TMP/log")
}

empty_cluster() { rm -rf "$TMP/state"; mkdir "$TMP/state"; }

# topic NAME PARTITIONS REPLICAS [KEY=VALUE...]: a topic that exists already.
topic() {
  local f=$TMP/state/$1
  { echo "partitions=$2"; echo "replicas=$3"; shift 3
    [ $# -eq 0 ] || printf '%s\n' "$@"; } >"$f"
}

# The cluster's topics, one line each: name, partitions, replicas, sorted configs.
cluster() {
  local f
  for f in "$TMP/state"/*; do
    printf '%s %s %s %s\n' "${f##*/}" "$(sed -n 's/^partitions=//p' "$f")" \
      "$(sed -n 's/^replicas=//p' "$f")" \
      "$(grep -v -e '^partitions=' -e '^replicas=' "$f" | sort | paste -sd' ' - || true)"
  done
}

retention() { if [[ $1 == dlq.* ]]; then echo "$3"; else echo "$2"; fi; }

# fresh REPLICATION MIN_INSYNC RAW_RETENTION DLQ_RETENTION: the calls, output and
# cluster expected of a run on an empty cluster; sets EXP_LOG, EXP_OUT, EXP_CLUSTER.
fresh() {
  local t
  EXP_LOG=$(
    echo "kafka-topics --bootstrap-server $B --list"
    for t in "${TOPICS[@]}"; do
      echo "kafka-topics --bootstrap-server $B --create --if-not-exists --topic $t" \
        "--partitions 6 --replication-factor $1 --config min.insync.replicas=$2" \
        "--config retention.ms=$(retention "$t" "$3" "$4")"
      echo "kafka-topics --bootstrap-server $B --describe --topic $t"
    done)
  EXP_OUT=$(for t in "${TOPICS[@]}"; do
    echo "Created topic $t."
    echo "init-topics: $t: 6 partition(s), replication factor $1"
  done)
  EXP_CLUSTER=$(for t in "${TOPICS[@]}"; do
    echo "$t 6 $1 min.insync.replicas=$2 retention.ms=$(retention "$t" "$3" "$4")"
  done | sort)
}

# ---- 1. the defaults: a cluster of three brokers -------------------------------
empty_cluster
run
same "defaults: exit status" 0 "$STATUS"
fresh 3 2 "$WEEK" "$MONTH"
same "defaults: the calls" "$EXP_LOG" "$LOG"
same "defaults: the output" "$EXP_OUT" "$OUT"
same "defaults: stderr" "" "$ERR"
same "defaults: the topics" "$EXP_CLUSTER" "$(cluster)"
# Two of those lines spelled out, the contract in plain words.
for line in \
  "kafka-topics --bootstrap-server kafka:9092 --create --if-not-exists --topic raw.order-events --partitions 6 --replication-factor 3 --config min.insync.replicas=2 --config retention.ms=604800000" \
  "kafka-topics --bootstrap-server kafka:9092 --create --if-not-exists --topic dlq.eta-events --partitions 6 --replication-factor 3 --config min.insync.replicas=2 --config retention.ms=2592000000"; do
  if grep -qxF -- "$line" <<<"$LOG"; then ok; else fail "defaults: no call $line"; fi
done

# --wait: every topic is there now.
run -- --wait
same "--wait: exit status" 0 "$STATUS"
same "--wait: the calls" "kafka-topics --bootstrap-server $B --list" "$LOG"
same "--wait: the output" "init-topics: all 10 topics exist" "$OUT"

# ---- 2. compose's values: one broker -------------------------------------------
empty_cluster
run KAFKA_TOPIC_PARTITIONS=6 KAFKA_TOPIC_REPLICATION=1 KAFKA_TOPIC_MIN_INSYNC_REPLICAS=1
same "compose: exit status" 0 "$STATUS"
fresh 1 1 "$WEEK" "$MONTH"
same "compose: the calls" "$EXP_LOG" "$LOG"
same "compose: the output" "$EXP_OUT" "$OUT"
same "compose: stderr" "" "$ERR"
same "compose: the topics" "$EXP_CLUSTER" "$(cluster)"

# The defaults then, on those topics of replication 1 (a cluster whose topics
# an earlier version made with replication 1): not created again, retention
# set, min.insync.replicas left at 1, every topic reported.
run
same "replication 1, defaults: exit status" 0 "$STATUS"
EXP_LOG=$(
  echo "kafka-topics --bootstrap-server $B --list"
  for t in "${TOPICS[@]}"; do
    echo "kafka-topics --bootstrap-server $B --describe --topic $t"
    echo "kafka-configs --bootstrap-server $B --alter --entity-type topics --entity-name $t" \
      "--add-config retention.ms=$(retention "$t" "$WEEK" "$MONTH")"
  done)
same "replication 1, defaults: the calls" "$EXP_LOG" "$LOG"
same "replication 1, defaults: the output" "$(for t in "${TOPICS[@]}"; do
  echo "init-topics: $t: 6 partition(s), replication factor 1"
  echo "Completed updating config for topic $t."
done)" "$OUT"
same "replication 1, defaults: the warnings" "$(for t in "${TOPICS[@]}"; do
  echo "init-topics: warning: $t has replication factor 1, less than 3"
  echo "init-topics: warning: $t: min.insync.replicas not set to 2, above its replication factor 1 (acks=all writes would be refused)"
done)" "$ERR"
same "replication 1, defaults: the topics" "$(for t in "${TOPICS[@]}"; do
  echo "$t 6 1 min.insync.replicas=1 retention.ms=$(retention "$t" "$WEEK" "$MONTH")"
done | sort)" "$(cluster)"

# ---- 3. accepted values at their bounds ----------------------------------------
empty_cluster
run KAFKA_TOPIC_REPLICATION=2 KAFKA_TOPIC_MIN_INSYNC_REPLICAS=2 \
  KAFKA_RAW_RETENTION_MS=3600000 KAFKA_DLQ_RETENTION_MS=-1
same "bounds: exit status" 0 "$STATUS"
fresh 2 2 3600000 -1
same "bounds: the calls" "$EXP_LOG" "$LOG"
same "bounds: stderr" "" "$ERR"
same "bounds: the topics" "$EXP_CLUSTER" "$(cluster)"

# ---- 4. existing topics ---------------------------------------------------------
empty_cluster
topic __consumer_offsets 50 3 cleanup.policy=compact
topic raw.order-events 6 3 min.insync.replicas=1 retention.ms=86400000
topic raw.payment-events 3 3
topic dlq.eta-events 6 3 retention.ms=-1
EXISTING=" raw.order-events raw.payment-events dlq.eta-events "
for pass in first second; do
  run
  same "existing ($pass run): exit status" 0 "$STATUS"
  EXP_LOG=$(
    echo "kafka-topics --bootstrap-server $B --list"
    for t in "${TOPICS[@]}"; do
      r=$(retention "$t" "$WEEK" "$MONTH")
      if [ $pass = first ] && [[ $EXISTING != *" $t "* ]]; then
        echo "kafka-topics --bootstrap-server $B --create --if-not-exists --topic $t" \
          "--partitions 6 --replication-factor 3 --config min.insync.replicas=2 --config retention.ms=$r"
      fi
      echo "kafka-topics --bootstrap-server $B --describe --topic $t"
      if [ $pass = second ] || [[ $EXISTING == *" $t "* ]]; then
        echo "kafka-configs --bootstrap-server $B --alter --entity-type topics --entity-name $t" \
          "--add-config min.insync.replicas=2,retention.ms=$r"
      fi
    done)
  same "existing ($pass run): the calls" "$EXP_LOG" "$LOG"
  EXP_OUT=$(for t in "${TOPICS[@]}"; do
    if [ $pass = first ] && [[ $EXISTING != *" $t "* ]]; then echo "Created topic $t."; fi
    n=6
    [ "$t" != raw.payment-events ] || n=3
    echo "init-topics: $t: $n partition(s), replication factor 3"
    if [ $pass = second ] || [[ $EXISTING == *" $t "* ]]; then
      echo "Completed updating config for topic $t."
    fi
  done)
  same "existing ($pass run): the output" "$EXP_OUT" "$OUT"
  same "existing ($pass run): the warning" \
    "init-topics: warning: raw.payment-events has 3 partitions, fewer than 6" "$ERR"
  same "existing ($pass run): the topics" "$(
    echo "__consumer_offsets 50 3 cleanup.policy=compact"
    for t in "${TOPICS[@]}"; do
      n=6
      [ "$t" != raw.payment-events ] || n=3
      echo "$t $n 3 min.insync.replicas=2 retention.ms=$(retention "$t" "$WEEK" "$MONTH")"
    done | sort)" "$(cluster)"
done

# ---- 5. bad settings: exit 2 naming the variable, no Kafka tool called ---------
empty_cluster
# refused EXPECTED_MESSAGE SETTING... [-- ARG...]
refused() {
  local message=$1
  shift
  run "$@"
  same "$* : exit status" 2 "$STATUS"
  same "$* : the message" "init-topics: $message" "$ERR"
  same "$* : the calls" "" "$LOG"
  same "$* : stdout" "" "$OUT"
}
refused "KAFKA_TOPIC_REPLICATION must be a whole number >= 1, is '0'" KAFKA_TOPIC_REPLICATION=0
refused "KAFKA_TOPIC_MIN_INSYNC_REPLICAS (4) must not exceed KAFKA_TOPIC_REPLICATION (3)" \
  KAFKA_TOPIC_REPLICATION=3 KAFKA_TOPIC_MIN_INSYNC_REPLICAS=4
refused "KAFKA_TOPIC_MIN_INSYNC_REPLICAS (2) must not exceed KAFKA_TOPIC_REPLICATION (1)" \
  KAFKA_TOPIC_REPLICATION=1
refused "KAFKA_TOPIC_MIN_INSYNC_REPLICAS must be a whole number >= 1, is '0'" \
  KAFKA_TOPIC_MIN_INSYNC_REPLICAS=0
refused "KAFKA_TOPIC_PARTITIONS must be a whole number >= 1, is '6.5'" KAFKA_TOPIC_PARTITIONS=6.5
refused "KAFKA_TOPIC_PARTITIONS must be a whole number >= 1, is '-6'" KAFKA_TOPIC_PARTITIONS=-6
refused "KAFKA_RAW_RETENTION_MS must be -1 (for ever) or a whole number of milliseconds >= 3600000, is '7d'" \
  KAFKA_RAW_RETENTION_MS=7d
refused "KAFKA_RAW_RETENTION_MS must be -1 (for ever) or a whole number of milliseconds >= 3600000, is '3599999'" \
  KAFKA_RAW_RETENTION_MS=3599999
refused "KAFKA_DLQ_RETENTION_MS must be -1 (for ever) or a whole number of milliseconds >= 3600000, is '5'" \
  KAFKA_DLQ_RETENTION_MS=5
refused "KAFKA_DLQ_RETENTION_MS must be -1 (for ever) or a whole number of milliseconds >= 3600000, is '-2'" \
  KAFKA_DLQ_RETENTION_MS=-2
refused "KAFKA_TOPIC_REPLICATION must be a whole number >= 1, is '0'" KAFKA_TOPIC_REPLICATION=0 -- --wait
run -- --create
same "an unknown argument: exit status" 2 "$STATUS"
same "an unknown argument: the message" "usage: init-topics.sh [--wait]" "$ERR"
same "an unknown argument: the calls" "" "$LOG"
same "bad settings: the topics (none made)" "" "$(cluster)"

if [ "$FAILS" -gt 0 ]; then
  echo "test_init_topics: $FAILS of $CHECKS checks failed" >&2
  exit 1
fi
echo "test_init_topics: ok ($CHECKS checks)"
