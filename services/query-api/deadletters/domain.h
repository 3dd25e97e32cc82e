/*
 * domain.h - the rules of query-api's dead-letter administration, as plain
 * functions without I/O.
 *
 * query-api keeps every dead letter of the five dlq.* topics (captured by a
 * consumer of its own) so that a person can list them, read one, and replay
 * one or all of a topic to the topic they came from. The rules of that live
 * here: turning a consumed dead letter into a record, the record's JSON, the
 * list's arguments, what a replay sends (the operator token is libdeta's:
 * deta/auth.h). The
 * administration is a product of its own beside the read model (../domain.h),
 * sharing only the service's process, its database and its request violations
 * (../violation.h).
 *
 * A dead letter is whatever some consumer could not handle, so nothing about it
 * is trusted: key and value are kept as bytes, a header value that is not text
 * is kept in base64, a dead-letter header that is missing or malformed leaves
 * its field unknown, and text taken from headers is cleaned into valid UTF-8.
 * A record can always be made (never re-dead-letter a dead letter).
 */
#ifndef QUERY_DLQ_DOMAIN_H
#define QUERY_DLQ_DOMAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "deta/envelope.h"
#include "deta/err.h"
#include "deta/kafka.h"
#include "deta/topics.h"
#include "query-api/violation.h"


#define QUERY_DLQ_TOPIC_COUNT DETA_TOPICS_RAW_COUNT
#define QUERY_DLQ_TEXT_MAX 1024  /* x-error kept, in bytes */
#define QUERY_DLQ_NAME_MAX 255   /* consumer group, x-replayed-from */
#define QUERY_DLQ_KEY_MAX 256    /* the list's key filter */
#define QUERY_DLQ_OFFSET_MAX 1000000000L
#define QUERY_DLQ_LIMIT_DEFAULT 50
#define QUERY_DLQ_LIMIT_MAX 200

/* The dead-letter twins of the raw topics (deta_topics_all's second half):
 * dlq.order-events, dlq.inventory-events, dlq.payment-events, dlq.delivery-events,
 * dlq.eta-events. */
extern const char *const *const query_dlq_topics;
/* The index of one of those in query_dlq_topics, or -1 for anything else. */
int query_dlq_topic_index(const char *topic);

/* The headers that only the dead-letter machinery writes: the consumer's six
 * (deta/kafka.h) and the replay's x-replayed-from. A replay sends none of them
 * on, and sets x-replayed-from afresh. */
bool query_dlq_header_is_ours(const char *name);

/* A header of a consumed message: a name and bytes that need not be text. */
typedef struct query_header {
    const char *name;
    const void *value; /* NULL for a header without a value */
    size_t len;
} query_header_t;

/* One stored dead letter. Unknown numbers are -1, unknown text is "". */
typedef struct query_dead_letter {
    int64_t id; /* the store's; 0 until stored */
    char topic[DETA_TOPIC_MAX + 1];
    int32_t partition;
    int64_t offset;
    bool has_key;
    unsigned char *key; /* malloc'd; key_len bytes */
    size_t key_len;
    bool has_value;
    unsigned char *value; /* malloc'd; value_len bytes (plus a NUL not counted) */
    size_t value_len;
    json_t *headers; /* owned: [{"name","value"} or {"name","base64"}], in order */
    char original_topic[DETA_TOPIC_MAX + 1];
    int32_t original_partition;
    int64_t original_offset;
    char consumer_group[QUERY_DLQ_NAME_MAX + 1];
    char error[QUERY_DLQ_TEXT_MAX + 1];
    int retry_count;
    char replayed_from[QUERY_DLQ_NAME_MAX + 1];
    char received_at[DETA_TS_LEN];
    int replay_count;
    char last_replayed_at[DETA_TS_LEN]; /* "" while never replayed */
} query_dead_letter_t;

/* The record of a message consumed from a dlq.* topic: key and value copied
 * (value NULL: the message had none), every header kept, the dead-letter
 * headers (x-original-topic, -partition, -offset, x-consumer-group, x-error,
 * x-retry-count, x-replayed-from) read into their fields when well formed.
 * DETA_ERR_INTERNAL only when out of memory. */
deta_err_t query_dead_letter_from_message(const char *topic, int32_t partition, int64_t offset,
                                          const void *key, size_t key_len, const void *value,
                                          size_t value_len, const query_header_t *headers,
                                          size_t nheaders, query_dead_letter_t *out);
/* Copies bytes into the record's key or value (NULL: none); false when out of memory. */
bool query_dead_letter_set_bytes(unsigned char **dst, size_t *dst_len, bool *present,
                                 const void *src, size_t len);
void query_dead_letter_clear(query_dead_letter_t *d);

/* {"id","topic","partition","offset","key","keyEncoding","originalTopic",
 *  "originalPartition","originalOffset","consumerGroup","error","retryCount",
 *  "replayedFrom","receivedAt","replayCount","lastReplayedAt"}, and with detail
 * also "value","valueEncoding","headers". Bytes that are UTF-8 text (no NUL)
 * are shown as text with encoding "utf-8", others in base64 with "base64";
 * absent ones and unknown fields are null. */
json_t *query_dead_letter_to_json(const query_dead_letter_t *d, bool detail);

typedef struct query_dlq_counts {
    long total;
    long pending; /* never replayed */
} query_dlq_counts_t;

/* {"topics":[{"topic","originalTopic","total","pending","replayed"} x5],
 *  "total","pending","replayed"}; counts in query_dlq_topics order. */
json_t *query_dlq_summary_to_json(const query_dlq_counts_t counts[QUERY_DLQ_TOPIC_COUNT]);

typedef enum query_dlq_status {
    QUERY_DLQ_ALL = 0,
    QUERY_DLQ_PENDING,  /* never replayed */
    QUERY_DLQ_REPLAYED, /* replayed at least once */
} query_dlq_status_t;

const char *query_dlq_status_name(query_dlq_status_t s); /* "all", "pending", "replayed" */

typedef struct query_dlq_list_params {
    query_dlq_status_t status;
    int limit;
    long offset;
    bool has_key;
    char key[QUERY_DLQ_KEY_MAX + 1];
} query_dlq_list_params_t;

/* The list's query arguments (each NULL when absent): status pending, replayed
 * or all (default all), limit 1..200 (default 50), offset 0..10^9 (default 0),
 * key 1..256 bytes (only dead letters with exactly that key). DETA_ERR_INVALID
 * with *v naming the first bad one. */
deta_err_t query_dlq_list_params_parse(const char *status, const char *limit, const char *offset,
                                       const char *key, query_dlq_list_params_t *p,
                                       query_violation_t *v);

/* A record id from the path: decimal digits, 1..2^53 (exact in JSON), no sign,
 * no leading zero. */
bool query_dlq_id_parse(const char *text, int64_t *id);

/* What a replay sends: the value is the record's, as is. */
typedef struct query_replay {
    char topic[DETA_TOPIC_MAX + 1];
    char *key; /* malloc'd, NUL-terminated; NULL for none */
    deta_kafka_header_t *headers; /* malloc'd, each name and value malloc'd */
    size_t nheaders;
} query_replay_t;

/* Builds the replay of a dead letter: to its x-original-topic, which must be the
 * raw twin of the dlq topic it came from (the only topic the consumers dead-letter
 * into it), or to that twin when the header was missing; the original headers but
 * ours (query_dlq_header_is_ours), plus x-replayed-from: <dlq topic>/<partition>/
 * <offset>. DETA_ERR_INVALID with *v naming what cannot be sent ("originalTopic";
 * "key" or "headers" holding a NUL byte, which Kafka allows but libdeta's producer,
 * taking C strings, cannot send); DETA_ERR_INTERNAL when out of memory. */
deta_err_t query_replay_prepare(const query_dead_letter_t *d, query_replay_t *r,
                                query_violation_t *v);
void query_replay_clear(query_replay_t *r);

#endif
