/*
 * deta/client_orders.h - an order's life as a client sees it, over deta/client.h:
 * place it with order-service, read it from the query-api's read model, wait
 * until it reaches a status, and the statuses themselves.
 *
 * Design. The read model's statuses are named here once for every client: the
 * happy path in its order, the two failure ends, and the four end states an
 * order never leaves (CANCELLED among them). The predicates are plain functions; the calls are thin
 * requests on a caller's handle (its keep-alive connection), and the wait is a
 * bounded poll of the read model that treats "not there yet" and "no answer"
 * alike, as not yet.
 */
#ifndef DETA_CLIENT_ORDERS_H
#define DETA_CLIENT_ORDERS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "deta/client.h"

/* The end states, in the order reports list them: an order in one never moves.
 * CANCELLED last (a cancel that won: docs/contracts.md#cancellation). */
#define DETA_ORDER_END_STATES 4
extern const char *const deta_order_end_states[DETA_ORDER_END_STATES];

/* True for DELIVERED, INVENTORY_REJECTED, PAYMENT_FAILED and CANCELLED (false
 * for NULL). */
bool deta_order_is_end_state(const char *status);
/* True for the failure ends: INVENTORY_REJECTED and PAYMENT_FAILED. */
bool deta_order_is_failed(const char *status);
/* True when status is on the happy path (CREATED, INVENTORY_RESERVED,
 * PAYMENT_AUTHORIZED, DELIVERY_WAITING, DELIVERY_ASSIGNED, PICKED_UP, DELIVERED)
 * at step or after it: deta_order_reached(s, "PAYMENT_AUTHORIZED") is a paid order. */
bool deta_order_reached(const char *status, const char *step);

/* POST order_url/api/orders with body (the order's JSON text), as
 * deta_client_json. An accepted order is 201 with its orderId. */
int deta_order_place(deta_client_t *c, const char *order_url, const char *body,
                     deta_client_resp_t *out, char *errstr, size_t errsize);
/* The orderId of order-service's answer, copied into id; false when there is
 * none or it does not fit in size. */
bool deta_order_id_of(const json_t *answer, char *id, size_t size);
/* GET query_url/api/orders/{id}: the read model's view of the order (404 while
 * it has not arrived), as deta_client_json. */
int deta_order_read(deta_client_t *c, const char *query_url, const char *id,
                    deta_client_resp_t *out, char *errstr, size_t errsize);
/* The order's status in the read model into status ("" when it is not there or
 * no answer came). */
void deta_order_status(deta_client_t *c, const char *query_url, const char *id, char *status,
                       size_t size);
/* Reads the order's status every poll_ms until it is want (want NULL: any end
 * state) or timeout_ms have passed; the last status seen is left in status.
 * True when it got there. */
bool deta_order_await(deta_client_t *c, const char *query_url, const char *id, const char *want,
                      long timeout_ms, long poll_ms, char *status, size_t size);

#endif
