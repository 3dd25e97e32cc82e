/*
 * domain.h - query-api's rules, as plain functions without I/O.
 *
 * The read model is a fold of every event of an order into one row, and the
 * events of one order reach it in any order across the five topics. So the fold
 * is written to be order-independent (the same set of events gives the same row
 * whatever order they come in) and idempotent (an event applied twice changes
 * nothing more):
 *
 *   - status moves only to a higher rank (docs/contracts.md): max() is commutative;
 *   - a field is never erased by an event that lacks it (coalesce);
 *   - the order's identity (customer, total, currency, createdAt) comes from
 *     order.created, which overwrites; other events that copy it forward only
 *     fill gaps, so a partial row gets its identity once order.created arrives;
 *   - an ETA replaces another only when its calculatedAt is strictly later;
 *   - cancelledAt is the earliest of the verdicts' (min, commutative; there is
 *     one verdict per order, but a fold must not depend on it);
 *   - updatedAt is the latest occurredAt of any event applied (max again).
 *
 * query_view_merge() is that fold, step by step. The Postgres model does the same
 * in one statement, atomically, for one event (read_model_pg.c), and uses this
 * function for a batch, over rows it locked (read_model_pg_batch.c); a store
 * without conditional updates would read, merge with this function and write
 * back conditionally.
 *
 * Timestamps are normalized on the way in to "YYYY-MM-DDTHH:MM:SS.ffffffZ" so that
 * comparing and storing them never depends on how a producer spelled them.
 *
 * The rules of the dead-letter administration, the other product query-api hosts,
 * are in deadletters/domain.h.
 */
#ifndef QUERY_DOMAIN_H
#define QUERY_DOMAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "deta/envelope.h"
#include "deta/err.h"
#include "deta/money.h"
#include "deta/states.h"
#include "deta/topics.h"
#include "violation.h"

/* ---- states ---- */

/* The states, their ranks and which event type sets which are libdeta's
 * (deta/states.h: deta_states, deta_state_rank, deta_state_for_event), shared
 * with order-service's status fold: one home for the ranks. */

/* ---- instants ---- */

/* Instants are parsed and written by deta/timestamp.h (deta_timestamp_us,
 * deta_timestamp_from_us: microseconds, exact both ways). */
/* The ETA rule: a candidate ETA calculated at `candidate` replaces one calculated
 * at `current` when there is none yet ("" or NULL) or candidate is strictly later.
 * An invalid candidate never replaces anything. */
bool query_eta_is_newer(const char *candidate, const char *current);

/* ---- the view and what one event contributes to it ---- */

#define QUERY_TEXT_MAX 128 /* driverName, reasons */
#define QUERY_NOTE_MAX 200 /* a cancel's reason: the client's (order-service takes 1..200 bytes) */

/* One row of the read model. Text fields are "" when unknown; status_rank is 0
 * while the order has no status. first_seen_at is the storage's list key (when
 * the read model first heard of the order); it never changes. */
typedef struct query_view {
    char order_id[DETA_UUID_LEN + 1];
    char customer_id[DETA_ID_MAX + 1];
    char total_amount[DETA_MONEY_STRLEN];
    char currency[4];
    char status[DETA_STATE_MAX];
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
    char cancelled_at[DETA_TS_LEN];               /* the earliest cancelledAt of a verdict */
    char refunded_amount[DETA_MONEY_STRLEN];      /* payment.refunded's amount */
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

/* Whether the table of domain.c has a rule for the type (events.c routes exactly
 * those). */
bool query_handles_event(const char *event_type);

/* Validates an event of a known type and extracts what it contributes (see the
 * table in domain.c). DETA_ERR_INVALID, with the payload field named in errstr,
 * when the order id is not a UUID, the payload's orderId differs from the
 * envelope's, a required field is missing, or a field has the wrong shape. */
deta_err_t query_change_from_event(const deta_event_t *ev, query_change_t *c, char *errstr,
                                   size_t errsize);

/* Folds a change into a view (an all-zero view is an order not seen before).
 * Returns true when the status changed. */
bool query_view_merge(query_view_t *v, const query_change_t *c);

/* ---- the saga's stages (query_saga_stage_duration_seconds) ---- */

/* The stages an order's saga reaches, each by one event type: inventory.reserved,
 * payment.authorized, delivery.assigned, delivery.delivered. */
typedef enum query_saga_stage {
    QUERY_STAGE_RESERVED,
    QUERY_STAGE_AUTHORIZED,
    QUERY_STAGE_ASSIGNED,
    QUERY_STAGE_DELIVERED,
    QUERY_STAGE_COUNT
} query_saga_stage_t;

/* The stage event_type reaches, or -1 for an event that reaches none. */
int query_saga_stage_of(const char *event_type);
/* "reserved", "authorized", "assigned", "delivered" (the metric's stage label);
 * NULL out of range. */
const char *query_saga_stage_name(int stage);
/* Seconds from the order's creation (created_us, its createdAt) to the event that
 * reached the stage (reached_us, its occurredAt), both µs since the epoch; 0 when
 * the clocks put the event first (producers' clocks differ a little); -1 when the
 * creation is not known (0: order.created not applied yet). */
double query_saga_stage_seconds(int64_t created_us, int64_t reached_us);

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
 * the text must be exactly a normalized instant, '|', a UUID in lower case (so
 * a cursor that decodes is the one query_cursor_encode writes for it). */
bool query_cursor_decode(const char *text, query_cursor_t *c);

typedef struct query_list_params {
    int limit;
    bool has_cursor;
    query_cursor_t after;
    char status[DETA_STATE_MAX];        /* "" for any */
    char customer_id[DETA_ID_MAX + 1];  /* "" for any */
} query_list_params_t;

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
    long by_status[DETA_STATES_COUNT]; /* in deta_states order */
    long without_status;                /* partial rows that no status event reached yet */
} query_stats_t;

/* {"total":N,"byStatus":{"CREATED":n,...every state...},"withoutStatus":n} */
json_t *query_stats_to_json(const query_stats_t *s);

#endif
