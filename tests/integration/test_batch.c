/*
 * test_batch.c - deta_batch_run (deta/batch.h) against the test stack's
 * Postgres, on a scratch database of its own (it_batch_<pid>).
 *
 * A message's own outcome: a duplicate (DETA_ERR_CONFLICT, which writes nothing)
 * leaves the batch going; any other failure, or a duplicate whose statement
 * aborted the transaction after all, rolls the whole batch back (the services'
 * batches: test_consumer_batches.c). The prepare step, which runs in the batch's
 * transaction before any message, rolls the batch back when it fails, and is
 * what keeps two batches over shared rows from deadlocking. Two threads run a
 * batch each over the same two rows, in opposite orders: without a prepare each
 * takes its first row and then (a barrier) asks for the one the other holds,
 * and Postgres breaks the cycle by failing one of them (the check that the case
 * is the one it claims to be); with a prepare that locks both rows in one fixed
 * order first, the second batch has them only once the first committed, and
 * both commit. The dispatcher's batches (deta_event_dispatch_batch) hand such a
 * prepare, the dispatch's batch_lock, the events still to apply, before any
 * handler: not the malformed one, not one of a type without a route. A
 * dispatch with batch_apply hands those to it in one call instead of to the
 * routes' handlers (one event alone still goes through its route).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/batch.h"
#include "deta/clock.h"
#include "deta/events.h"
#include "deta/log.h"
#include "deta/topics.h"
#include "testsupport.h"

/* A batch's pause between its two messages, with a prepare: what the other one
 * waits out. */
#define PAUSE_MS 300

static deta_config_t cfg;

static void run_admin(deta_db_t *db, const char *sql) {
    char why[256] = "";
    if (deta_db_run(db, sql, 0, NULL, why, sizeof why) != DETA_OK)
        fail_msg("%s: %s", sql, why);
}

static int setup(void **state) {
    (void)state;
    deta_log_init("it-batch", DETA_LOG_ERROR);
    if (ts_scratch_db_create("it-batch", "batch", &cfg) != 0)
        return -1;
    deta_db_t *db = deta_db_new(&cfg);
    if (!db)
        return -1;
    char why[256] = "";
    deta_err_t err = deta_db_run(db, "CREATE TABLE shared (k text PRIMARY KEY, n int NOT NULL)",
                                 0, NULL, why, sizeof why);
    deta_db_free(db);
    if (err)
        fprintf(stderr, "create: %s\n", why);
    return err ? -1 : 0;
}

static int teardown(void **state) {
    (void)state;
    ts_scratch_db_drop(&cfg);
    return 0;
}

static long count_of(deta_db_t *db, const char *k) {
    const char *params[] = {k};
    deta_err_t err;
    char why[256] = "";
    PGresult *r = deta_db_exec(db, "SELECT n FROM shared WHERE k = $1", 1, params, &err, why,
                               sizeof why);
    if (!r)
        fail_msg("count of %s: %s", k, why);
    long n = PQntuples(r) == 1 ? atol(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n;
}

static void reset_rows(deta_db_t *db) {
    run_admin(db, "DELETE FROM shared");
    run_admin(db, "INSERT INTO shared VALUES ('a', 0), ('b', 0)");
}

/* One thread's batch: a message per key of keys, each adding one to its row.
 * Without a prepare, both threads meet at a barrier once each has taken its first
 * row, so each then asks for the row the other holds; with one, a batch pauses
 * PAUSE_MS between its two messages, which the other waits out. */
typedef struct batcher {
    const char *keys[2];
    bool prepare; /* lock both rows, in key order, first */
    pthread_barrier_t *start, *first_taken;
    deta_err_t err;
    deta_err_t results[2];
    char why[2][DETA_KAFKA_WHY_MAX];
    int prepared;      /* times the prepare ran */
    long prepared_ms;  /* when it had the rows (deta_clock_ms) */
} batcher_t;

static deta_err_t add_one(deta_db_t *db, size_t i, void *opaque, char *why, size_t whysize) {
    batcher_t *b = opaque;
    const char *params[] = {b->keys[i]};
    deta_err_t err = deta_db_run(db, "UPDATE shared SET n = n + 1 WHERE k = $1", 1, params, why,
                                 whysize);
    if (!err && i == 0 && b->prepare)
        ts_sleep_ms(PAUSE_MS);
    else if (!err && i == 0)
        pthread_barrier_wait(b->first_taken);
    return err;
}

static deta_err_t lock_both(deta_db_t *db, void *opaque, char *errstr, size_t errsize) {
    batcher_t *b = opaque;
    b->prepared++;
    deta_err_t err = deta_db_run(db, "SELECT k FROM shared ORDER BY k COLLATE \"C\" FOR UPDATE",
                                 0, NULL, errstr, errsize);
    b->prepared_ms = deta_clock_ms();
    return err;
}

static void *run_batch(void *arg) {
    batcher_t *b = arg;
    deta_db_t *db = deta_db_new(&cfg);
    char errstr[256] = "";
    size_t failed = 0;
    /* connected before the start, so that both begin at once */
    bool up = db && deta_db_run(db, "SELECT 1", 0, NULL, errstr, sizeof errstr) == DETA_OK;
    pthread_barrier_wait(b->start);
    b->err = up ? deta_batch_run(db, NULL, 2, 0, b->prepare ? lock_both : NULL, add_one, b,
                                 b->results, b->why, &failed, errstr, sizeof errstr)
                : DETA_ERR_INTERNAL;
    deta_db_free(db);
    return NULL;
}

/* Both batches at once, one over a then b, the other over b then a. */
static void run_crossed(bool prepare, batcher_t *out) {
    pthread_barrier_t start, first_taken;
    pthread_barrier_init(&start, NULL, 2);
    pthread_barrier_init(&first_taken, NULL, 2);
    out[0] = (batcher_t){
        .keys = {"a", "b"}, .prepare = prepare, .start = &start, .first_taken = &first_taken};
    out[1] = (batcher_t){
        .keys = {"b", "a"}, .prepare = prepare, .start = &start, .first_taken = &first_taken};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, run_batch, &out[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    pthread_barrier_destroy(&first_taken);
}

static void test_crossed_batches_deadlock_without_a_prepare(void **state) {
    (void)state;
    deta_db_t *db = deta_db_new(&cfg);
    reset_rows(db);
    batcher_t b[2];
    run_crossed(false, b);
    /* Postgres failed one of the two (deadlock detected, 40P01: transient),
     * which rolled back whole; the other committed. */
    int committed = (b[0].err == DETA_OK) + (b[1].err == DETA_OK);
    assert_int_equal(committed, 1);
    assert_int_equal(b[b[0].err == DETA_OK ? 1 : 0].err, DETA_ERR_TRANSIENT);
    assert_int_equal(count_of(db, "a"), 1);
    assert_int_equal(count_of(db, "b"), 1);
    deta_db_free(db);
}

static void test_a_prepare_in_key_order_queues_them_instead(void **state) {
    (void)state;
    deta_db_t *db = deta_db_new(&cfg);
    reset_rows(db);
    batcher_t b[2];
    run_crossed(true, b);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(b[i].err, DETA_OK);
        assert_int_equal(b[i].prepared, 1);
        assert_int_equal(b[i].results[0], DETA_OK);
        assert_int_equal(b[i].results[1], DETA_OK);
    }
    /* The second had the rows only once the first committed: after its pause. */
    long apart = labs(b[0].prepared_ms - b[1].prepared_ms);
    if (apart < PAUSE_MS)
        fail_msg("the batches had the rows %ld ms apart, not one after the other", apart);
    assert_int_equal(count_of(db, "a"), 2);
    assert_int_equal(count_of(db, "b"), 2);
    deta_db_free(db);
}

static deta_err_t refuse(deta_db_t *db, void *opaque, char *errstr, size_t errsize) {
    (void)opaque;
    /* It wrote before refusing: the rollback takes that back too. */
    run_admin(db, "UPDATE shared SET n = 100 WHERE k = 'a'");
    return deta_errf(DETA_ERR_INVALID, errstr, errsize, "refused by the prepare");
}

static deta_err_t must_not_apply(deta_db_t *db, size_t i, void *opaque, char *why,
                                 size_t whysize) {
    (void)db, (void)i, (void)why, (void)whysize;
    (*(int *)opaque)++;
    return DETA_OK;
}

static void test_a_failed_prepare_rolls_the_batch_back(void **state) {
    (void)state;
    deta_db_t *db = deta_db_new(&cfg);
    reset_rows(db);
    int applied = 0;
    deta_err_t results[2] = {DETA_OK, DETA_OK};
    char why[2][DETA_KAFKA_WHY_MAX] = {"", ""};
    char errstr[256] = "";
    size_t failed = 0;
    deta_err_t err = deta_batch_run(db, NULL, 2, 0, refuse, must_not_apply, &applied, results,
                                    why, &failed, errstr, sizeof errstr);
    assert_int_equal(err, DETA_ERR_TRANSIENT);
    assert_int_equal(failed, 2);
    assert_string_equal(errstr, "refused by the prepare");
    assert_int_equal(applied, 0);
    /* Rolled back, and the connection usable (no aborted transaction left). */
    assert_int_equal(count_of(db, "a"), 0);
    deta_db_free(db);
}

/* ---- a message's own outcome, without savepoints ---- */

/* Each message adds one to row a; what the one at index fail_at then answers
 * (DETA_OK for none). */
typedef struct scripted {
    size_t fail_at;
    deta_err_t answer;
    int applied;
} scripted_t;

static deta_err_t add_then_answer(deta_db_t *db, size_t i, void *opaque, char *why,
                                  size_t whysize) {
    scripted_t *s = opaque;
    s->applied++;
    if (i == s->fail_at && s->answer == DETA_ERR_CONFLICT)
        return deta_errf(DETA_ERR_CONFLICT, why, whysize, "a duplicate: nothing written");
    deta_err_t err =
        deta_db_run(db, "UPDATE shared SET n = n + 1 WHERE k = 'a'", 0, NULL, why, whysize);
    if (!err && i == s->fail_at && s->answer != DETA_OK)
        return deta_errf(s->answer, why, whysize, "refused after writing");
    return err;
}

/* A batch of three messages through apply, none refused before it. */
static deta_err_t run_three(deta_db_t *db, deta_batch_apply_fn apply, void *opaque,
                            deta_err_t results[3], char why[3][DETA_KAFKA_WHY_MAX],
                            size_t *failed) {
    char errstr[256] = "";
    for (int i = 0; i < 3; i++) {
        results[i] = DETA_OK;
        why[i][0] = '\0';
    }
    return deta_batch_run(db, NULL, 3, 0, NULL, apply, opaque, results, why, failed, errstr,
                          sizeof errstr);
}

static deta_err_t run_scripted(deta_db_t *db, scripted_t *s, deta_err_t results[3],
                               char why[3][DETA_KAFKA_WHY_MAX], size_t *failed) {
    return run_three(db, add_then_answer, s, results, why, failed);
}

/* A duplicate (DETA_ERR_CONFLICT, which writes nothing: deta/batch.h) leaves the
 * batch going: the others commit together, its code stays in results. */
static void test_a_duplicate_leaves_the_batch_going(void **state) {
    (void)state;
    deta_db_t *db = deta_db_new(&cfg);
    reset_rows(db);
    scripted_t s = {.fail_at = 1, .answer = DETA_ERR_CONFLICT};
    deta_err_t results[3];
    char why[3][DETA_KAFKA_WHY_MAX];
    size_t failed = 0;
    assert_int_equal(run_scripted(db, &s, results, why, &failed), DETA_OK);
    assert_int_equal(s.applied, 3);
    assert_int_equal(results[0], DETA_OK);
    assert_int_equal(results[1], DETA_ERR_CONFLICT);
    assert_int_equal(results[2], DETA_OK);
    assert_int_equal(count_of(db, "a"), 2);
    deta_db_free(db);
}

/* Any other failure of a message loses the batch: nothing of it is kept, not
 * the messages before it nor what the failed one wrote, the ones after it are
 * not applied, and the caller hears TRANSIENT with the message and its reason
 * (the consumer then applies them one at a time). */
static void test_a_failed_message_rolls_the_batch_back(void **state) {
    (void)state;
    deta_db_t *db = deta_db_new(&cfg);
    reset_rows(db);
    scripted_t s = {.fail_at = 1, .answer = DETA_ERR_INVALID};
    deta_err_t results[3];
    char why[3][DETA_KAFKA_WHY_MAX];
    size_t failed = 0;
    assert_int_equal(run_scripted(db, &s, results, why, &failed), DETA_ERR_TRANSIENT);
    assert_int_equal(failed, 1);
    assert_int_equal(results[1], DETA_ERR_INVALID);
    assert_string_equal(why[1], "refused after writing");
    assert_int_equal(s.applied, 2);
    assert_int_equal(count_of(db, "a"), 0);
    /* and the connection is usable for the next batch */
    s = (scripted_t){.fail_at = 3, .answer = DETA_OK};
    assert_int_equal(run_scripted(db, &s, results, why, &failed), DETA_OK);
    assert_int_equal(count_of(db, "a"), 3);
    deta_db_free(db);
}

/* Message 1 is a duplicate that a racing insert made: its statement failed on the
 * key (Postgres answers DETA_ERR_CONFLICT), and it says duplicate, but its
 * transaction is aborted. */
static deta_err_t add_then_race(deta_db_t *db, size_t i, void *opaque, char *why,
                                size_t whysize) {
    (*(int *)opaque)++;
    if (i != 1)
        return deta_db_run(db, "UPDATE shared SET n = n + 1 WHERE k = 'a'", 0, NULL, why,
                           whysize);
    deta_err_t err =
        deta_db_run(db, "INSERT INTO shared VALUES ('a', 0)", 0, NULL, why, whysize);
    assert_int_equal(err, DETA_ERR_CONFLICT);
    return err;
}

/* ... so the batch is lost after all: rolled back, TRANSIENT, the message named. */
static void test_a_duplicate_in_an_aborted_transaction_rolls_the_batch_back(void **state) {
    (void)state;
    deta_db_t *db = deta_db_new(&cfg);
    reset_rows(db);
    int applied = 0;
    deta_err_t results[3];
    char why[3][DETA_KAFKA_WHY_MAX];
    size_t failed = 0;
    assert_int_equal(run_three(db, add_then_race, &applied, results, why, &failed),
                     DETA_ERR_TRANSIENT);
    assert_int_equal(failed, 1);
    assert_int_equal(results[1], DETA_ERR_CONFLICT);
    assert_int_equal(applied, 2);
    assert_int_equal(count_of(db, "a"), 0);
    deta_db_free(db);
}

/* ---- the dispatcher's batch_lock ---- */

#define ORDER_1 "5b1e7c2a-0f3d-4c1e-9a7b-2d6e8f0a1b31"
#define ORDER_2 "5b1e7c2a-0f3d-4c1e-9a7b-2d6e8f0a1b32"
#define ORDER_3 "5b1e7c2a-0f3d-4c1e-9a7b-2d6e8f0a1b33"

/* What the dispatch did, in order: "lock <orders>" and "apply <order>". */
typedef struct calls {
    char log[4][160];
    size_t n;
} calls_t;

static void note(calls_t *c, const char *fmt, const char *a, const char *b) {
    assert_true(c->n < 4);
    snprintf(c->log[c->n++], sizeof c->log[0], fmt, a, b);
}

static deta_err_t record_lock(deta_db_t *db, const deta_event_t *const *events, size_t n,
                              void *opaque, char *errstr, size_t errsize) {
    (void)db, (void)errstr, (void)errsize;
    assert_int_equal(n, 2);
    note(opaque, "lock %s %s", events[0]->order_id, events[1]->order_id);
    return DETA_OK;
}

static deta_err_t record_apply(deta_db_t *db, const deta_event_t *ev, void *opaque,
                               char *errstr, size_t errsize) {
    (void)db, (void)errstr, (void)errsize;
    note(opaque, "apply %s%s", ev->order_id, "");
    return DETA_OK;
}

/* A service on the scratch database, for a dispatch of its own. */
static deta_service_t *scratch_service(void) {
    setenv("PGDATABASE", cfg.pg_database, 1);
    static const deta_service_def_t self = {"it-batch", 0, NULL};
    char why[256] = "";
    deta_service_t *svc = deta_service_new(&self, why, sizeof why);
    if (!svc)
        fail_msg("deta_service_new: %s", why);
    return svc;
}

static char *envelope(const char *type, const char *order) {
    return ts_event_by("order-service", type, order, order, json_object(), NULL);
}

static deta_kafka_msg_t message(const char *key, const char *value) {
    return (deta_kafka_msg_t){.topic = DETA_TOPIC_ORDER_EVENTS,
                              .key = key,
                              .key_len = strlen(key),
                              .value = value,
                              .len = strlen(value)};
}

static void test_the_dispatch_locks_the_events_to_apply_first(void **state) {
    (void)state;
    deta_service_t *svc = scratch_service();
    calls_t calls = {.n = 0};
    static const deta_event_route_t routes[] = {{DETA_EVT_ORDER_CREATED, record_apply, NULL}};
    const deta_event_dispatch_opts_t opts = {.own_key = true, .batch_lock = record_lock};
    deta_event_dispatch_t *d = deta_event_dispatch_new_opts(svc, routes, 1, &calls, &opts);
    assert_non_null(d);

    char *texts[] = {envelope(DETA_EVT_ORDER_CREATED, ORDER_1), strdup("{\"eventType\":"),
                     envelope(DETA_EVT_ORDER_CANCEL_REQUESTED, ORDER_2),
                     envelope(DETA_EVT_ORDER_CREATED, ORDER_3)};
    const char *keys[] = {ORDER_1, ORDER_2, ORDER_2, ORDER_3};
    deta_kafka_msg_t msgs[4];
    for (int i = 0; i < 4; i++)
        msgs[i] = message(keys[i], texts[i]);
    deta_err_t results[4];
    char whys[4][DETA_KAFKA_WHY_MAX];
    assert_int_equal(deta_event_dispatch_batch(msgs, 4, d, results, whys), DETA_OK);
    assert_int_equal(results[0], DETA_OK);
    assert_int_equal(results[1], DETA_ERR_INVALID); /* to be dead-lettered */
    assert_int_equal(results[2], DETA_OK);          /* ignored */
    assert_int_equal(results[3], DETA_OK);
    assert_int_equal(calls.n, 3);
    assert_string_equal(calls.log[0], "lock " ORDER_1 " " ORDER_3);
    assert_string_equal(calls.log[1], "apply " ORDER_1);
    assert_string_equal(calls.log[2], "apply " ORDER_3);

    for (int i = 0; i < 4; i++)
        free(texts[i]);
    deta_event_dispatch_free(d);
    deta_service_free(svc);
}

/* ---- the dispatcher's batch_apply ---- */

/* What the batch's one call saw, and what it answers: it adds one to row 'a'
 * per event it applies (in the batch's transaction), takes the second event as
 * the duplicate, and fails when told to. */
typedef struct at_once {
    calls_t calls;
    bool fail;
} at_once_t;

static deta_err_t apply_all(deta_db_t *db, const deta_event_t *const *events, size_t n,
                            bool *duplicate, void *opaque, char *errstr, size_t errsize) {
    at_once_t *a = opaque;
    assert_int_equal(n, 2);
    note(&a->calls, "all %s %s", events[0]->order_id, events[1]->order_id);
    duplicate[1] = true;
    deta_err_t err = deta_db_run(db, "UPDATE shared SET n = n + 1 WHERE k = 'a'", 0, NULL,
                                 errstr, errsize);
    if (!err && a->fail)
        err = deta_errf(DETA_ERR_TRANSIENT, errstr, errsize, "told to fail");
    return err;
}

/* deta_events_total{type="order.created",outcome=...} of svc's dispatches. */
static long events_counted(deta_service_t *svc, const char *outcome) {
    char labels[96];
    snprintf(labels, sizeof labels, "type=\"%s\",outcome=\"%s\"", DETA_EVT_ORDER_CREATED,
             outcome);
    return (long)deta_counter_value(deta_counter(deta_service_metrics(svc), "deta_events_total",
                                                 "Events consumed, by type and outcome",
                                                 labels));
}

static deta_err_t apply_one_of(deta_db_t *db, const deta_event_t *ev, void *opaque,
                               char *errstr, size_t errsize) {
    (void)db, (void)errstr, (void)errsize;
    note(&((at_once_t *)opaque)->calls, "apply %s%s", ev->order_id, "");
    return DETA_OK;
}

/* With batch_apply, the events still to apply go to it in one call, after the
 * batch's lock (none here) and in their order; the routes' handlers are not
 * called, the duplicate it names is done (not dead-lettered), and what it wrote
 * commits with the batch. When it fails, nothing of it stays and the batch's
 * error is returned, for the consumer to go one at a time; a batch with one
 * event to apply goes through its route. */
static void test_the_dispatch_applies_a_batch_at_once(void **state) {
    (void)state;
    deta_service_t *svc = scratch_service();
    deta_db_t *db = deta_db_pool_get(deta_service_db(svc));
    reset_rows(db);
    at_once_t a = {.fail = false};
    static const deta_event_route_t routes[] = {{DETA_EVT_ORDER_CREATED, apply_one_of, NULL}};
    const deta_event_dispatch_opts_t opts = {.own_key = true, .batch_apply = apply_all};
    deta_event_dispatch_t *d = deta_event_dispatch_new_opts(svc, routes, 1, &a, &opts);
    assert_non_null(d);

    char *texts[] = {envelope(DETA_EVT_ORDER_CREATED, ORDER_1), strdup("{\"eventType\":"),
                     envelope(DETA_EVT_ORDER_CREATED, ORDER_3)};
    const char *keys[] = {ORDER_1, ORDER_2, ORDER_3};
    deta_kafka_msg_t msgs[3];
    for (int i = 0; i < 3; i++)
        msgs[i] = message(keys[i], texts[i]);
    deta_err_t results[3];
    char whys[3][DETA_KAFKA_WHY_MAX];
    assert_int_equal(deta_event_dispatch_batch(msgs, 3, d, results, whys), DETA_OK);
    assert_int_equal(results[0], DETA_OK);
    assert_int_equal(results[1], DETA_ERR_INVALID); /* to be dead-lettered */
    assert_int_equal(results[2], DETA_OK);          /* the duplicate: done */
    assert_int_equal(a.calls.n, 1);
    assert_string_equal(a.calls.log[0], "all " ORDER_1 " " ORDER_3);
    assert_int_equal(count_of(db, "a"), 1);
    assert_int_equal(events_counted(svc, "applied"), 1); /* ORDER_1 */
    assert_int_equal(events_counted(svc, "duplicate"), 1); /* ORDER_3, as apply_all said */

    a = (at_once_t){.fail = true};
    assert_int_equal(deta_event_dispatch_batch(msgs, 3, d, results, whys), DETA_ERR_TRANSIENT);
    assert_int_equal(a.calls.n, 1);
    assert_int_equal(count_of(db, "a"), 1); /* its update rolled back */

    a = (at_once_t){.fail = false};
    assert_int_equal(deta_event_dispatch_batch(msgs, 2, d, results, whys), DETA_OK);
    assert_int_equal(a.calls.n, 1);
    assert_string_equal(a.calls.log[0], "apply " ORDER_1);
    assert_int_equal(count_of(db, "a"), 1);

    for (int i = 0; i < 3; i++)
        free(texts[i]);
    deta_event_dispatch_free(d);
    deta_service_free(svc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crossed_batches_deadlock_without_a_prepare),
        cmocka_unit_test(test_a_prepare_in_key_order_queues_them_instead),
        cmocka_unit_test(test_a_failed_prepare_rolls_the_batch_back),
        cmocka_unit_test(test_a_duplicate_leaves_the_batch_going),
        cmocka_unit_test(test_a_failed_message_rolls_the_batch_back),
        cmocka_unit_test(test_a_duplicate_in_an_aborted_transaction_rolls_the_batch_back),
        cmocka_unit_test(test_the_dispatch_locks_the_events_to_apply_first),
        cmocka_unit_test(test_the_dispatch_applies_a_batch_at_once),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
