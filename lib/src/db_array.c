/*
 * db_array.c - Postgres array literals for a statement's array parameter
 * ($1::text[], $1::uuid[], $1::int[]): one parameter carries many rows' values,
 * so that a statement over a batch (unnest, = ANY) is one round trip.
 *
 * Every element is double-quoted, with '"' and '\' escaped by a backslash (the
 * array input syntax of Postgres's documentation, "Array Value Input"), so any
 * text is taken as one element, never as NULL or as a separator. A NULL item is
 * the element NULL, unquoted.
 */
#include "deta/db.h"

#include <stdlib.h>
#include <string.h>

char *deta_db_array(const char *const *items, size_t n) {
    size_t size = 3; /* '{', '}', '\0' */
    for (size_t i = 0; i < n; i++) {
        size += items[i] ? 3 : 5; /* the quotes and the comma, or NULL and the comma */
        for (const char *c = items[i]; c && *c; c++)
            size += (*c == '"' || *c == '\\') ? 2 : 1;
    }
    char *out = malloc(size);
    if (!out)
        return NULL;
    char *p = out;
    *p++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i)
            *p++ = ',';
        if (!items[i]) {
            memcpy(p, "NULL", 4);
            p += 4;
            continue;
        }
        *p++ = '"';
        for (const char *c = items[i]; *c; c++) {
            if (*c == '"' || *c == '\\')
                *p++ = '\\';
            *p++ = *c;
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p = '\0';
    return out;
}
