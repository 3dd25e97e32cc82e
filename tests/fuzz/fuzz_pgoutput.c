/*
 * fuzz_pgoutput.c - libFuzzer target of the logical replication stream's parsers
 * (lib/src/pgoutput.c), which read what the server sends the outbox relay. Each
 * input is taken whole, from a heap buffer of exactly its size, as:
 *   - a CopyData message of the stream (deta_repl_frame_parse): accepted exactly
 *     when the plain rule says ('w' and at least 25 bytes; 'k', 18 bytes, its
 *     last 0 or 1), its fields the big-endian numbers at their places, its data
 *     the rest of the frame; a refusal leaves the frame zeroed; the data of a
 *     'w' frame is parsed as below too;
 *   - a pgoutput message (deta_pgo_parse): a refusal leaves the message zeroed;
 *     an accepted one is of a known kind and whole (cut by a byte, or with a
 *     byte more, it is refused); Begin, Commit, Insert, Update and Delete
 *     written again from the fields parsed are the input's bytes; a Relation's
 *     names lie where the format puts them, inside the input, NUL-terminated and
 *     shorter than DETA_PGO_NAME_MAX;
 *   - a WAL position as text (cut at its first NUL): accepted exactly by the
 *     plain rule (1 to 8 hex digits, '/', 1 to 8 hex digits), with the value
 *     those digits give, and formatted back to text that gives it again;
 * and its first bytes as numbers: a position formatted and parsed back, a
 * Standby status update read back, Postgres time to and from Unix milliseconds
 * against 128-bit arithmetic.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "pgoutput.h"

#define EPOCH_MS INT64_C(946684800000)

static uint64_t be(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static bool zeroed(const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

/* ---- writing messages again ---- */

typedef struct out {
    uint8_t *b;
    size_t n, cap;
} out_t;

static void put(out_t *o, uint64_t v, size_t bytes) {
    for (size_t i = 0; i < bytes; i++)
        if (o->n < o->cap)
            o->b[o->n++] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
        else
            o->n = o->cap + 1; /* too long: cannot equal the input */
}

static void put_tuple(out_t *o, const deta_pgo_tuple_t *t) {
    put(o, (uint16_t)t->ncols, 2);
    for (int i = 0; i < t->ncols; i++) {
        const deta_pgo_value_t *v = &t->cols[i];
        FUZZ_CHECK(v->kind == 'n' || v->kind == 'u' || v->kind == 't');
        put(o, (uint8_t)v->kind, 1);
        if (v->kind != 't') {
            FUZZ_CHECK(v->data == NULL && v->len == 0);
            continue;
        }
        put(o, v->len, 4);
        for (uint32_t j = 0; j < v->len; j++)
            put(o, v->data[j], 1);
    }
}

/* The message m written again; the update's and delete's old-row marker ('K'
 * or 'O', not kept by the parser) is the input's. */
static void check_rewritten(const uint8_t *buf, size_t len, const deta_pgo_msg_t *m) {
    uint8_t *again = malloc(len);
    FUZZ_CHECK(again != NULL);
    out_t o = {again, 0, len};
    put(&o, (uint8_t)m->kind, 1);
    switch (m->kind) {
    case 'B':
        put(&o, m->u.begin.final_lsn, 8);
        put(&o, (uint64_t)m->u.begin.commit_time, 8);
        put(&o, m->u.begin.xid, 4);
        break;
    case 'C':
        put(&o, m->u.commit.flags, 1);
        put(&o, m->u.commit.commit_lsn, 8);
        put(&o, m->u.commit.end_lsn, 8);
        put(&o, (uint64_t)m->u.commit.commit_time, 8);
        break;
    case 'I':
    case 'U':
    case 'D':
        put(&o, m->u.change.relid, 4);
        FUZZ_CHECK(m->kind != 'I' || !m->u.change.has_old);
        FUZZ_CHECK(m->kind != 'D' || (m->u.change.has_old && m->u.change.tuple.ncols == 0));
        if (m->u.change.has_old) {
            FUZZ_CHECK(buf[5] == 'K' || buf[5] == 'O');
            put(&o, buf[5], 1);
            put_tuple(&o, &m->u.change.old);
        } else {
            FUZZ_CHECK(m->u.change.old.ncols == 0);
        }
        if (m->kind != 'D') {
            put(&o, 'N', 1);
            put_tuple(&o, &m->u.change.tuple);
        }
        break;
    default:
        free(again);
        return;
    }
    FUZZ_CHECK(o.n == len && memcmp(again, buf, len) == 0);
    free(again);
}

/* A name of the message at offset at: inside it, NUL-terminated, short enough;
 * returns the offset after its NUL. */
static size_t check_name(const char *name, const uint8_t *buf, size_t len, size_t at) {
    FUZZ_CHECK(at < len && (const uint8_t *)name == buf + at);
    const uint8_t *nul = memchr(buf + at, '\0', len - at);
    FUZZ_CHECK(nul != NULL && (size_t)(nul - (buf + at)) < DETA_PGO_NAME_MAX);
    return (size_t)(nul - buf) + 1;
}

static void check_relation(const uint8_t *buf, size_t len, const deta_pgo_msg_t *m) {
    FUZZ_CHECK(len >= 5 && m->u.relation.oid == be(buf + 1, 4));
    size_t at = check_name(m->u.relation.nspname, buf, len, 5);
    at = check_name(m->u.relation.relname, buf, len, at);
    FUZZ_CHECK(len - at >= 3 && (char)buf[at] == m->u.relation.replident);
    FUZZ_CHECK(m->u.relation.replident && strchr("dnfi", m->u.relation.replident));
    FUZZ_CHECK((int)be(buf + at + 1, 2) == m->u.relation.ncols);
    FUZZ_CHECK(m->u.relation.ncols >= 0 && m->u.relation.ncols <= DETA_PGO_MAX_COLS);
    at += 3;
    for (int i = 0; i < m->u.relation.ncols; i++) { /* flags, name, type, typmod */
        at = check_name(m->u.relation.colnames[i], buf, len, at + 1) + 8;
        FUZZ_CHECK(at <= len);
    }
    FUZZ_CHECK(at == len);
}

static void check_message(const uint8_t *data, size_t size) {
    uint8_t *buf = malloc(size ? size : 1);
    FUZZ_CHECK(buf != NULL);
    if (size)
        memcpy(buf, data, size);
    deta_pgo_msg_t m, again;
    memset(&m, 0x5a, sizeof m);
    int rc = deta_pgo_parse(buf, size, &m);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1 && zeroed(&m, sizeof m));
        free(buf);
        return;
    }
    FUZZ_CHECK(size > 0 && m.kind == (char)buf[0] && strchr("BCRIUDTOYM", m.kind));
    /* whole: a byte less or a byte more is not a message */
    FUZZ_CHECK(deta_pgo_parse(buf, size - 1, &again) == -1);
    uint8_t *more = malloc(size + 1);
    FUZZ_CHECK(more != NULL);
    memcpy(more, buf, size);
    more[size] = buf[size - 1];
    FUZZ_CHECK(deta_pgo_parse(more, size + 1, &again) == -1);
    free(more);
    if (m.kind == 'B')
        FUZZ_CHECK(size == 21);
    if (m.kind == 'C')
        FUZZ_CHECK(size == 26);
    if (m.kind == 'R')
        check_relation(buf, size, &m);
    check_rewritten(buf, size, &m);
    free(buf);
}

static void check_frame(const uint8_t *data, size_t size) {
    uint8_t *buf = malloc(size ? size : 1);
    FUZZ_CHECK(buf != NULL);
    if (size)
        memcpy(buf, data, size);
    deta_repl_frame_t f;
    memset(&f, 0x5a, sizeof f);
    int rc = deta_repl_frame_parse(buf, size, &f);
    bool w = size >= 25 && buf[0] == 'w';
    bool k = size == 18 && buf[0] == 'k' && buf[17] <= 1;
    if (!w && !k) {
        FUZZ_CHECK(rc == -1 && zeroed(&f, sizeof f));
        free(buf);
        return;
    }
    FUZZ_CHECK(rc == 0 && f.kind == (char)buf[0]);
    if (w) {
        FUZZ_CHECK(f.wal_start == be(buf + 1, 8) && f.wal_end == be(buf + 9, 8));
        FUZZ_CHECK(f.send_time == (int64_t)be(buf + 17, 8) && !f.reply_requested);
        FUZZ_CHECK(f.data == buf + 25 && f.len == size - 25);
        check_message(f.data, f.len);
    } else {
        FUZZ_CHECK(f.wal_start == 0 && f.wal_end == be(buf + 1, 8));
        FUZZ_CHECK(f.send_time == (int64_t)be(buf + 9, 8));
        FUZZ_CHECK(f.reply_requested == (buf[17] == 1) && f.data == NULL && f.len == 0);
    }
    free(buf);
}

/* ---- positions and time ---- */

static int hex_value(char c) {
    const char *digits = "0123456789abcdef0123456789ABCDEF";
    const char *at = c ? strchr(digits, c) : NULL;
    return at ? (int)((at - digits) % 16) : -1;
}

/* The plain rule: two runs of 1 to 8 hex digits around one '/'. */
static bool plain_lsn(const char *s, uint64_t *value) {
    const char *slash = strchr(s, '/');
    if (!slash)
        return false;
    size_t a = (size_t)(slash - s), b = strlen(slash + 1);
    if (a < 1 || a > 8 || b < 1 || b > 8)
        return false;
    uint64_t hi = 0, lo = 0;
    for (size_t i = 0; i < a; i++) {
        if (hex_value(s[i]) < 0)
            return false;
        hi = hi * 16 + (uint64_t)hex_value(s[i]);
    }
    for (size_t i = 0; i < b; i++) {
        if (hex_value(slash[1 + i]) < 0)
            return false;
        lo = lo * 16 + (uint64_t)hex_value(slash[1 + i]);
    }
    *value = hi << 32 | lo;
    return true;
}

static void check_lsn_text(const uint8_t *data, size_t size) {
    char *s = fuzz_text(data, size);
    uint64_t plain = 0;
    deta_lsn_t l = 7;
    bool ok = deta_lsn_parse(s, &l);
    FUZZ_CHECK(ok == plain_lsn(s, &plain));
    FUZZ_CHECK(ok ? l == plain : l == 7);
    if (ok) {
        char text[DETA_LSN_TEXT_MAX];
        deta_lsn_t back;
        FUZZ_CHECK(deta_lsn_parse(deta_lsn_format(l, text), &back) && back == l);
    }
    free(s);
}

static void check_numbers(const uint8_t *data, size_t size) {
    uint8_t n[33] = {0};
    memcpy(n, data, size < sizeof n ? size : sizeof n);
    uint64_t a = be(n, 8), b = be(n + 8, 8), c = be(n + 16, 8);
    int64_t t = (int64_t)be(n + 24, 8);

    char text[DETA_LSN_TEXT_MAX];
    deta_lsn_t back;
    deta_lsn_format(a, text);
    FUZZ_CHECK(strlen(text) < DETA_LSN_TEXT_MAX && deta_lsn_parse(text, &back) && back == a);
    for (const char *p = text; *p; p++) /* upper case, no leading zero */
        FUZZ_CHECK((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'F') || *p == '/');
    FUZZ_CHECK(text[0] != '0' || text[1] == '/');
    const char *lo = strchr(text, '/') + 1;
    FUZZ_CHECK(lo[0] != '0' || lo[1] == '\0');

    uint8_t r[DETA_REPL_STATUS_LEN];
    FUZZ_CHECK(deta_repl_status(r, a, b, c, t, n[32] & 1) == DETA_REPL_STATUS_LEN);
    FUZZ_CHECK(r[0] == 'r' && be(r + 1, 8) == a && be(r + 9, 8) == b && be(r + 17, 8) == c);
    FUZZ_CHECK((int64_t)be(r + 25, 8) == t && r[33] == (n[32] & 1));

    /* Postgres time, against 128-bit arithmetic */
    __int128 us = ((__int128)t - EPOCH_MS) * 1000;
    int64_t want = us > INT64_MAX ? INT64_MAX : us < INT64_MIN ? INT64_MIN : (int64_t)us;
    FUZZ_CHECK(deta_pg_time_from_unix_ms(t) == want);
    if (want != INT64_MAX && want != INT64_MIN)
        FUZZ_CHECK(deta_pg_time_to_unix_ms(want) == t);
    __int128 ms = (__int128)t / 1000 - ((__int128)t % 1000 < 0) + EPOCH_MS;
    if (t == INT64_MAX || t == INT64_MIN)
        ms = t;
    FUZZ_CHECK(deta_pg_time_to_unix_ms(t) == (int64_t)ms);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check_frame(data, size);
    check_message(data, size);
    check_lsn_text(data, size);
    check_numbers(data, size);
    return 0;
}
