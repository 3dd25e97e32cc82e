/*
 * fuzz_envelope.c - libFuzzer target of the event envelope (lib/src/envelope.c),
 * what every consumer does first with a message from Kafka, and of the ISO-8601
 * instants it holds (lib/src/timestamp.c). Each input is a message value, copied
 * into a heap buffer of exactly its length (no NUL after it, as librdkafka hands
 * it over), given to deta_event_parse. Checks what must hold whatever the input:
 *   - a refused message leaves the event all zeros (nothing to clear) and an error
 *     that names a field or the envelope ("eventId: not a UUID");
 *   - an accepted one has a lower-case UUID, text fields of 1..DETA_ID_MAX bytes
 *     that are the message's strings whole (nothing cut at a NUL), valid instants,
 *     schemaVersion >= 1 and an object payload;
 *   - parse -> serialize -> parse gives the same event (the round trip a replay
 *     and the outbox make);
 *   - each instant, and the input itself taken as text: valid exactly when it
 *     converts, and microseconds -> text -> microseconds is exact.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "deta/envelope.h"
#include "deta/timestamp.h"
#include "fuzz.h"

static const char *const fields[] = {"eventId", "eventType", "schemaVersion", "occurredAt",
                                     "producedAt", "orderId", "correlationId", "producer",
                                     "payload", "envelope"};

static void check_instant(const char *s) {
    int64_t us = 0;
    bool valid = deta_timestamp_valid(s);
    FUZZ_CHECK(deta_timestamp_us(s, &us) == valid);
    int64_t ms = deta_timestamp_ms(s);
    if (!valid) {
        FUZZ_CHECK(ms == -1);
        return;
    }
    /* milliseconds are the microseconds cut (an instant before 1970 rounds down) */
    FUZZ_CHECK(ms == (us >= 0 ? us / 1000 : -((-us + 999) / 1000)) || ms == -1);
    char text[DETA_TS_LEN];
    deta_timestamp_from_us(us, text);
    int64_t again = 0;
    FUZZ_CHECK(deta_timestamp_valid(text) && deta_timestamp_us(text, &again) && again == us);
}

/* The event's text field is the message's string, whole. */
static void check_whole(const json_t *root, const char *key, const char *got) {
    const json_t *v = json_object_get(root, key);
    FUZZ_CHECK(json_is_string(v));
    size_t len = json_string_length(v);
    FUZZ_CHECK(len >= 1 && len == strlen(got));
    if (strcmp(key, "eventId") == 0)
        FUZZ_CHECK(strncasecmp(got, json_string_value(v), len) == 0);
    else
        FUZZ_CHECK(memcmp(got, json_string_value(v), len) == 0);
}

static void check_same(const deta_event_t *a, const deta_event_t *b) {
    FUZZ_CHECK(strcmp(a->event_id, b->event_id) == 0);
    FUZZ_CHECK(strcmp(a->event_type, b->event_type) == 0);
    FUZZ_CHECK(a->schema_version == b->schema_version);
    FUZZ_CHECK(strcmp(a->occurred_at, b->occurred_at) == 0);
    FUZZ_CHECK(strcmp(a->produced_at, b->produced_at) == 0);
    FUZZ_CHECK(strcmp(a->order_id, b->order_id) == 0);
    FUZZ_CHECK(strcmp(a->correlation_id, b->correlation_id) == 0);
    FUZZ_CHECK(strcmp(a->producer, b->producer) == 0);
    FUZZ_CHECK(json_equal(a->payload, b->payload));
}

static void check_accepted(const char *buf, size_t size, const deta_event_t *ev) {
    FUZZ_CHECK(deta_uuid_valid(ev->event_id));
    for (int i = 0; i < DETA_UUID_LEN; i++)
        FUZZ_CHECK(ev->event_id[i] < 'A' || ev->event_id[i] > 'F');
    FUZZ_CHECK(ev->schema_version >= 1);
    FUZZ_CHECK(deta_timestamp_valid(ev->occurred_at) && deta_timestamp_valid(ev->produced_at));
    FUZZ_CHECK(json_is_object(ev->payload));
    json_error_t jerr;
    json_t *root = json_loadb(buf, size, JSON_REJECT_DUPLICATES, &jerr);
    FUZZ_CHECK(root != NULL);
    check_whole(root, "eventId", ev->event_id);
    check_whole(root, "eventType", ev->event_type);
    check_whole(root, "occurredAt", ev->occurred_at);
    check_whole(root, "producedAt", ev->produced_at);
    check_whole(root, "orderId", ev->order_id);
    check_whole(root, "correlationId", ev->correlation_id);
    check_whole(root, "producer", ev->producer);
    json_decref(root);
    check_instant(ev->occurred_at);
    check_instant(ev->produced_at);

    char *text = deta_event_serialize(ev);
    FUZZ_CHECK(text != NULL);
    deta_event_t again;
    char err[256];
    FUZZ_CHECK(deta_event_parse(text, strlen(text), &again, err, sizeof err) == DETA_OK);
    check_same(ev, &again);
    deta_event_clear(&again);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size ? size : 1);
    FUZZ_CHECK(buf != NULL);
    if (size)
        memcpy(buf, data, size);
    deta_event_t ev;
    memset(&ev, 0x5a, sizeof ev);
    char err[256] = "";
    if (deta_event_parse(buf, size, &ev, err, sizeof err) == DETA_OK) {
        check_accepted(buf, size, &ev);
        deta_event_clear(&ev);
    } else {
        static const deta_event_t zero;
        FUZZ_CHECK(memcmp(&ev, &zero, sizeof ev) == 0);
        bool named = false;
        for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
            size_t n = strlen(fields[i]);
            named = named || (strncmp(err, fields[i], n) == 0 && err[n] == ':');
        }
        FUZZ_CHECK(named);
    }
    free(buf);

    char *text = fuzz_text(data, size);
    check_instant(text);
    free(text);
    return 0;
}
