/*
 * envelope.c - the event envelope of docs/contracts.md (see deta/envelope.h).
 *
 * Design: a message from Kafka is untrusted input, so parsing checks every
 * required field against the contract before a consumer sees it, and the error
 * names the field ("eventId: not a UUID") because that text ends up in the
 * dead-letter header x-error, where a person reads it. Fields are copied into the
 * struct's fixed buffers, so a parsed event lives on the stack; only the payload
 * is a reference-counted jansson object. Nothing is written to the caller's struct
 * but zeros until the whole envelope has been validated, which is what lets
 * deta_event_parse promise that a failed parse leaves nothing to clear.
 *
 * Decisions worth knowing:
 * - Duplicate keys are rejected (JSON_REJECT_DUPLICATES): with two "eventId"s a
 *   consumer could not know which one is the idempotency key.
 * - eventId is stored in lower case: UUIDs compare case-insensitively (RFC 4122)
 *   and consumers use the text as a key, so one event must have one spelling.
 * - Timestamps keep the producer's text; one longer than DETA_TS_LEN - 1 bytes
 *   (e.g. nanoseconds and "+00:00") is rejected rather than cut.
 * - Serialization relies on jansson keeping insertion order (it does since 2.8)
 *   to emit the fields in the contract's order.
 */
#include "deta/envelope.h"
#include "deta/topics.h"

#include <limits.h>
#include <string.h>
#include <uuid/uuid.h>

/* ---- UUIDs ---- */

void deta_uuid_new(char out[DETA_UUID_LEN + 1]) {
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
}

static bool is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool deta_uuid_valid(const char *s) {
    if (!s)
        return false;
    for (int i = 0; i < DETA_UUID_LEN; i++) {
        bool dash_here = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash_here ? s[i] != '-' : !is_hex(s[i]))
            return false;
    }
    return s[DETA_UUID_LEN] == '\0';
}

/* ---- building ---- */

/* A field the caller hands us: present, non-empty, short enough, and text that
 * jansson will serialize (valid UTF-8). */
static deta_err_t check_text_arg(const char *field, const char *v, char *errstr,
                                 size_t errsize) {
    if (!v || !*v)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: empty", field);
    if (strlen(v) > DETA_ID_MAX)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: longer than %d bytes", field,
                         DETA_ID_MAX);
    json_t *probe = json_string(v);
    if (!probe)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: not valid UTF-8", field);
    json_decref(probe);
    return DETA_OK;
}

static deta_err_t check_init_args(const char *event_type, const char *order_id,
                                  const char *correlation_id, const char *producer,
                                  const json_t *payload, char *errstr, size_t errsize) {
    deta_err_t err;
    if ((err = check_text_arg("eventType", event_type, errstr, errsize)) ||
        (err = check_text_arg("orderId", order_id, errstr, errsize)) ||
        (err = check_text_arg("correlationId", correlation_id, errstr, errsize)) ||
        (err = check_text_arg("producer", producer, errstr, errsize)))
        return err;
    if (!json_is_object(payload))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "payload: not an object");
    return DETA_OK;
}

deta_err_t deta_event_init(deta_event_t *ev, const char *event_type, const char *order_id,
                           const char *correlation_id, const char *producer, json_t *payload,
                           char *errstr, size_t errsize) {
    memset(ev, 0, sizeof *ev);
    deta_err_t err = check_init_args(event_type, order_id, correlation_id, producer, payload,
                                     errstr, errsize);
    if (err) {
        json_decref(payload);
        return err;
    }
    deta_uuid_new(ev->event_id);
    strcpy(ev->event_type, event_type);
    ev->schema_version = DETA_SCHEMA_VERSION;
    deta_timestamp_now(ev->occurred_at);
    strcpy(ev->produced_at, ev->occurred_at);
    strcpy(ev->order_id, order_id);
    strcpy(ev->correlation_id, correlation_id);
    strcpy(ev->producer, producer);
    ev->payload = payload;
    return DETA_OK;
}

/* ---- parsing ---- */

/* The value of a required string member: present, a string, non-empty. */
static deta_err_t get_string(const json_t *root, const char *field, const char **out,
                             char *errstr, size_t errsize) {
    const json_t *v = json_object_get(root, field);
    if (!v)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: missing", field);
    if (!json_is_string(v))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: not a string", field);
    if (json_string_length(v) == 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: empty", field);
    *out = json_string_value(v);
    return DETA_OK;
}

/* A non-empty string of at most `max` bytes, copied into dst (max + 1 bytes). */
static deta_err_t take_text(const json_t *root, const char *field, char *dst, size_t max,
                            char *errstr, size_t errsize) {
    const char *s = NULL;
    deta_err_t err = get_string(root, field, &s, errstr, errsize);
    if (err)
        return err;
    size_t len = strlen(s);
    if (len > max)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: longer than %zu bytes", field,
                         max);
    memcpy(dst, s, len + 1);
    return DETA_OK;
}

static deta_err_t take_uuid(const json_t *root, const char *field, char dst[DETA_UUID_LEN + 1],
                            char *errstr, size_t errsize) {
    const char *s = NULL;
    deta_err_t err = get_string(root, field, &s, errstr, errsize);
    if (err)
        return err;
    if (!deta_uuid_valid(s))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: not a UUID", field);
    for (int i = 0; i <= DETA_UUID_LEN; i++)
        dst[i] = (s[i] >= 'A' && s[i] <= 'F') ? (char)(s[i] - 'A' + 'a') : s[i];
    return DETA_OK;
}

static deta_err_t take_timestamp(const json_t *root, const char *field, char dst[DETA_TS_LEN],
                                 char *errstr, size_t errsize) {
    const char *s = NULL;
    deta_err_t err = get_string(root, field, &s, errstr, errsize);
    if (err)
        return err;
    if (!deta_timestamp_valid(s))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "%s: not an ISO-8601 UTC instant (e.g. 2026-11-25T12:38:05.123Z)",
                         field);
    size_t len = strlen(s);
    if (len >= DETA_TS_LEN)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: longer than %d bytes", field,
                         DETA_TS_LEN - 1);
    memcpy(dst, s, len + 1);
    return DETA_OK;
}

static deta_err_t take_schema_version(const json_t *root, int *out, char *errstr,
                                      size_t errsize) {
    const json_t *v = json_object_get(root, "schemaVersion");
    if (!v)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "schemaVersion: missing");
    if (!json_is_integer(v))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "schemaVersion: not an integer");
    json_int_t n = json_integer_value(v);
    if (n < 1 || n > INT_MAX)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "schemaVersion: must be an integer >= 1");
    *out = (int)n;
    return DETA_OK;
}

static deta_err_t take_payload(const json_t *root, json_t **out, char *errstr, size_t errsize) {
    json_t *v = json_object_get(root, "payload");
    if (!v)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "payload: missing");
    if (!json_is_object(v))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "payload: not an object");
    *out = v;
    return DETA_OK;
}

/* Every field of the envelope into tmp, in the contract's order; payload is
 * borrowed from root. */
static deta_err_t take_fields(const json_t *root, deta_event_t *tmp, char *errstr,
                              size_t errsize) {
    deta_err_t err;
    if ((err = take_uuid(root, "eventId", tmp->event_id, errstr, errsize)) ||
        (err = take_text(root, "eventType", tmp->event_type, DETA_ID_MAX, errstr, errsize)) ||
        (err = take_schema_version(root, &tmp->schema_version, errstr, errsize)) ||
        (err = take_timestamp(root, "occurredAt", tmp->occurred_at, errstr, errsize)) ||
        (err = take_timestamp(root, "producedAt", tmp->produced_at, errstr, errsize)) ||
        (err = take_text(root, "orderId", tmp->order_id, DETA_ID_MAX, errstr, errsize)) ||
        (err = take_text(root, "correlationId", tmp->correlation_id, DETA_ID_MAX, errstr,
                         errsize)) ||
        (err = take_text(root, "producer", tmp->producer, DETA_ID_MAX, errstr, errsize)) ||
        (err = take_payload(root, &tmp->payload, errstr, errsize)))
        return err;
    return DETA_OK;
}

deta_err_t deta_event_parse(const char *buf, size_t len, deta_event_t *ev, char *errstr,
                            size_t errsize) {
    memset(ev, 0, sizeof *ev);
    if (!buf)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "envelope: no message");
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "envelope: malformed JSON at line %d column %d: %s", jerr.line,
                         jerr.column, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "envelope: not a JSON object");
    }
    deta_event_t tmp;
    memset(&tmp, 0, sizeof tmp);
    deta_err_t err = take_fields(root, &tmp, errstr, errsize);
    if (err == DETA_OK) {
        *ev = tmp;
        ev->payload = json_incref(tmp.payload);
    }
    json_decref(root);
    return err;
}

/* ---- serializing ---- */

/* Adds a member; false when the value could not be made (out of memory, or text
 * that is not UTF-8). Takes ownership of v. */
static bool add_member(json_t *obj, const char *key, json_t *v) {
    return v && json_object_set_new(obj, key, v) == 0;
}

json_t *deta_event_to_json(const deta_event_t *ev) {
    json_t *j = json_object();
    /* A cleared event has no payload; {} keeps the output a valid envelope. */
    json_t *payload = ev->payload ? json_incref(ev->payload) : json_object();
    bool ok = j && add_member(j, "eventId", json_string(ev->event_id)) &&
              add_member(j, "eventType", json_string(ev->event_type)) &&
              add_member(j, "schemaVersion", json_integer(ev->schema_version)) &&
              add_member(j, "occurredAt", json_string(ev->occurred_at)) &&
              add_member(j, "producedAt", json_string(ev->produced_at)) &&
              add_member(j, "orderId", json_string(ev->order_id)) &&
              add_member(j, "correlationId", json_string(ev->correlation_id)) &&
              add_member(j, "producer", json_string(ev->producer));
    if (ok && add_member(j, "payload", payload))
        return j;
    if (!ok)
        json_decref(payload);
    json_decref(j);
    return NULL;
}

char *deta_event_serialize(const deta_event_t *ev) {
    json_t *j = deta_event_to_json(ev);
    if (!j)
        return NULL;
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

void deta_event_clear(deta_event_t *ev) {
    if (!ev)
        return;
    json_decref(ev->payload);
    ev->payload = NULL;
}
