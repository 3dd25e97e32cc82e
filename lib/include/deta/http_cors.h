/*
 * http_cors.h - the CORS allow-list of libdeta's HTTP server (docs/console.md, "CORS"):
 * the setting HTTP_CORS_ORIGINS, a comma-separated list of exact origins
 * ("http://localhost:8080,http://127.0.0.1:8080"), and the rules that decide an
 * answer's CORS headers. Pure functions, no I/O: the server (http.c) applies them.
 *
 * An origin is what a browser sends in its Origin header: scheme "http" or "https",
 * "://", a host (a lower-case name of a-z 0-9 . -, or an IPv6 address in brackets),
 * and an optional port 1..65535 other than the scheme's default (a browser never
 * writes the default port, so such an entry could never match). No path, not even
 * "/", no user, no query. "*" is refused: the list is explicit by design.
 */
#ifndef DETA_HTTP_CORS_H
#define DETA_HTTP_CORS_H

#include <stdbool.h>
#include <stddef.h>

#include "deta/err.h"

#define DETA_CORS_MAX_ORIGINS 16
#define DETA_CORS_ORIGIN_MAX 255 /* bytes of one origin */

typedef struct deta_cors_origins {
    int n; /* 0: CORS is off (no header at all) */
    char origin[DETA_CORS_MAX_ORIGINS][DETA_CORS_ORIGIN_MAX + 1];
} deta_cors_origins_t;

/* Is s[0..len) one origin as above? On false, why (a static string) when asked. */
bool deta_cors_origin_valid(const char *s, size_t len, const char **why);

/* Parses list (NUL-terminated; NULL or blank: the empty list). Entries are separated by
 * commas, blanks around them ignored. DETA_ERR_INVALID naming `name` (the variable) and
 * the entry at fault when an entry is empty, "*", not an origin, repeated, or one too
 * many; out is then the empty list. */
deta_err_t deta_cors_origins_parse(const char *list, const char *name, deta_cors_origins_t *out,
                                   char *errstr, size_t errsize);

/* The listed entry equal to origin (byte for byte), or NULL (origin NULL too). */
const char *deta_cors_origins_match(const deta_cors_origins_t *list, const char *origin);

#endif
