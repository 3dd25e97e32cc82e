/*
 * cql_frames.c - our side of the conformance test against python3-cassandra's
 * codec (test_cql_conformance.py runs it; see that script for the comparison).
 *
 *   cql_frames encode   prints "name hex" for each request of a fixed set, as
 *                       cql_codec.c encodes it;
 *   cql_frames decode   reads "name hex" lines of response frames (header and
 *                       body) on stdin and prints one JSON object per line with
 *                       what cql_codec.c decodes and what the getters of
 *                       cql_values.c read from each cell.
 *
 * The requests here and their twins in the script must stay the same messages:
 * the script names each one it builds and fails on a name either side lacks.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cql_codec.h"

/* ---- encode ---- */

static void print_frame(const char *name, cql_buf_t *b) {
    if (b->failed) {
        fprintf(stderr, "cql_frames: encoding %s failed\n", name);
        exit(1);
    }
    printf("%s ", name);
    for (size_t i = 0; i < b->len; i++)
        printf("%02x", b->p[i]);
    printf("\n");
    cql_buf_free(b);
}

static const uint8_t PAGING[] = {0x00, 0x11, 0x22, 0x33, 0xff};
static const uint8_t BLOB[] = {0xde, 0xad, 0xbe, 0xef, 0x00};
static const uint8_t ID1[16] = {0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78,
                                0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0};
static const uint8_t ID2[4] = {0xca, 0xfe, 0xba, 0xbe};

/* One value of each type the client writes, plus null and unset (the script's
 * values() lists the same). */
static size_t values(deta_cql_value_t *v) {
    size_t n = 0;
    v[n++] = deta_cql_text("grüße, \"world\"");
    v[n] = deta_cql_text("plain ascii");
    v[n++].type = DETA_CQL_T_ASCII;
    v[n++] = deta_cql_int(-123456);
    v[n++] = deta_cql_int(INT32_MAX);
    v[n++] = deta_cql_bigint(INT64_C(-9000000000000000000));
    v[n++] = deta_cql_timestamp_ms(INT64_C(1700000000123));
    v[n++] = deta_cql_bool(true);
    v[n++] = deta_cql_bool(false);
    if (!deta_cql_uuid_text("550e8400-e29b-41d4-a716-446655440000", &v[n++]))
        exit(1);
    if (!deta_cql_uuid_text("c0a80101-7a2b-11ee-b962-0242ac120002", &v[n]))
        exit(1);
    v[n++].type = DETA_CQL_T_TIMEUUID;
    v[n++] = deta_cql_blob(BLOB, sizeof BLOB);
    v[n++] = deta_cql_blob(BLOB, 0);
    v[n++] = deta_cql_null();
    v[n++] = deta_cql_unset();
    return n;
}

static int encode(void) {
    cql_buf_t b = {0};
    cql_encode_startup(&b, 1, "3.0.0");
    print_frame("startup", &b);
    cql_encode_auth_response_password(&b, 2, "cassandra", "s3cr3t pässword");
    print_frame("auth_response", &b);
    cql_encode_options(&b, 3);
    print_frame("options", &b);
    cql_encode_prepare(&b, 4, "SELECT status FROM deta.orders WHERE id = ?");
    print_frame("prepare", &b);

    deta_cql_value_t v[16];
    size_t nv = values(v);
    deta_cql_query_t q = {.cql = "SELECT * FROM deta.orders", .consistency = DETA_CQL_ONE};
    cql_encode_query(&b, 5, &q);
    print_frame("query_plain", &b);

    q = (deta_cql_query_t){
        .cql = "INSERT INTO deta.t (a, b, c, d, e, f, g, h, i, j, k, l, m, n) VALUES "
               "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        .values = v,
        .nvalues = nv,
        .consistency = DETA_CQL_LOCAL_QUORUM,
        .has_serial = true,
        .serial_consistency = DETA_CQL_LOCAL_SERIAL,
        .page_size = 500,
        .paging_state = PAGING,
        .paging_state_len = sizeof PAGING,
        .has_timestamp = true,
        .timestamp_us = INT64_C(1700000000123456),
        .skip_metadata = true,
    };
    cql_encode_query(&b, 6, &q);
    print_frame("query_all", &b);

    q.cql = NULL;
    cql_encode_execute(&b, 7, ID1, sizeof ID1, &q);
    print_frame("execute_all", &b);

    deta_cql_query_t e = {.values = v + 2, .nvalues = 1, .consistency = DETA_CQL_QUORUM,
                          .page_size = 10};
    cql_encode_execute(&b, 32767, ID2, sizeof ID2, &e);
    print_frame("execute_page", &b);

    deta_cql_value_t v1[] = {deta_cql_text("order-1"), deta_cql_int(3)};
    deta_cql_batch_item_t items[] = {
        {.cql = "INSERT INTO deta.t (k, v) VALUES (?, ?)", .prepared = true, .values = v1,
         .nvalues = 2},
        {.cql = "UPDATE deta.t SET v = ? WHERE k = ?", .prepared = false, .values = v + 10,
         .nvalues = 4},
        {.cql = "DELETE FROM deta.t WHERE k = 'x'", .prepared = false},
        {.cql = "DELETE FROM deta.t WHERE k = ?", .prepared = true, .values = v, .nvalues = 1},
    };
    const uint8_t *ids[] = {ID1, NULL, NULL, ID2};
    size_t idlens[] = {sizeof ID1, 0, 0, sizeof ID2};
    deta_cql_batch_t batch = {.type = DETA_CQL_BATCH_LOGGED, .items = items, .nitems = 4,
                              .consistency = DETA_CQL_EACH_QUORUM};
    cql_encode_batch(&b, 8, &batch, ids, idlens);
    print_frame("batch_logged", &b);

    batch = (deta_cql_batch_t){.type = DETA_CQL_BATCH_UNLOGGED, .items = items, .nitems = 3,
                               .consistency = DETA_CQL_ONE, .has_serial = true,
                               .serial_consistency = DETA_CQL_SERIAL, .has_timestamp = true,
                               .timestamp_us = INT64_C(1700000000999999)};
    cql_encode_batch(&b, 9, &batch, ids, idlens);
    print_frame("batch_unlogged", &b);
    return 0;
}

/* ---- decode ---- */

static void json_str(const char *key, const char *s, size_t n) {
    printf(",\"%s\":\"", key);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void json_cstr(const char *key, const char *s) { json_str(key, s, strlen(s)); }

static void json_hex(const char *key, const uint8_t *p, size_t n) {
    printf(",\"%s\":\"", key);
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
    putchar('"');
}

static void json_int(const char *key, long long v) { printf(",\"%s\":%lld", key, v); }

static void json_columns(const char *key, const deta_cql_column_t *c, size_t n) {
    printf(",\"%s\":[", key);
    for (size_t i = 0; c && i < n; i++) {
        printf("%s{\"x\":0", i ? "," : "");
        json_cstr("keyspace", c[i].keyspace);
        json_cstr("table", c[i].table);
        json_cstr("name", c[i].name);
        json_int("type", c[i].type.type);
        json_int("sub0", c[i].type.sub[0]);
        json_int("sub1", c[i].type.sub[1]);
        putchar('}');
    }
    putchar(']');
}

/* Each cell through the getter of its column's type; others as raw hex. */
static void json_rows(const deta_cql_result_t *r) {
    printf(",\"rows\":[");
    for (size_t row = 0; row < r->nrows; row++) {
        printf("%s[", row ? "," : "");
        for (size_t col = 0; col < r->ncolumns; col++) {
            if (col)
                putchar(',');
            const deta_cql_cell_t *cell = deta_cql_cell(r, row, col);
            char err[512] = "", text[1024];
            bool null = false;
            deta_err_t e = DETA_OK;
            int type = r->columns ? (int)r->columns[col].type.type : -1;
            printf("{\"x\":0");
            switch (type) {
            case DETA_CQL_T_VARCHAR:
            case DETA_CQL_T_ASCII:
                e = deta_cql_get_text(r, row, col, text, sizeof text, &null, err, sizeof err);
                if (e == DETA_OK && !null)
                    json_cstr("text", text);
                break;
            case DETA_CQL_T_INT: {
                int32_t v;
                e = deta_cql_get_int(r, row, col, &v, &null, err, sizeof err);
                if (e == DETA_OK && !null)
                    json_int("int", v);
                break;
            }
            case DETA_CQL_T_BIGINT:
            case DETA_CQL_T_COUNTER:
            case DETA_CQL_T_TIMESTAMP: {
                int64_t v;
                e = deta_cql_get_bigint(r, row, col, &v, &null, err, sizeof err);
                if (e == DETA_OK && !null)
                    json_int("int", v);
                break;
            }
            case DETA_CQL_T_BOOLEAN: {
                bool v;
                e = deta_cql_get_bool(r, row, col, &v, &null, err, sizeof err);
                if (e == DETA_OK && !null)
                    printf(",\"bool\":%s", v ? "true" : "false");
                break;
            }
            case DETA_CQL_T_UUID:
            case DETA_CQL_T_TIMEUUID: {
                char u[37];
                e = deta_cql_get_uuid(r, row, col, u, &null, err, sizeof err);
                if (e == DETA_OK && !null)
                    json_cstr("uuid", u);
                break;
            }
            default:
                null = cell->len < 0;
                if (!null)
                    json_hex("hex", cell->data, (size_t)cell->len);
                break;
            }
            if (e != DETA_OK)
                json_cstr("getter_error", err);
            else if (null)
                printf(",\"null\":true");
            putchar('}');
        }
        putchar(']');
    }
    putchar(']');
}

static void json_result(const deta_cql_result_t *r) {
    json_int("kind", r->kind);
    switch (r->kind) {
    case DETA_CQL_RESULT_ROWS:
        json_int("ncolumns", (long long)r->ncolumns);
        json_columns("columns", r->columns, r->ncolumns);
        if (r->has_more_pages)
            json_hex("paging_state", r->paging_state, r->paging_state_len);
        json_rows(r);
        break;
    case DETA_CQL_RESULT_SET_KEYSPACE:
        json_cstr("keyspace", r->keyspace);
        break;
    case DETA_CQL_RESULT_PREPARED:
        json_hex("id", r->prepared_id, r->prepared_id_len);
        json_columns("bind", r->bind, r->nbind);
        printf(",\"pk\":[");
        for (size_t i = 0; i < r->npk; i++)
            printf("%s%u", i ? "," : "", r->pk[i]);
        putchar(']');
        json_columns("columns", r->columns, r->ncolumns);
        break;
    case DETA_CQL_RESULT_SCHEMA_CHANGE:
        json_cstr("change", r->change);
        json_cstr("target", r->target);
        json_cstr("keyspace", r->keyspace);
        json_cstr("object", r->name);
        break;
    default:
        break;
    }
    if (r->warnings)
        json_cstr("warnings", r->warnings);
}

static void json_error(const cql_error_t *e) {
    json_int("code", e->code);
    json_cstr("message", e->message);
    switch (e->code) {
    case DETA_CQL_E_UNAVAILABLE:
        json_int("consistency", e->consistency);
        json_int("required", e->required);
        json_int("alive", e->alive);
        break;
    case DETA_CQL_E_WRITE_TIMEOUT:
    case DETA_CQL_E_WRITE_FAILURE:
        json_int("consistency", e->consistency);
        json_int("received", e->received);
        json_int("blockfor", e->blockfor);
        if (e->code == DETA_CQL_E_WRITE_FAILURE)
            json_int("numfailures", e->numfailures);
        json_cstr("write_type", e->write_type);
        break;
    case DETA_CQL_E_READ_TIMEOUT:
    case DETA_CQL_E_READ_FAILURE:
        json_int("consistency", e->consistency);
        json_int("received", e->received);
        json_int("blockfor", e->blockfor);
        if (e->code == DETA_CQL_E_READ_FAILURE)
            json_int("numfailures", e->numfailures);
        printf(",\"data_present\":%s", e->data_present ? "true" : "false");
        break;
    case DETA_CQL_E_FUNCTION_FAILURE:
        json_cstr("keyspace", e->keyspace);
        json_cstr("function", e->table);
        break;
    case DETA_CQL_E_ALREADY_EXISTS:
        json_cstr("keyspace", e->keyspace);
        json_cstr("table", e->table);
        break;
    case DETA_CQL_E_UNPREPARED:
        json_hex("unprepared_id", e->unprepared_id, e->unprepared_id_len);
        break;
    default:
        break;
    }
}

static int hexval(int c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int decode(void) {
    static char line[1 << 20];
    static uint8_t frame[1 << 19];
    while (fgets(line, sizeof line, stdin)) {
        char *sp = strchr(line, ' ');
        if (!sp) {
            fprintf(stderr, "cql_frames: a line without \"name hex\"\n");
            return 1;
        }
        *sp = '\0';
        size_t n = 0;
        for (char *h = sp + 1; hexval(h[0]) >= 0 && hexval(h[1]) >= 0; h += 2)
            frame[n++] = (uint8_t)(hexval(h[0]) << 4 | hexval(h[1]));
        printf("{\"name\":\"%s\"", line);
        char err[512] = "";
        cql_header_t h;
        if (n < CQL_HEADER_LEN) {
            printf(",\"refused\":\"short frame\"}\n");
            continue;
        }
        if (!cql_header_decode(frame, sizeof frame, &h, err, sizeof err) ||
            h.length != n - CQL_HEADER_LEN) {
            json_cstr("refused", err[0] ? err : "length differs from the frame's");
            printf("}\n");
            continue;
        }
        uint8_t *body = h.length ? malloc(h.length) : NULL;
        if (h.length && !body)
            return 1;
        if (h.length)
            memcpy(body, frame + CQL_HEADER_LEN, h.length);
        cql_response_t r;
        if (!cql_response_decode(&h, body, &r, err, sizeof err)) {
            json_cstr("refused", err);
            printf("}\n");
            continue;
        }
        json_int("opcode", r.opcode);
        json_int("stream", h.stream);
        switch (r.opcode) {
        case CQL_OP_ERROR:
            json_error(&r.error);
            break;
        case CQL_OP_AUTHENTICATE:
            json_cstr("authenticator", r.authenticator);
            break;
        case CQL_OP_SUPPORTED:
            json_cstr("supported", r.supported);
            break;
        case CQL_OP_RESULT:
            json_result(&r.result);
            break;
        case CQL_OP_AUTH_CHALLENGE:
        case CQL_OP_AUTH_SUCCESS:
            if (r.token_len >= 0)
                json_hex("token", r.token, (size_t)r.token_len);
            break;
        default:
            break;
        }
        printf("}\n");
        cql_response_clear(&r);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "encode") == 0)
        return encode();
    if (argc == 2 && strcmp(argv[1], "decode") == 0)
        return decode();
    fprintf(stderr, "usage: cql_frames encode|decode\n");
    return 2;
}
