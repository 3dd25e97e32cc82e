/*
 * timestamp.c - ISO-8601 UTC instants (see deta/timestamp.h).
 *
 * Design: instants are plain integers counted from the epoch; the calendar is
 * converted by arithmetic (the proleptic Gregorian "days from civil" algorithm:
 * 400-year eras of 146097 days, years starting in March so that the leap day
 * comes last), not by timegm/gmtime, so parsing and writing are pure functions
 * that neither the time zone nor the C library's range of time_t can change.
 * Validation is strict about the shape (fixed-width fields, a fraction of 1..9
 * digits, 'Z' or "+00:00" only) and about the calendar (the day must exist;
 * second 60 is allowed for a leap second and counts as the next minute's 00).
 * Negative instants (before 1970) round towards the past, so the fraction of
 * "1969-12-31T23:59:59.999Z" stays .999.
 */
#include "deta/timestamp.h"

#include <string.h>
#include <time.h>

#define US_PER_S INT64_C(1000000)
#define S_PER_DAY INT64_C(86400)

int64_t deta_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void deta_timestamp_now(char out[DETA_TS_LEN]) { deta_timestamp_from_ms(deta_wall_ms(), out); }

/* ---- the calendar ---- */

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The date of a day counted from 1970-01-01 (the inverse of days_from_civil). */
static void civil_from_days(int64_t z, int64_t *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap_year(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(int y, int m) {
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap_year(y) ? 29 : days[m - 1];
}

/* a / b rounded towards minus infinity (b > 0). */
static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* ---- reading ---- */

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* The number written with exactly `width` digits at s, or -1. */
static int read_fixed(const char *s, int width) {
    int v = 0;
    for (int i = 0; i < width; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* "YYYY-MM-DD" naming a day that exists. */
static bool date_valid(const char *s) {
    int y = read_fixed(s, 4), m = read_fixed(s + 5, 2), d = read_fixed(s + 8, 2);
    if (y < 0 || s[4] != '-' || m < 1 || m > 12 || s[7] != '-' || d < 1)
        return false;
    return d <= days_in_month(y, m);
}

/* "HH:MM:SS"; second 60 is allowed for a leap second. */
static bool time_valid(const char *s) {
    int h = read_fixed(s, 2), mi = read_fixed(s + 3, 2), sec = read_fixed(s + 6, 2);
    return h >= 0 && h < 24 && s[2] == ':' && mi >= 0 && mi < 60 && s[5] == ':' &&
           sec >= 0 && sec <= 60;
}

bool deta_timestamp_valid(const char *s) {
    if (!s || strnlen(s, 20) < 20) /* date, 'T', time and at least 'Z' */
        return false;
    if (!date_valid(s) || s[10] != 'T' || !time_valid(s + 11))
        return false;
    const char *p = s + 19;
    if (*p == '.') {
        size_t n = 0;
        while (is_digit(p[1 + n]))
            n++;
        if (n < 1 || n > 9)
            return false;
        p += 1 + n;
    }
    return strcmp(p, "Z") == 0 || strcmp(p, "+00:00") == 0;
}

/* The fraction after s[19] as microseconds (its first six digits). */
static int64_t fraction_us(const char *s) {
    int64_t us = 0;
    int n = 0;
    if (s[19] == '.')
        for (const char *p = s + 20; is_digit(*p) && n < 6; p++, n++)
            us = us * 10 + (*p - '0');
    for (; n < 6; n++)
        us *= 10;
    return us;
}

bool deta_timestamp_us(const char *s, int64_t *epoch_us) {
    if (!deta_timestamp_valid(s))
        return false;
    int64_t days = days_from_civil(read_fixed(s, 4), read_fixed(s + 5, 2), read_fixed(s + 8, 2));
    int64_t secs = days * S_PER_DAY + read_fixed(s + 11, 2) * 3600 + read_fixed(s + 14, 2) * 60 +
                   read_fixed(s + 17, 2);
    *epoch_us = secs * US_PER_S + fraction_us(s);
    return true;
}

int64_t deta_timestamp_ms(const char *s) {
    int64_t us;
    return deta_timestamp_us(s, &us) ? floor_div(us, 1000) : -1;
}

/* ---- writing ---- */

static char *put_digits(char *p, int64_t value, int width) {
    for (int i = width - 1; i >= 0; i--, value /= 10)
        p[i] = (char)('0' + value % 10);
    return p + width;
}

static char *put_field(char *p, int64_t value, int width, char after) {
    p = put_digits(p, value, width);
    *p = after;
    return p + 1;
}

/* The first and last microsecond of the years 0000-9999. */
static int64_t first_us(void) { return days_from_civil(0, 1, 1) * S_PER_DAY * US_PER_S; }
static int64_t last_us(void) { return days_from_civil(10000, 1, 1) * S_PER_DAY * US_PER_S - 1; }

void deta_timestamp_from_us(int64_t epoch_us, char out[DETA_TS_LEN]) {
    int64_t us = epoch_us < first_us() ? first_us() : epoch_us > last_us() ? last_us() : epoch_us;
    int64_t secs = floor_div(us, US_PER_S), frac = us - secs * US_PER_S;
    int64_t days = floor_div(secs, S_PER_DAY), rem = secs - days * S_PER_DAY;
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    char *p = put_field(out, y, 4, '-');
    p = put_field(p, m, 2, '-');
    p = put_field(p, d, 2, 'T');
    p = put_field(p, rem / 3600, 2, ':');
    p = put_field(p, rem / 60 % 60, 2, ':');
    p = put_field(p, rem % 60, 2, '.');
    p = frac % 1000 == 0 ? put_digits(p, frac / 1000, 3) : put_digits(p, frac, 6);
    *p++ = 'Z';
    *p = '\0';
}

void deta_timestamp_from_ms(int64_t epoch_ms, char out[DETA_TS_LEN]) {
    int64_t lo = first_us() / 1000, hi = last_us() / 1000;
    deta_timestamp_from_us((epoch_ms < lo ? lo : epoch_ms > hi ? hi : epoch_ms) * 1000, out);
}
