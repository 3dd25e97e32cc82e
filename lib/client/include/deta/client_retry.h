/*
 * deta/client_retry.h - the clients' one way of asking order-service to do
 * something that must happen once: place an order under an idempotency key, or
 * cancel an order, retrying what may be retried (docs/contracts.md, "Idempotency
 * keys" and POST /api/orders/{id}/cancel).
 *
 * Design. A request that got no answer, or a 5xx, or a timeout, may or may not
 * have taken effect; without a key, sending it again could make a second order.
 * With an Idempotency-Key (a random UUID per logical order, kept across its
 * retries) order-service answers a repeat with the first order (200 and
 * Idempotent-Replayed: true), so every such failure may be retried. A cancel is
 * idempotent by contract (a second one writes nothing), so it is retried alike.
 * The retries are bounded twice: by a number of attempts and by an overall
 * deadline, with an exponential backoff between attempts (jittered, capped).
 *
 * The decisions are pure functions (the backoff schedule, the key's shape, what
 * an answer means), unit-tested in tests/unit/test_client_retry.c; the calls
 * around them are thin. deta-cli (create, cancel, the demo), the chaos load and
 * the integration tests' support use these calls and no copy of them.
 */
#ifndef DETA_CLIENT_RETRY_H
#define DETA_CLIENT_RETRY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deta/client.h"

/* ---- settings ------------------------------------------------------------------ */

typedef struct deta_retry_policy {
    int max_attempts;       /* attempts in all, first included; 0: only the deadline bounds */
    long first_backoff_ms;  /* pause after the first failed attempt */
    long max_backoff_ms;    /* the pauses double up to this */
    long deadline_ms;       /* from the first attempt: no attempt starts after it */
    long request_timeout_ms; /* each attempt, whole (a timeout is retried) */
    long connect_timeout_ms;
} deta_retry_policy_t;

/* 8 attempts, 100 ms doubling to 2 s, within 30 s; 10 s per request, 3 s to
 * connect. */
deta_retry_policy_t deta_retry_policy_default(void);

/* The pause before attempt `attempt` (2 = the first retry): first_backoff_ms *
 * 2^(attempt-2), capped at max_backoff_ms, then jittered down by up to half from
 * `random` (any 64-bit value), so that clients cut off together do not come back
 * together. 0 for attempt < 2. */
long deta_retry_backoff_ms(const deta_retry_policy_t *p, int attempt, uint64_t random);

/* ---- idempotency keys ------------------------------------------------------------ */

#define DETA_IDEMPOTENCY_KEY_MAX 255
#define DETA_KEY_UUID_LEN 36

/* A version-4 UUID (lower case) from 16 random bytes: the key's text. */
void deta_idempotency_key_format(const uint8_t bytes[16], char out[DETA_KEY_UUID_LEN + 1]);
/* A fresh random key; false when the system's random source failed. */
bool deta_idempotency_key_new(char out[DETA_KEY_UUID_LEN + 1]);
/* The contract's rule: 1 to 255 visible ASCII characters ('!' to '~'). */
bool deta_idempotency_key_valid(const char *key);

/* ---- what an answer means ------------------------------------------------------- */

typedef enum deta_outcome {
    DETA_OUTCOME_CREATED,    /* create: 201 */
    DETA_OUTCOME_REPLAYED,   /* create: 200, the key's first order (Idempotent-Replayed) */
    DETA_OUTCOME_REQUESTED,  /* cancel: 202, asked (or asked already), not decided */
    DETA_OUTCOME_CANCELLED,  /* cancel: 200, the cancel won */
    DETA_OUTCOME_REFUSED,    /* cancel: 409, too late (orderStatus says why) */
    DETA_OUTCOME_NOT_FOUND,  /* 404 */
    DETA_OUTCOME_KEY_REUSED, /* create: 422, the key was used for another request */
    DETA_OUTCOME_INVALID,    /* another 4xx: the request is wrong, sending it again won't help */
    DETA_OUTCOME_TRANSIENT,  /* 5xx, 408, 429, a timeout, no answer: retried */
    DETA_OUTCOME_COUNT
} deta_outcome_t;

/* A word for logs and reports ("created", "replayed", ...). */
const char *deta_outcome_name(deta_outcome_t o);
/* The outcome of one attempt at POST /api/orders: got_answer false when no
 * answer came (a timeout, a refused or cut connection). */
deta_outcome_t deta_outcome_of_create(bool got_answer, long status);
/* The outcome of one attempt at POST /api/orders/{id}/cancel. */
deta_outcome_t deta_outcome_of_cancel(bool got_answer, long status);
/* True when the outcome is final (anything but DETA_OUTCOME_TRANSIENT). */
bool deta_outcome_final(deta_outcome_t o);

/* The value of header `name` (case-insensitive) in the raw header lines of an
 * answer (deta_client_resp_t.headers), trimmed, copied into out; false when
 * absent. The last one counts (after a 100 Continue, the final answer's). */
bool deta_client_header(const char *headers, const char *name, char *out, size_t size);

/* ---- the calls -------------------------------------------------------------------- */

typedef struct deta_call_result {
    deta_outcome_t outcome; /* the last attempt's: TRANSIENT when the retries ran out */
    long status;            /* the last answer's HTTP status; 0 when none came */
    int attempts;
    bool replay_header;     /* the answer carried Idempotent-Replayed: true */
    json_t *json;           /* the last answer's body as JSON (or NULL); the caller's */
    double millis;          /* from the first attempt to the last answer */
    double last_millis;     /* the last attempt's own round trip */
    char error[320];        /* for a non-success: what the last attempt got */
} deta_call_result_t;

/* POST order_url/api/orders with body and Idempotency-Key: key, retrying
 * transient outcomes under the policy (NULL: the default). c: the caller's
 * keep-alive handle, or NULL for a fresh handle per attempt (for a caller whose
 * target is killed under it). */
deta_outcome_t deta_order_create(const deta_retry_policy_t *p, deta_client_t *c,
                                 const char *order_url, const char *body, const char *key,
                                 deta_call_result_t *out);
/* POST order_url/api/orders/{order_id}/cancel with {"reason": reason} (no body
 * when reason is NULL), retrying transient outcomes; as deta_order_create. The
 * 409's orderStatus is in out->json. */
deta_outcome_t deta_order_cancel(const deta_retry_policy_t *p, deta_client_t *c,
                                 const char *order_url, const char *order_id, const char *reason,
                                 deta_call_result_t *out);
/* Releases out's JSON. */
void deta_call_result_clear(deta_call_result_t *out);

#endif
