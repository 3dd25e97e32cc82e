/*
 * money.h - exact money: decimals with two places, held as integer minor units.
 *
 * No binary floating point ever takes part in arithmetic. Text forms are
 * "-?[0-9]+(\.[0-9]{1,2})?"; more than two decimals, a sign other than a leading
 * '-', an empty string or a value beyond DETA_MONEY_MAX are rejected, never rounded.
 * On the wire (events and REST responses) amounts are JSON strings such as "12.30",
 * so that no reader loses a cent to a double.
 */
#ifndef DETA_MONEY_H
#define DETA_MONEY_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>
#include "deta/err.h"

typedef int64_t deta_money_t; /* minor units: 1234 is 12.34 */

/* Largest magnitude accepted: 10^15 - 1 minor units (9 999 999 999 999.99). */
#define DETA_MONEY_MAX INT64_C(999999999999999)
/* Room for the longest formatted amount plus NUL. */
#define DETA_MONEY_STRLEN 24

deta_err_t deta_money_parse(const char *s, deta_money_t *out, char *errstr, size_t errsize);

/* From a JSON value: a string in the text form above, or a JSON number. A number
 * is accepted only when it is exactly the nearest double of a value with at most
 * two decimals and 15 significant digits (jansson hands numbers over as doubles);
 * integers are exact. Anything else is DETA_ERR_INVALID. */
deta_err_t deta_money_from_json(const json_t *v, deta_money_t *out, char *errstr, size_t errsize);

/* "12.30", "-0.05", "0.00". Returns buf. */
char *deta_money_format(deta_money_t m, char buf[DETA_MONEY_STRLEN]);

/* Checked arithmetic: false (and *out untouched) when the result leaves
 * [-DETA_MONEY_MAX, DETA_MONEY_MAX]. */
bool deta_money_add(deta_money_t a, deta_money_t b, deta_money_t *out);
bool deta_money_mul(deta_money_t a, int64_t qty, deta_money_t *out);

/* ISO 4217 shape: exactly three capital ASCII letters. */
bool deta_currency_valid(const char *s);

#endif
