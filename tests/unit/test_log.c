/*
 * test_log.c - structured JSON log lines on stdout (lib/src/log.c).
 *
 * stdout is redirected (dup2) to a temporary file around each batch of log
 * calls, then restored before anything is asserted, so a failing assertion never
 * leaves cmocka writing into the capture file. Each captured line is decoded
 * with jansson: the test fails on anything that is not one JSON object per line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "deta/envelope.h"
#include "deta/log.h"

static FILE *capture_file;
static int saved_stdout = -1;

static void start_capture(void) {
    fflush(stdout);
    capture_file = tmpfile();
    assert_non_null(capture_file);
    saved_stdout = dup(STDOUT_FILENO);
    assert_true(saved_stdout >= 0);
    assert_true(dup2(fileno(capture_file), STDOUT_FILENO) >= 0);
}

/* Restores stdout and returns what was written (malloc'd). */
static char *end_capture(void) {
    fflush(stdout);
    dup2(saved_stdout, STDOUT_FILENO);
    close(saved_stdout);
    saved_stdout = -1;
    long size = ftell(capture_file);
    assert_true(size >= 0);
    char *out = malloc((size_t)size + 1);
    assert_non_null(out);
    rewind(capture_file);
    size_t n = fread(out, 1, (size_t)size, capture_file);
    out[n] = '\0';
    fclose(capture_file);
    capture_file = NULL;
    return out;
}

static size_t count_lines(const char *s) {
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* The one line in out, decoded; fails unless out is exactly one JSON object line. */
static json_t *single_line(const char *out) {
    assert_int_equal(count_lines(out), 1);
    size_t len = strlen(out);
    assert_int_equal(out[len - 1], '\n');
    json_error_t err;
    json_t *j = json_loadb(out, len - 1, 0, &err);
    if (!json_is_object(j))
        fail_msg("not a JSON object line: %s (%s)", out, err.text);
    return j;
}

static const char *str_of(const json_t *j, const char *key) {
    return json_string_value(json_object_get(j, key));
}

static void test_before_init(void **state) {
    (void)state;
    start_capture();
    DETA_DEBUG("dropped: info is the default");
    DETA_INFO("hello");
    char *out = end_capture();
    json_t *j = single_line(out);
    assert_string_equal(str_of(j, "service"), "unknown");
    assert_string_equal(str_of(j, "message"), "hello");
    json_decref(j);
    free(out);
}

static void test_line_fields(void **state) {
    (void)state;
    deta_log_init("order-service", DETA_LOG_DEBUG);
    start_capture();
    deta_log(DETA_LOG_INFO, NULL, NULL, "order %s created with %d items", "o-1", 3);
    char *out = end_capture();
    json_t *j = single_line(out);
    assert_true(deta_timestamp_valid(str_of(j, "time")));
    assert_string_equal(str_of(j, "level"), "info");
    assert_string_equal(str_of(j, "service"), "order-service");
    assert_string_equal(str_of(j, "message"), "order o-1 created with 3 items");
    assert_null(json_object_get(j, "orderId"));
    assert_null(json_object_get(j, "correlationId"));
    assert_int_equal(json_object_size(j), 4);
    assert_non_null(strstr(out, "{\"time\":")); /* compact, no spaces */
    assert_null(strstr(out, "\": "));
    json_decref(j);
    free(out);
}

static void test_ids_only_when_given(void **state) {
    (void)state;
    deta_log_init("payment-service", DETA_LOG_DEBUG);
    start_capture();
    deta_log(DETA_LOG_WARN, "o-9", "c-9", "both");
    char *both = end_capture();
    start_capture();
    deta_log(DETA_LOG_ERROR, "o-9", NULL, "order only");
    char *order_only = end_capture();
    start_capture();
    deta_log(DETA_LOG_DEBUG, NULL, "c-9", "correlation only");
    char *corr_only = end_capture();

    json_t *j = single_line(both);
    assert_string_equal(str_of(j, "level"), "warn");
    assert_string_equal(str_of(j, "orderId"), "o-9");
    assert_string_equal(str_of(j, "correlationId"), "c-9");
    json_decref(j);
    j = single_line(order_only);
    assert_string_equal(str_of(j, "level"), "error");
    assert_string_equal(str_of(j, "orderId"), "o-9");
    assert_null(json_object_get(j, "correlationId"));
    json_decref(j);
    j = single_line(corr_only);
    assert_string_equal(str_of(j, "level"), "debug");
    assert_null(json_object_get(j, "orderId"));
    assert_string_equal(str_of(j, "correlationId"), "c-9");
    json_decref(j);
    free(both);
    free(order_only);
    free(corr_only);
}

static void test_level_filter(void **state) {
    (void)state;
    deta_log_init("query-api", DETA_LOG_WARN);
    start_capture();
    DETA_DEBUG("no");
    DETA_INFO("no");
    DETA_WARN("yes-warn");
    DETA_ERROR("yes-error");
    char *out = end_capture();
    assert_int_equal(count_lines(out), 2);
    assert_null(strstr(out, "\"no\""));
    assert_non_null(strstr(out, "\"level\":\"warn\",\"service\":\"query-api\",\"message\":\"yes-warn\""));
    assert_non_null(strstr(out, "\"level\":\"error\",\"service\":\"query-api\",\"message\":\"yes-error\""));
    free(out);

    deta_log_init("query-api", DETA_LOG_ERROR);
    start_capture();
    DETA_WARN("no");
    char *none = end_capture();
    assert_string_equal(none, "");
    free(none);
}

static void test_special_characters_escaped(void **state) {
    (void)state;
    deta_log_init("svc", DETA_LOG_DEBUG);
    const char *msg = "quote \" backslash \\ newline \n tab \t caf\xc3\xa9 \xe2\x9c\x93";
    start_capture();
    DETA_INFO("%s", msg);
    char *out = end_capture();
    json_t *j = single_line(out);
    assert_string_equal(str_of(j, "message"), msg);
    json_decref(j);
    free(out);
}

static void test_invalid_utf8_replaced(void **state) {
    (void)state;
    deta_log_init("svc", DETA_LOG_DEBUG);
    start_capture();
    /* stray continuation, overlong '/', surrogate, truncated sequence */
    deta_log(DETA_LOG_INFO, "o\xff", "c\xc3", "a\x80" "b\xc0\xaf" "c\xed\xa0\x80" "d\xe2\x9c");
    char *out = end_capture();
    json_t *j = single_line(out);
    assert_string_equal(str_of(j, "message"), "a?b??c???d??");
    assert_string_equal(str_of(j, "orderId"), "o?");
    assert_string_equal(str_of(j, "correlationId"), "c?");
    json_decref(j);
    free(out);
}

static void test_long_message_truncated(void **state) {
    (void)state;
    deta_log_init("svc", DETA_LOG_DEBUG);
    size_t n = 10000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'x', n);
    /* A two-byte character straddling the cut must not become invalid UTF-8. */
    big[4094] = '\xc3';
    big[4095] = '\xa9';
    big[n] = '\0';
    start_capture();
    DETA_INFO("%s", big);
    char *out = end_capture();
    json_t *j = single_line(out);
    const char *m = str_of(j, "message");
    size_t len = strlen(m);
    assert_true(len > 4000 && len <= 4096 + 3);
    assert_string_equal(m + len - 3, "...");
    assert_int_equal(strncmp(m, big, 4000), 0);
    json_decref(j);
    free(out);
    free(big);
}

static void test_level_parse(void **state) {
    (void)state;
    deta_log_level_t l = DETA_LOG_ERROR;
    assert_true(deta_log_level_parse("debug", &l));
    assert_int_equal(l, DETA_LOG_DEBUG);
    assert_true(deta_log_level_parse("info", &l));
    assert_int_equal(l, DETA_LOG_INFO);
    assert_true(deta_log_level_parse("warn", &l));
    assert_int_equal(l, DETA_LOG_WARN);
    assert_true(deta_log_level_parse("ERROR", &l));
    assert_int_equal(l, DETA_LOG_ERROR);
    l = DETA_LOG_INFO;
    assert_false(deta_log_level_parse("warning", &l));
    assert_false(deta_log_level_parse("", &l));
    assert_false(deta_log_level_parse("trace", &l));
    assert_false(deta_log_level_parse(NULL, &l));
    assert_int_equal(l, DETA_LOG_INFO);
}

#define THREADS 4
#define LINES_PER_THREAD 250

static void *log_many(void *arg) {
    long id = (long)(intptr_t)arg;
    char pad[300];
    memset(pad, 'a' + (int)id, sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < LINES_PER_THREAD; i++)
        deta_log(DETA_LOG_INFO, "order", "corr", "thread %ld line %d %s", id, i, pad);
    return NULL;
}

static void test_threads_never_interleave(void **state) {
    (void)state;
    deta_log_init("svc", DETA_LOG_INFO);
    pthread_t t[THREADS];
    start_capture();
    for (long i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, log_many, (void *)(intptr_t)i), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    char *out = end_capture();
    assert_int_equal(count_lines(out), THREADS * LINES_PER_THREAD);
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t err;
        json_t *j = json_loads(line, 0, &err);
        if (!json_is_object(j))
            fail_msg("interleaved or broken line: %.80s", line);
        assert_string_equal(str_of(j, "orderId"), "order");
        json_decref(j);
    }
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_before_init), /* must run first: global state */
        cmocka_unit_test(test_line_fields),
        cmocka_unit_test(test_ids_only_when_given),
        cmocka_unit_test(test_level_filter),
        cmocka_unit_test(test_special_characters_escaped),
        cmocka_unit_test(test_invalid_utf8_replaced),
        cmocka_unit_test(test_long_message_truncated),
        cmocka_unit_test(test_level_parse),
        cmocka_unit_test(test_threads_never_interleave),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
