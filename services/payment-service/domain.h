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

/* ---- the cancellation saga (docs/contracts.md#cancellation) ---- */

#define PAYMENT_REASON_MAX 200 /* the client's reason, as order-service accepts it */
#define PAYMENT_STAGE_NONE "NONE"

/* What an inventory.cancel_forwarded asks: payment decides the cancel of the
 * order. reason is the client's, "" (has_reason false) when it gave none. */
typedef struct payment_cancel {
    char event_id[DETA_UUID_LEN + 1];
    char order_id[DETA_UUID_LEN + 1];
    char correlation_id[DETA_ID_MAX + 1];
    char reservation_id[DETA_ID_MAX + 1];
    bool has_reason;
    char reason[PAYMENT_REASON_MAX + 1];
    char requested_at[DETA_TS_LEN];
} payment_cancel_t;

/* From a parsed inventory.cancel_forwarded: orderId a UUID (the payload's the
 * same), reservationId 1..64 bytes, reason null or 1..200 bytes, requestedAt an
 * instant; DETA_ERR_INVALID naming the field otherwise. */
deta_err_t payment_cancel_from_event(const deta_event_t *ev, payment_cancel_t *c, char *errstr,
                                     size_t errsize);

typedef enum payment_cancel_verdict {
    PAYMENT_CANCEL_DECIDED,  /* decided before (a redelivery or a second forward): nothing */
    PAYMENT_CANCEL_FORWARD,  /* the order is paid: delivery decides (payment.cancel_forwarded) */
    PAYMENT_CANCEL_REFUSE,   /* the payment was declined: PAYMENT_FAILED (payment.cancel_refused) */
    PAYMENT_CANCEL_FENCE,    /* no payment: the cancel wins, the charge is fenced off
                              * (payment_cancellations, payment.cancelled) */
} payment_cancel_verdict_t;

/* The verdict from what payment-service holds of the order: whether it decided
 * a cancel of it already, and its payment's status (NULL when it has none). */
payment_cancel_verdict_t payment_cancel_decide(bool decided_before, const char *payment_status);
/* The word stored in payment_cancellations.verdict: FORWARDED, REFUSED or
 * CANCELLED (NULL for PAYMENT_CANCEL_DECIDED). */
const char *payment_cancel_verdict_name(payment_cancel_verdict_t v);

/* The verdict's event, decided at decided_at: payment.cancel_forwarded
 * {orderId, paymentId, reason, requestedAt, forwardedAt}, payment.cancel_refused
 * {orderId, orderStatus PAYMENT_FAILED, reason, requestedAt, refusedAt} or
 * payment.cancelled {orderId, stage NONE, reservationId, reason, requestedAt,
 * cancelledAt}; reason is null when the client gave none. payment_id is used
 * by the forward only. occurredAt = decided_at. */
deta_err_t payment_cancel_event_build(const payment_cancel_t *c, payment_cancel_verdict_t v,
                                      const char *payment_id, const char *decided_at,
                                      deta_event_t *ev, char *errstr, size_t errsize);

/* ---- refunds (docs/contracts.md#refunds) ---- */

/* What a delivery.cancelled asks of payment: refund the order's charge. Only
 * the orderId (a UUID, the payload's the same) is read; the amount is the
 * charge's own, never the event's. */
typedef struct payment_refund_request {
    char event_id[DETA_UUID_LEN + 1]; /* the refund's idempotency key */
    char order_id[DETA_UUID_LEN + 1];
    char correlation_id[DETA_ID_MAX + 1];
} payment_refund_request_t;

deta_err_t payment_refund_request_from_event(const deta_event_t *ev,
                                             payment_refund_request_t *r, char *errstr,
                                             size_t errsize);

/* The refund a payment calls for: true with *amount = the whole charge when
 * its status is AUTHORIZED; false (nothing to refund) for a decline or no
 * payment (status NULL). */
bool payment_refund_amount(const char *payment_status, deta_money_t charged,
                           deta_money_t *amount);

/* A refund, as recorded and announced. */
typedef struct payment_refund {
    char refund_id[DETA_UUID_LEN + 1];
    char payment_id[DETA_UUID_LEN + 1];
    payment_refund_request_t req;
    deta_money_t amount;
    char currency[4];
    char refunded_at[DETA_TS_LEN];
} payment_refund_t;

/* payment.refunded {orderId, paymentId, refundId, amount, currency, reason
 * ORDER_CANCELLED, refundedAt}; occurredAt = refundedAt. */
json_t *payment_refund_payload(const payment_refund_t *r);
deta_err_t payment_refund_event_build(const payment_refund_t *r, deta_event_t *ev,
                                      char *errstr, size_t errsize);

/* The ledger's refund line, "refund <key> <amount> <instance>", between two
 * newlines like a charge's; parse reads one line (without its newline): true
 * with key and amount when it is a well-formed refund line (a charge line is
 * not, and payment_ledger_parse takes no refund line). */
void payment_ledger_format_refund(char out[PAYMENT_LEDGER_LINE_MAX], const char *key,
                                  deta_money_t amount, const char *instance);
bool payment_ledger_parse_refund(const char *line, char key[DETA_UUID_LEN + 1],
                                 deta_money_t *amount);

/* payment:dedup:{eventId} and payment-lock:order:{orderId}. */
void payment_dedup_key(char out[PAYMENT_KEY_MAX], const char *event_id);
void payment_lock_key(char out[PAYMENT_KEY_MAX], const char *order_id);

#endif
