/*
 * cql_codec.c - the frames of the CQL native protocol v4, without I/O (see
 * cql_codec.h), written from the specification (doc/native_protocol_v4.spec of
 * apache/cassandra; section numbers below are its own).
 *
 * Encoding. Each request appends one whole frame to a cql_buf_t: the 9-byte
 * header is written first with a zero length, the body after it, and the length
 * is patched in at the end. A failure (out of memory, a string longer than its
 * length field, a value of a type this client does not write, a negative stream
 * id) marks the buffer failed and takes the partial frame back out, so that what
 * the buffer holds is always whole frames.
 *
 * Decoding. A cursor (cur_t) walks the body and every read first checks that
 * the bytes are there; the first problem is written to errstr and every later
 * read fails at once, so a decoder can read a whole structure and test the
 * cursor once. Counts that size an allocation (columns, rows times columns, bind
 * markers, partition key indexes) are first compared with what each element
 * needs at least, from the bytes that remain: a count the body cannot hold is
 * refused before anything is allocated (column specs are also bounded by
 * COLUMNS_MAX, each being far larger in memory than in the body). Type options nest (a list of maps of
 * tuples ...): their recursion is bounded by OPTION_DEPTH_MAX.
 *
 * Names that the caller looks things up by (keyspace, table, column names of
 * results, the Schema_change fields) must fit their buffers: a longer one is
 * refused rather than cut, since a cut name would silently match nothing. Text
 * that is only shown (an error's message and fields, the authenticator's class
 * name) is cut to fit.
 */
#include "cql_codec.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Nesting of type options: frozen<map<text, frozen<list<tuple<...>>>>> needs
 * a handful; 32 leaves room and keeps the stack bounded on hostile input. */
#define OPTION_DEPTH_MAX 32

/* Column specs (of rows, and bind markers): a spec takes as little as 4 bytes of
 * a body but a deta_cql_column_t (three names of DETA_CQL_NAME_MAX, 776 bytes)
 * in memory, so the body alone would let a 16 MiB frame take 3 GiB. No more
 * than a [short] can bind (the <n> of values) are accepted. */
#define COLUMNS_MAX 65535

/* ---------------------------------------------------------------- encoding */

void cql_buf_free(cql_buf_t *b) {
    if (!b)
        return;
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->failed = false;
}

static void put(cql_buf_t *b, const void *p, size_t n) {
    if (b->failed)
        return;
    if (n > SIZE_MAX - b->len) {
        b->failed = true;
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) {
            if (cap > SIZE_MAX / 2) {
                cap = b->len + n;
                break;
            }
            cap *= 2;
        }
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->failed = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void put_u8(cql_buf_t *b, uint8_t v) { put(b, &v, 1); }

static void put_u16(cql_buf_t *b, uint16_t v) {
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(b, x, 2);
}

static void put_u32(cql_buf_t *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(b, x, 4);
}

static void put_i32(cql_buf_t *b, int32_t v) { put_u32(b, (uint32_t)v); }

static void put_i64(cql_buf_t *b, int64_t v) {
    uint64_t u = (uint64_t)v;
    put_u32(b, (uint32_t)(u >> 32));
    put_u32(b, (uint32_t)u);
}

/* [string] and [short bytes]: a [short] length. */
static void put_short_bytes(cql_buf_t *b, const void *p, size_t n) {
    if (n > UINT16_MAX || (n && !p)) {
        b->failed = true;
        return;
    }
    put_u16(b, (uint16_t)n);
    put(b, p, n);
}

static void put_string(cql_buf_t *b, const char *s) {
    if (!s) {
        b->failed = true;
        return;
    }
    put_short_bytes(b, s, strlen(s));
}

/* [long string] and [bytes]/[value] with a length >= 0: an [int] length. */
static void put_long_bytes(cql_buf_t *b, const void *p, size_t n) {
    if (n > INT32_MAX || (n && !p)) {
        b->failed = true;
        return;
    }
    put_i32(b, (int32_t)n);
    put(b, p, n);
}

static void put_long_string(cql_buf_t *b, const char *s) {
    if (!s) {
        b->failed = true;
        return;
    }
    put_long_bytes(b, s, strlen(s));
}

/* A bound [value] in the serialization of its type (section 6). */
static void put_value(cql_buf_t *b, const deta_cql_value_t *v) {
    if (v->kind == DETA_CQL_V_NULL) {
        put_i32(b, -1);
        return;
    }
    if (v->kind == DETA_CQL_V_UNSET) {
        put_i32(b, -2);
        return;
    }
    if (v->kind != DETA_CQL_V_SET) {
        b->failed = true;
        return;
    }
    switch (v->type) {
    case DETA_CQL_T_VARCHAR:
    case DETA_CQL_T_ASCII:
        if (!v->u.text)
            put_i32(b, -1); /* a hand-made value without text: null, like deta_cql_text(NULL) */
        else
            put_long_string(b, v->u.text);
        return;
    case DETA_CQL_T_INT:
        put_i32(b, 4);
        put_i32(b, v->u.i32);
        return;
    case DETA_CQL_T_BIGINT:
    case DETA_CQL_T_COUNTER:
    case DETA_CQL_T_TIMESTAMP:
        put_i32(b, 8);
        put_i64(b, v->u.i64);
        return;
    case DETA_CQL_T_BOOLEAN:
        put_i32(b, 1);
        put_u8(b, v->u.b ? 1 : 0);
        return;
    case DETA_CQL_T_UUID:
    case DETA_CQL_T_TIMEUUID:
        put_i32(b, 16);
        put(b, v->u.uuid, 16);
        return;
    case DETA_CQL_T_BLOB:
    case DETA_CQL_T_DECIMAL:
        put_long_bytes(b, v->u.bytes.p, v->u.bytes.n);
        return;
    default:
        /* a type cql.h does not offer a constructor for: a caller's bug */
        b->failed = true;
        return;
    }
}

static void put_values(cql_buf_t *b, const deta_cql_value_t *values, size_t n) {
    if (n > UINT16_MAX || (n && !values)) {
        b->failed = true;
        return;
    }
    put_u16(b, (uint16_t)n);
    for (size_t i = 0; i < n && !b->failed; i++)
        put_value(b, &values[i]);
}

/* Starts a request frame; returns where it begins, for end_frame. */
static size_t begin_frame(cql_buf_t *b, int16_t stream, uint8_t opcode) {
    size_t start = b->len;
    if (stream < 0) /* negative streams are the server's (section 2.3) */
        b->failed = true;
    put_u8(b, CQL_VERSION_REQUEST);
    put_u8(b, 0);
    put_u16(b, (uint16_t)stream);
    put_u8(b, opcode);
    put_u32(b, 0);
    return start;
}

/* Patches the body's length in, or takes the partial frame back out. */
static bool end_frame(cql_buf_t *b, size_t start) {
    if (!b->failed && b->len - start - CQL_HEADER_LEN > INT32_MAX)
        b->failed = true;
    if (b->failed) {
        if (start <= b->len)
            b->len = start;
        return false;
    }
    uint32_t n = (uint32_t)(b->len - start - CQL_HEADER_LEN);
    uint8_t *l = b->p + start + 5;
    l[0] = (uint8_t)(n >> 24);
    l[1] = (uint8_t)(n >> 16);
    l[2] = (uint8_t)(n >> 8);
    l[3] = (uint8_t)n;
    return true;
}

bool cql_encode_startup(cql_buf_t *b, int16_t stream, const char *cql_version) {
    if (b->failed)
        return false;
    size_t start = begin_frame(b, stream, CQL_OP_STARTUP);
    put_u16(b, 1); /* [string map] of one pair: no compression is asked for */
    put_string(b, "CQL_VERSION");
    put_string(b, cql_version ? cql_version : "3.0.0");
    return end_frame(b, start);
}

bool cql_encode_auth_response_password(cql_buf_t *b, int16_t stream, const char *user,
                                       const char *password) {
    if (b->failed)
        return false;
    size_t start = begin_frame(b, stream, CQL_OP_AUTH_RESPONSE);
    if (!user || !password) {
        b->failed = true;
        return end_frame(b, start);
    }
    /* PasswordAuthenticator's SASL PLAIN token: authzid (empty) NUL user NUL password */
    size_t ul = strlen(user), pl = strlen(password);
    if (ul > INT32_MAX / 2 || pl > INT32_MAX / 2) {
        b->failed = true;
        return end_frame(b, start);
    }
    put_i32(b, (int32_t)(2 + ul + pl));
    put_u8(b, 0);
    put(b, user, ul);
    put_u8(b, 0);
    put(b, password, pl);
    return end_frame(b, start);
}

bool cql_encode_options(cql_buf_t *b, int16_t stream) {
    if (b->failed)
        return false;
    return end_frame(b, begin_frame(b, stream, CQL_OP_OPTIONS));
}

/* <query_parameters> of QUERY and EXECUTE (section 4.1.4). */
static void put_query_params(cql_buf_t *b, const deta_cql_query_t *q) {
    uint8_t flags = 0;
    if (q->nvalues > 0)
        flags |= 0x01;
    if (q->skip_metadata)
        flags |= 0x02;
    if (q->page_size > 0)
        flags |= 0x04;
    if (q->paging_state)
        flags |= 0x08;
    if (q->has_serial)
        flags |= 0x10;
    if (q->has_timestamp)
        flags |= 0x20;
    put_u16(b, (uint16_t)q->consistency);
    put_u8(b, flags);
    if (flags & 0x01)
        put_values(b, q->values, q->nvalues);
    if (flags & 0x04)
        put_i32(b, q->page_size);
    if (flags & 0x08)
        put_long_bytes(b, q->paging_state, q->paging_state_len);
    if (flags & 0x10)
        put_u16(b, (uint16_t)q->serial_consistency);
    if (flags & 0x20)
        put_i64(b, q->timestamp_us);
}

bool cql_encode_query(cql_buf_t *b, int16_t stream, const deta_cql_query_t *q) {
    if (b->failed)
        return false;
    size_t start = begin_frame(b, stream, CQL_OP_QUERY);
    if (!q) {
        b->failed = true;
        return end_frame(b, start);
    }
    put_long_string(b, q->cql);
    put_query_params(b, q);
    return end_frame(b, start);
}

bool cql_encode_prepare(cql_buf_t *b, int16_t stream, const char *cql) {
    if (b->failed)
        return false;
    size_t start = begin_frame(b, stream, CQL_OP_PREPARE);
    put_long_string(b, cql);
    return end_frame(b, start);
}

bool cql_encode_execute(cql_buf_t *b, int16_t stream, const uint8_t *id, size_t idlen,
                        const deta_cql_query_t *q) {
    if (b->failed)
        return false;
    size_t start = begin_frame(b, stream, CQL_OP_EXECUTE);
    if (!q || !id) {
        b->failed = true;
        return end_frame(b, start);
    }
    put_short_bytes(b, id, idlen);
    put_query_params(b, q);
    return end_frame(b, start);
}

bool cql_encode_batch(cql_buf_t *b, int16_t stream, const deta_cql_batch_t *batch,
                      const uint8_t *const *ids, const size_t *idlens) {
    if (b->failed)
        return false;
    size_t start = begin_frame(b, stream, CQL_OP_BATCH);
    if (!batch || batch->nitems > UINT16_MAX || (batch->nitems && !batch->items)) {
        b->failed = true;
        return end_frame(b, start);
    }
    put_u8(b, (uint8_t)batch->type);
    put_u16(b, (uint16_t)batch->nitems);
    for (size_t i = 0; i < batch->nitems && !b->failed; i++) {
        const deta_cql_batch_item_t *it = &batch->items[i];
        if (it->prepared) {
            if (!ids || !idlens || !ids[i]) {
                b->failed = true;
                break;
            }
            put_u8(b, 1);
            put_short_bytes(b, ids[i], idlens[i]);
        } else {
            put_u8(b, 0);
            put_long_string(b, it->cql);
        }
        put_values(b, it->values, it->nvalues); /* <n> is always there, 0 or more */
    }
    uint8_t flags = 0;
    if (batch->has_serial)
        flags |= 0x10;
    if (batch->has_timestamp)
        flags |= 0x20;
    put_u16(b, (uint16_t)batch->consistency);
    put_u8(b, flags);
    if (flags & 0x10)
        put_u16(b, (uint16_t)batch->serial_consistency);
    if (flags & 0x20)
        put_i64(b, batch->timestamp_us);
    return end_frame(b, start);
}

/* ---------------------------------------------------------------- decoding */

bool cql_header_decode(const uint8_t h[CQL_HEADER_LEN], size_t max_body, cql_header_t *out,
                       char *errstr, size_t errsize) {
    out->version = h[0];
    out->flags = h[1];
    out->stream = (int16_t)(uint16_t)((h[2] << 8) | h[3]);
    out->opcode = h[4];
    out->length = ((uint32_t)h[5] << 24) | ((uint32_t)h[6] << 16) | ((uint32_t)h[7] << 8) | h[8];
    if (out->version != CQL_VERSION_RESPONSE) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize,
                  "not a protocol v4 response frame (version byte 0x%02x, expected 0x84)",
                  out->version);
        return false;
    }
    if (out->flags & CQL_FLAG_COMPRESSION) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize,
                  "compressed frame, but no compression was negotiated");
        return false;
    }
    switch (out->opcode) {
    case CQL_OP_ERROR:
    case CQL_OP_READY:
    case CQL_OP_AUTHENTICATE:
    case CQL_OP_SUPPORTED:
    case CQL_OP_RESULT:
    case CQL_OP_EVENT:
    case CQL_OP_AUTH_CHALLENGE:
    case CQL_OP_AUTH_SUCCESS:
        break;
    default:
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "frame with opcode 0x%02x, not a response",
                  out->opcode);
        return false;
    }
    if (out->length > max_body) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize,
                  "frame body of %lu bytes is larger than the bound of %zu",
                  (unsigned long)out->length, max_body);
        return false;
    }
    return true;
}

/* A reading position in a body: p points at the next byte, n bytes remain. */
typedef struct cur {
    const uint8_t *p;
    size_t n;
    bool failed;
    char *errstr;
    size_t errsize;
} cur_t;

/* Records the first problem; always false. */
__attribute__((format(printf, 2, 3))) static bool bad(cur_t *c, const char *fmt, ...) {
    if (!c->failed && c->errstr && c->errsize > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->errstr, c->errsize, fmt, ap);
        va_end(ap);
    }
    c->failed = true;
    return false;
}

/* True when k more bytes are there (what names the field, for the error). */
static bool need(cur_t *c, size_t k, const char *what) {
    if (c->failed)
        return false;
    if (c->n < k)
        return bad(c, "truncated body: %s needs %zu bytes, %zu left", what, k, c->n);
    return true;
}

static const uint8_t *take(cur_t *c, size_t k, const char *what) {
    if (!need(c, k, what))
        return NULL;
    const uint8_t *p = c->p;
    c->p += k;
    c->n -= k;
    return p;
}

static uint8_t rd_u8(cur_t *c, const char *what) {
    const uint8_t *p = take(c, 1, what);
    return p ? p[0] : 0;
}

static uint16_t rd_u16(cur_t *c, const char *what) {
    const uint8_t *p = take(c, 2, what);
    return p ? (uint16_t)((p[0] << 8) | p[1]) : 0;
}

static int32_t rd_i32(cur_t *c, const char *what) {
    const uint8_t *p = take(c, 4, what);
    if (!p)
        return 0;
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
                     p[3]);
}

/* An [int] count that must not be negative (0 on failure). */
static size_t rd_count(cur_t *c, const char *what) {
    int32_t v = rd_i32(c, what);
    if (v < 0) {
        bad(c, "negative %s (%ld)", what, (long)v);
        return 0;
    }
    return (size_t)v;
}

/* [string] and [short bytes]: *len bytes at the returned pointer (NULL on failure). */
static const uint8_t *rd_short_bytes(cur_t *c, size_t *len, const char *what) {
    *len = rd_u16(c, what);
    if (c->failed)
        return NULL;
    const uint8_t *p = take(c, *len, what);
    if (!p)
        *len = 0;
    return p;
}

/* [bytes]: NULL with *len -1 for null (a negative length); NULL with the cursor
 * failed when truncated. */
static const uint8_t *rd_bytes(cur_t *c, int32_t *len, const char *what) {
    *len = rd_i32(c, what);
    if (c->failed)
        return NULL;
    if (*len < 0) {
        *len = -1;
        return NULL;
    }
    return take(c, (size_t)*len, what);
}

/* A [string] copied into dst, cut to fit. */
static void rd_string_cut(cur_t *c, char *dst, size_t dstsize, const char *what) {
    size_t len;
    const uint8_t *p = rd_short_bytes(c, &len, what);
    if (!p) {
        dst[0] = '\0';
        return;
    }
    if (len >= dstsize)
        len = dstsize - 1;
    memcpy(dst, p, len);
    dst[len] = '\0';
}

/* A [string] copied into dst, refused when it does not fit. */
static void rd_name(cur_t *c, char *dst, size_t dstsize, const char *what) {
    size_t len;
    const uint8_t *p = rd_short_bytes(c, &len, what);
    if (!p) {
        dst[0] = '\0';
        return;
    }
    if (len >= dstsize) {
        dst[0] = '\0';
        bad(c, "%s of %zu bytes is longer than %zu", what, len, dstsize - 1);
        return;
    }
    memcpy(dst, p, len);
    dst[len] = '\0';
}

/* A [string list] skipped. */
static void skip_string_list(cur_t *c, const char *what) {
    uint16_t n = rd_u16(c, what);
    size_t len;
    for (uint16_t i = 0; i < n && !c->failed; i++)
        rd_short_bytes(c, &len, what);
}

/* A [string list] joined with sep into a malloc'd string ("" for an empty list);
 * NULL when the cursor failed. */
static char *rd_string_list_joined(cur_t *c, const char *sep, const char *what) {
    cur_t probe = *c; /* the first pass measures, the second copies */
    uint16_t n = rd_u16(&probe, what);
    size_t total = 1, seplen = strlen(sep), len;
    for (uint16_t i = 0; i < n && !probe.failed; i++) {
        rd_short_bytes(&probe, &len, what);
        total += len + (i ? seplen : 0);
    }
    if (probe.failed) {
        *c = probe;
        return NULL;
    }
    char *s = malloc(total), *w = s;
    if (!s) {
        bad(c, "out of memory for %s", what);
        return NULL;
    }
    n = rd_u16(c, what);
    for (uint16_t i = 0; i < n; i++) {
        const uint8_t *p = rd_short_bytes(c, &len, what);
        if (i) {
            memcpy(w, sep, seplen);
            w += seplen;
        }
        memcpy(w, p, len);
        w += len;
    }
    *w = '\0';
    return s;
}

/* A type [option] (section 4.2.5.2). Collections name their element types in
 * t->sub; custom types' class names, UDTs and tuples are read through and
 * skipped: this client gives them no getter. */
static void rd_option(cur_t *c, deta_cql_coltype_t *t, int depth) {
    memset(t, 0, sizeof *t);
    uint16_t id = rd_u16(c, "a column type");
    if (c->failed)
        return;
    if (depth > OPTION_DEPTH_MAX) {
        bad(c, "column types nested deeper than %d", OPTION_DEPTH_MAX);
        return;
    }
    t->type = (deta_cql_type_t)id;
    deta_cql_coltype_t sub;
    size_t len;
    switch (id) {
    case DETA_CQL_T_CUSTOM:
        rd_short_bytes(c, &len, "a custom type's class name");
        return;
    case DETA_CQL_T_ASCII:
    case DETA_CQL_T_BIGINT:
    case DETA_CQL_T_BLOB:
    case DETA_CQL_T_BOOLEAN:
    case DETA_CQL_T_COUNTER:
    case DETA_CQL_T_DECIMAL:
    case DETA_CQL_T_DOUBLE:
    case DETA_CQL_T_FLOAT:
    case DETA_CQL_T_INT:
    case DETA_CQL_T_TIMESTAMP:
    case DETA_CQL_T_UUID:
    case DETA_CQL_T_VARCHAR:
    case DETA_CQL_T_VARINT:
    case DETA_CQL_T_TIMEUUID:
    case DETA_CQL_T_INET:
    case DETA_CQL_T_DATE:
    case DETA_CQL_T_TIME:
    case DETA_CQL_T_SMALLINT:
    case DETA_CQL_T_TINYINT:
        return;
    case DETA_CQL_T_LIST:
    case DETA_CQL_T_SET:
        rd_option(c, &sub, depth + 1);
        t->sub[0] = sub.type;
        return;
    case DETA_CQL_T_MAP:
        rd_option(c, &sub, depth + 1);
        t->sub[0] = sub.type;
        rd_option(c, &sub, depth + 1);
        t->sub[1] = sub.type;
        return;
    case DETA_CQL_T_UDT: {
        rd_short_bytes(c, &len, "a user type's keyspace");
        rd_short_bytes(c, &len, "a user type's name");
        uint16_t n = rd_u16(c, "a user type's field count");
        for (uint16_t i = 0; i < n && !c->failed; i++) {
            rd_short_bytes(c, &len, "a user type's field name");
            rd_option(c, &sub, depth + 1);
        }
        return;
    }
    case DETA_CQL_T_TUPLE: {
        uint16_t n = rd_u16(c, "a tuple's size");
        for (uint16_t i = 0; i < n && !c->failed; i++)
            rd_option(c, &sub, depth + 1);
        return;
    }
    default:
        bad(c, "unknown column type 0x%04x", id);
        return;
    }
}

/* <global_table_spec>? and n <col_spec_i> into a new array *out. A column spec
 * takes at least 4 bytes ([string] name, [option] id): a count the rest of the
 * body cannot hold is refused before the array is allocated. */
static void rd_col_specs(cur_t *c, bool global, size_t n, deta_cql_column_t **out) {
    *out = NULL;
    char ks[DETA_CQL_NAME_MAX] = "", table[DETA_CQL_NAME_MAX] = "";
    if (global) {
        rd_name(c, ks, sizeof ks, "the keyspace name");
        rd_name(c, table, sizeof table, "the table name");
    }
    if (c->failed || n == 0)
        return;
    if (n > c->n / 4) {
        bad(c, "%zu column specs cannot fit in the %zu bytes left", n, c->n);
        return;
    }
    if (n > COLUMNS_MAX) {
        bad(c, "%zu column specs, more than %d", n, COLUMNS_MAX);
        return;
    }
    deta_cql_column_t *cols = calloc(n, sizeof *cols);
    if (!cols) {
        bad(c, "out of memory for %zu column specs", n);
        return;
    }
    *out = cols;
    for (size_t i = 0; i < n && !c->failed; i++) {
        if (global) {
            memcpy(cols[i].keyspace, ks, sizeof ks);
            memcpy(cols[i].table, table, sizeof table);
        } else {
            rd_name(c, cols[i].keyspace, sizeof cols[i].keyspace, "a column's keyspace name");
            rd_name(c, cols[i].table, sizeof cols[i].table, "a column's table name");
        }
        rd_name(c, cols[i].name, sizeof cols[i].name, "a column name");
        rd_option(c, &cols[i].type, 0);
    }
}

#define META_GLOBAL_TABLES_SPEC 0x0001
#define META_HAS_MORE_PAGES 0x0002
#define META_NO_METADATA 0x0004

/* The <metadata> of Rows, also the <result_metadata> of Prepared (4.2.5.2). */
static void rd_rows_metadata(cur_t *c, deta_cql_result_t *r) {
    int32_t flags = rd_i32(c, "the metadata flags");
    r->ncolumns = rd_count(c, "column count");
    if (c->failed)
        return;
    if (flags & META_HAS_MORE_PAGES) {
        int32_t len;
        const uint8_t *p = rd_bytes(c, &len, "the paging state");
        if (c->failed)
            return;
        if (len < 0) {
            bad(c, "more pages announced with a null paging state");
            return;
        }
        r->paging_state = malloc(len > 0 ? (size_t)len : 1);
        if (!r->paging_state) {
            bad(c, "out of memory for the paging state");
            return;
        }
        if (len > 0)
            memcpy(r->paging_state, p, (size_t)len);
        r->paging_state_len = (size_t)len;
        r->has_more_pages = true;
    }
    if (flags & META_NO_METADATA)
        return; /* columns stays NULL: the caller knows them from the prepared statement */
    rd_col_specs(c, flags & META_GLOBAL_TABLES_SPEC, r->ncolumns, &r->columns);
}

/* <rows_count><rows_content>: the cells point into the body. */
static void rd_rows(cur_t *c, deta_cql_result_t *r) {
    r->nrows = rd_count(c, "row count");
    if (c->failed || r->ncolumns == 0 || r->nrows == 0)
        return;
    /* every cell takes at least its 4-byte length */
    if (r->nrows > c->n / 4 / r->ncolumns) {
        bad(c, "%zu rows of %zu columns cannot fit in the %zu bytes left", r->nrows,
            r->ncolumns, c->n);
        return;
    }
    size_t ncells = r->nrows * r->ncolumns;
    r->cells = calloc(ncells, sizeof *r->cells);
    if (!r->cells) {
        bad(c, "out of memory for %zu cells", ncells);
        return;
    }
    for (size_t i = 0; i < ncells && !c->failed; i++) {
        int32_t len;
        const uint8_t *p = rd_bytes(c, &len, "a cell");
        r->cells[i].data = p;
        r->cells[i].len = c->failed ? -1 : len;
    }
}

/* <id><metadata><result_metadata> of a Prepared result (4.2.5.4). */
static void rd_prepared(cur_t *c, deta_cql_result_t *r) {
    size_t len;
    const uint8_t *id = rd_short_bytes(c, &len, "the prepared id");
    if (c->failed)
        return;
    r->prepared_id = malloc(len ? len : 1);
    if (!r->prepared_id) {
        bad(c, "out of memory for the prepared id");
        return;
    }
    if (len)
        memcpy(r->prepared_id, id, len);
    r->prepared_id_len = len;

    int32_t flags = rd_i32(c, "the prepared metadata flags");
    r->nbind = rd_count(c, "bind marker count");
    r->npk = rd_count(c, "partition key index count");
    if (c->failed)
        return;
    if (r->npk > 0) {
        if (r->npk > c->n / 2) {
            bad(c, "%zu partition key indexes cannot fit in the %zu bytes left", r->npk, c->n);
            return;
        }
        r->pk = calloc(r->npk, sizeof *r->pk);
        if (!r->pk) {
            bad(c, "out of memory for %zu partition key indexes", r->npk);
            return;
        }
        for (size_t i = 0; i < r->npk; i++) {
            r->pk[i] = rd_u16(c, "a partition key index");
            if (!c->failed && r->pk[i] >= r->nbind) {
                bad(c, "partition key index %u beyond the %zu bind markers", r->pk[i], r->nbind);
                return;
            }
        }
    }
    rd_col_specs(c, flags & META_GLOBAL_TABLES_SPEC, r->nbind, &r->bind);
    rd_rows_metadata(c, r);
}

/* <change_type><target><options> of a Schema_change result (4.2.5.5, 4.2.6). */
static void rd_schema_change(cur_t *c, deta_cql_result_t *r) {
    rd_name(c, r->change, sizeof r->change, "the schema change type");
    rd_name(c, r->target, sizeof r->target, "the schema change target");
    rd_name(c, r->keyspace, sizeof r->keyspace, "the schema change keyspace");
    if (c->failed || strcmp(r->target, "KEYSPACE") == 0)
        return;
    rd_name(c, r->name, sizeof r->name, "the schema change object name");
    if (strcmp(r->target, "FUNCTION") == 0 || strcmp(r->target, "AGGREGATE") == 0)
        skip_string_list(c, "the argument types");
}

static void rd_result(cur_t *c, deta_cql_result_t *r) {
    int32_t kind = rd_i32(c, "the result kind");
    if (c->failed)
        return;
    r->kind = (deta_cql_result_kind_t)kind;
    switch (kind) {
    case DETA_CQL_RESULT_VOID:
        return;
    case DETA_CQL_RESULT_ROWS:
        rd_rows_metadata(c, r);
        rd_rows(c, r);
        return;
    case DETA_CQL_RESULT_SET_KEYSPACE:
        rd_name(c, r->keyspace, sizeof r->keyspace, "the keyspace name");
        return;
    case DETA_CQL_RESULT_PREPARED:
        rd_prepared(c, r);
        return;
    case DETA_CQL_RESULT_SCHEMA_CHANGE:
        rd_schema_change(c, r);
        return;
    default:
        bad(c, "unknown result kind 0x%04lx", (unsigned long)(uint32_t)kind);
        return;
    }
}

/* <code><message> and the fields some codes add (section 9). */
static void rd_error(cur_t *c, cql_error_t *e) {
    e->code = rd_i32(c, "the error code");
    rd_string_cut(c, e->message, sizeof e->message, "the error message");
    e->consistency = -1;
    if (c->failed)
        return;
    size_t len;
    switch (e->code) {
    case DETA_CQL_E_UNAVAILABLE:
        e->consistency = rd_u16(c, "Unavailable's consistency");
        e->required = rd_i32(c, "Unavailable's required");
        e->alive = rd_i32(c, "Unavailable's alive");
        return;
    case DETA_CQL_E_WRITE_TIMEOUT:
        e->consistency = rd_u16(c, "Write_timeout's consistency");
        e->received = rd_i32(c, "Write_timeout's received");
        e->blockfor = rd_i32(c, "Write_timeout's blockfor");
        rd_string_cut(c, e->write_type, sizeof e->write_type, "Write_timeout's write type");
        return;
    case DETA_CQL_E_READ_TIMEOUT:
        e->consistency = rd_u16(c, "Read_timeout's consistency");
        e->received = rd_i32(c, "Read_timeout's received");
        e->blockfor = rd_i32(c, "Read_timeout's blockfor");
        e->data_present = rd_u8(c, "Read_timeout's data_present") != 0;
        return;
    case DETA_CQL_E_READ_FAILURE:
        e->consistency = rd_u16(c, "Read_failure's consistency");
        e->received = rd_i32(c, "Read_failure's received");
        e->blockfor = rd_i32(c, "Read_failure's blockfor");
        e->numfailures = rd_i32(c, "Read_failure's numfailures");
        e->data_present = rd_u8(c, "Read_failure's data_present") != 0;
        return;
    case DETA_CQL_E_WRITE_FAILURE:
        e->consistency = rd_u16(c, "Write_failure's consistency");
        e->received = rd_i32(c, "Write_failure's received");
        e->blockfor = rd_i32(c, "Write_failure's blockfor");
        e->numfailures = rd_i32(c, "Write_failure's numfailures");
        rd_string_cut(c, e->write_type, sizeof e->write_type, "Write_failure's write type");
        return;
    case DETA_CQL_E_FUNCTION_FAILURE:
        /* <keyspace><function><arg_types>: the function's name goes in `table`,
         * the struct's one other name field */
        rd_string_cut(c, e->keyspace, sizeof e->keyspace, "Function_failure's keyspace");
        rd_string_cut(c, e->table, sizeof e->table, "Function_failure's function");
        skip_string_list(c, "Function_failure's argument types");
        return;
    case DETA_CQL_E_ALREADY_EXISTS:
        rd_string_cut(c, e->keyspace, sizeof e->keyspace, "Already_exists's keyspace");
        rd_string_cut(c, e->table, sizeof e->table, "Already_exists's table");
        return;
    case DETA_CQL_E_UNPREPARED: {
        /* kept cut to its buffer: the client prepares again by text, the id only
         * shows in messages */
        const uint8_t *id = rd_short_bytes(c, &len, "Unprepared's id");
        if (!id)
            return;
        if (len > sizeof e->unprepared_id)
            len = sizeof e->unprepared_id;
        memcpy(e->unprepared_id, id, len);
        e->unprepared_id_len = len;
        return;
    }
    default:
        return; /* codes without fields, and codes a later server may add */
    }
}

/* SUPPORTED's [string multimap] written "KEY=v1,v2;KEY=v" (4.2.4). */
static char *rd_supported(cur_t *c) {
    cur_t probe = *c;
    uint16_t n = rd_u16(&probe, "the option count");
    size_t total = 1, len;
    for (uint16_t i = 0; i < n && !probe.failed; i++) {
        rd_short_bytes(&probe, &len, "an option name");
        total += len + 1 + (i ? 1 : 0);
        uint16_t m = rd_u16(&probe, "an option's value count");
        for (uint16_t j = 0; j < m && !probe.failed; j++) {
            rd_short_bytes(&probe, &len, "an option value");
            total += len + (j ? 1 : 0);
        }
    }
    if (probe.failed) {
        *c = probe;
        return NULL;
    }
    char *s = malloc(total), *w = s;
    if (!s) {
        bad(c, "out of memory for the supported options");
        return NULL;
    }
    n = rd_u16(c, "the option count");
    for (uint16_t i = 0; i < n; i++) {
        if (i)
            *w++ = ';';
        const uint8_t *p = rd_short_bytes(c, &len, "an option name");
        memcpy(w, p, len);
        w += len;
        *w++ = '=';
        uint16_t m = rd_u16(c, "an option's value count");
        for (uint16_t j = 0; j < m; j++) {
            if (j)
                *w++ = ',';
            p = rd_short_bytes(c, &len, "an option value");
            memcpy(w, p, len);
            w += len;
        }
    }
    *w = '\0';
    return s;
}

/* AUTH_CHALLENGE's and AUTH_SUCCESS's [bytes] token, copied. */
static void rd_token(cur_t *c, cql_response_t *out) {
    int32_t len;
    const uint8_t *p = rd_bytes(c, &len, "the authentication token");
    if (c->failed)
        return;
    out->token_len = len;
    if (len < 0)
        return;
    out->token = malloc(len > 0 ? (size_t)len : 1);
    if (!out->token) {
        bad(c, "out of memory for the authentication token");
        return;
    }
    if (len > 0)
        memcpy(out->token, p, (size_t)len);
}

bool cql_response_decode(const cql_header_t *h, uint8_t *body, cql_response_t *out,
                         char *errstr, size_t errsize) {
    memset(out, 0, sizeof *out);
    out->opcode = h->opcode;
    out->token_len = -1;
    out->error.consistency = -1;
    out->result.body_ = body; /* freed with the response, or below on failure */
    cur_t c = {.p = body, .n = h->length, .errstr = errstr, .errsize = errsize};
    char *warnings = NULL;

    if (h->length > 0 && !body)
        bad(&c, "no body for a frame of %lu bytes", (unsigned long)h->length);
    if (h->flags & CQL_FLAG_COMPRESSION)
        bad(&c, "compressed frame, but no compression was negotiated");
    /* the order of section 2.2: tracing id, warnings, custom payload */
    if (h->flags & CQL_FLAG_TRACING)
        take(&c, 16, "the tracing id");
    if (h->flags & CQL_FLAG_WARNING)
        warnings = rd_string_list_joined(&c, "; ", "the warnings");
    if (h->flags & CQL_FLAG_CUSTOM_PAYLOAD) {
        uint16_t n = rd_u16(&c, "the custom payload");
        for (uint16_t i = 0; i < n && !c.failed; i++) {
            size_t klen;
            int32_t vlen;
            rd_short_bytes(&c, &klen, "a custom payload key");
            rd_bytes(&c, &vlen, "a custom payload value");
        }
    }

    if (!c.failed) {
        switch (h->opcode) {
        case CQL_OP_ERROR:
            rd_error(&c, &out->error);
            break;
        case CQL_OP_READY:
            break;
        case CQL_OP_AUTHENTICATE:
            rd_string_cut(&c, out->authenticator, sizeof out->authenticator,
                          "the authenticator's class name");
            break;
        case CQL_OP_SUPPORTED:
            out->supported = rd_supported(&c);
            break;
        case CQL_OP_RESULT:
            rd_result(&c, &out->result);
            break;
        case CQL_OP_EVENT:
            break; /* this client registers for none; one that comes is dropped */
        case CQL_OP_AUTH_CHALLENGE:
        case CQL_OP_AUTH_SUCCESS:
            rd_token(&c, out);
            break;
        default:
            bad(&c, "frame with opcode 0x%02x, not a response", h->opcode);
            break;
        }
    }
    /* what is left after the body's known end is ignored (section 1's note to
     * implementors: later servers may append fields) */
    if (c.failed) {
        free(warnings);
        cql_response_clear(out);
        return false;
    }
    if (h->opcode == CQL_OP_RESULT) {
        out->result.warnings = warnings;
    } else {
        free(warnings);
        free(out->result.body_); /* nothing points into it */
        out->result.body_ = NULL;
    }
    return true;
}

void cql_response_clear(cql_response_t *r) {
    if (!r)
        return;
    free(r->supported);
    free(r->token);
    deta_cql_result_clear(&r->result);
    memset(r, 0, sizeof *r);
    r->token_len = -1;
    r->error.consistency = -1;
}
