/*
 * err.h - the one error convention of libdeta.
 *
 * Every fallible function returns a deta_err_t and, when given one, fills a
 * caller-supplied buffer (errstr, errsize) with a human-readable reason, the
 * way librdkafka does. errstr may be NULL. The code tells the caller what to do
 * next: INVALID and NOT_FOUND are the caller's input (never retried), CONFLICT is
 * a duplicate (already done), TRANSIENT is a dependency that may come back (retry
 * with backoff), INTERNAL is a bug or exhausted resource.
 */
#ifndef DETA_ERR_H
#define DETA_ERR_H

#include <stdarg.h>
#include <stddef.h>

typedef enum deta_err {
    DETA_OK = 0,
    DETA_ERR_INVALID,   /* bad input; permanent */
    DETA_ERR_NOT_FOUND, /* no such thing */
    DETA_ERR_CONFLICT,  /* duplicate: it exists already */
    DETA_ERR_TRANSIENT, /* a dependency is unavailable; retrying may succeed */
    DETA_ERR_INTERNAL,  /* bug, or memory/resources exhausted */
} deta_err_t;

/* Stable lower-case name of a code: "ok", "invalid", "not_found", ... */
const char *deta_err_name(deta_err_t err);

/* snprintf into errstr when errstr is not NULL and errsize > 0; always
 * NUL-terminates. Returns err, so that `return deta_errf(err, ...)` reads well. */
deta_err_t deta_errf(deta_err_t err, char *errstr, size_t errsize, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* deta_errf with the arguments as a va_list, for wrappers that do more. */
deta_err_t deta_verrf(deta_err_t err, char *errstr, size_t errsize, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

#endif
