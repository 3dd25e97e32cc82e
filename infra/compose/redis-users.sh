#!/bin/sh
# redis-users.sh - Redis's users, as an ACL file (redis-server --aclfile):
# least privilege for Redis, written once for compose, Kubernetes (the same
# text inlined in ../k8s/redis.yaml's ConfigMap redis-init; tests/deploy checks
# they are equal) and the local stack (scripts/stack.sh).
#
#   redis-users.sh OUTPUT    # env REDIS_ADMIN_PASSWORD, REDIS_PAYMENT_PASSWORD
#
#   user              may                                       password from
#   default           nothing (off: every client must AUTH)     -
#   deta-admin        every command, key and channel            REDIS_ADMIN_PASSWORD
#   payment-service   GET, SET, EVAL, DEL, PING, CLIENT SETNAME  REDIS_PAYMENT_PASSWORD
#                     on payment:* and payment-lock:* only
#
# payment-service's keys are its dedup markers (payment:dedup:<event>) and its
# order locks (payment-lock:order:<order>), services/payment-service/domain.c;
# its commands are the ones libdeta's redis.c sends (SET ... PX [NX], GET, the
# compare-and-delete EVAL, whose GET and DEL are checked against the same
# rules, PING for health, CLIENT SETNAME). No CONFIG, FLUSHALL, KEYS, SCAN,
# DEBUG, ACL or Pub/Sub for it. The file holds SHA-256 hashes of the passwords,
# never the passwords, and is written with mode 0600, replaced whole (a new
# password here is a rotation at the server's next start).
set -eu

[ $# -eq 1 ] || { echo "usage: redis-users.sh OUTPUT" >&2; exit 2; }
for var in REDIS_ADMIN_PASSWORD REDIS_PAYMENT_PASSWORD; do
  if [ -z "$(printenv "$var" || true)" ]; then
    echo "redis-users.sh: $var is empty" >&2
    exit 1
  fi
done

deta_redis_hash() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

umask 077
{
  echo 'user default off resetpass resetkeys resetchannels -@all'
  echo "user deta-admin on #$(deta_redis_hash "$REDIS_ADMIN_PASSWORD") ~* &* +@all"
  echo "user payment-service on #$(deta_redis_hash "$REDIS_PAYMENT_PASSWORD") resetkeys" \
    "~payment:* ~payment-lock:* resetchannels -@all +get +set +eval +del +ping +client|setname"
} >"$1.tmp"
mv "$1.tmp" "$1"
