/*
 * settings.c - reads payment-service's PAYMENT_* variables through deta_config
 * (so numbers are validated like the library's own); the decline rules' values
 * are parsed by domain.c, which reads no environment.
 */
#include "settings.h"

#include <limits.h>
#include <string.h>

#include "deta/config.h"

static deta_err_t load_decline_rules(payment_settings_t *s, char *errstr, size_t errsize) {
    deta_err_t err;
    if ((err = payment_parse_decline_above(deta_config_str("PAYMENT_DECLINE_ABOVE", "10000.00"),
                                           s, errstr, errsize)) ||
        (err = payment_parse_decline_customers(
             deta_config_str("PAYMENT_DECLINE_CUSTOMERS", "decline-*"), s, errstr, errsize)))
        return err;
    return payment_parse_decline_rate(deta_config_str("PAYMENT_DECLINE_RATE", "0"), s, errstr,
                                      errsize);
}

static deta_err_t load_ledger(payment_settings_t *s, char *errstr, size_t errsize) {
    const char *ledger = deta_config_str("PAYMENT_GATEWAY_LEDGER", "");
    if (strlen(ledger) >= sizeof s->gateway_ledger)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "PAYMENT_GATEWAY_LEDGER: longer than %zu bytes",
                         sizeof s->gateway_ledger - 1);
    strcpy(s->gateway_ledger, ledger);
    return DETA_OK;
}

deta_err_t payment_settings_load(payment_settings_t *s, char *errstr, size_t errsize) {
    memset(s, 0, sizeof *s);
    long workers = 0, connections = 0;
    deta_err_t err;
    if ((err = load_decline_rules(s, errstr, errsize)) ||
        (err = deta_config_int("PAYMENT_DECLINE_SEED", 0, LONG_MIN, LONG_MAX, &s->decline_seed,
                               errstr, errsize)) ||
        (err = deta_config_int("PAYMENT_GATEWAY_LATENCY_MS", 0, 0, PAYMENT_GATEWAY_LATENCY_MAX_MS,
                               &s->gateway_latency_ms, errstr, errsize)) ||
        (err = deta_config_int("PAYMENT_WORKERS", 32, 1, 256, &workers, errstr, errsize)) ||
        (err = deta_config_int("PAYMENT_DB_CONNECTIONS", 4, 1, 64, &connections, errstr,
                               errsize)) ||
        (err = load_ledger(s, errstr, errsize)))
        return err;
    s->workers = (int)workers;
    s->db_connections = (int)connections;
    return DETA_OK;
}
