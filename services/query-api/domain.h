/*
 * domain.h - query-api's rules, as plain functions without I/O.
 *
 * The read model is a fold of every event of an order into one row, and the
 * events of one order reach it in any order across the four topics. So the fold
 * is written to be order-independent (the same set of events gives the same row
 * whatever order they come in) and idempotent (an event applied twice changes
 * nothing more):
 *
 *   - status moves only to a higher rank (docs/events.md): max() is commutative;
 *   - a field is never erased by an event that lacks it (coalesce);
 *   - the order's identity (customer, total, currency, createdAt) comes from
 *     order.created, which overwrites; other events that copy it forward only
 *     fill gaps, so a partial row gets its identity once order.created arrives;
 *   - an ETA replaces another only when its calculatedAt is strictly later;
 *   - updatedAt is the latest occurredAt of any event applied (max again).
 *
 * query_view_merge() is that fold, step by step. The Postgres model does the same
 * in one atomic upsert (store_pg.c); a store without conditional updates would
 * read, merge with this function and write back conditionally.
 *
 * Timestamps are normalized on the way in to "YYYY-MM-DDTHH:MM:SS.ffffffZ" so that
 * comparing and storing them never depends on how a producer spelled them.
 */
#ifndef QUERY_DOMAIN_H
#define QUERY_DOMAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "deta/envelope.h"
#include "deta/err.h"
#include "deta/kafka.h"
#include "deta/money.h"
#include "deta/topics.h"

/* ---- states ---- */

#define QUERY_STATUS_COUNT 9
#define QUERY_STATUS_MAX 24   /* longest state name plus NUL */
#define QUERY_RANK_FAILED 8

/* The states in rank order (failure ends last), for listing and stats. */
extern const char *const query_statuses[QUERY_STATUS_COUNT];

/* A state's rank (CREATED 1 ... DELIVERED 7, failure ends 8); 0 for anything else. */
int query_status_rank(const char *status);
bool query_status_valid(const char *status);
/* The state an event type moves an order to, or NULL when it moves none
 * (inventory.released, eta.updated, unknown types). */
const char *query_status_for_event(const char *event_type);
/* The transition rule: an order in state `from` (NULL or "" when it has none yet)
 * moves to `to` only when to's rank is higher. */
bool query_status_may_move(const char *from, const char *to);

/* ---- instants ---- */

/* Instants are parsed and written by deta/timestamp.h (deta_timestamp_us,
 * deta_timestamp_from_us: microseconds, exact both ways). */
/* The ETA rule: a candidate ETA calculated at `candidate` replaces one calculated
 * at `current` when there is none yet ("" or NULL) or candidate is strictly later.
 * An invalid candidate never replaces anything. */
bool query_eta_is_newer(const char *candidate, const char *current);

/* ---- the view and what one event contributes to it ---- */

#define QUERY_TEXT_MAX 128 /* driverName, reasons */

/* One row of the read model. Text fields are "" when unknown; status_rank is 0
 * while the order has no status. first_seen_at is the storage's list key (when
 * the read model first heard of the order); it never changes. */
typedef struct query_view {
    char order_id[DETA_UUID_LEN + 1];
    char customer_id[DETA_ID_MAX + 1];
    char total_amount[DETA_MONEY_STRLEN];
    char currency[4];
    char status[QUERY_STATUS_MAX];
    int status_rank;
    char created_at[DETA_TS_LEN];
    char updated_at[DETA_TS_LEN];
    char reservation_id[DETA_ID_MAX + 1];
    char payment_id[DETA_ID_MAX + 1];
    char delivery_id[DETA_ID_MAX + 1];
    char driver_id[DETA_ID_MAX + 1];
    char driver_name[QUERY_TEXT_MAX + 1];
    char estimated_delivery_at[DETA_TS_LEN];
    char eta_calculated_at[DETA_TS_LEN];
    char delivered_at[DETA_TS_LEN];
    char failure_reason[QUERY_TEXT_MAX + 1];
    char correlation_id[DETA_ID_MAX + 1];
    char first_seen_at[DETA_TS_LEN];
} query_view_t;

/* One event, ready to apply: its timeline entry and the fields it gives the view
 * (in `fields`, "" meaning "this event says nothing about it"). */
typedef struct query_change {
    char event_id[DETA_UUID_LEN + 1];
    const char *event_type; /* static: the route's name */
    const char *topic;      /* the raw topic of the type */
    char occurred_at[DETA_TS_LEN]; /* normalized */
    bool authoritative;     /* order.created: its identity fields overwrite */
    json_t *payload;        /* borrowed from the event */
    query_view_t fields;
} query_change_t;

/* Validates an event of a known type and extracts what it contributes (see the
 * table in domain.c). DETA_ERR_INVALID, with the payload field named in errstr,
 * when the order id is not a UUID, the payload's orderId differs from the
 * envelope's, a required field is missing, or a field has the wrong shape. */
deta_err_t query_change_from_event(const deta_event_t *ev, query_change_t *c, char *errstr,
                                   size_t errsize);

/* Folds a change into a view (an all-zero view is an order not seen before).
 * Returns true when the status changed. */
bool query_view_merge(query_view_t *v, const query_change_t *c);

/* ---- list requests and their cursor ---- */

#define QUERY_LIMIT_DEFAULT 50
#define QUERY_LIMIT_MAX 200
#define QUERY_CURSOR_MAX 128 /* longest cursor accepted, plus room for NUL */

/* A position in the list: the last row a page ended with. */
typedef struct query_cursor {
    char at[DETA_TS_LEN]; /* that row's first_seen_at, normalized */
    char order_id[DETA_UUID_LEN + 1];
} query_cursor_t;

/* base64url without padding of "<at>|<orderId>". false when out does not fit. */
bool query_cursor_encode(const query_cursor_t *c, char *out, size_t outsize);
/* Strict: the base64url alphabet only, no padding, canonical trailing bits, and
 * the text must be exactly a normalized instant, '|', a UUID. */
bool query_cursor_decode(const char *text, query_cursor_t *c);

typedef struct query_list_params {
    int limit;
    bool has_cursor;
    query_cursor_t after;
    char status[QUERY_STATUS_MAX];      /* "" for any */
    char customer_id[DETA_ID_MAX + 1];  /* "" for any */
} query_list_params_t;

/* The field a bad request is refused for, and why. */
typedef struct query_violation {
    char field[24];
    char message[160];
} query_violation_t;

/* Validates GET /api/orders's query arguments (each NULL when absent): limit an
 * integer 1..200 (default 50), cursor as above, status one of the states,
 * customerId 1..64 bytes. DETA_ERR_INVALID with *v naming the first bad one. */
deta_err_t query_list_params_parse(const char *limit, const char *cursor, const char *status,
                                   const char *customer_id, query_list_params_t *p,
                                   query_violation_t *v);

/* ---- what the API answers ---- */

/* The view as the REST API shows it: unknown fields are null. */
json_t *query_view_to_json(const query_view_t *v);

typedef struct query_timeline_entry {
    char event_id[DETA_UUID_LEN + 1];
    char event_type[DETA_ID_MAX + 1];
    char topic[DETA_ID_MAX + 1];
    char occurred_at[DETA_TS_LEN];
    json_t *payload; /* owned */
} query_timeline_entry_t;

/* {"eventId","eventType","topic","occurredAt","payload"}; the payload is shared. */
json_t *query_timeline_entry_to_json(const query_timeline_entry_t *e);

typedef struct query_stats {
    long by_status[QUERY_STATUS_COUNT]; /* in query_statuses order */
    long without_status;                /* partial rows that no status event reached yet */
} query_stats_t;

/* {"total":N,"byStatus":{"CREATED":n,...every state...},"withoutStatus":n} */
json_t *query_stats_to_json(const query_stats_t *s);

/* ---- dead letters: the administration of the dlq.* topics ----
 *
 * query-api keeps every dead letter of the four dlq.* topics (captured by a
 * consumer of its own) so that a person can list them, read one, and replay
 * one or all of a topic to the topic they came from. The rules of that live
 * here, without I/O: turning a consumed dead letter into a record, the
 * record's JSON, the list's arguments, what a replay sends, and the bearer
 * token check.
 *
 * A dead letter is whatever some consumer could not handle, so nothing about it
 * is trusted: key and value are kept as bytes, a header value that is not text
 * is kept in base64, a dead-letter header that is missing or malformed leaves
 * its field unknown, and text taken from headers is cleaned into valid UTF-8.
 * A record can always be made (never re-dead-letter a dead letter).
 */

#define QUERY_DLQ_TOPIC_COUNT 4
#define QUERY_DLQ_TEXT_MAX 1024  /* x-error kept, in bytes */
#define QUERY_DLQ_NAME_MAX 255   /* consumer group, x-replayed-from */
#define QUERY_DLQ_KEY_MAX 256    /* the list's key filter */
#define QUERY_DLQ_OFFSET_MAX 1000000000L
#define QUERY_DLQ_LIMIT_DEFAULT 50
#define QUERY_DLQ_LIMIT_MAX 200

/* dlq.order-events, dlq.inventory-events, dlq.payment-events, dlq.delivery-events. */
extern const char *const query_dlq_topics[QUERY_DLQ_TOPIC_COUNT];
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

/* {"topics":[{"topic","originalTopic","total","pending","replayed"} x4],
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

/* ---- the admin token ---- */

typedef enum query_admin_auth {
    QUERY_ADMIN_OK = 0,
    QUERY_ADMIN_DISABLED, /* no token configured: the administration is off */
    QUERY_ADMIN_MISSING,  /* no "Authorization: Bearer <token>" */
    QUERY_ADMIN_WRONG,    /* a bearer token, not the configured one */
} query_admin_auth_t;

/* Checks an Authorization header (NULL when absent) against the configured
 * token ("" or NULL: none). The scheme is case-insensitive, then one or more
 * spaces, then the token. The comparison takes the same time whatever the
 * given token holds (query_secret_equal). */
query_admin_auth_t query_admin_authorize(const char *token, const char *authorization);

/* expected == given, in a time that depends on expected's length only. */
bool query_secret_equal(const char *expected, const char *given);

#endif
