/*
 * err.c - the error codes' names and the errstr helper (see deta/err.h).
 */
#include "deta/err.h"

#include <stdarg.h>
#include <stdio.h>

const char *deta_err_name(deta_err_t err) {
    switch (err) {
    case DETA_OK: return "ok";
    case DETA_ERR_INVALID: return "invalid";
    case DETA_ERR_NOT_FOUND: return "not_found";
    case DETA_ERR_CONFLICT: return "conflict";
    case DETA_ERR_TRANSIENT: return "transient";
    case DETA_ERR_INTERNAL: return "internal";
    }
    return "unknown";
}

deta_err_t deta_verrf(deta_err_t err, char *errstr, size_t errsize, const char *fmt, va_list ap) {
    if (errstr && errsize > 0)
        vsnprintf(errstr, errsize, fmt, ap);
    return err;
}

deta_err_t deta_errf(deta_err_t err, char *errstr, size_t errsize, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    deta_verrf(err, errstr, errsize, fmt, ap);
    va_end(ap);
    return err;
}
