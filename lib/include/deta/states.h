/*
 * states.h - the states of an order and their ranks, as the read model
 * (query-api) and order-service's own status fold name and compare them, and
 * every client, tool and test reads them; in one place for all, like the event
 * types in topics.h.
 *
 * An order moves forward only, in this order of rank: CREATED (1),
 * INVENTORY_RESERVED, PAYMENT_AUTHORIZED, DELIVERY_WAITING, DELIVERY_ASSIGNED,
 * PICKED_UP, DELIVERED (7); INVENTORY_REJECTED and PAYMENT_FAILED are failed end
 * states above all of those (8), and CANCELLED (9) is above everything, so that
 * a cancelled order never moves to another state (docs/contracts.md). The end
 * states are DELIVERED, the two failures and CANCELLED.
 *
 * delivery-service's own stages (ASSIGNED, PICKED_UP, DELIVERED, CANCELLED) and
 * inventory-service's reservation statuses and reasons are other vocabularies
 * that happen to share words; they are not these.
 */
#ifndef DETA_STATES_H
#define DETA_STATES_H

#include <stdbool.h>

#define DETA_STATE_CREATED "CREATED"
#define DETA_STATE_INVENTORY_RESERVED "INVENTORY_RESERVED"
#define DETA_STATE_PAYMENT_AUTHORIZED "PAYMENT_AUTHORIZED"
#define DETA_STATE_DELIVERY_WAITING "DELIVERY_WAITING"
#define DETA_STATE_DELIVERY_ASSIGNED "DELIVERY_ASSIGNED"
#define DETA_STATE_PICKED_UP "PICKED_UP"
#define DETA_STATE_DELIVERED "DELIVERED"
#define DETA_STATE_INVENTORY_REJECTED "INVENTORY_REJECTED"
#define DETA_STATE_PAYMENT_FAILED "PAYMENT_FAILED"
#define DETA_STATE_CANCELLED "CANCELLED"

#define DETA_STATES_COUNT 10
#define DETA_STATE_MAX 24 /* longest state name plus NUL */
#define DETA_STATE_RANK_FAILED 8
#define DETA_STATE_RANK_CANCELLED 9

/* The reason the cancellation's compensations carry (inventory.released,
 * payment.refunded) and the cancel events copy forward. */
#define DETA_REASON_ORDER_CANCELLED "ORDER_CANCELLED"

/* The states in rank order (failure ends, then CANCELLED, last). */
extern const char *const deta_states[DETA_STATES_COUNT];

/* A state's rank (CREATED 1 ... DELIVERED 7, failure ends 8, CANCELLED 9);
 * 0 for NULL, "" and anything else. */
int deta_state_rank(const char *state);

/* The state an event type moves an order to, or NULL when it moves none
 * (inventory.released, eta.updated, payment.refunded, the cancel requests,
 * forwards and refusals, unknown types). */
const char *deta_state_for_event(const char *event_type);

/* The transition rule: an order in state `from` (NULL or "" when it has none
 * yet) moves to `to` only when to's rank is strictly higher. */
bool deta_state_may_move(const char *from, const char *to);

/* DELIVERED, INVENTORY_REJECTED, PAYMENT_FAILED and CANCELLED. */
bool deta_state_is_end(const char *state);

/* Whether a cancel may still be asked for an order in this state: no state yet,
 * or any state below PICKED_UP. (Whether it wins is decided downstream; see
 * docs/contracts.md#cancellation.) */
bool deta_state_cancellable(const char *state);

#endif
