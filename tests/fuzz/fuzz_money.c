/*
 * fuzz_money.c - libFuzzer target of money (lib/src/money.c), which every amount
 * from outside goes through: an order's unitPrice, an event's totalAmount, a
 * setting such as PAYMENT_DECLINE_ABOVE. Each input is taken
 *   - as text (deta_money_parse): accepted exactly when it is
 *     -?[0-9]+(\.[0-9]{1,2})? of magnitude at most DETA_MONEY_MAX (the rule written
 *     again the plain way, with its value), a refused text leaves the output alone,
 *     and parse -> format -> parse gives the same amount, formatted the canonical
 *     way (no leading zeros, two decimals, no "-0.00");
 *   - as a JSON value (deta_money_from_json, what payload readers use): a string
 *     is taken as the text is, an integer as whole units, a number only when it is
 *     exactly the double nearest to the amount found;
 *   - as two amounts and a quantity (its first 24 bytes) for deta_money_add and
 *     deta_money_mul, checked against 128-bit arithmetic.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "deta/money.h"
#include "fuzz.h"

/* The rule, written again the plain way: 1 when valid, with the value. */
static int expect(const char *s, size_t n, __int128 *value) {
    size_t i = 0;
    bool neg = false;
    if (i < n && s[i] == '-')
        neg = true, i++;
    size_t start = i;
    __int128 units = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        if (units < (__int128)1 << 100)
            units = units * 10 + (s[i] - '0');
        i++;
    }
    if (i == start)
        return 0;
    int cents = 0;
    if (i < n && s[i] == '.') {
        i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (i - d < 2)
                cents = cents * 10 + (s[i] - '0');
            i++;
        }
        if (i - d == 0 || i - d > 2)
            return 0;
        if (i - d == 1)
            cents *= 10;
    }
    if (i != n)
        return 0;
    __int128 v = units * 100 + cents;
    if (v > DETA_MONEY_MAX)
        return 0;
    *value = neg ? -v : v;
    return 1;
}

/* The canonical text of m, written again the plain way. */
static void canonical(deta_money_t m, char *out, size_t size) {
    uint64_t mag = m < 0 ? (uint64_t)0 - (uint64_t)m : (uint64_t)m;
    snprintf(out, size, "%s%llu.%02llu", m < 0 ? "-" : "", (unsigned long long)(mag / 100),
             (unsigned long long)(mag % 100));
}

static void check_text(const uint8_t *data, size_t size) {
    char *s = fuzz_text(data, size);
    size_t len = strlen(s);
    char err[128] = "";
    deta_money_t m = 4242;
    deta_err_t rc = deta_money_parse(s, &m, err, sizeof err);
    __int128 want = 0;
    int valid = expect(s, len, &want);
    FUZZ_CHECK((rc == DETA_OK) == (valid == 1));
    if (rc != DETA_OK) {
        FUZZ_CHECK(m == 4242 && err[0] != '\0');
        free(s);
        return;
    }
    FUZZ_CHECK(m == (deta_money_t)want);
    char buf[DETA_MONEY_STRLEN], plain[64];
    deta_money_format(m, buf);
    canonical(m, plain, sizeof plain);
    FUZZ_CHECK(strcmp(buf, plain) == 0);
    deta_money_t again = 0;
    FUZZ_CHECK(deta_money_parse(buf, &again, err, sizeof err) == DETA_OK && again == m);
    free(s);
}

static void check_json(const uint8_t *data, size_t size) {
    json_error_t jerr;
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, &jerr);
    if (!j)
        return;
    char err[128] = "";
    deta_money_t m = 4242;
    deta_err_t rc = deta_money_from_json(j, &m, err, sizeof err);
    if (rc != DETA_OK) {
        FUZZ_CHECK(m == 4242 && err[0] != '\0');
    } else if (json_is_string(j)) {
        deta_money_t t = 0;
        FUZZ_CHECK(strlen(json_string_value(j)) == json_string_length(j));
        FUZZ_CHECK(deta_money_parse(json_string_value(j), &t, err, sizeof err) == DETA_OK &&
                   t == m);
    } else if (json_is_integer(j)) {
        FUZZ_CHECK((__int128)json_integer_value(j) * 100 == m);
    } else {
        FUZZ_CHECK(json_is_real(j) && (double)m / 100.0 == json_real_value(j));
        FUZZ_CHECK(m >= -DETA_MONEY_MAX && m <= DETA_MONEY_MAX);
    }
    json_decref(j);
}

static int64_t take64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return (int64_t)v;
}

static void check_arithmetic(const uint8_t *data, size_t size) {
    if (size < 24)
        return;
    int64_t a = take64(data) % (DETA_MONEY_MAX + 1), b = take64(data + 8) % (DETA_MONEY_MAX + 1);
    int64_t q = take64(data + 16);
    deta_money_t r = 7;
    __int128 sum = (__int128)a + b, product = (__int128)a * q;
    bool fits = sum >= -DETA_MONEY_MAX && sum <= DETA_MONEY_MAX;
    FUZZ_CHECK(deta_money_add(a, b, &r) == fits && r == (fits ? (deta_money_t)sum : 7));
    r = 7;
    fits = product >= -DETA_MONEY_MAX && product <= DETA_MONEY_MAX;
    FUZZ_CHECK(deta_money_mul(a, q, &r) == fits && r == (fits ? (deta_money_t)product : 7));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check_text(data, size);
    check_json(data, size);
    check_arithmetic(data, size);
    return 0;
}
