/*
 * auth.c - the operator and reader tokens' rules (deta/auth.h): which role a route
 * needs, what a request's Authorization header earns it, and the token settings'
 * shape. Pure functions; http.c enforces them before any handler runs.
 *
 * Constant time. A given token is compared with each configured token by
 * deta_secret_equal, whose time depends on the configured token's length only, and
 * both comparisons always run, so neither the time nor the answer's path says
 * which token, or how much of one, a guess matched. (Whether a token is configured
 * at all is no secret: the 503 says so.)
 */
#include "deta/auth.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

void deta_auth_wipe(deta_auth_t *auth) {
    explicit_bzero(auth->operator_token, sizeof auth->operator_token);
    explicit_bzero(auth->reader_token, sizeof auth->reader_token);
    auth->reads_need_token = false;
}

bool deta_secret_equal(const char *expected, const char *given) {
    size_t elen = strlen(expected), glen = strlen(given);
    volatile unsigned char diff = elen != glen;
    for (size_t i = 0; i < elen; i++)
        diff |= (unsigned char)expected[i] ^ (unsigned char)(glen ? given[i % glen] : 0);
    return diff == 0;
}

deta_auth_role_t deta_auth_route_role(bool operator_route, const char *method,
                                      const char *pattern, bool reads_need_token) {
    if (operator_route)
        return DETA_ROLE_OPERATOR;
    if (!reads_need_token || !method || !pattern)
        return DETA_ROLE_NONE;
    bool reading = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    return reading && strncmp(pattern, "/api/", 5) == 0 ? DETA_ROLE_READER : DETA_ROLE_NONE;
}

/* The token of "Bearer <token>", or NULL. */
static const char *bearer_token(const char *authorization) {
    static const char scheme[] = "Bearer";
    if (!authorization || strncasecmp(authorization, scheme, sizeof scheme - 1) != 0 ||
        authorization[sizeof scheme - 1] != ' ')
        return NULL;
    const char *given = authorization + sizeof scheme - 1;
    given += strspn(given, " ");
    return given[0] ? given : NULL;
}

deta_auth_outcome_t deta_auth_decide(const deta_auth_t *auth, deta_auth_role_t role,
                                     const char *authorization) {
    if (role == DETA_ROLE_NONE)
        return DETA_AUTH_ALLOWED;
    bool have_operator = auth && auth->operator_token[0];
    bool have_reader = auth && auth->reader_token[0];
    if (!have_operator && (role == DETA_ROLE_OPERATOR || !have_reader))
        return DETA_AUTH_DISABLED;
    const char *given = bearer_token(authorization);
    if (!given)
        return DETA_AUTH_MISSING;
    bool is_operator = have_operator && deta_secret_equal(auth->operator_token, given);
    bool is_reader = have_reader && deta_secret_equal(auth->reader_token, given);
    if (is_operator)
        return DETA_AUTH_ALLOWED;
    if (is_reader)
        return role == DETA_ROLE_READER ? DETA_AUTH_ALLOWED : DETA_AUTH_FORBIDDEN;
    return DETA_AUTH_WRONG;
}

const char *deta_auth_outcome_label(deta_auth_outcome_t o) {
    switch (o) {
    case DETA_AUTH_ALLOWED: return "allowed";
    case DETA_AUTH_MISSING:
    case DETA_AUTH_WRONG: return "unauthorized";
    case DETA_AUTH_FORBIDDEN: return "forbidden";
    case DETA_AUTH_DISABLED: return "disabled";
    default: return "unknown";
    }
}

const char *deta_auth_role_name(deta_auth_role_t role) {
    switch (role) {
    case DETA_ROLE_OPERATOR: return "operator";
    case DETA_ROLE_READER: return "reader";
    default: return "none";
    }
}

/* RFC 6750's b64token characters: what a bearer token may be made of. */
static bool is_token_char(unsigned char ch) {
    return isalnum(ch) || strchr("-._~+/=", ch) != NULL;
}

deta_err_t deta_auth_check_token(const char *name, const char *value, char *errstr,
                                 size_t errsize) {
    size_t len = value ? strlen(value) : 0;
    if (len == 0)
        return DETA_OK;
    if (len < DETA_AUTH_TOKEN_MIN)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: shorter than %d characters",
                         name, DETA_AUTH_TOKEN_MIN);
    if (len > DETA_AUTH_TOKEN_MAX)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: longer than %d characters",
                         name, DETA_AUTH_TOKEN_MAX);
    for (size_t i = 0; i < len; i++)
        if (!is_token_char((unsigned char)value[i]))
            return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                             "%s: character %zu is not one of A-Z a-z 0-9 - . _ ~ + / =", name,
                             i + 1);
    return DETA_OK;
}
