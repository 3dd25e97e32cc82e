/*
 * test_query_view_fold.c - query-api's three folds of events into an order's view
 * agree: query_view_merge() (the C fold, services/query-api/domain.c), the
 * statement of the Postgres read model (read_model_pg.c, run through read_model.h
 * on a scratch database it_query_fold_<pid> of the test stack's Postgres), and
 * the lightweight transactions of the Cassandra read model (read_model_cql.c,
 * through read_model.h too, on a keyspace it_query_fold_<pid> of the model CQL
 * server tests/support/cql_model_server.py, or of a real Cassandra when
 * TEST_CASSANDRA_CONTACT_POINTS is set: make test-cassandra).
 *
 * Each scenario is a set of events of one order and the arrivals to try: every
 * distinct order of those arrivals (all permutations of a multiset, so an event
 * listed twice is a duplicate delivery, same eventId) is one order of its own (a
 * fresh orderId), and every fold folds its events in that order. The views must
 * then be equal field by field (first_seen_at aside: the store's list key, set
 * by the store alone), and each arrival must have moved the status in one fold
 * exactly when it did in the other. The scenarios cover every order of arrival of
 * a delivered order's events, ETAs out of order and tied (the first wins),
 * duplicate deliveries, events arriving after an end state, failures of equal
 * rank, an identity told differently by later events (order.created wins), and
 * the cancellation: CANCELLED holding against a late pick-up or payment.failed,
 * a refund before its verdict, refusals, verdicts delivered twice.
 *
 * The Postgres store's batch (read_model_apply_batch) is a fold of its own, on
 * a database of its own: the same arrivals cut into batches of changing sizes,
 * each event's outcome checked against the C fold's view after it.
 *
 * The Postgres store's statement also writes the live streams' feed: after each
 * batch the feed must hold exactly the timeline's events, told the same, and each
 * order's last feed row the view's status and customer.
 *
 * Two more tests race two transactions folding the first events of one new order
 * (the Postgres store's insert then meets the other's row and folds over it),
 * order.created second and first; a third races two deliveries of one event
 * (the second is the duplicate, not an error).
 *
 * The C fold sees duplicates as they come (it has no timeline to stop them: its
 * idempotence is part of the contract); the Postgres store stops them at its
 * timeline; the Cassandra store folds them again (its fold is query_view_merge
 * itself, so a duplicate changes nothing). The folds are a table (folds[]): the
 * first is the reference, each store one more entry.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "deta/envelope.h"
#include "deta/log.h"
#include "deta/service.h"
#include "deta/topics.h"
#include "cql_model.h"
#include "query-api/stream/feed.h"
#include "read_model.h"
#include "testsupport.h"

#define MAX_SPECS 8
#define MAX_ARRIVALS 8
#define BATCH 256 /* orders folded per transaction */

/* ---- the folds under test ---- */

typedef struct fold {
    const char *name;
    int (*open)(void **s);
    void (*close)(void *s);
    void (*begin)(void *s);
    /* Folds c into the view of the batch's order n; true when it moved the status. */
    bool (*apply)(void *s, size_t n, const query_change_t *c);
    void (*commit)(void *s);
    /* The view of the batch's order n, whose id is order_id, after commit. */
    void (*view)(void *s, size_t n, const char *order_id, query_view_t *out);
    /* Instead of begin, apply and commit (NULL: those): folds the first norders
     * orders of the batch as fold f, filling their changed[f]. */
    void (*apply_all)(void *s, size_t f, size_t norders);
} fold_t;

/* The C fold: the batch's views in memory. */
static query_view_t c_views[BATCH];

static int c_open(void **s) {
    *s = c_views;
    return 0;
}

static void c_close(void *s) { (void)s; }

static void c_begin(void *s) {
    (void)s;
    memset(c_views, 0, sizeof c_views);
}

static bool c_apply(void *s, size_t n, const query_change_t *c) {
    (void)s;
    return query_view_merge(&c_views[n], c);
}

static void c_commit(void *s) { (void)s; }

static void c_view(void *s, size_t n, const char *order_id, query_view_t *out) {
    (void)s;
    (void)order_id;
    *out = c_views[n];
}

/* The Postgres store, as query-api runs it: a service on the scratch database. */
typedef struct pg_fold {
    deta_config_t cfg;
    deta_service_t *svc;
    read_model_t *rm;
    deta_db_t *tx;
} pg_fold_t;

/* The store on a scratch database of its own (tag names it). */
static int pg_open_on(pg_fold_t *pg, const char *tag) {
    char err[512] = "";
    if (ts_scratch_db_create("it-query-fold", tag, &pg->cfg) != 0)
        return -1;
    setenv("PGDATABASE", pg->cfg.pg_database, 1);
    /* A service of its own name, on the scratch database (PGDATABASE above). */
    static const deta_service_def_t self = {"it-query-fold", 0, "postgres"};
    pg->svc = deta_service_new(&self, err, sizeof err);
    static const query_settings_t settings = {.store = QUERY_STORE_POSTGRES};
    pg->rm = pg->svc ? read_model_new(pg->svc, &settings, err, sizeof err) : NULL;
    /* The store's statement writes the live streams' feed too: its table first. */
    if (!pg->rm || feed_prepare(pg->svc, err, sizeof err) != DETA_OK ||
        read_model_prepare(pg->rm, err, sizeof err) != DETA_OK) {
        fprintf(stderr, "the Postgres read model: %s\n", err);
        return -1;
    }
    deta_log_init("it-query-fold", DETA_LOG_WARN);
    pg->tx = deta_db_pool_get(deta_service_db(pg->svc));
    return 0;
}

static int pg_open(void **s) {
    static pg_fold_t pg;
    *s = &pg;
    return pg_open_on(&pg, "query_fold");
}

static void pg_close(void *s) {
    pg_fold_t *pg = s;
    read_model_free(pg->rm);
    deta_service_free(pg->svc);
    ts_scratch_db_drop(&pg->cfg);
}

static void pg_begin(void *s) {
    pg_fold_t *pg = s;
    char err[256] = "";
    if (deta_db_begin(pg->tx, err, sizeof err) != DETA_OK)
        fail_msg("begin: %s", err);
}

static bool pg_apply(void *s, size_t n, const query_change_t *c) {
    (void)n;
    pg_fold_t *pg = s;
    char err[256] = "";
    read_model_outcome_t out;
    if (read_model_apply(pg->rm, pg->tx, c, &out, err, sizeof err) != DETA_OK)
        fail_msg("read_model_apply %s: %s", c->event_type, err);
    if (out.feed_written != out.applied)
        fail_msg("%s %s: applied %d, but the feed row written %d", c->event_type, c->event_id,
                 out.applied, out.feed_written);
    return out.status_changed;
}

/* Rows of the scratch database's timeline and feed that disagree: an event in
 * one and not the other (or twice in the feed), or told differently, or an order whose last feed row
 * (the view after its last applied event) has not the view's status and
 * customer. */
static const char FEED_MISMATCHES[] =
    "SELECT (SELECT count(*) FROM order_events e FULL JOIN stream_feed f"
    "         ON f.event_id = e.event_id"
    "        WHERE f.event_id IS NULL OR e.event_id IS NULL OR f.order_id <> e.order_id::text"
    "           OR f.event_type <> e.event_type OR f.topic <> e.topic"
    "           OR f.occurred_at <> e.occurred_at)"
    " + (SELECT count(*) FROM order_view v"
    "     JOIN LATERAL (SELECT status, customer_id FROM stream_feed f"
    "                   WHERE f.order_id = v.order_id::text ORDER BY seq DESC LIMIT 1) l"
    "       ON true"
    "     WHERE l.status IS DISTINCT FROM v.status"
    "        OR l.customer_id IS DISTINCT FROM v.customer_id)"
    " + (SELECT count(*) - count(DISTINCT event_id) FROM stream_feed)";

static void pg_feed_check(pg_fold_t *pg) {
    char err[256] = "";
    deta_err_t derr;
    PGresult *res = deta_db_exec(pg->tx, FEED_MISMATCHES, 0, NULL, &derr, err, sizeof err);
    if (!res)
        fail_msg("the feed against the timeline: %s", err);
    long bad = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    if (bad != 0)
        fail_msg("the feed disagrees with the timeline or the view in %ld rows", bad);
}

static void pg_commit(void *s) {
    pg_fold_t *pg = s;
    char err[256] = "";
    if (deta_db_commit(pg->tx, err, sizeof err) != DETA_OK)
        fail_msg("commit: %s", err);
    pg_feed_check(pg);
}

static void pg_view(void *s, size_t n, const char *order_id, query_view_t *out) {
    (void)n;
    pg_fold_t *pg = s;
    char err[256] = "";
    if (read_model_get(pg->rm, order_id, out, err, sizeof err) != DETA_OK)
        fail_msg("read_model_get %s: %s", order_id, err);
}

/* The Postgres store's batch (read_model_apply_batch, as query-api's consumer
 * applies a batch), on a database of its own: the orders' arrivals one after
 * another, cut into batches of changing sizes (batch_sizes), each in a
 * transaction. So a batch ends at every place among an order's events, and
 * holds several events of one order, over a row an earlier batch wrote or none;
 * a duplicate is within its batch or in the timeline from an earlier one. */
static const size_t batch_sizes[] = {2, 3, 5, 7, 16};
#define BATCH_SIZES (sizeof batch_sizes / sizeof *batch_sizes)
#define BATCH_SIZE_MAX 16

static int pgb_open(void **s) {
    static pg_fold_t pg;
    *s = &pg;
    return pg_open_on(&pg, "query_fold_batch");
}

/* What one change of a batch must answer: the duplicate (applied false), or
 * the view after it as the C fold has it (its status, customer and createdAt). */
typedef struct batch_want {
    bool duplicate;
    query_view_t after;
} batch_want_t;

/* One batch of k changes, in a transaction; *changed[i] what cs[i] did, which
 * must be wants[i]. */
static void pgb_run(pg_fold_t *pg, const query_change_t *const *cs, bool *const *changed,
                    const batch_want_t *wants, size_t k) {
    query_change_t changes[BATCH_SIZE_MAX];
    read_model_outcome_t outs[BATCH_SIZE_MAX];
    for (size_t i = 0; i < k; i++)
        changes[i] = *cs[i];
    pg_begin(pg);
    bool rolled_back = true;
    char err[256] = "";
    if (read_model_apply_batch(pg->rm, pg->tx, changes, k, outs, &rolled_back, err,
                               sizeof err) != DETA_OK)
        fail_msg("read_model_apply_batch of %zu: %s", k, err);
    if (rolled_back)
        fail_msg("a batch of %zu rolled back with no other transaction running", k);
    for (size_t i = 0; i < k; i++) {
        if (outs[i].feed_written != outs[i].applied)
            fail_msg("%s %s: applied %d, but the feed row written %d", changes[i].event_type,
                     changes[i].event_id, outs[i].applied, outs[i].feed_written);
        *changed[i] = outs[i].status_changed;
        const batch_want_t *w = &wants[i];
        int64_t created_us = 0;
        if (w->after.created_at[0] && !deta_timestamp_us(w->after.created_at, &created_us))
            fail_msg("the C fold's createdAt %s", w->after.created_at);
        if (outs[i].applied == w->duplicate || (outs[i].applied &&
            (strcmp(outs[i].status, w->after.status) != 0 ||
             strcmp(outs[i].customer_id, w->after.customer_id) != 0 ||
             outs[i].created_us != created_us)))
            fail_msg("%s %s, %zu of a batch of %zu: applied %d, status \"%s\", customer \"%s\","
                     " createdAt %lld µs; the C fold: %s, \"%s\", \"%s\", %lld",
                     changes[i].event_type, changes[i].event_id, i, k, outs[i].applied,
                     outs[i].status, outs[i].customer_id, (long long)outs[i].created_us,
                     w->duplicate ? "a duplicate" : "applied", w->after.status,
                     w->after.customer_id, (long long)created_us);
    }
    pg_commit(pg);
}

static void pgb_apply_all(void *s, size_t f, size_t norders); /* after the orders */

/* The Cassandra store on a keyspace of its own. It has no transaction (begin and
 * commit do nothing) and no service (NULL: its schema does not wait for an
 * absent server, it fails). */
typedef struct cql_fold {
    ts_cql_t server;
    read_model_t *rm;
} cql_fold_t;

static int cql_open(void **s) {
    static cql_fold_t cf;
    char err[512] = "", keyspace[64];
    ts_cql_start(&cf.server, NULL, NULL);
    snprintf(keyspace, sizeof keyspace, "it_query_fold_%d", (int)getpid());
    ts_cql_setenv(&cf.server, keyspace);
    query_settings_t settings = {.store = QUERY_STORE_CASSANDRA};
    if (query_cassandra_settings_load(&settings.cassandra, err, sizeof err) != DETA_OK) {
        fprintf(stderr, "the Cassandra settings: %s\n", err);
        ts_cql_stop(&cf.server);
        return -1;
    }
    cf.rm = read_model_new(NULL, &settings, err, sizeof err);
    if (!cf.rm || read_model_prepare(cf.rm, err, sizeof err) != DETA_OK) {
        fprintf(stderr, "the Cassandra read model (%s): %s\n", cf.server.contact_points, err);
        read_model_free(cf.rm);
        ts_cql_stop(&cf.server);
        return -1;
    }
    *s = &cf;
    return 0;
}

static void cql_close(void *s) {
    cql_fold_t *cf = s;
    read_model_free(cf->rm);
    ts_cql_stop(&cf->server);
}

static void cql_nothing(void *s) { (void)s; }

static bool cql_apply(void *s, size_t n, const query_change_t *c) {
    (void)n;
    cql_fold_t *cf = s;
    char err[256] = "";
    read_model_outcome_t out;
    if (read_model_apply(cf->rm, NULL, c, &out, err, sizeof err) != DETA_OK)
        fail_msg("read_model_apply (cassandra) %s: %s", c->event_type, err);
    return out.status_changed;
}

static void cql_view(void *s, size_t n, const char *order_id, query_view_t *out) {
    (void)n;
    cql_fold_t *cf = s;
    char err[256] = "";
    if (read_model_get(cf->rm, order_id, out, err, sizeof err) != DETA_OK)
        fail_msg("read_model_get (cassandra) %s: %s", order_id, err);
}

static const fold_t folds[] = {
    {"query_view_merge", c_open, c_close, c_begin, c_apply, c_commit, c_view, NULL},
    {"postgres", pg_open, pg_close, pg_begin, pg_apply, pg_commit, pg_view, NULL},
    {"postgres, in batches", pgb_open, pg_close, NULL, NULL, NULL, pg_view, pgb_apply_all},
    {"cassandra", cql_open, cql_close, cql_nothing, cql_apply, cql_nothing, cql_view, NULL},
};
#define NFOLDS (sizeof folds / sizeof *folds)

static void *fold_state[NFOLDS];

/* ---- the view, field by field ---- */

typedef struct view_field {
    const char *name;
    size_t offset;
} view_field_t;

#define FIELD(m) {#m, offsetof(query_view_t, m)}
/* Every text field of the view but first_seen_at (the store's own). */
static const view_field_t view_fields[] = {
    FIELD(order_id),       FIELD(customer_id),     FIELD(total_amount),
    FIELD(currency),       FIELD(status),          FIELD(created_at),
    FIELD(updated_at),     FIELD(reservation_id),  FIELD(payment_id),
    FIELD(delivery_id),    FIELD(driver_id),       FIELD(driver_name),
    FIELD(estimated_delivery_at), FIELD(eta_calculated_at), FIELD(delivered_at),
    FIELD(failure_reason), FIELD(correlation_id), FIELD(cancelled_at),
    FIELD(refunded_amount),
};
#undef FIELD

static const char *field_of(const query_view_t *v, const view_field_t *f) {
    return (const char *)v + f->offset;
}

/* ---- scenarios ---- */

typedef struct event_spec {
    const char *type;
    const char *occurred_at;
    const char *payload; /* JSON */
} event_spec_t;

typedef struct scenario {
    const char *name;
    event_spec_t specs[MAX_SPECS];
    int arrivals[MAX_ARRIVALS]; /* indices into specs, ascending; -1 ends */
    int final_rank;             /* the status rank every order must end with */
} scenario_t;

#define T(hhmm) "2026-11-25T" hhmm ":00.000Z"
#define CREATED(at)                                                                      \
    {DETA_EVT_ORDER_CREATED, T(at),                                                      \
     "{\"customerId\":\"c-1\",\"totalAmount\":\"20.48\",\"currency\":\"EUR\","           \
     "\"createdAt\":\"" T("12:00") "\",\"items\":[]}"}
#define RESERVED(at)                                                                     \
    {DETA_EVT_INVENTORY_RESERVED, T(at),                                                 \
     "{\"reservationId\":\"r-1\",\"customerId\":\"c-1\",\"totalAmount\":\"20.48\","      \
     "\"currency\":\"EUR\"}"}
#define AUTHORIZED(at)                                                                   \
    {DETA_EVT_PAYMENT_AUTHORIZED, T(at), "{\"paymentId\":\"p-1\",\"customerId\":\"c-1\"}"}
#define WAITING(at) {DETA_EVT_DELIVERY_WAITING, T(at), "{\"paymentId\":\"p-1\"}"}
#define ASSIGNED(at, eta)                                                                \
    {DETA_EVT_DELIVERY_ASSIGNED, T(at),                                                  \
     "{\"deliveryId\":\"d-1\",\"driverId\":\"drv-1\",\"driverName\":\"Ada\","             \
     "\"estimatedDeliveryAt\":\"" T(eta) "\",\"assignedAt\":\"" T(at) "\"}"}
#define PICKED_UP(at, eta)                                                               \
    {DETA_EVT_DELIVERY_PICKED_UP, T(at),                                                 \
     "{\"deliveryId\":\"d-1\",\"driverId\":\"drv-1\","                                    \
     "\"estimatedDeliveryAt\":\"" T(eta) "\",\"pickedUpAt\":\"" T(at) "\"}"}
#define DELIVERED(at)                                                                    \
    {DETA_EVT_DELIVERY_DELIVERED, T(at),                                                 \
     "{\"deliveryId\":\"d-1\",\"driverId\":\"drv-1\",\"deliveredAt\":\"" T(at) "\"}"}
#define ETA(at, calc, eta)                                                               \
    {DETA_EVT_ETA_UPDATED, T(at),                                                        \
     "{\"deliveryId\":\"d-1\",\"estimatedDeliveryAt\":\"" T(eta) "\","                    \
     "\"calculatedAt\":\"" T(calc) "\"}"}

/* the cancellation saga (docs/contracts.md#cancellation) */
#define CANCEL_TIMES "\"reason\":null,\"requestedAt\":\"" T("12:04") "\""
#define CANCEL_REQUESTED(at) {DETA_EVT_ORDER_CANCEL_REQUESTED, T(at), "{" CANCEL_TIMES "}"}
#define INV_CANCEL_FORWARDED(at)                                                         \
    {DETA_EVT_INVENTORY_CANCEL_FORWARDED, T(at),                                         \
     "{\"reservationId\":\"r-1\"," CANCEL_TIMES ",\"forwardedAt\":\"" T(at) "\"}"}
#define CANCEL_REFUSED(type, at, state)                                                  \
    {type, T(at), "{\"orderStatus\":\"" state "\"," CANCEL_TIMES ",\"refusedAt\":\"" T(at) "\"}"}
#define INV_CANCELLED(at)                                                                \
    {DETA_EVT_INVENTORY_CANCELLED, T(at),                                                \
     "{\"stage\":\"NONE\"," CANCEL_TIMES ",\"cancelledAt\":\"" T(at) "\"}"}
#define PAY_CANCELLED(at)                                                                \
    {DETA_EVT_PAYMENT_CANCELLED, T(at),                                                  \
     "{\"stage\":\"NONE\",\"reservationId\":\"r-1\"," CANCEL_TIMES                         \
     ",\"cancelledAt\":\"" T(at) "\"}"}
#define DEL_CANCELLED(at)                                                                \
    {DETA_EVT_DELIVERY_CANCELLED, T(at),                                                 \
     "{\"stage\":\"ASSIGNED\",\"deliveryId\":\"d-1\",\"driverId\":\"drv-1\","            \
     "\"paymentId\":\"p-1\"," CANCEL_TIMES ",\"cancelledAt\":\"" T(at) "\"}"}
#define REFUNDED(at)                                                                     \
    {DETA_EVT_PAYMENT_REFUNDED, T(at),                                                   \
     "{\"paymentId\":\"p-1\",\"refundId\":\"rf-1\",\"amount\":\"20.5\",\"currency\":\"EUR\"," \
     "\"reason\":\"ORDER_CANCELLED\",\"refundedAt\":\"" T(at) "\"}"}

static const scenario_t scenarios[] = {
    {"a delivered order, every order of arrival",
     {CREATED("12:00"), RESERVED("12:01"), AUTHORIZED("12:02"),
      ASSIGNED("12:03", "12:40"), PICKED_UP("12:10", "12:35"), DELIVERED("12:30")},
     {0, 1, 2, 3, 4, 5, -1},
     7},
    {"ETAs out of order, and two calculated at the same instant",
     {CREATED("12:00"), WAITING("12:02"), ASSIGNED("12:03", "12:40"),
      ETA("12:05", "12:05", "12:45"), ETA("12:06", "12:04", "12:50"),
      ETA("12:07", "12:05", "12:55")},
     {0, 1, 2, 3, 4, 5, -1},
     5},
    {"duplicate deliveries",
     {CREATED("12:00"), RESERVED("12:01"), AUTHORIZED("12:02"), WAITING("12:02"),
      ASSIGNED("12:03", "12:40")},
     {0, 1, 1, 2, 3, 4, 4, -1},
     5},
    {"late events after a failure, failures of equal rank",
     {CREATED("12:00"),
      {DETA_EVT_INVENTORY_REJECTED, T("12:01"),
       "{\"customerId\":\"c-1\",\"reason\":\"out of stock\"}"},
      RESERVED("12:02"),
      {DETA_EVT_PAYMENT_FAILED, T("12:03"), "{\"paymentId\":\"p-1\",\"reason\":\"declined\"}"},
      {DETA_EVT_INVENTORY_RELEASED, T("12:04"), "{\"reservationId\":\"r-1\"}"},
      AUTHORIZED("12:05")},
     {0, 1, 2, 3, 4, 5, -1},
     DETA_STATE_RANK_FAILED},
    {"late events after delivery, an ETA calculated after it",
     {CREATED("12:00"), ASSIGNED("12:03", "12:40"), PICKED_UP("12:10", "12:35"),
      DELIVERED("12:30"), ETA("12:20", "12:20", "12:50"), ETA("12:31", "12:31", "13:00")},
     {0, 1, 2, 3, 4, 5, -1},
     7},
    {"an identity told otherwise by later events",
     {CREATED("12:00"),
      {DETA_EVT_INVENTORY_RESERVED, T("12:01"),
       "{\"customerId\":\"c-other\",\"totalAmount\":\"1.00\",\"currency\":\"USD\"}"},
      {DETA_EVT_INVENTORY_REJECTED, T("12:02"), "{\"customerId\":\"c-x\",\"reason\":\"r\"}"},
      {DETA_EVT_PAYMENT_FAILED, T("12:03"), "{\"customerId\":\"c-y\",\"reason\":\"d\"}"},
      ETA("12:04", "12:04", "12:30")},
     {0, 1, 2, 3, 4, -1},
     DETA_STATE_RANK_FAILED},
    {"a cancel won before the pick-up: a late pick-up, the refund before its verdict",
     {CREATED("12:00"), ASSIGNED("12:03", "12:40"), DEL_CANCELLED("12:05"),
      PICKED_UP("12:06", "12:35"), REFUNDED("12:07")},
     {0, 1, 2, 3, 4, -1},
     DETA_STATE_RANK_CANCELLED},
    {"a cancel won before the charge: payment.failed after payment.cancelled",
     {CREATED("12:00"), INV_CANCEL_FORWARDED("12:05"), PAY_CANCELLED("12:06"),
      {DETA_EVT_PAYMENT_FAILED, T("12:07"), "{\"paymentId\":\"p-1\",\"reason\":\"declined\"}"},
      {DETA_EVT_INVENTORY_RELEASED, T("12:08"),
       "{\"reservationId\":\"r-1\",\"reason\":\"ORDER_CANCELLED\"}"}},
     {0, 1, 2, 3, 4, -1},
     DETA_STATE_RANK_CANCELLED},
    {"a cancel refused after the pick-up, its refusal delivered twice",
     {PICKED_UP("12:03", "12:35"), CANCEL_REQUESTED("12:04"),
      CANCEL_REFUSED(DETA_EVT_DELIVERY_CANCEL_REFUSED, "12:05", "PICKED_UP"),
      DELIVERED("12:30")},
     {0, 1, 2, 2, 3, -1},
     7},
    {"a cancel before anything was reserved, its verdict twice, stray events after it",
     {CREATED("12:00"), INV_CANCELLED("12:05"), RESERVED("12:06"),
      CANCEL_REFUSED(DETA_EVT_INVENTORY_CANCEL_REFUSED, "12:07", "INVENTORY_REJECTED")},
     {0, 1, 1, 2, 3, -1},
     DETA_STATE_RANK_CANCELLED},
};

/* ---- orders: one arrival order each ---- */

typedef struct order {
    char id[DETA_UUID_LEN + 1];
    int arrivals[MAX_ARRIVALS];
    size_t n;
    deta_event_t events[MAX_SPECS];
    query_change_t changes[MAX_SPECS];
    size_t nspecs;
    bool changed[NFOLDS][MAX_ARRIVALS];
    query_view_t views[NFOLDS];
} order_t;

static order_t batch[BATCH];

static size_t spec_count(const scenario_t *sc) {
    size_t n = 0;
    while (n < MAX_SPECS && sc->specs[n].type)
        n++;
    return n;
}

/* The order's events (a fresh eventId each) and their changes. */
static void order_build(order_t *o, const scenario_t *sc, const int *arrivals, size_t n) {
    deta_uuid_new(o->id);
    memcpy(o->arrivals, arrivals, n * sizeof *arrivals);
    o->n = n;
    o->nspecs = spec_count(sc);
    for (size_t i = 0; i < o->nspecs; i++) {
        const event_spec_t *s = &sc->specs[i];
        char err[256] = "";
        json_error_t jerr;
        json_t *payload = json_loads(s->payload, 0, &jerr);
        if (!payload)
            fail_msg("%s: bad payload: %s", s->type, jerr.text);
        if (deta_event_init(&o->events[i], s->type, o->id, "corr-fold", "it-query-fold",
                            payload, err, sizeof err) != DETA_OK)
            fail_msg("event_init: %s", err);
        snprintf(o->events[i].occurred_at, sizeof o->events[i].occurred_at, "%s", s->occurred_at);
        if (query_change_from_event(&o->events[i], &o->changes[i], err, sizeof err) != DETA_OK)
            fail_msg("%s refused: %s", s->type, err);
    }
}

/* Idempotent: a failed comparison leaves the batch to the group's teardown. */
static void order_clear(order_t *o) {
    for (size_t i = 0; i < o->nspecs; i++)
        deta_event_clear(&o->events[i]);
    o->nspecs = 0;
}

/* The next distinct permutation of a (lexicographic order); false after the last. */
static bool next_arrival_order(int *a, size_t n) {
    size_t i = n - 1;
    while (i > 0 && a[i - 1] >= a[i])
        i--;
    if (i == 0)
        return false;
    size_t j = n - 1;
    while (a[j] <= a[i - 1])
        j--;
    int t = a[i - 1];
    a[i - 1] = a[j];
    a[j] = t;
    for (size_t l = i, r = n - 1; l < r; l++, r--) {
        t = a[l];
        a[l] = a[r];
        a[r] = t;
    }
    return true;
}

/* ---- folding and comparing ---- */

/* Whether arrival a of o repeats an earlier one (the same event delivered again). */
static bool arrived_before(const order_t *o, size_t a) {
    for (size_t b = 0; b < a; b++)
        if (o->arrivals[b] == o->arrivals[a])
            return true;
    return false;
}

static void pgb_apply_all(void *s, size_t f, size_t norders) {
    static size_t turn;
    const query_change_t *cs[BATCH_SIZE_MAX];
    bool *changed[BATCH_SIZE_MAX];
    batch_want_t wants[BATCH_SIZE_MAX];
    size_t k = 0, size = batch_sizes[turn++ % BATCH_SIZES];
    for (size_t i = 0; i < norders; i++) {
        query_view_t ref; /* the C fold of the order so far */
        memset(&ref, 0, sizeof ref);
        for (size_t a = 0; a < batch[i].n; a++) {
            cs[k] = &batch[i].changes[batch[i].arrivals[a]];
            changed[k] = &batch[i].changed[f][a];
            wants[k].duplicate = arrived_before(&batch[i], a);
            if (!wants[k].duplicate)
                query_view_merge(&ref, cs[k]);
            wants[k++].after = ref;
            if (k == size) {
                pgb_run(s, cs, changed, wants, k);
                k = 0;
                size = batch_sizes[turn++ % BATCH_SIZES];
            }
        }
    }
    if (k)
        pgb_run(s, cs, changed, wants, k);
}

static void fold_batch(size_t f, size_t norders) {
    const fold_t *fold = &folds[f];
    if (fold->apply_all) {
        fold->apply_all(fold_state[f], f, norders);
    } else {
        fold->begin(fold_state[f]);
        for (size_t i = 0; i < norders; i++)
            for (size_t k = 0; k < batch[i].n; k++)
                batch[i].changed[f][k] =
                    fold->apply(fold_state[f], i, &batch[i].changes[batch[i].arrivals[k]]);
        fold->commit(fold_state[f]);
    }
    for (size_t i = 0; i < norders; i++)
        fold->view(fold_state[f], i, batch[i].id, &batch[i].views[f]);
}

/* "order.created, inventory.reserved x2, ..." into buf. */
static const char *arrival_text(const scenario_t *sc, const order_t *o, char *buf,
                                size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (size_t k = 0; k < o->n && used < size; k++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s#%d", k ? ", " : "",
                                 sc->specs[o->arrivals[k]].type, o->arrivals[k]);
    return buf;
}

static void fail_on(const scenario_t *sc, const order_t *o, size_t f, const char *what,
                    const char *want, const char *got) {
    char arrivals[1024];
    fail_msg("%s: %s differs from %s in %s: %s has \"%s\", %s has \"%s\"\n  arrival: %s",
             sc->name, folds[f].name, folds[0].name, what, folds[0].name, want, folds[f].name,
             got, arrival_text(sc, o, arrivals, sizeof arrivals));
}

static void compare(const scenario_t *sc, const order_t *o) {
    const query_view_t *ref = &o->views[0];
    char want[48], got[48];
    if (ref->status_rank != sc->final_rank) {
        snprintf(want, sizeof want, "%d", sc->final_rank);
        snprintf(got, sizeof got, "%d", ref->status_rank);
        fail_on(sc, o, 0, "the status rank the scenario ends with", want, got);
    }
    for (size_t f = 1; f < NFOLDS; f++) {
        const query_view_t *v = &o->views[f];
        for (size_t i = 0; i < sizeof view_fields / sizeof *view_fields; i++)
            if (strcmp(field_of(ref, &view_fields[i]), field_of(v, &view_fields[i])) != 0)
                fail_on(sc, o, f, view_fields[i].name, field_of(ref, &view_fields[i]),
                        field_of(v, &view_fields[i]));
        snprintf(want, sizeof want, "%d", ref->status_rank);
        snprintf(got, sizeof got, "%d", v->status_rank);
        if (ref->status_rank != v->status_rank)
            fail_on(sc, o, f, "status_rank", want, got);
        for (size_t k = 0; k < o->n; k++) {
            snprintf(want, sizeof want, "%zu:%d", k, o->changed[0][k]);
            snprintf(got, sizeof got, "%zu:%d", k, o->changed[f][k]);
            if (o->changed[0][k] != o->changed[f][k])
                fail_on(sc, o, f, "whether arrival k moved the status", want, got);
        }
    }
}

static size_t run_batch(const scenario_t *sc, size_t norders) {
    for (size_t f = 0; f < NFOLDS; f++)
        fold_batch(f, norders);
    for (size_t i = 0; i < norders; i++) {
        compare(sc, &batch[i]);
        order_clear(&batch[i]);
    }
    return norders;
}

static void run_scenario(void **state) {
    const scenario_t *sc = *state;
    int arrivals[MAX_ARRIVALS];
    size_t n = 0;
    while (n < MAX_ARRIVALS && sc->arrivals[n] >= 0) {
        arrivals[n] = sc->arrivals[n];
        n++;
    }
    size_t total = 0, norders = 0;
    bool more = true;
    while (more) {
        order_build(&batch[norders++], sc, arrivals, n);
        more = next_arrival_order(arrivals, n);
        if (norders == BATCH || !more) {
            total += run_batch(sc, norders);
            norders = 0;
        }
    }
    printf("%s: %zu orders of arrival, folded alike by %zu folds\n", sc->name, total, NFOLDS);
}

/* ---- two first events of a new order at once ---- */

/* The Postgres store updates an order's row when it sees one, else inserts it. Two
 * transactions folding the first events of one new order both see none: the
 * second's insert meets the first's uncommitted row, waits for it, and then folds
 * over it (the statement's ON CONFLICT branch). The view must be the C fold of
 * the two in their order of commit, the feed one row each. Both orders of the
 * race: order.created second (its identity overwrites the first's: another
 * customer here), and order.created first (the second only fills gaps). */
typedef struct racer {
    pg_fold_t *pg;
    const query_change_t *c;
    bool applied, rolled_back, changed;
    int rc;
    char err[256];
} racer_t;

/* The second transaction: applies its event, commits what it applied and rolls
 * back a duplicate. */
static void *race_second(void *arg) {
    racer_t *r = arg;
    deta_db_t *tx = deta_db_pool_get(deta_service_db(r->pg->svc));
    read_model_outcome_t out;
    r->rc = -1;
    if (!tx || deta_db_begin(tx, r->err, sizeof r->err) != DETA_OK)
        return NULL;
    if (read_model_apply(r->pg->rm, tx, r->c, &out, r->err, sizeof r->err) != DETA_OK) {
        deta_db_rollback(tx);
        return NULL;
    }
    r->applied = out.applied;
    r->rolled_back = out.rolled_back;
    r->changed = out.status_changed;
    if (!out.applied)
        deta_db_rollback(tx);
    else if (deta_db_commit(tx, r->err, sizeof r->err) != DETA_OK)
        return NULL;
    r->rc = 0;
    return NULL;
}

/* Backends of the database waiting for another transaction to end, in the apply
 * statement (its text begins so; pg_stat_activity keeps only the first 1024
 * bytes): the second racer at the first's uncommitted row. */
static const char ROW_WAITERS[] = "SELECT count(*) FROM pg_stat_activity"
                                  " WHERE datname = $1 AND wait_event = 'transactionid'"
                                  " AND query LIKE 'WITH ev AS ( INSERT INTO order_events %'";

#define CREATED_BY(at, customer)                                                         \
    {DETA_EVT_ORDER_CREATED, T(at),                                                      \
     "{\"customerId\":\"" customer "\",\"totalAmount\":\"20.48\",\"currency\":\"EUR\","   \
     "\"createdAt\":\"" T("12:00") "\",\"items\":[]}"}

static const scenario_t races[] = {
    {"inventory.reserved, then order.created of another customer",
     {RESERVED("12:01"), CREATED_BY("12:00", "c-2")}, {0, 1, -1}, 3},
    {"order.created, then inventory.reserved", {CREATED("12:00"), RESERVED("12:01")},
     {0, 1, -1}, 3},
};
#undef CREATED_BY

/* Runs fn(arg) on a thread of its own while the fold's transaction is open;
 * commits that once the thread waits for it (waiters counts the backends of
 * the database waiting for another transaction in the thread's statement),
 * joins the thread, checks its *rc (its err when not 0; who names it) and the
 * feed. */
static void race_open_tx(pg_fold_t *pg, void *(*fn)(void *), void *arg, const char *waiters,
                         const int *rc, const char *rc_err, const char *who) {
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fn, arg), 0);
    long waiting = 0;
    for (int i = 0; i < 500 && waiting == 0; i++) {
        ts_sleep_ms(10);
        waiting = ts_db_long(pg->cfg.pg_database, waiters, pg->cfg.pg_database);
    }
    char err[256] = "";
    deta_err_t committed = deta_db_commit(pg->tx, err, sizeof err);
    pthread_join(t, NULL); /* before anything can fail */
    if (committed != DETA_OK)
        fail_msg("commit: %s", err);
    if (waiting == 0)
        fail_msg("%s never waited for the other transaction", who);
    if (*rc != 0)
        fail_msg("%s: %s", who, rc_err);
    pg_feed_check(pg);
}

/* Applies a in the fold's transaction, then b from another while a is not
 * committed; commits a once b waits for it, and returns b's outcome in second.
 * Returns a's status_changed. */
static bool race(pg_fold_t *pg, const query_change_t *a, const query_change_t *b,
                 racer_t *second) {
    pg_begin(pg);
    bool changed0 = pg_apply(pg, 0, a); /* its rows, uncommitted */
    *second = (racer_t){.pg = pg, .c = b};
    race_open_tx(pg, race_second, second, ROW_WAITERS, &second->rc, second->err,
                 "the second transaction");
    return changed0;
}

static void assert_view_is(pg_fold_t *pg, const char *order_id, const query_view_t *want) {
    query_view_t got;
    pg_view(pg, 0, order_id, &got);
    for (size_t i = 0; i < sizeof view_fields / sizeof *view_fields; i++)
        if (strcmp(field_of(want, &view_fields[i]), field_of(&got, &view_fields[i])) != 0)
            fail_msg("%s: the C fold has \"%s\", Postgres \"%s\"", view_fields[i].name,
                     field_of(want, &view_fields[i]), field_of(&got, &view_fields[i]));
}

static void first_events_race(void **state) {
    const scenario_t *sc = *state;
    pg_fold_t *pg = fold_state[1];
    order_t *o = &batch[0];
    const int arrivals[] = {0, 1};
    order_build(o, sc, arrivals, 2);
    query_view_t want;
    memset(&want, 0, sizeof want);
    bool want_changed[2];
    for (size_t k = 0; k < 2; k++)
        want_changed[k] = query_view_merge(&want, &o->changes[k]);

    racer_t second;
    bool changed0 = race(pg, &o->changes[0], &o->changes[1], &second);
    assert_true(second.applied);
    assert_view_is(pg, o->id, &want);
    assert_int_equal(changed0, want_changed[0]);
    assert_int_equal(second.changed, want_changed[1]);
    order_clear(o);
}

/* One event delivered twice at once (two instances during a rebalance): the
 * second delivery's insert waits for the first's uncommitted timeline row and,
 * once it commits, fails on the timeline's key. The store reports the duplicate
 * (applied false, rolled_back: its transaction is aborted and rolled back), not
 * an error that would dead-letter the event; the event is applied once. */
static void same_event_race(void **state) {
    (void)state;
    pg_fold_t *pg = fold_state[1];
    order_t *o = &batch[0];
    const int arrivals[] = {0};
    order_build(o, &races[1], arrivals, 1);
    query_view_t want;
    memset(&want, 0, sizeof want);
    bool want_changed = query_view_merge(&want, &o->changes[0]);

    racer_t second;
    bool changed0 = race(pg, &o->changes[0], &o->changes[0], &second);
    assert_false(second.applied);
    assert_true(second.rolled_back);
    assert_view_is(pg, o->id, &want);
    assert_int_equal(changed0, want_changed);
    assert_int_equal(ts_db_long(pg->cfg.pg_database,
                                "SELECT count(*) FROM order_events WHERE order_id = $1::uuid",
                                o->id),
                     1);
    order_clear(o);
}

/* ---- a batch against another transaction ---- */

/* The batch's side: applies its changes at once and commits; when the batch
 * reports it rolled back (a racing transaction's row stood in its way), rolls
 * back and applies them one at a time, as the consumer then does. */
typedef struct batch_racer {
    pg_fold_t *pg;
    query_change_t changes[4];
    size_t n;
    bool rolled_back;
    read_model_outcome_t outs[4];
    int rc;
    char err[256];
} batch_racer_t;

static void *race_batch(void *arg) {
    batch_racer_t *r = arg;
    deta_db_t *tx = deta_db_pool_get(deta_service_db(r->pg->svc));
    r->rc = -1;
    if (!tx || deta_db_begin(tx, r->err, sizeof r->err) != DETA_OK)
        return NULL;
    if (read_model_apply_batch(r->pg->rm, tx, r->changes, r->n, r->outs, &r->rolled_back,
                               r->err, sizeof r->err) != DETA_OK) {
        deta_db_rollback(tx);
        return NULL;
    }
    if (!r->rolled_back) {
        if (deta_db_commit(tx, r->err, sizeof r->err) != DETA_OK)
            return NULL;
        r->rc = 0;
        return NULL;
    }
    deta_db_rollback(tx);
    for (size_t i = 0; i < r->n; i++) {
        if (deta_db_begin(tx, r->err, sizeof r->err) != DETA_OK)
            return NULL;
        if (read_model_apply(r->pg->rm, tx, &r->changes[i], &r->outs[i], r->err,
                             sizeof r->err) != DETA_OK) {
            deta_db_rollback(tx);
            return NULL;
        }
        if (deta_db_commit(tx, r->err, sizeof r->err) != DETA_OK)
            return NULL;
    }
    r->rc = 0;
    return NULL;
}

/* Backends of the database waiting for another transaction to end in the
 * batch's write (at the other's uncommitted row of a new order) or in its lock
 * of the orders' rows (at the other's locked row). */
static const char BATCH_WRITE_WAITERS[] =
    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
    " AND wait_event = 'transactionid'"
    " AND query LIKE 'WITH k AS (SELECT event_id::text AS id FROM order_events%'";
static const char BATCH_LOCK_WAITERS[] =
    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
    " AND wait_event = 'transactionid'"
    " AND query LIKE 'SELECT order_id::text, customer_id, total_amount::text%'";

/* The batch's side against the fold's open transaction (race_open_tx). */
static void batch_race(pg_fold_t *pg, batch_racer_t *r, const char *waiters) {
    race_open_tx(pg, race_batch, r, waiters, &r->rc, r->err, "the batch's side");
}

/* The first of a delivered order's events, then its next k, built into o with
 * the C fold of all 1 + k into want and what each did into want_changed. */
static void race_order(order_t *o, size_t k, query_view_t *want, bool *want_changed) {
    const int arrivals[] = {0, 1, 2, 3, 4, 5};
    order_build(o, &scenarios[0], arrivals, 1 + k);
    memset(want, 0, sizeof *want);
    for (size_t i = 0; i <= k; i++)
        want_changed[i] = query_view_merge(want, &o->changes[i]);
}

/* A batch of a new order's second and third events while another transaction
 * has inserted its first, uncommitted: the batch found no row to lock, so its
 * insert of the order's row meets the other's, waits, and fails on the key once
 * that commits. The batch reports rolled_back (not an error that would
 * dead-letter its events), and one at a time they fold over the other's row. */
static void batch_meets_new_row(void **state) {
    (void)state;
    pg_fold_t *pg = fold_state[2];
    order_t *o = &batch[0];
    query_view_t want;
    bool want_changed[3];
    race_order(o, 2, &want, want_changed);
    pg_begin(pg);
    bool changed0 = pg_apply(pg, 0, &o->changes[0]);
    batch_racer_t r = {.pg = pg, .n = 2, .changes = {o->changes[1], o->changes[2]}};
    batch_race(pg, &r, BATCH_WRITE_WAITERS);
    assert_true(r.rolled_back);
    assert_view_is(pg, o->id, &want);
    assert_int_equal(changed0, want_changed[0]);
    assert_int_equal(r.outs[0].status_changed, want_changed[1]);
    assert_int_equal(r.outs[1].status_changed, want_changed[2]);
    order_clear(o);
}

/* A batch of an order's third and fourth events while another transaction has
 * applied its second, uncommitted, over the committed first: the batch's lock
 * waits for the row, then reads it as the other committed it, and folds over
 * that, in the batch, without rolling back. */
static void batch_waits_for_row(void **state) {
    (void)state;
    pg_fold_t *pg = fold_state[2];
    order_t *o = &batch[0];
    query_view_t want;
    bool want_changed[4];
    race_order(o, 3, &want, want_changed);
    pg_begin(pg);
    assert_int_equal(pg_apply(pg, 0, &o->changes[0]), want_changed[0]);
    pg_commit(pg);
    pg_begin(pg);
    assert_int_equal(pg_apply(pg, 0, &o->changes[1]), want_changed[1]);
    batch_racer_t r = {.pg = pg, .n = 2, .changes = {o->changes[2], o->changes[3]}};
    batch_race(pg, &r, BATCH_LOCK_WAITERS);
    assert_false(r.rolled_back);
    assert_true(r.outs[0].applied && r.outs[1].applied);
    assert_view_is(pg, o->id, &want);
    assert_int_equal(r.outs[0].status_changed, want_changed[2]);
    assert_int_equal(r.outs[1].status_changed, want_changed[3]);
    order_clear(o);
}

/* ---- setup ---- */

static int setup(void **state) {
    (void)state;
    deta_log_init("it-query-fold", DETA_LOG_WARN);
    for (size_t f = 0; f < NFOLDS; f++)
        if (folds[f].open(&fold_state[f]) != 0) {
            fprintf(stderr, "cannot open the fold %s\n", folds[f].name);
            return -1;
        }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    for (size_t i = 0; i < BATCH; i++)
        order_clear(&batch[i]);
    for (size_t f = 0; f < NFOLDS; f++)
        if (fold_state[f])
            folds[f].close(fold_state[f]);
    return 0;
}

/* A test per scenario, named after it. */
#define SCENARIO(i) {scenarios[i].name, run_scenario, NULL, NULL, (void *)&scenarios[i]}

int main(void) {
    const struct CMUnitTest tests[] = {
        SCENARIO(0), SCENARIO(1), SCENARIO(2), SCENARIO(3), SCENARIO(4), SCENARIO(5),
        SCENARIO(6), SCENARIO(7), SCENARIO(8), SCENARIO(9),
        {races[0].name, first_events_race, NULL, NULL, (void *)&races[0]},
        {races[1].name, first_events_race, NULL, NULL, (void *)&races[1]},
        cmocka_unit_test(same_event_race),
        cmocka_unit_test(batch_meets_new_row),
        cmocka_unit_test(batch_waits_for_row),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
