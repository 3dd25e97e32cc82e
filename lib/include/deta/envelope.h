/*
 * envelope.h - the event envelope of docs/contracts.md: build, serialize, parse, validate.
 *
 * An event is a plain struct with fixed-size fields (no allocation but the payload)
 * so that consumers can parse into a stack variable. Parsing validates every
 * required field: eventId a UUID, eventType a non-empty string, schemaVersion an
 * integer >= 1, occurredAt and producedAt ISO-8601 UTC instants, orderId,
 * correlationId and producer non-empty strings of at most DETA_ID_MAX bytes,
 * payload an object. Unknown fields are ignored. Unknown event types parse fine:
 * whether to handle them is the consumer's business.
 */
#ifndef DETA_ENVELOPE_H
#define DETA_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "deta/err.h"
#include "deta/timestamp.h"

#define DETA_UUID_LEN 36 /* text form, without NUL */
#define DETA_ID_MAX 64   /* longest orderId / correlationId / producer / type */

typedef struct deta_event {
    char event_id[DETA_UUID_LEN + 1];
    char event_type[DETA_ID_MAX + 1];
    int schema_version;
    char occurred_at[DETA_TS_LEN];
    char produced_at[DETA_TS_LEN];
    char order_id[DETA_ID_MAX + 1];
    char correlation_id[DETA_ID_MAX + 1];
    char producer[DETA_ID_MAX + 1];
    json_t *payload; /* owned reference to a JSON object */
} deta_event_t;

/* A new event: fresh v4 eventId, occurredAt = producedAt = now, schemaVersion 1.
 * Takes ownership of payload (a JSON object) even on error. */
deta_err_t deta_event_init(deta_event_t *ev, const char *event_type, const char *order_id,
                           const char *correlation_id, const char *producer, json_t *payload,
                           char *errstr, size_t errsize);

/* Parse and validate; on error *ev holds nothing that needs clearing and errstr
 * names the offending field. */
deta_err_t deta_event_parse(const char *buf, size_t len, deta_event_t *ev, char *errstr,
                            size_t errsize);

/* The envelope as a new JSON object (payload shared by reference). */
json_t *deta_event_to_json(const deta_event_t *ev);

/* Compact JSON text, malloc'd; the caller frees it. NULL only when out of memory. */
char *deta_event_serialize(const deta_event_t *ev);

/* Releases the payload; the struct may then be reused. */
void deta_event_clear(deta_event_t *ev);

/* Helpers the envelope is made of, useful on their own. */
void deta_uuid_new(char out[DETA_UUID_LEN + 1]);
bool deta_uuid_valid(const char *s); /* 8-4-4-4-12 hex digits */
/* Instants (deta_timestamp_*) are in deta/timestamp.h, included above. */

#endif
