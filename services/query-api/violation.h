/*
 * violation.h - the field a bad request is refused for, and why: what query-api's
 * request checks return, those of the read model's list (domain.h) and those of
 * the dead-letter administration (deadletters/domain.h) alike, and what the REST
 * handlers turn into a 400 (or 422) naming the field.
 */
#ifndef QUERY_VIOLATION_H
#define QUERY_VIOLATION_H

#include <stdio.h>

#include "deta/err.h"

typedef struct query_violation {
    char field[24];
    char message[200];
} query_violation_t;

/* Fills *v and returns DETA_ERR_INVALID, for `return query_violation(v, ...)`. */
static inline deta_err_t query_violation(query_violation_t *v, const char *field,
                                         const char *message) {
    snprintf(v->field, sizeof v->field, "%s", field);
    snprintf(v->message, sizeof v->message, "%s", message);
    return DETA_ERR_INVALID;
}

#endif
