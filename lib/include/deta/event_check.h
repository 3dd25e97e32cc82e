/*
 * event_check.h - what a consumed message must be before a service acts on it,
 * written once for every consumer (events.c's dispatcher, and the services that
 * drive their own consumer: order-service, payment-service):
 *
 *   1. its value parses as an envelope (deta/envelope.h);
 *   2. its key is the envelope's orderId;
 *   3. the envelope's producer owns the topic the message came from
 *      (deta_topic_owner): only payment-service writes raw.payment-events, so a
 *      payment.authorized that says it was produced by anyone else is refused;
 *   4. its schemaVersion is one this build reads (deta_event_type_version): an
 *      event of a newer version than it knows is refused rather than misread
 *      (docs/events.md#versions); an older one is read as its handler knows how.
 *
 * Each refusal is DETA_ERR_INVALID with the reason in errstr, which the
 * consumer loop writes into the dead letter's x-error (the message goes to the
 * dlq. twin of its topic and the consumer goes on with the next one).
 *
 * The producer field is the writer's own word, so the check is defence in
 * depth behind the cluster's ACLs (docs/security.md), which decide who may
 * write a topic: it refuses what a service, tool or person that can write a
 * topic it does not own (an ACL too wide, a shared credential, a test client)
 * publishes under its own name, and it makes a forger write the owner's name,
 * which the dead letters and logs of the owner then contradict.
 */
#ifndef DETA_EVENT_CHECK_H
#define DETA_EVENT_CHECK_H

#include <stdbool.h>
#include <stddef.h>

#include "deta/envelope.h"
#include "deta/err.h"
#include "deta/kafka.h"

/* The rule: DETA_OK when producer is the owner of topic, or when topic has no
 * owner (a topic outside the seed's raw ones: nothing to compare with);
 * otherwise DETA_ERR_INVALID with errstr
 *   producer "order-service" does not own raw.payment-events (its owner is payment-service)
 * The comparison is exact: services write their name, never an instance id. */
deta_err_t deta_event_producer_check(const char *topic, const char *producer, char *errstr,
                                     size_t errsize);

/* Step 4: DETA_OK when ev's type is not in this build's table of types
 * (deta_event_type_version 0) or its schemaVersion is at most the newest this
 * build reads; otherwise
 * DETA_ERR_INVALID with errstr
 *   schemaVersion 2 of payment.authorized is newer than this consumer reads (1)
 */
deta_err_t deta_event_version_check(const deta_event_t *ev, char *errstr, size_t errsize);

/* Steps 1 to 4 on a consumed message: *ev is filled and *parsed set once the
 * value parsed (then the caller clears ev, whatever the result). */
deta_err_t deta_event_from_msg(const deta_kafka_msg_t *msg, deta_event_t *ev, bool *parsed,
                               char *errstr, size_t errsize);

#endif
