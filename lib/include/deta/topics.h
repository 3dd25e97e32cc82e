/*
 * topics.h - topic names and event types, in one place for all services.
 */
#ifndef DETA_TOPICS_H
#define DETA_TOPICS_H

#include <stddef.h>

#define DETA_TOPIC_ORDER_EVENTS "raw.order-events"
#define DETA_TOPIC_INVENTORY_EVENTS "raw.inventory-events"
#define DETA_TOPIC_PAYMENT_EVENTS "raw.payment-events"
#define DETA_TOPIC_DELIVERY_EVENTS "raw.delivery-events"
/* delivery-service's ETA updates, apart from its stage events: only the read
 * model follows them, so the sagas' consumers of raw.delivery-events do not
 * fetch three messages an order they would skip
 * (docs/contracts.md#eta-on-its-own-topic). */
#define DETA_TOPIC_ETA_EVENTS "raw.eta-events"

#define DETA_TOPIC_DLQ_ORDER_EVENTS "dlq.order-events"
#define DETA_TOPIC_DLQ_INVENTORY_EVENTS "dlq.inventory-events"
#define DETA_TOPIC_DLQ_PAYMENT_EVENTS "dlq.payment-events"
#define DETA_TOPIC_DLQ_DELIVERY_EVENTS "dlq.delivery-events"
#define DETA_TOPIC_DLQ_ETA_EVENTS "dlq.eta-events"

/* The system's topics: the seed's eight and raw.eta-events with its twin, the
 * raw ones first, then their dead-letter twins in the same order
 * (deta_topics_all[i + DETA_TOPICS_RAW_COUNT] is the twin of the i-th). */
#define DETA_TOPICS_RAW_COUNT 5
#define DETA_TOPICS_COUNT (2 * DETA_TOPICS_RAW_COUNT)
extern const char *const deta_topics_all[DETA_TOPICS_COUNT];

#define DETA_EVT_ORDER_CREATED "order.created"
#define DETA_EVT_INVENTORY_RESERVED "inventory.reserved"
#define DETA_EVT_INVENTORY_REJECTED "inventory.rejected"
#define DETA_EVT_INVENTORY_RELEASED "inventory.released"
#define DETA_EVT_PAYMENT_AUTHORIZED "payment.authorized"
#define DETA_EVT_PAYMENT_FAILED "payment.failed"
#define DETA_EVT_DELIVERY_WAITING "delivery.waiting"
#define DETA_EVT_DELIVERY_ASSIGNED "delivery.assigned"
#define DETA_EVT_ETA_UPDATED "eta.updated"
#define DETA_EVT_DELIVERY_PICKED_UP "delivery.picked_up"
#define DETA_EVT_DELIVERY_DELIVERED "delivery.delivered"

/* The cancellation saga (docs/contracts.md#cancellation): the request, passed on
 * along the order's own path by each stage that the order went past, until the
 * stage that holds it decides: <stage>.cancelled (the cancel won there) or
 * <stage>.cancel_refused (the order had ended there, or was picked up). */
#define DETA_EVT_ORDER_CANCEL_REQUESTED "order.cancel_requested"
#define DETA_EVT_INVENTORY_CANCEL_FORWARDED "inventory.cancel_forwarded"
#define DETA_EVT_INVENTORY_CANCEL_REFUSED "inventory.cancel_refused"
#define DETA_EVT_INVENTORY_CANCELLED "inventory.cancelled"
#define DETA_EVT_PAYMENT_CANCEL_FORWARDED "payment.cancel_forwarded"
#define DETA_EVT_PAYMENT_CANCEL_REFUSED "payment.cancel_refused"
#define DETA_EVT_PAYMENT_CANCELLED "payment.cancelled"
#define DETA_EVT_PAYMENT_REFUNDED "payment.refunded"
#define DETA_EVT_DELIVERY_CANCELLED "delivery.cancelled"
#define DETA_EVT_DELIVERY_CANCEL_REFUSED "delivery.cancel_refused"

/* The version of an event type's schema (its envelope's schemaVersion,
 * docs/events.md#versions): an additive change (a new optional payload field)
 * keeps it; any other change raises it. Every producer writes
 * DETA_SCHEMA_VERSION today. */
#define DETA_SCHEMA_VERSION 1

/* The newest schemaVersion of event_type that this build reads, 0 for a type it
 * does not know. A consumer dead-letters an event of a newer version rather than
 * misread it (deta_event_version_check). */
int deta_event_type_version(const char *event_type);

/* The raw topic an event type is published on, or NULL for an unknown type. */
const char *deta_topic_for_event_type(const char *event_type);
/* The i-th event type the system knows (from 0), NULL past the last. */
const char *deta_event_type_at(size_t i);

/* The service that owns a raw topic, the only one that publishes on it
 * (docs/contracts.md#topics-and-event-types): "order-service" for
 * raw.order-events, "inventory-service", "payment-service", "delivery-service"
 * for theirs (delivery-service: raw.delivery-events and raw.eta-events); NULL
 * for any other topic (the dlq. twins have no single writer). */
const char *deta_topic_owner(const char *topic);

/* The seed's naming rule for dead letters, for any topic: "raw.<name>" ->
 * "dlq.<name>", written into buf. NULL (buf untouched) when topic is not of the
 * form raw.<name> or the name does not fit. */
#define DETA_TOPIC_MAX 250
const char *deta_topic_dlq_for(const char *raw_topic, char *buf, size_t bufsize);

#endif
