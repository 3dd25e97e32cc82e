/*
 * timestamp.h - ISO-8601 UTC instants, parsed and written in one place.
 *
 * Every instant on the wire (the envelope's occurredAt and producedAt, payload
 * fields such as authorizedAt or estimatedDeliveryAt, the read model's columns)
 * is text of the form YYYY-MM-DDTHH:MM:SS, an optional fraction of 1 to 9
 * digits, then 'Z' or "+00:00". It is read into an integer count since
 * 1970-01-01 UTC (milliseconds, or microseconds where a finer part must
 * survive) and written back always with 'Z': milliseconds, or microseconds
 * when the instant has a finer part, so that writing a parsed instant is exact.
 */
#ifndef DETA_TIMESTAMP_H
#define DETA_TIMESTAMP_H

#include <stdbool.h>
#include <stdint.h>

#define DETA_TS_LEN 32 /* buffer for "2026-11-25T12:38:05.123Z" and NUL */

/* The wall clock in milliseconds since 1970-01-01 UTC. */
int64_t deta_wall_ms(void);

/* Now, written like deta_timestamp_from_ms. */
void deta_timestamp_now(char out[DETA_TS_LEN]);

/* An instant written with milliseconds and 'Z' ("2026-11-25T12:38:05.123Z"), for
 * instants computed from now (expiries, ETAs). Instants outside the years
 * 0000-9999 (which no parse yields) are clamped to them. */
void deta_timestamp_from_ms(int64_t epoch_ms, char out[DETA_TS_LEN]);

/* Like deta_timestamp_from_ms for microseconds: three fraction digits when the
 * instant has no finer part, six otherwise; so from_us(parse_us(s)) is exact. */
void deta_timestamp_from_us(int64_t epoch_us, char out[DETA_TS_LEN]);

/* ISO-8601 UTC instant: YYYY-MM-DDTHH:MM:SS, optional fraction, then 'Z' or
 * "+00:00"; the date and time must exist (no Feb 30, no hour 24). */
bool deta_timestamp_valid(const char *s);

/* Such an instant as microseconds since the Unix epoch (the fraction cut to
 * microseconds); false when s is not valid (NULL included). */
bool deta_timestamp_us(const char *s, int64_t *epoch_us);

/* Such an instant as milliseconds since the Unix epoch (the fraction cut to
 * milliseconds); -1 when s is not valid. */
int64_t deta_timestamp_ms(const char *s);

#endif
