/*
 * openapi.c - a service's OpenAPI operations against its routes (deta/openapi.h).
 */
#include "deta/openapi.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Counts a difference and appends it to errstr ("; " between two). */
static void note(char *errstr, size_t errsize, size_t *len, size_t *count, const char *what,
                 int what_len, const char *why) {
    (*count)++;
    if (!errstr || *len >= errsize)
        return;
    int k = snprintf(errstr + *len, errsize - *len, "%s%.*s %s", *len ? "; " : "", what_len,
                     what, why);
    if (k > 0)
        *len += (size_t)k;
}

/* Whether the line [line, line + len) is "method pattern". */
static bool same(const char *line, size_t len, const deta_openapi_route_t *r) {
    size_t m = strlen(r->method), p = strlen(r->pattern);
    return len == m + 1 + p && memcmp(line, r->method, m) == 0 && line[m] == ' ' &&
           memcmp(line + m + 1, r->pattern, p) == 0;
}

/* The length of the line at line (without its newline), and the next line. */
static size_t line_len(const char *line) { return strcspn(line, "\n"); }
static const char *next_line(const char *line) {
    line += line_len(line);
    return *line ? line + 1 : line;
}

deta_err_t deta_openapi_match_routes(const char *operations, const deta_openapi_route_t *routes,
                                     size_t n, char *errstr, size_t errsize) {
    if (errstr && errsize)
        errstr[0] = '\0';
    if (!operations)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "no OpenAPI operations");
    for (const char *l = operations; *l; l = next_line(l)) {
        size_t len = line_len(l), m = strcspn(l, " \n");
        if (m == 0 || m >= len || l[m + 1] != '/')
            return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                             "the OpenAPI operations have a line that is not a method and a "
                             "path: \"%.*s\"", (int)len, l);
    }
    size_t len = 0, count = 0;
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (const char *l = operations; *l && !found; l = next_line(l))
            found = same(l, line_len(l), &routes[i]);
        if (!found) {
            char what[512];
            int k = snprintf(what, sizeof what, "%s %s", routes[i].method, routes[i].pattern);
            k = k < 0 ? 0 : k >= (int)sizeof what ? (int)sizeof what - 1 : k;
            note(errstr, errsize, &len, &count, what, k, "is not documented");
        }
    }
    for (const char *l = operations; *l; l = next_line(l)) {
        bool served = false;
        for (size_t i = 0; i < n && !served; i++)
            served = same(l, line_len(l), &routes[i]);
        if (!served)
            note(errstr, errsize, &len, &count, l, (int)line_len(l),
                 "is documented but not served");
    }
    return count ? DETA_ERR_INVALID : DETA_OK;
}
