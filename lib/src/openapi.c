/*
 * openapi.c - a service's OpenAPI document against its routes (deta/openapi.h).
 */
#include "deta/openapi.h"

#include <ctype.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* The methods an OpenAPI path item can hold, in lower case. */
static const char *const METHODS[] = {"get", "put", "post", "delete", "options", "head", "patch",
                                      "trace"};
#define NMETHODS (sizeof METHODS / sizeof METHODS[0])

static bool lower_equal(const char *lower, const char *method) {
    for (; *lower && *method; lower++, method++)
        if (*lower != tolower((unsigned char)*method))
            return false;
    return *lower == *method;
}

static bool registered(const deta_openapi_route_t *routes, size_t n, const char *method,
                       const char *pattern) {
    for (size_t i = 0; i < n; i++)
        if (lower_equal(method, routes[i].method) && strcmp(pattern, routes[i].pattern) == 0)
            return true;
    return false;
}

/* Counts a difference and appends it to errstr ("; " between two). */
static void note(char *errstr, size_t errsize, size_t *len, size_t *count,
                 const char *method, const char *pattern, const char *what) {
    (*count)++;
    if (!errstr || *len >= errsize)
        return;
    int k = snprintf(errstr + *len, errsize - *len, "%s%s %s %s", *len ? "; " : "", method,
                     pattern, what);
    if (k > 0)
        *len += (size_t)k;
}

deta_err_t deta_openapi_match_routes(const char *document, const deta_openapi_route_t *routes,
                                     size_t n, char *errstr, size_t errsize) {
    if (errstr && errsize)
        errstr[0] = '\0';
    json_error_t e;
    json_t *doc = document ? json_loads(document, 0, &e) : NULL;
    json_t *paths = json_object_get(doc, "paths");
    if (!json_is_object(paths)) {
        json_decref(doc);
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "the OpenAPI document is not JSON with a \"paths\" object");
    }
    size_t len = 0, count = 0;
    char upper[16];
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_object_get(paths, routes[i].pattern);
        char lower[16];
        size_t k = 0;
        for (; routes[i].method[k] && k + 1 < sizeof lower; k++)
            lower[k] = (char)tolower((unsigned char)routes[i].method[k]);
        lower[k] = '\0';
        if (!json_is_object(json_object_get(item, lower)))
            note(errstr, errsize, &len, &count, routes[i].method, routes[i].pattern,
                 "is not documented");
    }
    const char *pattern;
    json_t *item;
    json_object_foreach(paths, pattern, item) {
        for (size_t m = 0; m < NMETHODS; m++) {
            if (!json_object_get(item, METHODS[m]) || registered(routes, n, METHODS[m], pattern))
                continue;
            size_t k = 0;
            for (; METHODS[m][k] && k + 1 < sizeof upper; k++)
                upper[k] = (char)toupper((unsigned char)METHODS[m][k]);
            upper[k] = '\0';
            note(errstr, errsize, &len, &count, upper, pattern, "is documented but not served");
        }
    }
    json_decref(doc);
    return count ? DETA_ERR_INVALID : DETA_OK;
}
