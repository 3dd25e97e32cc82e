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
 *   - room for fewer parameters than the pattern has never matches;
 *   - the handlers' checks of the values they take from the path agree with
 *     their rules written again the plain way: an {orderId} is a UUID
 *     (deta_uuid_valid), an {itemId} 1..64 of A-Z a-z 0-9 . _ ~ -
 *     (inv_item_id_valid), a dead letter's {topic} one of the five dlq.* topics
 *     (query_dlq_topic_index) and its {id} a record id (query_dlq_id_parse).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/envelope.h"
#include "deta/http.h"
#include "fuzz.h"
#include "inventory-service/domain.h"
#include "query-api/deadletters/domain.h"

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

/* A path parameter as its handler checks it, against the rule the plain way. */
static void check_value(const char *name, const char *value) {
    size_t n = strlen(value);
    if (strcmp(name, "orderId") == 0) {
        bool plain = n == 36;
        for (size_t i = 0; plain && i < n; i++)
            plain = (i == 8 || i == 13 || i == 18 || i == 23) ? value[i] == '-'
                                                                : strchr("0123456789abcdefABCDEF",
                                                                         value[i]) != NULL;
        FUZZ_CHECK(deta_uuid_valid(value) == plain);
    } else if (strcmp(name, "itemId") == 0) {
        bool plain = n >= 1 && n <= 64 &&
                     strspn(value, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   "0123456789._~-") == n;
        FUZZ_CHECK(inv_item_id_valid(value) == plain);
    } else if (strcmp(name, "topic") == 0) {
        int i = query_dlq_topic_index(value);
        FUZZ_CHECK(i == -1 || (i >= 0 && i < QUERY_DLQ_TOPIC_COUNT &&
                               strcmp(query_dlq_topics[i], value) == 0));
    } else if (strcmp(name, "id") == 0) {
        int64_t id = -3;
        bool ok = query_dlq_id_parse(value, &id);
        char back[24];
        snprintf(back, sizeof back, "%lld", (long long)id);
        FUZZ_CHECK(ok ? id >= 1 && strcmp(back, value) == 0 : id == -3);
    }
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
        for (int i = 0; i < n; i++)
            check_value(names[i], values[i]);
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
