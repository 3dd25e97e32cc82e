/*
 * gateway.h - the payment gateway as payment-service uses it: a charge made
 * under an idempotency key, and a look-up of what was charged under a key.
 *
 * The key is the order id: the guarantee is "one charge per order", so a second
 * charge request under the same key, from any instance or retry, must be
 * answered with the first charge, never make a second. The look-up is how an
 * attempt that may have charged already (its instance crashed, or its record
 * never committed) finds the outcome without charging again (events.c).
 *
 * The gateway here is the simulated one: its answer is the pure rule of domain.c
 * (payment_gateway_decide), after PAYMENT_GATEWAY_LATENCY_MS. With a ledger
 * (PAYMENT_GATEWAY_LEDGER, a file), every charge is appended to it halfway
 * through that latency, as a real gateway charges before its answer reaches
 * the caller, and a look-up reads it: the ledger is the gateway's own memory,
 * shared by every instance that names the same file, and the count of charges
 * per order that the tests and the chaos run check. Without one the simulation
 * remembers nothing, and a look-up answers with its rule as if it did.
 *
 * Where the simulation falls short of a real gateway: it does not answer a
 * second charge under a key with the first one (it charges again, and the
 * ledger shows two). events.c never asks twice while its claim holds; only a
 * process stalled for over half the claim's life between its last check and the
 * call could, and a real gateway would then answer with the first charge.
 */
#ifndef PAYMENT_GATEWAY_H
#define PAYMENT_GATEWAY_H

#include <stdbool.h>

#include "deta/err.h"
#include "domain.h"

typedef struct payment_gateway payment_gateway_t;

/* The ledger is opened (created when missing) here: DETA_ERR_INVALID naming
 * PAYMENT_GATEWAY_LEDGER when it cannot be. instance goes into each line. */
payment_gateway_t *payment_gateway_new(const payment_settings_t *s, const char *instance,
                                       char *errstr, size_t errsize);
void payment_gateway_free(payment_gateway_t *gw);

/* Charges req under key (its order id) and returns the decision. TRANSIENT when
 * the gateway cannot take the charge (the ledger cannot be written): then
 * nothing was charged. */
deta_err_t payment_gateway_charge(payment_gateway_t *gw, const char *key,
                                  const payment_request_t *req, payment_decision_t *out,
                                  char *errstr, size_t errsize);

/* What was charged under key: *found false when nothing was. TRANSIENT when the
 * ledger cannot be read. */
deta_err_t payment_gateway_lookup(payment_gateway_t *gw, const char *key,
                                  const payment_request_t *req, bool *found,
                                  payment_decision_t *out, char *errstr, size_t errsize);

/* Refunds, under the same key (docs/contracts.md#refunds): the ledger line is
 * "refund <key> <amount> <instance>", written halfway through the latency like
 * a charge's. refund pays amount back under key; TRANSIENT when it cannot (the
 * ledger cannot be written): then nothing was refunded. The simulation, like
 * for charges, does not answer a second refund under a key with the first. */
deta_err_t payment_gateway_refund(payment_gateway_t *gw, const char *key, deta_money_t amount,
                                  char *errstr, size_t errsize);
/* What was refunded under key: *found false when nothing was. Charge lines are
 * not refunds. Without a ledger the simulation remembers nothing and answers
 * found (with amount untouched): an attempt that may have refunded is then
 * taken as done rather than risk a second refund. */
deta_err_t payment_gateway_refund_lookup(payment_gateway_t *gw, const char *key, bool *found,
                                         deta_money_t *amount, char *errstr, size_t errsize);

#endif
