/*
 * domain.c - the dead-letter administration's rules (domain.h): the record of a
 * consumed dead letter, its JSON, the list's arguments and the record id, what a
 * replay sends.
 *
 * Bytes from a dead letter are shown as text only when they are valid UTF-8
 * without NUL (what JSON and Postgres text can hold unchanged); anything else is
 * base64, so the API never alters what it shows. Header text copied into the
 * record's typed fields is cleaned instead (an invalid byte becomes '?'): those
 * fields are for reading, and the headers keep the exact bytes.
 */
#include "domain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *text_or_null(const char *s) { return s[0] ? json_string(s) : json_null(); }

/* ---- topics and headers ---- */

const char *const *const query_dlq_topics = deta_topics_all + DETA_TOPICS_RAW_COUNT;

int query_dlq_topic_index(const char *topic) {
    for (int i = 0; topic && i < QUERY_DLQ_TOPIC_COUNT; i++)
        if (strcmp(query_dlq_topics[i], topic) == 0)
            return i;
    return -1;
}

#define HDR_ORIGINAL_TOPIC "x-original-topic"
#define HDR_ORIGINAL_PARTITION "x-original-partition"
#define HDR_ORIGINAL_OFFSET "x-original-offset"
#define HDR_CONSUMER_GROUP "x-consumer-group"
#define HDR_ERROR "x-error"
#define HDR_RETRY_COUNT "x-retry-count"
#define HDR_REPLAYED_FROM "x-replayed-from"

static const char *const dead_letter_headers[] = {
    HDR_RETRY_COUNT, HDR_ORIGINAL_TOPIC, HDR_ORIGINAL_PARTITION, HDR_ORIGINAL_OFFSET,
    HDR_ERROR,       HDR_CONSUMER_GROUP, HDR_REPLAYED_FROM};

bool query_dlq_header_is_ours(const char *name) {
    for (size_t i = 0; name && i < sizeof dead_letter_headers / sizeof *dead_letter_headers; i++)
        if (strcmp(dead_letter_headers[i], name) == 0)
            return true;
    return false;
}

/* The length of the UTF-8 sequence at s (at most n bytes), or 0 when it is not
 * a valid one: no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_sequence(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
                                           : c >= 0xf0 && c <= 0xf4 ? 4
                                                                     : 0;
    if (len == 0 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) ||
        (c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f))
        return 0;
    return len;
}

/* Valid UTF-8 without NUL. */
static bool is_text(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t k = s[i] ? utf8_sequence(s + i, n - i) : 0;
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

/* Copies bytes into dst as valid UTF-8: an invalid byte or a NUL becomes '?';
 * stops before a sequence that would not fit. */
static void clean_text(char *dst, size_t dstsize, const unsigned char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = s[i] ? utf8_sequence(s + i, n - i) : 0;
        size_t out = k ? k : 1;
        if (o + out >= dstsize)
            break;
        if (k)
            memcpy(dst + o, s + i, k);
        else
            dst[o] = '?';
        o += out;
        i += k ? k : 1;
    }
    dst[o] = '\0';
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 with padding; malloc'd. */
static char *base64_encode(const unsigned char *in, size_t n) {
    char *out = malloc((n + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        size_t left = n - i;
        unsigned v = (unsigned)in[i] << 16 | (left > 1 ? (unsigned)in[i + 1] << 8 : 0) |
                     (left > 2 ? in[i + 2] : 0);
        for (size_t k = 0; k < 4; k++)
            out[o++] = k <= (left < 3 ? left : 3) ? B64[(v >> (18 - 6 * k)) & 0x3f] : '=';
    }
    out[o] = '\0';
    return out;
}

/* Decodes standard base64 with padding into a malloc'd buffer (NUL-terminated,
 * *len bytes before it); NULL when malformed or out of memory. */
static unsigned char *base64_decode(const char *in, size_t *len) {
    size_t n = strlen(in);
    if (n % 4 != 0)
        return NULL;
    unsigned char *out = malloc(n / 4 * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        unsigned v = 0;
        int pad = 0;
        for (size_t k = 0; k < 4; k++) {
            const char *p = in[i + k] && in[i + k] != '=' ? strchr(B64, in[i + k]) : NULL;
            bool padding = in[i + k] == '=' && i + 4 == n && k >= 2;
            if ((!p && !padding) || (p && pad)) {
                free(out);
                return NULL;
            }
            pad += padding;
            v = v << 6 | (p ? (unsigned)(p - B64) : 0);
        }
        for (int k = 0; k < 3 - pad; k++)
            out[o++] = (unsigned char)(v >> (16 - 8 * k));
    }
    out[o] = '\0';
    *len = o;
    return out;
}

/* Bytes as a JSON string: text as is, else base64; *encoding says which. */
static json_t *bytes_to_json(const unsigned char *s, size_t n, const char **encoding) {
    if (is_text(s, n)) {
        *encoding = "utf-8";
        return json_stringn((const char *)s, n);
    }
    *encoding = "base64";
    char *b = base64_encode(s, n);
    json_t *j = b ? json_string(b) : NULL;
    free(b);
    return j;
}

bool query_dead_letter_set_bytes(unsigned char **dst, size_t *dst_len, bool *present,
                                 const void *src, size_t len) {
    free(*dst);
    *dst = NULL;
    *dst_len = 0;
    *present = src != NULL;
    if (!src)
        return true;
    *dst = malloc(len + 1);
    if (!*dst)
        return false;
    memcpy(*dst, src, len);
    (*dst)[len] = '\0';
    *dst_len = len;
    return true;
}

void query_dead_letter_clear(query_dead_letter_t *d) {
    free(d->key);
    free(d->value);
    json_decref(d->headers);
    d->key = d->value = NULL;
    d->headers = NULL;
}

/* A decimal number in [0, max] with no sign, blank or other character. */
static bool parse_count(const unsigned char *s, size_t n, int64_t max, int64_t *out) {
    if (n == 0 || n > 18)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

static json_t *header_to_json(const query_header_t *h) {
    json_t *o = json_object();
    char name[QUERY_DLQ_NAME_MAX + 1];
    clean_text(name, sizeof name, (const unsigned char *)(h->name ? h->name : ""),
               h->name ? strlen(h->name) : 0);
    json_object_set_new(o, "name", json_string(name));
    if (!h->value) {
        json_object_set_new(o, "value", json_null());
    } else {
        const char *encoding;
        json_t *v = bytes_to_json(h->value, h->len, &encoding);
        json_object_set_new(o, strcmp(encoding, "utf-8") == 0 ? "value" : "base64", v);
    }
    return o;
}

/* Reads one dead-letter header into its field; a malformed one leaves it unknown. */
static void read_dead_letter_header(query_dead_letter_t *d, const query_header_t *h) {
    const unsigned char *v = h->value;
    size_t n = v ? h->len : 0;
    int64_t num;
    if (!h->name || !v)
        return;
    if (strcmp(h->name, HDR_ORIGINAL_TOPIC) == 0)
        clean_text(d->original_topic, sizeof d->original_topic, v, n);
    else if (strcmp(h->name, HDR_CONSUMER_GROUP) == 0)
        clean_text(d->consumer_group, sizeof d->consumer_group, v, n);
    else if (strcmp(h->name, HDR_ERROR) == 0)
        clean_text(d->error, sizeof d->error, v, n);
    else if (strcmp(h->name, HDR_REPLAYED_FROM) == 0)
        clean_text(d->replayed_from, sizeof d->replayed_from, v, n);
    else if (strcmp(h->name, HDR_ORIGINAL_PARTITION) == 0 && parse_count(v, n, INT32_MAX, &num))
        d->original_partition = (int32_t)num;
    else if (strcmp(h->name, HDR_ORIGINAL_OFFSET) == 0 && parse_count(v, n, INT64_MAX, &num))
        d->original_offset = num;
    else if (strcmp(h->name, HDR_RETRY_COUNT) == 0 && parse_count(v, n, INT32_MAX, &num))
        d->retry_count = (int)num;
}

deta_err_t query_dead_letter_from_message(const char *topic, int32_t partition, int64_t offset,
                                          const void *key, size_t key_len, const void *value,
                                          size_t value_len, const query_header_t *headers,
                                          size_t nheaders, query_dead_letter_t *out) {
    memset(out, 0, sizeof *out);
    clean_text(out->topic, sizeof out->topic, (const unsigned char *)topic, strlen(topic));
    out->partition = partition;
    out->offset = offset;
    out->original_partition = -1;
    out->original_offset = -1;
    out->retry_count = -1;
    out->headers = json_array();
    if (!out->headers ||
        !query_dead_letter_set_bytes(&out->key, &out->key_len, &out->has_key, key, key_len) ||
        !query_dead_letter_set_bytes(&out->value, &out->value_len, &out->has_value, value,
                                     value_len))
        goto oom;
    for (size_t i = 0; i < nheaders; i++) {
        json_t *h = header_to_json(&headers[i]);
        if (!h || json_array_append_new(out->headers, h) != 0)
            goto oom;
        read_dead_letter_header(out, &headers[i]);
    }
    return DETA_OK;
oom:
    query_dead_letter_clear(out);
    return DETA_ERR_INTERNAL;
}

static json_t *int_or_null(int64_t v) { return v >= 0 ? json_integer(v) : json_null(); }

/* "key"/"keyEncoding" (or value) from optional bytes. */
static void set_bytes(json_t *o, const char *name, const char *encoding_name, bool present,
                      const unsigned char *s, size_t n) {
    const char *encoding = NULL;
    json_t *v = present ? bytes_to_json(s, n, &encoding) : NULL;
    json_object_set_new(o, name, v ? v : json_null());
    json_object_set_new(o, encoding_name, v ? json_string(encoding) : json_null());
}

json_t *query_dead_letter_to_json(const query_dead_letter_t *d, bool detail) {
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "id", json_integer(d->id));
    json_object_set_new(o, "topic", json_string(d->topic));
    json_object_set_new(o, "partition", json_integer(d->partition));
    json_object_set_new(o, "offset", json_integer(d->offset));
    set_bytes(o, "key", "keyEncoding", d->has_key, d->key, d->key_len);
    if (detail) {
        set_bytes(o, "value", "valueEncoding", d->has_value, d->value, d->value_len);
        json_object_set(o, "headers", d->headers ? d->headers : json_array());
    }
    json_object_set_new(o, "originalTopic", text_or_null(d->original_topic));
    json_object_set_new(o, "originalPartition", int_or_null(d->original_partition));
    json_object_set_new(o, "originalOffset", int_or_null(d->original_offset));
    json_object_set_new(o, "consumerGroup", text_or_null(d->consumer_group));
    json_object_set_new(o, "error", text_or_null(d->error));
    json_object_set_new(o, "retryCount", int_or_null(d->retry_count));
    json_object_set_new(o, "replayedFrom", text_or_null(d->replayed_from));
    json_object_set_new(o, "receivedAt", text_or_null(d->received_at));
    json_object_set_new(o, "replayCount", json_integer(d->replay_count));
    json_object_set_new(o, "lastReplayedAt", text_or_null(d->last_replayed_at));
    return o;
}

/* "dlq.x" -> "raw.x" into buf (DETA_TOPIC_MAX + 1 bytes). */
static void raw_twin(const char *dlq_topic, char *buf) {
    snprintf(buf, DETA_TOPIC_MAX + 1, "raw.%s", dlq_topic + 4);
}

json_t *query_dlq_summary_to_json(const query_dlq_counts_t counts[QUERY_DLQ_TOPIC_COUNT]) {
    json_t *topics = json_array();
    long total = 0, pending = 0;
    for (int i = 0; i < QUERY_DLQ_TOPIC_COUNT; i++) {
        char raw[DETA_TOPIC_MAX + 1];
        raw_twin(query_dlq_topics[i], raw);
        json_array_append_new(
            topics, json_pack("{s:s, s:s, s:I, s:I, s:I}", "topic", query_dlq_topics[i],
                              "originalTopic", raw, "total", (json_int_t)counts[i].total,
                              "pending", (json_int_t)counts[i].pending, "replayed",
                              (json_int_t)(counts[i].total - counts[i].pending)));
        total += counts[i].total;
        pending += counts[i].pending;
    }
    return json_pack("{s:o, s:I, s:I, s:I}", "topics", topics, "total", (json_int_t)total,
                     "pending", (json_int_t)pending, "replayed", (json_int_t)(total - pending));
}

static const char *const dlq_status_names[] = {"all", "pending", "replayed"};

const char *query_dlq_status_name(query_dlq_status_t s) {
    return (size_t)s < sizeof dlq_status_names / sizeof *dlq_status_names ? dlq_status_names[s]
                                                                         : "all";
}

deta_err_t query_dlq_list_params_parse(const char *status, const char *limit, const char *offset,
                                       const char *key, query_dlq_list_params_t *p,
                                       query_violation_t *v) {
    memset(p, 0, sizeof *p);
    p->limit = QUERY_DLQ_LIMIT_DEFAULT;
    if (status) {
        size_t i = 0;
        while (i < 3 && strcmp(dlq_status_names[i], status) != 0)
            i++;
        if (i == 3)
            return query_violation(v, "status", "status must be one of pending, replayed, all");
        p->status = (query_dlq_status_t)i;
    }
    int64_t n;
    if (limit) {
        if (!parse_count((const unsigned char *)limit, strlen(limit), QUERY_DLQ_LIMIT_MAX, &n) ||
            n < 1)
            return query_violation(v, "limit", "limit must be an integer from 1 to 200");
        p->limit = (int)n;
    }
    if (offset) {
        if (!parse_count((const unsigned char *)offset, strlen(offset), QUERY_DLQ_OFFSET_MAX, &n))
            return query_violation(v, "offset", "offset must be an integer from 0 to 1000000000");
        p->offset = (long)n;
    }
    if (key) {
        if (!key[0] || strlen(key) > QUERY_DLQ_KEY_MAX)
            return query_violation(v, "key", "key must have 1 to 256 bytes");
        snprintf(p->key, sizeof p->key, "%s", key);
        p->has_key = true;
    }
    return DETA_OK;
}

#define QUERY_DLQ_ID_MAX 9007199254740992LL /* 2^53 */

bool query_dlq_id_parse(const char *text, int64_t *id) {
    int64_t v;
    if (!text || text[0] == '0' ||
        !parse_count((const unsigned char *)text, strlen(text), QUERY_DLQ_ID_MAX, &v))
        return false;
    *id = v;
    return true;
}

/* ---- replays ---- */

void query_replay_clear(query_replay_t *r) {
    free(r->key);
    for (size_t i = 0; i < r->nheaders; i++) {
        free((char *)r->headers[i].name);
        free((char *)r->headers[i].value);
    }
    free(r->headers);
    memset(r, 0, sizeof *r);
}

static deta_err_t replay_target(const query_dead_letter_t *d, query_replay_t *r,
                                query_violation_t *v) {
    if (query_dlq_topic_index(d->topic) < 0)
        return query_violation(v, "topic", "not a dead-letter topic of this system");
    raw_twin(d->topic, r->topic);
    if (d->original_topic[0] && strcmp(d->original_topic, r->topic) != 0) {
        char why[sizeof v->message];
        snprintf(why, sizeof why, "x-original-topic is not %.40s, the only topic %.40s holds "
                 "dead letters of", r->topic, d->topic);
        return query_violation(v, "originalTopic", why);
    }
    return DETA_OK;
}

/* Appends one header to r, taking ownership of name and value. */
static bool add_replay_header(query_replay_t *r, char *name, char *value) {
    if (!name || !value) {
        free(name);
        free(value);
        return false;
    }
    r->headers[r->nheaders].name = name;
    r->headers[r->nheaders].value = value;
    r->nheaders++;
    return true;
}

/* One stored header, unless it is ours; its value must hold no NUL. */
static deta_err_t replay_header(const json_t *h, query_replay_t *r, query_violation_t *v) {
    const char *name = json_string_value(json_object_get(h, "name"));
    if (!name || !name[0])
        return query_violation(v, "headers", "a stored header has no name");
    if (query_dlq_header_is_ours(name))
        return DETA_OK;
    const json_t *text = json_object_get(h, "value");
    const char *b64 = json_string_value(json_object_get(h, "base64"));
    char *value;
    if (b64) {
        size_t len;
        value = (char *)base64_decode(b64, &len);
        if (value && memchr(value, '\0', len)) {
            free(value);
            return query_violation(v, "headers",
                                   "a header value holds a NUL byte, which cannot be sent");
        }
    } else {
        value = strdup(json_is_string(text) ? json_string_value(text) : "");
    }
    if (!value && b64)
        return query_violation(v, "headers", "a stored header value is not valid base64");
    return add_replay_header(r, strdup(name), value) ? DETA_OK : DETA_ERR_INTERNAL;
}

static deta_err_t replay_headers(const query_dead_letter_t *d, query_replay_t *r,
                                 query_violation_t *v) {
    size_t n = json_array_size(d->headers);
    r->headers = calloc(n + 1, sizeof *r->headers);
    if (!r->headers)
        return DETA_ERR_INTERNAL;
    for (size_t i = 0; i < n; i++) {
        deta_err_t err = replay_header(json_array_get(d->headers, i), r, v);
        if (err)
            return err;
    }
    char from[QUERY_DLQ_NAME_MAX + 1];
    snprintf(from, sizeof from, "%s/%d/%lld", d->topic, (int)d->partition, (long long)d->offset);
    return add_replay_header(r, strdup(HDR_REPLAYED_FROM), strdup(from)) ? DETA_OK
                                                                         : DETA_ERR_INTERNAL;
}

deta_err_t query_replay_prepare(const query_dead_letter_t *d, query_replay_t *r,
                                query_violation_t *v) {
    memset(r, 0, sizeof *r);
    deta_err_t err = replay_target(d, r, v);
    if (!err && d->has_key) {
        if (memchr(d->key, '\0', d->key_len))
            err = query_violation(v, "key", "the key holds a NUL byte, which cannot be sent");
        else if (!(r->key = strndup((const char *)d->key, d->key_len)))
            err = DETA_ERR_INTERNAL;
    }
    if (!err)
        err = replay_headers(d, r, v);
    if (err)
        query_replay_clear(r);
    return err;
}
