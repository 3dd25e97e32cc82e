/*
 * test_states.c - the order states' ranks and which event sets which state
 * (lib/src/states.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "deta/states.h"
#include "deta/topics.h"

static void test_ranks_follow_the_order_of_the_saga(void **state) {
    (void)state;
    const char *forward[] = {"CREATED",           "INVENTORY_RESERVED", "PAYMENT_AUTHORIZED",
                             "DELIVERY_WAITING",  "DELIVERY_ASSIGNED",  "PICKED_UP",
                             "DELIVERED"};
    for (int i = 0; i < 7; i++)
        assert_int_equal(deta_state_rank(forward[i]), i + 1);
    assert_int_equal(deta_state_rank("INVENTORY_REJECTED"), 8);
    assert_int_equal(deta_state_rank("PAYMENT_FAILED"), 8);
    assert_int_equal(deta_state_rank("CANCELLED"), 9);
    assert_int_equal(deta_state_rank("cancelled"), 0);
    assert_int_equal(deta_state_rank(""), 0);
    assert_int_equal(deta_state_rank(NULL), 0);
    for (int i = 0; i < DETA_STATES_COUNT; i++) {
        assert_true(deta_state_rank(deta_states[i]) > 0);
        assert_true(strlen(deta_states[i]) < DETA_STATE_MAX);
    }
}

static void test_a_cancelled_order_never_moves(void **state) {
    (void)state;
    for (int i = 0; i < DETA_STATES_COUNT; i++)
        assert_false(deta_state_may_move(DETA_STATE_CANCELLED, deta_states[i]));
    assert_true(deta_state_may_move(DETA_STATE_PAYMENT_FAILED, DETA_STATE_CANCELLED));
    assert_true(deta_state_may_move(NULL, DETA_STATE_CREATED));
    assert_true(deta_state_may_move("", DETA_STATE_DELIVERY_ASSIGNED));
    assert_false(deta_state_may_move(DETA_STATE_PICKED_UP, DETA_STATE_DELIVERY_ASSIGNED));
    assert_false(deta_state_may_move(DETA_STATE_INVENTORY_REJECTED, DETA_STATE_PAYMENT_FAILED));
    assert_false(deta_state_may_move(DETA_STATE_CREATED, "SHIPPED"));
}

static void test_end_states_and_cancellable_ones(void **state) {
    (void)state;
    const char *ends[] = {"DELIVERED", "INVENTORY_REJECTED", "PAYMENT_FAILED", "CANCELLED"};
    for (size_t i = 0; i < 4; i++) {
        assert_true(deta_state_is_end(ends[i]));
        assert_false(deta_state_cancellable(ends[i]));
    }
    const char *open[] = {"CREATED", "INVENTORY_RESERVED", "PAYMENT_AUTHORIZED",
                          "DELIVERY_WAITING", "DELIVERY_ASSIGNED"};
    for (size_t i = 0; i < 5; i++) {
        assert_false(deta_state_is_end(open[i]));
        assert_true(deta_state_cancellable(open[i]));
    }
    assert_false(deta_state_is_end(DETA_STATE_PICKED_UP));
    assert_false(deta_state_cancellable(DETA_STATE_PICKED_UP));
    assert_true(deta_state_cancellable(NULL)); /* no event has set a state yet */
    assert_false(deta_state_is_end(NULL));
}

static void test_events_set_states(void **state) {
    (void)state;
    struct { const char *type, *state; } want[] = {
        {DETA_EVT_ORDER_CREATED, "CREATED"},
        {DETA_EVT_INVENTORY_RESERVED, "INVENTORY_RESERVED"},
        {DETA_EVT_INVENTORY_REJECTED, "INVENTORY_REJECTED"},
        {DETA_EVT_PAYMENT_AUTHORIZED, "PAYMENT_AUTHORIZED"},
        {DETA_EVT_PAYMENT_FAILED, "PAYMENT_FAILED"},
        {DETA_EVT_DELIVERY_WAITING, "DELIVERY_WAITING"},
        {DETA_EVT_DELIVERY_ASSIGNED, "DELIVERY_ASSIGNED"},
        {DETA_EVT_DELIVERY_PICKED_UP, "PICKED_UP"},
        {DETA_EVT_DELIVERY_DELIVERED, "DELIVERED"},
        {DETA_EVT_INVENTORY_CANCELLED, "CANCELLED"},
        {DETA_EVT_PAYMENT_CANCELLED, "CANCELLED"},
        {DETA_EVT_DELIVERY_CANCELLED, "CANCELLED"},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const char *got = deta_state_for_event(want[i].type);
        if (!got)
            fail_msg("%s sets no state", want[i].type);
        assert_string_equal(got, want[i].state);
    }
    const char *none[] = {DETA_EVT_INVENTORY_RELEASED,         DETA_EVT_ETA_UPDATED,
                          DETA_EVT_PAYMENT_REFUNDED,           DETA_EVT_ORDER_CANCEL_REQUESTED,
                          DETA_EVT_INVENTORY_CANCEL_FORWARDED, DETA_EVT_INVENTORY_CANCEL_REFUSED,
                          DETA_EVT_PAYMENT_CANCEL_FORWARDED,   DETA_EVT_PAYMENT_CANCEL_REFUSED,
                          DETA_EVT_DELIVERY_CANCEL_REFUSED,    "order.cancelled",
                          "",                                  NULL};
    for (size_t i = 0; i < sizeof none / sizeof *none; i++)
        if (deta_state_for_event(none[i]))
            fail_msg("%s sets %s", none[i] ? none[i] : "NULL", deta_state_for_event(none[i]));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranks_follow_the_order_of_the_saga),
        cmocka_unit_test(test_a_cancelled_order_never_moves),
        cmocka_unit_test(test_end_states_and_cancellable_ones),
        cmocka_unit_test(test_events_set_states),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
