/*
 * events.c - payment-service's consumer of raw.inventory-events.
 *
 * Why not events.h's dispatcher: that opens the database transaction first and
 * claims the event in processed_events inside it. Payments follow the three
 * layers of CONTRACTS.md instead, and the lock must be held BEFORE the
 * transaction (and around the gateway call, which must not sit inside a
 * transaction). For each inventory.reserved (other types are ignored):
 *
 *   1. marker payment:dedup:{eventId} present -> a duplicate, done;
 *   2. lock payment-lock:order:{orderId} with a fresh random token (SET NX PX
 *      30000); held by another -> DETA_ERR_TRANSIENT, the consumer retries later;
 *   3. the order's claim in Postgres (payment_claims, store.c) is taken, or the
 *      attempt is retried like a held lock; the payments table already has the
 *      event id or the order -> a duplicate; else the gateway decides, and ONE
 *      transaction ends the claim and writes the payment and its
 *      payment.authorized / payment.failed to the outbox (a twin that committed
 *      first turns ours into a duplicate, not an error);
 *   4. after the commit, the marker is set for 24 h;
 *   5. the lock is released by compare-and-delete, on every path once taken.
 *
 * Steps 1 and 2 go to Redis in one pipelined round trip (guard.c), and so do
 * steps 4 and 5.
 *
 * The claim is taken whether Redis is up or not, because "Redis is down" is each
 * instance's own view: one instance that cannot reach Redis and another that can
 * would otherwise both pass their lock and both call the gateway for one order
 * (one row would still win, but the customer would be charged twice). With Redis
 * unreachable, steps 1, 2, 4 and 5 are skipped (guard.c says so once) and the
 * claim alone keeps the gateway called once.
 *
 * Throughput with a slow gateway. The gateway call is a wait, not work: each
 * worker thread waits for its own call, so PAYMENT_WORKERS (default 32) calls
 * can be in flight, and a 100 ms gateway allows about 320 payments/s. No
 * Postgres connection is held during the wait: the workers borrow one of
 * PAYMENT_DB_CONNECTIONS (default 4) shared connections for the claim, and again
 * for the record, so the database sees 4 sessions however many calls wait. (A
 * session advisory lock held across the call, as before, pinned a connection to
 * every waiting worker.) The gateway call must end well within the claim's 30 s,
 * and within a graceful stop's time for the consumers (0.6 of
 * DETA_SHUTDOWN_TIMEOUT_MS, 10 s): PAYMENT_GATEWAY_LATENCY_MS is at most 5 s.
 *
 * Retries: a lock held by another consumer is normally released within a gateway
 * call, but one left by a crashed consumer (Redis lock or claim) lives until its
 * 30 s expiry. The retry budget (PAYMENT_MAX_RETRIES 12 with the consumer's
 * backoff 0.2, 0.4, ... capped at 5 s: 41 s in all) outlasts that with room to
 * spare, so an orphaned lock delays an order instead of sending it to the dead
 * letters.
 *
 * The one window left: a crash (SIGKILL, power) after the gateway answered and
 * before the record committed. The claim then expires and the event's retry
 * calls the gateway again. The simulated gateway answers the same; a real one
 * must be given the payment's idempotency key (the event id) so that it too
 * answers with the first charge instead of making a second. A database failure
 * in that window is retried in place instead (record_decided), and a stopping
 * service does not start a gateway call (the event comes again after the
 * restart).
 *
 * Thread safety: with deta_consumer_opts_t.workers > 1 several threads run this
 * handler at once (the messages of one order always on the same thread). The
 * handler keeps no state of its own between calls; each thread uses its own
 * Redis connection, borrows a shared Postgres one, and metrics are thread-safe.
 */
#include "events.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deta/log.h"
#include "deta/topics.h"
#include "store.h"

#define PAYMENT_MAX_RETRIES 12
#define RECORD_ATTEMPTS 4     /* a decided payment's record, tried in place */
#define RECORD_BACKOFF_MS 100 /* doubling: 0.7 s in all */

typedef enum outcome {
    OUTCOME_NEW,       /* a payment was decided and recorded */
    OUTCOME_DUP_REDIS, /* the marker said: done before */
    OUTCOME_DUP_DB,    /* the payments table said: done before */
} outcome_t;

struct payment_events {
    deta_service_t *svc;
    payment_settings_t settings;
    payment_guard_t *guard;
    deta_db_shared_t *db; /* settings.db_connections, shared by the workers */
    deta_counter_t *processed;
    deta_counter_t *failed;
    deta_counter_t *duplicate;
    deta_counter_t *redis_hit;
    deta_counter_t *db_hit;
    deta_counter_t *lock_timeout;
    deta_histogram_t *duration;
    deta_counter_t *gateway_calls;
    deta_gauge_t *in_flight;   /* gateway calls waiting now */
    deta_gauge_t *connections; /* shared Postgres connections opened */
};

payment_events_t *payment_events_new(deta_service_t *svc, const payment_settings_t *settings,
                                     payment_guard_t *guard) {
    payment_events_t *pe = calloc(1, sizeof *pe);
    if (!pe)
        return NULL;
    deta_metrics_t *m = deta_service_metrics(svc);
    pe->svc = svc;
    pe->settings = *settings;
    pe->guard = guard;
    pe->db = deta_db_shared_new(deta_service_config(svc), settings->db_connections);
    if (!pe->db) {
        free(pe);
        return NULL;
    }
    pe->processed = deta_counter(m, "payment_processed_total",
                                 "Payments decided and recorded (authorized or declined)", NULL);
    pe->failed = deta_counter(m, "payment_failed_total", "Payments the gateway declined", NULL);
    pe->duplicate = deta_counter(m, "payment_duplicate_total",
                                 "inventory.reserved events recognised as already paid", NULL);
    pe->redis_hit = deta_counter(m, "payment_dedup_redis_hit_total",
                                 "Duplicates caught by the Redis marker", NULL);
    pe->db_hit = deta_counter(m, "payment_dedup_db_hit_total",
                              "Duplicates caught by the payments table's unique keys", NULL);
    pe->lock_timeout = deta_counter(m, "payment_lock_timeout_total",
                                    "Attempts that found the order's payment lock or claim held", NULL);
    pe->duration = deta_histogram(m, "payment_processing_duration_seconds",
                                  "Time to handle one inventory.reserved event", NULL, NULL, 0);
    pe->gateway_calls = deta_counter(m, "payment_gateway_calls_total",
                                     "Calls to the payment gateway (one per order charged)", NULL);
    pe->in_flight = deta_gauge(m, "payment_gateway_calls_in_flight",
                               "Gateway calls waiting for their answer now", NULL);
    pe->connections = deta_gauge(m, "payment_db_connections",
                                 "Postgres connections the consumer's workers share (opened)",
                                 NULL);
    return pe;
}

void payment_events_free(payment_events_t *pe) {
    if (!pe)
        return;
    deta_db_shared_free(pe->db);
    free(pe);
}

/* ---- the steps ---- */

static void sleep_ms(long ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static bool stopping(const payment_events_t *pe) {
    return atomic_load(deta_service_stopping(pe->svc));
}

/* The decided payment and its event recorded in the one transaction that ends
 * the claim. A transient failure here comes after the gateway answered, so it is
 * retried in place with the same decision (RECORD_ATTEMPTS, well within the
 * claim's life): a database blip must not send the message back to be charged
 * again. Only when that fails too is the claim given back. */
static deta_err_t record_decided(payment_events_t *pe, const payment_t *p, const char *holder,
                                 bool *recorded, char *errstr, size_t errsize) {
    deta_event_t ev;
    deta_err_t err = payment_event_build(p, &ev, errstr, errsize);
    if (err)
        return err;
    for (int attempt = 1;; attempt++) {
        deta_db_t *db = deta_db_shared_take(pe->db, 5000);
        if (!db) {
            err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
            break;
        }
        err = payment_store_record(db, p, &ev, holder, recorded, errstr, errsize);
        bool again = err == DETA_ERR_TRANSIENT && attempt < RECORD_ATTEMPTS && !stopping(pe);
        if ((err || !*recorded) && !again) /* not ended by a record: give it back */
            payment_store_unclaim(db, p->req.order_id, holder);
        deta_db_shared_give(pe->db, db);
        if (!again)
            break;
        DETA_WARN("payment %s decided but not recorded (attempt %d of %d): %s", p->payment_id,
                  attempt, RECORD_ATTEMPTS, errstr ? errstr : "");
        sleep_ms(RECORD_BACKOFF_MS << (attempt - 1));
    }
    deta_event_clear(&ev);
    return err;
}

/* The gateway's decision and its wait (no connection held), then the record. */
static deta_err_t decide_and_record(payment_events_t *pe, const payment_request_t *req,
                                    const char *holder, payment_t *p, outcome_t *out,
                                    char *errstr, size_t errsize) {
    payment_decision_t decision = payment_gateway_decide(&pe->settings, req);
    deta_counter_inc(pe->gateway_calls);
    deta_gauge_add(pe->in_flight, 1);
    if (pe->settings.gateway_latency_ms > 0)
        sleep_ms(pe->settings.gateway_latency_ms); /* the simulated gateway */
    deta_gauge_add(pe->in_flight, -1);
    payment_init(p, req, decision);
    bool recorded = false;
    deta_err_t err = record_decided(pe, p, holder, &recorded, errstr, errsize);
    *out = recorded ? OUTCOME_NEW : OUTCOME_DUP_DB;
    return err;
}

/* Step 3: the order's claim in Postgres first, so that two consumers cannot both
 * find no payment and both call the gateway, whatever each thinks of Redis; then
 * the payments table's verdict; then the gateway and the record. */
static deta_err_t record_once(payment_events_t *pe, const payment_request_t *req,
                              const char *holder, payment_t *p, outcome_t *out, char *errstr,
                              size_t errsize) {
    *out = OUTCOME_DUP_DB;
    deta_db_t *db = deta_db_shared_take(pe->db, 5000);
    deta_gauge_set(pe->connections, deta_db_shared_opened(pe->db));
    if (!db)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    bool claimed = false, found = false;
    deta_err_t err = payment_store_claim(db, req->order_id, holder, &claimed, errstr, errsize);
    if (!err && claimed) {
        err = payment_store_find(db, req->event_id, req->order_id, &found, NULL, errstr,
                                 errsize);
        if (!err && !found && stopping(pe))
            err = deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                            "stopping: the gateway is not called, the event comes again");
        if (err || found)
            payment_store_unclaim(db, req->order_id, holder);
    }
    deta_db_shared_give(pe->db, db);
    if (err || found)
        return err;
    if (!claimed) {
        deta_counter_inc(pe->lock_timeout);
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "the order's payment claim in Postgres is held by another consumer");
    }
    return decide_and_record(pe, req, holder, p, out, errstr, errsize);
}

/* Steps 1 to 5: steps 1+2 are one Redis round trip, and so are 4+5. */
static deta_err_t charge_once(payment_events_t *pe, const payment_request_t *req, payment_t *p,
                              outcome_t *out, char *errstr, size_t errsize) {
    char token[DETA_UUID_LEN + 1]; /* holds the Redis lock and the claim */
    deta_uuid_new(token);
    guard_entry_t entry = payment_guard_enter(pe->guard, req->event_id, req->order_id, token);
    if (entry == GUARD_DUPLICATE) {
        *out = OUTCOME_DUP_REDIS;
        return DETA_OK;
    }
    if (entry == GUARD_BUSY) {
        deta_counter_inc(pe->lock_timeout);
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "the order's payment lock is held by another consumer");
    }
    deta_err_t err = record_once(pe, req, token, p, out, errstr, errsize);
    if (entry == GUARD_LOCKED)
        payment_guard_leave(pe->guard, req->event_id, req->order_id, token, err == DETA_OK);
    return err;
}

/* ---- reporting ---- */

static double seconds_since(const struct timespec *t0) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static void report_success(payment_events_t *pe, const deta_event_t *ev, outcome_t out,
                           const payment_t *p) {
    if (out != OUTCOME_NEW) {
        bool redis = out == OUTCOME_DUP_REDIS;
        deta_counter_inc(pe->duplicate);
        deta_counter_inc(redis ? pe->redis_hit : pe->db_hit);
        deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                 "inventory.reserved %s is a duplicate (caught by %s): nothing charged",
                 ev->event_id, redis ? "the Redis marker" : "the payments table");
        return;
    }
    deta_counter_inc(pe->processed);
    char amount[DETA_MONEY_STRLEN];
    deta_money_format(p->req.amount, amount);
    if (p->decision.authorized) {
        deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                 "payment %s authorized: %s %s", p->payment_id, amount, p->req.currency);
    } else {
        deta_counter_inc(pe->failed);
        deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                 "payment %s declined (%s): %s %s", p->payment_id, p->decision.reason, amount,
                 p->req.currency);
    }
}

static void report_failure(const deta_event_t *ev, const deta_kafka_msg_t *msg, deta_err_t err,
                           const char *why) {
    deta_log(err == DETA_ERR_TRANSIENT ? DETA_LOG_WARN : DETA_LOG_ERROR, ev->order_id,
             ev->correlation_id, "inventory.reserved %s not processed (%s, attempt %d): %s",
             ev->event_id, deta_err_name(err), msg->attempt + 1, why);
}

/* ---- the handler ---- */

static bool key_is_order(const deta_kafka_msg_t *msg, const char *order_id) {
    return msg->key && msg->key_len == strlen(order_id) &&
           memcmp(msg->key, order_id, msg->key_len) == 0;
}

static deta_err_t handle_reserved(payment_events_t *pe, const deta_kafka_msg_t *msg,
                                  const deta_event_t *ev, char *errstr, size_t errsize) {
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char why[512] = "";
    payment_request_t req;
    payment_t p;
    outcome_t out = OUTCOME_DUP_DB;
    deta_err_t err = payment_request_from_event(ev, &req, why, sizeof why);
    if (err == DETA_OK)
        err = charge_once(pe, &req, &p, &out, why, sizeof why);
    if (err) {
        report_failure(ev, msg, err, why);
        return deta_errf(err, errstr, errsize, "%s", why);
    }
    report_success(pe, ev, out, &p);
    deta_histogram_observe(pe->duration, seconds_since(&t0));
    return DETA_OK;
}

deta_err_t payment_events_handle(const deta_kafka_msg_t *msg, void *opaque, char *errstr,
                                 size_t errsize) {
    payment_events_t *pe = opaque;
    deta_event_t ev;
    char why[256];
    if (deta_event_parse(msg->value, msg->len, &ev, why, sizeof why) != DETA_OK) {
        DETA_ERROR("malformed event on %s [%d] at %lld: %s", msg->topic, (int)msg->partition,
                   (long long)msg->offset, why);
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "malformed event: %s", why);
    }
    deta_err_t err = DETA_OK;
    if (!key_is_order(msg, ev.order_id)) {
        err = deta_errf(DETA_ERR_INVALID, errstr, errsize,
                        "message key does not match orderId %s", ev.order_id);
        deta_log(DETA_LOG_ERROR, ev.order_id, ev.correlation_id, "%s %s: %s", ev.event_type,
                 ev.event_id, errstr ? errstr : "bad key");
    } else if (strcmp(ev.event_type, DETA_EVT_INVENTORY_RESERVED) == 0) {
        err = handle_reserved(pe, msg, &ev, errstr, errsize);
    }
    deta_event_clear(&ev);
    return err;
}

deta_err_t payment_events_subscribe(payment_events_t *pe, char *errstr, size_t errsize) {
    static const char *const topics[] = {DETA_TOPIC_INVENTORY_EVENTS};
    deta_consumer_opts_t opts = {.max_retries = PAYMENT_MAX_RETRIES,
                                 .workers = pe->settings.workers};
    return deta_service_consume(pe->svc, topics, 1, payment_events_handle, pe, &opts, errstr,
                                errsize);
}
