/*
 * states.h - the states of an order, as the read model (query-api) names them
 * and every client, tool and test compares them; in one place for all, like the
 * event types in topics.h.
 *
 * An order moves forward only, in this order of rank: CREATED, INVENTORY_RESERVED,
 * PAYMENT_AUTHORIZED, DELIVERY_WAITING, DELIVERY_ASSIGNED, PICKED_UP, DELIVERED;
 * INVENTORY_REJECTED and PAYMENT_FAILED are failed end states above all of them
 * (docs/events.md). The end states are DELIVERED and the two failures. The rank
 * table itself is query-api's (services/query-api/domain.c), the only reader that
 * needs it. delivery-service's own stages (ASSIGNED, PICKED_UP, DELIVERED) and
 * inventory-service's reservation statuses and reasons are other vocabularies
 * that happen to share words; they are not these.
 */
#ifndef DETA_STATES_H
#define DETA_STATES_H

#define DETA_STATE_CREATED "CREATED"
#define DETA_STATE_INVENTORY_RESERVED "INVENTORY_RESERVED"
#define DETA_STATE_PAYMENT_AUTHORIZED "PAYMENT_AUTHORIZED"
#define DETA_STATE_DELIVERY_WAITING "DELIVERY_WAITING"
#define DETA_STATE_DELIVERY_ASSIGNED "DELIVERY_ASSIGNED"
#define DETA_STATE_PICKED_UP "PICKED_UP"
#define DETA_STATE_DELIVERED "DELIVERED"
#define DETA_STATE_INVENTORY_REJECTED "INVENTORY_REJECTED"
#define DETA_STATE_PAYMENT_FAILED "PAYMENT_FAILED"

#endif
