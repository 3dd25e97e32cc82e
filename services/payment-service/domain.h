/*
 * domain.h - payment-service's rules, as plain functions without I/O.
 *
 * The simulated gateway is deterministic: whether an order is declined depends
 * only on the settings and the order (amount, customer, and for the random rule a
 * hash of the seed and the order id), so a redelivered event is always decided
 * the same way, and tests can predict every outcome. Its latency is a setting
 * that the caller applies, not part of the decision.
 *
 * Settings (environment, read once by settings.c's payment_settings_load; the
 * values of the decline rules are parsed here):
 *   PAYMENT_DECLINE_ABOVE        10000.00  amounts strictly above are declined
 *   PAYMENT_DECLINE_CUSTOMERS    decline-* comma list of customer ids; an entry
 *                                ending in '*' is a prefix; "none" declines nobody
 *   PAYMENT_DECLINE_RATE         0         share of orders declined at random, 0..1
 *                                          (at most 6 decimals)
 *   PAYMENT_DECLINE_SEED         0         integer mixed into the random rule
 *   PAYMENT_GATEWAY_LATENCY_MS   0         simulated gateway delay, 0..5000 (a
 *                                          call must end well within the 30 s
 *                                          claim and a graceful stop, events.c)
 *   PAYMENT_WORKERS              32        consumer worker threads, 1..256: the
 *                                          gateway calls that can be in flight
 *   PAYMENT_DB_CONNECTIONS       4         Postgres connections the workers
 *                                          share, 1..64
 *   PAYMENT_GATEWAY_LEDGER       ""        the simulated gateway's ledger of
 *                                          charges: a file appended to by every
 *                                          instance that shares it (gateway.c);
 *                                          empty: the simulation keeps none
 * The rules apply in that order: customer, amount, random; the first that
 * declines gives the reason.
 */
#ifndef PAYMENT_DOMAIN_H
#define PAYMENT_DOMAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "deta/envelope.h"
#include "deta/err.h"
#include "deta/money.h"

#define PAYMENT_ID_MAX DETA_ID_MAX /* customerId */
#define PAYMENT_MAX_CUSTOMER_RULES 32
#define PAYMENT_RATE_SCALE 1000000 /* decline rate in parts per million */

#define PAYMENT_STATUS_AUTHORIZED "AUTHORIZED"
#define PAYMENT_STATUS_DECLINED "DECLINED"
#define PAYMENT_DECLINED_AMOUNT_LIMIT "DECLINED_AMOUNT_LIMIT"
#define PAYMENT_DECLINED_CUSTOMER "DECLINED_CUSTOMER"
#define PAYMENT_DECLINED_RANDOM "DECLINED_RANDOM"
/* Not the gateway's: the stock's hold had expired before the charge, so the
 * gateway was not called (inventory releases the hold; see events.c). */
#define PAYMENT_DECLINED_HOLD_EXPIRED "DECLINED_HOLD_EXPIRED"

/* The idempotency layers of docs/contracts.md: keys and expiries. */
#define PAYMENT_KEY_MAX 96
#define PAYMENT_LOCK_TTL_MS 30000L
#define PAYMENT_GATEWAY_LATENCY_MAX_MS 5000L
#define PAYMENT_DEDUP_TTL_MS 86400000L /* 24 h */

typedef struct payment_customer_rule {
    char text[PAYMENT_ID_MAX + 1]; /* without the '*' */
    bool prefix;
} payment_customer_rule_t;

typedef struct payment_settings {
    deta_money_t decline_above;
    payment_customer_rule_t decline_customers[PAYMENT_MAX_CUSTOMER_RULES];
    size_t ndecline_customers;
    long decline_rate_ppm; /* 0..PAYMENT_RATE_SCALE */
    long decline_seed;
    long gateway_latency_ms;
    int workers;
    int db_connections;
    char gateway_ledger[512]; /* PAYMENT_GATEWAY_LEDGER; "" for none */
} payment_settings_t;

/* The decline rules' values parsed into s; DETA_ERR_INVALID naming the variable. */
deta_err_t payment_parse_decline_above(const char *v, payment_settings_t *s, char *errstr,
                                       size_t errsize);
deta_err_t payment_parse_decline_customers(const char *v, payment_settings_t *s, char *errstr,
                                           size_t errsize);
deta_err_t payment_parse_decline_rate(const char *v, payment_settings_t *s, char *errstr,
                                      size_t errsize);

/* What an inventory.reserved event asks to be charged. */
typedef struct payment_request {
    char event_id[DETA_UUID_LEN + 1]; /* the idempotency key */
    char order_id[DETA_UUID_LEN + 1];
    char correlation_id[DETA_ID_MAX + 1];
    char customer_id[PAYMENT_ID_MAX + 1];
    deta_money_t amount;
    char currency[4];
    int64_t hold_expires_ms; /* payload.holdExpiresAt; -1 when the event has none */
} payment_request_t;

/* From a parsed inventory.reserved envelope: the order id must be a UUID and the
 * payload's orderId (when present) the same; customerId 1..64 bytes, totalAmount
 * money >= 0, currency ISO 4217, holdExpiresAt (optional) an ISO-8601 UTC
 * instant. DETA_ERR_INVALID naming the field otherwise. */
deta_err_t payment_request_from_event(const deta_event_t *ev, payment_request_t *req,
                                      char *errstr, size_t errsize);

typedef struct payment_decision {
    bool authorized;
    const char *reason; /* one of PAYMENT_DECLINED_*; NULL when authorized */
} payment_decision_t;

/* The simulated gateway's answer: pure and deterministic. */
payment_decision_t payment_gateway_decide(const payment_settings_t *s,
                                          const payment_request_t *req);

/* May the gateway still be asked to charge req at now_ms (ms since the epoch)?
 * No once the stock's hold has expired: the charge would pay for units that
 * inventory may already have released. An event without holdExpiresAt (from an
 * inventory-service older than the field) never expires. */
bool payment_hold_expired(const payment_request_t *req, int64_t now_ms);

/* The simulated gateway's ledger: one line a charge, "charge <key> <status>
 * <reason or -> <instance>". format writes it into out between two newlines
 * (so that a write cut short elsewhere never glues onto it: readers skip empty
 * lines and fragments);
 * parse reads one line (without the newline): true with key and decision
 * filled when it is a well-formed charge line. */
#define PAYMENT_LEDGER_LINE_MAX 256
void payment_ledger_format(char out[PAYMENT_LEDGER_LINE_MAX], const char *key,
                           payment_decision_t decision, const char *instance);
bool payment_ledger_parse(const char *line, char key[DETA_UUID_LEN + 1],
                          payment_decision_t *decision);

/* Does customer_id match a rule ("vip" exactly, "decline-*" as a prefix)? */
bool payment_customer_matches(const payment_customer_rule_t *rule, const char *customer_id);

/* A decided payment, as stored and announced. */
typedef struct payment {
    char payment_id[DETA_UUID_LEN + 1];
    payment_request_t req;
    payment_decision_t decision;
    char decided_at[DETA_TS_LEN];
} payment_t;

/* The payment of the attempt payment_id (the id the attempt was given when it
 * began) with its decision, decided now. */
void payment_init(payment_t *p, const char *payment_id, const payment_request_t *req,
                  payment_decision_t decision);
const char *payment_status(const payment_t *p); /* AUTHORIZED or DECLINED */

/* payment.authorized: orderId, paymentId, customerId, amount, currency,
 * authorizedAt; payment.failed: the same with reason and failedAt instead. */
const char *payment_event_type(const payment_t *p);
json_t *payment_event_payload(const payment_t *p);
/* The whole envelope: the request's order and correlation ids, producer
 * payment-service, occurredAt = the decision instant. */
deta_err_t payment_event_build(const payment_t *p, deta_event_t *ev, char *errstr,
                               size_t errsize);

/* payment:dedup:{eventId} and payment-lock:order:{orderId}. */
void payment_dedup_key(char out[PAYMENT_KEY_MAX], const char *event_id);
void payment_lock_key(char out[PAYMENT_KEY_MAX], const char *order_id);

#endif
