/*
 * test_cql_values.c - lib/src/cql_values.c, the pure half of deta/cql.h:
 * consistency names, the error class of each server code, the value
 * constructors (uuid text included), and reading a Rows result: cells, column
 * lookup and the typed getters with their length, type and UTF-8 checks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "deta/cql.h"

static void test_consistency(void **state) {
    (void)state;
    static const char *names[] = {"ANY",          "ONE",         "TWO",    "THREE",
                                  "QUORUM",       "ALL",         "LOCAL_QUORUM",
                                  "EACH_QUORUM",  "SERIAL",      "LOCAL_SERIAL",
                                  "LOCAL_ONE"};
    for (int i = 0; i <= 0x0A; i++) {
        assert_string_equal(deta_cql_consistency_name((deta_cql_consistency_t)i), names[i]);
        assert_int_equal(deta_cql_consistency_parse(names[i]), i);
    }
    assert_int_equal(deta_cql_consistency_parse("local_quorum"), DETA_CQL_LOCAL_QUORUM);
    assert_int_equal(deta_cql_consistency_parse("Quorum"), DETA_CQL_QUORUM);
    assert_int_equal(deta_cql_consistency_parse("LOCAL-QUORUM"), -1);
    assert_int_equal(deta_cql_consistency_parse(""), -1);
    assert_int_equal(deta_cql_consistency_parse(" ONE"), -1);
    assert_int_equal(deta_cql_consistency_parse(NULL), -1);
    assert_string_equal(deta_cql_consistency_name((deta_cql_consistency_t)0x0B), "UNKNOWN");
}

static void test_error_class(void **state) {
    (void)state;
    static const struct {
        int code;
        deta_err_t err;
    } table[] = {
        {DETA_CQL_E_SERVER, DETA_ERR_TRANSIENT},
        {DETA_CQL_E_PROTOCOL, DETA_ERR_INTERNAL},
        {DETA_CQL_E_BAD_CREDENTIALS, DETA_ERR_INTERNAL},
        {DETA_CQL_E_UNAVAILABLE, DETA_ERR_TRANSIENT},
        {DETA_CQL_E_OVERLOADED, DETA_ERR_TRANSIENT},
        {DETA_CQL_E_BOOTSTRAPPING, DETA_ERR_TRANSIENT},
        {DETA_CQL_E_TRUNCATE, DETA_ERR_TRANSIENT},
        {DETA_CQL_E_WRITE_TIMEOUT, DETA_ERR_TRANSIENT},
        {DETA_CQL_E_READ_TIMEOUT, DETA_ERR_TRANSIENT},
        {DETA_CQL_E_READ_FAILURE, DETA_ERR_TRANSIENT},
        {DETA_CQL_E_FUNCTION_FAILURE, DETA_ERR_INTERNAL},
        {DETA_CQL_E_WRITE_FAILURE, DETA_ERR_TRANSIENT},
        {DETA_CQL_E_SYNTAX, DETA_ERR_INTERNAL},
        {DETA_CQL_E_UNAUTHORIZED, DETA_ERR_INTERNAL},
        {DETA_CQL_E_INVALID, DETA_ERR_INTERNAL},
        {DETA_CQL_E_CONFIG, DETA_ERR_INTERNAL},
        {DETA_CQL_E_ALREADY_EXISTS, DETA_ERR_CONFLICT},
        {DETA_CQL_E_UNPREPARED, DETA_ERR_TRANSIENT},
        {0x1600, DETA_ERR_INTERNAL}, /* CDC write failure: not a v4 code */
        {-1, DETA_ERR_INTERNAL},
    };
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        if (deta_cql_error_class(table[i].code) != table[i].err)
            fail_msg("code 0x%04x: %s, expected %s", (unsigned)table[i].code,
                     deta_err_name(deta_cql_error_class(table[i].code)),
                     deta_err_name(table[i].err));
}

static void test_constructors(void **state) {
    (void)state;
    deta_cql_value_t v = deta_cql_text("x");
    assert_int_equal(v.kind, DETA_CQL_V_SET);
    assert_int_equal(v.type, DETA_CQL_T_VARCHAR);
    assert_string_equal(v.u.text, "x");
    assert_int_equal(deta_cql_text(NULL).kind, DETA_CQL_V_NULL);
    v = deta_cql_int(-7);
    assert_int_equal(v.type, DETA_CQL_T_INT);
    assert_int_equal(v.u.i32, -7);
    v = deta_cql_bigint(INT64_MIN);
    assert_int_equal(v.type, DETA_CQL_T_BIGINT);
    assert_true(v.u.i64 == INT64_MIN);
    v = deta_cql_timestamp_ms(1700000000123);
    assert_int_equal(v.type, DETA_CQL_T_TIMESTAMP);
    assert_true(v.u.i64 == 1700000000123);
    v = deta_cql_bool(true);
    assert_int_equal(v.type, DETA_CQL_T_BOOLEAN);
    assert_true(v.u.b);
    static const uint8_t blob[2] = {1, 2};
    v = deta_cql_blob(blob, 2);
    assert_int_equal(v.type, DETA_CQL_T_BLOB);
    assert_ptr_equal(v.u.bytes.p, blob);
    assert_int_equal(v.u.bytes.n, 2);
    assert_int_equal(deta_cql_null().kind, DETA_CQL_V_NULL);
    assert_int_equal(deta_cql_unset().kind, DETA_CQL_V_UNSET);
}

static void test_uuid_text(void **state) {
    (void)state;
    deta_cql_value_t v;
    static const uint8_t want[16] = {0x55, 0x0e, 0x84, 0x00, 0xe2, 0x9b, 0x41, 0xd4,
                                     0xa7, 0x16, 0x44, 0x66, 0x55, 0x44, 0x00, 0xff};
    assert_true(deta_cql_uuid_text("550e8400-e29b-41d4-a716-4466554400ff", &v));
    assert_int_equal(v.kind, DETA_CQL_V_SET);
    assert_int_equal(v.type, DETA_CQL_T_UUID);
    assert_memory_equal(v.u.uuid, want, 16);
    assert_true(deta_cql_uuid_text("550E8400-E29B-41D4-A716-4466554400FF", &v));
    assert_memory_equal(v.u.uuid, want, 16);

    assert_true(deta_cql_uuid_text(NULL, &v));
    assert_int_equal(v.kind, DETA_CQL_V_NULL);
    assert_true(deta_cql_uuid_text("", &v));
    assert_int_equal(v.kind, DETA_CQL_V_NULL);

    static const char *bad[] = {
        "550e8400-e29b-41d4-a716-4466554400f",   /* 35 */
        "550e8400-e29b-41d4-a716-4466554400ff0", /* 37 */
        "550e8400e29b-41d4-a716-4466554400ff0",  /* a dash missing */
        "550e8400-e29b-41d4-a716-4466554400fg",  /* not hex */
        "550e8400-e29b-41d4+a716-4466554400ff",  /* not a dash */
        "550e8400-e29b-41d4-a716--466554400ff",  /* a dash in the hex */
        "{50e8400-e29b-41d4-a716-4466554400f}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        v = deta_cql_int(1);
        if (deta_cql_uuid_text(bad[i], &v))
            fail_msg("accepted %s", bad[i]);
        assert_int_equal(v.kind, DETA_CQL_V_NULL);
    }
}

/* ---- a Rows result made by hand: columns id uuid, n int, big bigint,
 * ok boolean, name varchar, code ascii, at timestamp; two rows ---- */

enum { C_ID, C_N, C_BIG, C_OK, C_NAME, C_CODE, C_AT, NCOLS };

static const uint8_t U[16] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
                              0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
static const uint8_t N[4] = {0xff, 0xff, 0xff, 0xfe};
static const uint8_t BIG[8] = {0x01, 0, 0, 0, 0, 0, 0, 0x02};
static const uint8_t OK[1] = {0x02};
static const uint8_t AT[8] = {0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x7b};

static deta_cql_column_t columns[NCOLS];
static deta_cql_cell_t cells[2 * NCOLS];
static deta_cql_result_t rows;

static void set_column(int i, const char *name, deta_cql_type_t t) {
    strcpy(columns[i].keyspace, "deta");
    strcpy(columns[i].table, "t");
    strcpy(columns[i].name, name);
    columns[i].type.type = t;
}

static void cell(int row, int col, const void *p, int32_t len) {
    cells[row * NCOLS + col].data = p;
    cells[row * NCOLS + col].len = len;
}

static int setup_rows(void **state) {
    (void)state;
    memset(columns, 0, sizeof columns);
    set_column(C_ID, "id", DETA_CQL_T_UUID);
    set_column(C_N, "n", DETA_CQL_T_INT);
    set_column(C_BIG, "big", DETA_CQL_T_BIGINT);
    set_column(C_OK, "ok", DETA_CQL_T_BOOLEAN);
    set_column(C_NAME, "name", DETA_CQL_T_VARCHAR);
    set_column(C_CODE, "code", DETA_CQL_T_ASCII);
    set_column(C_AT, "at", DETA_CQL_T_TIMESTAMP);
    cell(0, C_ID, U, 16);
    cell(0, C_N, N, 4);
    cell(0, C_BIG, BIG, 8);
    cell(0, C_OK, OK, 1);
    cell(0, C_NAME, "Zoë", 4);
    cell(0, C_CODE, "EUR", 3);
    cell(0, C_AT, AT, 8);
    for (int c = 0; c < NCOLS; c++)
        cell(1, c, NULL, -1);
    memset(&rows, 0, sizeof rows);
    rows.kind = DETA_CQL_RESULT_ROWS;
    rows.ncolumns = NCOLS;
    rows.columns = columns;
    rows.nrows = 2;
    rows.cells = cells;
    return 0;
}

static void test_cells_and_index(void **state) {
    (void)state;
    assert_int_equal(deta_cql_column_index(&rows, "name"), C_NAME);
    assert_int_equal(deta_cql_column_index(&rows, "id"), C_ID);
    assert_int_equal(deta_cql_column_index(&rows, "Name"), -1);
    assert_int_equal(deta_cql_column_index(&rows, NULL), -1);
    assert_int_equal(deta_cql_column_index(NULL, "id"), -1);
    assert_ptr_equal(deta_cql_cell(&rows, 1, 2), &cells[NCOLS + 2]);
    assert_null(deta_cql_cell(&rows, 2, 0));
    assert_null(deta_cql_cell(&rows, 0, NCOLS));
    assert_null(deta_cql_cell(NULL, 0, 0));
    deta_cql_result_t v = {.kind = DETA_CQL_RESULT_VOID};
    assert_null(deta_cql_cell(&v, 0, 0));
    rows.columns = NULL;
    assert_int_equal(deta_cql_column_index(&rows, "id"), -1);
}

static void test_getters_values(void **state) {
    (void)state;
    char err[256], text[64], uuid[37];
    int32_t i;
    int64_t l;
    bool b, null = true;
    assert_int_equal(deta_cql_get_uuid(&rows, 0, C_ID, uuid, &null, err, sizeof err), DETA_OK);
    assert_string_equal(uuid, "12345678-9abc-def0-0123-456789abcdef");
    assert_false(null);
    assert_int_equal(deta_cql_get_int(&rows, 0, C_N, &i, &null, err, sizeof err), DETA_OK);
    assert_int_equal(i, -2);
    assert_int_equal(deta_cql_get_bigint(&rows, 0, C_BIG, &l, &null, err, sizeof err), DETA_OK);
    assert_true(l == INT64_C(0x0100000000000002));
    assert_int_equal(deta_cql_get_bigint(&rows, 0, C_AT, &l, &null, err, sizeof err), DETA_OK);
    assert_true(l == INT64_C(1700000000123));
    assert_int_equal(deta_cql_get_bool(&rows, 0, C_OK, &b, &null, err, sizeof err), DETA_OK);
    assert_true(b); /* any non-zero byte */
    assert_int_equal(deta_cql_get_text(&rows, 0, C_NAME, text, sizeof text, &null, err, sizeof err),
                     DETA_OK);
    assert_string_equal(text, "Zoë");
    assert_int_equal(deta_cql_get_text(&rows, 0, C_CODE, text, sizeof text, NULL, NULL, 0), DETA_OK);
    assert_string_equal(text, "EUR");
    /* exactly fits */
    assert_int_equal(deta_cql_get_text(&rows, 0, C_NAME, text, 5, NULL, NULL, 0), DETA_OK);
    columns[C_AT].type.type = DETA_CQL_T_COUNTER;
    assert_int_equal(deta_cql_get_bigint(&rows, 0, C_AT, &l, NULL, NULL, 0), DETA_OK);
    columns[C_ID].type.type = DETA_CQL_T_TIMEUUID;
    assert_int_equal(deta_cql_get_uuid(&rows, 0, C_ID, uuid, NULL, NULL, 0), DETA_OK);
}

static void test_getters_null(void **state) {
    (void)state;
    char text[8] = "junk", uuid[37] = "junk";
    int32_t i = 5;
    int64_t l = 5;
    bool b = true, null;
    null = false;
    assert_int_equal(deta_cql_get_text(&rows, 1, C_NAME, text, sizeof text, &null, NULL, 0), DETA_OK);
    assert_true(null);
    assert_string_equal(text, "");
    null = false;
    assert_int_equal(deta_cql_get_int(&rows, 1, C_N, &i, &null, NULL, 0), DETA_OK);
    assert_true(null);
    assert_int_equal(i, 0);
    null = false;
    assert_int_equal(deta_cql_get_bigint(&rows, 1, C_BIG, &l, &null, NULL, 0), DETA_OK);
    assert_true(null);
    assert_true(l == 0);
    null = false;
    assert_int_equal(deta_cql_get_bool(&rows, 1, C_OK, &b, &null, NULL, 0), DETA_OK);
    assert_true(null);
    assert_false(b);
    null = false;
    assert_int_equal(deta_cql_get_uuid(&rows, 1, C_ID, uuid, &null, NULL, 0), DETA_OK);
    assert_true(null);
    assert_string_equal(uuid, "");
    /* is_null may be NULL */
    assert_int_equal(deta_cql_get_int(&rows, 1, C_N, &i, NULL, NULL, 0), DETA_OK);
}

static void expect_invalid(deta_err_t err, const char *errstr, const char *words) {
    assert_int_equal(err, DETA_ERR_INVALID);
    if (!strstr(errstr, words))
        fail_msg("error \"%s\" lacks \"%s\"", errstr, words);
}

static void test_getters_lengths(void **state) {
    (void)state;
    char err[256], text[64], uuid[37];
    int32_t i;
    int64_t l;
    bool b;
    cell(0, C_N, N, 3);
    expect_invalid(deta_cql_get_int(&rows, 0, C_N, &i, NULL, err, sizeof err), err,
                   "column \"n\": an int of 3 bytes (expected 4)");
    cell(0, C_N, N, 0);
    expect_invalid(deta_cql_get_int(&rows, 0, C_N, &i, NULL, err, sizeof err), err, "of 0 bytes");
    cell(0, C_BIG, BIG, 4);
    expect_invalid(deta_cql_get_bigint(&rows, 0, C_BIG, &l, NULL, err, sizeof err), err,
                   "column \"big\": a bigint of 4 bytes");
    cell(0, C_OK, BIG, 2);
    expect_invalid(deta_cql_get_bool(&rows, 0, C_OK, &b, NULL, err, sizeof err), err,
                   "column \"ok\": a boolean of 2 bytes");
    cell(0, C_ID, U, 15);
    expect_invalid(deta_cql_get_uuid(&rows, 0, C_ID, uuid, NULL, err, sizeof err), err,
                   "column \"id\": a uuid of 15 bytes");
    /* text one byte too long for dst */
    expect_invalid(deta_cql_get_text(&rows, 0, C_NAME, text, 4, NULL, err, sizeof err), err,
                   "column \"name\": text of 4 bytes does not fit in 3");
    assert_string_equal(text, "");
    expect_invalid(deta_cql_get_text(&rows, 0, C_NAME, text, 0, NULL, err, sizeof err), err,
                   "no room");
    expect_invalid(deta_cql_get_text(&rows, 0, C_NAME, NULL, 10, NULL, err, sizeof err), err,
                   "no room");
}

static void test_getters_types_and_range(void **state) {
    (void)state;
    char err[256], text[64];
    int32_t i;
    int64_t l;
    bool b;
    expect_invalid(deta_cql_get_int(&rows, 0, C_BIG, &i, NULL, err, sizeof err), err,
                   "column \"big\" is of type 0x0002, not int");
    expect_invalid(deta_cql_get_bigint(&rows, 0, C_N, &l, NULL, err, sizeof err), err, "not bigint");
    expect_invalid(deta_cql_get_bool(&rows, 0, C_N, &b, NULL, err, sizeof err), err, "not boolean");
    expect_invalid(deta_cql_get_text(&rows, 0, C_ID, text, sizeof text, NULL, err, sizeof err), err,
                   "column \"id\" is of type 0x000c, not text");
    char uuid[37];
    expect_invalid(deta_cql_get_uuid(&rows, 0, C_NAME, uuid, NULL, err, sizeof err), err, "not uuid");
    expect_invalid(deta_cql_get_int(&rows, 2, C_N, &i, NULL, err, sizeof err), err,
                   "no cell at row 2, column 1");
    expect_invalid(deta_cql_get_int(&rows, 0, NCOLS, &i, NULL, err, sizeof err), err, "no cell");
    expect_invalid(deta_cql_get_int(NULL, 0, 0, &i, NULL, err, sizeof err), err, "no cell");
    /* without metadata: lengths only, columns named by position */
    rows.columns = NULL;
    assert_int_equal(deta_cql_get_int(&rows, 0, C_N, &i, NULL, err, sizeof err), DETA_OK);
    expect_invalid(deta_cql_get_int(&rows, 0, C_BIG, &i, NULL, err, sizeof err), err,
                   "column 2: an int of 8 bytes");
    assert_int_equal(deta_cql_get_text(&rows, 0, C_CODE, text, sizeof text, NULL, err, sizeof err),
                     DETA_OK);
}

static void test_getters_utf8(void **state) {
    (void)state;
    static const struct {
        const char *bytes;
        int32_t len;
        const char *words;
    } bad[] = {
        {"a\xC0\x80", 3, "not UTF-8 (at byte 1)"},     /* overlong NUL */
        {"\xE0\x80\xAF", 3, "not UTF-8 (at byte 0)"},  /* overlong '/' */
        {"\xED\xA0\x80", 3, "not UTF-8"},              /* a surrogate */
        {"ab\xE2\x82", 4, "not UTF-8 (at byte 2)"},    /* cut short */
        {"\xF4\x90\x80\x80", 4, "not UTF-8"},          /* above U+10FFFF */
        {"\xF5\x80\x80\x80", 4, "not UTF-8"},
        {"\x80", 1, "not UTF-8"},                      /* a lone continuation */
        {"\xC3\x28", 2, "not UTF-8"},
        {"x\0y", 3, "NUL byte at 1"},
    };
    char err[256], text[64];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cell(0, C_NAME, bad[i].bytes, bad[i].len);
        expect_invalid(deta_cql_get_text(&rows, 0, C_NAME, text, sizeof text, NULL, err, sizeof err),
                       err, bad[i].words);
        assert_non_null(strstr(err, "column \"name\""));
        assert_string_equal(text, "");
    }
    static const char *good[] = {"", "plain", "\xC2\x80", "\xE2\x82\xAC", "\xEF\xBF\xBF",
                                 "\xF0\x9F\x98\x80", "\xF4\x8F\xBF\xBF"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        cell(0, C_NAME, good[i], (int32_t)strlen(good[i]));
        assert_int_equal(deta_cql_get_text(&rows, 0, C_NAME, text, sizeof text, NULL, err, sizeof err),
                         DETA_OK);
        assert_string_equal(text, good[i]);
    }
    /* ascii: bytes above 0x7F are refused even when they are UTF-8 */
    cell(0, C_CODE, "\xE2\x82\xAC", 3);
    expect_invalid(deta_cql_get_text(&rows, 0, C_CODE, text, sizeof text, NULL, err, sizeof err), err,
                   "column \"code\": ascii text with byte 0xe2");
}

static void test_result_clear(void **state) {
    (void)state;
    deta_cql_result_t r;
    memset(&r, 0, sizeof r);
    deta_cql_result_clear(&r);
    deta_cql_result_clear(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_consistency),
        cmocka_unit_test(test_error_class),
        cmocka_unit_test(test_constructors),
        cmocka_unit_test(test_uuid_text),
        cmocka_unit_test_setup(test_cells_and_index, setup_rows),
        cmocka_unit_test_setup(test_getters_values, setup_rows),
        cmocka_unit_test_setup(test_getters_null, setup_rows),
        cmocka_unit_test_setup(test_getters_lengths, setup_rows),
        cmocka_unit_test_setup(test_getters_types_and_range, setup_rows),
        cmocka_unit_test_setup(test_getters_utf8, setup_rows),
        cmocka_unit_test(test_result_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
