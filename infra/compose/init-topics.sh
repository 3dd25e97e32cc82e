#!/bin/bash
# init-topics.sh - pre-create the topics of the system (the seed's eight, and
# raw.eta-events with its twin) with an explicit partition count, as the seed
# recommends for production (its broker would auto-create them with 1
# partition on first use, and one partition caps each consumer group at one
# busy member). Runs in the broker's own image
# (confluentinc/cp-kafka, for kafka-topics): compose's kafka-init container and
# the Kubernetes Job in ../k8s/kafka.yaml (same text, checked by tests/deploy).
#
#   init-topics.sh          create what is missing, then report partitions
#   init-topics.sh --wait   wait until every topic exists (Kubernetes init
#                           containers: services start after the Job's work)
#
# Settings: KAFKA_BOOTSTRAP_SERVERS (required), KAFKA_TOPIC_PARTITIONS (6),
# KAFKA_TOPIC_REPLICATION (1). Idempotent (--if-not-exists): an existing topic
# keeps its partitions; a smaller count than asked is reported, not changed,
# since adding partitions moves keys (orderIds) to other partitions.
set -euo pipefail

TOPICS=(
  raw.order-events raw.inventory-events raw.payment-events raw.delivery-events
  raw.eta-events
  dlq.order-events dlq.inventory-events dlq.payment-events dlq.delivery-events
  dlq.eta-events
)
BOOTSTRAP=${KAFKA_BOOTSTRAP_SERVERS:?KAFKA_BOOTSTRAP_SERVERS is not set}
PARTITIONS=${KAFKA_TOPIC_PARTITIONS:-6}
REPLICATION=${KAFKA_TOPIC_REPLICATION:-1}

create_topics() {
  local topic
  for topic in "${TOPICS[@]}"; do
    kafka-topics --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
      --topic "$topic" --partitions "$PARTITIONS" --replication-factor "$REPLICATION"
  done
}

# Prints a warning for each topic that has fewer partitions than asked.
report_partitions() {
  local topic count
  for topic in "${TOPICS[@]}"; do
    count=$(kafka-topics --bootstrap-server "$BOOTSTRAP" --describe --topic "$topic" |
      grep -c 'Partition: ' || true)
    echo "init-topics: $topic: $count partition(s)"
    if [ "$count" -lt "$PARTITIONS" ]; then
      echo "init-topics: warning: $topic has $count partitions, fewer than $PARTITIONS" >&2
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

case "${1:-}" in
  --wait) wait_for_topics ;;
  "") create_topics && report_partitions ;;
  *) echo "usage: init-topics.sh [--wait]" >&2; exit 2 ;;
esac
