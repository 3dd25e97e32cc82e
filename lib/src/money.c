/*
 * money.c - exact money in integer minor units (see deta/money.h).
 *
 * Design: an amount is an int64 count of cents, and text is the only way in or
 * out, so no binary floating point ever takes part in arithmetic. The parser is
 * a hand-written scanner for "-?[0-9]+(\.[0-9]{1,2})?" rather than strtod or
 * sscanf, because those accept what we must refuse ("1e3", "+1", " 1", "0x10")
 * and round what we must reject ("12.345"). Leading zeros are accepted ("007.10")
 * since they change nothing. A bare point on either side (".5", "1.") is refused:
 * the text form requires digits on both sides when there is a point.
 *
 * JSON numbers reach us as doubles (jansson's json_real). Such a number is taken
 * only when it is exactly the double nearest to a decimal with two places that
 * fits DETA_MONEY_MAX (hence at most 15 significant digits): 12.34 is fine,
 * 12.345 or 1e20 is not. Every integer up to 10^15 is exact in a double and
 * division by 100.0 is correctly rounded, so comparing m / 100.0 with the input
 * proves the input was the nearest double of m cents. The double is used only
 * for that check, never in arithmetic.
 *
 * Error texts are predicates ("has more than two decimals") so that a caller can
 * prefix them with the field's name: "items[0].unitPrice has more than two decimals".
 */
#include "deta/money.h"

#include <math.h>
#include <string.h>

#define CENTS_PER_UNIT 100

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool in_range(int64_t m) { return m >= -DETA_MONEY_MAX && m <= DETA_MONEY_MAX; }

static deta_err_t not_decimal(char *errstr, size_t errsize) {
    return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                     "is not a decimal number (expected e.g. \"12.30\")");
}

static deta_err_t out_of_range(char *errstr, size_t errsize) {
    return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                     "is out of range (at most 9999999999999.99 in magnitude)");
}

/* Accumulates the integer digits at *p into *units (whole units), stopping at
 * the first non-digit. False when there is no digit or the value is too big. */
static bool scan_units(const char **p, int64_t *units, bool *overflow) {
    const char *s = *p;
    int64_t v = 0;
    *overflow = false;
    if (!is_digit(*s))
        return false;
    for (; is_digit(*s); s++) {
        v = v * 10 + (*s - '0');
        if (v > DETA_MONEY_MAX / CENTS_PER_UNIT) {
            *overflow = true; /* keep scanning: a syntax error is reported first */
            v = DETA_MONEY_MAX;
        }
    }
    *units = v;
    *p = s;
    return true;
}

/* The decimals after the point at *p: one or two digits, as cents. Sets
 * *too_many when more digits follow (the text is otherwise well formed). */
static bool scan_cents(const char **p, int64_t *cents, bool *too_many) {
    const char *s = *p;
    size_t n = 0;
    int64_t v = 0;
    *too_many = false;
    while (is_digit(s[n])) {
        if (n < 2)
            v = v * 10 + (s[n] - '0');
        n++;
    }
    if (n == 0)
        return false;
    if (n == 1)
        v *= 10;
    *too_many = n > 2;
    *cents = v;
    *p = s + n;
    return true;
}

deta_err_t deta_money_parse(const char *s, deta_money_t *out, char *errstr, size_t errsize) {
    if (!s || !*s)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "is empty");
    const char *p = s;
    bool negative = *p == '-';
    if (negative)
        p++;
    int64_t units = 0, cents = 0;
    bool overflow = false, too_many = false;
    if (!scan_units(&p, &units, &overflow))
        return not_decimal(errstr, errsize);
    if (*p == '.') {
        p++;
        if (!scan_cents(&p, &cents, &too_many))
            return not_decimal(errstr, errsize);
    }
    if (*p != '\0')
        return not_decimal(errstr, errsize);
    if (too_many)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "has more than two decimals");
    if (overflow)
        return out_of_range(errstr, errsize);
    int64_t m = units * CENTS_PER_UNIT + cents;
    if (!in_range(m))
        return out_of_range(errstr, errsize);
    *out = negative ? -m : m;
    return DETA_OK;
}

static deta_err_t money_from_integer(json_int_t v, deta_money_t *out, char *errstr,
                                     size_t errsize) {
    if (v > DETA_MONEY_MAX / CENTS_PER_UNIT || v < -(DETA_MONEY_MAX / CENTS_PER_UNIT))
        return out_of_range(errstr, errsize);
    *out = (deta_money_t)v * CENTS_PER_UNIT;
    return DETA_OK;
}

static deta_err_t money_from_real(double d, deta_money_t *out, char *errstr, size_t errsize) {
    if (!isfinite(d))
        return not_decimal(errstr, errsize);
    /* Bound before llround so that the conversion cannot overflow. */
    if (fabs(d) > (double)DETA_MONEY_MAX / CENTS_PER_UNIT + 1.0)
        return out_of_range(errstr, errsize);
    long long m = llround(d * CENTS_PER_UNIT);
    if (!in_range(m))
        return out_of_range(errstr, errsize);
    if ((double)m / 100.0 != d)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "has more than two decimals");
    *out = m;
    return DETA_OK;
}

deta_err_t deta_money_from_json(const json_t *v, deta_money_t *out, char *errstr,
                                size_t errsize) {
    if (json_is_string(v)) {
        if (strlen(json_string_value(v)) != json_string_length(v))
            return not_decimal(errstr, errsize); /* embedded NUL */
        return deta_money_parse(json_string_value(v), out, errstr, errsize);
    }
    if (json_is_integer(v))
        return money_from_integer(json_integer_value(v), out, errstr, errsize);
    if (json_is_real(v))
        return money_from_real(json_real_value(v), out, errstr, errsize);
    return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                     "must be a decimal string such as \"12.30\" or a number");
}

char *deta_money_format(deta_money_t m, char buf[DETA_MONEY_STRLEN]) {
    /* The magnitude as unsigned so that even INT64_MIN has one. */
    uint64_t mag = m < 0 ? (uint64_t)0 - (uint64_t)m : (uint64_t)m;
    char tmp[DETA_MONEY_STRLEN];
    size_t n = 0;
    tmp[n++] = (char)('0' + mag % 10), mag /= 10;
    tmp[n++] = (char)('0' + mag % 10), mag /= 10;
    tmp[n++] = '.';
    do {
        tmp[n++] = (char)('0' + mag % 10);
        mag /= 10;
    } while (mag > 0);
    if (m < 0)
        tmp[n++] = '-';
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    buf[n] = '\0';
    return buf;
}

bool deta_money_add(deta_money_t a, deta_money_t b, deta_money_t *out) {
    deta_money_t r;
    if (__builtin_add_overflow(a, b, &r) || !in_range(r))
        return false;
    *out = r;
    return true;
}

bool deta_money_mul(deta_money_t a, int64_t qty, deta_money_t *out) {
    deta_money_t r;
    if (__builtin_mul_overflow(a, qty, &r) || !in_range(r))
        return false;
    *out = r;
    return true;
}

bool deta_currency_valid(const char *s) {
    if (!s)
        return false;
    for (int i = 0; i < 3; i++)
        if (s[i] < 'A' || s[i] > 'Z')
            return false;
    return s[3] == '\0';
}
