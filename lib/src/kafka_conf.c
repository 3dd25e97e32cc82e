/*
 * kafka_conf.c - the settings of the library's librdkafka handles, and where
 * librdkafka's log lines go (see kafka_internal.h for the other kafka_ files).
 *
 * Producer. Idempotent (enable.idempotence, acks=all), and no message timeout
 * (message.timeout.ms=0): librdkafka never gives up a message while the broker
 * is slow or unreachable (why: kafka_producer.c).
 *
 * Linger is 1 ms: the outbox relay and the dead letters send whole batches and
 * wait for them, so a longer linger is added to every hop of the saga.
 *
 * Consumer. Offsets are stored by the loop (enable.auto.offset.store=false),
 * only once a message is handled or its dead letter acknowledged; auto-commit
 * sends the stored offsets. A group with no committed offset starts at the
 * earliest message.
 *
 * Fetch latency. fetch.wait.max.ms is KAFKA_FETCH_WAIT_MAX_MS, by default 500,
 * librdkafka's own. A real broker answers a fetch as soon as fetch.min.bytes (1)
 * has arrived, so there the setting costs no latency and only bounds how often
 * an idle consumer asks: twice a second per broker it fetches from, where 10 ms
 * would make every idle consumer send 100 requests a second to each broker for
 * nothing. librdkafka's mock cluster (the local broker) answers only when the
 * wait has passed, data or not, so with 500 every hop of the saga would cost
 * half a second there: the local stack, the tests and the benchmark set 10
 * (scripts/stack.sh's mock tuning, written into stack.env). A consumer off the
 * saga's critical path asks for a longer wait (deta_consumer_opts_t.
 * fetch_wait_min_ms, 100): on the mock, each idle handle asking every 10 ms
 * cost its service about 4 ms of CPU a second; with the default it changes
 * nothing.
 *
 * Memory. librdkafka prefetches up to queued.max.messages.kbytes (64 MB) per
 * consumer, in fetch answers of up to fetch.max.bytes (50 MB): sized for big
 * brokers, and a service has a few consumers. With 8 MB and 1 MB, query-api
 * catching up on a 10000-event backlog peaked at 25 MB RSS instead of 29 to 32
 * MB, as fast; 2 MB with queued.min.messages 1000 kept it under 20 MB but cut
 * its catch-up rate several times (measured on the local stack, issue #6).
 * That cut was the pause-and-resume stall that kafka_workers.c's backpressure
 * has since removed: with 2 MB (queued.min.messages left alone) query-api took
 * an 18000-event backlog in about 5 s (about 4 s with 8 MB) and peaked at 19.8
 * to 20.1 MB, where with 8 MB the benchmark's ramp, once inventory-service let
 * 240 and 320 orders/s through, took it to 23.7 MB (issue #18). So 2 MB.
 *
 * Transport. Every handle the library makes (the producer, which also sends the
 * dead letters, and each consumer) gets cfg->kafka_security: security.protocol,
 * and with SASL sasl.mechanisms, sasl.username and sasl.password, with TLS
 * ssl.ca.location, ssl.certificate.location, ssl.key.location, ssl.key.password
 * and ssl.endpoint.identification.algorithm (config_kafka.c checked them). A
 * setting not given is left at librdkafka's default (no CA: the system's).
 * librdkafka marks the passwords sensitive: its configuration dumps (debug=conf,
 * which the library never sets) print them redacted; nothing here logs a value.
 *
 * Assignment strategy: cooperative-sticky (incremental rebalances: members that
 * keep their partitions keep consuming while another joins or leaves). It works
 * against librdkafka's mock cluster too, since the assignment is computed by the
 * group leader on the client side.
 *
 * Static membership (KAFKA_STATIC_MEMBERSHIP on, config.c): each consumer joins
 * as group.instance.id <INSTANCE_ID>.<its first topic> (a service may run two
 * consumers in one group, on different topics; the id must differ). A static
 * member that stops sends no LeaveGroup, and one that comes back with the same
 * id within session.timeout.ms takes its partitions back with no rebalance of
 * the group: a restarted pod of a StatefulSet (stable names) costs its own
 * partitions' few seconds and nobody else's. The price: a static member that
 * stops for good holds its partitions, unread, until the session times out;
 * hence off by default and with the pid-based default INSTANCE_ID, which
 * changes at every start. The session timeout stays KAFKA_SESSION_TIMEOUT_MS:
 * Kafka's default, 45 s, covers a container restart and a rolling update's pod
 * replacement (a few to about 30 s), and bounds how long a lost node's
 * partitions wait.
 */
#include "kafka_internal.h"

#include <stdio.h>

#include "deta/log.h"

#define DETA_KAFKA_MESSAGE_TIMEOUT "0" /* librdkafka never gives a message up */
#define DETA_KAFKA_LINGER_MS "1" /* the relay sends whole batches: waiting adds latency */
#define DETA_KAFKA_QUEUED_MAX_KBYTES "2048"   /* prefetch per consumer (default 64 MB) */
#define DETA_KAFKA_FETCH_MAX_BYTES "1048576"  /* one fetch answer (default 50 MB) */
#define DETA_KAFKA_ASSIGNMENT "cooperative-sticky"
#define DETA_KAFKA_MEMBER_MAX 249 /* Kafka's limit on a group.instance.id */

/* librdkafka's log lines go through deta_log. Its LOG_ERR lines (a refused
 * connection, a broker gone) are conditions it recovers from by itself: warnings
 * for us; a fatal error comes through the error callback. */
void deta_kafka_on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    deta_log_level_t lvl = level <= 4 ? DETA_LOG_WARN : level <= 6 ? DETA_LOG_INFO : DETA_LOG_DEBUG;
    deta_log(lvl, NULL, NULL, "kafka %s %s: %s", rd_kafka_name(rk), fac, buf);
}

static bool conf_set_all(rd_kafka_conf_t *conf, const char *const (*kv)[2], size_t n,
                         char *errstr, size_t errsize) {
    char why[256];
    for (size_t i = 0; i < n; i++) {
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], why, sizeof why) != RD_KAFKA_CONF_OK) {
            deta_errf(DETA_ERR_INVALID, errstr, errsize, "kafka setting %s=%s: %s", kv[i][0],
                      kv[i][1], why);
            return false;
        }
    }
    return true;
}

/* The transport settings on conf; errstr names the property, never its value
 * (two of them are secrets). */
static bool conf_set_security(rd_kafka_conf_t *conf, const deta_kafka_security_t *sec,
                              char *errstr, size_t errsize) {
    const char *const kv[][2] = {
        {"security.protocol", sec->protocol[0] ? sec->protocol : "PLAINTEXT"},
        {"sasl.mechanisms", sec->sasl_mechanism},
        {"sasl.username", sec->sasl_username},
        {"sasl.password", sec->sasl_password},
        {"ssl.ca.location", sec->ssl_ca_location},
        {"ssl.certificate.location", sec->ssl_certificate_location},
        {"ssl.key.location", sec->ssl_key_location},
        {"ssl.key.password", sec->ssl_key_password},
        {"ssl.endpoint.identification.algorithm", sec->ssl_endpoint_identification},
    };
    char why[256];
    for (size_t i = 0; i < sizeof kv / sizeof *kv; i++) {
        if (!kv[i][1][0])
            continue; /* not given: librdkafka's default */
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], why, sizeof why) != RD_KAFKA_CONF_OK) {
            deta_errf(DETA_ERR_INVALID, errstr, errsize, "kafka setting %s: %s", kv[i][0], why);
            return false;
        }
    }
    return true;
}

deta_err_t deta_kafka_conf_security(rd_kafka_conf_t *conf, const deta_config_t *cfg,
                                    char *errstr, size_t errsize) {
    if (!conf || !cfg)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "no configuration");
    return conf_set_security(conf, &cfg->kafka_security, errstr, errsize) ? DETA_OK
                                                                          : DETA_ERR_INVALID;
}

rd_kafka_conf_t *deta_kafka_producer_conf(const deta_config_t *cfg, char *errstr,
                                          size_t errsize) {
    const char *const kv[][2] = {
        {"bootstrap.servers", cfg->kafka_bootstrap},
        {"client.id", cfg->instance_id[0] ? cfg->instance_id : "deta"},
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"linger.ms", DETA_KAFKA_LINGER_MS},
        {"message.timeout.ms", DETA_KAFKA_MESSAGE_TIMEOUT},
    };
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf_set_all(conf, kv, sizeof kv / sizeof *kv, errstr, errsize) ||
        !conf_set_security(conf, &cfg->kafka_security, errstr, errsize)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

/* With static membership, group.instance.id on conf: <INSTANCE_ID>.<member>. */
static bool conf_set_member(rd_kafka_conf_t *conf, const deta_config_t *cfg, const char *member,
                            char *errstr, size_t errsize) {
    if (!cfg->kafka_static_membership)
        return true;
    char id[DETA_KAFKA_MEMBER_MAX + 1], why[256];
    int n = snprintf(id, sizeof id, "%s.%s", cfg->instance_id, member ? member : "");
    if (n < 0 || (size_t)n >= sizeof id) {
        deta_errf(DETA_ERR_INVALID, errstr, errsize,
                  "group.instance.id longer than %d bytes: %s.%.40s...", DETA_KAFKA_MEMBER_MAX,
                  cfg->instance_id, member ? member : "");
        return false;
    }
    if (rd_kafka_conf_set(conf, "group.instance.id", id, why, sizeof why) != RD_KAFKA_CONF_OK) {
        deta_errf(DETA_ERR_INVALID, errstr, errsize, "kafka setting group.instance.id=%s: %s", id,
                  why);
        return false;
    }
    return true;
}

rd_kafka_conf_t *deta_kafka_consumer_conf(const deta_config_t *cfg, const char *group,
                                          const char *member, int fetch_wait_min_ms,
                                          char *errstr, size_t errsize) {
    int session = cfg->kafka_session_timeout_ms > 0 ? cfg->kafka_session_timeout_ms : 45000;
    int fetch_wait = cfg->kafka_fetch_wait_max_ms > 0 ? cfg->kafka_fetch_wait_max_ms : 500;
    if (fetch_wait < fetch_wait_min_ms)
        fetch_wait = fetch_wait_min_ms;
    char session_s[16], heartbeat_s[16], fetch_wait_s[16];
    snprintf(session_s, sizeof session_s, "%d", session);
    snprintf(fetch_wait_s, sizeof fetch_wait_s, "%d", fetch_wait);
    snprintf(heartbeat_s, sizeof heartbeat_s, "%d", session / 3 > 0 ? session / 3 : 1);
    const char *const kv[][2] = {
        {"bootstrap.servers", cfg->kafka_bootstrap},
        {"client.id", cfg->instance_id[0] ? cfg->instance_id : group},
        {"group.id", group},
        {"session.timeout.ms", session_s},
        {"heartbeat.interval.ms", heartbeat_s},
        {"enable.auto.commit", "true"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        {"partition.assignment.strategy", DETA_KAFKA_ASSIGNMENT},
        {"fetch.wait.max.ms", fetch_wait_s},
        {"queued.max.messages.kbytes", DETA_KAFKA_QUEUED_MAX_KBYTES},
        {"fetch.max.bytes", DETA_KAFKA_FETCH_MAX_BYTES},
    };
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf_set_all(conf, kv, sizeof kv / sizeof *kv, errstr, errsize) ||
        !conf_set_member(conf, cfg, member, errstr, errsize) ||
        !conf_set_security(conf, &cfg->kafka_security, errstr, errsize)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}
