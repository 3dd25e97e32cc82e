/*
 * pgoutput.c - the logical replication stream's messages (see pgoutput.h),
 * written from Postgres 15's documentation: "Streaming Replication Protocol"
 * (the CopyData messages 'w', 'k' and 'r') and "Logical Replication Message
 * Formats" (what pgoutput writes with proto_version '1': no streamed or
 * two-phase transactions, so no Xid field in any message and no message kind
 * of protocol versions 2 and 3).
 *
 * Reading. A cursor walks the buffer and every read first checks that its bytes
 * are there; the first failure marks the cursor bad and every later read fails
 * at once, so a parser reads a whole message and tests the cursor once, at the
 * end, together with "nothing left over". Nothing is allocated; values point
 * into the buffer.
 *
 * How strict. Lengths and counts are Int16/Int32 in the stream: a negative one
 * is refused, as is one past the end. A column or tuple count above
 * DETA_PGO_MAX_COLS is refused (a relation's may reach 1600 in Postgres: the
 * outbox has 10). Names of catalog objects (namespaces, relations, columns,
 * types) are Postgres "name"s, at most NAMEDATALEN - 1 bytes: a longer one is
 * refused; the origin's name and a logical decoding message's prefix are text
 * of any length and need only their NUL inside the message (any transaction of
 * the database may emit a message with a long prefix: refusing it would stop the
 * stream). Bytes whose values the documentation enumerates are checked against
 * that list: the keepalive's reply flag (0 or 1), the replica identity (d, n, f,
 * i), the markers of an update's and a delete's tuples ('K', 'O', 'N') and a
 * column's kind ('n', 'u', 't'). Bit sets ("flags", "option bits": a commit's,
 * a column's, a message's, a truncate's) take any value, since a later server
 * may add bits without changing the layout.
 *
 * Binary values ('b' in TupleData) are refused as an unknown column kind: the
 * server sends them only when the subscriber asks for them (the "binary"
 * option, which the relay does not set), and deta_pgo_value_t has no kind for a
 * value that is not text.
 *
 * A refusal (-1) leaves *out zeroed, so that nothing of a bad message (no
 * pointer into it) can be used by mistake.
 */
#include "pgoutput.h"
#include "hex.h"

#include <stdio.h>
#include <string.h>

/* 2000-01-01 00:00:00 UTC in Unix milliseconds. */
#define PG_EPOCH_UNIX_MS INT64_C(946684800000)
#define LSN_HALF_DIGITS 8

/* ---- WAL positions ---- */

/* One half: 1 to 8 hex digits, then stop (which it passes over); NULL if not. */
static const char *lsn_half(const char *s, char stop, uint32_t *out) {
    uint32_t v = 0;
    int n = 0, d;
    for (; (d = deta_hex_digit(*s)) >= 0; s++) {
        if (++n > LSN_HALF_DIGITS)
            return NULL;
        v = (v << 4) | (uint32_t)d;
    }
    if (n == 0 || *s != stop)
        return NULL;
    *out = v;
    return s + 1;
}

bool deta_lsn_parse(const char *s, deta_lsn_t *out) {
    uint32_t hi, lo;
    if (!s || !(s = lsn_half(s, '/', &hi)) || !lsn_half(s, '\0', &lo))
        return false;
    *out = (deta_lsn_t)hi << 32 | lo;
    return true;
}

char *deta_lsn_format(deta_lsn_t lsn, char out[DETA_LSN_TEXT_MAX]) {
    snprintf(out, DETA_LSN_TEXT_MAX, "%X/%X", (unsigned)(uint32_t)(lsn >> 32),
             (unsigned)(uint32_t)lsn);
    return out;
}

/* ---- Postgres time ---- */

/* Saturates: a time beyond Postgres's range becomes INT64_MIN or INT64_MAX,
 * which are Postgres's -infinity and infinity. */
int64_t deta_pg_time_from_unix_ms(int64_t unix_ms) {
    if (unix_ms > INT64_MAX / 1000 + PG_EPOCH_UNIX_MS)
        return INT64_MAX;
    if (unix_ms < INT64_MIN / 1000 + PG_EPOCH_UNIX_MS)
        return INT64_MIN;
    return (unix_ms - PG_EPOCH_UNIX_MS) * 1000;
}

/* Rounds down (a microsecond before the epoch is its millisecond -1); the
 * infinities stay themselves. */
int64_t deta_pg_time_to_unix_ms(int64_t pg_us) {
    if (pg_us == INT64_MAX || pg_us == INT64_MIN)
        return pg_us;
    int64_t ms = pg_us / 1000;
    if (pg_us % 1000 < 0)
        ms--;
    return ms + PG_EPOCH_UNIX_MS;
}

/* ---- reading big-endian fields ---- */

typedef struct cursor {
    const uint8_t *p;
    size_t left;
    bool bad;
} cursor_t;

static bool has(cursor_t *c, size_t n) {
    if (c->bad || c->left < n) {
        c->bad = true;
        return false;
    }
    return true;
}

static uint8_t get_u8(cursor_t *c) {
    if (!has(c, 1))
        return 0;
    uint8_t v = c->p[0];
    c->p++;
    c->left--;
    return v;
}

static uint64_t get_be(cursor_t *c, size_t n) {
    if (!has(c, n))
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | c->p[i];
    c->p += n;
    c->left -= n;
    return v;
}

static int16_t get_i16(cursor_t *c) { return (int16_t)(uint16_t)get_be(c, 2); }
static uint32_t get_u32(cursor_t *c) { return (uint32_t)get_be(c, 4); }
static int32_t get_i32(cursor_t *c) { return (int32_t)get_u32(c); }
static uint64_t get_u64(cursor_t *c) { return get_be(c, 8); }
static int64_t get_i64(cursor_t *c) { return (int64_t)get_u64(c); }

static const uint8_t *get_bytes(cursor_t *c, size_t n) {
    if (!has(c, n))
        return NULL;
    const uint8_t *v = c->p;
    c->p += n;
    c->left -= n;
    return v;
}

/* A String: its bytes and the NUL ending it, inside the message; at most
 * max - 1 bytes before the NUL (max 0: any length). */
static const char *get_string(cursor_t *c, size_t max) {
    if (c->bad || c->left == 0) {
        c->bad = true;
        return NULL;
    }
    const uint8_t *nul = memchr(c->p, '\0', c->left);
    size_t n = nul ? (size_t)(nul - c->p) : 0;
    if (!nul || (max && n >= max)) {
        c->bad = true;
        return NULL;
    }
    return (const char *)get_bytes(c, n + 1);
}

static const char *get_name(cursor_t *c) { return get_string(c, DETA_PGO_NAME_MAX); }

/* A count (Int16 or Int32 in the stream) that must be 0..max. */
static int get_count(cursor_t *c, int32_t v, int max) {
    if (c->bad || v < 0 || v > max) {
        c->bad = true;
        return 0;
    }
    return (int)v;
}

static bool done(const cursor_t *c) { return !c->bad && c->left == 0; }

/* ---- the replication stream's CopyData messages ---- */

int deta_repl_frame_parse(const uint8_t *buf, size_t len, deta_repl_frame_t *out) {
    memset(out, 0, sizeof *out);
    if (!buf || len == 0)
        return -1;
    cursor_t c = {buf + 1, len - 1, false};
    out->kind = (char)buf[0];
    if (out->kind == 'w') {
        out->wal_start = get_u64(&c);
        out->wal_end = get_u64(&c);
        out->send_time = get_i64(&c);
        if (!c.bad) {
            out->data = c.p; /* the rest, whatever its length */
            out->len = c.left;
            return 0;
        }
    } else if (out->kind == 'k') {
        out->wal_end = get_u64(&c);
        out->send_time = get_i64(&c);
        uint8_t reply = get_u8(&c);
        out->reply_requested = reply == 1;
        if (done(&c) && reply <= 1)
            return 0;
    }
    memset(out, 0, sizeof *out);
    return -1;
}

static uint8_t *put_be(uint8_t *p, uint64_t v, size_t n) {
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    return p + n;
}

size_t deta_repl_status(uint8_t out[DETA_REPL_STATUS_LEN], deta_lsn_t written,
                        deta_lsn_t flushed, deta_lsn_t applied, int64_t now_pg,
                        bool reply_requested) {
    uint8_t *p = out;
    *p++ = 'r';
    p = put_be(p, written, 8);
    p = put_be(p, flushed, 8);
    p = put_be(p, applied, 8);
    p = put_be(p, (uint64_t)now_pg, 8);
    *p = reply_requested ? 1 : 0;
    return DETA_REPL_STATUS_LEN;
}

/* ---- pgoutput's messages ---- */

/* TupleData: Int16 columns, then per column its kind and, for 't', Int32 length
 * and the bytes. */
static void get_tuple(cursor_t *c, deta_pgo_tuple_t *t) {
    t->ncols = get_count(c, get_i16(c), DETA_PGO_MAX_COLS);
    for (int i = 0; i < t->ncols && !c->bad; i++) {
        deta_pgo_value_t *v = &t->cols[i];
        v->kind = (char)get_u8(c);
        v->data = NULL;
        v->len = 0;
        if (v->kind == 't') {
            int32_t n = get_i32(c);
            if (n < 0) {
                c->bad = true;
                break;
            }
            v->len = (uint32_t)n;
            v->data = get_bytes(c, v->len);
        } else if (v->kind != 'n' && v->kind != 'u') {
            c->bad = true;
        }
    }
}

static void get_relation(cursor_t *c, deta_pgo_msg_t *m) {
    m->u.relation.oid = get_u32(c);
    m->u.relation.nspname = get_name(c);
    m->u.relation.relname = get_name(c);
    char ident = (char)get_u8(c);
    m->u.relation.replident = ident;
    if (ident != 'd' && ident != 'n' && ident != 'f' && ident != 'i')
        c->bad = true; /* default, nothing, full, index */
    m->u.relation.ncols = get_count(c, get_i16(c), DETA_PGO_MAX_COLS);
    for (int i = 0; i < m->u.relation.ncols && !c->bad; i++) {
        (void)get_u8(c); /* flags: 1 marks a column of the key */
        m->u.relation.colnames[i] = get_name(c);
        (void)get_u32(c); /* the type's oid */
        (void)get_i32(c); /* its modifier */
    }
}

/* Insert, Update, Delete: the relation, then tuples behind their markers. */
static void get_change(cursor_t *c, char kind, deta_pgo_msg_t *m) {
    m->u.change.relid = get_u32(c);
    m->u.change.has_old = false;
    m->u.change.old.ncols = 0;
    m->u.change.tuple.ncols = 0;
    char marker = (char)get_u8(c);
    if (kind != 'I' && (marker == 'K' || marker == 'O')) {
        m->u.change.has_old = true;
        get_tuple(c, &m->u.change.old);
        if (kind == 'D')
            return;
        marker = (char)get_u8(c);
    }
    if (kind == 'D' || marker != 'N') {
        c->bad = true;
        return;
    }
    get_tuple(c, &m->u.change.tuple);
}

int deta_pgo_parse(const uint8_t *buf, size_t len, deta_pgo_msg_t *out) {
    if (!buf || len == 0) {
        memset(out, 0, sizeof *out);
        return -1;
    }
    cursor_t c = {buf + 1, len - 1, false};
    out->kind = (char)buf[0];
    switch (out->kind) {
    case 'B':
        out->u.begin.final_lsn = get_u64(&c);
        out->u.begin.commit_time = get_i64(&c);
        out->u.begin.xid = get_u32(&c);
        break;
    case 'C':
        out->u.commit.flags = get_u8(&c);
        out->u.commit.commit_lsn = get_u64(&c);
        out->u.commit.end_lsn = get_u64(&c);
        out->u.commit.commit_time = get_i64(&c);
        break;
    case 'R':
        get_relation(&c, out);
        break;
    case 'I':
    case 'U':
    case 'D':
        get_change(&c, out->kind, out);
        break;
    case 'T': { /* Int32 relations, Int8 option bits, Int32 oid each */
        int32_t n = get_i32(&c);
        (void)get_u8(&c);
        if (n < 0 || (uint64_t)n * 4 != c.left)
            c.bad = true;
        else
            (void)get_bytes(&c, c.left);
        break;
    }
    case 'O': /* Int64 the commit's LSN at the origin, String its name */
        (void)get_u64(&c);
        (void)get_string(&c, 0);
        break;
    case 'Y': /* Int32 oid, String namespace, String name */
        (void)get_u32(&c);
        (void)get_name(&c);
        (void)get_name(&c);
        break;
    case 'M': { /* Int8 flags, Int64 LSN, String prefix, Int32 length, bytes */
        (void)get_u8(&c);
        (void)get_u64(&c);
        (void)get_string(&c, 0);
        int32_t n = get_i32(&c);
        if (n < 0)
            c.bad = true;
        else
            (void)get_bytes(&c, (size_t)n);
        break;
    }
    default:
        c.bad = true;
    }
    if (done(&c))
        return 0;
    memset(out, 0, sizeof *out);
    return -1;
}
