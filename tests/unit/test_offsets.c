/*
 * test_offsets.c - the per-partition completed watermark (lib/src/offsets.c) that
 * the consumer's workers use to decide which offset may be stored.
 *
 * Pinned here: the watermark moves only over a prefix of finished offsets, lands
 * on "last finished + 1" across gaps, never moves backwards; out-of-order or
 * duplicate additions and unknown or repeated finishes are refused; the ring keeps
 * its order while it wraps and grows; running out of memory while it grows is
 * told apart from a refusal and records nothing (issue #22, finding 14: the
 * consumer then stops instead of dispatching a message its watermark would pass).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../lib/src/alloc.h"
#include "../../lib/src/offsets.h"

static void test_empty(void **state) {
    (void)state;
    deta_offsets_t t;
    deta_offsets_init(&t);
    assert_int_equal(deta_offsets_pending(&t), 0);
    assert_int_equal(deta_offsets_first(&t), -1);
    assert_int_equal(deta_offsets_advance(&t), -1);
    assert_false(deta_offsets_finish(&t, 0));
    deta_offsets_reset(&t);
    deta_offsets_t zeroed = {0}; /* zero-initialized is empty too */
    assert_int_equal(deta_offsets_advance(&zeroed), -1);
    assert_int_equal(deta_offsets_add(&zeroed, 3), DETA_OFFSETS_ADDED);
    deta_offsets_reset(&zeroed);
}

static void test_in_order(void **state) {
    (void)state;
    deta_offsets_t t;
    deta_offsets_init(&t);
    for (int64_t o = 10; o < 13; o++)
        assert_int_equal(deta_offsets_add(&t, o), DETA_OFFSETS_ADDED);
    assert_true(deta_offsets_finish(&t, 10));
    assert_int_equal(deta_offsets_advance(&t), 11);
    assert_int_equal(deta_offsets_advance(&t), -1); /* nothing new */
    assert_true(deta_offsets_finish(&t, 11));
    assert_true(deta_offsets_finish(&t, 12));
    assert_int_equal(deta_offsets_advance(&t), 13);
    assert_int_equal(deta_offsets_pending(&t), 0);
    deta_offsets_reset(&t);
}

/* A slow first message holds the watermark while later ones finish. */
static void test_out_of_order(void **state) {
    (void)state;
    deta_offsets_t t;
    deta_offsets_init(&t);
    for (int64_t o = 0; o < 5; o++)
        assert_int_equal(deta_offsets_add(&t, o), DETA_OFFSETS_ADDED);
    assert_true(deta_offsets_finish(&t, 4));
    assert_true(deta_offsets_finish(&t, 2));
    assert_true(deta_offsets_finish(&t, 1));
    assert_int_equal(deta_offsets_advance(&t), -1);
    assert_int_equal(deta_offsets_first(&t), 0);
    assert_int_equal(deta_offsets_pending(&t), 5);
    assert_true(deta_offsets_finish(&t, 0));
    assert_int_equal(deta_offsets_advance(&t), 3); /* 0,1,2 done; 3 is not */
    assert_int_equal(deta_offsets_first(&t), 3);
    assert_int_equal(deta_offsets_pending(&t), 2);
    assert_true(deta_offsets_finish(&t, 3));
    assert_int_equal(deta_offsets_advance(&t), 5);
    assert_int_equal(deta_offsets_first(&t), -1);
    deta_offsets_reset(&t);
}

/* Offsets with holes (compaction, transaction markers): store last + 1. */
static void test_gaps(void **state) {
    (void)state;
    deta_offsets_t t;
    deta_offsets_init(&t);
    assert_int_equal(deta_offsets_add(&t, 100), DETA_OFFSETS_ADDED);
    assert_int_equal(deta_offsets_add(&t, 105), DETA_OFFSETS_ADDED);
    assert_int_equal(deta_offsets_add(&t, 230), DETA_OFFSETS_ADDED);
    assert_false(deta_offsets_finish(&t, 101)); /* never dispatched */
    assert_true(deta_offsets_finish(&t, 105));
    assert_true(deta_offsets_finish(&t, 100));
    assert_int_equal(deta_offsets_advance(&t), 106);
    assert_true(deta_offsets_finish(&t, 230));
    assert_int_equal(deta_offsets_advance(&t), 231);
    deta_offsets_reset(&t);
}

static void test_refuses_bad_input(void **state) {
    (void)state;
    deta_offsets_t t;
    deta_offsets_init(&t);
    assert_int_equal(deta_offsets_add(&t, -1), DETA_OFFSETS_STALE);
    assert_int_equal(deta_offsets_add(&t, 5), DETA_OFFSETS_ADDED);
    assert_int_equal(deta_offsets_add(&t, 5), DETA_OFFSETS_STALE); /* duplicate */
    assert_int_equal(deta_offsets_add(&t, 4), DETA_OFFSETS_STALE); /* backwards */
    assert_int_equal(deta_offsets_pending(&t), 1);
    assert_false(deta_offsets_finish(&t, 6));
    assert_false(deta_offsets_finish(&t, -1));
    assert_true(deta_offsets_finish(&t, 5));
    assert_false(deta_offsets_finish(&t, 5)); /* twice */
    assert_int_equal(deta_offsets_advance(&t), 6);
    assert_false(deta_offsets_finish(&t, 5)); /* already passed */
    /* still below the last one added */
    assert_int_equal(deta_offsets_add(&t, 3), DETA_OFFSETS_STALE);
    assert_int_equal(deta_offsets_add(&t, 6), DETA_OFFSETS_ADDED);
    deta_offsets_reset(&t);
    assert_int_equal(deta_offsets_add(&t, 3), DETA_OFFSETS_ADDED); /* reset forgets the past */
    deta_offsets_reset(&t);
}

/* The ring wraps around and grows past its first capacity, keeping order. */
static void test_wraps_and_grows(void **state) {
    (void)state;
    deta_offsets_t t;
    deta_offsets_init(&t);
    int64_t next = 0, stored = 0;
    /* Wrap: keep ~10 in flight over many rounds. */
    for (int round = 0; round < 100; round++) {
        while (deta_offsets_pending(&t) < 10)
            assert_int_equal(deta_offsets_add(&t, next++), DETA_OFFSETS_ADDED);
        assert_true(deta_offsets_finish(&t, stored));
        assert_true(deta_offsets_finish(&t, stored + 1));
        int64_t w = deta_offsets_advance(&t);
        assert_int_equal(w, stored + 2);
        stored = w;
    }
    /* Grow while wrapped: 1000 in flight, finished newest first. */
    int64_t first = next;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(deta_offsets_add(&t, next++), DETA_OFFSETS_ADDED);
    for (int64_t o = next - 1; o >= first; o--) {
        assert_true(deta_offsets_finish(&t, o));
        assert_int_equal(deta_offsets_advance(&t), -1); /* stored..first-1 still open */
    }
    for (int64_t o = stored; o < first; o++)
        assert_true(deta_offsets_finish(&t, o));
    assert_int_equal(deta_offsets_advance(&t), next);
    assert_int_equal(deta_offsets_pending(&t), 0);
    deta_offsets_reset(&t);
}

static atomic_bool out_of_memory;

static bool fail_while_out_of_memory(size_t size) {
    (void)size;
    return atomic_load(&out_of_memory);
}

/* No memory for the first ring, then none to grow it: NO_MEMORY, nothing
 * recorded, the tracked offsets intact, and the same offset accepted later. */
static void test_out_of_memory(void **state) {
    (void)state;
    atomic_store(&deta_alloc_fail, fail_while_out_of_memory);
    deta_offsets_t t;
    deta_offsets_init(&t);
    atomic_store(&out_of_memory, true);
    assert_int_equal(deta_offsets_add(&t, 0), DETA_OFFSETS_NO_MEMORY);
    assert_int_equal(deta_offsets_pending(&t), 0);
    atomic_store(&out_of_memory, false);
    int64_t o = 0;
    while (t.count < t.cap || t.cap == 0)
        assert_int_equal(deta_offsets_add(&t, o++), DETA_OFFSETS_ADDED);
    size_t full = deta_offsets_pending(&t);
    atomic_store(&out_of_memory, true);
    assert_int_equal(deta_offsets_add(&t, o), DETA_OFFSETS_NO_MEMORY);
    assert_int_equal(deta_offsets_pending(&t), full);
    assert_int_equal(deta_offsets_first(&t), 0);
    assert_true(deta_offsets_finish(&t, 0));
    assert_int_equal(deta_offsets_advance(&t), 1);
    atomic_store(&out_of_memory, false);
    assert_int_equal(deta_offsets_add(&t, o), DETA_OFFSETS_ADDED); /* not taken as stale */
    assert_int_equal(deta_offsets_pending(&t), full);
    deta_offsets_reset(&t);
    atomic_store(&deta_alloc_fail, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_in_order),
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_gaps),
        cmocka_unit_test(test_refuses_bad_input),
        cmocka_unit_test(test_wraps_and_grows),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
