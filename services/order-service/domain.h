/*
 * domain.h - order-service's rules, as plain functions without I/O.
 *
 * An order request is validated whole before anything is written: the first
 * offending field is reported by its JSON path ("items[2].unitPrice"), so the HTTP
 * layer can answer 400 naming it. The total is computed in integer minor units with
 * overflow checks.
 */
#ifndef ORDER_DOMAIN_H
#define ORDER_DOMAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "deta/envelope.h"
#include "deta/err.h"
#include "deta/money.h"
#include "deta/states.h"

#define ORDER_MAX_ITEMS 100
#define ORDER_MAX_QUANTITY 100000
#define ORDER_ID_MAX DETA_ID_MAX /* customerId and itemId */
#define ORDER_STATUS_CREATED DETA_STATE_CREATED
#define ORDER_DEFAULT_CURRENCY "USD"

typedef struct order_item {
    char item_id[ORDER_ID_MAX + 1];
    int quantity;
    deta_money_t unit_price;
} order_item_t;

typedef struct order {
    char order_id[DETA_UUID_LEN + 1];
    char correlation_id[DETA_UUID_LEN + 1];
    char customer_id[ORDER_ID_MAX + 1];
    char currency[4];
    deta_money_t total;
    char created_at[DETA_TS_LEN];
    size_t nitems;
    order_item_t items[ORDER_MAX_ITEMS];
} order_t;

/* What was wrong with a request: the JSON path of the field and why. */
typedef struct order_violation {
    char field[48];
    char message[160];
    const char *reason; /* short metric label: "missing_field", "invalid_quantity", ... */
} order_violation_t;

/* Validates body and fills o's customer, currency, items and total. The ids and
 * timestamp are left to order_assign_identity. DETA_ERR_INVALID with *v filled. */
deta_err_t order_from_request(const json_t *body, order_t *o, order_violation_t *v);

/* ---- idempotency keys (docs/contracts.md, "Idempotency keys") ---- */

#define ORDER_IDEMPOTENCY_HEADER "Idempotency-Key"
#define ORDER_IDEMPOTENCY_KEY_MAX 255

/* Checks an Idempotency-Key header's value: 1 to ORDER_IDEMPOTENCY_KEY_MAX bytes,
 * each a visible ASCII character ('!' to '~'). DETA_ERR_INVALID with *v naming
 * the header (reason "invalid_idempotency_key") otherwise. */
deta_err_t order_idempotency_key_check(const char *key, order_violation_t *v);

/* A validated order's request in its canonical form, what an idempotent replay
 * is compared by (store.c keeps its SHA-256): customerId, currency (after its
 * default) and the lines in order, amounts in minor units, as compact JSON
 * (strings escaped, so no two requests share a form):
 *   ["order-request/1","c-1","USD",[["sku-1",2,999],["sku-2",1,50]]]
 * Ids and the total are left out (the one is new per request, the other follows
 * from the lines). malloc'd; NULL when out of memory. */
char *order_request_canonical(const order_t *o);

/* Gives a validated order its id, correlation id and creation instant. */
void order_assign_identity(order_t *o, const char *correlation_id);

/* The order.created payload: orderId, customerId, totalAmount, currency, status, createdAt
 * and items [{itemId, quantity, unitPrice}], amounts as decimal strings. */
json_t *order_created_payload(const order_t *o);

/* ---- cancellation (docs/contracts.md#cancellation) ---- */

#define ORDER_CANCEL_REASON_MAX 200

/* The cancel's own states (orders.cancel_status), apart from the order's. */
#define ORDER_CANCEL_REQUESTED "REQUESTED"
#define ORDER_CANCEL_CANCELLED "CANCELLED"
#define ORDER_CANCEL_REFUSED "REFUSED"

typedef struct order_cancel_request {
    bool has_reason;
    char reason[ORDER_CANCEL_REASON_MAX + 1];
} order_cancel_request_t;

/* Validates a cancel's body: NULL (no body) or a JSON object whose optional
 * reason is null or a string of 1..ORDER_CANCEL_REASON_MAX bytes. Other fields
 * are ignored. DETA_ERR_INVALID with *v naming "reason" (or "body"). */
deta_err_t order_cancel_from_request(const json_t *body, order_cancel_request_t *c,
                                     order_violation_t *v);

/* What a cancel request gets, from what order-service knows of the order: its
 * status and its cancel_status (NULL when no cancel was asked). */
typedef enum order_cancel_answer {
    ORDER_CANCEL_ASK,             /* 202: write the request (order.cancel_requested) */
    ORDER_CANCEL_PENDING,         /* 202: asked already, not decided; nothing written */
    ORDER_CANCEL_DONE,            /* 200: the cancel won */
    ORDER_CANCEL_NOT_CANCELLABLE, /* 409: PICKED_UP or later, or a failed end */
    ORDER_CANCEL_WAS_REFUSED,     /* 409: the cancel was asked and refused */
} order_cancel_answer_t;

order_cancel_answer_t order_cancel_decide(const char *status, const char *cancel_status);
/* The HTTP status of an answer (202, 200 or 409). */
int order_cancel_http_status(order_cancel_answer_t a);
/* The label of orders_cancel_requests_total{outcome} for an answer. */
const char *order_cancel_outcome(order_cancel_answer_t a);

/* The order.cancel_requested payload: orderId, reason (NULL: null), requestedAt. */
json_t *order_cancel_requested_payload(const char *order_id, const char *reason,
                                       const char *requested_at);

/* ---- following the order's events (events.c) ---- */

/* What an event does to order-service's order: a state to fold into status (by
 * rank) and/or a verdict on its cancel. */
typedef struct order_event_effect {
    char order_id[DETA_UUID_LEN + 1];
    const char *state;   /* deta_state_for_event's, NULL when the type sets none */
    int rank;            /* the state's rank (0 with no state) */
    const char *verdict; /* ORDER_CANCEL_CANCELLED / ORDER_CANCEL_REFUSED, or NULL */
    char decided_at[DETA_TS_LEN];                 /* cancelledAt / refusedAt */
    char refused_because[DETA_STATE_MAX];         /* a refusal's orderStatus */
} order_event_effect_t;

typedef enum order_event_result {
    ORDER_EVENT_APPLIED,       /* the status moved, or the verdict was recorded */
    ORDER_EVENT_UNCHANGED,     /* nothing to change: a lower rank, a verdict known */
    ORDER_EVENT_UNKNOWN_ORDER, /* no such order here */
} order_event_result_t;

/* Whether order-service reads events of this type: the ones that set a state,
 * and the cancel's verdicts (*.cancelled, *.cancel_refused). */
bool order_event_followed(const char *event_type);

/* Reads a followed event's payload into *eff: payload.orderId (a UUID equal to
 * the envelope's) for every type; cancelledAt for a *.cancelled; orderStatus (an
 * order state) and refusedAt for a *.cancel_refused. DETA_ERR_INVALID with
 * errstr naming the field at fault; DETA_ERR_NOT_FOUND for a type that is not
 * followed. */
deta_err_t order_event_read(const deta_event_t *ev, order_event_effect_t *eff, char *errstr,
                            size_t errsize);

/* A batch's status changes go in one statement (store.c's order_store_fold_status)
 * where an effect only raises a status: it sets a state and records no verdict.
 * Status ranks only rise, so the highest rank of each order's effects is what
 * applying them one by one would leave. */
bool order_effect_foldable(const order_event_effect_t *eff);

/* What each folded effect would have been one by one. effs are every effect of
 * the batch that sets a state, in batch order; folded[i] says which went into
 * the fold, and before[i] is, for those, the rank its order had when the fold
 * read it (< 0: no such order). A folded effect is UNKNOWN_ORDER without its
 * order; APPLIED when its rank is above that and above every earlier effect's
 * of its order, folded or not (a verdict's state, applied on its own, counts
 * for the events after it); UNCHANGED otherwise. results[i] is set for the
 * folded effects only. */
void order_fold_outcomes(const order_event_effect_t *const *effs, const bool *folded,
                         const int *before, size_t n, order_event_result_t *results);

#endif
