/*
 * topics.c - which topic an event type travels on, and dead-letter twins
 * (see deta/topics.h).
 *
 * Design: two small tables rather than prefix matching. Only the event types the
 * system defines map to a topic, so a typo such as "order.craeted" is caught at
 * the producer (NULL) instead of being published on a plausible-looking topic.
 * Adding a type means adding a constant to topics.h and a row here.
 */
#include "deta/topics.h"

#include <stddef.h>
#include <string.h>

const char *const deta_topics_all[DETA_TOPICS_COUNT] = {
    DETA_TOPIC_ORDER_EVENTS,         DETA_TOPIC_INVENTORY_EVENTS,
    DETA_TOPIC_PAYMENT_EVENTS,       DETA_TOPIC_DELIVERY_EVENTS,
    DETA_TOPIC_DLQ_ORDER_EVENTS,     DETA_TOPIC_DLQ_INVENTORY_EVENTS,
    DETA_TOPIC_DLQ_PAYMENT_EVENTS,   DETA_TOPIC_DLQ_DELIVERY_EVENTS,
};

typedef struct topic_pair {
    const char *key;
    const char *topic;
} topic_pair_t;

static const topic_pair_t event_topics[] = {
    {DETA_EVT_ORDER_CREATED, DETA_TOPIC_ORDER_EVENTS},
    {DETA_EVT_INVENTORY_RESERVED, DETA_TOPIC_INVENTORY_EVENTS},
    {DETA_EVT_INVENTORY_REJECTED, DETA_TOPIC_INVENTORY_EVENTS},
    {DETA_EVT_INVENTORY_RELEASED, DETA_TOPIC_INVENTORY_EVENTS},
    {DETA_EVT_PAYMENT_AUTHORIZED, DETA_TOPIC_PAYMENT_EVENTS},
    {DETA_EVT_PAYMENT_FAILED, DETA_TOPIC_PAYMENT_EVENTS},
    {DETA_EVT_DELIVERY_ASSIGNED, DETA_TOPIC_DELIVERY_EVENTS},
    {DETA_EVT_ETA_UPDATED, DETA_TOPIC_DELIVERY_EVENTS},
    {DETA_EVT_DELIVERY_PICKED_UP, DETA_TOPIC_DELIVERY_EVENTS},
    {DETA_EVT_DELIVERY_DELIVERED, DETA_TOPIC_DELIVERY_EVENTS},
};

static const topic_pair_t dlq_topics[] = {
    {DETA_TOPIC_ORDER_EVENTS, DETA_TOPIC_DLQ_ORDER_EVENTS},
    {DETA_TOPIC_INVENTORY_EVENTS, DETA_TOPIC_DLQ_INVENTORY_EVENTS},
    {DETA_TOPIC_PAYMENT_EVENTS, DETA_TOPIC_DLQ_PAYMENT_EVENTS},
    {DETA_TOPIC_DELIVERY_EVENTS, DETA_TOPIC_DLQ_DELIVERY_EVENTS},
};

static const char *lookup(const topic_pair_t *pairs, size_t n, const char *key) {
    if (!key)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (strcmp(pairs[i].key, key) == 0)
            return pairs[i].topic;
    return NULL;
}

const char *deta_topic_for_event_type(const char *event_type) {
    return lookup(event_topics, sizeof event_topics / sizeof event_topics[0], event_type);
}

const char *deta_topic_dlq_for(const char *raw_topic) {
    return lookup(dlq_topics, sizeof dlq_topics / sizeof dlq_topics[0], raw_topic);
}
