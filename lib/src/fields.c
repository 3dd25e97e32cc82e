/*
 * fields.c - reading a JSON object's fields by a table (see deta/fields.h).
 *
 * Design: one small reader per kind, each a plain function from the JSON value
 * to the destination bytes, returning the problem it found (0 for none) and
 * writing its words into the error; deta_fields_read walks the table, handles
 * absence (the same for every kind) and names the path. The checks of a kind run
 * in a fixed order (type, then emptiness, then length, then content), so the
 * first problem a value has is the one reported, whoever reads it.
 */
#include "deta/fields.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "deta/money.h"
#include "deta/timestamp.h"

#define PROBLEM(e, p, ...) (snprintf((e)->message, sizeof (e)->message, __VA_ARGS__), (p))

static deta_field_problem_t read_text(const json_t *j, const deta_field_t *f, char *dst,
                                      deta_field_error_t *e) {
    size_t max = f->max > 0 ? (size_t)f->max : f->size - 1;
    if (!json_is_string(j))
        return PROBLEM(e, DETA_FIELD_WRONG_TYPE, "must be a string");
    size_t len = json_string_length(j);
    if (len == 0)
        return PROBLEM(e, DETA_FIELD_EMPTY, "must not be empty");
    if (len > max || len >= f->size)
        return PROBLEM(e, DETA_FIELD_TOO_LONG, "must be at most %zu characters", max);
    if (strlen(json_string_value(j)) != len)
        return PROBLEM(e, DETA_FIELD_BAD_VALUE, "must not contain NUL characters");
    memcpy(dst, json_string_value(j), len + 1);
    return 0;
}

static deta_field_problem_t read_int(const json_t *j, const deta_field_t *f, int64_t *dst,
                                     deta_field_error_t *e) {
    if (!json_is_integer(j))
        return PROBLEM(e, DETA_FIELD_WRONG_TYPE, "must be an integer");
    json_int_t v = json_integer_value(j);
    if (v < f->min || v > f->max)
        return PROBLEM(e, DETA_FIELD_BAD_VALUE, "must be between %" PRId64 " and %" PRId64,
                       f->min, f->max);
    *dst = (int64_t)v;
    return 0;
}

static deta_field_problem_t read_amount(const json_t *j, deta_money_t *dst,
                                        deta_field_error_t *e) {
    deta_money_t v;
    if (deta_money_from_json(j, &v, e->message, sizeof e->message) != DETA_OK)
        return DETA_FIELD_BAD_VALUE;
    if (v < 0)
        return PROBLEM(e, DETA_FIELD_BAD_VALUE, "must not be negative");
    *dst = v;
    return 0;
}

static deta_field_problem_t read_currency(const json_t *j, char *dst, deta_field_error_t *e) {
    if (!json_is_string(j) || !deta_currency_valid(json_string_value(j)))
        return PROBLEM(e, json_is_string(j) ? DETA_FIELD_BAD_VALUE : DETA_FIELD_WRONG_TYPE,
                       "must be an ISO 4217 code: three capital letters");
    memcpy(dst, json_string_value(j), 4);
    return 0;
}

/* DETA_FIELD_INSTANT keeps the text (it must fit); DETA_FIELD_INSTANT_MS the
 * milliseconds, which must not be below min. */
static deta_field_problem_t read_instant(const json_t *j, const deta_field_t *f, void *dst,
                                         deta_field_error_t *e) {
    const char *s = json_string_value(j);
    int64_t ms = s ? deta_timestamp_ms(s) : -1;
    bool fits = f->kind == DETA_FIELD_INSTANT ? s && strlen(s) < f->size : ms >= f->min;
    if (!s || !deta_timestamp_valid(s) || !fits)
        return PROBLEM(e, s ? DETA_FIELD_BAD_VALUE : DETA_FIELD_WRONG_TYPE,
                       "must be an ISO-8601 UTC instant");
    if (f->kind == DETA_FIELD_INSTANT)
        memcpy(dst, s, strlen(s) + 1);
    else
        memcpy(dst, &ms, sizeof ms);
    return 0;
}

static deta_field_problem_t read_value(const json_t *j, const deta_field_t *f, char *dst,
                                       deta_field_error_t *e) {
    switch (f->kind) {
    case DETA_FIELD_TEXT: return read_text(j, f, dst, e);
    case DETA_FIELD_INT: return read_int(j, f, (int64_t *)(void *)dst, e);
    case DETA_FIELD_AMOUNT: return read_amount(j, (deta_money_t *)(void *)dst, e);
    case DETA_FIELD_CURRENCY: return read_currency(j, dst, e);
    case DETA_FIELD_INSTANT:
    case DETA_FIELD_INSTANT_MS: return read_instant(j, f, dst, e);
    }
    return PROBLEM(e, DETA_FIELD_BAD_VALUE, "has a kind no reader knows");
}

deta_err_t deta_fields_read(const json_t *obj, const char *prefix, const deta_field_t *fields,
                            size_t n, void *out, deta_field_error_t *e) {
    for (size_t i = 0; i < n; i++) {
        const deta_field_t *f = &fields[i];
        const json_t *j = json_object_get(obj, f->key);
        deta_field_problem_t p = 0;
        if (!j && f->required)
            p = PROBLEM(e, DETA_FIELD_MISSING, "is required");
        else if (j)
            p = read_value(j, f, (char *)out + f->offset, e);
        if (p) {
            snprintf(e->field, sizeof e->field, "%s%s", prefix ? prefix : "", f->key);
            e->kind = f->kind;
            e->problem = p;
            return DETA_ERR_INVALID;
        }
    }
    return DETA_OK;
}

deta_err_t deta_field_error_text(const deta_field_error_t *e, char *errstr, size_t errsize) {
    return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s %s", e->field, e->message);
}
