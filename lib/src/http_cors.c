/*
 * http_cors.c - the CORS allow-list's rules (see deta/http_cors.h).
 *
 * Matching is exact, byte for byte, against what the browser sends: the Fetch
 * standard serializes an origin with a lower-case scheme and host and without the
 * default port, so the parser refuses entries that could never match (upper case,
 * ":80" on http) instead of accepting a list that silently lets nothing through.
 * The header a client sends is never parsed: it is only compared with the list.
 */
#include "deta/http_cors.h"

#include <stdio.h>
#include <string.h>

static bool is_host_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
}

static bool is_ipv6_char(char c) {
    return (c >= 'a' && c <= 'f') || (c >= '0' && c <= '9') || c == ':' || c == '.';
}

/* The host at s[0..len): a name, or "[v6]". */
static bool host_valid(const char *s, size_t len) {
    if (len == 0)
        return false;
    if (s[0] == '[') {
        if (len < 3 || s[len - 1] != ']')
            return false;
        for (size_t i = 1; i + 1 < len; i++)
            if (!is_ipv6_char(s[i]))
                return false;
        return true;
    }
    if (s[0] == '.' || s[0] == '-' || s[len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!is_host_char(s[i]))
            return false;
    return true;
}

/* The port's digits at s[0..len): 1..65535, no leading zero. */
static bool port_value(const char *s, size_t len, long *port) {
    if (len == 0 || len > 5 || s[0] == '0')
        return false;
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *port = v;
    return v <= 65535;
}

static bool fail(const char **why, const char *reason) {
    if (why)
        *why = reason;
    return false;
}

bool deta_cors_origin_valid(const char *s, size_t len, const char **why) {
    if (!s || len == 0)
        return fail(why, "empty");
    if (len > DETA_CORS_ORIGIN_MAX)
        return fail(why, "too long");
    if (memchr(s, '\0', len))
        return fail(why, "a NUL byte");
    if (len == 1 && s[0] == '*')
        return fail(why, "\"*\" is not allowed: list the origins");
    long default_port;
    size_t scheme_len;
    if (len > 7 && memcmp(s, "http://", 7) == 0) {
        scheme_len = 7;
        default_port = 80;
    } else if (len > 8 && memcmp(s, "https://", 8) == 0) {
        scheme_len = 8;
        default_port = 443;
    } else {
        return fail(why, "not http:// or https:// (lower case)");
    }
    const char *host = s + scheme_len, *end = s + len;
    if (memchr(host, '/', (size_t)(end - host)))
        return fail(why, "a path (an origin has none, not even \"/\")");
    if (memchr(host, '@', (size_t)(end - host)) || memchr(host, '?', (size_t)(end - host)) ||
        memchr(host, '#', (size_t)(end - host)))
        return fail(why, "a user, query or fragment");
    /* The port is after the last ':' that is not inside an IPv6 address's brackets. */
    const char *bracket = memchr(host, ']', (size_t)(end - host));
    const char *from = bracket ? bracket : host;
    const char *colon = memchr(from, ':', (size_t)(end - from));
    size_t host_len = (size_t)((colon ? colon : end) - host);
    if (!host_valid(host, host_len))
        return fail(why, "not a lower-case host name or [IPv6] address");
    if (colon) {
        long port;
        if (!port_value(colon + 1, (size_t)(end - colon - 1), &port))
            return fail(why, "a port that is not 1..65535");
        if (port == default_port)
            return fail(why, "the scheme's default port (a browser never sends it)");
    }
    return true;
}

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

deta_err_t deta_cors_origins_parse(const char *list, const char *name, deta_cors_origins_t *out,
                                   char *errstr, size_t errsize) {
    memset(out, 0, sizeof *out);
    if (!list)
        return DETA_OK;
    const char *p = list;
    while (is_blank(*p))
        p++;
    if (!*p)
        return DETA_OK;
    for (int index = 1;; index++) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && is_blank(*a))
            a++;
        while (b > a && is_blank(b[-1]))
            b--;
        size_t len = (size_t)(b - a);
        const char *why = NULL;
        if (!deta_cors_origin_valid(a, len, &why)) {
            memset(out, 0, sizeof *out);
            return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                             "%s: entry %d (\"%.*s\"): %s; want comma-separated origins "
                             "such as http://localhost:8080",
                             name, index, (int)(len > 64 ? 64 : len), a, why);
        }
        char entry[DETA_CORS_ORIGIN_MAX + 1];
        memcpy(entry, a, len);
        entry[len] = '\0';
        if (deta_cors_origins_match(out, entry)) {
            memset(out, 0, sizeof *out);
            return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: entry %d (\"%s\"): listed twice",
                             name, index, entry);
        }
        if (out->n == DETA_CORS_MAX_ORIGINS) {
            memset(out, 0, sizeof *out);
            return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: more than %d origins", name,
                             DETA_CORS_MAX_ORIGINS);
        }
        memcpy(out->origin[out->n++], entry, len + 1);
        if (!comma)
            return DETA_OK;
        p = comma + 1;
    }
}

const char *deta_cors_origins_match(const deta_cors_origins_t *list, const char *origin) {
    if (!list || !origin)
        return NULL;
    for (int i = 0; i < list->n; i++)
        if (strcmp(list->origin[i], origin) == 0)
            return list->origin[i];
    return NULL;
}
