/*
 * test_delivery_domain.c - delivery-service's rules without any server: stable
 * distances and jitters, ETAs on the simulated clock (stages in order, clock-speed
 * conversion), the choice of the least busy driver, the payloads it writes and the
 * validation of the payment.authorized it reads; the cancel's verdicts, the
 * validation of payment.cancel_forwarded and the verdicts' payloads.
 *
 * The header is included by path: every service's folder has a domain.h, and the
 * unit tests see all of their include directories.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "delivery-service/domain.h"
#include "deta/topics.h"

#define ORDER "7a0c5b7e-1d8e-4c1e-9a57-3f1f6a2b9c01"
#define CORR "0b7a2f0e-55aa-4d0c-8e7b-1c2d3e4f5a6b"
#define T0 INT64_C(1764074285123) /* 2025-11-25T12:38:05.123Z */
#define SAMPLES 3000

static delivery_params_t defaults(void) {
    delivery_params_t p;
    delivery_params_defaults(&p);
    return p;
}

/* ---- stages and settings ---- */

static void stages_have_names_and_parse_back(void **state) {
    (void)state;
    const delivery_stage_t all[] = {DELIVERY_ASSIGNED, DELIVERY_PICKED_UP, DELIVERY_DELIVERED,
                                    DELIVERY_CANCELLED};
    const char *names[] = {"ASSIGNED", "PICKED_UP", "DELIVERED", "CANCELLED"};
    const char *types[] = {DETA_EVT_DELIVERY_ASSIGNED, DETA_EVT_DELIVERY_PICKED_UP,
                           DETA_EVT_DELIVERY_DELIVERED, NULL};
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(delivery_stage_name(all[i]), names[i]);
        if (types[i])
            assert_string_equal(delivery_stage_event_type(all[i]), types[i]);
        else /* delivery.cancelled is not a stage's announcement */
            assert_null(delivery_stage_event_type(all[i]));
        delivery_stage_t back = DELIVERY_DELIVERED;
        assert_true(delivery_stage_parse(names[i], &back));
        assert_int_equal(back, all[i]);
    }
    delivery_stage_t s;
    assert_false(delivery_stage_parse("assigned", &s));
    assert_false(delivery_stage_parse("", &s));
    assert_false(delivery_stage_parse(NULL, &s));
    assert_null(delivery_stage_name((delivery_stage_t)7));
}

static void defaults_are_the_documented_ones(void **state) {
    (void)state;
    delivery_params_t p = defaults();
    assert_int_equal(p.drivers, 20);
    assert_int_equal(p.capacity, 5);
    assert_int_equal(p.pickup_minutes, 10);
    assert_int_equal(p.speed_kmh, 25);
    assert_int_equal(p.clock_speed, 1);
    assert_int_equal(p.tick_ms, 200);
}

/* ---- distance, travel, jitter, clock ---- */

static void distance_is_stable_bounded_and_spread(void **state) {
    (void)state;
    assert_int_equal(delivery_distance_hm(ORDER), delivery_distance_hm(ORDER));
    int lo = 1000, hi = 0, differs = 0, first = -1;
    for (int i = 0; i < SAMPLES; i++) {
        char id[DETA_UUID_LEN + 1];
        deta_uuid_new(id);
        int d = delivery_distance_hm(id);
        assert_in_range(d, DELIVERY_DISTANCE_MIN_HM, DELIVERY_DISTANCE_MAX_HM);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
        if (first < 0)
            first = d;
        differs += d != first;
    }
    /* 141 possible values and thousands of ids: both ends are reached. */
    assert_int_equal(lo, DELIVERY_DISTANCE_MIN_HM);
    assert_int_equal(hi, DELIVERY_DISTANCE_MAX_HM);
    assert_true(differs > SAMPLES / 2);
}

static void travel_time_is_distance_over_speed(void **state) {
    (void)state;
    delivery_params_t p = defaults();
    assert_int_equal(delivery_travel_s(&p, 100), 1440); /* 10 km at 25 km/h: 24 min */
    assert_int_equal(delivery_travel_s(&p, 10), 144);   /* 1 km: 2.4 min */
    p.speed_kmh = 60;
    assert_int_equal(delivery_travel_s(&p, 150), 900); /* 15 km at 60 km/h: 15 min */
    p.speed_kmh = 300;
    assert_int_equal(delivery_travel_s(&p, 10), 12);
}

static void jitter_is_bounded_stable_and_changes_at_pickup(void **state) {
    (void)state;
    int64_t travel = 1440, bound = travel / DELIVERY_JITTER_DIVISOR;
    int negative = 0, positive = 0;
    for (int i = 0; i < SAMPLES; i++) {
        char id[DETA_UUID_LEN + 1];
        deta_uuid_new(id);
        int64_t a = delivery_jitter_s(id, travel, DELIVERY_ASSIGNED);
        int64_t b = delivery_jitter_s(id, travel, DELIVERY_PICKED_UP);
        assert_true(a >= -bound && a <= bound);
        assert_true(b >= -bound && b <= bound);
        assert_true(a != b);
        assert_int_equal(a, delivery_jitter_s(id, travel, DELIVERY_ASSIGNED));
        assert_int_equal(b, delivery_jitter_s(id, travel, DELIVERY_PICKED_UP));
        negative += a < 0;
        positive += a > 0;
    }
    assert_true(negative > SAMPLES / 4 && positive > SAMPLES / 4);
    assert_int_equal(delivery_jitter_s(ORDER, travel, DELIVERY_DELIVERED), 0);
    assert_int_equal(delivery_jitter_s(ORDER, 4, DELIVERY_ASSIGNED), 0); /* no room for any */
}

static void clock_speed_compresses_simulated_time(void **state) {
    (void)state;
    delivery_params_t p = defaults();
    assert_int_equal(delivery_real_ms(&p, 600), 600000);
    p.clock_speed = 60;
    assert_int_equal(delivery_real_ms(&p, 60), 1000); /* a simulated minute per second */
    p.clock_speed = 600;
    assert_int_equal(delivery_real_ms(&p, 600), 1000);
    assert_int_equal(delivery_real_ms(&p, 1), 2); /* 1.67 ms rounds up */
    assert_int_equal(delivery_real_ms(&p, -1), -2);
    assert_int_equal(delivery_real_ms(&p, 0), 0);
}

/* ---- the life of a delivery ---- */

static delivery_t assigned(const delivery_params_t *p, int64_t at) {
    delivery_t d;
    assert_int_equal(delivery_assign(p, &d, "d0e1f2a3-b4c5-4d6e-8f70-8192a3b4c5d6", ORDER,
                                     "driver-03", "Driver 03", at),
                     DETA_OK);
    return d;
}

static void assignment_schedules_pickup_and_first_eta(void **state) {
    (void)state;
    delivery_params_t p = defaults();
    delivery_t d = assigned(&p, T0);
    int64_t travel = delivery_travel_s(&p, d.distance_hm);
    int64_t jitter = delivery_jitter_s(ORDER, travel, DELIVERY_ASSIGNED);
    assert_int_equal(d.status, DELIVERY_ASSIGNED);
    assert_string_equal(d.order_id, ORDER);
    assert_string_equal(d.driver_name, "Driver 03");
    assert_int_equal(d.distance_hm, delivery_distance_hm(ORDER));
    assert_int_equal(d.assigned_ms, T0);
    assert_int_equal(d.picked_up_ms, 0);
    assert_int_equal(d.delivered_ms, 0);
    assert_int_equal(d.next_transition_ms, T0 + 10 * 60 * 1000);
    assert_int_equal(d.eta_ms, T0 + (600 + travel + jitter) * 1000);
    assert_true(d.eta_ms > d.next_transition_ms);

    double seconds = delivery_estimated_seconds(&p, &d);
    assert_true(seconds >= 600.0 + (double)travel * 0.8 - 1e-9);
    assert_true(seconds <= 600.0 + (double)travel * 1.2 + 1e-9);
    double gap = seconds * 1000.0 - (double)(d.eta_ms - T0); /* one clock: real = simulated */
    assert_true(gap > -1e-6 && gap < 1e-6);
}

static void fast_clock_brings_every_instant_closer(void **state) {
    (void)state;
    delivery_params_t p = defaults();
    p.clock_speed = 600;
    delivery_t d = assigned(&p, T0);
    int64_t travel = delivery_travel_s(&p, d.distance_hm);
    int64_t jitter = delivery_jitter_s(ORDER, travel, DELIVERY_ASSIGNED);
    assert_int_equal(d.next_transition_ms, T0 + 1000); /* ten simulated minutes */
    assert_int_equal(d.eta_ms, T0 + delivery_real_ms(&p, 600 + travel + jitter));
    assert_true(d.eta_ms - T0 < 6000); /* at most about 54 simulated minutes */
    /* the estimate in simulated seconds does not depend on the clock */
    delivery_params_t slow = defaults();
    delivery_t s = assigned(&slow, T0);
    assert_true(delivery_estimated_seconds(&p, &d) == delivery_estimated_seconds(&slow, &s));
}

static void stages_advance_in_order_with_fresh_etas(void **state) {
    (void)state;
    delivery_params_t p = defaults();
    p.clock_speed = 600;
    delivery_t d = assigned(&p, T0);
    int64_t first_eta = d.eta_ms;
    int64_t pickup_at = d.next_transition_ms;

    assert_int_equal(delivery_advance(&p, &d, pickup_at), DETA_OK);
    int64_t travel = delivery_travel_s(&p, d.distance_hm);
    int64_t jitter = delivery_jitter_s(ORDER, travel, DELIVERY_PICKED_UP);
    assert_int_equal(d.status, DELIVERY_PICKED_UP);
    assert_int_equal(d.picked_up_ms, pickup_at);
    assert_int_equal(d.eta_ms, pickup_at + delivery_real_ms(&p, travel + jitter));
    assert_true(d.eta_ms > d.picked_up_ms);
    assert_true(d.eta_ms != first_eta); /* recomputed jitter: the ETA moves */
    assert_int_equal(d.next_transition_ms, d.eta_ms);

    int64_t late = d.eta_ms + 37;
    assert_int_equal(delivery_advance(&p, &d, late), DETA_OK);
    assert_int_equal(d.status, DELIVERY_DELIVERED);
    assert_int_equal(d.delivered_ms, late);
    assert_int_equal(d.eta_ms, late); /* the final ETA is the delivery itself */
    assert_int_equal(d.next_transition_ms, 0);
    assert_true(d.assigned_ms <= d.picked_up_ms && d.picked_up_ms <= d.delivered_ms);

    delivery_t copy = d;
    assert_int_equal(delivery_advance(&p, &d, late + 1000), DETA_ERR_INVALID);
    assert_memory_equal(&copy, &d, sizeof d);
}

static void stages_never_go_back_in_time(void **state) {
    (void)state;
    delivery_params_t p = defaults();
    delivery_t d = assigned(&p, T0);
    assert_int_equal(delivery_advance(&p, &d, T0 - 5000), DETA_OK); /* the clock stepped back */
    assert_int_equal(d.picked_up_ms, T0);
    assert_true(d.eta_ms > T0);
    assert_int_equal(delivery_advance(&p, &d, T0 - 9000), DETA_OK);
    assert_int_equal(d.delivered_ms, T0);
    assert_int_equal(d.eta_ms, T0);
}

static void assignment_refuses_ids_that_do_not_fit(void **state) {
    (void)state;
    delivery_params_t p = defaults();
    delivery_t d;
    char long_id[DELIVERY_DRIVER_ID_MAX + 2];
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = 0;
    assert_int_equal(delivery_assign(&p, &d, "d", ORDER, long_id, "N", T0), DETA_ERR_INVALID);
    assert_int_equal(delivery_assign(&p, &d, "d", ORDER "x", "driver-01", "N", T0),
                     DETA_ERR_INVALID);
    assert_int_equal(delivery_assign(&p, &d, "d", ORDER, NULL, "N", T0), DETA_ERR_INVALID);
}

/* ---- drivers ---- */

static delivery_driver_t row(const char *id, long active, bool available) {
    delivery_driver_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.driver_id, sizeof r.driver_id, "%s", id);
    snprintf(r.name, sizeof r.name, "Name of %s", id);
    r.active = active;
    r.available = available;
    return r;
}

static void least_busy_available_driver_is_chosen(void **state) {
    (void)state;
    delivery_driver_t rows[] = {row("driver-04", 2, true), row("driver-02", 1, true),
                                row("driver-01", 0, false), row("driver-03", 1, true),
                                row("driver-05", 4, true)};
    assert_int_equal(delivery_choose_driver(rows, 5, 5), 1); /* 01 is off: 02 beats 03 by id */
    rows[1].active = 3;
    assert_int_equal(delivery_choose_driver(rows, 5, 5), 3);
    rows[2].available = true;
    assert_int_equal(delivery_choose_driver(rows, 5, 5), 2);
}

static void full_or_unavailable_drivers_are_never_chosen(void **state) {
    (void)state;
    delivery_driver_t rows[] = {row("driver-01", 5, true), row("driver-02", 6, true),
                                row("driver-03", 0, false)};
    assert_int_equal(delivery_choose_driver(rows, 3, 5), -1);
    assert_int_equal(delivery_choose_driver(rows, 3, 6), 0);
    assert_int_equal(delivery_choose_driver(rows, 0, 5), -1);
    delivery_driver_t one = row("driver-09", 0, true);
    assert_int_equal(delivery_choose_driver(&one, 1, 1), 0);
    one.active = 1;
    assert_int_equal(delivery_choose_driver(&one, 1, 1), -1);
}

/* Filling drivers one delivery at a time spreads them evenly and stops at the
 * capacity: what the service does when orders arrive faster than deliveries end. */
static void repeated_choices_spread_deliveries_evenly(void **state) {
    (void)state;
    delivery_driver_t rows[4];
    for (int i = 0; i < 4; i++) {
        char id[16];
        snprintf(id, sizeof id, "driver-%02d", 4 - i);
        rows[i] = row(id, 0, true);
    }
    for (int n = 0; n < 12; n++) {
        int i = delivery_choose_driver(rows, 4, 3);
        assert_true(i >= 0);
        assert_int_equal(rows[i].active, n / 4);
        assert_int_equal(rows[i].driver_id[8] - '0', n % 4 + 1); /* 01, 02, 03, 04, 01, ... */
        rows[i].active++;
    }
    assert_int_equal(delivery_choose_driver(rows, 4, 3), -1);
}

static void seeded_drivers_have_predictable_names(void **state) {
    (void)state;
    char id[DELIVERY_DRIVER_ID_MAX + 1], name[DELIVERY_DRIVER_NAME_MAX + 1];
    assert_true(delivery_driver_identity(1, id, sizeof id, name, sizeof name));
    assert_string_equal(id, "driver-01");
    assert_string_equal(name, "Driver 01");
    assert_true(delivery_driver_identity(20, id, sizeof id, name, sizeof name));
    assert_string_equal(id, "driver-20");
    assert_string_equal(name, "Driver 20");
    assert_true(delivery_driver_identity(123, id, sizeof id, name, sizeof name));
    assert_string_equal(id, "driver-123");
    assert_false(delivery_driver_identity(0, id, sizeof id, name, sizeof name));
    assert_false(delivery_driver_identity(-3, id, sizeof id, name, sizeof name));
    char tiny[8];
    assert_false(delivery_driver_identity(1, tiny, sizeof tiny, name, sizeof name));
}

/* ---- payment.authorized ---- */

static const char VALID_PAYLOAD[] =
    "{\"orderId\":\"" ORDER "\",\"paymentId\":\"9d6f0c1e-2b3a-4c5d-8e9f-0a1b2c3d4e5f\","
    "\"customerId\":\"cust-7\",\"amount\":\"20.48\",\"currency\":\"EUR\","
    "\"authorizedAt\":\"2025-11-25T12:38:05.123Z\"}";

/* payment.authorized for envelope_order carrying payload_json (a JSON object). */
static deta_err_t parse(const char *envelope_order, const char *payload_json,
                        payment_authorized_t *out, char *why, size_t whysize) {
    json_t *payload = json_loads(payload_json, 0, NULL);
    assert_non_null(payload);
    deta_event_t ev;
    char err[256];
    if (deta_event_init(&ev, DETA_EVT_PAYMENT_AUTHORIZED, envelope_order, CORR, "test", payload,
                        err, sizeof err) != DETA_OK)
        fail_msg("event: %s", err);
    why[0] = 0;
    deta_err_t e = delivery_parse_payment_authorized(&ev, out, why, whysize);
    deta_event_clear(&ev);
    return e;
}

static void valid_payment_authorized_is_read_whole(void **state) {
    (void)state;
    payment_authorized_t pa;
    char why[256];
    assert_int_equal(parse(ORDER, VALID_PAYLOAD, &pa, why, sizeof why), DETA_OK);
    assert_string_equal(pa.order_id, ORDER);
    assert_string_equal(pa.payment_id, "9d6f0c1e-2b3a-4c5d-8e9f-0a1b2c3d4e5f");
    assert_string_equal(pa.customer_id, "cust-7");
    assert_int_equal(pa.amount, 2048);
    assert_string_equal(pa.currency, "EUR");
    assert_string_equal(pa.authorized_at, "2025-11-25T12:38:05.123Z");
}

/* The valid payload with key replaced by raw JSON (or removed when raw is NULL). */
static char *variant(const char *key, const char *raw) {
    json_t *p = json_loads(VALID_PAYLOAD, 0, NULL);
    assert_non_null(p);
    if (raw)
        json_object_set_new(p, key, json_loads(raw, JSON_DECODE_ANY, NULL));
    else
        json_object_del(p, key);
    char *text = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    return text;
}

static void expect_invalid(const char *envelope_order, const char *payload, const char *named) {
    payment_authorized_t pa;
    char why[256];
    assert_int_equal(parse(envelope_order, payload, &pa, why, sizeof why), DETA_ERR_INVALID);
    if (!strstr(why, named))
        fail_msg("error \"%s\" does not name %s", why, named);
}

static void every_missing_field_is_invalid(void **state) {
    (void)state;
    const char *fields[] = {"orderId", "paymentId", "customerId", "amount", "currency",
                            "authorizedAt"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        char *text = variant(fields[i], NULL);
        char named[64];
        snprintf(named, sizeof named, "payload.%s is required", fields[i]);
        expect_invalid(ORDER, text, named);
        free(text);
    }
}

static void malformed_fields_are_invalid(void **state) {
    (void)state;
    const struct {
        const char *key, *raw;
    } cases[] = {
        {"paymentId", "42"},          {"paymentId", "\"\""},       {"customerId", "null"},
        {"amount", "\"1.234\""},      {"amount", "\"-3.00\""},     {"amount", "\"ten\""},
        {"amount", "true"},           {"currency", "\"usd\""},     {"currency", "\"EURO\""},
        {"authorizedAt", "\"yesterday\""}, {"authorizedAt", "\"2025-02-30T00:00:00Z\""},
        {"orderId", "7"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *text = variant(cases[i].key, cases[i].raw);
        expect_invalid(ORDER, text, cases[i].key);
        free(text);
    }
    char *text = variant("amount", "12.5"); /* an exact JSON number is fine */
    payment_authorized_t pa;
    char why[256];
    assert_int_equal(parse(ORDER, text, &pa, why, sizeof why), DETA_OK);
    assert_int_equal(pa.amount, 1250);
    free(text);
}

static void order_id_must_match_the_envelope_and_be_a_uuid(void **state) {
    (void)state;
    char other[DETA_UUID_LEN + 1];
    deta_uuid_new(other);
    expect_invalid(other, VALID_PAYLOAD, "orderId");
    expect_invalid("order-1", "{\"orderId\":\"order-1\",\"paymentId\":\"p\",\"customerId\":\"c\","
                              "\"amount\":\"1.00\",\"currency\":\"USD\","
                              "\"authorizedAt\":\"2025-11-25T12:38:05Z\"}",
                   "UUID");
}

/* ---- payloads out ---- */

static void expect_keys(const json_t *o, size_t n) { assert_int_equal(json_object_size(o), n); }

static const char *str(const json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    if (!s)
        fail_msg("no string %s", key);
    return s;
}

static void payloads_follow_the_contract(void **state) {
    (void)state;
    delivery_params_t p = defaults();
    delivery_t d = assigned(&p, T0);
    d.eta_ms = T0 + 1800000;

    json_t *a = delivery_stage_payload(&d);
    expect_keys(a, 6);
    assert_string_equal(str(a, "orderId"), ORDER);
    assert_string_equal(str(a, "deliveryId"), "d0e1f2a3-b4c5-4d6e-8f70-8192a3b4c5d6");
    assert_string_equal(str(a, "driverId"), "driver-03");
    assert_string_equal(str(a, "driverName"), "Driver 03");
    assert_string_equal(str(a, "assignedAt"), "2025-11-25T12:38:05.123Z");
    assert_string_equal(str(a, "estimatedDeliveryAt"), "2025-11-25T13:08:05.123Z");
    json_decref(a);

    json_t *e = delivery_eta_payload(&d, T0);
    expect_keys(e, 5);
    assert_string_equal(str(e, "stage"), "ASSIGNED");
    assert_string_equal(str(e, "deliveryId"), d.delivery_id);
    assert_string_equal(str(e, "estimatedDeliveryAt"), "2025-11-25T13:08:05.123Z");
    assert_string_equal(str(e, "calculatedAt"), "2025-11-25T12:38:05.123Z");
    json_decref(e);

    assert_int_equal(delivery_advance(&p, &d, T0 + 600000), DETA_OK);
    json_t *u = delivery_stage_payload(&d);
    expect_keys(u, 5);
    assert_string_equal(str(u, "pickedUpAt"), "2025-11-25T12:48:05.123Z");
    assert_true(deta_timestamp_valid(str(u, "estimatedDeliveryAt")));
    assert_null(json_object_get(u, "driverName"));
    json_decref(u);
    e = delivery_eta_payload(&d, T0 + 600000);
    assert_string_equal(str(e, "stage"), "PICKED_UP");
    json_decref(e);

    assert_int_equal(delivery_advance(&p, &d, T0 + 3600000), DETA_OK);
    json_t *v = delivery_stage_payload(&d);
    expect_keys(v, 4);
    assert_string_equal(str(v, "deliveredAt"), "2025-11-25T13:38:05.123Z");
    assert_null(json_object_get(v, "estimatedDeliveryAt"));
    json_decref(v);
    e = delivery_eta_payload(&d, d.delivered_ms);
    assert_string_equal(str(e, "stage"), "DELIVERED");
    assert_string_equal(str(e, "estimatedDeliveryAt"), "2025-11-25T13:38:05.123Z");
    json_decref(e);

    d.status = (delivery_stage_t)9;
    assert_null(delivery_stage_payload(&d));
    assert_null(delivery_eta_payload(&d, T0));
}

static void waiting_payload_says_since_when_and_where_in_the_queue(void **state) {
    (void)state;
    json_t *w = delivery_waiting_payload(ORDER, "pay-1", T0, 3);
    expect_keys(w, 4);
    assert_string_equal(str(w, "orderId"), ORDER);
    assert_string_equal(str(w, "paymentId"), "pay-1");
    assert_string_equal(str(w, "waitingSince"), "2025-11-25T12:38:05.123Z");
    assert_int_equal(json_integer_value(json_object_get(w, "position")), 3);
    json_decref(w);
    assert_null(delivery_waiting_payload(ORDER, "pay-1", T0, 0)); /* 1 is the head */
}

/* Instants are written by deta_timestamp_from_ms (test_timestamp.c). */
static void distances_format_exactly(void **state) {
    (void)state;
    char km[16];
    delivery_format_km(73, km, sizeof km);
    assert_string_equal(km, "7.3");
    delivery_format_km(10, km, sizeof km);
    assert_string_equal(km, "1.0");
    delivery_format_km(150, km, sizeof km);
    assert_string_equal(km, "15.0");
}
/* ---- the cancel ---- */

static delivery_cancel_facts_t facts(bool cancelled, bool refused, bool has_delivery,
                                     delivery_stage_t stage, bool waiting) {
    delivery_cancel_facts_t f = {cancelled, refused, has_delivery, stage, waiting};
    return f;
}

static void cancel_verdict_follows_the_stage_that_holds_the_order(void **state) {
    (void)state;
    const struct {
        delivery_cancel_facts_t f;
        delivery_cancel_verdict_t want;
    } cases[] = {
        /* first verdicts */
        {facts(false, false, true, DELIVERY_ASSIGNED, false), DELIVERY_CANCEL_ASSIGNED},
        {facts(false, false, true, DELIVERY_PICKED_UP, false), DELIVERY_CANCEL_REFUSE},
        {facts(false, false, true, DELIVERY_DELIVERED, false), DELIVERY_CANCEL_REFUSE},
        {facts(false, false, false, DELIVERY_ASSIGNED, true), DELIVERY_CANCEL_WAITING},
        {facts(false, false, false, DELIVERY_ASSIGNED, false), DELIVERY_CANCEL_NONE},
        /* the ticker's assignment of a waiting order committing: the delivery wins */
        {facts(false, false, true, DELIVERY_ASSIGNED, true), DELIVERY_CANCEL_ASSIGNED},
        {facts(false, false, true, DELIVERY_PICKED_UP, true), DELIVERY_CANCEL_REFUSE},
        /* a verdict is given once */
        {facts(true, false, true, DELIVERY_CANCELLED, false), DELIVERY_CANCEL_DECIDED},
        {facts(true, false, false, DELIVERY_ASSIGNED, false), DELIVERY_CANCEL_DECIDED},
        {facts(true, false, false, DELIVERY_ASSIGNED, true), DELIVERY_CANCEL_DECIDED},
        {facts(false, true, true, DELIVERY_PICKED_UP, false), DELIVERY_CANCEL_DECIDED},
        {facts(false, true, true, DELIVERY_DELIVERED, false), DELIVERY_CANCEL_DECIDED},
        {facts(false, false, true, DELIVERY_CANCELLED, false), DELIVERY_CANCEL_DECIDED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        if (delivery_cancel_decide(&cases[i].f) != cases[i].want)
            fail_msg("case %zu: verdict %d, expected %d", i,
                     (int)delivery_cancel_decide(&cases[i].f), (int)cases[i].want);
    assert_string_equal(delivery_cancel_stage(DELIVERY_CANCEL_ASSIGNED), "ASSIGNED");
    assert_string_equal(delivery_cancel_stage(DELIVERY_CANCEL_WAITING), "WAITING");
    assert_string_equal(delivery_cancel_stage(DELIVERY_CANCEL_NONE), "NONE");
    assert_null(delivery_cancel_stage(DELIVERY_CANCEL_REFUSE));
    assert_null(delivery_cancel_stage(DELIVERY_CANCEL_DECIDED));
}

static const char VALID_FORWARD[] =
    "{\"orderId\":\"" ORDER "\",\"paymentId\":\"pay-1\",\"reason\":\"changed my mind\","
    "\"requestedAt\":\"2025-11-25T12:38:05.123Z\",\"forwardedAt\":\"2025-11-25T12:38:06.000Z\"}";

static deta_err_t parse_forward(const char *envelope_order, const char *payload_json,
                                payment_cancel_forwarded_t *out, char *why, size_t whysize) {
    json_t *payload = json_loads(payload_json, 0, NULL);
    assert_non_null(payload);
    deta_event_t ev;
    char err[256];
    if (deta_event_init(&ev, DETA_EVT_PAYMENT_CANCEL_FORWARDED, envelope_order, CORR, "test",
                        payload, err, sizeof err) != DETA_OK)
        fail_msg("event: %s", err);
    why[0] = 0;
    deta_err_t e = delivery_parse_cancel_forwarded(&ev, out, why, whysize);
    deta_event_clear(&ev);
    return e;
}

static char *forward_variant(const char *key, const char *raw) {
    json_t *p = json_loads(VALID_FORWARD, 0, NULL);
    assert_non_null(p);
    if (raw)
        json_object_set_new(p, key, json_loads(raw, JSON_DECODE_ANY, NULL));
    else
        json_object_del(p, key);
    char *text = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    return text;
}

static void cancel_forward_is_read_and_checked(void **state) {
    (void)state;
    payment_cancel_forwarded_t cf;
    char why[256];
    assert_int_equal(parse_forward(ORDER, VALID_FORWARD, &cf, why, sizeof why), DETA_OK);
    assert_string_equal(cf.order_id, ORDER);
    assert_string_equal(cf.payment_id, "pay-1");
    assert_true(cf.has_reason);
    assert_string_equal(cf.reason, "changed my mind");
    assert_string_equal(cf.requested_at, "2025-11-25T12:38:05.123Z");
    assert_string_equal(cf.forwarded_at, "2025-11-25T12:38:06.000Z");
    /* no reason: null or absent */
    const char *none[] = {"null", NULL};
    for (size_t i = 0; i < 2; i++) {
        char *text = forward_variant("reason", none[i]);
        assert_int_equal(parse_forward(ORDER, text, &cf, why, sizeof why), DETA_OK);
        assert_false(cf.has_reason);
        free(text);
    }
    const struct {
        const char *key, *raw, *named;
    } bad[] = {
        {"paymentId", NULL, "payload.paymentId is required"},
        {"requestedAt", NULL, "payload.requestedAt is required"},
        {"forwardedAt", NULL, "payload.forwardedAt is required"},
        {"orderId", NULL, "payload.orderId is required"},
        {"paymentId", "7", "payload.paymentId"},
        {"requestedAt", "\"soon\"", "payload.requestedAt"},
        {"reason", "42", "payload.reason"},
        {"reason", "\"\"", "payload.reason"},
        {"reason", "\"" "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                   "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                   "x\"", "payload.reason"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *text = forward_variant(bad[i].key, bad[i].raw);
        assert_int_equal(parse_forward(ORDER, text, &cf, why, sizeof why), DETA_ERR_INVALID);
        if (!strstr(why, bad[i].named))
            fail_msg("error \"%s\" does not name %s", why, bad[i].named);
        free(text);
    }
    char other[DETA_UUID_LEN + 1];
    deta_uuid_new(other);
    assert_int_equal(parse_forward(other, VALID_FORWARD, &cf, why, sizeof why), DETA_ERR_INVALID);
    assert_non_null(strstr(why, "differs from the envelope"));
}

static void cancel_verdicts_payloads_follow_the_contract(void **state) {
    (void)state;
    const char *req = "2025-11-25T12:38:05.123Z";
    json_t *p = delivery_cancelled_payload(DELIVERY_CANCEL_ASSIGNED, ORDER, "del-1", "driver-03",
                                           "pay-1", "why not", req, T0);
    assert_non_null(p);
    expect_keys(p, 8);
    assert_string_equal(str(p, "orderId"), ORDER);
    assert_string_equal(str(p, "stage"), "ASSIGNED");
    assert_string_equal(str(p, "deliveryId"), "del-1");
    assert_string_equal(str(p, "driverId"), "driver-03");
    assert_string_equal(str(p, "paymentId"), "pay-1");
    assert_string_equal(str(p, "reason"), "why not");
    assert_string_equal(str(p, "requestedAt"), req);
    assert_string_equal(str(p, "cancelledAt"), "2025-11-25T12:38:05.123Z");
    json_decref(p);
    const delivery_cancel_verdict_t early[] = {DELIVERY_CANCEL_WAITING, DELIVERY_CANCEL_NONE};
    for (size_t i = 0; i < 2; i++) {
        /* ids given or not, they are null before any assignment */
        p = delivery_cancelled_payload(early[i], ORDER, "del-1", "driver-03", "pay-1", NULL,
                                       req, T0);
        assert_non_null(p);
        expect_keys(p, 8);
        assert_string_equal(str(p, "stage"), delivery_cancel_stage(early[i]));
        assert_true(json_is_null(json_object_get(p, "deliveryId")));
        assert_true(json_is_null(json_object_get(p, "driverId")));
        assert_true(json_is_null(json_object_get(p, "reason")));
        json_decref(p);
    }
    assert_null(delivery_cancelled_payload(DELIVERY_CANCEL_REFUSE, ORDER, NULL, NULL, "pay-1",
                                           NULL, req, T0));
    assert_null(delivery_cancelled_payload(DELIVERY_CANCEL_ASSIGNED, ORDER, NULL, "driver-03",
                                           "pay-1", NULL, req, T0));

    const delivery_stage_t late[] = {DELIVERY_PICKED_UP, DELIVERY_DELIVERED};
    const char *status[] = {"PICKED_UP", "DELIVERED"};
    for (size_t i = 0; i < 2; i++) {
        p = delivery_cancel_refused_payload(ORDER, late[i], "r", req, T0 + 1);
        assert_non_null(p);
        expect_keys(p, 5);
        assert_string_equal(str(p, "orderId"), ORDER);
        assert_string_equal(str(p, "orderStatus"), status[i]);
        assert_string_equal(str(p, "reason"), "r");
        assert_string_equal(str(p, "requestedAt"), req);
        assert_string_equal(str(p, "refusedAt"), "2025-11-25T12:38:05.124Z");
        json_decref(p);
    }
    assert_null(delivery_cancel_refused_payload(ORDER, DELIVERY_ASSIGNED, NULL, req, T0));
    assert_null(delivery_cancel_refused_payload(ORDER, DELIVERY_CANCELLED, NULL, req, T0));
    delivery_t d;
    assert_int_equal(delivery_assign(&(delivery_params_t){20, 5, 10, 25, 1, 200}, &d, "del-1",
                                     ORDER, "driver-03", "Driver 03", T0),
                     DETA_OK);
    d.status = DELIVERY_CANCELLED;
    assert_null(delivery_stage_payload(&d));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stages_have_names_and_parse_back),
        cmocka_unit_test(defaults_are_the_documented_ones),
        cmocka_unit_test(distance_is_stable_bounded_and_spread),
        cmocka_unit_test(travel_time_is_distance_over_speed),
        cmocka_unit_test(jitter_is_bounded_stable_and_changes_at_pickup),
        cmocka_unit_test(clock_speed_compresses_simulated_time),
        cmocka_unit_test(assignment_schedules_pickup_and_first_eta),
        cmocka_unit_test(fast_clock_brings_every_instant_closer),
        cmocka_unit_test(stages_advance_in_order_with_fresh_etas),
        cmocka_unit_test(stages_never_go_back_in_time),
        cmocka_unit_test(assignment_refuses_ids_that_do_not_fit),
        cmocka_unit_test(least_busy_available_driver_is_chosen),
        cmocka_unit_test(full_or_unavailable_drivers_are_never_chosen),
        cmocka_unit_test(repeated_choices_spread_deliveries_evenly),
        cmocka_unit_test(seeded_drivers_have_predictable_names),
        cmocka_unit_test(valid_payment_authorized_is_read_whole),
        cmocka_unit_test(every_missing_field_is_invalid),
        cmocka_unit_test(malformed_fields_are_invalid),
        cmocka_unit_test(order_id_must_match_the_envelope_and_be_a_uuid),
        cmocka_unit_test(payloads_follow_the_contract),
        cmocka_unit_test(waiting_payload_says_since_when_and_where_in_the_queue),
        cmocka_unit_test(distances_format_exactly),
        cmocka_unit_test(cancel_verdict_follows_the_stage_that_holds_the_order),
        cmocka_unit_test(cancel_forward_is_read_and_checked),
        cmocka_unit_test(cancel_verdicts_payloads_follow_the_contract),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
