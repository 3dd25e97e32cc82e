/*
 * domain.h - delivery-service's rules, as plain functions without I/O.
 *
 * Time. Every instant is real (wall-clock) time in milliseconds since the epoch,
 * because that is what the events and the database carry. Durations are
 * simulated: a pickup takes DELIVERY_PICKUP_MINUTES of simulated time, travel
 * takes distance / speed; the clock speed compresses them into real time (600
 * means ten simulated minutes pass in one real second). So a delivery's
 * next_transition_at and its ETA are real instants, reached sooner when the clock
 * runs fast.
 *
 * Stability. The distance of an order and its jitters come from a hash of the
 * orderId, never from a random source: a redelivered event or a second instance
 * computes the same numbers, and tests can predict them.
 *
 * Waiting. A paid order that finds no free driver is not a failure: it waits in
 * a queue, first paid (authorizedAt), first served, announced by
 * delivery.waiting with its place in the queue, and is assigned as soon as a
 * driver has room (delivery_waiting_payload).
 *
 * Cancelling. delivery-service is where a paid order's cancel is decided
 * (docs/contracts.md#cancellation): delivery_cancel_decide says what the cancel
 * does to an order in each state it may find it in, and the payloads of its two
 * verdicts are built here. An ASSIGNED delivery may end CANCELLED instead of
 * being picked up.
 *
 * The life of a delivery is ASSIGNED -> PICKED_UP -> DELIVERED; each step is a
 * pure function of the delivery and the instant it happens (delivery_assign,
 * delivery_advance), and each step is announced by its own event followed by an
 * eta.updated (the payload builders below).
 */
#ifndef DELIVERY_DOMAIN_H
#define DELIVERY_DOMAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "deta/envelope.h"
#include "deta/err.h"
#include "deta/money.h"

#define DELIVERY_DRIVER_ID_MAX 32
#define DELIVERY_DRIVER_NAME_MAX 64
#define DELIVERY_DISTANCE_MIN_HM 10  /* 1.0 km, in hectometres (tenths of a km) */
#define DELIVERY_DISTANCE_MAX_HM 150 /* 15.0 km */
#define DELIVERY_JITTER_DIVISOR 5    /* jitter stays within +-1/5 of the travel time */

typedef enum delivery_stage {
    DELIVERY_ASSIGNED = 0,
    DELIVERY_PICKED_UP,
    DELIVERY_DELIVERED,
    DELIVERY_CANCELLED, /* the cancel won before the pick-up; an end, like DELIVERED */
} delivery_stage_t;

/* "ASSIGNED", "PICKED_UP", "DELIVERED", "CANCELLED"; NULL for anything else. */
const char *delivery_stage_name(delivery_stage_t stage);
/* The inverse; false when s names no stage. */
bool delivery_stage_parse(const char *s, delivery_stage_t *out);

/* The settings the rules depend on (env DELIVERY_*, read by settings.c). */
typedef struct delivery_params {
    long drivers;         /* DELIVERY_DRIVERS: drivers seeded at start, default 20 */
    long capacity;        /* DELIVERY_DRIVER_CAPACITY: concurrent deliveries, default 5 */
    long pickup_minutes;  /* DELIVERY_PICKUP_MINUTES: simulated, default 10 */
    long speed_kmh;       /* DELIVERY_SPEED_KMH: default 25 */
    long clock_speed;     /* DELIVERY_CLOCK_SPEED: simulated s per real s, default 1 */
    long tick_ms;         /* DELIVERY_TICK_MS: how often due deliveries advance, default 200 */
} delivery_params_t;

void delivery_params_defaults(delivery_params_t *p);

/* ---- distance, durations, ETA ---- */

/* The order's distance in hectometres, DELIVERY_DISTANCE_MIN_HM..MAX_HM, stable. */
int delivery_distance_hm(const char *order_id);
/* Simulated travel time in seconds for a distance (rounded, at least 1). */
int64_t delivery_travel_s(const delivery_params_t *p, int distance_hm);
/* A stable jitter in simulated seconds for the order at a stage, within
 * [-travel_s / DELIVERY_JITTER_DIVISOR, +travel_s / DELIVERY_JITTER_DIVISOR]. At
 * PICKED_UP it is recomputed and always differs from the ASSIGNED one (when the
 * bound allows any choice), so the ETA visibly changes at pickup. */
int64_t delivery_jitter_s(const char *order_id, int64_t travel_s, delivery_stage_t stage);
/* Simulated seconds as real milliseconds at the clock speed (rounded). */
int64_t delivery_real_ms(const delivery_params_t *p, int64_t simulated_s);

/* A delivery as the rules see it. Instants are real ms since the epoch; 0 means
 * "not yet". */
typedef struct delivery {
    char delivery_id[DETA_UUID_LEN + 1];
    char order_id[DETA_UUID_LEN + 1];
    char driver_id[DELIVERY_DRIVER_ID_MAX + 1];
    char driver_name[DELIVERY_DRIVER_NAME_MAX + 1];
    delivery_stage_t status;
    int distance_hm;
    int64_t assigned_ms;
    int64_t picked_up_ms;
    int64_t delivered_ms;
    int64_t eta_ms;             /* estimated delivery instant */
    int64_t next_transition_ms; /* when the next stage is due; 0 once delivered */
} delivery_t;

/* A new delivery of order_id by the driver, assigned at now_ms: pickup is due
 * after the pickup time, the ETA is assigned + pickup + travel + jitter.
 * DETA_ERR_INVALID when an id does not fit. */
deta_err_t delivery_assign(const delivery_params_t *p, delivery_t *d, const char *delivery_id,
                           const char *order_id, const char *driver_id, const char *driver_name,
                           int64_t now_ms);

/* The next stage at now_ms (never earlier than the previous stage's instant):
 * ASSIGNED -> PICKED_UP recomputes the ETA from the pickup instant (travel with a
 * recomputed jitter) and makes it the next transition; PICKED_UP -> DELIVERED sets
 * the final ETA to the delivery instant and clears the next transition.
 * DETA_ERR_INVALID for a delivery that is already DELIVERED. */
deta_err_t delivery_advance(const delivery_params_t *p, delivery_t *d, int64_t now_ms);

/* Estimated seconds from assignment to delivery, in simulated time (what
 * delivery_eta_seconds observes). */
double delivery_estimated_seconds(const delivery_params_t *p, const delivery_t *d);

/* ---- drivers ---- */

typedef struct delivery_driver {
    char driver_id[DELIVERY_DRIVER_ID_MAX + 1];
    char name[DELIVERY_DRIVER_NAME_MAX + 1];
    long active; /* deliveries not yet delivered */
    bool available;
} delivery_driver_t;

/* The index of the driver to assign: available, fewer than capacity active
 * deliveries, the fewest of them, ties broken by the smaller driver_id (byte
 * order). -1 when no driver qualifies. */
int delivery_choose_driver(const delivery_driver_t *rows, size_t n, long capacity);

/* The seeded driver number i (1-based): "driver-01", "Driver 01", two digits at
 * least. false when a buffer is too small or i < 1. */
bool delivery_driver_identity(long i, char *id, size_t idsize, char *name, size_t namesize);

/* ---- events in and out ---- */

/* payment.authorized, as docs/contracts.md defines its payload. */
typedef struct payment_authorized {
    char order_id[DETA_UUID_LEN + 1];
    char payment_id[DETA_ID_MAX + 1];
    char customer_id[DETA_ID_MAX + 1];
    deta_money_t amount;
    char currency[4];
    char authorized_at[DETA_TS_LEN];
} payment_authorized_t;

/* Validates a payment.authorized event: every payload field present and well
 * formed, payload.orderId equal to the envelope's orderId, which must be a UUID.
 * DETA_ERR_INVALID with errstr naming the field ("payload.paymentId ..."). */
deta_err_t delivery_parse_payment_authorized(const deta_event_t *ev, payment_authorized_t *out,
                                             char *errstr, size_t errsize);

/* The payload of the event that announces d's current stage: delivery.assigned,
 * delivery.picked_up or delivery.delivered (docs/contracts.md); NULL for a
 * CANCELLED delivery (its event is delivery_cancelled_payload's). */
json_t *delivery_stage_payload(const delivery_t *d);
/* Its event type (NULL for CANCELLED). */
const char *delivery_stage_event_type(delivery_stage_t stage);
/* delivery.waiting: the order waits for a driver since since_ms, at position
 * (1 = next to be served) in the queue when it began to wait. */
json_t *delivery_waiting_payload(const char *order_id, const char *payment_id, int64_t since_ms,
                                 long position);
/* eta.updated for d's current stage, calculated at calculated_ms. */
json_t *delivery_eta_payload(const delivery_t *d, int64_t calculated_ms);

/* ---- cancellation ---- */

#define DELIVERY_REASON_MAX 200 /* a cancel's reason, as order-service accepts it */

/* payment.cancel_forwarded, as docs/contracts.md defines its payload. reason is
 * the client's, and may be null (has_reason false). */
typedef struct payment_cancel_forwarded {
    char order_id[DETA_UUID_LEN + 1];
    char payment_id[DETA_ID_MAX + 1];
    bool has_reason;
    char reason[DELIVERY_REASON_MAX + 1];
    char requested_at[DETA_TS_LEN];
    char forwarded_at[DETA_TS_LEN];
} payment_cancel_forwarded_t;

/* Validates a payment.cancel_forwarded event like
 * delivery_parse_payment_authorized: paymentId, requestedAt and forwardedAt
 * required, reason a string of 1..DELIVERY_REASON_MAX bytes, null or absent.
 * DETA_ERR_INVALID with errstr naming the field. */
deta_err_t delivery_parse_cancel_forwarded(const deta_event_t *ev,
                                           payment_cancel_forwarded_t *out, char *errstr,
                                           size_t errsize);

/* What delivery-service knows of an order when its cancel arrives. */
typedef struct delivery_cancel_facts {
    bool cancelled;         /* the order is in cancelled_orders: a cancel won already */
    bool refused;           /* a cancel of it was refused already */
    bool has_delivery;
    delivery_stage_t stage; /* the delivery's, when has_delivery */
    bool waiting;           /* the order is in the queue */
} delivery_cancel_facts_t;

typedef enum delivery_cancel_verdict {
    DELIVERY_CANCEL_DECIDED = 0, /* decided before (a second forward): nothing to do */
    DELIVERY_CANCEL_ASSIGNED,    /* cancel the delivery, free its driver */
    DELIVERY_CANCEL_WAITING,     /* the order leaves the queue */
    DELIVERY_CANCEL_NONE,        /* never seen: fence it off */
    DELIVERY_CANCEL_REFUSE,      /* picked up or delivered: too late */
} delivery_cancel_verdict_t;

/* The verdict for an order in the state f describes. A verdict is final: an
 * order cancelled or refused once is DECIDED. A delivery wins over a place in
 * the queue (both are seen only while the ticker's assignment of the order
 * commits). */
delivery_cancel_verdict_t delivery_cancel_decide(const delivery_cancel_facts_t *f);

/* The stage that delivery.cancelled and cancelled_orders name for a verdict that
 * cancels: "ASSIGNED", "WAITING", "NONE"; NULL for DECIDED and REFUSE. */
const char *delivery_cancel_stage(delivery_cancel_verdict_t v);

/* delivery.cancelled: stage as delivery_cancel_stage; delivery_id and driver_id
 * NULL (JSON null) unless ASSIGNED; reason NULL for null. NULL for a verdict
 * that does not cancel or an ASSIGNED one without its ids. */
json_t *delivery_cancelled_payload(delivery_cancel_verdict_t v, const char *order_id,
                                   const char *delivery_id, const char *driver_id,
                                   const char *payment_id, const char *reason,
                                   const char *requested_at, int64_t cancelled_ms);

/* delivery.cancel_refused for a delivery at stage (PICKED_UP or DELIVERED, the
 * order's state of the same name); NULL for another stage. */
json_t *delivery_cancel_refused_payload(const char *order_id, delivery_stage_t stage,
                                        const char *reason, const char *requested_at,
                                        int64_t refused_ms);

/* "7.3" for 73 hectometres. */
void delivery_format_km(int distance_hm, char *out, size_t outsize);

#endif
