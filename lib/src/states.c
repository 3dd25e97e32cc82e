/*
 * states.c - the order states' ranks and which event type sets which state
 * (see deta/states.h). A table, so that a reader sees the whole state machine
 * at once; query-api's fold and order-service's status fold both read it.
 */
#include "deta/states.h"

#include <stddef.h>
#include <string.h>

#include "deta/topics.h"

const char *const deta_states[DETA_STATES_COUNT] = {
    DETA_STATE_CREATED,          DETA_STATE_INVENTORY_RESERVED, DETA_STATE_PAYMENT_AUTHORIZED,
    DETA_STATE_DELIVERY_WAITING, DETA_STATE_DELIVERY_ASSIGNED,  DETA_STATE_PICKED_UP,
    DETA_STATE_DELIVERED,        DETA_STATE_INVENTORY_REJECTED, DETA_STATE_PAYMENT_FAILED,
    DETA_STATE_CANCELLED,
};

/* DELIVERY_WAITING (4) is a paid order that waits for a driver (delivery.waiting);
 * it moves on to DELIVERY_ASSIGNED once one has room. */
static const int ranks[DETA_STATES_COUNT] = {
    1, 2, 3, 4, 5, 6, 7, DETA_STATE_RANK_FAILED, DETA_STATE_RANK_FAILED,
    DETA_STATE_RANK_CANCELLED,
};

typedef struct event_state {
    const char *event_type;
    const char *state;
} event_state_t;

static const event_state_t event_states[] = {
    {DETA_EVT_ORDER_CREATED, DETA_STATE_CREATED},
    {DETA_EVT_INVENTORY_RESERVED, DETA_STATE_INVENTORY_RESERVED},
    {DETA_EVT_INVENTORY_REJECTED, DETA_STATE_INVENTORY_REJECTED},
    {DETA_EVT_PAYMENT_AUTHORIZED, DETA_STATE_PAYMENT_AUTHORIZED},
    {DETA_EVT_PAYMENT_FAILED, DETA_STATE_PAYMENT_FAILED},
    {DETA_EVT_DELIVERY_WAITING, DETA_STATE_DELIVERY_WAITING},
    {DETA_EVT_DELIVERY_ASSIGNED, DETA_STATE_DELIVERY_ASSIGNED},
    {DETA_EVT_DELIVERY_PICKED_UP, DETA_STATE_PICKED_UP},
    {DETA_EVT_DELIVERY_DELIVERED, DETA_STATE_DELIVERED},
    {DETA_EVT_INVENTORY_CANCELLED, DETA_STATE_CANCELLED},
    {DETA_EVT_PAYMENT_CANCELLED, DETA_STATE_CANCELLED},
    {DETA_EVT_DELIVERY_CANCELLED, DETA_STATE_CANCELLED},
};

int deta_state_rank(const char *state) {
    if (!state)
        return 0;
    for (int i = 0; i < DETA_STATES_COUNT; i++)
        if (strcmp(deta_states[i], state) == 0)
            return ranks[i];
    return 0;
}

const char *deta_state_for_event(const char *event_type) {
    if (!event_type)
        return NULL;
    for (size_t i = 0; i < sizeof event_states / sizeof *event_states; i++)
        if (strcmp(event_states[i].event_type, event_type) == 0)
            return event_states[i].state;
    return NULL;
}

bool deta_state_may_move(const char *from, const char *to) {
    return deta_state_rank(to) > deta_state_rank(from);
}

bool deta_state_is_end(const char *state) {
    int r = deta_state_rank(state);
    return r >= DETA_STATE_RANK_FAILED || (state && strcmp(state, DETA_STATE_DELIVERED) == 0);
}

bool deta_state_cancellable(const char *state) {
    return deta_state_rank(state) < deta_state_rank(DETA_STATE_PICKED_UP);
}
