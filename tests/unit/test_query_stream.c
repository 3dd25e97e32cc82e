/*
 * test_query_stream.c - query-api's stream rules (services/query-api/stream/):
 * the SSE frames, the strict parse of a resume point, the gap rule, the feed
 * reader's first look and where a stream starts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "query-api/stream/rules.h"
#include "query-api/stream/sse.h"

static feed_row_t row(int64_t seq) {
    feed_row_t r = {.seq = seq};
    strcpy(r.order_id, "6f1c1f4e-0000-4000-8000-000000000001");
    strcpy(r.event_id, "6f1c1f4e-0000-4000-8000-0000000000aa");
    strcpy(r.event_type, "payment.authorized");
    strcpy(r.topic, "raw.payment-events");
    strcpy(r.occurred_at, "2026-01-02T03:04:05.678Z");
    strcpy(r.status, "PAID");
    strcpy(r.customer_id, "c-1");
    return r;
}

static void order_frame_has_id_event_and_one_data_line(void **state) {
    (void)state;
    feed_row_t r = row(1234);
    size_t len = 0;
    char *f = sse_order_frame(&r, &len);
    assert_non_null(f);
    assert_int_equal(len, strlen(f));
    assert_string_equal(
        f, "id: 1234\nevent: order\ndata: {\"seq\":1234,\"orderId\":\"6f1c1f4e-0000-4000-8000-"
           "000000000001\",\"eventId\":\"6f1c1f4e-0000-4000-8000-0000000000aa\",\"eventType\":"
           "\"payment.authorized\",\"topic\":\"raw.payment-events\",\"occurredAt\":\"2026-01-"
           "02T03:04:05.678Z\",\"status\":\"PAID\",\"customerId\":\"c-1\"}\n\n");
    free(f);
}

static void order_frame_sends_null_for_unset_and_escapes_newlines(void **state) {
    (void)state;
    feed_row_t r = row(7);
    r.status[0] = '\0';
    strcpy(r.customer_id, "a\nb");
    size_t len;
    char *f = sse_order_frame(&r, &len);
    assert_non_null(strstr(f, "\"status\":null"));
    assert_non_null(strstr(f, "\"customerId\":\"a\\nb\""));
    /* exactly the three field lines and the blank line */
    int newlines = 0;
    for (char *p = f; *p; p++)
        newlines += *p == '\n';
    assert_int_equal(newlines, 4);
    free(f);
}

static void reset_frame_carries_the_newest_seq(void **state) {
    (void)state;
    char buf[96];
    size_t n = sse_reset_frame(99, buf, sizeof buf);
    assert_int_equal(n, strlen(buf));
    assert_string_equal(buf, "id: 99\nevent: reset\ndata: {\"seq\":99}\n\n");
    assert_int_equal(sse_reset_frame(99, buf, 10), 0);
}

static void event_id_parse_takes_decimals_in_range_only(void **state) {
    (void)state;
    int64_t v = -1;
    assert_true(sse_parse_event_id("0", &v));
    assert_int_equal(v, 0);
    assert_true(sse_parse_event_id("1234", &v));
    assert_int_equal(v, 1234);
    assert_true(sse_parse_event_id("9223372036854775807", &v));
    assert_int_equal(v, INT64_MAX);
    const char *bad[] = {"",    "-1",  "+1",  " 1",  "1 ", "1a", "0x10", "1.0",
                         "9223372036854775808", "99999999999999999999", "１", "1\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        v = 42;
        assert_false(sse_parse_event_id(bad[i], &v));
        assert_int_equal(v, 42);
    }
    assert_false(sse_parse_event_id(NULL, &v));
}

static void gap_takes_the_next_row_at_once(void **state) {
    (void)state;
    gap_wait_t w = {0};
    assert_int_equal(gap_check(&w, 10, 11, false, 1000, 10000), GAP_TAKE);
    assert_int_equal(gap_remaining_ms(&w, 1000, 10000), -1);
}

static void gap_looks_again_before_it_notes_holders(void **state) {
    (void)state;
    gap_wait_t w = {0};
    /* 11 missing, 12 seen: most holes fill within milliseconds, so first a wait */
    assert_int_equal(gap_check(&w, 10, 12, false, 1000, 10000), GAP_WAIT);
    /* 11 committed meanwhile: taken, the wait ends */
    assert_int_equal(gap_check(&w, 10, 11, false, 1020, 10000), GAP_TAKE);
    assert_int_equal(w.missing, 0);
}

static void gap_notes_holders_then_skips_once_they_ended(void **state) {
    (void)state;
    gap_wait_t w = {0};
    assert_int_equal(gap_check(&w, 10, 12, false, 1000, 10000), GAP_WAIT);
    /* still missing at the second look: the holders are asked for; a settled flag
     * from a read made before they were noted means nothing */
    assert_int_equal(gap_check(&w, 10, 12, true, 1020, 10000), GAP_HOLDERS);
    assert_int_equal(gap_check(&w, 10, 12, true, 1021, 10000), GAP_HOLDERS);
    gap_holders_noted(&w);
    assert_int_equal(gap_check(&w, 10, 12, false, 1040, 10000), GAP_WAIT);
    assert_int_equal(gap_remaining_ms(&w, 1500, 10000), 9500);
    /* a read whose snapshot shows every holder ended: 11 rolled back */
    assert_int_equal(gap_check(&w, 10, 12, true, 1060, 10000), GAP_SKIP);
    assert_int_equal(gap_remaining_ms(&w, 1060, 10000), -1);
}

static void gap_waits_for_a_slow_holder_however_long_within_the_bound(void **state) {
    (void)state;
    gap_wait_t w = {0};
    assert_int_equal(gap_check(&w, 10, 12, false, 0, 10000), GAP_WAIT);
    assert_int_equal(gap_check(&w, 10, 12, false, 20, 10000), GAP_HOLDERS);
    gap_holders_noted(&w);
    /* the old rule gave up after 2 s; a holder still open keeps the wait */
    assert_int_equal(gap_check(&w, 10, 12, false, 5000, 10000), GAP_WAIT);
    assert_int_equal(gap_check(&w, 10, 12, false, 9999, 10000), GAP_WAIT);
    /* it committed: 11 is the next row */
    assert_int_equal(gap_check(&w, 10, 11, false, 9999, 10000), GAP_TAKE);
    assert_int_equal(w.missing, 0);
}

static void gap_given_up_after_the_bound(void **state) {
    (void)state;
    gap_wait_t w = {0};
    assert_int_equal(gap_check(&w, 10, 12, false, 1000, 2000), GAP_WAIT);
    assert_int_equal(gap_check(&w, 10, 12, false, 1020, 2000), GAP_HOLDERS);
    gap_holders_noted(&w);
    assert_int_equal(gap_check(&w, 10, 12, false, 2999, 2000), GAP_WAIT);
    assert_int_equal(gap_check(&w, 10, 12, false, 3000, 2000), GAP_SKIP_BOUND);
    assert_int_equal(gap_remaining_ms(&w, 3000, 2000), -1);
    /* without holders noted too (their query kept failing) */
    assert_int_equal(gap_check(&w, 20, 22, false, 4000, 2000), GAP_WAIT);
    assert_int_equal(gap_check(&w, 20, 22, false, 4020, 2000), GAP_HOLDERS);
    assert_int_equal(gap_check(&w, 20, 22, false, 6000, 2000), GAP_SKIP_BOUND);
}

static void gap_partly_filled_starts_a_new_wait(void **state) {
    (void)state;
    gap_wait_t w = {0};
    /* 11 and 12 missing, 13 seen */
    assert_int_equal(gap_check(&w, 10, 13, false, 1000, 10000), GAP_WAIT);
    assert_int_equal(gap_check(&w, 10, 13, false, 1020, 10000), GAP_HOLDERS);
    gap_holders_noted(&w);
    /* 11 committed: taken, the wait ends */
    assert_int_equal(gap_check(&w, 10, 11, true, 1100, 10000), GAP_TAKE);
    /* 12 still missing: a new wait, its clock from now, holders noted anew */
    assert_int_equal(gap_check(&w, 11, 13, true, 1200, 10000), GAP_WAIT);
    assert_int_equal(gap_remaining_ms(&w, 1200, 10000), 10000);
    assert_int_equal(gap_check(&w, 11, 13, true, 1220, 10000), GAP_HOLDERS);
    gap_holders_noted(&w);
    assert_int_equal(gap_check(&w, 11, 13, true, 1240, 10000), GAP_SKIP);
}

static void gap_whose_first_row_went_starts_a_new_wait(void **state) {
    (void)state;
    gap_wait_t w = {0};
    /* 11..19 missing, 20 seen; the holders are noted and hold 11..19 */
    assert_int_equal(gap_check(&w, 10, 20, false, 0, 10000), GAP_WAIT);
    assert_int_equal(gap_check(&w, 10, 20, false, 20, 10000), GAP_HOLDERS);
    gap_holders_noted(&w);
    assert_int_equal(gap_check(&w, 10, 20, false, 40, 10000), GAP_WAIT);
    /* 15 committed: the holders noted cover 11..14 as well, the wait goes on */
    assert_int_equal(gap_check(&w, 10, 15, false, 60, 10000), GAP_WAIT);
    assert_int_equal(gap_check(&w, 10, 20, false, 80, 10000), GAP_WAIT);
    /* 15 and 20 deleted; later the holders ended, and 25 is the first row. 21..24
     * may be held by transactions that began after the holders were noted: a new
     * wait, not a skip by the old holders, nor a give-up by the old clock */
    assert_int_equal(gap_check(&w, 10, 25, true, 60000, 10000), GAP_WAIT);
    assert_int_equal(gap_remaining_ms(&w, 60000, 10000), 10000);
    assert_int_equal(gap_check(&w, 10, 25, true, 60020, 10000), GAP_HOLDERS);
    gap_holders_noted(&w);
    assert_int_equal(gap_check(&w, 10, 25, false, 60040, 10000), GAP_WAIT);
    assert_int_equal(gap_check(&w, 10, 25, true, 60060, 10000), GAP_SKIP);
}

static void first_look_starts_once_its_holders_ended(void **state) {
    (void)state;
    first_look_t f = {.pending = true, .newest = 100, .since_ms = 1000};
    assert_int_equal(first_look_check(&f, false, 1000, 10000), LOOK_WAIT);
    assert_int_equal(first_look_check(&f, false, 10999, 10000), LOOK_WAIT);
    assert_int_equal(first_look_check(&f, true, 10999, 10000), LOOK_START);
    /* ended wins over the clock; the clock alone gives them up */
    assert_int_equal(first_look_check(&f, true, 20000, 10000), LOOK_START);
    assert_int_equal(first_look_check(&f, false, 11000, 10000), LOOK_GIVE_UP);
    assert_int_equal(first_look_check(&f, false, 1000, 0), LOOK_GIVE_UP);
    /* an empty feed has no number below its start to wait for */
    first_look_t empty = {.pending = true, .newest = 0, .since_ms = 1000};
    assert_int_equal(first_look_check(&empty, false, 1000, 10000), LOOK_START);
}

static void gap_of_zero_ms_never_waits(void **state) {
    (void)state;
    gap_wait_t w = {0};
    assert_int_equal(gap_check(&w, 10, 20, false, 5, 0), GAP_SKIP_BOUND);
}

static void gap_holders_noted_without_a_wait_do_nothing(void **state) {
    (void)state;
    gap_wait_t w = {0};
    gap_holders_noted(&w);
    assert_false(w.holders);
    assert_int_equal(gap_check(&w, 10, 12, true, 0, 10000), GAP_WAIT);
}

static void start_without_resume_point(void **state) {
    (void)state;
    feed_extent_t e = {.oldest = 5, .newest = 100, .delivered = 100};
    int64_t c = -1;
    stream_start_t order = {.order_stream = true};
    assert_int_equal(stream_start_decide(&order, &e, 10000, &c), START_FROM);
    assert_int_equal(c, 0); /* every retained row of the order */
    stream_start_t board = {.order_stream = false};
    assert_int_equal(stream_start_decide(&board, &e, 10000, &c), START_FROM);
    assert_int_equal(c, 100); /* nothing old */
}

static void start_of_the_board_is_where_the_reader_is(void **state) {
    (void)state;
    /* the reader waits for a hole at 91: 92..100 committed, not yet sent to anyone */
    feed_extent_t e = {.oldest = 5, .newest = 100, .delivered = 90};
    int64_t c = -1;
    stream_start_t board = {.order_stream = false};
    assert_int_equal(stream_start_decide(&board, &e, 10000, &c), START_FROM);
    assert_int_equal(c, 90); /* so that 91..100 reach the new stream live */
    stream_start_t late = {.has_resume = true, .resume = 101}; /* beyond the newest */
    assert_int_equal(stream_start_decide(&late, &e, 10000, &c), START_RESET);
    assert_int_equal(c, 90);
    stream_start_t seen = {.has_resume = true, .resume = 95}; /* seen elsewhere: kept */
    assert_int_equal(stream_start_decide(&seen, &e, 10000, &c), START_FROM);
    assert_int_equal(c, 95);
}

static void start_from_a_served_resume_point(void **state) {
    (void)state;
    feed_extent_t e = {.oldest = 5, .newest = 100, .delivered = 100, .behind = 30};
    int64_t c = -1;
    stream_start_t s = {.has_resume = true, .resume = 70};
    assert_int_equal(stream_start_decide(&s, &e, 10000, &c), START_FROM);
    assert_int_equal(c, 70);
    s.resume = 4; /* the row just before the oldest retained: nothing purged after it */
    assert_int_equal(stream_start_decide(&s, &e, 10000, &c), START_FROM);
    assert_int_equal(c, 4);
    s.resume = 100;
    e.behind = 0;
    assert_int_equal(stream_start_decide(&s, &e, 10000, &c), START_FROM);
    assert_int_equal(c, 100);
}

static void start_resets_when_purged_ahead_or_too_far_behind(void **state) {
    (void)state;
    int64_t c = -1;
    stream_start_t s = {.has_resume = true, .resume = 3};
    feed_extent_t e = {.oldest = 5, .newest = 100, .delivered = 100, .behind = 10};
    assert_int_equal(stream_start_decide(&s, &e, 10000, &c), START_RESET);
    assert_int_equal(c, 100);
    s.resume = 101;
    assert_int_equal(stream_start_decide(&s, &e, 10000, &c), START_RESET);
    s.resume = 50;
    e.behind = 10001;
    assert_int_equal(stream_start_decide(&s, &e, 10000, &c), START_RESET);
    e.behind = 10000;
    assert_int_equal(stream_start_decide(&s, &e, 10000, &c), START_FROM);
    /* the largest resume point a client may send (found by fuzz_stream_resume:
     * resume + 1 overflowed) */
    s.resume = INT64_MAX;
    e.behind = 0;
    assert_int_equal(stream_start_decide(&s, &e, 10000, &c), START_RESET);
    assert_int_equal(c, 100);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(order_frame_has_id_event_and_one_data_line),
        cmocka_unit_test(order_frame_sends_null_for_unset_and_escapes_newlines),
        cmocka_unit_test(reset_frame_carries_the_newest_seq),
        cmocka_unit_test(event_id_parse_takes_decimals_in_range_only),
        cmocka_unit_test(gap_takes_the_next_row_at_once),
        cmocka_unit_test(gap_looks_again_before_it_notes_holders),
        cmocka_unit_test(gap_notes_holders_then_skips_once_they_ended),
        cmocka_unit_test(gap_waits_for_a_slow_holder_however_long_within_the_bound),
        cmocka_unit_test(gap_given_up_after_the_bound),
        cmocka_unit_test(gap_partly_filled_starts_a_new_wait),
        cmocka_unit_test(gap_whose_first_row_went_starts_a_new_wait),
        cmocka_unit_test(first_look_starts_once_its_holders_ended),
        cmocka_unit_test(gap_of_zero_ms_never_waits),
        cmocka_unit_test(gap_holders_noted_without_a_wait_do_nothing),
        cmocka_unit_test(start_without_resume_point),
        cmocka_unit_test(start_of_the_board_is_where_the_reader_is),
        cmocka_unit_test(start_from_a_served_resume_point),
        cmocka_unit_test(start_resets_when_purged_ahead_or_too_far_behind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
