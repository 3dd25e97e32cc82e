/*
 * test_envelope.c - the event envelope: building, serializing, parsing and every
 * way a message can be wrong (lib/src/envelope.c).
 *
 * Invalid envelopes are made by editing a valid one (as a jansson object) one
 * field at a time, so each test shows exactly what is wrong. Run under the
 * sanitizer build, these tests also prove that no error path leaks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "deta/envelope.h"

#define VALID_UUID "7c1e2a34-5b6d-4f80-9a1b-2c3d4e5f6a7b"
#define VALID_TS "2026-11-25T12:38:05.123Z"

static const char *const string_fields[] = {"eventId",    "eventType", "occurredAt",
                                            "producedAt", "orderId",   "correlationId",
                                            "producer"};
#define N_STRING_FIELDS (sizeof string_fields / sizeof string_fields[0])

static json_t *valid_envelope(void) {
    json_t *j = json_pack("{s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:{s:s, s:i}}", "eventId",
                          VALID_UUID, "eventType", "order.created", "schemaVersion", 1,
                          "occurredAt", VALID_TS, "producedAt", "2026-11-25T12:38:06Z",
                          "orderId", "order-1", "correlationId", "corr-1", "producer",
                          "order-service", "payload", "totalAmount", "12.30", "items", 2);
    assert_non_null(j);
    return j;
}

/* Parses the JSON text of env (consumed). */
static deta_err_t parse_json(json_t *env, deta_event_t *ev, char *err, size_t errsize) {
    char *text = json_dumps(env, JSON_COMPACT);
    json_decref(env);
    assert_non_null(text);
    deta_err_t rc = deta_event_parse(text, strlen(text), ev, err, errsize);
    free(text);
    return rc;
}

/* Asserts that env (consumed) is rejected with errstr containing `why`, and
 * that the event is left with nothing to clear. */
static void expect_invalid(json_t *env, const char *why) {
    deta_event_t ev;
    memset(&ev, 0xA5, sizeof ev);
    char err[256] = "";
    deta_err_t rc = parse_json(env, &ev, err, sizeof err);
    if (rc != DETA_ERR_INVALID)
        fail_msg("accepted (rc %s), expected \"%s\"", deta_err_name(rc), why);
    assert_null(ev.payload);
    if (!strstr(err, why))
        fail_msg("errstr \"%s\" lacks \"%s\"", err, why);
}

static void expect_valid(json_t *env, deta_event_t *ev) {
    char err[256] = "";
    if (parse_json(env, ev, err, sizeof err) != DETA_OK)
        fail_msg("rejected: %s", err);
    assert_non_null(ev->payload);
}

static json_t *with(const char *field, json_t *value) {
    json_t *j = valid_envelope();
    assert_int_equal(json_object_set_new(j, field, value), 0);
    return j;
}

static json_t *with_str(const char *field, const char *value) {
    return with(field, json_string(value));
}

static char *repeat(char c, size_t n) {
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* ---- building and round trip ---- */

static void test_init_fills_envelope(void **state) {
    (void)state;
    deta_event_t ev;
    char err[128] = "";
    json_t *payload = json_pack("{s:s}", "totalAmount", "12.30");
    assert_int_equal(deta_event_init(&ev, "order.created", "order-1", "corr-1", "order-service",
                                     payload, err, sizeof err),
                     DETA_OK);
    assert_true(deta_uuid_valid(ev.event_id));
    assert_int_equal(ev.event_id[14], '4'); /* version 4 */
    assert_non_null(strchr("89ab", ev.event_id[19]));
    assert_string_equal(ev.event_type, "order.created");
    assert_int_equal(ev.schema_version, 1);
    assert_true(deta_timestamp_valid(ev.occurred_at));
    assert_string_equal(ev.occurred_at, ev.produced_at);
    assert_string_equal(ev.order_id, "order-1");
    assert_string_equal(ev.correlation_id, "corr-1");
    assert_string_equal(ev.producer, "order-service");
    assert_ptr_equal(ev.payload, payload);
    deta_event_clear(&ev);
    assert_null(ev.payload);
    deta_event_clear(&ev); /* twice is harmless */
    deta_event_clear(NULL);
}

static void test_serialize_is_compact_and_ordered(void **state) {
    (void)state;
    deta_event_t ev;
    assert_int_equal(deta_event_init(&ev, "order.created", "order-1", "corr-1", "order-service",
                                     json_pack("{s:s, s:i}", "totalAmount", "12.30", "n", 2),
                                     NULL, 0),
                     DETA_OK);
    char want[1024];
    snprintf(want, sizeof want,
             "{\"eventId\":\"%s\",\"eventType\":\"order.created\",\"schemaVersion\":1,"
             "\"occurredAt\":\"%s\",\"producedAt\":\"%s\",\"orderId\":\"order-1\","
             "\"correlationId\":\"corr-1\",\"producer\":\"order-service\","
             "\"payload\":{\"totalAmount\":\"12.30\",\"n\":2}}",
             ev.event_id, ev.occurred_at, ev.produced_at);
    char *text = deta_event_serialize(&ev);
    assert_non_null(text);
    assert_string_equal(text, want);
    free(text);
    deta_event_clear(&ev);
}

static void test_round_trip_field_by_field(void **state) {
    (void)state;
    deta_event_t a, b;
    assert_int_equal(deta_event_init(&a, "payment.authorized", "o-42", "c-42", "payment-service",
                                     json_pack("{s:s, s:[i,i]}", "paymentId", "p-1", "x", 1, 2),
                                     NULL, 0),
                     DETA_OK);
    char *text = deta_event_serialize(&a);
    assert_non_null(text);
    char err[128] = "";
    assert_int_equal(deta_event_parse(text, strlen(text), &b, err, sizeof err), DETA_OK);
    free(text);
    assert_string_equal(a.event_id, b.event_id);
    assert_string_equal(a.event_type, b.event_type);
    assert_int_equal(a.schema_version, b.schema_version);
    assert_string_equal(a.occurred_at, b.occurred_at);
    assert_string_equal(a.produced_at, b.produced_at);
    assert_string_equal(a.order_id, b.order_id);
    assert_string_equal(a.correlation_id, b.correlation_id);
    assert_string_equal(a.producer, b.producer);
    assert_true(json_equal(a.payload, b.payload));
    assert_ptr_not_equal(a.payload, b.payload);
    deta_event_clear(&a);
    deta_event_clear(&b);
}

static void test_to_json_shares_payload(void **state) {
    (void)state;
    deta_event_t ev;
    assert_int_equal(deta_event_init(&ev, "eta.updated", "o", "c", "delivery-service",
                                     json_object(), NULL, 0),
                     DETA_OK);
    json_t *j = deta_event_to_json(&ev);
    assert_non_null(j);
    assert_ptr_equal(json_object_get(j, "payload"), ev.payload);
    assert_int_equal(json_integer_value(json_object_get(j, "schemaVersion")), 1);
    json_decref(j);
    /* The event still owns its payload after the JSON is gone. */
    assert_true(json_is_object(ev.payload));
    deta_event_clear(&ev);
}

static void test_serialize_cleared_event_has_empty_payload(void **state) {
    (void)state;
    deta_event_t ev;
    assert_int_equal(deta_event_init(&ev, "eta.updated", "o", "c", "p", json_object(), NULL, 0),
                     DETA_OK);
    deta_event_clear(&ev);
    char *text = deta_event_serialize(&ev);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"payload\":{}"));
    free(text);
}

static void test_init_ids_are_unique(void **state) {
    (void)state;
    deta_event_t a, b;
    assert_int_equal(deta_event_init(&a, "t", "o", "c", "p", json_object(), NULL, 0), DETA_OK);
    assert_int_equal(deta_event_init(&b, "t", "o", "c", "p", json_object(), NULL, 0), DETA_OK);
    assert_string_not_equal(a.event_id, b.event_id);
    deta_event_clear(&a);
    deta_event_clear(&b);
}

/* deta_event_init must reject the arguments and still release payload (ASan
 * reports a leak otherwise). */
static void init_bad(const char *type, const char *order, const char *corr, const char *producer,
                     json_t *payload, const char *why) {
    deta_event_t ev;
    memset(&ev, 0xA5, sizeof ev);
    char err[128] = "";
    assert_int_equal(deta_event_init(&ev, type, order, corr, producer, payload, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_null(ev.payload);
    if (!strstr(err, why))
        fail_msg("errstr \"%s\" lacks \"%s\"", err, why);
}

static void test_init_rejects_bad_arguments(void **state) {
    (void)state;
    char *long_id = repeat('x', DETA_ID_MAX + 1);
    init_bad("", "o", "c", "p", json_object(), "eventType: empty");
    init_bad(NULL, "o", "c", "p", json_object(), "eventType: empty");
    init_bad("t", "", "c", "p", json_object(), "orderId: empty");
    init_bad("t", long_id, "c", "p", json_object(), "orderId: longer than 64 bytes");
    init_bad("t", "o", NULL, "p", json_object(), "correlationId: empty");
    init_bad("t", "o", "c", long_id, json_object(), "producer: longer than 64 bytes");
    init_bad("t", "o\xff", "c", "p", json_object(), "orderId: not valid UTF-8");
    init_bad("t", "o", "c", "p", json_array(), "payload: not an object");
    init_bad("t", "o", "c", "p", json_string("x"), "payload: not an object");
    init_bad("t", "o", "c", "p", NULL, "payload: not an object");
    free(long_id);
}

static void test_init_accepts_longest_ids(void **state) {
    (void)state;
    char *id = repeat('x', DETA_ID_MAX);
    deta_event_t ev;
    assert_int_equal(deta_event_init(&ev, id, id, id, id, json_object(), NULL, 0), DETA_OK);
    assert_string_equal(ev.order_id, id);
    deta_event_clear(&ev);
    free(id);
}

/* ---- parsing: structure ---- */

static void test_parse_valid(void **state) {
    (void)state;
    deta_event_t ev;
    expect_valid(valid_envelope(), &ev);
    assert_string_equal(ev.event_id, VALID_UUID);
    assert_string_equal(ev.event_type, "order.created");
    assert_int_equal(ev.schema_version, 1);
    assert_string_equal(ev.occurred_at, VALID_TS);
    assert_string_equal(ev.produced_at, "2026-11-25T12:38:06Z");
    assert_string_equal(ev.order_id, "order-1");
    assert_string_equal(ev.correlation_id, "corr-1");
    assert_string_equal(ev.producer, "order-service");
    assert_string_equal(json_string_value(json_object_get(ev.payload, "totalAmount")), "12.30");
    deta_event_clear(&ev);
}

static void test_missing_fields(void **state) {
    (void)state;
    const char *fields[] = {"eventId",       "eventType", "schemaVersion",
                            "occurredAt",    "producedAt", "orderId",
                            "correlationId", "producer",   "payload"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        json_t *j = valid_envelope();
        json_object_del(j, fields[i]);
        char why[64];
        snprintf(why, sizeof why, "%s: missing", fields[i]);
        expect_invalid(j, why);
    }
}

static void test_string_fields_of_wrong_type(void **state) {
    (void)state;
    for (size_t i = 0; i < N_STRING_FIELDS; i++) {
        char why[64];
        snprintf(why, sizeof why, "%s: not a string", string_fields[i]);
        expect_invalid(with(string_fields[i], json_integer(5)), why);
        expect_invalid(with(string_fields[i], json_null()), why);
        expect_invalid(with(string_fields[i], json_pack("{}")), why);
        expect_invalid(with(string_fields[i], json_pack("[s]", "x")), why);
    }
}

static void test_string_fields_empty(void **state) {
    (void)state;
    for (size_t i = 0; i < N_STRING_FIELDS; i++) {
        char why[64];
        snprintf(why, sizeof why, "%s: empty", string_fields[i]);
        expect_invalid(with_str(string_fields[i], ""), why);
    }
}

static void test_payload_not_object(void **state) {
    (void)state;
    expect_invalid(with("payload", json_array()), "payload: not an object");
    expect_invalid(with("payload", json_string("{}")), "payload: not an object");
    expect_invalid(with("payload", json_null()), "payload: not an object");
    expect_invalid(with("payload", json_integer(1)), "payload: not an object");
}

static void test_schema_version(void **state) {
    (void)state;
    expect_invalid(with("schemaVersion", json_integer(0)), "schemaVersion: must be an integer >= 1");
    expect_invalid(with("schemaVersion", json_integer(-1)), "schemaVersion");
    expect_invalid(with("schemaVersion", json_integer(2147483648LL)), "schemaVersion");
    expect_invalid(with_str("schemaVersion", "1"), "schemaVersion: not an integer");
    expect_invalid(with("schemaVersion", json_real(1.5)), "schemaVersion: not an integer");
    expect_invalid(with("schemaVersion", json_real(1.0)), "schemaVersion: not an integer");
    expect_invalid(with("schemaVersion", json_true()), "schemaVersion: not an integer");

    deta_event_t ev;
    expect_valid(with("schemaVersion", json_integer(2)), &ev);
    assert_int_equal(ev.schema_version, 2);
    deta_event_clear(&ev);
}

static void test_unknown_fields_and_types_accepted(void **state) {
    (void)state;
    json_t *j = valid_envelope();
    json_object_set_new(j, "traceId", json_string("abc"));
    json_object_set_new(j, "extra", json_pack("{s:[i]}", "nested", 1));
    json_object_set_new(j, "eventType", json_string("order.teleported"));
    deta_event_t ev;
    expect_valid(j, &ev);
    assert_string_equal(ev.event_type, "order.teleported");
    assert_null(json_object_get(ev.payload, "traceId"));
    deta_event_clear(&ev);
}

static void test_over_long_strings(void **state) {
    (void)state;
    char *longest = repeat('a', DETA_ID_MAX);
    char *too_long = repeat('a', DETA_ID_MAX + 1);
    const char *fields[] = {"eventType", "orderId", "correlationId", "producer"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        char why[64];
        snprintf(why, sizeof why, "%s: longer than 64 bytes", fields[i]);
        expect_invalid(with_str(fields[i], too_long), why);
        deta_event_t ev;
        expect_valid(with_str(fields[i], longest), &ev);
        deta_event_clear(&ev);
    }
    free(longest);
    free(too_long);
}

static void test_malformed_json(void **state) {
    (void)state;
    const char *bad[] = {"", "{", "not json", "{\"eventId\":}", "{}x", "\xff"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        deta_event_t ev;
        memset(&ev, 0xA5, sizeof ev);
        char err[256] = "";
        assert_int_equal(deta_event_parse(bad[i], strlen(bad[i]), &ev, err, sizeof err),
                         DETA_ERR_INVALID);
        assert_null(ev.payload);
        assert_non_null(strstr(err, "malformed JSON"));
    }
    deta_event_t ev;
    assert_int_equal(deta_event_parse(NULL, 0, &ev, NULL, 0), DETA_ERR_INVALID);
    assert_null(ev.payload);
}

static void test_not_an_object(void **state) {
    (void)state;
    const char *bad[] = {"[1,2]", "[]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        deta_event_t ev;
        char err[256] = "";
        assert_int_equal(deta_event_parse(bad[i], strlen(bad[i]), &ev, err, sizeof err),
                         DETA_ERR_INVALID);
        assert_null(ev.payload);
        assert_non_null(strstr(err, "not a JSON object"));
    }
    /* Scalars at the top level are refused by the decoder itself. */
    deta_event_t ev;
    assert_int_equal(deta_event_parse("\"x\"", 3, &ev, NULL, 0), DETA_ERR_INVALID);
    assert_int_equal(deta_event_parse("null", 4, &ev, NULL, 0), DETA_ERR_INVALID);
    assert_null(ev.payload);
}

static void test_duplicate_keys_rejected(void **state) {
    (void)state;
    json_t *j = valid_envelope();
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    /* Append a second eventId just before the closing brace. */
    size_t len = strlen(text);
    char *dup = malloc(len + 64);
    assert_non_null(dup);
    memcpy(dup, text, len - 1);
    strcpy(dup + len - 1, ",\"eventId\":\"" VALID_UUID "\"}");
    free(text);
    deta_event_t ev;
    char err[256] = "";
    assert_int_equal(deta_event_parse(dup, strlen(dup), &ev, err, sizeof err), DETA_ERR_INVALID);
    assert_null(ev.payload);
    assert_non_null(strstr(err, "duplicate"));
    free(dup);
}

static void test_parse_honours_length(void **state) {
    (void)state;
    json_t *j = valid_envelope();
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    size_t len = strlen(text);
    char *buf = malloc(len + 16);
    assert_non_null(buf);
    memcpy(buf, text, len);
    memcpy(buf + len, "garbage", 8);
    deta_event_t ev;
    assert_int_equal(deta_event_parse(buf, len, &ev, NULL, 0), DETA_OK);
    deta_event_clear(&ev);
    /* One byte short is a truncated message. */
    assert_int_equal(deta_event_parse(buf, len - 1, &ev, NULL, 0), DETA_ERR_INVALID);
    assert_null(ev.payload);
    free(buf);
    free(text);
}

static void test_embedded_nul_rejected(void **state) {
    (void)state;
    const char text[] = "{\"eventId\":\"a\\u0000b\"}";
    deta_event_t ev;
    assert_int_equal(deta_event_parse(text, strlen(text), &ev, NULL, 0), DETA_ERR_INVALID);
    assert_null(ev.payload);
}

/* ---- parsing: UUIDs and timestamps (the instants themselves: test_timestamp.c) ---- */

static void test_bad_uuids(void **state) {
    (void)state;
    const char *bad[] = {
        "7c1e2a34-5b6d-4f80-9a1b-2c3d4e5f6a7",   /* too short */
        "7c1e2a34-5b6d-4f80-9a1b-2c3d4e5f6a7b0", /* too long */
        "7c1e2a345b6d-4f80-9a1b-2c3d4e5f6a7b0",  /* dash missing */
        "7c1e2a34-5b6d-4f80-9a1b_2c3d4e5f6a7b",  /* wrong separator */
        "7c1e2a34-5b6d-4f80-9a1b-2c3d4e5f6a7g",  /* not hex */
        "{7c1e2a34-5b6d-4f80-9a1b-2c3d4e5f6a7b}",
        "7c1e2a345b6d4f809a1b2c3d4e5f6a7b",
        "not-a-uuid",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(deta_uuid_valid(bad[i]));
        expect_invalid(with_str("eventId", bad[i]), "eventId: not a UUID");
    }
    assert_false(deta_uuid_valid(NULL));
    assert_false(deta_uuid_valid(""));
}

static void test_uuid_is_lower_cased(void **state) {
    (void)state;
    deta_event_t ev;
    expect_valid(with_str("eventId", "7C1E2A34-5B6D-4F80-9A1B-2C3D4E5F6A7B"), &ev);
    assert_string_equal(ev.event_id, VALID_UUID);
    deta_event_clear(&ev);
}

static void test_uuid_new(void **state) {
    (void)state;
    char id[DETA_UUID_LEN + 1];
    deta_uuid_new(id);
    assert_int_equal(strlen(id), DETA_UUID_LEN);
    assert_true(deta_uuid_valid(id));
    for (size_t i = 0; i < DETA_UUID_LEN; i++)
        assert_true(id[i] < 'A' || id[i] > 'Z');
}

static void test_parse_rejects_bad_timestamps(void **state) {
    (void)state;
    expect_invalid(with_str("occurredAt", "2026-02-30T00:00:00Z"), "occurredAt: not an ISO-8601");
    expect_invalid(with_str("occurredAt", "2026-11-25T25:00:00Z"), "occurredAt: not an ISO-8601");
    expect_invalid(with_str("producedAt", "2026-11-25T12:38:05"), "producedAt: not an ISO-8601");
    expect_invalid(with_str("producedAt", "2026-11-25T12:38:05+01:00"),
                   "producedAt: not an ISO-8601");
    /* Valid, but too long for the struct's buffer: rejected, never cut. */
    expect_invalid(with_str("producedAt", "2026-11-25T12:38:05.123456789+00:00"),
                   "producedAt: longer than 31 bytes");

    deta_event_t ev;
    expect_valid(with_str("occurredAt", "2026-11-25T12:38:05+00:00"), &ev);
    assert_string_equal(ev.occurred_at, "2026-11-25T12:38:05+00:00");
    deta_event_clear(&ev);
    expect_valid(with_str("occurredAt", "2026-11-25T12:38:05.123456789Z"), &ev);
    deta_event_clear(&ev);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_fills_envelope),
        cmocka_unit_test(test_serialize_is_compact_and_ordered),
        cmocka_unit_test(test_round_trip_field_by_field),
        cmocka_unit_test(test_to_json_shares_payload),
        cmocka_unit_test(test_serialize_cleared_event_has_empty_payload),
        cmocka_unit_test(test_init_ids_are_unique),
        cmocka_unit_test(test_init_rejects_bad_arguments),
        cmocka_unit_test(test_init_accepts_longest_ids),
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_missing_fields),
        cmocka_unit_test(test_string_fields_of_wrong_type),
        cmocka_unit_test(test_string_fields_empty),
        cmocka_unit_test(test_payload_not_object),
        cmocka_unit_test(test_schema_version),
        cmocka_unit_test(test_unknown_fields_and_types_accepted),
        cmocka_unit_test(test_over_long_strings),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_duplicate_keys_rejected),
        cmocka_unit_test(test_parse_honours_length),
        cmocka_unit_test(test_embedded_nul_rejected),
        cmocka_unit_test(test_bad_uuids),
        cmocka_unit_test(test_uuid_is_lower_cased),
        cmocka_unit_test(test_uuid_new),
        cmocka_unit_test(test_parse_rejects_bad_timestamps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
