/*
 * test_order_cancel_domain.c - order-service's cancellation rules, no server:
 * the cancel's body, which answer for which (status, cancel_status), the
 * order.cancel_requested payload, and what each followed event does.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "deta/states.h"
#include "deta/topics.h"
#include "order-service/domain.h"

#define ORDER "0b6c1a52-8d1e-4c4e-9f38-2a3c3f4b5d6e"

static deta_err_t cancel_body(const char *json, order_cancel_request_t *c, order_violation_t *v) {
    json_t *body = NULL;
    if (json) {
        json_error_t jerr;
        body = json_loads(json, JSON_DECODE_ANY, &jerr);
        assert_non_null(body);
    }
    memset(v, 0, sizeof *v);
    deta_err_t err = order_cancel_from_request(body, c, v);
    json_decref(body);
    return err;
}

static void cancel_body_is_optional(void **state) {
    (void)state;
    order_cancel_request_t c;
    order_violation_t v;
    assert_int_equal(cancel_body(NULL, &c, &v), DETA_OK);
    assert_false(c.has_reason);
    assert_int_equal(cancel_body("{}", &c, &v), DETA_OK);
    assert_false(c.has_reason);
    assert_int_equal(cancel_body("{\"reason\":null,\"other\":1}", &c, &v), DETA_OK);
    assert_false(c.has_reason);
    assert_int_equal(cancel_body("{\"reason\":\"changed my mind\",\"x\":[]}", &c, &v), DETA_OK);
    assert_true(c.has_reason);
    assert_string_equal(c.reason, "changed my mind");
    char json[300];
    char r200[ORDER_CANCEL_REASON_MAX + 1];
    memset(r200, 'r', ORDER_CANCEL_REASON_MAX);
    r200[ORDER_CANCEL_REASON_MAX] = '\0';
    snprintf(json, sizeof json, "{\"reason\":\"%s\"}", r200);
    assert_int_equal(cancel_body(json, &c, &v), DETA_OK);
    assert_int_equal(strlen(c.reason), ORDER_CANCEL_REASON_MAX);
}

static void bad_reason_is_named(void **state) {
    (void)state;
    order_cancel_request_t c;
    order_violation_t v;
    char json[300];
    char r201[ORDER_CANCEL_REASON_MAX + 2];
    memset(r201, 'r', ORDER_CANCEL_REASON_MAX + 1);
    r201[ORDER_CANCEL_REASON_MAX + 1] = '\0';
    snprintf(json, sizeof json, "{\"reason\":\"%s\"}", r201);
    const char *bad[] = {"{\"reason\":\"\"}", "{\"reason\":7}", "{\"reason\":[\"a\"]}",
                         "{\"reason\":true}", json};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(cancel_body(bad[i], &c, &v), DETA_ERR_INVALID);
        assert_string_equal(v.field, "reason");
        assert_true(strlen(v.message) > 0);
        assert_non_null(v.reason);
    }
    assert_int_equal(cancel_body(json, &c, &v), DETA_ERR_INVALID);
    assert_non_null(strstr(v.message, "200"));
    const char *not_objects[] = {"[]", "\"reason\"", "3", "null"};
    for (size_t i = 0; i < sizeof not_objects / sizeof *not_objects; i++) {
        assert_int_equal(cancel_body(not_objects[i], &c, &v), DETA_ERR_INVALID);
        assert_string_equal(v.field, "body");
    }
}

typedef struct answer_case {
    const char *status, *cancel_status;
    order_cancel_answer_t answer;
    int http;
} answer_case_t;

/* The contract's table, row by row, and every state once. */
static void the_answer_follows_the_contract_table(void **state) {
    (void)state;
    const answer_case_t cases[] = {
        {DETA_STATE_CREATED, NULL, ORDER_CANCEL_ASK, 202},
        {DETA_STATE_INVENTORY_RESERVED, NULL, ORDER_CANCEL_ASK, 202},
        {DETA_STATE_PAYMENT_AUTHORIZED, NULL, ORDER_CANCEL_ASK, 202},
        {DETA_STATE_DELIVERY_WAITING, NULL, ORDER_CANCEL_ASK, 202},
        {DETA_STATE_DELIVERY_ASSIGNED, NULL, ORDER_CANCEL_ASK, 202},
        {DETA_STATE_PICKED_UP, NULL, ORDER_CANCEL_NOT_CANCELLABLE, 409},
        {DETA_STATE_DELIVERED, NULL, ORDER_CANCEL_NOT_CANCELLABLE, 409},
        {DETA_STATE_INVENTORY_REJECTED, NULL, ORDER_CANCEL_NOT_CANCELLABLE, 409},
        {DETA_STATE_PAYMENT_FAILED, NULL, ORDER_CANCEL_NOT_CANCELLABLE, 409},
        {DETA_STATE_CANCELLED, NULL, ORDER_CANCEL_DONE, 200},
        /* asked: the request's state decides, whatever the status says meanwhile */
        {DETA_STATE_CREATED, ORDER_CANCEL_REQUESTED, ORDER_CANCEL_PENDING, 202},
        {DETA_STATE_DELIVERY_ASSIGNED, ORDER_CANCEL_REQUESTED, ORDER_CANCEL_PENDING, 202},
        {DETA_STATE_PICKED_UP, ORDER_CANCEL_REQUESTED, ORDER_CANCEL_PENDING, 202},
        {DETA_STATE_CANCELLED, ORDER_CANCEL_CANCELLED, ORDER_CANCEL_DONE, 200},
        {DETA_STATE_PAYMENT_AUTHORIZED, ORDER_CANCEL_CANCELLED, ORDER_CANCEL_DONE, 200},
        {DETA_STATE_PICKED_UP, ORDER_CANCEL_REFUSED, ORDER_CANCEL_WAS_REFUSED, 409},
        {DETA_STATE_INVENTORY_REJECTED, ORDER_CANCEL_REFUSED, ORDER_CANCEL_WAS_REFUSED, 409},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        order_cancel_answer_t a = order_cancel_decide(cases[i].status, cases[i].cancel_status);
        if (a != cases[i].answer)
            fail_msg("case %zu (%s, %s): answer %d, expected %d", i, cases[i].status,
                     cases[i].cancel_status ? cases[i].cancel_status : "null", a,
                     cases[i].answer);
        assert_int_equal(order_cancel_http_status(a), cases[i].http);
    }
    assert_string_equal(order_cancel_outcome(ORDER_CANCEL_ASK), "requested");
    assert_string_equal(order_cancel_outcome(ORDER_CANCEL_PENDING), "already_requested");
    assert_string_equal(order_cancel_outcome(ORDER_CANCEL_DONE), "cancelled");
    assert_string_equal(order_cancel_outcome(ORDER_CANCEL_NOT_CANCELLABLE), "not_cancellable");
    assert_string_equal(order_cancel_outcome(ORDER_CANCEL_WAS_REFUSED), "refused");
}

static void cancel_requested_payload(void **state) {
    (void)state;
    json_t *p = order_cancel_requested_payload(ORDER, "late", "2026-11-25T12:38:05.123Z");
    assert_non_null(p);
    char *text = json_dumps(p, JSON_COMPACT);
    assert_string_equal(text, "{\"orderId\":\"" ORDER "\",\"reason\":\"late\","
                              "\"requestedAt\":\"2026-11-25T12:38:05.123Z\"}");
    free(text);
    json_decref(p);
    p = order_cancel_requested_payload(ORDER, NULL, "2026-11-25T12:38:05.123Z");
    assert_true(json_is_null(json_object_get(p, "reason")));
    json_decref(p);
}

/* ---- the followed events ---- */

static deta_event_t event_of(const char *type, const char *payload_json) {
    deta_event_t ev;
    memset(&ev, 0, sizeof ev);
    snprintf(ev.event_type, sizeof ev.event_type, "%s", type);
    snprintf(ev.order_id, sizeof ev.order_id, "%s", ORDER);
    json_error_t jerr;
    ev.payload = json_loads(payload_json, 0, &jerr);
    assert_non_null(ev.payload);
    return ev;
}

static deta_err_t read_event(const char *type, const char *payload_json,
                             order_event_effect_t *eff, char *why, size_t whysize) {
    deta_event_t ev = event_of(type, payload_json);
    why[0] = '\0';
    deta_err_t err = order_event_read(&ev, eff, why, whysize);
    deta_event_clear(&ev);
    return err;
}

static void which_types_are_followed(void **state) {
    (void)state;
    const char *followed[] = {
        DETA_EVT_INVENTORY_RESERVED, DETA_EVT_INVENTORY_REJECTED, DETA_EVT_PAYMENT_AUTHORIZED,
        DETA_EVT_PAYMENT_FAILED, DETA_EVT_DELIVERY_WAITING, DETA_EVT_DELIVERY_ASSIGNED,
        DETA_EVT_DELIVERY_PICKED_UP, DETA_EVT_DELIVERY_DELIVERED, DETA_EVT_INVENTORY_CANCELLED,
        DETA_EVT_PAYMENT_CANCELLED, DETA_EVT_DELIVERY_CANCELLED,
        DETA_EVT_INVENTORY_CANCEL_REFUSED, DETA_EVT_PAYMENT_CANCEL_REFUSED,
        DETA_EVT_DELIVERY_CANCEL_REFUSED};
    for (size_t i = 0; i < sizeof followed / sizeof *followed; i++)
        assert_true(order_event_followed(followed[i]));
    const char *skipped[] = {DETA_EVT_INVENTORY_RELEASED, DETA_EVT_ETA_UPDATED,
                             DETA_EVT_PAYMENT_REFUNDED, DETA_EVT_ORDER_CANCEL_REQUESTED,
                             DETA_EVT_INVENTORY_CANCEL_FORWARDED,
                             DETA_EVT_PAYMENT_CANCEL_FORWARDED, "no.such_type", ""};
    for (size_t i = 0; i < sizeof skipped / sizeof *skipped; i++)
        assert_false(order_event_followed(skipped[i]));
    order_event_effect_t eff;
    char why[256];
    assert_int_equal(read_event(DETA_EVT_ETA_UPDATED, "{\"orderId\":\"" ORDER "\"}", &eff, why,
                                sizeof why),
                     DETA_ERR_NOT_FOUND);
}

static void a_state_event_folds_its_state(void **state) {
    (void)state;
    order_event_effect_t eff;
    char why[256];
    assert_int_equal(read_event(DETA_EVT_DELIVERY_PICKED_UP, "{\"orderId\":\"" ORDER "\"}", &eff,
                                why, sizeof why),
                     DETA_OK);
    assert_string_equal(eff.order_id, ORDER);
    assert_string_equal(eff.state, DETA_STATE_PICKED_UP);
    assert_int_equal(eff.rank, deta_state_rank(DETA_STATE_PICKED_UP));
    assert_null(eff.verdict);
    assert_int_equal(read_event(DETA_EVT_INVENTORY_REJECTED, "{\"orderId\":\"" ORDER "\"}",
                                &eff, why, sizeof why),
                     DETA_OK);
    assert_string_equal(eff.state, DETA_STATE_INVENTORY_REJECTED);
    assert_int_equal(eff.rank, DETA_STATE_RANK_FAILED);
}

static void verdicts_are_read(void **state) {
    (void)state;
    order_event_effect_t eff;
    char why[256];
    const char *cancelled[] = {DETA_EVT_INVENTORY_CANCELLED, DETA_EVT_PAYMENT_CANCELLED,
                               DETA_EVT_DELIVERY_CANCELLED};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(read_event(cancelled[i],
                                    "{\"orderId\":\"" ORDER "\",\"stage\":\"NONE\","
                                    "\"cancelledAt\":\"2026-11-25T12:38:05.123Z\"}",
                                    &eff, why, sizeof why),
                         DETA_OK);
        assert_string_equal(eff.state, DETA_STATE_CANCELLED);
        assert_int_equal(eff.rank, DETA_STATE_RANK_CANCELLED);
        assert_string_equal(eff.verdict, ORDER_CANCEL_CANCELLED);
        assert_string_equal(eff.decided_at, "2026-11-25T12:38:05.123Z");
        assert_string_equal(eff.refused_because, "");
    }
    const char *refused[] = {DETA_EVT_INVENTORY_CANCEL_REFUSED, DETA_EVT_PAYMENT_CANCEL_REFUSED,
                             DETA_EVT_DELIVERY_CANCEL_REFUSED};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(read_event(refused[i],
                                    "{\"orderId\":\"" ORDER "\",\"orderStatus\":\"PICKED_UP\","
                                    "\"refusedAt\":\"2026-11-25T12:38:06Z\"}",
                                    &eff, why, sizeof why),
                         DETA_OK);
        assert_null(eff.state); /* a refusal sets no state */
        assert_string_equal(eff.verdict, ORDER_CANCEL_REFUSED);
        assert_string_equal(eff.refused_because, DETA_STATE_PICKED_UP);
        assert_string_equal(eff.decided_at, "2026-11-25T12:38:06Z");
    }
}

typedef struct bad_event {
    const char *type, *payload, *names;
} bad_event_t;

static void a_bad_payload_names_its_field(void **state) {
    (void)state;
    const bad_event_t cases[] = {
        {DETA_EVT_INVENTORY_RESERVED, "{}", "payload.orderId"},
        {DETA_EVT_PAYMENT_AUTHORIZED, "{\"orderId\":7}", "payload.orderId"},
        {DETA_EVT_DELIVERY_ASSIGNED,
         "{\"orderId\":\"11111111-2222-4333-8444-555555555555\"}", "payload.orderId"},
        {DETA_EVT_DELIVERY_CANCELLED, "{\"orderId\":\"" ORDER "\"}", "payload.cancelledAt"},
        {DETA_EVT_PAYMENT_CANCELLED, "{\"orderId\":\"" ORDER "\",\"cancelledAt\":\"yesterday\"}",
         "payload.cancelledAt"},
        {DETA_EVT_DELIVERY_CANCEL_REFUSED,
         "{\"orderId\":\"" ORDER "\",\"refusedAt\":\"2026-11-25T12:38:06Z\"}",
         "payload.orderStatus"},
        {DETA_EVT_INVENTORY_CANCEL_REFUSED,
         "{\"orderId\":\"" ORDER "\",\"orderStatus\":\"EATEN\","
         "\"refusedAt\":\"2026-11-25T12:38:06Z\"}",
         "payload.orderStatus"},
        {DETA_EVT_PAYMENT_CANCEL_REFUSED,
         "{\"orderId\":\"" ORDER "\",\"orderStatus\":\"PAYMENT_FAILED\"}", "payload.refusedAt"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        order_event_effect_t eff;
        char why[256];
        deta_err_t err = read_event(cases[i].type, cases[i].payload, &eff, why, sizeof why);
        if (err != DETA_ERR_INVALID || !strstr(why, cases[i].names))
            fail_msg("case %zu (%s): %s: %s, expected %s named", i, cases[i].type,
                     deta_err_name(err), why, cases[i].names);
    }
    /* a payload's orderId that is no UUID, even when it equals the envelope's */
    deta_event_t ev = event_of(DETA_EVT_INVENTORY_RESERVED, "{\"orderId\":\"o-1\"}");
    snprintf(ev.order_id, sizeof ev.order_id, "o-1");
    order_event_effect_t eff;
    char why[256];
    assert_int_equal(order_event_read(&ev, &eff, why, sizeof why), DETA_ERR_INVALID);
    assert_non_null(strstr(why, "payload.orderId"));
    deta_event_clear(&ev);
}

static order_event_effect_t effect(const char *order, const char *state, const char *verdict) {
    order_event_effect_t e;
    memset(&e, 0, sizeof e);
    snprintf(e.order_id, sizeof e.order_id, "%s", order);
    e.state = state;
    e.rank = state ? deta_state_rank(state) : 0;
    e.verdict = verdict;
    return e;
}

static void only_status_raising_effects_fold(void **state) {
    (void)state;
    order_event_effect_t raise = effect(ORDER, DETA_STATE_PICKED_UP, NULL);
    order_event_effect_t cancelled = effect(ORDER, DETA_STATE_CANCELLED, ORDER_CANCEL_CANCELLED);
    order_event_effect_t refused = effect(ORDER, NULL, ORDER_CANCEL_REFUSED);
    assert_true(order_effect_foldable(&raise));
    assert_false(order_effect_foldable(&cancelled));
    assert_false(order_effect_foldable(&refused));
}

/* A batch of three orders' effects, interleaved: A known at INVENTORY_RESERVED,
 * B unknown, C known at DELIVERED. Each outcome is what applying the effects one
 * by one, in this order, gives. */
static void a_fold_reports_what_one_by_one_would(void **state) {
    (void)state;
    const char *a = ORDER, *b = "1b6c1a52-8d1e-4c4e-9f38-2a3c3f4b5d6e",
               *c = "2b6c1a52-8d1e-4c4e-9f38-2a3c3f4b5d6e";
    order_event_effect_t e[] = {
        effect(a, DETA_STATE_PAYMENT_AUTHORIZED, NULL), /* above RESERVED: applied */
        effect(b, DETA_STATE_PAYMENT_AUTHORIZED, NULL), /* no such order */
        effect(a, DETA_STATE_PAYMENT_AUTHORIZED, NULL), /* a repeat: unchanged */
        effect(a, DETA_STATE_DELIVERY_ASSIGNED, NULL),  /* applied */
        effect(c, DETA_STATE_PICKED_UP, NULL),          /* below DELIVERED: unchanged */
        effect(a, DETA_STATE_DELIVERY_WAITING, NULL),   /* late, below ASSIGNED: unchanged */
        effect(a, DETA_STATE_INVENTORY_RESERVED, NULL), /* the order's own: unchanged */
        effect(a, DETA_STATE_PICKED_UP, NULL),          /* applied */
    };
    enum { N = sizeof e / sizeof *e };
    int reserved = deta_state_rank(DETA_STATE_INVENTORY_RESERVED),
        delivered = deta_state_rank(DETA_STATE_DELIVERED);
    int before[N] = {reserved, -1, reserved, reserved, delivered, reserved, reserved, reserved};
    const order_event_effect_t *effs[N];
    bool folded[N];
    for (int i = 0; i < N; i++) {
        effs[i] = &e[i];
        folded[i] = true;
    }
    order_event_result_t got[N];
    order_fold_outcomes(effs, folded, before, N, got);
    const order_event_result_t want[N] = {
        ORDER_EVENT_APPLIED,   ORDER_EVENT_UNKNOWN_ORDER, ORDER_EVENT_UNCHANGED,
        ORDER_EVENT_APPLIED,   ORDER_EVENT_UNCHANGED,     ORDER_EVENT_UNCHANGED,
        ORDER_EVENT_UNCHANGED, ORDER_EVENT_APPLIED};
    for (int i = 0; i < N; i++)
        if (got[i] != want[i])
            fail_msg("effect %d: outcome %d, expected %d", i, (int)got[i], (int)want[i]);
}

/* A verdict's state in the batch (applied on its own, not folded) counts for
 * the folded events after it, as one by one: A is cancelled between its two
 * events, so the late inventory.reserved after the verdict changes nothing;
 * B's event before its verdict still applied. */
static void a_verdict_in_the_batch_counts_for_later_events(void **state) {
    (void)state;
    const char *a = ORDER, *b = "1b6c1a52-8d1e-4c4e-9f38-2a3c3f4b5d6e";
    order_event_effect_t e[] = {
        effect(b, DETA_STATE_INVENTORY_RESERVED, NULL),
        effect(a, DETA_STATE_CANCELLED, ORDER_CANCEL_CANCELLED),
        effect(b, DETA_STATE_CANCELLED, ORDER_CANCEL_CANCELLED),
        effect(a, DETA_STATE_INVENTORY_RESERVED, NULL),
    };
    enum { N = sizeof e / sizeof *e };
    int created = deta_state_rank(DETA_STATE_CREATED);
    const bool folded[N] = {true, false, false, true};
    /* the fold ran at the first folded event, before both verdicts */
    const int before[N] = {created, 0, 0, created};
    const order_event_effect_t *effs[N] = {&e[0], &e[1], &e[2], &e[3]};
    order_event_result_t got[N] = {ORDER_EVENT_UNCHANGED, ORDER_EVENT_UNKNOWN_ORDER,
                                   ORDER_EVENT_UNKNOWN_ORDER, ORDER_EVENT_UNKNOWN_ORDER};
    order_fold_outcomes(effs, folded, before, N, got);
    assert_int_equal(got[0], ORDER_EVENT_APPLIED);
    assert_int_equal(got[3], ORDER_EVENT_UNCHANGED);
    /* the verdicts' own outcomes are their statements', not set here */
    assert_int_equal(got[1], ORDER_EVENT_UNKNOWN_ORDER);
    assert_int_equal(got[2], ORDER_EVENT_UNKNOWN_ORDER);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cancel_body_is_optional),
        cmocka_unit_test(bad_reason_is_named),
        cmocka_unit_test(the_answer_follows_the_contract_table),
        cmocka_unit_test(cancel_requested_payload),
        cmocka_unit_test(which_types_are_followed),
        cmocka_unit_test(a_state_event_folds_its_state),
        cmocka_unit_test(verdicts_are_read),
        cmocka_unit_test(a_bad_payload_names_its_field),
        cmocka_unit_test(only_status_raising_effects_fold),
        cmocka_unit_test(a_fold_reports_what_one_by_one_would),
        cmocka_unit_test(a_verdict_in_the_batch_counts_for_later_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
