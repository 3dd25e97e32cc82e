/*
 * test_payment_domain.c - payment-service's rules, no server: the settings and
 * their validation, every gateway rule and its boundaries, the determinism of the
 * random rule, the inventory.reserved request, the payment events' payloads and
 * the Redis key names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "deta/topics.h"
/* by path: every service has a domain.h, and all their folders are on the include path */
#include "payment-service/domain.h"
#include "payment-service/settings.h"

static const char *const SETTINGS_VARS[] = {
    "PAYMENT_DECLINE_ABOVE",      "PAYMENT_DECLINE_CUSTOMERS", "PAYMENT_DECLINE_RATE",
    "PAYMENT_DECLINE_SEED",       "PAYMENT_GATEWAY_LATENCY_MS", "PAYMENT_WORKERS",
    "PAYMENT_DB_CONNECTIONS",     "PAYMENT_GATEWAY_LEDGER",
};

static int clear_env(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof SETTINGS_VARS / sizeof *SETTINGS_VARS; i++)
        unsetenv(SETTINGS_VARS[i]);
    return 0;
}

static payment_settings_t defaults(void) {
    payment_settings_t s;
    clear_env(NULL);
    assert_int_equal(payment_settings_load(&s, NULL, 0), DETA_OK);
    return s;
}

static payment_request_t request(const char *order_id, const char *customer,
                                 deta_money_t amount) {
    payment_request_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.order_id, sizeof r.order_id, "%s", order_id);
    snprintf(r.event_id, sizeof r.event_id, "%s", "0b7e3d9a-3c1f-4d2e-9a55-0a0b0c0d0e0f");
    snprintf(r.correlation_id, sizeof r.correlation_id, "%s", "corr-1");
    snprintf(r.customer_id, sizeof r.customer_id, "%s", customer);
    r.amount = amount;
    memcpy(r.currency, "EUR", 4);
    r.hold_expires_ms = -1;
    return r;
}

static const char ORDER[] = "7d9f2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f";
static const char PAYMENT_ID[] = "0f0e0d0c-0b0a-4908-8706-050403020100";

/* ---- settings ---- */

static void settings_have_the_documented_defaults(void **state) {
    (void)state;
    payment_settings_t s = defaults();
    assert_int_equal(s.decline_above, 1000000);
    assert_int_equal(s.ndecline_customers, 1);
    assert_string_equal(s.decline_customers[0].text, "decline-");
    assert_true(s.decline_customers[0].prefix);
    assert_int_equal(s.decline_rate_ppm, 0);
    assert_int_equal(s.decline_seed, 0);
    assert_int_equal(s.gateway_latency_ms, 0);
    assert_int_equal(s.workers, 32);
    assert_int_equal(s.db_connections, 4);
    assert_string_equal(s.gateway_ledger, "");
}

static void settings_are_read_from_the_environment(void **state) {
    (void)state;
    setenv("PAYMENT_DECLINE_ABOVE", "250.50", 1);
    setenv("PAYMENT_DECLINE_CUSTOMERS", " vip , blocked-* ,,x", 1);
    setenv("PAYMENT_DECLINE_RATE", "0.125", 1);
    setenv("PAYMENT_DECLINE_SEED", "-42", 1);
    setenv("PAYMENT_GATEWAY_LATENCY_MS", "100", 1);
    setenv("PAYMENT_WORKERS", "3", 1);
    setenv("PAYMENT_DB_CONNECTIONS", "2", 1);
    payment_settings_t s;
    char err[256];
    assert_int_equal(payment_settings_load(&s, err, sizeof err), DETA_OK);
    assert_int_equal(s.decline_above, 25050);
    assert_int_equal(s.ndecline_customers, 3);
    assert_string_equal(s.decline_customers[0].text, "vip");
    assert_false(s.decline_customers[0].prefix);
    assert_string_equal(s.decline_customers[1].text, "blocked-");
    assert_true(s.decline_customers[1].prefix);
    assert_string_equal(s.decline_customers[2].text, "x");
    assert_int_equal(s.decline_rate_ppm, 125000);
    assert_int_equal(s.decline_seed, -42);
    assert_int_equal(s.gateway_latency_ms, 100);
    assert_int_equal(s.workers, 3);
    assert_int_equal(s.db_connections, 2);

    setenv("PAYMENT_DECLINE_CUSTOMERS", "none", 1);
    setenv("PAYMENT_DECLINE_RATE", "1", 1);
    assert_int_equal(payment_settings_load(&s, err, sizeof err), DETA_OK);
    assert_int_equal(s.ndecline_customers, 0);
    assert_int_equal(s.decline_rate_ppm, PAYMENT_RATE_SCALE);
}

static void expect_bad_setting(const char *var, const char *value) {
    clear_env(NULL);
    setenv(var, value, 1);
    payment_settings_t s;
    char err[256] = "";
    if (payment_settings_load(&s, err, sizeof err) != DETA_ERR_INVALID)
        fail_msg("%s=\"%s\" was accepted", var, value);
    if (!strstr(err, var))
        fail_msg("%s=\"%s\": the message does not name the variable: %s", var, value, err);
}

static void bad_settings_are_refused_by_name(void **state) {
    (void)state;
    expect_bad_setting("PAYMENT_DECLINE_ABOVE", "abc");
    expect_bad_setting("PAYMENT_DECLINE_ABOVE", "-1.00");
    expect_bad_setting("PAYMENT_DECLINE_ABOVE", "10.001");
    expect_bad_setting("PAYMENT_DECLINE_RATE", "1.5");
    expect_bad_setting("PAYMENT_DECLINE_RATE", "1.000001");
    expect_bad_setting("PAYMENT_DECLINE_RATE", "-0.1");
    expect_bad_setting("PAYMENT_DECLINE_RATE", "0.");
    expect_bad_setting("PAYMENT_DECLINE_RATE", ".5");
    expect_bad_setting("PAYMENT_DECLINE_RATE", "0.1234567");
    expect_bad_setting("PAYMENT_DECLINE_RATE", "0.5x");
    expect_bad_setting("PAYMENT_DECLINE_SEED", "seed");
    expect_bad_setting("PAYMENT_GATEWAY_LATENCY_MS", "-5");
    expect_bad_setting("PAYMENT_GATEWAY_LATENCY_MS", "5001");
    expect_bad_setting("PAYMENT_WORKERS", "0");
    expect_bad_setting("PAYMENT_WORKERS", "257");
    expect_bad_setting("PAYMENT_DB_CONNECTIONS", "0");
    expect_bad_setting("PAYMENT_DB_CONNECTIONS", "65");
    expect_bad_setting("PAYMENT_DECLINE_CUSTOMERS", "a*b");
    expect_bad_setting("PAYMENT_DECLINE_CUSTOMERS", "**");
    expect_bad_setting("PAYMENT_DECLINE_CUSTOMERS", ", ,");
    char long_id[80];
    memset(long_id, 'x', 65);
    long_id[65] = '\0';
    expect_bad_setting("PAYMENT_DECLINE_CUSTOMERS", long_id);
    char many[400] = "";
    for (int i = 0; i <= PAYMENT_MAX_CUSTOMER_RULES; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "c%d,", i);
    expect_bad_setting("PAYMENT_DECLINE_CUSTOMERS", many);
    clear_env(NULL);
}

/* ---- the gateway ---- */

static void amounts_above_the_limit_are_declined(void **state) {
    (void)state;
    payment_settings_t s = defaults();
    payment_request_t at = request(ORDER, "cust-1", 1000000);
    payment_decision_t d = payment_gateway_decide(&s, &at);
    assert_true(d.authorized);
    assert_null(d.reason);
    payment_request_t above = request(ORDER, "cust-1", 1000001);
    d = payment_gateway_decide(&s, &above);
    assert_false(d.authorized);
    assert_string_equal(d.reason, PAYMENT_DECLINED_AMOUNT_LIMIT);
    payment_request_t zero = request(ORDER, "cust-1", 0);
    assert_true(payment_gateway_decide(&s, &zero).authorized);
}

static void listed_customers_are_declined(void **state) {
    (void)state;
    payment_settings_t s = defaults();
    payment_request_t r = request(ORDER, "decline-42", 100);
    payment_decision_t d = payment_gateway_decide(&s, &r);
    assert_false(d.authorized);
    assert_string_equal(d.reason, PAYMENT_DECLINED_CUSTOMER);
    /* the customer rule comes before the amount rule */
    r = request(ORDER, "decline-", 2000000);
    assert_string_equal(payment_gateway_decide(&s, &r).reason, PAYMENT_DECLINED_CUSTOMER);
    r = request(ORDER, "decline", 100); /* not the prefix "decline-" */
    assert_true(payment_gateway_decide(&s, &r).authorized);
    r = request(ORDER, "x-decline-1", 100);
    assert_true(payment_gateway_decide(&s, &r).authorized);
}

static void customer_rules_match_exactly_or_by_prefix(void **state) {
    (void)state;
    payment_customer_rule_t exact = {"vip", false};
    payment_customer_rule_t prefix = {"vip", true};
    payment_customer_rule_t all = {"", true};
    assert_true(payment_customer_matches(&exact, "vip"));
    assert_false(payment_customer_matches(&exact, "vip2"));
    assert_false(payment_customer_matches(&exact, "vi"));
    assert_true(payment_customer_matches(&prefix, "vip"));
    assert_true(payment_customer_matches(&prefix, "vip2"));
    assert_false(payment_customer_matches(&prefix, "xvip"));
    assert_true(payment_customer_matches(&all, "anyone"));
}

static payment_settings_t with_rate(const char *rate, const char *seed) {
    clear_env(NULL);
    setenv("PAYMENT_DECLINE_RATE", rate, 1);
    setenv("PAYMENT_DECLINE_SEED", seed, 1);
    payment_settings_t s;
    assert_int_equal(payment_settings_load(&s, NULL, 0), DETA_OK);
    clear_env(NULL);
    return s;
}

static void random_rule_is_deterministic_per_order(void **state) {
    (void)state;
    payment_settings_t none = with_rate("0", "7");
    payment_settings_t all = with_rate("1", "7");
    payment_settings_t half = with_rate("0.5", "7");
    payment_settings_t half_other_seed = with_rate("0.5", "8");
    int declined = 0, differ = 0;
    for (int i = 0; i < 2000; i++) {
        char id[DETA_UUID_LEN + 1];
        snprintf(id, sizeof id, "00000000-0000-4000-8000-%012d", i);
        payment_request_t r = request(id, "cust", 100);
        assert_true(payment_gateway_decide(&none, &r).authorized);
        payment_decision_t d = payment_gateway_decide(&all, &r);
        assert_false(d.authorized);
        assert_string_equal(d.reason, PAYMENT_DECLINED_RANDOM);
        payment_decision_t a = payment_gateway_decide(&half, &r);
        payment_decision_t b = payment_gateway_decide(&half, &r);
        assert_int_equal(a.authorized, b.authorized); /* same order, same answer */
        if (!a.authorized) {
            declined++;
            assert_string_equal(a.reason, PAYMENT_DECLINED_RANDOM);
        }
        if (a.authorized != payment_gateway_decide(&half_other_seed, &r).authorized)
            differ++;
    }
    /* about half, even for ids that differ only in their last digits */
    assert_in_range(declined, 850, 1150);
    /* the seed changes which orders are declined */
    assert_in_range(differ, 700, 1300);
}

/* ---- the request ---- */

static deta_err_t parse_reserved(const char *order_id, const char *payload_json,
                                 payment_request_t *req, char *err, size_t errsize) {
    json_error_t jerr;
    json_t *payload = json_loads(payload_json, 0, &jerr);
    assert_non_null(payload);
    deta_event_t ev;
    assert_int_equal(deta_event_init(&ev, DETA_EVT_INVENTORY_RESERVED, order_id, "corr-9",
                                     "inventory-service", payload, err, errsize),
                     DETA_OK);
    deta_err_t e = payment_request_from_event(&ev, req, err, errsize);
    deta_event_clear(&ev);
    return e;
}

static void reserved_event_becomes_a_request(void **state) {
    (void)state;
    char payload[512], err[256];
    snprintf(payload, sizeof payload,
             "{\"orderId\":\"%s\",\"reservationId\":\"r\",\"customerId\":\"cust-7\","
             "\"totalAmount\":\"20.48\",\"currency\":\"EUR\",\"items\":[],\"extra\":1}",
             ORDER);
    payment_request_t req;
    assert_int_equal(parse_reserved(ORDER, payload, &req, err, sizeof err), DETA_OK);
    assert_string_equal(req.order_id, ORDER);
    assert_true(deta_uuid_valid(req.event_id));
    assert_string_equal(req.correlation_id, "corr-9");
    assert_string_equal(req.customer_id, "cust-7");
    assert_int_equal(req.amount, 2048);
    assert_string_equal(req.currency, "EUR");
    assert_true(req.hold_expires_ms == -1); /* no holdExpiresAt: the hold never expires */

    snprintf(payload, sizeof payload,
             "{\"orderId\":\"%s\",\"customerId\":\"cust-7\",\"totalAmount\":\"1.00\","
             "\"currency\":\"EUR\",\"holdExpiresAt\":\"2026-11-25T12:15:00.000Z\"}",
             ORDER);
    assert_int_equal(parse_reserved(ORDER, payload, &req, err, sizeof err), DETA_OK);
    assert_true(req.hold_expires_ms == deta_timestamp_ms("2026-11-25T12:15:00Z"));
}

/* The gateway is never asked to charge for a hold that has expired. */
static void expired_holds_are_not_charged(void **state) {
    (void)state;
    payment_request_t req = request(ORDER, "cust-1", 100);
    assert_false(payment_hold_expired(&req, INT64_MAX)); /* no expiry given */
    req.hold_expires_ms = deta_timestamp_ms("2026-11-25T12:15:00Z");
    assert_false(payment_hold_expired(&req, req.hold_expires_ms - 1));
    assert_true(payment_hold_expired(&req, req.hold_expires_ms));
    assert_true(payment_hold_expired(&req, req.hold_expires_ms + 60000));
}

/* A ledger line says what was charged under a key, and reads back the same. */
static void ledger_lines_round_trip(void **state) {
    (void)state;
    char line[PAYMENT_LEDGER_LINE_MAX], key[DETA_UUID_LEN + 1];
    payment_decision_t d;
    payment_ledger_format(line, ORDER, (payment_decision_t){true, NULL}, "payment-service-7");
    assert_string_equal(line, "\ncharge 7d9f2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f AUTHORIZED - "
                              "payment-service-7\n");
    assert_true(payment_ledger_parse(line + 1, key, &d));
    assert_string_equal(key, ORDER);
    assert_true(d.authorized);
    assert_null(d.reason);

    const char *reasons[] = {PAYMENT_DECLINED_CUSTOMER, PAYMENT_DECLINED_AMOUNT_LIMIT,
                             PAYMENT_DECLINED_RANDOM};
    for (size_t i = 0; i < sizeof reasons / sizeof *reasons; i++) {
        payment_ledger_format(line, ORDER, (payment_decision_t){false, reasons[i]}, "x");
        assert_true(payment_ledger_parse(line + 1, key, &d));
        assert_false(d.authorized);
        assert_string_equal(d.reason, reasons[i]);
    }
    const char *bad[] = {"",
                         "charge",
                         "charge not-a-uuid AUTHORIZED - x",
                         "charge 7d9f2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f MAYBE - x",
                         "charge 7d9f2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f AUTHORIZED DECLINED_RANDOM x",
                         "charge 7d9f2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f DECLINED - x",
                         "charge 7d9f2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f DECLINED NO_REASON x",
                         "refund 7d9f2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f AUTHORIZED - x",
                         "charge 7d9f2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5fff AUTHORIZED - x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (payment_ledger_parse(bad[i], key, &d))
            fail_msg("accepted ledger line \"%s\"", bad[i]);
}

static void expect_bad_request(const char *order_id, const char *payload, const char *field) {
    payment_request_t req;
    char err[256] = "";
    if (parse_reserved(order_id, payload, &req, err, sizeof err) != DETA_ERR_INVALID)
        fail_msg("accepted: %s", payload);
    if (!strstr(err, field))
        fail_msg("%s: message does not name %s: %s", payload, field, err);
}

static void malformed_reserved_events_are_invalid(void **state) {
    (void)state;
    const char *cases[][2] = {
        {"{\"customerId\":\"c\",\"totalAmount\":\"1.00\",\"currency\":\"EUR\"}", "orderId"},
        {"{\"orderId\":\"00000000-0000-4000-8000-000000000001\",\"customerId\":\"c\","
         "\"totalAmount\":\"1.00\",\"currency\":\"EUR\"}",
         "orderId"},
        {"{\"orderId\":\"%s\",\"totalAmount\":\"1.00\",\"currency\":\"EUR\"}", "customerId"},
        {"{\"orderId\":\"%s\",\"customerId\":\"\",\"totalAmount\":\"1.00\",\"currency\":\"EUR\"}",
         "customerId"},
        {"{\"orderId\":\"%s\",\"customerId\":7,\"totalAmount\":\"1.00\",\"currency\":\"EUR\"}",
         "customerId"},
        {"{\"orderId\":\"%s\",\"customerId\":\"c\",\"currency\":\"EUR\"}", "totalAmount"},
        {"{\"orderId\":\"%s\",\"customerId\":\"c\",\"totalAmount\":\"1.005\",\"currency\":\"EUR\"}",
         "totalAmount"},
        {"{\"orderId\":\"%s\",\"customerId\":\"c\",\"totalAmount\":\"-1.00\",\"currency\":\"EUR\"}",
         "totalAmount"},
        {"{\"orderId\":\"%s\",\"customerId\":\"c\",\"totalAmount\":\"abc\",\"currency\":\"EUR\"}",
         "totalAmount"},
        {"{\"orderId\":\"%s\",\"customerId\":\"c\",\"totalAmount\":\"1.00\",\"currency\":\"eur\"}",
         "currency"},
        {"{\"orderId\":\"%s\",\"customerId\":\"c\",\"totalAmount\":\"1.00\"}", "currency"},
        {"{\"orderId\":\"%s\",\"customerId\":\"c\",\"totalAmount\":\"1.00\",\"currency\":\"EUR\","
         "\"holdExpiresAt\":\"tomorrow\"}",
         "holdExpiresAt"},
        {"{\"orderId\":\"%s\",\"customerId\":\"c\",\"totalAmount\":\"1.00\",\"currency\":\"EUR\","
         "\"holdExpiresAt\":1764072900}",
         "holdExpiresAt"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char payload[512];
        snprintf(payload, sizeof payload, cases[i][0], ORDER);
        expect_bad_request(ORDER, payload, cases[i][1]);
    }
    char long_customer[200];
    snprintf(long_customer, sizeof long_customer,
             "{\"orderId\":\"%s\",\"customerId\":\"%065d\",\"totalAmount\":\"1.00\","
             "\"currency\":\"EUR\"}",
             ORDER, 0);
    expect_bad_request(ORDER, long_customer, "customerId");
    /* payments are keyed by a uuid order id */
    expect_bad_request("order-1",
                       "{\"orderId\":\"order-1\",\"customerId\":\"c\",\"totalAmount\":\"1.00\","
                       "\"currency\":\"EUR\"}",
                       "orderId");
}

/* ---- the events ---- */

static void authorized_payload_carries_the_charge(void **state) {
    (void)state;
    payment_request_t req = request(ORDER, "cust-1", 1234567);
    payment_t p;
    payment_init(&p, "5a1f0e3c-8b2d-4e6f-9a0b-1c2d3e4f5a6b", &req, (payment_decision_t){true, NULL});
    assert_string_equal(p.payment_id, "5a1f0e3c-8b2d-4e6f-9a0b-1c2d3e4f5a6b");
    assert_true(deta_timestamp_valid(p.decided_at));
    assert_string_equal(payment_status(&p), "AUTHORIZED");
    assert_string_equal(payment_event_type(&p), DETA_EVT_PAYMENT_AUTHORIZED);

    deta_event_t ev;
    char err[256];
    assert_int_equal(payment_event_build(&p, &ev, err, sizeof err), DETA_OK);
    assert_string_equal(ev.event_type, "payment.authorized");
    assert_string_equal(ev.order_id, ORDER);
    assert_string_equal(ev.correlation_id, "corr-1");
    assert_string_equal(ev.producer, "payment-service");
    assert_string_equal(ev.occurred_at, p.decided_at);
    json_t *pl = ev.payload;
    assert_int_equal(json_object_size(pl), 6);
    assert_string_equal(json_string_value(json_object_get(pl, "orderId")), ORDER);
    assert_string_equal(json_string_value(json_object_get(pl, "paymentId")), p.payment_id);
    assert_string_equal(json_string_value(json_object_get(pl, "customerId")), "cust-1");
    assert_string_equal(json_string_value(json_object_get(pl, "amount")), "12345.67");
    assert_string_equal(json_string_value(json_object_get(pl, "currency")), "EUR");
    assert_string_equal(json_string_value(json_object_get(pl, "authorizedAt")), p.decided_at);
    assert_null(json_object_get(pl, "reason"));
    /* the envelope round-trips */
    char *text = deta_event_serialize(&ev);
    deta_event_t back;
    assert_int_equal(deta_event_parse(text, strlen(text), &back, err, sizeof err), DETA_OK);
    assert_string_equal(back.event_id, ev.event_id);
    deta_event_clear(&back);
    free(text);
    deta_event_clear(&ev);
}

static void failed_payload_carries_the_reason(void **state) {
    (void)state;
    payment_request_t req = request(ORDER, "decline-1", 5);
    payment_t p;
    payment_init(&p, "5a1f0e3c-8b2d-4e6f-9a0b-1c2d3e4f5a6b", &req,
                 (payment_decision_t){false, PAYMENT_DECLINED_CUSTOMER});
    assert_string_equal(payment_status(&p), "DECLINED");
    assert_string_equal(payment_event_type(&p), DETA_EVT_PAYMENT_FAILED);
    json_t *pl = payment_event_payload(&p);
    assert_int_equal(json_object_size(pl), 7);
    assert_string_equal(json_string_value(json_object_get(pl, "amount")), "0.05");
    assert_string_equal(json_string_value(json_object_get(pl, "reason")), "DECLINED_CUSTOMER");
    assert_string_equal(json_string_value(json_object_get(pl, "failedAt")), p.decided_at);
    assert_string_equal(json_string_value(json_object_get(pl, "customerId")), "decline-1");
    assert_null(json_object_get(pl, "authorizedAt"));
    json_decref(pl);

    /* the id is the attempt's: a resumed attempt records the payment it began */
    payment_t q;
    payment_init(&q, "0c0d0e0f-1a2b-4c3d-8e9f-000000000002", &req,
                 (payment_decision_t){false, PAYMENT_DECLINED_CUSTOMER});
    assert_string_equal(q.payment_id, "0c0d0e0f-1a2b-4c3d-8e9f-000000000002");
}

static void redis_keys_follow_the_contract(void **state) {
    (void)state;
    char key[PAYMENT_KEY_MAX];
    payment_dedup_key(key, "0b7e3d9a-3c1f-4d2e-9a55-0a0b0c0d0e0f");
    assert_string_equal(key, "payment:dedup:0b7e3d9a-3c1f-4d2e-9a55-0a0b0c0d0e0f");
    payment_lock_key(key, ORDER);
    assert_string_equal(key, "payment-lock:order:7d9f2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f");
}

/* ---- the cancellation saga and refunds ---- */

static deta_err_t parse_event(const char *type, const char *order_id, const char *payload_json,
                              deta_event_t *ev, char *err, size_t errsize) {
    json_error_t jerr;
    json_t *payload = json_loads(payload_json, 0, &jerr);
    assert_non_null(payload);
    return deta_event_init(ev, type, order_id, "corr-9", "inventory-service", payload, err,
                           errsize);
}

static deta_err_t parse_cancel(const char *order_id, const char *payload_json,
                               payment_cancel_t *c, char *err, size_t errsize) {
    deta_event_t ev;
    assert_int_equal(parse_event(DETA_EVT_INVENTORY_CANCEL_FORWARDED, order_id, payload_json,
                                 &ev, err, errsize),
                     DETA_OK);
    deta_err_t e = payment_cancel_from_event(&ev, c, err, errsize);
    deta_event_clear(&ev);
    return e;
}

static void cancel_forward_becomes_a_cancel(void **state) {
    (void)state;
    char payload[512], err[256];
    payment_cancel_t c;
    snprintf(payload, sizeof payload,
             "{\"orderId\":\"%s\",\"reservationId\":\"res-1\",\"reason\":\"changed my mind\","
             "\"requestedAt\":\"2026-11-25T12:00:00.000Z\","
             "\"forwardedAt\":\"2026-11-25T12:00:01.000Z\"}",
             ORDER);
    assert_int_equal(parse_cancel(ORDER, payload, &c, err, sizeof err), DETA_OK);
    assert_string_equal(c.order_id, ORDER);
    assert_string_equal(c.correlation_id, "corr-9");
    assert_string_equal(c.reservation_id, "res-1");
    assert_true(c.has_reason);
    assert_string_equal(c.reason, "changed my mind");
    assert_string_equal(c.requested_at, "2026-11-25T12:00:00.000Z");
    snprintf(payload, sizeof payload,
             "{\"orderId\":\"%s\",\"reservationId\":\"res-1\",\"reason\":null,"
             "\"requestedAt\":\"2026-11-25T12:00:00.000Z\"}",
             ORDER);
    assert_int_equal(parse_cancel(ORDER, payload, &c, err, sizeof err), DETA_OK);
    assert_false(c.has_reason);

    const char *cases[][2] = {
        {"{\"orderId\":\"%s\",\"requestedAt\":\"2026-11-25T12:00:00Z\"}", "reservationId"},
        {"{\"orderId\":\"%s\",\"reservationId\":\"r\"}", "requestedAt"},
        {"{\"orderId\":\"%s\",\"reservationId\":\"r\",\"requestedAt\":\"yesterday\"}",
         "requestedAt"},
        {"{\"orderId\":\"%s\",\"reservationId\":\"r\",\"reason\":7,"
         "\"requestedAt\":\"2026-11-25T12:00:00Z\"}",
         "reason"},
        {"{\"orderId\":\"%s\",\"reservationId\":\"r\",\"reason\":\"\","
         "\"requestedAt\":\"2026-11-25T12:00:00Z\"}",
         "reason"},
        {"{\"reservationId\":\"r\",\"requestedAt\":\"2026-11-25T12:00:00Z\"}", "orderId"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(payload, sizeof payload, cases[i][0], ORDER);
        err[0] = '\0';
        if (parse_cancel(ORDER, payload, &c, err, sizeof err) != DETA_ERR_INVALID)
            fail_msg("accepted: %s", payload);
        if (!strstr(err, cases[i][1]))
            fail_msg("%s: message does not name %s: %s", payload, cases[i][1], err);
    }
}

/* The verdict depends on the payment alone, and is given once. */
static void cancel_verdict_follows_the_payment(void **state) {
    (void)state;
    assert_int_equal(payment_cancel_decide(false, PAYMENT_STATUS_AUTHORIZED),
                     PAYMENT_CANCEL_FORWARD);
    assert_int_equal(payment_cancel_decide(false, PAYMENT_STATUS_DECLINED),
                     PAYMENT_CANCEL_REFUSE);
    assert_int_equal(payment_cancel_decide(false, NULL), PAYMENT_CANCEL_FENCE);
    assert_int_equal(payment_cancel_decide(true, NULL), PAYMENT_CANCEL_DECIDED);
    assert_int_equal(payment_cancel_decide(true, PAYMENT_STATUS_AUTHORIZED),
                     PAYMENT_CANCEL_DECIDED);
    assert_string_equal(payment_cancel_verdict_name(PAYMENT_CANCEL_FORWARD), "FORWARDED");
    assert_string_equal(payment_cancel_verdict_name(PAYMENT_CANCEL_REFUSE), "REFUSED");
    assert_string_equal(payment_cancel_verdict_name(PAYMENT_CANCEL_FENCE), "CANCELLED");
    assert_null(payment_cancel_verdict_name(PAYMENT_CANCEL_DECIDED));
}

static json_t *cancel_payload_of(payment_cancel_verdict_t v, bool with_reason,
                                 const char **type) {
    payment_cancel_t c;
    memset(&c, 0, sizeof c);
    strcpy(c.order_id, ORDER);
    strcpy(c.correlation_id, "corr-1");
    strcpy(c.reservation_id, "res-1");
    strcpy(c.requested_at, "2026-11-25T12:00:00.000Z");
    c.has_reason = with_reason;
    if (with_reason)
        strcpy(c.reason, "too slow");
    deta_event_t ev;
    assert_int_equal(payment_cancel_event_build(&c, v, PAYMENT_ID, "2026-11-25T12:00:05.000Z",
                                                &ev, NULL, 0),
                     DETA_OK);
    assert_string_equal(ev.occurred_at, "2026-11-25T12:00:05.000Z");
    assert_string_equal(ev.producer, "payment-service");
    assert_string_equal(ev.correlation_id, "corr-1");
    static char t[sizeof ev.event_type];
    snprintf(t, sizeof t, "%s", ev.event_type);
    *type = t;
    json_t *p = json_incref(ev.payload);
    deta_event_clear(&ev);
    return p;
}

static void cancel_events_carry_the_contracts_fields(void **state) {
    (void)state;
    const char *type;
    json_t *p = cancel_payload_of(PAYMENT_CANCEL_FORWARD, true, &type);
    assert_string_equal(type, DETA_EVT_PAYMENT_CANCEL_FORWARDED);
    assert_int_equal(json_object_size(p), 5);
    assert_string_equal(json_string_value(json_object_get(p, "orderId")), ORDER);
    assert_string_equal(json_string_value(json_object_get(p, "paymentId")), PAYMENT_ID);
    assert_string_equal(json_string_value(json_object_get(p, "reason")), "too slow");
    assert_string_equal(json_string_value(json_object_get(p, "requestedAt")),
                        "2026-11-25T12:00:00.000Z");
    assert_string_equal(json_string_value(json_object_get(p, "forwardedAt")),
                        "2026-11-25T12:00:05.000Z");
    json_decref(p);

    p = cancel_payload_of(PAYMENT_CANCEL_REFUSE, false, &type);
    assert_string_equal(type, DETA_EVT_PAYMENT_CANCEL_REFUSED);
    assert_int_equal(json_object_size(p), 5);
    assert_string_equal(json_string_value(json_object_get(p, "orderStatus")), "PAYMENT_FAILED");
    assert_true(json_is_null(json_object_get(p, "reason")));
    assert_string_equal(json_string_value(json_object_get(p, "refusedAt")),
                        "2026-11-25T12:00:05.000Z");
    json_decref(p);

    p = cancel_payload_of(PAYMENT_CANCEL_FENCE, true, &type);
    assert_string_equal(type, DETA_EVT_PAYMENT_CANCELLED);
    assert_int_equal(json_object_size(p), 6);
    assert_string_equal(json_string_value(json_object_get(p, "stage")), "NONE");
    assert_string_equal(json_string_value(json_object_get(p, "reservationId")), "res-1");
    assert_string_equal(json_string_value(json_object_get(p, "cancelledAt")),
                        "2026-11-25T12:00:05.000Z");
    json_decref(p);

    payment_cancel_t c;
    memset(&c, 0, sizeof c);
    strcpy(c.order_id, ORDER);
    strcpy(c.correlation_id, "corr-1");
    deta_event_t ev;
    assert_int_equal(payment_cancel_event_build(&c, PAYMENT_CANCEL_DECIDED, NULL, "x", &ev,
                                                NULL, 0),
                     DETA_ERR_INTERNAL);
}

/* A refund is the whole charge, of an authorized payment only. */
static void refund_is_the_whole_charge_of_an_authorized_payment(void **state) {
    (void)state;
    deta_money_t amount = -1;
    assert_true(payment_refund_amount(PAYMENT_STATUS_AUTHORIZED, 2048, &amount));
    assert_int_equal(amount, 2048);
    assert_true(payment_refund_amount(PAYMENT_STATUS_AUTHORIZED, 0, &amount));
    assert_int_equal(amount, 0);
    amount = -1;
    assert_false(payment_refund_amount(PAYMENT_STATUS_DECLINED, 2048, &amount));
    assert_false(payment_refund_amount(NULL, 2048, &amount));
    assert_int_equal(amount, -1);
}

static void delivery_cancelled_becomes_a_refund_request(void **state) {
    (void)state;
    char payload[512], err[256] = "";
    snprintf(payload, sizeof payload,
             "{\"orderId\":\"%s\",\"stage\":\"ASSIGNED\",\"paymentId\":\"%s\","
             "\"amount\":\"999.99\"}",
             ORDER, PAYMENT_ID);
    deta_event_t ev;
    assert_int_equal(
        parse_event(DETA_EVT_DELIVERY_CANCELLED, ORDER, payload, &ev, err, sizeof err), DETA_OK);
    payment_refund_request_t r;
    assert_int_equal(payment_refund_request_from_event(&ev, &r, err, sizeof err), DETA_OK);
    assert_string_equal(r.order_id, ORDER);
    assert_string_equal(r.event_id, ev.event_id);
    assert_string_equal(r.correlation_id, "corr-9");
    deta_event_clear(&ev);

    snprintf(payload, sizeof payload, "{\"orderId\":\"00000000-0000-4000-8000-000000000001\"}");
    assert_int_equal(
        parse_event(DETA_EVT_DELIVERY_CANCELLED, ORDER, payload, &ev, err, sizeof err), DETA_OK);
    assert_int_equal(payment_refund_request_from_event(&ev, &r, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_non_null(strstr(err, "payload.orderId"));
    deta_event_clear(&ev);
}

static void refunded_payload_carries_the_refund(void **state) {
    (void)state;
    payment_refund_t r;
    memset(&r, 0, sizeof r);
    strcpy(r.req.order_id, ORDER);
    strcpy(r.req.correlation_id, "corr-2");
    strcpy(r.payment_id, PAYMENT_ID);
    strcpy(r.refund_id, "11111111-2222-4333-8444-555555555555");
    r.amount = 705;
    strcpy(r.currency, "EUR");
    strcpy(r.refunded_at, "2026-11-25T12:30:00.000Z");
    deta_event_t ev;
    assert_int_equal(payment_refund_event_build(&r, &ev, NULL, 0), DETA_OK);
    assert_string_equal(ev.event_type, DETA_EVT_PAYMENT_REFUNDED);
    assert_string_equal(ev.occurred_at, "2026-11-25T12:30:00.000Z");
    json_t *p = ev.payload;
    assert_int_equal(json_object_size(p), 7);
    assert_string_equal(json_string_value(json_object_get(p, "orderId")), ORDER);
    assert_string_equal(json_string_value(json_object_get(p, "paymentId")), PAYMENT_ID);
    assert_string_equal(json_string_value(json_object_get(p, "refundId")), r.refund_id);
    assert_string_equal(json_string_value(json_object_get(p, "amount")), "7.05");
    assert_string_equal(json_string_value(json_object_get(p, "currency")), "EUR");
    assert_string_equal(json_string_value(json_object_get(p, "reason")), "ORDER_CANCELLED");
    assert_string_equal(json_string_value(json_object_get(p, "refundedAt")), r.refunded_at);
    deta_event_clear(&ev);
}

/* Refund lines round-trip; a charge's look-up takes no refund line and a
 * refund's no charge line. */
static void refund_ledger_lines_round_trip_apart_from_charges(void **state) {
    (void)state;
    char line[PAYMENT_LEDGER_LINE_MAX], key[DETA_UUID_LEN + 1];
    deta_money_t amount = 0;
    payment_decision_t d;
    payment_ledger_format_refund(line, ORDER, 1234, "payment-service-7");
    assert_string_equal(line, "\nrefund 7d9f2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f 12.34 "
                              "payment-service-7\n");
    assert_true(payment_ledger_parse_refund(line + 1, key, &amount));
    assert_string_equal(key, ORDER);
    assert_int_equal(amount, 1234);
    assert_false(payment_ledger_parse(line + 1, key, &d));

    payment_ledger_format(line, ORDER, (payment_decision_t){true, NULL}, "x");
    assert_false(payment_ledger_parse_refund(line + 1, key, &amount));
    const char *bad[] = {"", "refund", "refund not-a-uuid 1.00 x",
                         "refund 7d9f2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f -1.00 x",
                         "refund 7d9f2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f 1.00",
                         "refund 7d9f2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f lots x",
                         "charge 7d9f2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f AUTHORIZED - x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (payment_ledger_parse_refund(bad[i], key, &amount))
            fail_msg("accepted refund line \"%s\"", bad[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(settings_have_the_documented_defaults, clear_env),
        cmocka_unit_test_setup_teardown(settings_are_read_from_the_environment, clear_env,
                                        clear_env),
        cmocka_unit_test(bad_settings_are_refused_by_name),
        cmocka_unit_test(amounts_above_the_limit_are_declined),
        cmocka_unit_test(listed_customers_are_declined),
        cmocka_unit_test(customer_rules_match_exactly_or_by_prefix),
        cmocka_unit_test(random_rule_is_deterministic_per_order),
        cmocka_unit_test(reserved_event_becomes_a_request),
        cmocka_unit_test(malformed_reserved_events_are_invalid),
        cmocka_unit_test(expired_holds_are_not_charged),
        cmocka_unit_test(ledger_lines_round_trip),
        cmocka_unit_test(authorized_payload_carries_the_charge),
        cmocka_unit_test(failed_payload_carries_the_reason),
        cmocka_unit_test(redis_keys_follow_the_contract),
        cmocka_unit_test(cancel_forward_becomes_a_cancel),
        cmocka_unit_test(cancel_verdict_follows_the_payment),
        cmocka_unit_test(cancel_events_carry_the_contracts_fields),
        cmocka_unit_test(refund_is_the_whole_charge_of_an_authorized_payment),
        cmocka_unit_test(delivery_cancelled_becomes_a_refund_request),
        cmocka_unit_test(refunded_payload_carries_the_refund),
        cmocka_unit_test(refund_ledger_lines_round_trip_apart_from_charges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
