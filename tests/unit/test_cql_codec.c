/*
 * test_cql_codec.c - lib/src/cql_codec.c, the CQL v4 frames without I/O.
 *
 * Requests: each encoder's frame compared byte for byte with one written here
 * from the specification (a byte builder of its own, not the codec's), every
 * query-parameter flag, and the failures (negative stream, a value too long for
 * its length field, a type without an encoding) that leave the buffer's earlier
 * frames intact.
 *
 * Responses: the header's checks (version, compression, opcode, the size
 * bound), each response kind and each RESULT kind, each error code's fields,
 * the frame flags (tracing id, warnings, custom payload), and bad counts. Every
 * valid body is also decoded at every shorter length, from a heap copy of
 * exactly that length, so that ASan sees any read past the end: each prefix
 * must be refused cleanly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cql_codec.h"

/* ---- a byte builder of the test's own ---- */

typedef struct bb {
    uint8_t p[8192];
    size_t n;
} bb_t;

static void b_raw(bb_t *b, const void *p, size_t n) {
    assert_true(b->n + n <= sizeof b->p);
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void b_u8(bb_t *b, unsigned v) {
    uint8_t x = (uint8_t)v;
    b_raw(b, &x, 1);
}
static void b_u16(bb_t *b, unsigned v) {
    b_u8(b, v >> 8);
    b_u8(b, v);
}
static void b_i32(bb_t *b, int32_t v) {
    uint32_t u = (uint32_t)v;
    b_u8(b, u >> 24);
    b_u8(b, u >> 16);
    b_u8(b, u >> 8);
    b_u8(b, u);
}
static void b_i64(bb_t *b, int64_t v) {
    b_i32(b, (int32_t)((uint64_t)v >> 32));
    b_i32(b, (int32_t)(uint64_t)v);
}
static void b_str(bb_t *b, const char *s) {
    b_u16(b, (unsigned)strlen(s));
    b_raw(b, s, strlen(s));
}
static void b_lstr(bb_t *b, const char *s) {
    b_i32(b, (int32_t)strlen(s));
    b_raw(b, s, strlen(s));
}
static void b_bytes(bb_t *b, const void *p, int32_t n) {
    b_i32(b, n);
    if (n > 0)
        b_raw(b, p, (size_t)n);
}
/* A request header with the body's length. */
static void b_req_header(bb_t *b, unsigned stream, unsigned opcode, size_t bodylen) {
    b_u8(b, 0x04);
    b_u8(b, 0);
    b_u16(b, stream);
    b_u8(b, opcode);
    b_i32(b, (int32_t)bodylen);
}

/* Asserts that buf holds exactly the request frame (header + body). */
static void expect_frame(const cql_buf_t *buf, unsigned stream, unsigned opcode, const bb_t *body) {
    bb_t want = {.n = 0};
    b_req_header(&want, stream, opcode, body->n);
    b_raw(&want, body->p, body->n);
    assert_false(buf->failed);
    assert_int_equal(buf->len, want.n);
    assert_memory_equal(buf->p, want.p, want.n);
}

/* ---- requests ---- */

static void test_startup(void **state) {
    (void)state;
    cql_buf_t buf = {0};
    assert_true(cql_encode_startup(&buf, 1, "3.0.0"));
    bb_t body = {.n = 0};
    b_u16(&body, 1);
    b_str(&body, "CQL_VERSION");
    b_str(&body, "3.0.0");
    expect_frame(&buf, 1, 0x01, &body);
    /* the whole frame, written out once: 22 bytes of body */
    static const uint8_t raw[] = {0x04, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x16,
                                  0x00, 0x01, 0x00, 0x0B, 'C',  'Q',  'L',  '_',  'V',
                                  'E',  'R',  'S',  'I',  'O',  'N',  0x00, 0x05, '3',
                                  '.',  '0',  '.',  '0'};
    assert_int_equal(buf.len, sizeof raw);
    assert_memory_equal(buf.p, raw, sizeof raw);
    cql_buf_free(&buf);
}

static void test_auth_response(void **state) {
    (void)state;
    cql_buf_t buf = {0};
    assert_true(cql_encode_auth_response_password(&buf, 2, "cassandra", "s3cret"));
    bb_t body = {.n = 0};
    b_i32(&body, 1 + 9 + 1 + 6);
    b_raw(&body, "\0cassandra\0s3cret", 17);
    expect_frame(&buf, 2, 0x0F, &body);
    cql_buf_free(&buf);
    assert_false(cql_encode_auth_response_password(&buf, 2, NULL, "x"));
    assert_true(buf.failed);
    assert_int_equal(buf.len, 0);
    cql_buf_free(&buf);
}

static void test_options_and_prepare(void **state) {
    (void)state;
    cql_buf_t buf = {0};
    assert_true(cql_encode_options(&buf, 3));
    bb_t empty = {.n = 0};
    expect_frame(&buf, 3, 0x05, &empty);
    cql_buf_free(&buf);

    assert_true(cql_encode_prepare(&buf, 4, "SELECT * FROM t WHERE k = ?"));
    bb_t body = {.n = 0};
    b_lstr(&body, "SELECT * FROM t WHERE k = ?");
    expect_frame(&buf, 4, 0x09, &body);
    cql_buf_free(&buf);
}

static const uint8_t UUID_BYTES[16] = {0x55, 0x0e, 0x84, 0x00, 0xe2, 0x9b, 0x41, 0xd4,
                                       0xa7, 0x16, 0x44, 0x66, 0x55, 0x44, 0x00, 0x0f};
static const uint8_t BLOB[3] = {0xde, 0xad, 0x00};
static const uint8_t PAGING[5] = {1, 2, 3, 4, 5};

/* One value of each type the client writes, and null and unset. */
static size_t sample_values(deta_cql_value_t *v) {
    size_t n = 0;
    v[n++] = deta_cql_text("héllo");
    v[n++] = deta_cql_int(-2);
    v[n++] = deta_cql_bigint(INT64_C(0x0102030405060708));
    v[n++] = deta_cql_timestamp_ms(INT64_C(1700000000123));
    v[n++] = deta_cql_bool(true);
    v[n++] = deta_cql_bool(false);
    assert_true(deta_cql_uuid_text("550e8400-e29b-41d4-a716-44665544000f", &v[n++]));
    v[n++] = deta_cql_blob(BLOB, sizeof BLOB);
    v[n++] = deta_cql_null();
    v[n++] = deta_cql_unset();
    v[n] = deta_cql_text("plain");
    v[n++].type = DETA_CQL_T_ASCII;
    v[n++] = deta_cql_text(NULL);
    return n;
}

/* The same values, serialized from the spec (section 6). */
static void b_sample_values(bb_t *b) {
    b_u16(b, 12);
    b_lstr(b, "héllo");
    b_i32(b, 4);
    b_i32(b, -2);
    b_i32(b, 8);
    b_i64(b, INT64_C(0x0102030405060708));
    b_i32(b, 8);
    b_i64(b, INT64_C(1700000000123));
    b_i32(b, 1);
    b_u8(b, 1);
    b_i32(b, 1);
    b_u8(b, 0);
    b_bytes(b, UUID_BYTES, 16);
    b_bytes(b, BLOB, 3);
    b_i32(b, -1);
    b_i32(b, -2);
    b_lstr(b, "plain");
    b_i32(b, -1);
}

static void test_query_all_flags(void **state) {
    (void)state;
    deta_cql_value_t v[16];
    size_t nv = sample_values(v);
    deta_cql_query_t q = {
        .cql = "SELECT x FROM t WHERE a = ?",
        .values = v,
        .nvalues = nv,
        .consistency = DETA_CQL_LOCAL_QUORUM,
        .has_serial = true,
        .serial_consistency = DETA_CQL_LOCAL_SERIAL,
        .page_size = 100,
        .paging_state = PAGING,
        .paging_state_len = sizeof PAGING,
        .has_timestamp = true,
        .timestamp_us = INT64_C(1700000000123456),
        .skip_metadata = true,
    };
    cql_buf_t buf = {0};
    assert_true(cql_encode_query(&buf, 7, &q));
    bb_t body = {.n = 0};
    b_lstr(&body, q.cql);
    b_u16(&body, 0x0006);
    b_u8(&body, 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x20);
    b_sample_values(&body);
    b_i32(&body, 100);
    b_bytes(&body, PAGING, 5);
    b_u16(&body, 0x0009);
    b_i64(&body, INT64_C(1700000000123456));
    expect_frame(&buf, 7, 0x07, &body);
    cql_buf_free(&buf);
}

static void test_query_no_flags(void **state) {
    (void)state;
    deta_cql_query_t q = {.cql = "SELECT now() FROM system.local", .consistency = DETA_CQL_ONE};
    cql_buf_t buf = {0};
    assert_true(cql_encode_query(&buf, 0, &q));
    bb_t body = {.n = 0};
    b_lstr(&body, q.cql);
    b_u16(&body, 1);
    b_u8(&body, 0);
    expect_frame(&buf, 0, 0x07, &body);
    cql_buf_free(&buf);

    /* each flag alone */
    struct {
        deta_cql_query_t q;
        uint8_t flag;
    } one[] = {
        {{.cql = "q", .skip_metadata = true}, 0x02},
        {{.cql = "q", .page_size = 5}, 0x04},
        {{.cql = "q", .paging_state = PAGING, .paging_state_len = 0}, 0x08},
        {{.cql = "q", .has_serial = true, .serial_consistency = DETA_CQL_SERIAL}, 0x10},
        {{.cql = "q", .has_timestamp = true, .timestamp_us = 0}, 0x20},
        {{.cql = "q", .page_size = -1}, 0x00},
    };
    for (size_t i = 0; i < sizeof one / sizeof *one; i++) {
        assert_true(cql_encode_query(&buf, 0, &one[i].q));
        assert_int_equal(buf.p[9 + 4 + 1 + 2], one[i].flag);
        cql_buf_free(&buf);
    }
}

static void test_execute(void **state) {
    (void)state;
    deta_cql_value_t v[16];
    size_t nv = sample_values(v);
    static const uint8_t id[16] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6};
    deta_cql_query_t q = {
        .cql = "ignored",
        .values = v,
        .nvalues = nv,
        .consistency = DETA_CQL_QUORUM,
        .page_size = 2,
        .skip_metadata = true,
        .has_timestamp = true,
        .timestamp_us = 42,
    };
    cql_buf_t buf = {0};
    assert_true(cql_encode_execute(&buf, 300, id, sizeof id, &q));
    bb_t body = {.n = 0};
    b_u16(&body, 16);
    b_raw(&body, id, 16);
    b_u16(&body, 0x0004);
    b_u8(&body, 0x01 | 0x02 | 0x04 | 0x20);
    b_sample_values(&body);
    b_i32(&body, 2);
    b_i64(&body, 42);
    expect_frame(&buf, 300, 0x0A, &body);
    cql_buf_free(&buf);
}

static void test_batch(void **state) {
    (void)state;
    deta_cql_value_t v1[] = {deta_cql_text("a"), deta_cql_int(1)};
    deta_cql_value_t v2[] = {deta_cql_null()};
    deta_cql_batch_item_t items[] = {
        {.cql = "INSERT INTO t (k, v) VALUES (?, ?)", .prepared = true, .values = v1, .nvalues = 2},
        {.cql = "DELETE FROM t WHERE k = ?", .prepared = false, .values = v2, .nvalues = 1},
        {.cql = "UPDATE t SET v = 1 WHERE k = 'x'", .prepared = false},
    };
    static const uint8_t id[4] = {0xca, 0xfe, 0xba, 0xbe};
    const uint8_t *ids[] = {id, NULL, NULL};
    size_t idlens[] = {4, 0, 0};
    deta_cql_batch_t b = {
        .type = DETA_CQL_BATCH_UNLOGGED,
        .items = items,
        .nitems = 3,
        .consistency = DETA_CQL_LOCAL_ONE,
        .has_serial = true,
        .serial_consistency = DETA_CQL_SERIAL,
        .has_timestamp = true,
        .timestamp_us = -5,
    };
    cql_buf_t buf = {0};
    assert_true(cql_encode_batch(&buf, 9, &b, ids, idlens));
    bb_t body = {.n = 0};
    b_u8(&body, 1);
    b_u16(&body, 3);
    b_u8(&body, 1);
    b_u16(&body, 4);
    b_raw(&body, id, 4);
    b_u16(&body, 2);
    b_lstr(&body, "a");
    b_i32(&body, 4);
    b_i32(&body, 1);
    b_u8(&body, 0);
    b_lstr(&body, items[1].cql);
    b_u16(&body, 1);
    b_i32(&body, -1);
    b_u8(&body, 0);
    b_lstr(&body, items[2].cql);
    b_u16(&body, 0);
    b_u16(&body, 0x000A);
    b_u8(&body, 0x30);
    b_u16(&body, 0x0008);
    b_i64(&body, -5);
    expect_frame(&buf, 9, 0x0D, &body);
    cql_buf_free(&buf);

    /* logged, no flags, text only */
    deta_cql_batch_t logged = {.type = DETA_CQL_BATCH_LOGGED, .items = items + 2, .nitems = 1,
                               .consistency = DETA_CQL_ONE};
    assert_true(cql_encode_batch(&buf, 0, &logged, NULL, NULL));
    body.n = 0;
    b_u8(&body, 0);
    b_u16(&body, 1);
    b_u8(&body, 0);
    b_lstr(&body, items[2].cql);
    b_u16(&body, 0);
    b_u16(&body, 1);
    b_u8(&body, 0);
    expect_frame(&buf, 0, 0x0D, &body);
    cql_buf_free(&buf);

    /* a prepared item without its id */
    assert_false(cql_encode_batch(&buf, 0, &b, NULL, NULL));
    assert_true(buf.failed);
    cql_buf_free(&buf);
}

static void test_encode_failures_keep_earlier_frames(void **state) {
    (void)state;
    cql_buf_t buf = {0};
    assert_true(cql_encode_options(&buf, 1));
    assert_int_equal(buf.len, 9);

    /* a negative stream is the server's */
    assert_false(cql_encode_options(&buf, -1));
    assert_true(buf.failed);
    assert_int_equal(buf.len, 9);
    /* a failed buffer stays failed */
    assert_false(cql_encode_options(&buf, 1));
    cql_buf_free(&buf);

    /* a [short bytes] id longer than 65535 */
    static uint8_t big[70000];
    deta_cql_query_t q = {.cql = "x", .consistency = DETA_CQL_ONE};
    assert_true(cql_encode_options(&buf, 1));
    assert_false(cql_encode_execute(&buf, 1, big, sizeof big, &q));
    assert_int_equal(buf.len, 9);
    cql_buf_free(&buf);

    /* a value of a type without an encoding */
    deta_cql_value_t v = deta_cql_int(1);
    v.type = DETA_CQL_T_DOUBLE;
    q.values = &v;
    q.nvalues = 1;
    assert_false(cql_encode_query(&buf, 1, &q));
    assert_int_equal(buf.len, 0);
    cql_buf_free(&buf);

    /* values announced but missing; no text */
    q.values = NULL;
    assert_false(cql_encode_query(&buf, 1, &q));
    cql_buf_free(&buf);
    deta_cql_query_t noq = {.cql = NULL};
    assert_false(cql_encode_query(&buf, 1, &noq));
    cql_buf_free(&buf);
    assert_false(cql_encode_prepare(&buf, 1, NULL));
    cql_buf_free(&buf);

    /* a STARTUP string longer than a [string] */
    char *longver = malloc(70000);
    assert_non_null(longver);
    memset(longver, 'x', 69999);
    longver[69999] = '\0';
    assert_false(cql_encode_startup(&buf, 1, longver));
    free(longver);
    cql_buf_free(&buf);

    /* two frames in a row */
    assert_true(cql_encode_options(&buf, 1));
    assert_true(cql_encode_startup(&buf, 2, "3.0.0"));
    assert_int_equal(buf.len, 9 + 9 + 22);
    assert_int_equal(buf.p[9 + 3], 2);
    cql_buf_free(&buf);
    cql_buf_free(NULL);
}

/* ---- headers ---- */

static void header(uint8_t h[9], unsigned version, unsigned flags, unsigned opcode,
                   uint32_t len) {
    h[0] = (uint8_t)version;
    h[1] = (uint8_t)flags;
    h[2] = 0x01;
    h[3] = 0x02;
    h[4] = (uint8_t)opcode;
    h[5] = (uint8_t)(len >> 24);
    h[6] = (uint8_t)(len >> 16);
    h[7] = (uint8_t)(len >> 8);
    h[8] = (uint8_t)len;
}

static void expect_header_refused(const uint8_t h[9], size_t max, const char *words) {
    cql_header_t out;
    char err[256] = "";
    assert_false(cql_header_decode(h, max, &out, err, sizeof err));
    if (!strstr(err, words))
        fail_msg("error \"%s\" lacks \"%s\"", err, words);
}

static void test_header(void **state) {
    (void)state;
    uint8_t h[9];
    cql_header_t out;
    char err[256];
    header(h, 0x84, 0x08 | 0x02, 0x08, 1000);
    assert_true(cql_header_decode(h, 1000, &out, err, sizeof err));
    assert_int_equal(out.version, 0x84);
    assert_int_equal(out.flags, 0x0A);
    assert_int_equal(out.stream, 0x0102);
    assert_int_equal(out.opcode, 0x08);
    assert_int_equal(out.length, 1000);

    /* EVENT's stream -1 */
    header(h, 0x84, 0, 0x0C, 0);
    h[2] = h[3] = 0xFF;
    assert_true(cql_header_decode(h, 0, &out, err, sizeof err));
    assert_int_equal(out.stream, -1);

    header(h, 0x84, 0, 0x08, 1001);
    expect_header_refused(h, 1000, "larger than the bound");
    header(h, 0x84, 0, 0x08, 0xFFFFFFFFu);
    expect_header_refused(h, 16u << 20, "larger than the bound");
    header(h, 0x04, 0, 0x08, 0);
    expect_header_refused(h, 1000, "version byte 0x04");
    header(h, 0x83, 0, 0x00, 0);
    expect_header_refused(h, 1000, "version byte 0x83");
    header(h, 0x85, 0, 0x00, 0);
    expect_header_refused(h, 1000, "version byte 0x85");
    header(h, 0x84, 0x01, 0x08, 10);
    expect_header_refused(h, 1000, "compressed");
    static const unsigned requests[] = {0x01, 0x04, 0x05, 0x07, 0x09, 0x0A, 0x0B, 0x0D, 0x0F, 0x11, 0xFF};
    for (size_t i = 0; i < sizeof requests / sizeof *requests; i++) {
        header(h, 0x84, 0, requests[i], 0);
        expect_header_refused(h, 1000, "not a response");
    }
    /* no errstr at all */
    header(h, 0x04, 0, 0x08, 0);
    assert_false(cql_header_decode(h, 1000, &out, NULL, 0));
}

/* ---- responses ---- */

/* Decodes body (a heap copy of exactly n bytes) with the given header fields. */
static bool decode(unsigned opcode, unsigned flags, const uint8_t *p, size_t n, cql_response_t *r,
                   char *err, size_t errsize) {
    cql_header_t h = {.version = 0x84, .flags = (uint8_t)flags, .opcode = (uint8_t)opcode,
                      .length = (uint32_t)n};
    uint8_t *body = NULL;
    if (n) {
        body = malloc(n);
        assert_non_null(body);
        memcpy(body, p, n);
    }
    return cql_response_decode(&h, body, r, err, errsize);
}

/* Every proper prefix of a valid body is refused, and never read past (ASan);
 * the whole body is accepted. */
static void check_prefixes(unsigned opcode, unsigned flags, const bb_t *b) {
    cql_response_t r;
    char err[512];
    for (size_t n = 0; n < b->n; n++) {
        err[0] = '\0';
        if (decode(opcode, flags, b->p, n, &r, err, sizeof err)) {
            cql_response_clear(&r);
            fail_msg("a prefix of %zu of %zu bytes was accepted (opcode 0x%02x)", n, b->n, opcode);
        }
        assert_true(err[0] != '\0');
        assert_null(r.result.body_);
        assert_null(r.supported);
        assert_null(r.token);
    }
    assert_true(decode(opcode, flags, b->p, b->n, &r, err, sizeof err));
    cql_response_clear(&r);
}

/* Decodes a valid body into *r, after checking its prefixes. */
static void decode_ok(unsigned opcode, unsigned flags, const bb_t *b, cql_response_t *r) {
    check_prefixes(opcode, flags, b);
    char err[512] = "";
    if (!decode(opcode, flags, b->p, b->n, r, err, sizeof err))
        fail_msg("refused: %s", err);
    assert_int_equal(r->opcode, opcode);
}

static void expect_refused(unsigned opcode, unsigned flags, const bb_t *b, const char *words) {
    cql_response_t r;
    char err[512] = "";
    if (decode(opcode, flags, b->p, b->n, &r, err, sizeof err)) {
        cql_response_clear(&r);
        fail_msg("accepted; expected a refusal with \"%s\"", words);
    }
    if (!strstr(err, words))
        fail_msg("error \"%s\" lacks \"%s\"", err, words);
}

static void test_ready_authenticate_supported(void **state) {
    (void)state;
    cql_response_t r;
    bb_t b = {.n = 0};
    char err[256];
    assert_true(decode(0x02, 0, NULL, 0, &r, err, sizeof err));
    assert_int_equal(r.opcode, 0x02);
    cql_response_clear(&r);

    b_str(&b, "org.apache.cassandra.auth.PasswordAuthenticator");
    decode_ok(0x03, 0, &b, &r);
    assert_string_equal(r.authenticator, "org.apache.cassandra.auth.PasswordAuthenticator");
    cql_response_clear(&r);

    b.n = 0;
    b_u16(&b, 3);
    b_str(&b, "CQL_VERSION");
    b_u16(&b, 1);
    b_str(&b, "3.4.5");
    b_str(&b, "COMPRESSION");
    b_u16(&b, 2);
    b_str(&b, "snappy");
    b_str(&b, "lz4");
    b_str(&b, "EMPTY");
    b_u16(&b, 0);
    decode_ok(0x06, 0, &b, &r);
    assert_string_equal(r.supported, "CQL_VERSION=3.4.5;COMPRESSION=snappy,lz4;EMPTY=");
    cql_response_clear(&r);

    b.n = 0;
    b_u16(&b, 0);
    decode_ok(0x06, 0, &b, &r);
    assert_string_equal(r.supported, "");
    cql_response_clear(&r);
}

static void test_auth_tokens(void **state) {
    (void)state;
    cql_response_t r;
    bb_t b = {.n = 0};
    b_bytes(&b, "tok\0en", 6);
    decode_ok(0x0E, 0, &b, &r);
    assert_int_equal(r.token_len, 6);
    assert_memory_equal(r.token, "tok\0en", 6);
    cql_response_clear(&r);

    b.n = 0;
    b_i32(&b, -1);
    decode_ok(0x10, 0, &b, &r);
    assert_int_equal(r.token_len, -1);
    assert_null(r.token);
    cql_response_clear(&r);

    b.n = 0;
    b_i32(&b, 0);
    decode_ok(0x10, 0, &b, &r);
    assert_int_equal(r.token_len, 0);
    assert_non_null(r.token);
    cql_response_clear(&r);
}

static void test_event_ignored(void **state) {
    (void)state;
    cql_response_t r;
    char err[256];
    bb_t b = {.n = 0};
    b_str(&b, "STATUS_CHANGE");
    b_str(&b, "UP");
    b_u8(&b, 4);
    b_raw(&b, "\x7f\0\0\1", 4);
    b_i32(&b, 9042);
    assert_true(decode(0x0C, 0, b.p, b.n, &r, err, sizeof err));
    assert_int_equal(r.opcode, 0x0C);
    assert_null(r.result.body_);
    cql_response_clear(&r);
}

/* An ERROR body: code, message, then what the caller appends. */
static void b_error(bb_t *b, int32_t code, const char *msg) {
    b->n = 0;
    b_i32(b, code);
    b_str(b, msg);
}

static void test_errors(void **state) {
    (void)state;
    cql_response_t r;
    bb_t b;

    static const int32_t plain[] = {0x0000, 0x000A, 0x0100, 0x1001, 0x1002, 0x1003,
                                    0x2000, 0x2100, 0x2200, 0x2300, 0x7777};
    for (size_t i = 0; i < sizeof plain / sizeof *plain; i++) {
        b_error(&b, plain[i], "went wrong");
        decode_ok(0x00, 0, &b, &r);
        assert_int_equal(r.error.code, plain[i]);
        assert_string_equal(r.error.message, "went wrong");
        assert_int_equal(r.error.consistency, -1);
        cql_response_clear(&r);
    }

    b_error(&b, 0x1000, "Cannot achieve consistency level QUORUM");
    b_u16(&b, 4);
    b_i32(&b, 2);
    b_i32(&b, 1);
    decode_ok(0x00, 0, &b, &r);
    assert_int_equal(r.error.code, DETA_CQL_E_UNAVAILABLE);
    assert_int_equal(r.error.consistency, 4);
    assert_int_equal(r.error.required, 2);
    assert_int_equal(r.error.alive, 1);
    cql_response_clear(&r);

    b_error(&b, 0x1100, "wt");
    b_u16(&b, 6);
    b_i32(&b, 1);
    b_i32(&b, 2);
    b_str(&b, "BATCH_LOG");
    decode_ok(0x00, 0, &b, &r);
    assert_int_equal(r.error.consistency, 6);
    assert_int_equal(r.error.received, 1);
    assert_int_equal(r.error.blockfor, 2);
    assert_string_equal(r.error.write_type, "BATCH_LOG");
    cql_response_clear(&r);

    b_error(&b, 0x1200, "rt");
    b_u16(&b, 1);
    b_i32(&b, 0);
    b_i32(&b, 1);
    b_u8(&b, 1);
    decode_ok(0x00, 0, &b, &r);
    assert_int_equal(r.error.consistency, 1);
    assert_int_equal(r.error.received, 0);
    assert_int_equal(r.error.blockfor, 1);
    assert_true(r.error.data_present);
    cql_response_clear(&r);

    b_error(&b, 0x1300, "rf");
    b_u16(&b, 5);
    b_i32(&b, 2);
    b_i32(&b, 3);
    b_i32(&b, 1);
    b_u8(&b, 0);
    decode_ok(0x00, 0, &b, &r);
    assert_int_equal(r.error.consistency, 5);
    assert_int_equal(r.error.received, 2);
    assert_int_equal(r.error.blockfor, 3);
    assert_int_equal(r.error.numfailures, 1);
    assert_false(r.error.data_present);
    cql_response_clear(&r);

    b_error(&b, 0x1400, "ff");
    b_str(&b, "ks");
    b_str(&b, "fn");
    b_u16(&b, 2);
    b_str(&b, "int");
    b_str(&b, "text");
    decode_ok(0x00, 0, &b, &r);
    assert_string_equal(r.error.keyspace, "ks");
    assert_string_equal(r.error.table, "fn");
    cql_response_clear(&r);

    b_error(&b, 0x1500, "wf");
    b_u16(&b, 7);
    b_i32(&b, 1);
    b_i32(&b, 3);
    b_i32(&b, 2);
    b_str(&b, "UNLOGGED_BATCH");
    decode_ok(0x00, 0, &b, &r);
    assert_int_equal(r.error.consistency, 7);
    assert_int_equal(r.error.received, 1);
    assert_int_equal(r.error.blockfor, 3);
    assert_int_equal(r.error.numfailures, 2);
    assert_string_equal(r.error.write_type, "UNLOGGED_BATCH");
    cql_response_clear(&r);

    b_error(&b, 0x2400, "exists");
    b_str(&b, "shop");
    b_str(&b, "");
    decode_ok(0x00, 0, &b, &r);
    assert_int_equal(deta_cql_error_class(r.error.code), DETA_ERR_CONFLICT);
    assert_string_equal(r.error.keyspace, "shop");
    assert_string_equal(r.error.table, "");
    cql_response_clear(&r);

    b_error(&b, 0x2500, "unprepared");
    b_u16(&b, 16);
    b_raw(&b, UUID_BYTES, 16);
    decode_ok(0x00, 0, &b, &r);
    assert_int_equal(r.error.unprepared_id_len, 16);
    assert_memory_equal(r.error.unprepared_id, UUID_BYTES, 16);
    cql_response_clear(&r);

    /* an id longer than the buffer is kept cut */
    b_error(&b, 0x2500, "");
    b_u16(&b, 100);
    uint8_t id[100];
    for (size_t i = 0; i < sizeof id; i++)
        id[i] = (uint8_t)i;
    b_raw(&b, id, sizeof id);
    decode_ok(0x00, 0, &b, &r);
    assert_int_equal(r.error.unprepared_id_len, sizeof r.error.unprepared_id);
    assert_memory_equal(r.error.unprepared_id, id, sizeof r.error.unprepared_id);
    cql_response_clear(&r);

    /* a message longer than its buffer is cut */
    b_error(&b, 0x2200, "");
    b.n -= 2;
    b_u16(&b, 3000);
    for (int i = 0; i < 3000; i++)
        b_u8(&b, 'm');
    decode_ok(0x00, 0, &b, &r);
    assert_int_equal(strlen(r.error.message), sizeof r.error.message - 1);
    cql_response_clear(&r);
}

/* A column spec without the global table spec. */
static void b_colspec(bb_t *b, const char *ks, const char *table, const char *name, unsigned type) {
    b_str(b, ks);
    b_str(b, table);
    b_str(b, name);
    b_u16(b, type);
}

static void test_result_void_keyspace_schema(void **state) {
    (void)state;
    cql_response_t r;
    bb_t b = {.n = 0};
    b_i32(&b, 1);
    decode_ok(0x08, 0, &b, &r);
    assert_int_equal(r.result.kind, DETA_CQL_RESULT_VOID);
    cql_response_clear(&r);

    b.n = 0;
    b_i32(&b, 3);
    b_str(&b, "deta");
    decode_ok(0x08, 0, &b, &r);
    assert_int_equal(r.result.kind, DETA_CQL_RESULT_SET_KEYSPACE);
    assert_string_equal(r.result.keyspace, "deta");
    cql_response_clear(&r);

    static const struct {
        const char *change, *target, *name;
        int nargs;
    } sc[] = {
        {"CREATED", "KEYSPACE", NULL, -1},   {"UPDATED", "TABLE", "orders", -1},
        {"DROPPED", "TYPE", "address", -1},  {"CREATED", "FUNCTION", "f", 2},
        {"CREATED", "AGGREGATE", "agg", 0},
    };
    for (size_t i = 0; i < sizeof sc / sizeof *sc; i++) {
        b.n = 0;
        b_i32(&b, 5);
        b_str(&b, sc[i].change);
        b_str(&b, sc[i].target);
        b_str(&b, "deta");
        if (sc[i].name)
            b_str(&b, sc[i].name);
        if (sc[i].nargs >= 0) {
            b_u16(&b, (unsigned)sc[i].nargs);
            for (int k = 0; k < sc[i].nargs; k++)
                b_str(&b, "int");
        }
        decode_ok(0x08, 0, &b, &r);
        assert_int_equal(r.result.kind, DETA_CQL_RESULT_SCHEMA_CHANGE);
        assert_string_equal(r.result.change, sc[i].change);
        assert_string_equal(r.result.target, sc[i].target);
        assert_string_equal(r.result.keyspace, "deta");
        assert_string_equal(r.result.name, sc[i].name ? sc[i].name : "");
        cql_response_clear(&r);
    }
}

static void test_result_rows(void **state) {
    (void)state;
    cql_response_t r;
    bb_t b = {.n = 0};
    /* global table spec, more pages */
    b_i32(&b, 2);
    b_i32(&b, 0x0001 | 0x0002);
    b_i32(&b, 3);
    b_bytes(&b, PAGING, 5);
    b_str(&b, "deta");
    b_str(&b, "orders");
    b_str(&b, "id");
    b_u16(&b, 0x000C);
    b_str(&b, "total");
    b_u16(&b, 0x0009);
    b_str(&b, "tags");
    b_u16(&b, 0x0021); /* map<text, list<int>> */
    b_u16(&b, 0x000D);
    b_u16(&b, 0x0020);
    b_u16(&b, 0x0009);
    b_i32(&b, 2);
    b_bytes(&b, UUID_BYTES, 16);
    b_i32(&b, 4);
    b_i32(&b, 1234);
    b_i32(&b, -1);
    b_bytes(&b, UUID_BYTES, 16);
    b_i32(&b, 0);
    b_bytes(&b, "xyz", 3);
    decode_ok(0x08, 0, &b, &r);
    deta_cql_result_t *res = &r.result;
    assert_int_equal(res->kind, DETA_CQL_RESULT_ROWS);
    assert_int_equal(res->ncolumns, 3);
    assert_int_equal(res->nrows, 2);
    assert_true(res->has_more_pages);
    assert_int_equal(res->paging_state_len, 5);
    assert_memory_equal(res->paging_state, PAGING, 5);
    assert_string_equal(res->columns[0].keyspace, "deta");
    assert_string_equal(res->columns[2].table, "orders");
    assert_string_equal(res->columns[1].name, "total");
    assert_int_equal(res->columns[0].type.type, DETA_CQL_T_UUID);
    assert_int_equal(res->columns[2].type.type, DETA_CQL_T_MAP);
    assert_int_equal(res->columns[2].type.sub[0], DETA_CQL_T_VARCHAR);
    assert_int_equal(res->columns[2].type.sub[1], DETA_CQL_T_LIST);
    assert_int_equal(res->cells[1].len, 4);
    assert_int_equal(res->cells[2].len, -1);
    assert_null(res->cells[2].data);
    assert_int_equal(res->cells[4].len, 0);
    assert_memory_equal(res->cells[5].data, "xyz", 3);
    int32_t total;
    char uuid[37];
    assert_int_equal(deta_cql_get_int(res, 0, 1, &total, NULL, NULL, 0), DETA_OK);
    assert_int_equal(total, 1234);
    assert_int_equal(deta_cql_get_uuid(res, 1, 0, uuid, NULL, NULL, 0), DETA_OK);
    assert_string_equal(uuid, "550e8400-e29b-41d4-a716-44665544000f");
    cql_response_clear(&r);

    /* per-column table specs, types of every kind in the option */
    b.n = 0;
    b_i32(&b, 2);
    b_i32(&b, 0);
    b_i32(&b, 6);
    b_colspec(&b, "k1", "t1", "a", 0x0000);
    b_str(&b, "org.apache.cassandra.db.marshal.DurationType");
    b_colspec(&b, "k2", "t2", "b", 0x0022); /* set<timeuuid> */
    b_u16(&b, 0x000F);
    b_colspec(&b, "k3", "t3", "c", 0x0030); /* udt address {street text, zip int} */
    b_str(&b, "k3");
    b_str(&b, "address");
    b_u16(&b, 2);
    b_str(&b, "street");
    b_u16(&b, 0x000D);
    b_str(&b, "zip");
    b_u16(&b, 0x0009);
    b_colspec(&b, "k4", "t4", "d", 0x0031); /* tuple<int, frozen<list<text>>> */
    b_u16(&b, 2);
    b_u16(&b, 0x0009);
    b_u16(&b, 0x0020);
    b_u16(&b, 0x000D);
    b_colspec(&b, "k5", "t5", "e", 0x0014);
    b_colspec(&b, "k6", "t6", "f", 0x0001);
    b_i32(&b, 1);
    for (int i = 0; i < 6; i++)
        b_i32(&b, -1);
    decode_ok(0x08, 0, &b, &r);
    res = &r.result;
    assert_false(res->has_more_pages);
    assert_null(res->paging_state);
    assert_string_equal(res->columns[0].keyspace, "k1");
    assert_string_equal(res->columns[5].table, "t6");
    assert_int_equal(res->columns[0].type.type, DETA_CQL_T_CUSTOM);
    assert_int_equal(res->columns[1].type.type, DETA_CQL_T_SET);
    assert_int_equal(res->columns[1].type.sub[0], DETA_CQL_T_TIMEUUID);
    assert_int_equal(res->columns[2].type.type, DETA_CQL_T_UDT);
    assert_int_equal(res->columns[3].type.type, DETA_CQL_T_TUPLE);
    assert_int_equal(res->columns[4].type.type, DETA_CQL_T_TINYINT);
    assert_int_equal(res->columns[5].type.type, DETA_CQL_T_ASCII);
    assert_int_equal(res->nrows, 1);
    cql_response_clear(&r);

    /* NO_METADATA with more pages; trailing bytes are ignored */
    b.n = 0;
    b_i32(&b, 2);
    b_i32(&b, 0x0004 | 0x0002);
    b_i32(&b, 2);
    b_bytes(&b, PAGING, 0);
    b_i32(&b, 1);
    b_bytes(&b, "ab", 2);
    b_i32(&b, -1);
    decode_ok(0x08, 0, &b, &r);
    assert_null(r.result.columns);
    assert_int_equal(r.result.ncolumns, 2);
    assert_true(r.result.has_more_pages);
    assert_int_equal(r.result.paging_state_len, 0);
    assert_non_null(r.result.paging_state);
    assert_int_equal(r.result.cells[0].len, 2);
    cql_response_clear(&r);
    b_raw(&b, "trailing", 8);
    char err[256];
    assert_true(decode(0x08, 0, b.p, b.n, &r, err, sizeof err));
    cql_response_clear(&r);

    /* no rows, no columns */
    b.n = 0;
    b_i32(&b, 2);
    b_i32(&b, 0);
    b_i32(&b, 0);
    b_i32(&b, 0);
    decode_ok(0x08, 0, &b, &r);
    assert_int_equal(r.result.nrows, 0);
    assert_null(r.result.cells);
    cql_response_clear(&r);
}

static void test_result_prepared(void **state) {
    (void)state;
    cql_response_t r;
    bb_t b = {.n = 0};
    b_i32(&b, 4);
    b_u16(&b, 16);
    b_raw(&b, UUID_BYTES, 16);
    b_i32(&b, 0x0001);
    b_i32(&b, 3);
    b_i32(&b, 2);
    b_u16(&b, 2);
    b_u16(&b, 0);
    b_str(&b, "deta");
    b_str(&b, "orders");
    b_str(&b, "region");
    b_u16(&b, 0x000D);
    b_str(&b, "day");
    b_u16(&b, 0x0011);
    b_str(&b, "id");
    b_u16(&b, 0x000C);
    /* result metadata: two columns, per-column specs */
    b_i32(&b, 0);
    b_i32(&b, 2);
    b_colspec(&b, "deta", "orders", "status", 0x000D);
    b_colspec(&b, "deta", "orders", "updated", 0x000B);
    decode_ok(0x08, 0, &b, &r);
    deta_cql_result_t *res = &r.result;
    assert_int_equal(res->kind, DETA_CQL_RESULT_PREPARED);
    assert_int_equal(res->prepared_id_len, 16);
    assert_memory_equal(res->prepared_id, UUID_BYTES, 16);
    assert_int_equal(res->nbind, 3);
    assert_string_equal(res->bind[0].keyspace, "deta");
    assert_string_equal(res->bind[1].name, "day");
    assert_int_equal(res->bind[1].type.type, DETA_CQL_T_DATE);
    assert_int_equal(res->npk, 2);
    assert_int_equal(res->pk[0], 2);
    assert_int_equal(res->pk[1], 0);
    assert_int_equal(res->ncolumns, 2);
    assert_string_equal(res->columns[1].name, "updated");
    assert_int_equal(res->columns[1].type.type, DETA_CQL_T_TIMESTAMP);
    cql_response_clear(&r);

    /* an INSERT: no partition key markers, NO_METADATA result metadata */
    b.n = 0;
    b_i32(&b, 4);
    b_u16(&b, 2);
    b_raw(&b, "id", 2);
    b_i32(&b, 0);
    b_i32(&b, 1);
    b_i32(&b, 0);
    b_colspec(&b, "deta", "t", "v", 0x0003);
    b_i32(&b, 0x0004);
    b_i32(&b, 0);
    decode_ok(0x08, 0, &b, &r);
    assert_int_equal(r.result.nbind, 1);
    assert_int_equal(r.result.npk, 0);
    assert_null(r.result.pk);
    assert_int_equal(r.result.ncolumns, 0);
    cql_response_clear(&r);
}

static void test_frame_flags(void **state) {
    (void)state;
    cql_response_t r;
    bb_t b = {.n = 0};
    b_raw(&b, UUID_BYTES, 16); /* tracing id */
    b_u16(&b, 2);              /* warnings */
    b_str(&b, "Aggregation query used without partition key");
    b_str(&b, "second");
    b_u16(&b, 1); /* custom payload */
    b_str(&b, "k");
    b_bytes(&b, "v", 1);
    b_i32(&b, 1); /* Void */
    decode_ok(0x08, 0x02 | 0x04 | 0x08, &b, &r);
    assert_int_equal(r.result.kind, DETA_CQL_RESULT_VOID);
    assert_string_equal(r.result.warnings,
                        "Aggregation query used without partition key; second");
    cql_response_clear(&r);

    /* warnings on something else than a RESULT are dropped */
    b.n = 0;
    b_u16(&b, 1);
    b_str(&b, "w");
    decode_ok(0x02, 0x08, &b, &r);
    assert_null(r.result.warnings);
    cql_response_clear(&r);

    /* the tracing id alone, before an ERROR */
    b.n = 0;
    b_raw(&b, UUID_BYTES, 16);
    b_i32(&b, 0x2200);
    b_str(&b, "bad");
    decode_ok(0x00, 0x02, &b, &r);
    assert_string_equal(r.error.message, "bad");
    cql_response_clear(&r);

    /* a compression flag that reached the decoder anyway */
    b.n = 0;
    b_i32(&b, 1);
    expect_refused(0x08, 0x01, &b, "compressed");
}

static void test_bad_bodies(void **state) {
    (void)state;
    bb_t b = {.n = 0};

    b_i32(&b, 9);
    expect_refused(0x08, 0, &b, "unknown result kind");

    /* negative counts */
    b.n = 0;
    b_i32(&b, 2);
    b_i32(&b, 0);
    b_i32(&b, -1);
    expect_refused(0x08, 0, &b, "negative column count");
    b.n = 0;
    b_i32(&b, 2);
    b_i32(&b, 0x4);
    b_i32(&b, 1);
    b_i32(&b, -3);
    expect_refused(0x08, 0, &b, "negative row count");

    /* counts the body cannot hold: refused before anything is allocated */
    b.n = 0;
    b_i32(&b, 2);
    b_i32(&b, 0x1);
    b_i32(&b, INT32_MAX);
    b_str(&b, "k");
    b_str(&b, "t");
    b_str(&b, "c");
    b_u16(&b, 9);
    expect_refused(0x08, 0, &b, "column specs cannot fit");
    b.n = 0;
    b_i32(&b, 2);
    b_i32(&b, 0x4);
    b_i32(&b, 1000);
    b_i32(&b, INT32_MAX);
    b_i32(&b, 0);
    expect_refused(0x08, 0, &b, "rows of 1000 columns cannot fit");
    b.n = 0;
    b_i32(&b, 2);
    b_i32(&b, 0x4);
    b_i32(&b, INT32_MAX);
    b_i32(&b, INT32_MAX);
    expect_refused(0x08, 0, &b, "cannot fit");
    b.n = 0;
    b_i32(&b, 4);
    b_u16(&b, 0);
    b_i32(&b, 0);
    b_i32(&b, 1);
    b_i32(&b, INT32_MAX);
    expect_refused(0x08, 0, &b, "partition key indexes cannot fit");
    b.n = 0;
    b_i32(&b, 4);
    b_u16(&b, 0);
    b_i32(&b, 0);
    b_i32(&b, 1);
    b_i32(&b, 1);
    b_u16(&b, 1);
    expect_refused(0x08, 0, &b, "beyond the 1 bind markers");
    b.n = 0;
    b_i32(&b, 4);
    b_u16(&b, 0);
    b_i32(&b, 0);
    b_i32(&b, -1);
    expect_refused(0x08, 0, &b, "negative bind marker count");

    /* more pages, but a null paging state */
    b.n = 0;
    b_i32(&b, 2);
    b_i32(&b, 0x2 | 0x4);
    b_i32(&b, 0);
    b_i32(&b, -1);
    b_i32(&b, 0);
    expect_refused(0x08, 0, &b, "null paging state");

    /* unknown column type, 0x000A (text before v3) included */
    static const unsigned unknown[] = {0x000A, 0x0015, 0x0023, 0x0032, 0xFFFF};
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        b.n = 0;
        b_i32(&b, 2);
        b_i32(&b, 0x1);
        b_i32(&b, 1);
        b_str(&b, "k");
        b_str(&b, "t");
        b_str(&b, "c");
        b_u16(&b, unknown[i]);
        b_i32(&b, 0);
        expect_refused(0x08, 0, &b, "unknown column type");
    }

    /* types nested too deep */
    b.n = 0;
    b_i32(&b, 2);
    b_i32(&b, 0x1);
    b_i32(&b, 1);
    b_str(&b, "k");
    b_str(&b, "t");
    b_str(&b, "c");
    for (int i = 0; i < 40; i++)
        b_u16(&b, 0x0020);
    b_u16(&b, 0x0009);
    b_i32(&b, 0);
    expect_refused(0x08, 0, &b, "nested deeper");

    /* a name longer than its buffer */
    b.n = 0;
    b_i32(&b, 3);
    b_u16(&b, 300);
    for (int i = 0; i < 300; i++)
        b_u8(&b, 'k');
    expect_refused(0x08, 0, &b, "longer than 255");
    b.n = 0;
    b_i32(&b, 5);
    b_str(&b, "CREATED_OR_SOMETHING_LONG");
    b_str(&b, "KEYSPACE");
    b_str(&b, "k");
    expect_refused(0x08, 0, &b, "schema change type");

    /* a body the header announces but that is missing */
    cql_header_t h = {.version = 0x84, .opcode = 0x08, .length = 4};
    cql_response_t r;
    char err[256] = "";
    assert_false(cql_response_decode(&h, NULL, &r, err, sizeof err));
    assert_non_null(strstr(err, "no body"));
    /* an opcode the header check would have refused */
    b.n = 0;
    expect_refused(0x07, 0, &b, "not a response");
    /* no errstr */
    assert_false(cql_response_decode(&h, NULL, &r, NULL, 0));
    cql_response_clear(&r);
    cql_response_clear(NULL);
}

/* A big-endian [int] or [short] at p. */
static uint8_t *w32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
    return p + 4;
}
static uint8_t *w16(uint8_t *p, unsigned v) {
    p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v;
    return p + 2;
}

/* A Rows body (kind 2, Global_tables_spec "k"."t") of n columns named "" of
 * type int, and no rows; or a Prepared body (kind 4, id "i") of n such bind
 * markers and no result metadata. Each column takes 4 bytes of the body. */
static uint8_t *many_columns(bool prepared, size_t n, size_t *len) {
    uint8_t *body = malloc(64 + 4 * n), *w = body;
    assert_non_null(body);
    w = w32(w, prepared ? 4 : 2);
    if (prepared) {
        w = w16(w, 1);
        *w++ = 'i';
    }
    w = w32(w, 0x1);
    w = w32(w, (uint32_t)n);
    if (prepared)
        w = w32(w, 0); /* no partition key indexes */
    w = w16(w, 1);
    *w++ = 'k';
    w = w16(w, 1);
    *w++ = 't';
    for (size_t i = 0; i < n; i++) {
        w = w16(w, 0);
        w = w16(w, 0x0009);
    }
    if (prepared) {
        w = w32(w, 0x4); /* result metadata: No_metadata, 0 columns */
        w = w32(w, 0);
    } else {
        w = w32(w, 0); /* no rows */
    }
    *len = (size_t)(w - body);
    return body;
}

/* Each column spec takes 4 bytes of a body and 776 bytes of memory (three
 * names of DETA_CQL_NAME_MAX): a count is bounded by what a [short] can bind
 * (65535), not only by the body, or a 16 MiB frame would take 3 GiB. */
static void test_column_count_bound(void **state) {
    (void)state;
    for (int prepared = 0; prepared < 2; prepared++) {
        size_t len;
        cql_response_t r;
        char err[256] = "";
        uint8_t *body = many_columns(prepared, 65535, &len);
        cql_header_t h = {.version = 0x84, .opcode = 0x08, .length = (uint32_t)len};
        if (!cql_response_decode(&h, body, &r, err, sizeof err))
            fail_msg("65535 columns refused: %s", err);
        assert_int_equal(prepared ? r.result.nbind : r.result.ncolumns, 65535);
        cql_response_clear(&r);
        body = many_columns(prepared, 65536, &len);
        h.length = (uint32_t)len;
        if (cql_response_decode(&h, body, &r, err, sizeof err)) {
            cql_response_clear(&r);
            fail_msg("65536 columns accepted (prepared %d)", prepared);
        }
        if (!strstr(err, "more than 65535"))
            fail_msg("error \"%s\" lacks \"more than 65535\"", err);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_startup),
        cmocka_unit_test(test_auth_response),
        cmocka_unit_test(test_options_and_prepare),
        cmocka_unit_test(test_query_all_flags),
        cmocka_unit_test(test_query_no_flags),
        cmocka_unit_test(test_execute),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_encode_failures_keep_earlier_frames),
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_ready_authenticate_supported),
        cmocka_unit_test(test_auth_tokens),
        cmocka_unit_test(test_event_ignored),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_result_void_keyspace_schema),
        cmocka_unit_test(test_result_rows),
        cmocka_unit_test(test_result_prepared),
        cmocka_unit_test(test_frame_flags),
        cmocka_unit_test(test_bad_bodies),
        cmocka_unit_test(test_column_count_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
