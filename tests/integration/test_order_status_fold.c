/*
 * test_order_status_fold.c - order-service's status changes of a batch in one
 * statement (order_store_fold_status, services/order-service/store.c) leave
 * every order exactly as the same events applied one by one
 * (order_store_apply_event) do, and report the ranks that order_fold_outcomes
 * turns into each event's outcome; on a scratch database it_order_fold_<pid> of
 * the test stack's Postgres, with order-service's own migrations.
 *
 * Each case is written twice, on two copies of its orders (same statuses): the
 * fold on one, one by one on the other. The cases: a rise past several ranks in
 * one batch; a repeat and a late, lower event; two events of the same rank (two
 * failures: the first of them wins, as one by one); an order already past every
 * event; and an order that is not there.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "deta/config.h"
#include "deta/db.h"
#include "deta/states.h"
#include "store.h"
#include "testsupport.h"

static deta_config_t cfg;
static deta_db_t *db;

static int setup(void **state) {
    (void)state;
    if (ts_scratch_db_create("order-service", "order_fold", &cfg) != 0)
        return -1;
    db = deta_db_new(&cfg);
    char why[256] = "";
    if (!db || deta_db_migrate(db, "order-service", order_migrations, order_migrations_count, why,
                               sizeof why) != DETA_OK) {
        fprintf(stderr, "migrations: %s\n", why);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    deta_db_free(db);
    ts_scratch_db_drop(&cfg);
    return 0;
}

/* An order in status, with a fresh id. */
static void order_in(const char *status, char id[37]) {
    ts_uuid(id);
    char rank[16];
    snprintf(rank, sizeof rank, "%d", deta_state_rank(status));
    const char *params[] = {id, status, rank};
    char why[256] = "";
    if (deta_db_run(db,
                    "INSERT INTO orders (order_id, customer_id, currency, total_amount, status,"
                    "  status_rank, correlation_id, created_at, updated_at)"
                    " VALUES ($1, 'cust-fold', 'EUR', 1, $2, $3::int, $1, now(), now())",
                    3, params, why, sizeof why) != DETA_OK)
        fail_msg("insert: %s", why);
}

static void status_of(const char *id, char *out, size_t size) {
    const char *params[] = {id};
    deta_err_t err;
    char why[256] = "";
    PGresult *r = deta_db_exec(db, "SELECT status FROM orders WHERE order_id = $1", 1, params,
                               &err, why, sizeof why);
    if (!r)
        fail_msg("status: %s", why);
    snprintf(out, size, "%s", PQntuples(r) ? PQgetvalue(r, 0, 0) : "(none)");
    PQclear(r);
}

typedef struct step {
    int order;         /* index into the case's orders */
    const char *state; /* the event's state */
} step_t;

#define ORDERS 5
#define STEPS (ORDER_STORE_FOLD_ROWS_MAX + 8)

/* The case's orders (start[k] their statuses, NULL: not there) get steps, folded
 * on one copy and one by one on the other: same statuses after, the same
 * outcome for every event. */
static void fold_equals_one_by_one(const char *const start[ORDERS], const step_t *steps,
                                   size_t n) {
    char folded[ORDERS][37], single[ORDERS][37];
    for (int k = 0; k < ORDERS; k++) {
        if (start[k]) {
            order_in(start[k], folded[k]);
            order_in(start[k], single[k]);
        } else {
            ts_uuid(folded[k]);
            ts_uuid(single[k]);
        }
    }
    order_event_effect_t effs[STEPS], one[STEPS];
    const order_event_effect_t *ptrs[STEPS];
    bool in_fold[STEPS];
    assert_true(n <= STEPS);
    for (size_t i = 0; i < n; i++) {
        memset(&effs[i], 0, sizeof effs[i]);
        snprintf(effs[i].order_id, sizeof effs[i].order_id, "%s", folded[steps[i].order]);
        effs[i].state = steps[i].state;
        effs[i].rank = deta_state_rank(steps[i].state);
        assert_true(order_effect_foldable(&effs[i]));
        one[i] = effs[i];
        snprintf(one[i].order_id, sizeof one[i].order_id, "%s", single[steps[i].order]);
        ptrs[i] = &effs[i];
        in_fold[i] = true;
    }

    char why[256] = "";
    int before[STEPS];
    order_event_result_t fold_out[STEPS], one_out[STEPS];
    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    if (order_store_fold_status(db, ptrs, n, before, why, sizeof why) != DETA_OK)
        fail_msg("fold: %s", why);
    assert_int_equal(deta_db_commit(db, why, sizeof why), DETA_OK);
    order_fold_outcomes(ptrs, in_fold, before, n, fold_out);
    for (size_t i = 0; i < n; i++)
        if (order_store_apply_event(db, &one[i], &one_out[i], why, sizeof why) != DETA_OK)
            fail_msg("one by one, event %zu: %s", i, why);

    for (size_t i = 0; i < n; i++) {
        const char *st = start[steps[i].order];
        int want = st ? deta_state_rank(st) : -1;
        /* rows past the first statement's read what the first one raised */
        bool read_ok = i < ORDER_STORE_FOLD_ROWS_MAX
                           ? before[i] == want
                           : (want < 0 ? before[i] < 0 : before[i] >= want);
        if (!read_ok)
            fail_msg("event %zu: the fold read rank %d, the order had %d", i, before[i], want);
        if (fold_out[i] != one_out[i])
            fail_msg("event %zu (%s): outcome %d folded, %d one by one", i, steps[i].state,
                     (int)fold_out[i], (int)one_out[i]);
    }
    for (int k = 0; k < ORDERS; k++) {
        char a[64], b[64];
        status_of(folded[k], a, sizeof a);
        status_of(single[k], b, sizeof b);
        if (strcmp(a, b) != 0)
            fail_msg("order %d: %s folded, %s one by one", k, a, b);
    }
}

static void a_batch_folds_as_one_by_one(void **state) {
    (void)state;
    const char *start[ORDERS] = {DETA_STATE_CREATED, DETA_STATE_PAYMENT_AUTHORIZED,
                                 DETA_STATE_CREATED, DETA_STATE_DELIVERED, NULL};
    const step_t steps[] = {
        {0, DETA_STATE_INVENTORY_RESERVED},  /* 0 rises past several ranks */
        {1, DETA_STATE_INVENTORY_RESERVED},  /* 1: late, lower */
        {0, DETA_STATE_PAYMENT_AUTHORIZED},
        {2, DETA_STATE_INVENTORY_REJECTED},  /* 2: two of the same rank, */
        {4, DETA_STATE_INVENTORY_RESERVED},  /* 4: no such order */
        {0, DETA_STATE_PAYMENT_AUTHORIZED},  /* a repeat */
        {2, DETA_STATE_PAYMENT_FAILED},      /* the first one stays */
        {3, DETA_STATE_PICKED_UP},           /* 3: past it already */
        {1, DETA_STATE_DELIVERY_ASSIGNED},
        {0, DETA_STATE_DELIVERY_ASSIGNED},
        {1, DETA_STATE_DELIVERY_WAITING},    /* late, lower */
        {0, DETA_STATE_PICKED_UP},
    };
    fold_equals_one_by_one(start, steps, sizeof steps / sizeof *steps);
}

/* Every order's events in one batch, the other way round: a late rank first. */
static void late_events_first(void **state) {
    (void)state;
    const char *start[ORDERS] = {DETA_STATE_CREATED, DETA_STATE_CREATED, DETA_STATE_CREATED,
                                 DETA_STATE_CREATED, DETA_STATE_CREATED};
    const step_t steps[] = {
        {0, DETA_STATE_PICKED_UP},          {0, DETA_STATE_INVENTORY_RESERVED},
        {1, DETA_STATE_PAYMENT_FAILED},     {1, DETA_STATE_INVENTORY_REJECTED},
        {2, DETA_STATE_CANCELLED},          {2, DETA_STATE_PAYMENT_FAILED},
        {3, DETA_STATE_DELIVERED},          {4, DETA_STATE_INVENTORY_RESERVED},
    };
    fold_equals_one_by_one(start, steps, sizeof steps / sizeof *steps);
}

/* More events than one statement takes (ORDER_STORE_FOLD_ROWS_MAX): the fold
 * goes in two statements, the second reading what the first raised. */
static void more_than_one_statement(void **state) {
    (void)state;
    const char *start[ORDERS] = {DETA_STATE_CREATED, DETA_STATE_CREATED, DETA_STATE_CREATED,
                                 DETA_STATE_PAYMENT_AUTHORIZED, NULL};
    static const char *const ladder[] = {
        DETA_STATE_INVENTORY_RESERVED, DETA_STATE_PAYMENT_AUTHORIZED,
        DETA_STATE_DELIVERY_WAITING,   DETA_STATE_DELIVERY_ASSIGNED,
        DETA_STATE_INVENTORY_RESERVED, DETA_STATE_PICKED_UP};
    step_t steps[ORDER_STORE_FOLD_ROWS_MAX + 4];
    size_t n = sizeof steps / sizeof *steps;
    for (size_t i = 0; i < n; i++)
        steps[i] = (step_t){(int)(i % ORDERS), ladder[(i / ORDERS + i) % 6]};
    fold_equals_one_by_one(start, steps, n);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_batch_folds_as_one_by_one),
        cmocka_unit_test(late_events_first),
        cmocka_unit_test(more_than_one_statement),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
