/*
 * cql_values.c - the pure half of deta/cql.h: consistency names, the error
 * classes of server codes, the constructors of bound values, and reading a
 * decoded result (cells and typed getters). No I/O; the connection is cql.c.
 *
 * The getters trust nothing in a cell: its length is checked against the type
 * (an int is 4 bytes, a uuid 16), text is checked to be UTF-8 without NUL (a
 * NUL would silently cut the C string), and a getter used on a column whose
 * metadata names another type is refused. A Rows result decoded with
 * NO_METADATA has no columns (columns NULL): its cells are then checked by
 * length only, and errors name the column by position.
 */
#include "deta/cql.h"
#include "hex.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- consistency levels and error codes ---- */

static const struct {
    deta_cql_consistency_t c;
    const char *name;
} CONSISTENCIES[] = {
    {DETA_CQL_ANY, "ANY"},
    {DETA_CQL_ONE, "ONE"},
    {DETA_CQL_TWO, "TWO"},
    {DETA_CQL_THREE, "THREE"},
    {DETA_CQL_QUORUM, "QUORUM"},
    {DETA_CQL_ALL, "ALL"},
    {DETA_CQL_LOCAL_QUORUM, "LOCAL_QUORUM"},
    {DETA_CQL_EACH_QUORUM, "EACH_QUORUM"},
    {DETA_CQL_SERIAL, "SERIAL"},
    {DETA_CQL_LOCAL_SERIAL, "LOCAL_SERIAL"},
    {DETA_CQL_LOCAL_ONE, "LOCAL_ONE"},
};
#define NCONSISTENCIES (sizeof CONSISTENCIES / sizeof *CONSISTENCIES)

/* Settings are written by people: the case does not matter. */
int deta_cql_consistency_parse(const char *name) {
    if (!name)
        return -1;
    for (size_t i = 0; i < NCONSISTENCIES; i++)
        if (strcasecmp(name, CONSISTENCIES[i].name) == 0)
            return (int)CONSISTENCIES[i].c;
    return -1;
}

const char *deta_cql_consistency_name(deta_cql_consistency_t c) {
    for (size_t i = 0; i < NCONSISTENCIES; i++)
        if (CONSISTENCIES[i].c == c)
            return CONSISTENCIES[i].name;
    return "UNKNOWN";
}

deta_err_t deta_cql_error_class(int code) {
    switch (code) {
    case DETA_CQL_E_UNAVAILABLE:
    case DETA_CQL_E_OVERLOADED:
    case DETA_CQL_E_BOOTSTRAPPING:
    case DETA_CQL_E_TRUNCATE:
    case DETA_CQL_E_WRITE_TIMEOUT:
    case DETA_CQL_E_READ_TIMEOUT:
    case DETA_CQL_E_READ_FAILURE:
    case DETA_CQL_E_WRITE_FAILURE:
    case DETA_CQL_E_SERVER:
    /* Unprepared reaches a caller only when preparing again did not help (the
     * node lost its statements once more, e.g. restarting): it passes */
    case DETA_CQL_E_UNPREPARED:
        return DETA_ERR_TRANSIENT;
    case DETA_CQL_E_ALREADY_EXISTS:
        return DETA_ERR_CONFLICT;
    default:
        /* Syntax, Invalid, Unauthorized, Config, Bad credentials, Function
         * failure, Protocol error, and codes this client does not know */
        return DETA_ERR_INTERNAL;
    }
}

/* ---- bound values ---- */

deta_cql_value_t deta_cql_null(void) {
    deta_cql_value_t v;
    memset(&v, 0, sizeof v);
    v.kind = DETA_CQL_V_NULL;
    v.type = DETA_CQL_T_BLOB;
    return v;
}

deta_cql_value_t deta_cql_unset(void) {
    deta_cql_value_t v = deta_cql_null();
    v.kind = DETA_CQL_V_UNSET;
    return v;
}

static deta_cql_value_t set_of(deta_cql_type_t type) {
    deta_cql_value_t v;
    memset(&v, 0, sizeof v);
    v.kind = DETA_CQL_V_SET;
    v.type = type;
    return v;
}

deta_cql_value_t deta_cql_text(const char *s) {
    deta_cql_value_t v = set_of(DETA_CQL_T_VARCHAR);
    if (!s)
        v.kind = DETA_CQL_V_NULL;
    v.u.text = s;
    return v;
}

deta_cql_value_t deta_cql_int(int32_t i) {
    deta_cql_value_t v = set_of(DETA_CQL_T_INT);
    v.u.i32 = i;
    return v;
}

deta_cql_value_t deta_cql_bigint(int64_t i) {
    deta_cql_value_t v = set_of(DETA_CQL_T_BIGINT);
    v.u.i64 = i;
    return v;
}

deta_cql_value_t deta_cql_timestamp_ms(int64_t ms) {
    deta_cql_value_t v = set_of(DETA_CQL_T_TIMESTAMP);
    v.u.i64 = ms;
    return v;
}

deta_cql_value_t deta_cql_bool(bool b) {
    deta_cql_value_t v = set_of(DETA_CQL_T_BOOLEAN);
    v.u.b = b;
    return v;
}

deta_cql_value_t deta_cql_blob(const uint8_t *p, size_t n) {
    deta_cql_value_t v = set_of(DETA_CQL_T_BLOB);
    v.u.bytes.p = p;
    v.u.bytes.n = n;
    return v;
}

bool deta_cql_uuid_text(const char *s, deta_cql_value_t *v) {
    *v = deta_cql_null();
    if (!s || !*s)
        return true;
    if (strlen(s) != 36)
        return false;
    uint8_t u[16];
    size_t k = 0;
    for (size_t i = 0; i < 36;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
            i++;
            continue;
        }
        int hi = deta_hex_digit(s[i]), lo = deta_hex_digit(s[i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        u[k++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    *v = set_of(DETA_CQL_T_UUID);
    memcpy(v->u.uuid, u, 16);
    return true;
}

/* ---- results ---- */

void deta_cql_result_clear(deta_cql_result_t *r) {
    if (!r)
        return;
    free(r->columns);
    free(r->cells);
    free(r->paging_state);
    free(r->prepared_id);
    free(r->bind);
    free(r->pk);
    free(r->warnings);
    free(r->body_);
    memset(r, 0, sizeof *r);
}

int deta_cql_column_index(const deta_cql_result_t *r, const char *name) {
    if (!r || !name || !r->columns)
        return -1;
    for (size_t i = 0; i < r->ncolumns; i++)
        if (strcmp(r->columns[i].name, name) == 0)
            return (int)i;
    return -1;
}

const deta_cql_cell_t *deta_cql_cell(const deta_cql_result_t *r, size_t row, size_t col) {
    if (!r || r->kind != DETA_CQL_RESULT_ROWS || !r->cells || row >= r->nrows ||
        col >= r->ncolumns)
        return NULL;
    return &r->cells[row * r->ncolumns + col];
}

/* Writes "column \"name\"" (or "column N" without metadata) into buf. */
static const char *column_label(const deta_cql_result_t *r, size_t col, char *buf, size_t n) {
    if (r && r->columns && col < r->ncolumns)
        snprintf(buf, n, "column \"%s\"", r->columns[col].name);
    else
        snprintf(buf, n, "column %zu", col);
    return buf;
}

/* The cell at (row, col) for a getter of `what` that accepts the types in
 * `types` (n of them): INVALID when there is no such cell or the column's
 * metadata names another type. */
static deta_err_t getter_cell(const deta_cql_result_t *r, size_t row, size_t col,
                              const deta_cql_type_t *types, size_t n, const char *what,
                              const deta_cql_cell_t **out, char *errstr, size_t errsize) {
    char label[DETA_CQL_NAME_MAX + 16];
    *out = deta_cql_cell(r, row, col);
    if (!*out)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "no cell at row %zu, column %zu (a Rows result of %zu rows, %zu "
                         "columns)",
                         row, col, r && r->kind == DETA_CQL_RESULT_ROWS ? r->nrows : 0,
                         r && r->kind == DETA_CQL_RESULT_ROWS ? r->ncolumns : 0);
    if (r->columns) {
        deta_cql_type_t t = r->columns[col].type.type;
        bool ok = false;
        for (size_t i = 0; i < n; i++)
            ok = ok || types[i] == t;
        if (!ok)
            return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                             "%s is of type 0x%04x, not %s",
                             column_label(r, col, label, sizeof label), (unsigned)t, what);
    }
    return DETA_OK;
}

/* INVALID naming the column: its cell is not `len` bytes long. */
static deta_err_t bad_length(const deta_cql_result_t *r, size_t col, int32_t len,
                             const char *what, size_t want, char *errstr, size_t errsize) {
    char label[DETA_CQL_NAME_MAX + 16];
    return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: %s of %ld bytes (expected %zu)",
                     column_label(r, col, label, sizeof label), what, (long)len, want);
}

static void set_null(bool *is_null, bool v) {
    if (is_null)
        *is_null = v;
}

/* Length of the valid UTF-8 prefix of p[0..n) (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF); n when all of it is valid. */
static size_t utf8_valid_prefix(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return i;
        }
        if (n - i <= k)
            return i;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80)
                return i;
            cp = cp << 6 | (p[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += k + 1;
    }
    return n;
}

deta_err_t deta_cql_get_text(const deta_cql_result_t *r, size_t row, size_t col, char *dst,
                             size_t dstsize, bool *is_null, char *errstr, size_t errsize) {
    static const deta_cql_type_t types[] = {DETA_CQL_T_VARCHAR, DETA_CQL_T_ASCII};
    char label[DETA_CQL_NAME_MAX + 16];
    const deta_cql_cell_t *cell;
    set_null(is_null, false);
    if (!dst || dstsize == 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "no room for the text");
    dst[0] = '\0';
    deta_err_t err = getter_cell(r, row, col, types, 2, "text", &cell, errstr, errsize);
    if (err != DETA_OK)
        return err;
    if (cell->len < 0) {
        set_null(is_null, true);
        return DETA_OK;
    }
    size_t n = (size_t)cell->len;
    if (n > dstsize - 1)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "%s: text of %zu bytes does not fit in %zu",
                         column_label(r, col, label, sizeof label), n, dstsize - 1);
    bool ascii = r->columns && r->columns[col].type.type == DETA_CQL_T_ASCII;
    for (size_t i = 0; i < n; i++) {
        if (cell->data[i] == 0)
            return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: text with a NUL byte at %zu",
                             column_label(r, col, label, sizeof label), i);
        if (ascii && cell->data[i] > 0x7F)
            return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                             "%s: ascii text with byte 0x%02x at %zu",
                             column_label(r, col, label, sizeof label), cell->data[i], i);
    }
    size_t ok = utf8_valid_prefix(cell->data, n);
    if (ok != n)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: text that is not UTF-8 (at byte %zu)",
                         column_label(r, col, label, sizeof label), ok);
    if (n)
        memcpy(dst, cell->data, n);
    dst[n] = '\0';
    return DETA_OK;
}

static uint64_t be(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

deta_err_t deta_cql_get_int(const deta_cql_result_t *r, size_t row, size_t col, int32_t *out,
                            bool *is_null, char *errstr, size_t errsize) {
    static const deta_cql_type_t types[] = {DETA_CQL_T_INT};
    const deta_cql_cell_t *cell;
    *out = 0;
    set_null(is_null, false);
    deta_err_t err = getter_cell(r, row, col, types, 1, "int", &cell, errstr, errsize);
    if (err != DETA_OK)
        return err;
    if (cell->len < 0) {
        set_null(is_null, true);
        return DETA_OK;
    }
    if (cell->len != 4)
        return bad_length(r, col, cell->len, "an int", 4, errstr, errsize);
    *out = (int32_t)(uint32_t)be(cell->data, 4);
    return DETA_OK;
}

deta_err_t deta_cql_get_bigint(const deta_cql_result_t *r, size_t row, size_t col, int64_t *out,
                               bool *is_null, char *errstr, size_t errsize) {
    static const deta_cql_type_t types[] = {DETA_CQL_T_BIGINT, DETA_CQL_T_COUNTER,
                                            DETA_CQL_T_TIMESTAMP};
    const deta_cql_cell_t *cell;
    *out = 0;
    set_null(is_null, false);
    deta_err_t err = getter_cell(r, row, col, types, 3, "bigint, counter or timestamp", &cell,
                                 errstr, errsize);
    if (err != DETA_OK)
        return err;
    if (cell->len < 0) {
        set_null(is_null, true);
        return DETA_OK;
    }
    if (cell->len != 8)
        return bad_length(r, col, cell->len, "a bigint", 8, errstr, errsize);
    *out = (int64_t)be(cell->data, 8);
    return DETA_OK;
}

deta_err_t deta_cql_get_bool(const deta_cql_result_t *r, size_t row, size_t col, bool *out,
                             bool *is_null, char *errstr, size_t errsize) {
    static const deta_cql_type_t types[] = {DETA_CQL_T_BOOLEAN};
    const deta_cql_cell_t *cell;
    *out = false;
    set_null(is_null, false);
    deta_err_t err = getter_cell(r, row, col, types, 1, "boolean", &cell, errstr, errsize);
    if (err != DETA_OK)
        return err;
    if (cell->len < 0) {
        set_null(is_null, true);
        return DETA_OK;
    }
    if (cell->len != 1)
        return bad_length(r, col, cell->len, "a boolean", 1, errstr, errsize);
    *out = cell->data[0] != 0; /* section 6.4: any non-zero byte is true */
    return DETA_OK;
}

deta_err_t deta_cql_get_uuid(const deta_cql_result_t *r, size_t row, size_t col, char out[37],
                             bool *is_null, char *errstr, size_t errsize) {
    static const deta_cql_type_t types[] = {DETA_CQL_T_UUID, DETA_CQL_T_TIMEUUID};
    static const char hex[] = "0123456789abcdef";
    const deta_cql_cell_t *cell;
    out[0] = '\0';
    set_null(is_null, false);
    deta_err_t err = getter_cell(r, row, col, types, 2, "uuid", &cell, errstr, errsize);
    if (err != DETA_OK)
        return err;
    if (cell->len < 0) {
        set_null(is_null, true);
        return DETA_OK;
    }
    if (cell->len != 16)
        return bad_length(r, col, cell->len, "a uuid", 16, errstr, errsize);
    char *w = out;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *w++ = '-';
        *w++ = hex[cell->data[i] >> 4];
        *w++ = hex[cell->data[i] & 0xF];
    }
    *w = '\0';
    return DETA_OK;
}
