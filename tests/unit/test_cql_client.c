/*
 * test_cql_client.c - the CQL client's connection (lib/src/cql.c) against the
 * scripted CQL server of tests/support (a local socket, no Cassandra): the
 * handshake with and without authentication, requests and their answers, the
 * prepared statements of a connection, the server's errors and their classes,
 * paging, and a connection that goes wrong (cut, silent, oversized, corrupted,
 * on another stream, refused), reconnecting and its backoff. Timeouts are short
 * here, set through the settings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "cql_script_server.h"
#include "deta/clock.h"
#include "deta/cql.h"

#define ERRSZ 512

static char contact[128];

static deta_cql_settings_t settings_for(const cqls_t *s) {
    snprintf(contact, sizeof contact, "127.0.0.1:%d", cqls_port(s));
    deta_cql_settings_t st = {
        .contact_points = contact,
        .connect_timeout_ms = 500,
        .request_timeout_ms = 300,
        .reconnect_min_ms = 50,
        .reconnect_max_ms = 200,
    };
    return st;
}

static deta_cql_t *client_for(const cqls_t *s) {
    deta_cql_settings_t st = settings_for(s);
    char err[ERRSZ] = "";
    deta_cql_t *c = deta_cql_new(&st, err, sizeof err);
    assert_non_null(c);
    return c;
}

static void script_ready(cqls_t *s) { cqls_ready(cqls_expect(s, CQLS_STARTUP)); }

static void assert_contains(const char *haystack, const char *needle) {
    if (!strstr(haystack, needle))
        fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

static void assert_script_done(cqls_t *s) {
    const char *complaint = cqls_verify(s);
    if (complaint)
        fail_msg("script: %s", complaint);
}

static deta_err_t run_query(deta_cql_t *c, const char *cql, char *err) {
    deta_cql_query_t q = {.cql = cql, .consistency = DETA_CQL_ONE};
    deta_cql_result_t r;
    deta_err_t e = deta_cql_query(c, &q, &r, err, ERRSZ);
    deta_cql_result_clear(&r);
    return e;
}

/* ---- handshake ---- */

static void test_handshake_without_authentication(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    script_ready(s);
    deta_cql_t *c = client_for(s);
    assert_false(deta_cql_connected(c));
    assert_string_equal(deta_cql_node(c), "");
    char err[ERRSZ] = "";
    assert_int_equal(deta_cql_connect(c, err, sizeof err), DETA_OK);
    assert_true(deta_cql_connected(c));
    char node[64];
    snprintf(node, sizeof node, "127.0.0.1:%d", cqls_port(s));
    assert_string_equal(deta_cql_node(c), node);
    /* connected already: nothing more is sent */
    assert_int_equal(deta_cql_connect(c, err, sizeof err), DETA_OK);
    deta_cql_stats_t st;
    deta_cql_get_stats(c, &st);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.requests, 1);
    assert_true(st.bytes_out > 9 && st.bytes_in == 9);
    assert_int_equal(deta_cql_last_error(c), -1);
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

static void test_handshake_with_password(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    cqls_authenticate(cqls_expect(s, CQLS_STARTUP), "org.apache.cassandra.auth.PasswordAuthenticator");
    cqls_step_t *st = cqls_expect(s, CQLS_AUTH_RESPONSE);
    cqls_expect_token(st, "\0reader\0s3cret", 14);
    cqls_auth_success(st);
    deta_cql_settings_t set = settings_for(s);
    set.username = "reader";
    set.password = "s3cret";
    char err[ERRSZ] = "";
    deta_cql_t *c = deta_cql_new(&set, err, sizeof err);
    assert_int_equal(deta_cql_connect(c, err, sizeof err), DETA_OK);
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

/* Another authenticator class with a challenge: the same token again. */
static void test_handshake_with_challenge(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    cqls_authenticate(cqls_expect(s, CQLS_STARTUP), "com.example.SaslAuthenticator");
    cqls_step_t *st = cqls_expect(s, CQLS_AUTH_RESPONSE);
    cqls_expect_token(st, "\0u\0p", 4);
    cqls_auth_challenge(st);
    st = cqls_expect(s, CQLS_AUTH_RESPONSE);
    cqls_expect_token(st, "\0u\0p", 4);
    cqls_auth_success(st);
    deta_cql_settings_t set = settings_for(s);
    set.username = "u";
    set.password = "p";
    char err[ERRSZ] = "";
    deta_cql_t *c = deta_cql_new(&set, err, sizeof err);
    assert_int_equal(deta_cql_connect(c, err, sizeof err), DETA_OK);
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

static void test_wrong_password(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    cqls_authenticate(cqls_expect(s, CQLS_STARTUP), "org.apache.cassandra.auth.PasswordAuthenticator");
    cqls_error(cqls_expect(s, CQLS_AUTH_RESPONSE), 0x0100,
               "Provided username reader and/or password are incorrect");
    deta_cql_settings_t set = settings_for(s);
    set.username = "reader";
    set.password = "wrong";
    char err[ERRSZ] = "";
    deta_cql_t *c = deta_cql_new(&set, err, sizeof err);
    assert_int_equal(deta_cql_connect(c, err, sizeof err), DETA_ERR_INTERNAL);
    assert_contains(err, "(0x0100): Provided username reader and/or password are incorrect");
    assert_int_equal(deta_cql_last_error(c), 0x0100);
    assert_false(deta_cql_connected(c));
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

static void test_authentication_required_without_username(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    cqls_authenticate(cqls_expect(s, CQLS_STARTUP), "org.apache.cassandra.auth.PasswordAuthenticator");
    deta_cql_t *c = client_for(s);
    char err[ERRSZ] = "";
    assert_int_equal(deta_cql_connect(c, err, sizeof err), DETA_ERR_INTERNAL);
    assert_contains(err, "server requires authentication");
    assert_false(deta_cql_connected(c));
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

static void test_use_keyspace_at_connect(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    script_ready(s);
    cqls_step_t *st = cqls_expect(s, CQLS_QUERY);
    cqls_expect_query(st, "USE \"Read\"\"Model\"");
    cqls_set_keyspace(st, "Read\"Model");
    deta_cql_settings_t set = settings_for(s);
    set.keyspace = "Read\"Model";
    char err[ERRSZ] = "";
    deta_cql_t *c = deta_cql_new(&set, err, sizeof err);
    assert_int_equal(deta_cql_connect(c, err, sizeof err), DETA_OK);
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

/* A keyspace the node does not know fails the connection with its message. */
static void test_use_unknown_keyspace(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    script_ready(s);
    cqls_error(cqls_expect(s, CQLS_QUERY), 0x2200, "Keyspace 'nope' does not exist");
    deta_cql_settings_t set = settings_for(s);
    set.keyspace = "nope";
    char err[ERRSZ] = "";
    deta_cql_t *c = deta_cql_new(&set, err, sizeof err);
    assert_int_equal(deta_cql_connect(c, err, sizeof err), DETA_ERR_INTERNAL);
    assert_contains(err, "Keyspace 'nope' does not exist");
    assert_false(deta_cql_connected(c));
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

/* ---- requests ---- */

static void test_options(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    script_ready(s);
    const char *keys[] = {"CQL_VERSION", "COMPRESSION"};
    const char *values[] = {"3.4.5", "lz4,snappy"};
    cqls_supported(cqls_expect(s, CQLS_OPTIONS), 2, keys, values);
    deta_cql_t *c = client_for(s);
    char out[256], err[ERRSZ] = "";
    assert_int_equal(deta_cql_options(c, out, sizeof out, err, sizeof err), DETA_OK);
    assert_string_equal(out, "CQL_VERSION=3.4.5;COMPRESSION=lz4,snappy");
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

static void test_query_with_values(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    script_ready(s);
    cqls_step_t *st = cqls_expect(s, CQLS_QUERY);
    cqls_expect_query(st, "INSERT INTO orders (id, n, note) VALUES (?, ?, ?)");
    cqls_expect_consistency(st, DETA_CQL_LOCAL_QUORUM);
    cqls_expect_value(st, "o-1", 3);
    cqls_expect_value(st, "\0\0\0\x07", 4);
    cqls_expect_value(st, NULL, -1);
    cqls_void(st);
    deta_cql_t *c = client_for(s);
    deta_cql_value_t v[] = {deta_cql_text("o-1"), deta_cql_int(7), deta_cql_null()};
    deta_cql_query_t q = {.cql = "INSERT INTO orders (id, n, note) VALUES (?, ?, ?)",
                          .values = v,
                          .nvalues = 3,
                          .consistency = DETA_CQL_LOCAL_QUORUM};
    deta_cql_result_t r;
    char err[ERRSZ] = "";
    assert_int_equal(deta_cql_query(c, &q, &r, err, sizeof err), DETA_OK);
    assert_int_equal(r.kind, DETA_CQL_RESULT_VOID);
    deta_cql_result_clear(&r);
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

/* Each request carries the next stream id. */
static void test_stream_ids_advance(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    script_ready(s);
    cqls_void(cqls_expect(s, CQLS_QUERY));
    cqls_void(cqls_expect(s, CQLS_QUERY));
    deta_cql_t *c = client_for(s);
    char err[ERRSZ] = "";
    assert_int_equal(run_query(c, "SELECT 1", err), DETA_OK);
    assert_int_equal(run_query(c, "SELECT 2", err), DETA_OK);
    assert_int_equal(cqls_stream_of(s, 0), 1);
    assert_int_equal(cqls_stream_of(s, 1), 2);
    assert_int_equal(cqls_stream_of(s, 2), 3);
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

static const char SELECT_BY_ID[] = "SELECT id FROM orders WHERE id = ?";

static void script_execute(cqls_t *s, const char *id, size_t idlen) {
    cqls_step_t *st = cqls_expect(s, CQLS_EXECUTE);
    cqls_expect_id(st, id, idlen);
    cqls_expect_value(st, "o-1", 3);
    const char *names[] = {"id"};
    const uint16_t types[] = {DETA_CQL_T_VARCHAR};
    const cqls_cell_t cells[] = {{"o-1", 3}};
    cqls_rows(st, 1, names, types, 1, cells, NULL, 0);
}

static deta_err_t execute_by_id(deta_cql_t *c, char *err) {
    deta_cql_value_t v[] = {deta_cql_text("o-1")};
    deta_cql_query_t q = {.cql = SELECT_BY_ID, .values = v, .nvalues = 1,
                          .consistency = DETA_CQL_ONE};
    deta_cql_result_t r;
    deta_err_t e = deta_cql_execute(c, &q, &r, err, ERRSZ);
    if (e == DETA_OK) {
        char id[16];
        assert_int_equal(r.nrows, 1);
        assert_int_equal(deta_cql_get_text(&r, 0, 0, id, sizeof id, NULL, err, ERRSZ), DETA_OK);
        assert_string_equal(id, "o-1");
    }
    deta_cql_result_clear(&r);
    return e;
}

static void test_prepare_once_then_execute_twice(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    script_ready(s);
    cqls_step_t *st = cqls_expect(s, CQLS_PREPARE);
    cqls_expect_query(st, SELECT_BY_ID);
    cqls_prepared(st, "\x01\x02", 2, 1);
    script_execute(s, "\x01\x02", 2);
    script_execute(s, "\x01\x02", 2);
    deta_cql_t *c = client_for(s);
    char err[ERRSZ] = "";
    assert_int_equal(execute_by_id(c, err), DETA_OK);
    assert_int_equal(execute_by_id(c, err), DETA_OK);
    deta_cql_stats_t stats;
    deta_cql_get_stats(c, &stats);
    assert_int_equal(stats.prepares, 1);
    assert_int_equal(stats.reprepares, 0);
    assert_int_equal(stats.requests, 4);
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

static void test_unprepared_prepares_again_once(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    script_ready(s);
    cqls_prepared(cqls_expect(s, CQLS_PREPARE), "A", 1, 1);
    cqls_error_unprepared(cqls_expect(s, CQLS_EXECUTE), "A", 1, "Prepared query with ID A not found");
    cqls_step_t *st = cqls_expect(s, CQLS_PREPARE);
    cqls_expect_query(st, SELECT_BY_ID);
    cqls_prepared(st, "B", 1, 1);
    script_execute(s, "B", 1);
    deta_cql_t *c = client_for(s);
    char err[ERRSZ] = "";
    assert_int_equal(execute_by_id(c, err), DETA_OK);
    deta_cql_stats_t stats;
    deta_cql_get_stats(c, &stats);
    assert_int_equal(stats.prepares, 2);
    assert_int_equal(stats.reprepares, 1);
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

/* A second UNPREPARED in a row is the caller's error, not a loop. */
static void test_second_unprepared_is_an_error(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    script_ready(s);
    cqls_prepared(cqls_expect(s, CQLS_PREPARE), "A", 1, 1);
    cqls_error_unprepared(cqls_expect(s, CQLS_EXECUTE), "A", 1, "not found A");
    cqls_prepared(cqls_expect(s, CQLS_PREPARE), "B", 1, 1);
    cqls_error_unprepared(cqls_expect(s, CQLS_EXECUTE), "B", 1, "not found B");
    deta_cql_t *c = client_for(s);
    char err[ERRSZ] = "";
    assert_int_not_equal(execute_by_id(c, err), DETA_OK);
    assert_int_equal(deta_cql_last_error(c), 0x2500);
    assert_contains(err, "not found B");
    assert_int_equal(cqls_requests(s), 5);
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

/* Losing the connection empties the cache: the new one prepares again. */
static void test_cache_emptied_with_the_connection(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    script_ready(s);
    cqls_prepared(cqls_expect(s, CQLS_PREPARE), "A", 1, 1);
    script_execute(s, "A", 1);
    script_ready(s);
    cqls_prepared(cqls_expect(s, CQLS_PREPARE), "C", 1, 1);
    script_execute(s, "C", 1);
    deta_cql_t *c = client_for(s);
    char err[ERRSZ] = "";
    assert_int_equal(execute_by_id(c, err), DETA_OK);
    deta_cql_disconnect(c);
    assert_false(deta_cql_connected(c));
    assert_int_equal(execute_by_id(c, err), DETA_OK);
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

static void check_server_error(int32_t code, deta_err_t want) {
    cqls_t *s = cqls_start();
    script_ready(s);
    char message[64];
    snprintf(message, sizeof message, "the server says 0x%04x", (unsigned)code);
    cqls_error(cqls_expect(s, CQLS_QUERY), code, message);
    cqls_void(cqls_expect(s, CQLS_QUERY));
    deta_cql_t *c = client_for(s);
    char err[ERRSZ] = "";
    assert_int_equal(run_query(c, "SELECT x FROM t", err), want);
    assert_contains(err, message);
    char code_text[16];
    snprintf(code_text, sizeof code_text, "(0x%04x): ", (unsigned)code);
    assert_contains(err, code_text);
    assert_int_equal(deta_cql_last_error(c), code);
    /* an answer, even an error, leaves the connection usable */
    assert_true(deta_cql_connected(c));
    assert_int_equal(run_query(c, "SELECT x FROM t", err), DETA_OK);
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

static void test_passing_server_errors_are_transient(void **state) {
    (void)state;
    check_server_error(DETA_CQL_E_OVERLOADED, DETA_ERR_TRANSIENT);
    check_server_error(DETA_CQL_E_UNAVAILABLE, DETA_ERR_TRANSIENT);
    check_server_error(DETA_CQL_E_READ_TIMEOUT, DETA_ERR_TRANSIENT);
    check_server_error(DETA_CQL_E_WRITE_TIMEOUT, DETA_ERR_TRANSIENT);
}

static void test_statement_errors_are_internal(void **state) {
    (void)state;
    check_server_error(DETA_CQL_E_SYNTAX, DETA_ERR_INTERNAL);
    check_server_error(DETA_CQL_E_INVALID, DETA_ERR_INTERNAL);
    check_server_error(DETA_CQL_E_UNAUTHORIZED, DETA_ERR_INTERNAL);
    check_server_error(DETA_CQL_E_ALREADY_EXISTS, DETA_ERR_CONFLICT);
}

static void test_paging_over_three_pages(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    script_ready(s);
    const char *names[] = {"id"};
    const uint16_t types[] = {DETA_CQL_T_VARCHAR};
    const cqls_cell_t page1[] = {{"a", 1}, {"b", 1}}, page2[] = {{"c", 1}, {"d", 1}},
                      page3[] = {{"e", 1}};
    cqls_step_t *st = cqls_expect(s, CQLS_QUERY);
    cqls_expect_page_size(st, 2);
    cqls_expect_paging_state(st, NULL, 0);
    cqls_rows(st, 1, names, types, 2, page1, "p1", 2);
    st = cqls_expect(s, CQLS_QUERY);
    cqls_expect_page_size(st, 2);
    cqls_expect_paging_state(st, "p1", 2);
    cqls_rows(st, 1, names, types, 2, page2, "p2\0x", 4);
    st = cqls_expect(s, CQLS_QUERY);
    cqls_expect_paging_state(st, "p2\0x", 4);
    cqls_rows(st, 1, names, types, 1, page3, NULL, 0);
    deta_cql_t *c = client_for(s);
    char err[ERRSZ] = "", seen[16] = "";
    deta_cql_query_t q = {.cql = "SELECT id FROM t", .consistency = DETA_CQL_ONE,
                          .page_size = 2};
    uint8_t paging[16];
    int pages = 0;
    for (;;) {
        deta_cql_result_t r;
        assert_int_equal(deta_cql_query(c, &q, &r, err, sizeof err), DETA_OK);
        pages++;
        for (size_t i = 0; i < r.nrows; i++) {
            char id[8];
            assert_int_equal(deta_cql_get_text(&r, i, 0, id, sizeof id, NULL, err, sizeof err),
                             DETA_OK);
            strcat(seen, id);
        }
        bool more = r.has_more_pages;
        if (more) {
            assert_true(r.paging_state_len <= sizeof paging);
            memcpy(paging, r.paging_state, r.paging_state_len);
            q.paging_state = paging;
            q.paging_state_len = r.paging_state_len;
        }
        deta_cql_result_clear(&r);
        if (!more)
            break;
    }
    assert_int_equal(pages, 3);
    assert_string_equal(seen, "abcde");
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

static void test_batch_with_prepared_items(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    script_ready(s);
    cqls_step_t *st = cqls_expect(s, CQLS_PREPARE);
    cqls_expect_query(st, "INSERT INTO a (k) VALUES (?)");
    cqls_prepared(st, "PA", 2, 1);
    st = cqls_expect(s, CQLS_PREPARE);
    cqls_expect_query(st, "INSERT INTO c (k) VALUES (?)");
    cqls_prepared(st, "PC", 2, 1);
    st = cqls_expect(s, CQLS_BATCH);
    cqls_expect_batch_type(st, DETA_CQL_BATCH_UNLOGGED);
    cqls_expect_consistency(st, DETA_CQL_QUORUM);
    cqls_expect_batch_item(st, NULL, "PA", 2, 1);
    cqls_expect_batch_item(st, "DELETE FROM b WHERE k = 1", NULL, 0, 0);
    cqls_expect_batch_item(st, NULL, "PC", 2, 1);
    cqls_void(st);
    /* the second batch: the node forgot PC; it is prepared again, then the batch
     * is sent once more, with PA kept */
    cqls_error_unprepared(cqls_expect(s, CQLS_BATCH), "PC", 2, "unknown PC");
    st = cqls_expect(s, CQLS_PREPARE);
    cqls_expect_query(st, "INSERT INTO c (k) VALUES (?)");
    cqls_prepared(st, "PD", 2, 1);
    st = cqls_expect(s, CQLS_BATCH);
    cqls_expect_batch_item(st, NULL, "PA", 2, 1);
    cqls_expect_batch_item(st, "DELETE FROM b WHERE k = 1", NULL, 0, 0);
    cqls_expect_batch_item(st, NULL, "PD", 2, 1);
    cqls_void(st);
    deta_cql_t *c = client_for(s);
    deta_cql_value_t one[] = {deta_cql_int(1)};
    deta_cql_batch_item_t items[] = {
        {.cql = "INSERT INTO a (k) VALUES (?)", .prepared = true, .values = one, .nvalues = 1},
        {.cql = "DELETE FROM b WHERE k = 1"},
        {.cql = "INSERT INTO c (k) VALUES (?)", .prepared = true, .values = one, .nvalues = 1},
    };
    deta_cql_batch_t b = {.type = DETA_CQL_BATCH_UNLOGGED, .items = items, .nitems = 3,
                          .consistency = DETA_CQL_QUORUM};
    deta_cql_result_t r;
    char err[ERRSZ] = "";
    assert_int_equal(deta_cql_batch(c, &b, &r, err, sizeof err), DETA_OK);
    assert_int_equal(r.kind, DETA_CQL_RESULT_VOID);
    deta_cql_result_clear(&r);
    assert_int_equal(deta_cql_batch(c, &b, NULL, err, sizeof err), DETA_OK);
    deta_cql_stats_t stats;
    deta_cql_get_stats(c, &stats);
    assert_int_equal(stats.prepares, 3);
    assert_int_equal(stats.reprepares, 1);
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

/* A batch whose statements are all known but one, on a connection whose
 * prepared cache is full: preparing the missing one must not evict another of
 * the batch (the oldest entry is the batch's own first statement here). The
 * batch is sent with both ids, and nothing else is prepared again. */
static void test_batch_on_a_full_prepared_cache(void **state) {
    (void)state;
    enum { CACHE = 256 };
    cqls_t *s = cqls_start();
    script_ready(s);
    cqls_step_t *st = cqls_expect(s, CQLS_PREPARE);
    cqls_expect_query(st, "INSERT INTO a (k) VALUES (?)");
    cqls_prepared(st, "PA", 2, 1);
    char text[CACHE][48];
    for (int i = 1; i < CACHE; i++) {
        snprintf(text[i], sizeof text[i], "SELECT k FROM filler WHERE i = %d", i);
        st = cqls_expect(s, CQLS_PREPARE);
        cqls_expect_query(st, text[i]);
        cqls_prepared(st, "F", 1, 0);
    }
    st = cqls_expect(s, CQLS_PREPARE);
    cqls_expect_query(st, "INSERT INTO b (k) VALUES (?)");
    cqls_prepared(st, "PB", 2, 1);
    st = cqls_expect(s, CQLS_BATCH);
    cqls_expect_batch_item(st, NULL, "PA", 2, 1);
    cqls_expect_batch_item(st, NULL, "PB", 2, 1);
    cqls_void(st);
    deta_cql_t *c = client_for(s);
    char err[ERRSZ] = "";
    assert_int_equal(deta_cql_prepare(c, "INSERT INTO a (k) VALUES (?)", NULL, err, sizeof err),
                     DETA_OK);
    for (int i = 1; i < CACHE; i++)
        assert_int_equal(deta_cql_prepare(c, text[i], NULL, err, sizeof err), DETA_OK);
    deta_cql_value_t one[] = {deta_cql_int(1)};
    deta_cql_batch_item_t items[] = {
        {.cql = "INSERT INTO a (k) VALUES (?)", .prepared = true, .values = one, .nvalues = 1},
        {.cql = "INSERT INTO b (k) VALUES (?)", .prepared = true, .values = one, .nvalues = 1},
    };
    deta_cql_batch_t b = {.type = DETA_CQL_BATCH_LOGGED, .items = items, .nitems = 2,
                          .consistency = DETA_CQL_ONE};
    if (deta_cql_batch(c, &b, NULL, err, sizeof err) != DETA_OK)
        fail_msg("batch: %s", err);
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

/* ---- a connection that goes wrong ---- */

static void check_lost_then_reconnect(void (*misbehave)(cqls_step_t *, size_t), size_t n,
                                      deta_err_t want, const char *why) {
    cqls_t *s = cqls_start();
    script_ready(s);
    cqls_error(cqls_expect(s, CQLS_QUERY), DETA_CQL_E_OVERLOADED, "busy");
    cqls_step_t *st = cqls_expect(s, CQLS_QUERY);
    cqls_void(st);
    misbehave(st, n);
    script_ready(s);
    cqls_void(cqls_expect(s, CQLS_QUERY));
    deta_cql_t *c = client_for(s);
    char err[ERRSZ] = "";
    assert_int_equal(run_query(c, "SELECT 1", err), DETA_ERR_TRANSIENT);
    assert_int_equal(deta_cql_last_error(c), DETA_CQL_E_OVERLOADED);
    long t0 = deta_clock_ms();
    assert_int_equal(run_query(c, "SELECT 1", err), want);
    assert_true(deta_clock_ms() - t0 < 2000);
    assert_contains(err, why);
    assert_int_equal(deta_cql_last_error(c), -1);
    assert_false(deta_cql_connected(c));
    /* the next call connects again, at once (the last connect succeeded) */
    assert_int_equal(run_query(c, "SELECT 1", err), DETA_OK);
    assert_int_equal(cqls_connections(s), 2);
    deta_cql_stats_t stats;
    deta_cql_get_stats(c, &stats);
    assert_int_equal(stats.connects, 2);
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

static void cut(cqls_step_t *st, size_t n) { cqls_cut(st, n); }
static void silent(cqls_step_t *st, size_t n) {
    (void)n;
    cqls_silent(st);
}
static void close_conn(cqls_step_t *st, size_t n) {
    (void)n;
    cqls_close(st);
}
static void oversized(cqls_step_t *st, size_t n) { cqls_oversized(st, (uint32_t)n); }
static void bad_header(cqls_step_t *st, size_t n) {
    (void)n;
    cqls_bad_header(st);
}
static void wrong_stream(cqls_step_t *st, size_t n) {
    (void)n;
    cqls_wrong_stream(st);
}

static void test_cut_mid_frame_is_transient_and_reconnects(void **state) {
    (void)state;
    check_lost_then_reconnect(cut, 5, DETA_ERR_TRANSIENT, "mid-frame"); /* in the header */
    check_lost_then_reconnect(cut, 11, DETA_ERR_TRANSIENT, "mid-frame"); /* in the body */
    check_lost_then_reconnect(close_conn, 0, DETA_ERR_TRANSIENT, "closed");
}

static void test_request_timeout(void **state) {
    (void)state;
    check_lost_then_reconnect(silent, 0, DETA_ERR_TRANSIENT, "timed out");
}

static void test_oversized_frame(void **state) {
    (void)state;
    /* max_frame_bytes is 16 MiB by default */
    check_lost_then_reconnect(oversized, (size_t)1 << 30, DETA_ERR_INTERNAL, "malformed");
}

static void test_corrupted_header(void **state) {
    (void)state;
    check_lost_then_reconnect(bad_header, 0, DETA_ERR_INTERNAL, "malformed");
}

static void test_answer_on_another_stream(void **state) {
    (void)state;
    check_lost_then_reconnect(wrong_stream, 0, DETA_ERR_TRANSIENT, "stream");
}

/* A node that closed an idle connection (a restart between two calls): the next
 * call notices before it writes, connects again and succeeds. */
static void test_closed_idle_connection_replaced(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    script_ready(s);
    cqls_step_t *st = cqls_expect(s, CQLS_QUERY);
    cqls_void(st);
    cqls_answer_then_close(st);
    script_ready(s);
    cqls_void(cqls_expect(s, CQLS_QUERY));
    deta_cql_t *c = client_for(s);
    char err[ERRSZ] = "";
    assert_int_equal(run_query(c, "SELECT 1", err), DETA_OK);
    deta_sleep_ms(50); /* the server's close reaches the client's socket */
    assert_int_equal(run_query(c, "SELECT 1", err), DETA_OK);
    assert_int_equal(cqls_connections(s), 2);
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

/* An EVENT on stream -1 before the answer is skipped. */
static void test_event_before_the_answer(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    script_ready(s);
    cqls_step_t *st = cqls_expect(s, CQLS_QUERY);
    cqls_event_first(st);
    cqls_void(st);
    deta_cql_t *c = client_for(s);
    char err[ERRSZ] = "";
    assert_int_equal(run_query(c, "SELECT 1", err), DETA_OK);
    assert_true(deta_cql_connected(c));
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

/* A frame larger than a lowered max_frame_bytes is refused before it is read. */
static void test_frame_over_the_setting(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    script_ready(s);
    const char *names[] = {"blob"};
    const uint16_t types[] = {DETA_CQL_T_BLOB};
    static char big[2048];
    const cqls_cell_t cells[] = {{big, (int)sizeof big}};
    cqls_rows(cqls_expect(s, CQLS_QUERY), 1, names, types, 1, cells, NULL, 0);
    deta_cql_settings_t set = settings_for(s);
    set.max_frame_bytes = 1024;
    char err[ERRSZ] = "";
    deta_cql_t *c = deta_cql_new(&set, err, sizeof err);
    assert_int_equal(run_query(c, "SELECT blob FROM t", err), DETA_ERR_INTERNAL);
    assert_false(deta_cql_connected(c));
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

static void test_first_contact_point_refuses(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    script_ready(s);
    char points[128];
    snprintf(points, sizeof points, "127.0.0.1:%d, 127.0.0.1:%d", cqls_closed_port(),
             cqls_port(s));
    deta_cql_settings_t set = settings_for(s);
    set.contact_points = points;
    char err[ERRSZ] = "";
    deta_cql_t *c = deta_cql_new(&set, err, sizeof err);
    assert_int_equal(deta_cql_connect(c, err, sizeof err), DETA_OK);
    char node[64];
    snprintf(node, sizeof node, "127.0.0.1:%d", cqls_port(s));
    assert_string_equal(deta_cql_node(c), node);
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

/* After a failed attempt, calls inside the backoff fail at once without
 * connecting; after it, the next call connects. */
static void test_backoff(void **state) {
    (void)state;
    cqls_t *s = cqls_start();
    cqls_close(cqls_expect(s, CQLS_STARTUP)); /* the first attempt fails */
    script_ready(s);
    deta_cql_settings_t set = settings_for(s);
    set.reconnect_min_ms = 400;
    set.reconnect_max_ms = 1000;
    char err[ERRSZ] = "";
    deta_cql_t *c = deta_cql_new(&set, err, sizeof err);
    assert_int_equal(deta_cql_connect(c, err, sizeof err), DETA_ERR_TRANSIENT);
    assert_int_equal(cqls_connections(s), 1);
    long t0 = deta_clock_ms();
    assert_int_equal(run_query(c, "SELECT 1", err), DETA_ERR_TRANSIENT);
    assert_true(deta_clock_ms() - t0 < 100);
    assert_contains(err, "reconnecting in");
    assert_int_equal(cqls_connections(s), 1);
    assert_int_equal(deta_cql_last_error(c), -1);
    deta_sleep_ms(450);
    assert_int_equal(deta_cql_connect(c, err, sizeof err), DETA_OK);
    assert_int_equal(cqls_connections(s), 2);
    assert_script_done(s);
    deta_cql_free(c);
    cqls_free(s);
}

/* The backoff doubles after each failed attempt, up to the maximum. */
static void test_backoff_doubles(void **state) {
    (void)state;
    char points[64];
    snprintf(points, sizeof points, "127.0.0.1:%d", cqls_closed_port());
    deta_cql_settings_t set = {.contact_points = points, .reconnect_min_ms = 100,
                               .reconnect_max_ms = 300};
    char err[ERRSZ] = "";
    deta_cql_t *c = deta_cql_new(&set, err, sizeof err);
    int expected[] = {100, 200, 300, 300};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(deta_cql_connect(c, err, sizeof err), DETA_ERR_TRANSIENT);
        assert_int_equal(deta_cql_connect(c, err, sizeof err), DETA_ERR_TRANSIENT);
        int left = -1;
        const char *p = strstr(err, "reconnecting in ");
        assert_non_null(p);
        sscanf(p, "reconnecting in %d ms", &left);
        assert_true(left <= expected[i] && left > expected[i] / 2);
        deta_sleep_ms(left + 5);
    }
    deta_cql_free(c);
}

/* With local_dc, a node of another data center is used but tried last next time. */
static void test_local_dc_preferred(void **state) {
    (void)state;
    cqls_t *remote = cqls_start(), *local = cqls_start();
    const char *names[] = {"data_center"};
    const uint16_t types[] = {DETA_CQL_T_VARCHAR};
    const cqls_cell_t dc2[] = {{"dc2", 3}}, dc1[] = {{"dc1", 3}};
    script_ready(remote);
    cqls_step_t *st = cqls_expect(remote, CQLS_QUERY);
    cqls_expect_query(st, "SELECT data_center FROM system.local");
    cqls_rows(st, 1, names, types, 1, dc2, NULL, 0);
    script_ready(local);
    cqls_rows(cqls_expect(local, CQLS_QUERY), 1, names, types, 1, dc1, NULL, 0);
    char points[128];
    snprintf(points, sizeof points, "127.0.0.1:%d,127.0.0.1:%d", cqls_port(remote),
             cqls_port(local));
    deta_cql_settings_t set = settings_for(remote);
    set.contact_points = points;
    set.local_dc = "dc1";
    char err[ERRSZ] = "";
    deta_cql_t *c = deta_cql_new(&set, err, sizeof err);
    assert_int_equal(deta_cql_connect(c, err, sizeof err), DETA_OK);
    char node[64];
    snprintf(node, sizeof node, "127.0.0.1:%d", cqls_port(remote));
    assert_string_equal(deta_cql_node(c), node);
    deta_cql_disconnect(c);
    assert_int_equal(deta_cql_connect(c, err, sizeof err), DETA_OK);
    snprintf(node, sizeof node, "127.0.0.1:%d", cqls_port(local));
    assert_string_equal(deta_cql_node(c), node);
    assert_script_done(remote);
    assert_script_done(local);
    deta_cql_free(c);
    cqls_free(remote);
    cqls_free(local);
}

/* ---- settings and the pool ---- */

static void test_contact_points_parse(void **state) {
    (void)state;
    const char *good[] = {"cassandra", "10.0.0.1:9043,10.0.0.2", "[::1]:9042, host-b:1",
                          "::1", "[fe80::1]"};
    const char *bad[] = {"", "host:", "host:0", "host:70000", "host:9x", "[::1", "[::1]x",
                         "a,,b", ":9042"};
    char err[ERRSZ];
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        deta_cql_settings_t s = {.contact_points = good[i]};
        deta_cql_t *c = deta_cql_new(&s, err, sizeof err);
        if (!c)
            fail_msg("\"%s\" refused: %s", good[i], err);
        deta_cql_free(c);
    }
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        deta_cql_settings_t s = {.contact_points = bad[i]};
        err[0] = '\0';
        deta_cql_t *c = deta_cql_new(&s, err, sizeof err);
        if (c)
            fail_msg("\"%s\" accepted", bad[i]);
        assert_true(err[0] != '\0');
    }
    assert_null(deta_cql_new(NULL, err, sizeof err));
}

static void *pool_get_on_thread(void *pool) { return deta_cql_pool_get(pool); }

static void test_pool_one_client_per_thread(void **state) {
    (void)state;
    deta_cql_settings_t s = {.contact_points = "127.0.0.1:1"};
    char err[ERRSZ];
    deta_cql_pool_t *p = deta_cql_pool_new(&s, err, sizeof err);
    assert_non_null(p);
    deta_cql_t *mine = deta_cql_pool_get(p);
    assert_non_null(mine);
    assert_ptr_equal(deta_cql_pool_get(p), mine);
    assert_false(deta_cql_connected(mine));
    pthread_t t;
    void *theirs = NULL;
    assert_int_equal(pthread_create(&t, NULL, pool_get_on_thread, p), 0);
    pthread_join(t, &theirs);
    assert_non_null(theirs);
    assert_ptr_not_equal(theirs, mine);
    deta_cql_pool_free(p);
    deta_cql_settings_t bad = {.contact_points = "host:x"};
    assert_null(deta_cql_pool_new(&bad, err, sizeof err));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_without_authentication),
        cmocka_unit_test(test_handshake_with_password),
        cmocka_unit_test(test_handshake_with_challenge),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_authentication_required_without_username),
        cmocka_unit_test(test_use_keyspace_at_connect),
        cmocka_unit_test(test_use_unknown_keyspace),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_query_with_values),
        cmocka_unit_test(test_stream_ids_advance),
        cmocka_unit_test(test_prepare_once_then_execute_twice),
        cmocka_unit_test(test_unprepared_prepares_again_once),
        cmocka_unit_test(test_second_unprepared_is_an_error),
        cmocka_unit_test(test_cache_emptied_with_the_connection),
        cmocka_unit_test(test_passing_server_errors_are_transient),
        cmocka_unit_test(test_statement_errors_are_internal),
        cmocka_unit_test(test_paging_over_three_pages),
        cmocka_unit_test(test_batch_with_prepared_items),
        cmocka_unit_test(test_batch_on_a_full_prepared_cache),
        cmocka_unit_test(test_cut_mid_frame_is_transient_and_reconnects),
        cmocka_unit_test(test_request_timeout),
        cmocka_unit_test(test_oversized_frame),
        cmocka_unit_test(test_corrupted_header),
        cmocka_unit_test(test_answer_on_another_stream),
        cmocka_unit_test(test_closed_idle_connection_replaced),
        cmocka_unit_test(test_event_before_the_answer),
        cmocka_unit_test(test_frame_over_the_setting),
        cmocka_unit_test(test_first_contact_point_refuses),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_backoff_doubles),
        cmocka_unit_test(test_local_dc_preferred),
        cmocka_unit_test(test_contact_points_parse),
        cmocka_unit_test(test_pool_one_client_per_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
