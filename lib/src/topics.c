/*
 * topics.c - which topic an event type travels on, and dead-letter twins
 * (see deta/topics.h).
 *
 * Design: a table rather than prefix matching for event types. Only the types the
 * system defines map to a topic, so a typo such as "order.craeted" is caught at
 * the producer (NULL) instead of being published on a plausible-looking topic.
 * Adding a type means adding a constant to topics.h and a row here. Dead letters,
 * by contrast, follow the seed's naming rule (raw.X -> dlq.X) for any topic, so a
 * consumer of a topic outside the system's list still has somewhere to put them.
 * Each type's row also says the newest schemaVersion this build reads of it
 * (all 1 today; docs/events.md#versions).
 * Each raw topic has one owner, the service that publishes on it; consumers
 * refuse an event of another producer (event_check.c).
 */
#include "deta/topics.h"

#include <stddef.h>
#include <string.h>

const char *const deta_topics_all[DETA_TOPICS_COUNT] = {
    DETA_TOPIC_ORDER_EVENTS,        DETA_TOPIC_INVENTORY_EVENTS,
    DETA_TOPIC_PAYMENT_EVENTS,      DETA_TOPIC_DELIVERY_EVENTS,
    DETA_TOPIC_ETA_EVENTS,          DETA_TOPIC_DLQ_ORDER_EVENTS,
    DETA_TOPIC_DLQ_INVENTORY_EVENTS, DETA_TOPIC_DLQ_PAYMENT_EVENTS,
    DETA_TOPIC_DLQ_DELIVERY_EVENTS, DETA_TOPIC_DLQ_ETA_EVENTS,
};

typedef struct topic_pair {
    const char *key;
    const char *topic;
} topic_pair_t;

/* An event type, its topic, and the newest schemaVersion of it this build reads. */
typedef struct event_row {
    const char *key;
    const char *topic;
    int version;
} event_row_t;

static const event_row_t event_topics[] = {
    {DETA_EVT_ORDER_CREATED, DETA_TOPIC_ORDER_EVENTS, 1},
    {DETA_EVT_INVENTORY_RESERVED, DETA_TOPIC_INVENTORY_EVENTS, 1},
    {DETA_EVT_INVENTORY_REJECTED, DETA_TOPIC_INVENTORY_EVENTS, 1},
    {DETA_EVT_INVENTORY_RELEASED, DETA_TOPIC_INVENTORY_EVENTS, 1},
    {DETA_EVT_PAYMENT_AUTHORIZED, DETA_TOPIC_PAYMENT_EVENTS, 1},
    {DETA_EVT_PAYMENT_FAILED, DETA_TOPIC_PAYMENT_EVENTS, 1},
    {DETA_EVT_DELIVERY_WAITING, DETA_TOPIC_DELIVERY_EVENTS, 1},
    {DETA_EVT_DELIVERY_ASSIGNED, DETA_TOPIC_DELIVERY_EVENTS, 1},
    {DETA_EVT_ETA_UPDATED, DETA_TOPIC_ETA_EVENTS, 1},
    {DETA_EVT_DELIVERY_PICKED_UP, DETA_TOPIC_DELIVERY_EVENTS, 1},
    {DETA_EVT_DELIVERY_DELIVERED, DETA_TOPIC_DELIVERY_EVENTS, 1},
    {DETA_EVT_ORDER_CANCEL_REQUESTED, DETA_TOPIC_ORDER_EVENTS, 1},
    {DETA_EVT_INVENTORY_CANCEL_FORWARDED, DETA_TOPIC_INVENTORY_EVENTS, 1},
    {DETA_EVT_INVENTORY_CANCEL_REFUSED, DETA_TOPIC_INVENTORY_EVENTS, 1},
    {DETA_EVT_INVENTORY_CANCELLED, DETA_TOPIC_INVENTORY_EVENTS, 1},
    {DETA_EVT_PAYMENT_CANCEL_FORWARDED, DETA_TOPIC_PAYMENT_EVENTS, 1},
    {DETA_EVT_PAYMENT_CANCEL_REFUSED, DETA_TOPIC_PAYMENT_EVENTS, 1},
    {DETA_EVT_PAYMENT_CANCELLED, DETA_TOPIC_PAYMENT_EVENTS, 1},
    {DETA_EVT_PAYMENT_REFUNDED, DETA_TOPIC_PAYMENT_EVENTS, 1},
    {DETA_EVT_DELIVERY_CANCELLED, DETA_TOPIC_DELIVERY_EVENTS, 1},
    {DETA_EVT_DELIVERY_CANCEL_REFUSED, DETA_TOPIC_DELIVERY_EVENTS, 1},
};

static const char *lookup(const topic_pair_t *pairs, size_t n, const char *key) {
    if (!key)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (strcmp(pairs[i].key, key) == 0)
            return pairs[i].topic;
    return NULL;
}

static const event_row_t *event_row(const char *event_type) {
    if (!event_type)
        return NULL;
    for (size_t i = 0; i < sizeof event_topics / sizeof event_topics[0]; i++)
        if (strcmp(event_topics[i].key, event_type) == 0)
            return &event_topics[i];
    return NULL;
}

const char *deta_topic_for_event_type(const char *event_type) {
    const event_row_t *row = event_row(event_type);
    return row ? row->topic : NULL;
}

int deta_event_type_version(const char *event_type) {
    const event_row_t *row = event_row(event_type);
    if (!row)
        return 0;
    return row->version;
}

const char *deta_event_type_at(size_t i) {
    return i < sizeof event_topics / sizeof event_topics[0] ? event_topics[i].key : NULL;
}

/* Each raw topic's owner (in the pair's second field): the service name its
 * events carry as their producer (every service writes its own name, never an
 * instance id). */
static const topic_pair_t topic_owners[] = {
    {DETA_TOPIC_ORDER_EVENTS, "order-service"},
    {DETA_TOPIC_INVENTORY_EVENTS, "inventory-service"},
    {DETA_TOPIC_PAYMENT_EVENTS, "payment-service"},
    {DETA_TOPIC_DELIVERY_EVENTS, "delivery-service"},
    {DETA_TOPIC_ETA_EVENTS, "delivery-service"},
};

const char *deta_topic_owner(const char *topic) {
    return lookup(topic_owners, sizeof topic_owners / sizeof topic_owners[0], topic);
}

const char *deta_topic_dlq_for(const char *raw_topic, char *buf, size_t bufsize) {
    static const char raw[] = "raw.", dlq[] = "dlq.";
    if (!raw_topic || !buf || strncmp(raw_topic, raw, sizeof raw - 1) != 0)
        return NULL;
    const char *name = raw_topic + sizeof raw - 1;
    size_t len = strlen(name);
    if (len == 0 || sizeof dlq + len > bufsize)
        return NULL;
    memcpy(buf, dlq, sizeof dlq - 1);
    memcpy(buf + sizeof dlq - 1, name, len + 1);
    return buf;
}
