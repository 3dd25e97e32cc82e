/*
 * settings.h - payment-service's own settings (env PAYMENT_*, listed in
 * domain.h with their defaults and bounds), read once at start.
 */
#ifndef PAYMENT_SETTINGS_H
#define PAYMENT_SETTINGS_H

#include <stddef.h>

#include "deta/err.h"
#include "domain.h"

/* Reads and validates the settings of domain.h; DETA_ERR_INVALID naming the
 * variable. */
deta_err_t payment_settings_load(payment_settings_t *s, char *errstr, size_t errsize);

#endif
