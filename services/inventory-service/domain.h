/*
 * domain.h - inventory-service's rules, as plain functions without I/O.
 *
 * An order.created payload becomes a reservation request: validated whole (a
 * malformed one is the producer's bug, dead-lettered, never retried) and with the
 * lines of one itemId added together, so that the store locks and moves each stock
 * row exactly once. Whether the order is reserved or rejected is decided here from
 * the request and the stock levels the store read under lock: all of it or none.
 * The catalog seeded at start, the admin's stock changes (versioned or relative,
 * see inv_stock_apply), what a payment outcome does to a reservation (including a
 * late authorization of a hold that expired) and the payloads this service
 * publishes are decided here too, so every rule is unit-tested.
 */
#ifndef INVENTORY_DOMAIN_H
#define INVENTORY_DOMAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "deta/envelope.h"
#include "deta/err.h"
#include "deta/money.h"
#include "deta/states.h"
#include "deta/timestamp.h"

#define INV_MAX_LINES 100          /* lines of an order (as order-service allows) */
#define INV_MAX_QUANTITY 100000    /* units of one order line (as order-service allows) */
#define INV_MAX_UNITS INT64_C(1000000000) /* a stock level set by the catalog or the admin */
#define INV_ID_MAX DETA_ID_MAX     /* itemId, customerId, orderId */
#define INV_NAME_MAX 128

#define INV_CATALOG_VAR "INVENTORY_CATALOG"
/* sku-1 .. sku-20 with 100000 units each, and sku-limited with 25 (the demo's way
 * to see stock rejections). */
extern const char INV_DEFAULT_CATALOG[];

#define INV_STATUS_HELD "HELD"
#define INV_STATUS_SOLD "SOLD"
#define INV_STATUS_RELEASED "RELEASED"
#define INV_STATUS_REJECTED "REJECTED"
/* Released when its hold expired, then authorized when the stock was gone. */
#define INV_STATUS_UNFULFILLABLE "UNFULFILLABLE"
/* The cancel came before any order.created (docs/contracts.md#cancellation):
 * a row without items, which a later order.created finds and leaves alone. */
#define INV_STATUS_CANCELLED "CANCELLED"

#define INV_REASON_UNKNOWN_ITEM "UNKNOWN_ITEM"
#define INV_REASON_INSUFFICIENT_STOCK "INSUFFICIENT_STOCK"
#define INV_REASON_PAYMENT_FAILED "PAYMENT_FAILED"
#define INV_REASON_NOT_SELLABLE "NOT_SELLABLE" /* the admin stopped sales of the item */
#define INV_REASON_HOLD_EXPIRED "HOLD_EXPIRED"
#define INV_REASON_ORDER_CANCELLED DETA_REASON_ORDER_CANCELLED

/* Holds expire (#22 finding 7): payment-service charges none whose holdExpiresAt
 * (reservation time + TTL, in inventory.reserved) has passed; this service
 * releases a hold still HELD a grace after that instant (the grace covers the
 * lag from payment's decision to its outcome arriving here). */
#define INV_HOLD_TTL_VAR "INVENTORY_HOLD_TTL_S"
#define INV_HOLD_GRACE_VAR "INVENTORY_HOLD_GRACE_S"
#define INV_DEFAULT_HOLD_TTL_S 900
#define INV_DEFAULT_HOLD_GRACE_S 300
#define INV_MAX_HOLD_TTL_S 604800 /* a week */
#define INV_MAX_HOLD_GRACE_S 86400

typedef struct inv_settings {
    long hold_ttl_s;
    long hold_grace_s;
} inv_settings_t;

typedef struct inv_line {
    char item_id[INV_ID_MAX + 1];
    int64_t quantity;
} inv_line_t;

/* An order to reserve: one line per distinct itemId, in order of first appearance. */
typedef struct inv_request {
    char order_id[INV_ID_MAX + 1];
    char customer_id[INV_ID_MAX + 1];
    char currency[4];
    deta_money_t total;
    size_t nlines;
    inv_line_t lines[INV_MAX_LINES];
} inv_request_t;

/* The stock of one item as read (and locked) by the store. */
typedef struct inv_level {
    char item_id[INV_ID_MAX + 1];
    int64_t available;
    bool sellable;
} inv_level_t;

typedef struct inv_decision {
    bool reserve;
    /* When rejected: INV_REASON_*, and the first line at fault. */
    const char *reason;
    char item_id[INV_ID_MAX + 1];
    int64_t requested;
    int64_t available; /* 0 for an unknown item */
} inv_decision_t;

/* Parses an order.created payload for the event's order_id (the payload's
 * orderId must be the same). DETA_ERR_INVALID with the field's JSON path in errstr
 * ("items[1].quantity must be an integer from 1 to 100000"). Repeated itemIds are
 * added together. */
deta_err_t inv_request_from_order_created(const json_t *payload, const char *order_id,
                                          inv_request_t *r, char *errstr, size_t errsize);

/* Take the lines only when every line's item is known, sellable and has enough
 * available units; otherwise the first line at fault (in the lines' order) is
 * reported, an unknown item as UNKNOWN_ITEM, one whose sales are stopped as
 * NOT_SELLABLE, a short one as INSUFFICIENT_STOCK. */
void inv_decide(const inv_line_t *lines, size_t nlines, const inv_level_t *levels,
                size_t nlevels, inv_decision_t *d);

/* What a payment outcome does to a reservation of this status (and reason). */
typedef enum inv_settlement {
    INV_SETTLE_NOTHING, /* settled already, rejected, or a contradiction: no-op */
    INV_SETTLE_SELL,    /* HELD, authorized: held -> sold */
    INV_SETTLE_RELEASE, /* HELD, failed: held -> available */
    /* RELEASED because its hold expired, then authorized after all: take the
     * units from available again if they are all there (sold), else the order
     * is UNFULFILLABLE (nothing taken: never oversell). */
    INV_SETTLE_RETAKE,
} inv_settlement_t;

inv_settlement_t inv_settlement_after_payment(const char *status, const char *reason,
                                              bool authorized);

/* ---- the cancellation saga (docs/contracts.md#cancellation) ---- */

#define INV_CANCEL_REASON_MAX 200 /* bytes of the client's reason (as order-service allows) */

/* What inventory-service decided about an order's cancel, kept on its
 * reservation row (cancel_outcome) so that the stage decides once. */
#define INV_CANCEL_FORWARDED "FORWARDED"
#define INV_CANCEL_REFUSED "REFUSED"
#define INV_CANCEL_CANCELLED "CANCELLED"

/* order.cancel_requested's payload: orderId, reason (the client's, or null),
 * requestedAt. */
typedef struct inv_cancel_request {
    char order_id[INV_ID_MAX + 1];
    bool has_reason; /* false: null */
    char reason[INV_CANCEL_REASON_MAX + 1];
    char requested_at[DETA_TS_LEN];
} inv_cancel_request_t;

/* Reads order.cancel_requested's payload for the event's order_id. DETA_ERR_INVALID
 * with the field named in errstr ("requestedAt is required"). An absent reason
 * is taken as null. */
deta_err_t inv_cancel_request_read(const json_t *payload, const char *order_id,
                                   inv_cancel_request_t *c, char *errstr, size_t errsize);

/* What a cancel request does, given the order's reservation status (NULL: the
 * order has none) and whether a cancel was decided for it already. */
typedef enum inv_cancel_step {
    INV_CANCEL_STEP_NOTHING, /* decided before (a re-sent request), or CANCELLED */
    INV_CANCEL_STEP_FORWARD, /* reserved (held, sold, released, unfulfillable): payment decides */
    INV_CANCEL_STEP_REFUSE,  /* REJECTED: the order ended INVENTORY_REJECTED */
    INV_CANCEL_STEP_RECORD,  /* no reservation: record CANCELLED, inventory.cancelled */
} inv_cancel_step_t;

inv_cancel_step_t inv_cancel_step(const char *status, bool decided);

/* payment.cancelled and delivery.cancelled, as far as this service reads them:
 * the payload's orderId must be the envelope's. */
deta_err_t inv_cancel_verdict_read(const json_t *payload, const char *order_id, char *errstr,
                                   size_t errsize);

/* What a cancel's verdict (payment.cancelled, delivery.cancelled) does to the
 * order's reservation of this status and reason. */
typedef enum inv_compensation {
    INV_COMPENSATE_NOTHING,      /* nothing held or sold: released, rejected, cancelled... */
    INV_COMPENSATE_RELEASE_HELD, /* held -> available, RELEASED ORDER_CANCELLED */
    INV_COMPENSATE_RELEASE_SOLD, /* sold -> available, RELEASED ORDER_CANCELLED */
    /* RELEASED because its hold expired: nothing to give back now, but the reason
     * becomes ORDER_CANCELLED so that a late authorization retakes nothing. */
    INV_COMPENSATE_FENCE,
} inv_compensation_t;

inv_compensation_t inv_compensation(const char *status, const char *reason);

/* An itemId the catalog and the REST path accept: 1..64 of [A-Za-z0-9._~-]. */
bool inv_item_id_valid(const char *s);

/* The catalog, "itemId:units,itemId:units,..." (blanks around entries allowed). */
typedef struct inv_catalog {
    size_t n;
    inv_line_t *items; /* quantity = units in stock at seeding */
} inv_catalog_t;

/* DETA_ERR_INVALID with errstr naming INVENTORY_CATALOG and the entry at fault. */
deta_err_t inv_catalog_parse(const char *spec, inv_catalog_t *c, char *errstr, size_t errsize);
void inv_catalog_clear(inv_catalog_t *c);

/* The admin's stock changes (#22 finding 8). Every change of a stock row, by a
 * reservation or the admin, raises its version; an item that does not exist has
 * version 0.
 *   PUT   {"available": N, "expectedVersion": V, "name"?, "sellable"?}: sets the
 *         count when V is the item's version (compare-and-set); V 0 or absent
 *         creates an item. Absent on an existing item: refused (version
 *         required), unless the put changes nothing (a retried create).
 *   PATCH {"delta": D, "sellable"?, "name"?, "expectedVersion"?}: adds D (may be
 *         negative) to whatever is available now; never creates.
 * sellable false stops sales: reservations of the item are rejected whatever
 * is available, so units a release brings back are not sold until sales resume. */
typedef struct inv_stock_change {
    bool relative; /* PATCH */
    bool has_available;
    int64_t available;
    bool has_delta;
    int64_t delta;
    bool has_sellable;
    bool sellable;
    bool has_name;
    char name[INV_NAME_MAX + 1];
    bool has_expected_version;
    int64_t expected_version;
} inv_stock_change_t;

typedef struct inv_violation {
    char field[32];
    char message[160];
} inv_violation_t;

deta_err_t inv_stock_put_from_request(const json_t *body, inv_stock_change_t *c,
                                      inv_violation_t *v);
deta_err_t inv_stock_patch_from_request(const json_t *body, inv_stock_change_t *c,
                                        inv_violation_t *v);

/* An item's row as the store read it under lock. */
typedef struct inv_stock_row {
    int64_t available;
    int64_t version;
    bool sellable;
    char name[INV_NAME_MAX + 1];
} inv_stock_row_t;

typedef enum inv_change_outcome {
    INV_CHANGE_CREATE,           /* insert next */
    INV_CHANGE_UPDATE,           /* write next (the version goes up) */
    INV_CHANGE_SAME,             /* nothing to write (a repeated unversioned put) */
    INV_CHANGE_NOT_FOUND,        /* PATCH of an unknown item */
    INV_CHANGE_VERSION_REQUIRED, /* PUT of an existing item without expectedVersion */
    INV_CHANGE_STALE,            /* expectedVersion is not the item's version */
    INV_CHANGE_OUT_OF_RANGE,     /* the delta would leave available outside 0..max */
} inv_change_outcome_t;

/* The rule: cur is the item's row, NULL when there is none; next receives the row
 * to write (CREATE, UPDATE), v the field to blame for a refusal. */
inv_change_outcome_t inv_stock_apply(const inv_stock_row_t *cur, const inv_stock_change_t *c,
                                     inv_stock_row_t *next, inv_violation_t *v);

/* [{itemId, quantity}] */
json_t *inv_lines_json(const inv_line_t *lines, size_t n);

/* The payloads of docs/contracts.md. */
json_t *inv_reserved_payload(const inv_request_t *r, const char *reservation_id,
                             const char *reserved_at, const char *hold_expires_at);
json_t *inv_rejected_payload(const char *order_id, const char *customer_id,
                             const inv_decision_t *d, const char *rejected_at);
/* reason: INV_REASON_PAYMENT_FAILED, INV_REASON_HOLD_EXPIRED or INV_REASON_ORDER_CANCELLED */
json_t *inv_released_payload(const char *order_id, const char *reservation_id, const char *reason,
                             const inv_line_t *lines, size_t n, const char *released_at);
/* inventory.cancel_forwarded, inventory.cancel_refused (orderStatus
 * INVENTORY_REJECTED) and inventory.cancelled (stage NONE): the request's
 * reason and requestedAt copied forward. */
json_t *inv_cancel_forwarded_payload(const inv_cancel_request_t *c, const char *reservation_id,
                                     const char *forwarded_at);
json_t *inv_cancel_refused_payload(const inv_cancel_request_t *c, const char *refused_at);
json_t *inv_cancelled_payload(const inv_cancel_request_t *c, const char *cancelled_at);

#endif
