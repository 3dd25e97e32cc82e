#!/bin/bash
# init-topics.sh - pre-create the topics of the system (the seed's eight, and
# raw.eta-events with its twin) with explicit partitions, replication and
# retention, as the seed recommends for production (its broker would
# auto-create them on first use with its defaults: 1 partition caps each
# consumer group at one busy member). Runs in the broker's own image
# (confluentinc/cp-kafka: kafka-topics, kafka-configs): compose's kafka-init
# container and the Kubernetes Job in ../k8s/kafka.yaml (same text, checked
# by tests/deploy; run against stand-ins by tests/deploy/test_init_topics.sh).
#
#   init-topics.sh          create what is missing, converge the configs of
#                           what exists, report partitions and replication
#   init-topics.sh --wait   wait until every topic exists (Kubernetes init
#                           containers: services start after the Job's work)
#
# Settings (environment). The defaults are for a cluster of three brokers;
# compose and the Kubernetes manifests run one and set replication 1 and
# min.insync.replicas 1.
#   KAFKA_BOOTSTRAP_SERVERS          required
#   KAFKA_TOPIC_PARTITIONS           6: up to six members of a group share a topic
#   KAFKA_TOPIC_REPLICATION          3: each partition on three brokers
#   KAFKA_TOPIC_MIN_INSYNC_REPLICAS  2: with the producers' acks=all, an
#                                    acknowledged event is on two brokers; one
#                                    broker of three can be lost without losing
#                                    or refusing writes
#   KAFKA_RAW_RETENTION_MS           604800000 (7 days): raw.*; longer needs the
#                                    services' INBOX_RETENTION_HOURS (168) raised
#   KAFKA_DLQ_RETENTION_MS           2592000000 (30 days): dlq.*, kept longer for
#                                    an operator to look at and replay
# Counts are whole numbers >= 1, min.insync.replicas at most the replication;
# a retention is -1 (for ever) or >= 3600000 (1 h). A bad value exits 2
# before any call to Kafka.
# cleanup.policy stays the broker's default (delete).
#
# Idempotent: a missing topic is created with both configs (--if-not-exists);
# an existing one gets them set again (kafka-configs --alter), but
# min.insync.replicas never above its replication factor (every acks=all
# write would be refused). Partitions and replication are reported, never
# changed: adding partitions moves keys (orderIds) to other partitions.
set -euo pipefail

TOPICS=(
  raw.order-events raw.inventory-events raw.payment-events raw.delivery-events
  raw.eta-events
  dlq.order-events dlq.inventory-events dlq.payment-events dlq.delivery-events
  dlq.eta-events
)
BOOTSTRAP=${KAFKA_BOOTSTRAP_SERVERS:?KAFKA_BOOTSTRAP_SERVERS is not set}
PARTITIONS=${KAFKA_TOPIC_PARTITIONS:-6}
REPLICATION=${KAFKA_TOPIC_REPLICATION:-3}
MIN_INSYNC=${KAFKA_TOPIC_MIN_INSYNC_REPLICAS:-2}
RAW_RETENTION=${KAFKA_RAW_RETENTION_MS:-604800000}
DLQ_RETENTION=${KAFKA_DLQ_RETENTION_MS:-2592000000}

bad_setting() {
  echo "init-topics: $1" >&2
  exit 2
}

# NAME VALUE: a whole number >= 1 (up to 9 digits: Kafka takes 32-bit counts).
check_count() {
  [[ $2 =~ ^[1-9][0-9]{0,8}$ ]] || bad_setting "$1 must be a whole number >= 1, is '$2'"
}

# NAME VALUE: -1 (for ever) or a whole number of milliseconds >= 1 hour.
check_retention() {
  if [ "$2" != -1 ] && ! { [[ $2 =~ ^[1-9][0-9]{0,17}$ ]] && [ "$2" -ge 3600000 ]; }; then
    bad_setting "$1 must be -1 (for ever) or a whole number of milliseconds >= 3600000, is '$2'"
  fi
}

check_settings() {
  check_count KAFKA_TOPIC_PARTITIONS "$PARTITIONS"
  check_count KAFKA_TOPIC_REPLICATION "$REPLICATION"
  check_count KAFKA_TOPIC_MIN_INSYNC_REPLICAS "$MIN_INSYNC"
  if [ "$MIN_INSYNC" -gt "$REPLICATION" ]; then
    bad_setting "KAFKA_TOPIC_MIN_INSYNC_REPLICAS ($MIN_INSYNC) must not exceed KAFKA_TOPIC_REPLICATION ($REPLICATION)"
  fi
  check_retention KAFKA_RAW_RETENTION_MS "$RAW_RETENTION"
  check_retention KAFKA_DLQ_RETENTION_MS "$DLQ_RETENTION"
}

# Creates each missing topic with its configs, sets them again on each
# existing one, and reports every topic's partitions and replication factor.
# kafka-topics --describe of one topic; a topic just created may not be in every
# broker's metadata yet, so a failed describe is tried again (5 times, 2 s apart).
describe_topic() {
  local attempt out
  for attempt in 1 2 3 4 5; do
    if out=$(kafka-topics --bootstrap-server "$BOOTSTRAP" --describe --topic "$1") && [ -n "$out" ]; then
      printf '%s\n' "$out"
      return 0
    fi
    echo "init-topics: describing $1 failed (attempt $attempt of 5)" >&2
    sleep 2
  done
  return 1
}

setup_topics() {
  local topic existing retention description count replicas
  existing=$(kafka-topics --bootstrap-server "$BOOTSTRAP" --list)
  for topic in "${TOPICS[@]}"; do
    case $topic in
      dlq.*) retention=$DLQ_RETENTION ;;
      *) retention=$RAW_RETENTION ;;
    esac
    if ! grep -qxF -- "$topic" <<<"$existing"; then
      kafka-topics --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
        --topic "$topic" --partitions "$PARTITIONS" --replication-factor "$REPLICATION" \
        --config "min.insync.replicas=$MIN_INSYNC" --config "retention.ms=$retention"
    fi
    description=$(describe_topic "$topic")
    count=$(grep -c 'Partition: ' <<<"$description" || true)
    replicas=0
    if [[ $description =~ ReplicationFactor:\ *([0-9]+) ]]; then
      replicas=${BASH_REMATCH[1]}
    fi
    echo "init-topics: $topic: $count partition(s), replication factor $replicas"
    if [ "$count" -lt "$PARTITIONS" ]; then
      echo "init-topics: warning: $topic has $count partitions, fewer than $PARTITIONS" >&2
    fi
    if [ "$replicas" -lt "$REPLICATION" ]; then
      echo "init-topics: warning: $topic has replication factor $replicas, less than $REPLICATION" >&2
    fi
    grep -qxF -- "$topic" <<<"$existing" || continue
    if [ "$replicas" -ge "$MIN_INSYNC" ]; then
      kafka-configs --bootstrap-server "$BOOTSTRAP" --alter --entity-type topics \
        --entity-name "$topic" --add-config "min.insync.replicas=$MIN_INSYNC,retention.ms=$retention"
    else
      echo "init-topics: warning: $topic: min.insync.replicas not set to $MIN_INSYNC, above its replication factor $replicas (acks=all writes would be refused)" >&2
      kafka-configs --bootstrap-server "$BOOTSTRAP" --alter --entity-type topics \
        --entity-name "$topic" --add-config "retention.ms=$retention"
    fi
  done
}

wait_for_topics() {
  local topic existing
  while :; do
    existing=$(kafka-topics --bootstrap-server "$BOOTSTRAP" --list 2>/dev/null || true)
    local missing=()
    for topic in "${TOPICS[@]}"; do
      grep -qxF -- "$topic" <<<"$existing" || missing+=("$topic")
    done
    [ "${#missing[@]}" -eq 0 ] && { echo "init-topics: all ${#TOPICS[@]} topics exist"; return 0; }
    echo "init-topics: waiting for: ${missing[*]}"
    sleep 5
  done
}

check_settings
case "${1:-}" in
  --wait) wait_for_topics ;;
  "") setup_topics ;;
  *) echo "usage: init-topics.sh [--wait]" >&2; exit 2 ;;
esac
