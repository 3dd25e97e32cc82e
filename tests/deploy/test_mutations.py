#!/usr/bin/env python3
"""test_mutations.py - the deployment checks must fail on broken files.

  test_mutations.py

A check that passes whatever the files say proves nothing. Each case copies
the parts of the repository the checks read into a temporary tree, breaks one
thing (a wrong image tag, a literal password, a missing probe, a build
directory left out of the image's context...), runs the check that should notice, and requires a new
problem naming it: one absent from the same check on the unbroken copy, so the
case holds even while the real tree has problems of its own. A case whose
text is no longer in the file fails too, so the cases follow the files.
"""

import os
import shutil
import sys
import tempfile

import check_compose
import check_context
import check_dockerfile
import check_k8s
import deploylib as dl

COMPOSE = "infra/compose/compose.yml"
DOCKERFILE = "infra/docker/Dockerfile"
K8S = "infra/k8s/"
CASSANDRA_INIT = "infra/compose/init-cassandra.sh"

# (check, file, old text, new text, a word of the expected problem)
CASES = [
    # least privilege in Redis (infra/compose/redis-users.sh, docs/security.md)
    ("compose", COMPOSE, "      REDIS_USERNAME: payment-service\n", "",
     "payment-service: REDIS_USERNAME is read by the code but not set"),
    ("compose", COMPOSE, "INSTANCE_ID: order-service\n",
     "INSTANCE_ID: order-service\n      REDIS_PASSWORD: ${REDIS_PAYMENT_PASSWORD:?x}\n",
     "order-service: REDIS_PASSWORD is set but no code reads it"),
    ("compose", COMPOSE, "exec docker-entrypoint.sh redis-server --aclfile /data/users.acl",
     "exec docker-entrypoint.sh redis-server", "redis: must start with the ACL file"),
    ("k8s", K8S + "redis.yaml", "exec docker-entrypoint.sh redis-server --aclfile /data/users.acl",
     "exec docker-entrypoint.sh redis-server", "redis: must start with the ACL file"),
    ("k8s", K8S + "redis.yaml", "~payment:* ~payment-lock:*", "~*",
     "redis-users.sh missing or different"),
    # the web console (docs/console.md)
    ("compose", COMPOSE, "QUERY_CONSOLE_DIR: /usr/share/delivery-eta/console",
     "QUERY_CONSOLE_DIR: /srv/console", "QUERY_CONSOLE_DIR is"),
    ("compose", COMPOSE, "QUERY_CONSOLE_ORDER_URL: http://localhost:8081",
     "QUERY_CONSOLE_ORDER_URL: http://localhost:8080", "QUERY_CONSOLE_ORDER_URL is"),
    ("compose", COMPOSE, "      QUERY_CONSOLE_INVENTORY_URL: http://localhost:8083\n", "",
     "QUERY_CONSOLE_INVENTORY_URL is read by the code but not set"),
    ("compose", COMPOSE, "shows the stock from the browser.\n"
     '      HTTP_CORS_ORIGINS: "http://localhost:8080,http://127.0.0.1:8080"',
     "shows the stock from the browser.\n"
     '      HTTP_CORS_ORIGINS: "http://127.0.0.1:8080"',
     "inventory-service: HTTP_CORS_ORIGINS"),
    ("compose", COMPOSE, '  HTTP_CORS_ORIGINS: ""\n', '  HTTP_CORS_ORIGINS: "*"\n', 'allows "*"'),
    ("k8s", K8S + "config.yaml", "  QUERY_CONSOLE_ORDER_URL: http://localhost:8081\n", "",
     "QUERY_CONSOLE_ORDER_URL"),
    ("k8s", K8S + "config.yaml", "shows the stock.\n"
     '  HTTP_CORS_ORIGINS: "http://localhost:8080,http://127.0.0.1:8080"\n', "shows the stock.\n",
     "inventory-service: HTTP_CORS_ORIGINS"),
    ("dockerfile", DOCKERFILE, "COPY frontend/ frontend/\n", "", "COPY frontend/"),
    ("dockerfile", DOCKERFILE, "QUERY_CONSOLE_DIR=/usr/share/delivery-eta/console",
     "QUERY_CONSOLE_DIR=/console", "ENV QUERY_CONSOLE_DIR"),
    ("dockerfile", DOCKERFILE, "--component console", "--component docs", "console component"),
    # compose: the seed's fields
    ("compose", COMPOSE, "image: confluentinc/cp-kafka:7.5.0\n    depends_on:\n      zookeeper",
     "image: confluentinc/cp-kafka:7.4.0\n    depends_on:\n      zookeeper", "kafka: image"),
    ("compose", COMPOSE, '"5432:5432"', '"5433:5432"', "postgres: port 5432"),
    ("compose", COMPOSE, "PLAINTEXT://kafka:29092,PLAINTEXT_HOST://localhost:9092",
     "PLAINTEXT://kafka:29092", "advertised listeners"),
    ("compose", COMPOSE, "KAFKA_LISTENERS: PLAINTEXT://0.0.0.0:29092,",
     "KAFKA_LISTENERS: PLAINTEXT://0.0.0.0:29093,", "does not bind PLAINTEXT"),
    ("compose", COMPOSE, '2>&1"]\n      interval: 30s', '2>&1"]\n      interval: 10s',
     "cassandra: healthcheck interval"),
    ("compose", COMPOSE, 'redis-cli --no-auth-warning --user deta-admin ping', 'redis-cli --no-auth-warning --user deta-admin info',
     "redis: healthcheck"),
    ("compose", COMPOSE, '"exec 3<>/dev/tcp/127.0.0.1/2181"', '"exit 0"', "zookeeper: healthcheck"),
    ("compose", COMPOSE, "redis_data:/data", "redis_data:/var/lib/redis", "volume redis_data"),
    ("compose", COMPOSE, "  redis_data:\n", "  redis_data:\n  extra_data:\n", "named volumes"),
    ("compose", COMPOSE, "image: cassandra:4.1\n    # Authentication",
     "image: cassandra:4.1\n    depends_on: [redis]\n    # Authentication", "starts it independently"),
    ("compose", "infra/compose/init-postgres.sql", "CREATE DATABASE delivery_query;", "",
     "does not create database delivery_query"),
    ("compose", "infra/compose/init-roles.sh", "deta_init_role query_svc delivery_query QUERY_DB_PASSWORD",
     "", "gives database delivery_query no role"),
    ("compose", "infra/compose/init-topics.sh", "dlq.delivery-events\n", "\n", "init-topics.sh creates"),
    ("compose", "infra/compose/init-topics.sh", "  dlq.eta-events\n", "", "init-topics.sh creates"),
    ("compose", COMPOSE, "./init-roles.sh:/docker-entrypoint-initdb.d/02-init-roles.sh",
     "./init-roles.sh:/docker-entrypoint-initdb.d/00-init-roles.sh", "must run after"),
    # logical decoding for the outbox relays, the bound on a slot, the hba file
    ("compose", COMPOSE, "      - wal_level=logical\n", "      - wal_level=replica\n",
     "wal_level is 'replica'"),
    ("compose", COMPOSE, "      - max_slot_wal_keep_size=1GB\n", "      - max_slot_wal_keep_size=-1\n",
     "max_slot_wal_keep_size is '-1'"),
    ("compose", COMPOSE, "      - max_wal_senders=24\n", "      - max_wal_senders=5\n",
     "max_wal_senders is '5'"),
    ("compose", COMPOSE, "      - commit_delay=1000\n", "      - commit_delay=0\n",
     "no group commit"),
    ("compose", COMPOSE, "      - ./pg_hba.conf:/etc/postgresql/hba/pg_hba.conf:ro\n", "",
     "./pg_hba.conf is not mounted"),
    ("compose", "infra/compose/pg_hba.conf", "local   replication  postgres           trust",
     "local   replication  all                trust", "physical replication for all"),
    ("compose", "infra/compose/pg_hba.conf", "host    all          all       all      scram-sha-256",
     "host    all          all       all      scram-sha-256\nhost replication order_svc all scram-sha-256",
     "physical replication for order_svc"),
    ("k8s", K8S + "postgres.yaml", "            - max_slot_wal_keep_size=1GB\n", "",
     "differ from compose's command"),
    ("k8s", "infra/compose/pg_hba.conf", "local   replication  postgres           trust", "",
     "postgres-hba: pg_hba.conf missing or different"),
    ("k8s", K8S + "postgres.yaml", "              mountPath: /etc/postgresql/hba\n",
     "              mountPath: /etc/postgresql\n", "postgres-hba is not mounted"),
    # compose: the services
    ("compose", COMPOSE, "PGPASSWORD: ${ORDER_DB_PASSWORD:?set ORDER_DB_PASSWORD in .env (see .env.example)}",
     "PGPASSWORD: postgres", "literal"),
    ("compose", COMPOSE, "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env (see .env.example)}",
     "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:-postgres}", "POSTGRES_PASSWORD"),
    ("compose", COMPOSE, "PGPASSWORD: ${QUERY_DB_PASSWORD:?",
     "PGPASSWORD: ${ORDER_DB_PASSWORD:?", "query-api: PGPASSWORD"),
    ("compose", COMPOSE, "PGUSER: payment_svc", "PGUSER: postgres", "payment-service: PGUSER"),
    ("compose", COMPOSE, "kafka-init:\n    condition: service_completed_successfully",
     "kafka-init:\n    condition: service_started", "depends_on"),
    ("compose", COMPOSE, "      redis:\n        condition: service_healthy\n", "",
     "payment-service: depends_on"),
    ("compose", COMPOSE, '  HTTP_THREADS: "4"\n', "", "HTTP_THREADS is read by the code but not set"),
    ("compose", COMPOSE, "  PGHOST: postgres\n", "  PGHOST: postgres\n  PGHOTS: postgres\n",
     "PGHOTS is set but no code reads it"),
    ("compose", COMPOSE, "KAFKA_BOOTSTRAP_SERVERS: kafka:29092\n  KAFKA_SESSION",
     "KAFKA_BOOTSTRAP_SERVERS: localhost:9092\n  KAFKA_SESSION", "KAFKA_BOOTSTRAP_SERVERS"),
    ("compose", COMPOSE, 'SERVICE: delivery-service\n        HTTP_PORT: "8084"',
     'SERVICE: delivery-service\n        HTTP_PORT: "8080"', "delivery-service: build args"),
    ("compose", "infra/compose/.env.example", "QUERY_DB_PASSWORD=change-me\n", "",
     ".env.example does not list QUERY_DB_PASSWORD"),
    # the code reads a new variable: both deployments must follow
    ("compose", "services/order-service/main.c", "int main(void) {",
     'static const char *knob(void) { return deta_config_str("ORDER_NEW_KNOB", "x"); }\n'
     "int main(void) {", "ORDER_NEW_KNOB is read by the code but not set"),
    ("k8s", "services/order-service/main.c", "int main(void) {",
     'static const char *knob(void) { return deta_config_str("ORDER_NEW_KNOB", "x"); }\n'
     "int main(void) {", "ORDER_NEW_KNOB is read by the code but not set"),
    ("compose", "services/order-service/main.c", "int main(void) {",
     'static const char *knob(const char *n) { return deta_config_str(n + 1, "x"); }\n'
     "int main(void) {", "cannot tell which variable"),
    # a helper passing its parameter on (query-api's load_text("CASSANDRA_USERNAME", ...)):
    # its callers name the variables
    ("compose", "services/order-service/main.c", "int main(void) {",
     'static const char *knob(const char *var) { return deta_config_str(var, "x"); }\n'
     'static const char *wrapped(void) { return knob("ORDER_WRAPPED_KNOB"); }\n'
     "int main(void) {", "ORDER_WRAPPED_KNOB is read by the code but not set"),
    # the operator token: no literal, no default, in both deployments, and given
    # only to the services with operator routes (DETA_HTTP_OPERATOR)
    ("compose", COMPOSE, "OPERATOR_TOKEN: ${OPERATOR_TOKEN:?set OPERATOR_TOKEN in .env "
     "(see .env.example)}", "OPERATOR_TOKEN: ${OPERATOR_TOKEN:-0123456789abcdef0123}",
     "OPERATOR_TOKEN is '${OPERATOR_TOKEN:-"),
    ("compose", COMPOSE, "OPERATOR_TOKEN: ${OPERATOR_TOKEN:?set OPERATOR_TOKEN in .env "
     "(see .env.example)}", 'OPERATOR_TOKEN: "0123456789abcdef0123"',
     "OPERATOR_TOKEN is '0123456789abcdef0123': a literal"),
    ("compose", COMPOSE, "      OPERATOR_TOKEN: ${OPERATOR_TOKEN:?set OPERATOR_TOKEN in "
     ".env (see .env.example)}\n", "",
     "inventory-service: OPERATOR_TOKEN is read by the code but not set"),
    ("compose", "infra/compose/.env.example", "OPERATOR_TOKEN=change-me\n", "",
     ".env.example does not list OPERATOR_TOKEN"),
    ("compose", "infra/compose/.env.example", "READER_TOKEN=change-me\n", "",
     ".env.example does not list READER_TOKEN"),
    ("compose", COMPOSE, "INSTANCE_ID: order-service\n",
     "INSTANCE_ID: order-service\n      OPERATOR_TOKEN: ${OPERATOR_TOKEN:?x}\n",
     "order-service: OPERATOR_TOKEN is set but no code reads it"),
    ("compose", "services/order-service/main.c", "int main(void) {",
     "static const int operator_route = DETA_HTTP_OPERATOR;\n"
     "int main(void) {", "order-service: OPERATOR_TOKEN is read by the code but not set"),
    ("k8s", K8S + "query-api.yaml",
     "            - name: OPERATOR_TOKEN\n              valueFrom:\n                secretKeyRef:\n"
     "                  name: deta-credentials\n                  key: OPERATOR_TOKEN\n", "",
     "query-api: OPERATOR_TOKEN is read by the code but not set"),
    ("k8s", K8S + "query-api.yaml",
     "            - name: OPERATOR_TOKEN\n              valueFrom:\n                secretKeyRef:\n"
     "                  name: deta-credentials\n                  key: OPERATOR_TOKEN\n",
     '            - name: OPERATOR_TOKEN\n              value: "0123456789abcdef0123"\n',
     "OPERATOR_TOKEN must come from a Secret"),
    ("k8s", K8S + "secrets.env.example", "OPERATOR_TOKEN=change-me\n", "",
     "has no key OPERATOR_TOKEN"),
    ("k8s", K8S + "config.yaml", '  QUERY_API_CONSUMER_WORKERS: "2"\n',
     '  QUERY_API_CONSUMER_WORKERS: "2"\n  OPERATOR_TOKEN: "0123456789abcdef0123"\n',
     "OPERATOR_TOKEN is a password"),
    # the table of the services (services/services.tsv) is what both deployments
    # are checked against: a port or a database changed there alone is caught
    ("compose", "services/services.tsv", "delivery-service\t8084\tdelivery_db",
     "delivery-service\t8085\tdelivery_db", "delivery-service: build args"),
    ("k8s", "services/services.tsv", "delivery-service\t8084\tdelivery_db",
     "delivery-service\t8085\tdelivery_db", "delivery-service: container port 8085 missing"),
    ("compose", "services/services.tsv", "query-api\t8080\tdelivery_query",
     "query-api\t8080\tdelivery_read", "does not create database delivery_read"),
    ("k8s", "services/services.tsv", "order-service\t8081\torder_db\n", "",
     "expected five services"),
    # k8s
    ("k8s", K8S + "order-service.yaml", "path: /actuator/health/readiness", "path: /ready",
     "readinessProbe must GET"),
    # static group membership: StatefulSets (stable pod names), KAFKA_STATIC_MEMBERSHIP on
    ("k8s", K8S + "payment-service.yaml", "kind: StatefulSet\n", "kind: Deployment\n",
     "payment-service: a Deployment; must be a StatefulSet"),
    ("k8s", K8S + "config.yaml", 'KAFKA_STATIC_MEMBERSHIP: "on"', 'KAFKA_STATIC_MEMBERSHIP: "off"',
     "KAFKA_STATIC_MEMBERSHIP is 'off'"),
    ("k8s", K8S + "delivery-service.yaml", "serviceName: delivery-service\n",
     "serviceName: delivery\n", "delivery-service: the StatefulSet's serviceName is 'delivery'"),
    ("k8s", K8S + "query-api.yaml", "fieldPath: metadata.name", "fieldPath: metadata.uid",
     "query-api: INSTANCE_ID must be the pod's name"),
    ("k8s", K8S + "payment-service.yaml",
     "          limits:\n              cpu: 500m\n              memory: 256Mi\n          securityContext",
     "          securityContext", "no limits.cpu"),
    ("k8s", K8S + "payment-service.yaml",
     "            limits:\n              cpu: 500m\n              memory: 256Mi\n          securityContext",
     "            limits:\n              cpu: 500m\n          securityContext", "no limits.memory"),
    ("k8s", K8S + "delivery-service.yaml",
     "              valueFrom:\n                secretKeyRef:\n                  name: deta-credentials\n"
     "                  key: DELIVERY_DB_PASSWORD",
     '              value: "hunter2"', "must come from a Secret"),
    ("k8s", K8S + "query-api.yaml", "key: QUERY_DB_PASSWORD", "key: QUERY_PASSWORD", "has no key"),
    ("k8s", K8S + "inventory-service.yaml", "key: INVENTORY_DB_PASSWORD", "key: ORDER_DB_PASSWORD",
     "inventory-service: PGPASSWORD"),
    ("k8s", K8S + "cassandra.yaml", "image: cassandra:4.1", "image: cassandra:4.0",
     "cassandra: image"),
    ("k8s", K8S + "redis.yaml", 'deta-admin ping | grep -q PONG"]\n            periodSeconds: 10',
     'deta-admin ping | grep -q PONG"]\n            periodSeconds: 5', "readiness period"),
    ("k8s", K8S + "postgres.yaml", 'command: ["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres"]\n            periodSeconds: 10',
     'command: ["true"]\n            periodSeconds: 10', "postgres: readiness probe"),
    ("k8s", K8S + "kafka.yaml", "value: PLAINTEXT://0.0.0.0:9092",
     "value: PLAINTEXT://0.0.0.0:9092,PLAINTEXT_HOST://0.0.0.0:29092", "single PLAINTEXT listener"),
    ("k8s", "infra/compose/init-postgres.sql", "CREATE DATABASE order_db;",
     "CREATE DATABASE order_db;\nCREATE DATABASE spare;", "postgres-init: init-postgres.sql"),
    ("k8s", "infra/compose/init-topics.sh", "set -euo pipefail", "set -eu",
     "kafka-init-scripts: init-topics.sh differs"),
    ("k8s", K8S + "redis.yaml", "      enableServiceLinks: false\n", "", "enableServiceLinks"),
    ("k8s", K8S + "kustomization.yaml", "  - redis.yaml\n", "", "redis.yaml is not in"),
    ("k8s", K8S + "order-service.yaml", "runAsNonRoot: true", "runAsNonRoot: false", "non-root"),
    ("k8s", K8S + "config.yaml", "  LOG_LEVEL: info\n", "  LOG_LEVEL: info\n  PGPASSWORD: postgres\n",
     "is a password"),
    ("k8s", K8S + "secrets.env.example", "ORDER_DB_PASSWORD=change-me", "ORDER_DB_PASSWORD=hunter2",
     "placeholders only"),
    ("k8s", K8S + "config.yaml", "  PGUSER: query_svc\n", "", "query-api: PGUSER"),
    # The Kafka credentials may be empty (no default, ${VAR?...}), nothing else.
    ("compose", COMPOSE, "KAFKA_SASL_PASSWORD: ${PAYMENT_KAFKA_PASSWORD?",
     "KAFKA_SASL_PASSWORD: ${PAYMENT_KAFKA_PASSWORD:-", "a literal or defaulted password"),
    ("compose", COMPOSE, "KAFKA_SASL_PASSWORD: ${QUERY_KAFKA_PASSWORD?",
     "KAFKA_SASL_PASSWORD: ${QUERY_DB_PASSWORD?", "no *_KAFKA_*PASSWORD key"),
    ("compose", COMPOSE, "PGPASSWORD: ${ORDER_DB_PASSWORD:?", "PGPASSWORD: ${ORDER_DB_PASSWORD?",
     "a literal or defaulted password"),
    ("k8s", K8S + "secrets.env.example", "PAYMENT_KAFKA_PASSWORD=\n",
     "PAYMENT_KAFKA_PASSWORD=hunter2\n", "placeholders only"),
    ("k8s", K8S + "secrets.env.example", "ORDER_DB_PASSWORD=change-me", "ORDER_DB_PASSWORD=",
     "placeholders only"),
    ("k8s", K8S + "order-service.yaml", "name: order-service-config", "name: order-config",
     "order-config does not exist"),
    ("k8s", K8S + "zookeeper.yaml", "              memory: 256Mi\n            limits:",
     "              memory: 1Gi\n            limits:", "above its limit"),
    # Cassandra (issue 13): query-api on the seed's Cassandra, as a role that is not a
    # superuser, after Cassandra is healthy and its role exists; authentication on; no
    # password written anywhere
    ("compose", COMPOSE, "      QUERY_STORE: cassandra\n", "", "query-api: QUERY_STORE is None"),
    ("compose", COMPOSE, "QUERY_STORE: cassandra", "QUERY_STORE: postgres",
     "query-api: QUERY_STORE is 'postgres'"),
    ("compose", COMPOSE, "      cassandra:\n        condition: service_healthy\n      cassandra-init:",
     "      cassandra-init:", "query-api: depends_on"),
    ("compose", COMPOSE, "      cassandra-init:\n        condition: service_completed_successfully",
     "      cassandra-init:\n        condition: service_started", "query-api: depends_on"),
    ("compose", COMPOSE, "      cassandra:\n        condition: service_healthy\n    restart: \"no\"",
     "      cassandra:\n        condition: service_started\n    restart: \"no\"",
     "cassandra-init: must depend on cassandra (service_healthy)"),
    ("compose", COMPOSE, "CASSANDRA_PASSWORD: ${CASSANDRA_QUERY_API_PASSWORD:?set CASSANDRA_QUERY_API_PASSWORD "
     "in .env (see .env.example)}", 'CASSANDRA_PASSWORD: "0123456789abcdef"',
     "CASSANDRA_PASSWORD is '0123456789abcdef': a literal"),
    ("compose", COMPOSE, "CASSANDRA_PASSWORD: ${CASSANDRA_QUERY_API_PASSWORD:?",
     "CASSANDRA_PASSWORD: ${CASSANDRA_SUPERUSER_PASSWORD:?",
     "CASSANDRA_PASSWORD must be the secrets file's CASSANDRA_QUERY_API_PASSWORD"),
    ("compose", COMPOSE, "CASSANDRA_USERNAME: query_api", "CASSANDRA_USERNAME: cassandra",
     "not a role init-cassandra.sh makes"),
    ("compose", COMPOSE, "CASSANDRA_LOCAL_DC: dc1", "CASSANDRA_LOCAL_DC: datacenter1",
     "CASSANDRA_LOCAL_DC is 'datacenter1'"),
    ("compose", COMPOSE, "CASSANDRA_DC: dc1", "CASSANDRA_DC: dc2", "cassandra: CASSANDRA_DC is 'dc2'"),
    ("compose", COMPOSE, "CASSANDRA_KEYSPACE: delivery_query", "CASSANDRA_KEYSPACE: delivery",
     "CASSANDRA_KEYSPACE is 'delivery'"),
    ("compose", COMPOSE, 'CASSANDRA_REPLICATION_FACTOR: "1"', 'CASSANDRA_REPLICATION_FACTOR: "3"',
     "CASSANDRA_REPLICATION_FACTOR is '3'"),
    ("compose", COMPOSE, "CASSANDRA_CONTACT_POINTS: cassandra", "CASSANDRA_CONTACT_POINTS: localhost",
     "CASSANDRA_CONTACT_POINTS"),
    ("compose", COMPOSE, "CASSANDRA_CONTACT_POINTS: cassandra", "CASSANDRA_CONTACT_POINTS: cassandra:9142",
     "CASSANDRA_CONTACT_POINTS"),
    ("compose", COMPOSE, "CASSANDRA_READ_CONSISTENCY: LOCAL_QUORUM", "CASSANDRA_READ_CONSISTENCY: LOCAL_QUROUM",
     "not a consistency level"),
    ("compose", COMPOSE, '    entrypoint: ["bash", "/init-cassandra.sh", "--server"]\n', "",
     "cassandra: must start through init-cassandra.sh --server"),
    ("compose", COMPOSE, "test: [\"CMD-SHELL\", \"cqlsh -e 'describe cluster' -u cassandra",
     "test: [\"CMD\", \"cqlsh\", \"-e\", \"describe cluster\"]\n      x: [\"cqlsh -e 'describe cluster' -u cassandra",
     "the healthcheck must log in"),
    ("compose", COMPOSE, "      CASSANDRA_QUERY_API_PASSWORD: ${CASSANDRA_QUERY_API_PASSWORD:?set "
     "CASSANDRA_QUERY_API_PASSWORD in .env (see .env.example)}\n", "",
     "cassandra-init: CASSANDRA_QUERY_API_PASSWORD"),
    ("compose", "infra/compose/.env.example", "CASSANDRA_QUERY_API_PASSWORD=change-me\n", "",
     ".env.example does not list CASSANDRA_QUERY_API_PASSWORD"),
    ("compose", CASSANDRA_INIT, "AND LOGIN = true AND SUPERUSER = false;\nALTER",
     "AND LOGIN = true AND SUPERUSER = true;\nALTER", "makes a superuser"),
    ("compose", CASSANDRA_INIT, "WITH PASSWORD = '$pw' AND LOGIN = true AND SUPERUSER = false;\nALTER",
     "WITH PASSWORD = '$pw' AND LOGIN = true;\nALTER", "does not say SUPERUSER = false"),
    ("compose", CASSANDRA_INIT, "WITH PASSWORD = '$pw' AND LOGIN = true AND SUPERUSER = false;\nALTER",
     "WITH PASSWORD = 'hunter2hunter2' AND LOGIN = true AND SUPERUSER = false;\nALTER",
     "a literal password (PASSWORD = 'hunter2hunter2')"),
    ("compose", CASSANDRA_INIT, "ALTER ROLE $SUPERUSER WITH PASSWORD = '$(cql_quote \"$want\")';\n", "",
     "does not replace the superuser's default password"),
    ("compose", CASSANDRA_INIT, 'grant query_api "$admin" CREATE ON ALL KEYSPACES',
     'grant query_api "$admin" ALL PERMISSIONS ON ALL KEYSPACES', "every keyspace, not its own"),
    ("compose", CASSANDRA_INIT, '  grant query_api "$admin" CREATE ON ALL KEYSPACES\n', "",
     "cannot create its keyspace"),
    ("compose", CASSANDRA_INIT, 'grant query_api "$admin" CREATE ON ALL KEYSPACES',
     'grant query_api "$admin" CREATE ON ALL KEYSPACES\n  grant query_api "$admin" ALTER ON ALL ROLES',
     "roles are the superuser's"),
    ("compose", CASSANDRA_INIT, '  init_role  query_api  CASSANDRA_QUERY_API_PASSWORD "$admin"\n', "",
     "not a role init-cassandra.sh makes"),
    ("k8s", K8S + "config.yaml", "  QUERY_STORE: cassandra\n", "", "query-api: QUERY_STORE is None"),
    ("k8s", K8S + "config.yaml", "CASSANDRA_USERNAME: query_api", "CASSANDRA_USERNAME: cassandra",
     "not a role init-cassandra.sh makes"),
    ("k8s", K8S + "config.yaml", "CASSANDRA_LOCAL_DC: dc1", "CASSANDRA_LOCAL_DC: dc2",
     "CASSANDRA_LOCAL_DC is 'dc2'"),
    ("k8s", K8S + "config.yaml", "  CASSANDRA_USERNAME: query_api\n",
     "  CASSANDRA_USERNAME: query_api\n  CASSANDRA_PASSWORD: hunter2hunter2\n", "is a password"),
    ("k8s", K8S + "query-api.yaml",
     "            - name: CASSANDRA_PASSWORD\n              valueFrom:\n                secretKeyRef:\n"
     "                  name: deta-credentials\n                  key: CASSANDRA_QUERY_API_PASSWORD\n", "",
     "CASSANDRA_PASSWORD must be the secrets file's CASSANDRA_QUERY_API_PASSWORD"),
    ("k8s", K8S + "query-api.yaml",
     "            - name: CASSANDRA_PASSWORD\n              valueFrom:\n                secretKeyRef:\n"
     "                  name: deta-credentials\n                  key: CASSANDRA_QUERY_API_PASSWORD\n",
     '            - name: CASSANDRA_PASSWORD\n              value: "0123456789abcdef"\n',
     "CASSANDRA_PASSWORD must come from a Secret"),
    ("k8s", K8S + "query-api.yaml", 'command: ["bash", "/scripts/init-cassandra.sh", "--wait"]',
     'command: ["bash", "-c", "true"]', "no init container waits for its Cassandra role"),
    ("k8s", K8S + "query-api.yaml", "key: CASSANDRA_QUERY_API_PASSWORD", "key: CASSANDRA_SUPERUSER_PASSWORD",
     "waits with a password other than its CASSANDRA_PASSWORD"),
    ("k8s", K8S + "secrets.env.example", "CASSANDRA_SUPERUSER_PASSWORD=change-me\n", "",
     "has no key CASSANDRA_SUPERUSER_PASSWORD"),
    ("k8s", CASSANDRA_INIT, "set -euo pipefail", "set -eu",
     "cassandra-init-scripts: init-cassandra.sh missing or different"),
    ("k8s", K8S + "cassandra.yaml", '          command: ["bash", "/scripts/init-cassandra.sh", "--server"]\n',
     "", "cassandra: must start through init-cassandra.sh --server"),
    ("k8s", K8S + "cassandra.yaml", "-u cassandra -p \"$CASSANDRA_SUPERUSER_PASSWORD\" >/dev/null 2>&1 ||\n"
     "                  cqlsh -e 'describe cluster' -u cassandra -p cassandra >/dev/null 2>&1", "",
     "the readiness probe must log in"),
    ("k8s", K8S + "cassandra.yaml", "kind: Job\nmetadata:\n  name: cassandra-init",
     "kind: Job\nmetadata:\n  name: cassandra-setup", "want one Job cassandra-init, found 0"),
    ("k8s", K8S + "cassandra.yaml",
     "            - name: CASSANDRA_QUERY_API_PASSWORD\n              valueFrom:\n                secretKeyRef:\n"
     "                  name: deta-credentials\n                  key: CASSANDRA_QUERY_API_PASSWORD\n", "",
     "Job cassandra-init: CASSANDRA_QUERY_API_PASSWORD"),
    ("k8s", K8S + "cassandra.yaml", "          image: cassandra:4.1\n          command: [\"bash\", "
     "\"/scripts/init-cassandra.sh\"]", "          image: cassandra:4.0\n          command: [\"bash\", "
     "\"/scripts/init-cassandra.sh\"]", "Job cassandra-init must run init-cassandra.sh"),
    # Dockerfile
    ("dockerfile", DOCKERFILE, "USER 10001:10001", "USER root", "non-root USER"),
    ("dockerfile", DOCKERFILE, "USER 10001:10001", "USER 10002", "differs from the Kubernetes"),
    ("dockerfile", DOCKERFILE, 'HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \\\n'
     '  CMD ["/usr/local/bin/deta-healthcheck"]\n', "", "no HEALTHCHECK"),
    ("dockerfile", DOCKERFILE, 'CMD ["/usr/local/bin/deta-healthcheck"]',
     "CMD curl -f http://127.0.0.1:8080/actuator/health", "no HEALTHCHECK running deta-healthcheck"),
    ("dockerfile", DOCKERFILE, "\nFROM scratch\n", "\nFROM debian:12-slim\n", "FROM scratch"),
    ("dockerfile", DOCKERFILE, "COPY --from=build /runtime/ /\n",
     "COPY --from=build /runtime/ /\nRUN chmod 0755 /usr/local/bin\n", "RUN in the runtime stage"),
    ("dockerfile", DOCKERFILE, " \\\n && /usr/local/sbin/runtime-root.sh /runtime", "",
     "does not run runtime-root.sh"),
    ("dockerfile", DOCKERFILE, "WORKDIR /src\n",
     "WORKDIR /src\nRUN curl -fsSL https://example.invalid/install.sh | sh\n", "pipes a download"),
    ("dockerfile", DOCKERFILE, "build-essential cmake pkg-config \\\n      librdkafka-dev libpq-dev libhiredis-dev",
     "build-essential cmake pkg-config \\\n      librdkafka-dev libpq-dev", "lacks libhiredis-dev"),
    ("dockerfile", DOCKERFILE, "query-api \\\n      deta-healthcheck", "query-api",
     "does not build deta-healthcheck"),
    ("dockerfile", DOCKERFILE, 'ENTRYPOINT ["/usr/local/bin/deta-service"]',
     "ENTRYPOINT /usr/local/bin/deta-service", "exec form"),
    ("dockerfile", "infra/docker/Dockerfile.dockerignore", "\nbuild\n", "\n", "does not leave out build"),
    # the build context against the build (issue 11: bench/ was added to CMakeLists.txt
    # and left out of the image's context, which broke every image build)
    ("context", DOCKERFILE, "COPY bench/ bench/\n", "", "bench"),
    ("context", "infra/docker/Dockerfile.dockerignore", "\nscripts\n", "\nscripts\nbench\n", "bench"),
    ("context", "infra/docker/Dockerfile.dockerignore", "\nscripts\n", "\nscripts\ntools/*/\n",
     "tools/healthcheck"),
    ("context", "CMakeLists.txt", "add_subdirectory(bench)\n", "add_subdirectory(bench)\nadd_subdirectory(docs)\n",
     "docs"),
    ("context", DOCKERFILE, "COPY infra/docker/runtime-root.sh", "COPY infra/docker/runtime-rootfs.sh",
     "runtime-rootfs.sh"),
    ("context", "infra/docker/Dockerfile.dockerignore", "!infra/docker/runtime-root.sh\n", "",
     "runtime-root.sh"),
    # observability (docs/observability.md): compose's Prometheus and Grafana
    ("compose", COMPOSE, "image: prom/prometheus:v2.42.0", "image: prom/prometheus:latest",
     "prometheus: image 'prom/prometheus:latest' is not pinned"),
    ("compose", COMPOSE, "      - ../observability/prometheus:/etc/prometheus:ro\n", "",
     "../observability/prometheus is not mounted"),
    ("compose", COMPOSE, "--config.file=/etc/prometheus/prometheus.yml",
     "--config.file=/etc/prometheus.yml", "--config.file='/etc/prometheus.yml'"),
    ("compose", "infra/observability/prometheus/prometheus.yml", "rule_files:\n  - rules.yml\n",
     "rule_files:\n  - alerts.yml\n", "rule file alerts.yml"),
    ("compose", "infra/observability/grafana/provisioning/datasources/prometheus.yml",
     "url: http://prometheus:9090", "url: http://localhost:9090",
     "no datasource at http://prometheus:9090"),
    ("compose", "infra/observability/grafana/provisioning/dashboards/delivery-eta.yml",
     "path: /etc/grafana/dashboards", "path: /var/lib/grafana/dashboards",
     "no dashboard provider reads /etc/grafana/dashboards"),
    ("compose", COMPOSE, "  grafana_data:\n", "", "grafana_data"),
    ("compose", COMPOSE,
     "GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD in .env (see .env.example)}",
     "GF_SECURITY_ADMIN_PASSWORD: admin", "GF_SECURITY_ADMIN_PASSWORD is 'admin'"),
    ("compose", "infra/compose/.env.example", "GRAFANA_ADMIN_PASSWORD=change-me\n", "",
     ".env.example does not list GRAFANA_ADMIN_PASSWORD"),
    ("compose", COMPOSE, "    depends_on: *deta-needs\n    ports:\n      - \"8081:8081\"",
     "    depends_on:\n      <<: *deta-needs\n      prometheus:\n        condition: service_healthy\n"
     "    ports:\n      - \"8081:8081\"", "order-service: depends on prometheus"),
]

COPIED = ["infra", "lib/src", "lib/include", "services", "scripts/deps.sh", "CMakeLists.txt",
          "lib/CMakeLists.txt", "tools", "tests", "bench"]


def copy_tree(dst):
    for rel in COPIED:
        src = os.path.join(dl.REPO, rel)
        target = os.path.join(dst, rel)
        if os.path.isdir(src):
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("secrets.env", ".env", "node_modules"))
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy(src, target)


CHECKS = {"compose": check_compose.check, "k8s": check_k8s.check,
          "dockerfile": check_dockerfile.check, "context": check_context.check}


def run(check, root):
    try:
        return CHECKS[check](root)
    except Exception as e:
        return ["%s: %s" % (type(e).__name__, e)]


def run_case(case, baselines):
    """None when the case passes, else why it did not."""
    check, rel, old, new, expect = case
    with tempfile.TemporaryDirectory(prefix="deta-mutation-") as root:
        copy_tree(root)
        path = os.path.join(root, rel)
        text = open(path, encoding="utf-8").read()
        if old not in text:
            return "the text to break is no longer in %s: %r" % (rel, old[:60])
        open(path, "w", encoding="utf-8").write(text.replace(old, new, 1))
        found = [p for p in run(check, root) if p not in baselines[check]]
    if not any(expect in p for p in found):
        return "no new problem mentions %r; new problems: %r" % (expect, found)
    return None


def main(argv):
    if len(argv) > 1:
        print("usage: test_mutations.py", file=sys.stderr)
        return 2
    check_k8s.RUN_KUSTOMIZE = False
    cases = CASES
    with tempfile.TemporaryDirectory(prefix="deta-baseline-") as root:
        copy_tree(root)
        baselines = {c: set(run(c, root)) for c in CHECKS}
    failed = 0
    for i, case in enumerate(cases, 1):
        why = run_case(case, baselines)
        label = "%2d %-10s %s: %s" % (i, case[0], case[1], case[4])
        if why:
            failed += 1
            print("FAIL " + label + "\n       " + why)
        else:
            print("ok   " + label)
    print("%d of %d mutations caught" % (len(cases) - failed, len(cases)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
