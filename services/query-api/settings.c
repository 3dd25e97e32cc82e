/*
 * settings.c - reads query-api's QUERY_API_* variables through deta_config (so
 * they are validated like the library's own).
 *
 * The admin token is a secret: a value that is refused is wiped, and the error
 * says what is wrong with it (too short, which character) without echoing it.
 */
#include "settings.h"

#include <ctype.h>
#include <stdbool.h>
#include <string.h>

#include "deta/config.h"

#define ADMIN_TOKEN_VAR "QUERY_API_ADMIN_TOKEN"

/* RFC 6750's b64token characters: what a bearer token may be made of. */
static bool is_token_char(unsigned char ch) {
    return isalnum(ch) || strchr("-._~+/=", ch) != NULL;
}

static deta_err_t check_admin_token(const char *value, char *errstr, size_t errsize) {
    size_t len = strlen(value);
    if (len < QUERY_ADMIN_TOKEN_MIN)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: shorter than %d characters",
                         ADMIN_TOKEN_VAR, QUERY_ADMIN_TOKEN_MIN);
    for (size_t i = 0; i < len; i++)
        if (!is_token_char((unsigned char)value[i]))
            return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                             "%s: character %zu is not one of A-Z a-z 0-9 - . _ ~ + / =",
                             ADMIN_TOKEN_VAR, i + 1);
    return DETA_OK;
}

/* No default; "" when unset or empty. */
static deta_err_t load_admin_token(query_settings_t *s, char *errstr, size_t errsize) {
    const char *v = deta_config_str(ADMIN_TOKEN_VAR, "");
    size_t len = strlen(v);
    if (len >= sizeof s->admin_token)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: longer than %zu bytes",
                         ADMIN_TOKEN_VAR, sizeof s->admin_token - 1);
    if (len > 0) {
        deta_err_t err = check_admin_token(v, errstr, errsize);
        if (err)
            return err;
    }
    memcpy(s->admin_token, v, len + 1);
    return DETA_OK;
}

deta_err_t query_settings_load(query_settings_t *s, char *errstr, size_t errsize) {
    memset(s, 0, sizeof *s);
    long workers;
    deta_err_t err = deta_config_int("QUERY_API_CONSUMER_WORKERS", 4, 1, 32, &workers, errstr,
                                     errsize);
    if (err)
        return err;
    s->consumer_workers = (int)workers;
    return load_admin_token(s, errstr, errsize);
}
