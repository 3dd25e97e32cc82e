/*
 * auth.h - who may call a route: the operator and reader bearer tokens, as pure rules.
 *
 * Two roles (docs/security.md, "Operator actions are authenticated"):
 *   - operator: every state change other than placing or cancelling an order
 *     (stock PUT and PATCH, the dead-letter administration); a route says so with
 *     DETA_HTTP_OPERATOR (deta/http.h). The operator token may also read.
 *   - reader: the reading endpoints (GET and HEAD of a route below /api/), only when
 *     HTTP_READS_NEED_AUTH closes them; open to anyone otherwise.
 * Health, metrics, the console's static files and /console-config.json never need
 * a token.
 *
 * The tokens come from the settings OPERATOR_TOKEN and READER_TOKEN (deta/config.h):
 * no default; 16 to 256 of RFC 6750's token characters (A-Z a-z 0-9 - . _ ~ + / =);
 * the two must differ. With OPERATOR_TOKEN unset the operator routes answer 503
 * naming it. The server (http.c) decides before any handler runs:
 *   503  the route's role has no token configured (DETA_AUTH_DISABLED);
 *   401  no "Authorization: Bearer <token>", or a token that is neither
 *        (WWW-Authenticate: Bearer, with error="invalid_token" for a wrong one);
 *   403  the reader token on an operator route (DETA_AUTH_FORBIDDEN).
 * A given token is compared with both configured tokens in constant time (the time
 * depends on the configured tokens' lengths only), and never logged.
 */
#ifndef DETA_AUTH_H
#define DETA_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "deta/err.h"

#define DETA_AUTH_TOKEN_MIN 16
#define DETA_AUTH_TOKEN_MAX 256

typedef enum deta_auth_role {
    DETA_ROLE_NONE = 0, /* the route is open */
    DETA_ROLE_READER,
    DETA_ROLE_OPERATOR,
} deta_auth_role_t;

typedef enum deta_auth_outcome {
    DETA_AUTH_ALLOWED = 0,
    DETA_AUTH_MISSING,   /* 401: no bearer token (or another scheme) */
    DETA_AUTH_WRONG,     /* 401: a bearer token that is no configured one */
    DETA_AUTH_FORBIDDEN, /* 403: the reader token on an operator route */
    DETA_AUTH_DISABLED,  /* 503: no token is configured that could open the route */
    DETA_AUTH_OUTCOMES,
} deta_auth_outcome_t;

/* The tokens a server checks against ("" when not set). */
typedef struct deta_auth {
    char operator_token[DETA_AUTH_TOKEN_MAX + 1]; /* OPERATOR_TOKEN */
    char reader_token[DETA_AUTH_TOKEN_MAX + 1];   /* READER_TOKEN */
    bool reads_need_token;                        /* HTTP_READS_NEED_AUTH */
} deta_auth_t;

/* The role a route needs: operator when it is flagged so; reader for GET and HEAD
 * below /api/ when reads_need_token; none otherwise. */
deta_auth_role_t deta_auth_route_role(bool operator_route, const char *method,
                                      const char *pattern, bool reads_need_token);

/* The decision for a request to a route that needs role, given its Authorization
 * header (NULL when absent). The scheme is "Bearer" in any case, then one or more
 * spaces, then the token. */
deta_auth_outcome_t deta_auth_decide(const deta_auth_t *auth, deta_auth_role_t role,
                                     const char *authorization);

/* "allowed", "unauthorized" (missing or wrong), "forbidden", "disabled": the outcome
 * label of http_auth_total. */
const char *deta_auth_outcome_label(deta_auth_outcome_t o);
/* "operator", "reader", "none". */
const char *deta_auth_role_name(deta_auth_role_t role);

/* expected == given, in a time that depends on expected's length only. */
bool deta_secret_equal(const char *expected, const char *given);

/* A token setting's value: "" (not set) or 16..256 of RFC 6750's token characters.
 * DETA_ERR_INVALID naming the variable (never echoing the value) otherwise. */
deta_err_t deta_auth_check_token(const char *name, const char *value, char *errstr,
                                 size_t errsize);

/* Both tokens wiped (explicit_bzero) and reads opened: what a copy that is done with
 * leaves behind. */
void deta_auth_wipe(deta_auth_t *auth);

#endif
