/*
 * fields.h - reading the fields of a JSON object (an event's payload, a request
 * body) by a table, with one wording for what is wrong.
 *
 * A reader describes the fields it needs once, as a table: the JSON key, the
 * kind of value, whether it is required, bounds, and where the value goes in
 * the reader's own struct (DETA_FIELD builds a row from the struct and member).
 * deta_fields_read checks the fields in table order and stops at the first bad
 * one, reporting its path (a prefix such as "payload." or "items[2]." and the
 * key), what is wrong as a kind of problem (for metrics) and as words:
 *   "is required", "must be a string", "must not be empty",
 *   "must be at most N characters", "must not contain NUL characters",
 *   "must be an integer", "must be between A and B", "must not be negative"
 *   (or the money parser's words), "must be an ISO 4217 code: three capital
 *   letters", "must be an ISO-8601 UTC instant".
 * An optional field that is absent leaves its destination untouched, so the
 * caller's default stands; an optional field that is present must be valid.
 */
#ifndef DETA_FIELDS_H
#define DETA_FIELDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "deta/err.h"

typedef enum deta_field_kind {
    DETA_FIELD_TEXT,       /* string of 1..max bytes without NUL -> char[size] (max < size;
                              0: size - 1) */
    DETA_FIELD_INT,        /* JSON integer in min..max -> int64_t */
    DETA_FIELD_AMOUNT,     /* money, a decimal string or number, >= 0 -> deta_money_t */
    DETA_FIELD_CURRENCY,   /* three capital letters -> char[4] */
    DETA_FIELD_INSTANT,    /* ISO-8601 UTC instant, text kept -> char[DETA_TS_LEN] */
    DETA_FIELD_INSTANT_MS, /* ISO-8601 UTC instant -> int64_t ms since the epoch */
} deta_field_kind_t;

typedef struct deta_field {
    const char *key;
    deta_field_kind_t kind;
    bool required;
    int64_t min, max; /* DETA_FIELD_INT: the range; DETA_FIELD_TEXT: max bytes */
    size_t offset;    /* of the destination in the caller's struct */
    size_t size;      /* of the destination */
} deta_field_t;

/* A row for member of struct type. */
#define DETA_FIELD(key, kind, required, min, max, type, member)                                  \
    {key, kind, required, min, max, offsetof(type, member), sizeof(((type *)0)->member)}

typedef enum deta_field_problem {
    DETA_FIELD_MISSING = 1, /* a required field is absent */
    DETA_FIELD_WRONG_TYPE,  /* present, but not of the kind's JSON type */
    DETA_FIELD_EMPTY,       /* text "" */
    DETA_FIELD_TOO_LONG,    /* text longer than max */
    DETA_FIELD_BAD_VALUE,   /* of the right type, but not a valid value */
} deta_field_problem_t;

typedef struct deta_field_error {
    char field[48];             /* the path: prefix and key */
    deta_field_kind_t kind;     /* the bad field's kind */
    deta_field_problem_t problem;
    char message[128];          /* what is wrong, without the path */
} deta_field_error_t;

/* Reads fields[0..n) of obj into out. DETA_OK, or DETA_ERR_INVALID with *e
 * describing the first bad field (prefix may be NULL). obj must be an object. */
deta_err_t deta_fields_read(const json_t *obj, const char *prefix, const deta_field_t *fields,
                            size_t n, void *out, deta_field_error_t *e);

/* "<field> <message>" into errstr; returns DETA_ERR_INVALID. */
deta_err_t deta_field_error_text(const deta_field_error_t *e, char *errstr, size_t errsize);

#endif
