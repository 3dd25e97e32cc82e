/*
 * fuzz_http_route.c - libFuzzer target of the router's matching (lib/src/http_match.c):
 * deta_http_match, the path a client sends against a route pattern, and the
 * parameters it hands to a handler. An input is a pattern, a NUL, then a path;
 * an input without a NUL is a path, matched against every pattern the services
 * register. Pattern and path are each copied into a heap buffer of exactly their
 * length plus the NUL, so AddressSanitizer reports a read past either. For a
 * pattern deta_http_route takes (deta_http_pattern_params) it checks what must
 * hold whatever the path:
 *   - the documented buffer of strlen(path) + strlen(pattern) + 2 bytes gives the
 *     same answer as a large one, and a match fills every parameter;
 *   - a match has as many parameters as the pattern, each name the one between
 *     its braces, each value a non-empty segment without '/';
 *   - putting the values back into the pattern gives the path (up to the one
 *     trailing slash either may have);
 *   - room for fewer parameters than the pattern has never matches.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "deta/http.h"
#include "fuzz.h"

static const char *const patterns[] = {
    "/", "/actuator/health/liveness", "/actuator/health/readiness", "/metrics",
    "/api/orders", "/api/orders/{orderId}", "/api/orders/{orderId}/events",
    "/api/orders/{orderId}/stream", "/api/orders/{orderId}/cancel", "/api/stats",
    "/api/stream", "/api/deliveries/{orderId}", "/api/drivers", "/api/inventory",
    "/api/inventory/{itemId}", "/api/payments/{orderId}", "/console-config.json",
    "/api/admin/dead-letters", "/api/admin/dead-letters/{topic}",
    "/api/admin/dead-letters/{topic}/replay", "/api/admin/dead-letters/{topic}/{id}",
    "/api/admin/dead-letters/{topic}/{id}/replay", "/{a}/{b}/{c}/{d}", "/{a}/{b}/{c}/{d}/{e}",
};

/* Without one trailing slash, as the matcher reads it. */
static size_t trimmed(const char *s) {
    size_t n = strlen(s);
    return n > 1 && s[n - 1] == '/' && s[n - 2] != '/' ? n - 1 : n;
}

/* The pattern with the values in place of its parameters, compared with path. */
static bool rebuilds(const char *pattern, const char *path, const char **names,
                     const char **values, int n) {
    size_t cap = strlen(pattern) + strlen(path) + 1, used = 0;
    char *out = malloc(cap);
    FUZZ_CHECK(out != NULL);
    size_t end = trimmed(pattern);
    int k = 0;
    for (size_t i = 0; i < end;) {
        if (pattern[i] == '{') {
            const char *close = memchr(pattern + i, '}', end - i);
            FUZZ_CHECK(close && k < n);
            size_t nlen = (size_t)(close - pattern) - i - 1;
            FUZZ_CHECK(strlen(names[k]) == nlen && memcmp(names[k], pattern + i + 1, nlen) == 0);
            size_t vlen = strlen(values[k]);
            FUZZ_CHECK(vlen > 0 && !memchr(values[k], '/', vlen) && used + vlen < cap);
            memcpy(out + used, values[k], vlen);
            used += vlen;
            k++;
            i = (size_t)(close - pattern) + 1;
        } else {
            FUZZ_CHECK(used + 1 < cap);
            out[used++] = pattern[i++];
        }
    }
    bool same = k == n && used == trimmed(path) && memcmp(out, path, used) == 0;
    free(out);
    return same;
}

static void check(const char *pattern, const char *path) {
    int nparams = deta_http_pattern_params(pattern);
    const char *names[DETA_HTTP_MAX_PARAMS], *values[DETA_HTTP_MAX_PARAMS];
    if (nparams < 0 || nparams > DETA_HTTP_MAX_PARAMS) {
        /* a pattern no route has: only memory safety */
        size_t need = strlen(path) + strlen(pattern) + 2;
        char *buf = malloc(need);
        FUZZ_CHECK(buf != NULL);
        (void)deta_http_match(pattern, path, buf, need, names, values, DETA_HTTP_MAX_PARAMS);
        free(buf);
        return;
    }
    size_t need = strlen(path) + strlen(pattern) + 2;
    char *exact = malloc(need), *large = malloc(need * 2 + 64);
    FUZZ_CHECK(exact && large);
    const char *lnames[DETA_HTTP_MAX_PARAMS], *lvalues[DETA_HTTP_MAX_PARAMS];
    int n = deta_http_match(pattern, path, exact, need, names, values, DETA_HTTP_MAX_PARAMS);
    int ln = deta_http_match(pattern, path, large, need * 2 + 64, lnames, lvalues,
                             DETA_HTTP_MAX_PARAMS);
    FUZZ_CHECK(n == ln);
    if (n >= 0) {
        FUZZ_CHECK(n == nparams);
        for (int i = 0; i < n; i++) {
            FUZZ_CHECK(values[i] >= exact && values[i] < exact + need);
            FUZZ_CHECK(names[i] >= exact && names[i] < exact + need);
            FUZZ_CHECK(strcmp(values[i], lvalues[i]) == 0 && strcmp(names[i], lnames[i]) == 0);
        }
        FUZZ_CHECK(rebuilds(pattern, path, names, values, n));
        if (n > 0)
            FUZZ_CHECK(deta_http_match(pattern, path, large, need * 2 + 64, lnames, lvalues,
                                       n - 1) == -1);
    }
    free(exact);
    free(large);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *texts[2];
    int n = fuzz_split(data, size, texts, 2);
    if (n == 2) {
        check(texts[0], texts[1]);
    } else {
        for (size_t i = 0; i < sizeof patterns / sizeof *patterns; i++)
            check(patterns[i], texts[0]);
    }
    fuzz_free(texts, n);
    return 0;
}
