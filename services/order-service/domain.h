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

#endif
