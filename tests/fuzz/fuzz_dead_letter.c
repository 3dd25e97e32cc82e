/*
 * fuzz_dead_letter.c - libFuzzer target of query-api's dead letters
 * (services/query-api/deadletters/domain.c): a message consumed from a dlq.*
 * topic, whose key, value and headers are whatever some consumer could not
 * handle, made into a record (query_dead_letter_from_message), shown as JSON
 * (query_dead_letter_to_json) and prepared for a replay (query_replay_prepare).
 *
 * An input is laid out as: a byte of flags (bit 0 a key, bit 1 a value, bits 2..4
 * the topic: one of the five dlq.* topics, a raw one or a malformed one), two
 * bytes of partition, a key (a length byte, then the bytes), a value (two length
 * bytes, big-endian, then the bytes), then headers until the input ends: a name
 * (a length byte, then the bytes, cut at a NUL as the C string it is) and a value
 * (a length byte, 255 for a header without a value, then the bytes). Every part
 * is copied into a heap buffer of exactly its length.
 *
 * Checks what must hold whatever the message: a record is always made (never
 * re-dead-letter a dead letter); its texts are valid UTF-8 and its JSON form can
 * be written, with every header in order; the dead-letter headers are read only
 * when well formed; a replay goes to the raw twin of the dlq topic with none of
 * the dead-letter headers but a fresh x-replayed-from, every other header sent on
 * with the bytes it came with (text or base64 alike) under its name (a name that
 * is not UTF-8, or longer than QUERY_DLQ_NAME_MAX, is kept cleaned, as the record
 * documents), and the key as it came; a replay refused names what cannot be sent.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "query-api/deadletters/domain.h"

#define MAX_HEADERS 32

typedef struct reader {
    const uint8_t *p;
    size_t left;
} reader_t;

static size_t take_len(reader_t *r, int bytes) {
    size_t n = 0;
    for (int i = 0; i < bytes && r->left; i++, r->p++, r->left--)
        n = n << 8 | *r->p;
    return n;
}

/* The next n bytes (fewer when the input ends) in a buffer of exactly their size. */
static uint8_t *take_bytes(reader_t *r, size_t n, size_t *got) {
    n = n < r->left ? n : r->left;
    uint8_t *b = malloc(n ? n : 1);
    FUZZ_CHECK(b != NULL);
    if (n)
        memcpy(b, r->p, n);
    r->p += n;
    r->left -= n;
    *got = n;
    return b;
}

static bool valid_utf8(const char *s) {
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

static bool is_ours(const char *name) { return query_dlq_header_is_ours(name); }

static void check_replay(const query_dead_letter_t *d, const query_header_t *h, size_t nh,
                         const char *const *names) {
    query_replay_t r;
    query_violation_t v;
    memset(&v, 0, sizeof v);
    deta_err_t rc = query_replay_prepare(d, &r, &v);
    FUZZ_CHECK(rc != DETA_ERR_INTERNAL);
    if (rc != DETA_OK) {
        FUZZ_CHECK(v.field[0] && v.message[0]);
        query_replay_clear(&r);
        return;
    }
    int index = query_dlq_topic_index(d->topic);
    FUZZ_CHECK(index >= 0 && strncmp(r.topic, "raw.", 4) == 0 &&
               strcmp(r.topic + 4, query_dlq_topics[index] + 4) == 0);
    if (d->has_key)
        FUZZ_CHECK(r.key && strlen(r.key) == d->key_len && memcmp(r.key, d->key, d->key_len) == 0);
    else
        FUZZ_CHECK(r.key == NULL);
    /* the headers but ours, in order, then x-replayed-from */
    size_t k = 0;
    for (size_t i = 0; i < nh; i++) {
        if (is_ours(names[i]))
            continue;
        FUZZ_CHECK(k < r.nheaders);
        /* a name is kept as text: one that is not UTF-8 or is longer than
         * QUERY_DLQ_NAME_MAX is cleaned, so it is sent on as cleaned */
        bool text_name = valid_utf8(names[i]) && strlen(names[i]) <= QUERY_DLQ_NAME_MAX;
        FUZZ_CHECK(!text_name || strcmp(r.headers[k].name, names[i]) == 0);
        if (h[i].value)
            FUZZ_CHECK(strlen(r.headers[k].value) == h[i].len &&
                       memcmp(r.headers[k].value, h[i].value, h[i].len) == 0);
        k++;
    }
    FUZZ_CHECK(k + 1 == r.nheaders && strcmp(r.headers[k].name, "x-replayed-from") == 0);
    for (size_t i = 0; i < r.nheaders; i++)
        FUZZ_CHECK(i + 1 == r.nheaders || !is_ours(r.headers[i].name));
    query_replay_clear(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const topics[] = {"dlq.order-events",    "dlq.inventory-events",
                                         "dlq.payment-events",  "dlq.delivery-events",
                                         "dlq.eta-events",      "raw.order-events",
                                         "dlq.\xff\xfeorder-events"};
    reader_t r = {data, size};
    unsigned flags = (unsigned)take_len(&r, 1);
    const char *topic = topics[(flags >> 2) % (sizeof topics / sizeof *topics)];
    int32_t partition = (int32_t)take_len(&r, 2);
    size_t key_len, value_len;
    uint8_t *key = take_bytes(&r, take_len(&r, 1), &key_len);
    uint8_t *value = take_bytes(&r, take_len(&r, 2), &value_len);
    query_header_t headers[MAX_HEADERS];
    char *names[MAX_HEADERS];
    uint8_t *values[MAX_HEADERS];
    size_t nh = 0;
    while (r.left && nh < MAX_HEADERS) {
        size_t n;
        uint8_t *raw = take_bytes(&r, take_len(&r, 1), &n);
        names[nh] = fuzz_text(raw, strnlen((const char *)raw, n));
        free(raw);
        size_t vlen = take_len(&r, 1);
        values[nh] = vlen == 255 ? NULL : take_bytes(&r, vlen, &n);
        headers[nh] = (query_header_t){names[nh], values[nh], values[nh] ? n : 0};
        nh++;
    }

    query_dead_letter_t d;
    FUZZ_CHECK(query_dead_letter_from_message(topic, partition, 42, (flags & 1) ? key : NULL,
                                              key_len, (flags & 2) ? value : NULL, value_len,
                                              headers, nh, &d) == DETA_OK);
    FUZZ_CHECK(d.has_key == !!(flags & 1) && d.has_value == !!(flags & 2));
    FUZZ_CHECK(valid_utf8(d.topic) && valid_utf8(d.original_topic) &&
               valid_utf8(d.consumer_group) && valid_utf8(d.error) &&
               valid_utf8(d.replayed_from));
    FUZZ_CHECK(d.original_partition >= -1 && d.original_offset >= -1 && d.retry_count >= -1);
    FUZZ_CHECK(json_array_size(d.headers) == nh);
    for (int detail = 0; detail < 2; detail++) {
        json_t *j = query_dead_letter_to_json(&d, detail);
        FUZZ_CHECK(j != NULL);
        char *text = json_dumps(j, JSON_COMPACT);
        FUZZ_CHECK(text != NULL);
        json_t *back = json_loads(text, 0, NULL);
        FUZZ_CHECK(back && json_equal(back, j));
        json_decref(back);
        free(text);
        json_decref(j);
    }
    check_replay(&d, headers, nh, (const char *const *)names);
    query_dead_letter_clear(&d);

    for (size_t i = 0; i < nh; i++) {
        free(names[i]);
        free(values[i]);
    }
    free(key);
    free(value);
    return 0;
}
