/*
 * http_match.c - the router's rules on paths, pure (see deta/http.h):
 * deta_http_match, whether a request path matches a route pattern and what its
 * parameters are, and deta_http_pattern_params, which patterns deta_http_route
 * takes. Apart from http.c (the server) so that they can be tested and fuzzed
 * without a server: the path is outside bytes (tests/fuzz/fuzz_http_route.c).
 *
 * Matching. MHD percent-decodes the path before we see it, so parameters arrive
 * decoded; an encoded slash ("%2F") becomes a separator and such a value does not
 * match one parameter. One trailing slash is ignored on either side ("/a/" is
 * "/a"); an empty segment is one ("/a//b" has three). deta_http_match copies
 * parameter values and names (without braces) into buf: strlen(path) +
 * strlen(pattern) + 2 bytes always suffice; a pattern without parameters needs
 * none.
 */
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "deta/http.h"

/* Length without one trailing slash ("/a/" -> "/a"; "/" and "/a//" unchanged). */
static size_t trimmed_length(const char *s) {
    size_t n = strlen(s);
    if (n > 1 && s[n - 1] == '/' && s[n - 2] != '/')
        n--;
    return n;
}

static bool is_param_segment(const char *seg, size_t len) {
    return len >= 3 && seg[0] == '{' && seg[len - 1] == '}';
}

static const char *segment_end(const char *seg, const char *end) {
    const char *slash = memchr(seg, '/', (size_t)(end - seg));
    return slash ? slash : end;
}

/* Appends len bytes and a NUL at buf[*used]; NULL when it does not fit. */
static const char *copy_into(char *buf, size_t buflen, size_t *used, const char *s, size_t len) {
    if (!buf || buflen - *used < len + 1)
        return NULL;
    char *dst = buf + *used;
    memcpy(dst, s, len);
    dst[len] = '\0';
    *used += len + 1;
    return dst;
}

int deta_http_match(const char *pattern, const char *path, char *buf, size_t buflen,
                    const char **names, const char **values, int max) {
    if (!pattern || !path || pattern[0] != '/' || path[0] != '/')
        return -1;
    const char *p = path + 1, *p_end = path + trimmed_length(path);
    const char *t = pattern + 1, *t_end = pattern + trimmed_length(pattern);
    size_t used = 0;
    int n = 0;
    for (;;) {
        const char *p_seg_end = segment_end(p, p_end), *t_seg_end = segment_end(t, t_end);
        size_t p_len = (size_t)(p_seg_end - p), t_len = (size_t)(t_seg_end - t);
        if (is_param_segment(t, t_len)) {
            if (p_len == 0 || n >= max || !names || !values)
                return -1;
            values[n] = copy_into(buf, buflen, &used, p, p_len);
            names[n] = copy_into(buf, buflen, &used, t + 1, t_len - 2);
            if (!values[n] || !names[n])
                return -1;
            n++;
        } else if (p_len != t_len || memcmp(p, t, p_len) != 0) {
            return -1;
        }
        bool path_done = p_seg_end == p_end, pattern_done = t_seg_end == t_end;
        if (path_done || pattern_done)
            return path_done && pattern_done ? n : -1;
        p = p_seg_end + 1;
        t = t_seg_end + 1;
    }
}


/* Starts with '/', has no characters that would break a metric label or can
 * never reach us in a path, and every '{' opens a whole-segment "{name}".
 * Returns the number of parameters, or -1. */
int deta_http_pattern_params(const char *pattern) {
    if (!pattern || pattern[0] != '/' || strpbrk(pattern, "\"\\?# \t\r\n"))
        return -1;
    int n = 0;
    const char *end = pattern + strlen(pattern);
    for (const char *seg = pattern + 1; seg <= end;) {
        const char *seg_end = segment_end(seg, end);
        size_t len = (size_t)(seg_end - seg);
        bool braces = memchr(seg, '{', len) || memchr(seg, '}', len);
        if (is_param_segment(seg, len) && !memchr(seg + 1, '{', len - 2) &&
            !memchr(seg + 1, '}', len - 2))
            n++;
        else if (braces)
            return -1;
        seg = seg_end + 1;
    }
    return n;
}
