/*
 * domain.h - inventory-service's rules, as plain functions without I/O.
 *
 * An order.created payload becomes a reservation request: validated whole (a
 * malformed one is the producer's bug, dead-lettered, never retried) and with the
 * lines of one itemId added together, so that the store locks and moves each stock
 * row exactly once. Whether the order is reserved or rejected is decided here from
 * the request and the stock levels the store read under lock: all of it or none.
 * The catalog seeded at start, the admin's stock update and the three payloads
 * this service publishes are built here too, so every rule is unit-tested.
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

#define INV_REASON_UNKNOWN_ITEM "UNKNOWN_ITEM"
#define INV_REASON_INSUFFICIENT_STOCK "INSUFFICIENT_STOCK"
#define INV_REASON_PAYMENT_FAILED "PAYMENT_FAILED"

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

/* Reserve only when every line's item is known and has enough available units;
 * otherwise the first line at fault (in the request's order) is reported, an
 * unknown item as UNKNOWN_ITEM, a short one as INSUFFICIENT_STOCK. */
void inv_decide(const inv_request_t *r, const inv_level_t *levels, size_t nlevels,
                inv_decision_t *d);

/* A reservation's status after a payment outcome, or NULL when the outcome
 * changes nothing (only a HELD reservation is settled: SOLD or RELEASED). */
const char *inv_status_after_payment(const char *status, bool authorized);

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

/* The admin's PUT /api/inventory/{itemId} body: {"available": N, "name": "..."},
 * name optional. */
typedef struct inv_stock_update {
    int64_t available;
    bool has_name;
    char name[INV_NAME_MAX + 1];
} inv_stock_update_t;

typedef struct inv_violation {
    char field[32];
    char message[128];
} inv_violation_t;

deta_err_t inv_stock_update_from_request(const json_t *body, inv_stock_update_t *u,
                                         inv_violation_t *v);

/* [{itemId, quantity}] */
json_t *inv_lines_json(const inv_line_t *lines, size_t n);

/* The payloads of docs/events.md. */
json_t *inv_reserved_payload(const inv_request_t *r, const char *reservation_id,
                             const char *reserved_at);
json_t *inv_rejected_payload(const inv_request_t *r, const inv_decision_t *d,
                             const char *rejected_at);
json_t *inv_released_payload(const char *order_id, const char *reservation_id,
                             const inv_line_t *lines, size_t n, const char *released_at);

#endif
