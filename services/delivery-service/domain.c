/*
 * domain.c - delivery-service's rules: distances and ETAs on a simulated clock,
 * the choice of a driver, and the events in and out (see domain.h).
 *
 * Decisions where the contracts are silent:
 *   - distance: 1.0..15.0 km in steps of 100 m, from a hash of the orderId;
 *   - travel time = distance / speed, plus a jitter of at most a fifth of it either
 *     way (so travel never drops below 4/5 of the ideal and an ETA is never before
 *     the instant it is computed at); the pickup stage draws a new jitter that is
 *     never equal to the first, so the ETA published at pickup differs;
 *   - a stage never happens before the previous one, even if the caller's clock
 *     stepped back: instants are clamped, so assigned <= picked up <= delivered;
 *   - a cancel's reason may be absent as well as null (both mean none);
 *   - a second cancel of an order already refused is decided too (nothing is
 *     published for it), like one already cancelled: a verdict is given once.
 * The hash is FNV-1a with a final avalanche (splitmix64's), so that order ids that
 * differ in one character land far apart.
 */
#include "domain.h"

#include <stdio.h>
#include <string.h>

#include "deta/fields.h"
#include "deta/states.h"
#include "deta/topics.h"

/* ---- stages ---- */

static const char *const STAGE_NAMES[] = {"ASSIGNED", "PICKED_UP", "DELIVERED", "CANCELLED"};
#define STAGE_COUNT (sizeof STAGE_NAMES / sizeof *STAGE_NAMES)

const char *delivery_stage_name(delivery_stage_t stage) {
    return (unsigned)stage < STAGE_COUNT ? STAGE_NAMES[stage] : NULL;
}

bool delivery_stage_parse(const char *s, delivery_stage_t *out) {
    for (size_t i = 0; s && i < STAGE_COUNT; i++)
        if (strcmp(s, STAGE_NAMES[i]) == 0) {
            *out = (delivery_stage_t)i;
            return true;
        }
    return false;
}

const char *delivery_stage_event_type(delivery_stage_t stage) {
    switch (stage) {
    case DELIVERY_ASSIGNED:
        return DETA_EVT_DELIVERY_ASSIGNED;
    case DELIVERY_PICKED_UP:
        return DETA_EVT_DELIVERY_PICKED_UP;
    case DELIVERY_DELIVERED:
        return DETA_EVT_DELIVERY_DELIVERED;
    case DELIVERY_CANCELLED: /* delivery.cancelled has a payload of its own */
        return NULL;
    }
    return NULL;
}

void delivery_params_defaults(delivery_params_t *p) {
    p->drivers = 20;
    p->capacity = 5;
    p->pickup_minutes = 10;
    p->speed_kmh = 25;
    p->clock_speed = 1;
    p->tick_ms = 200;
}

/* ---- stable numbers from an order id ---- */

static uint64_t stable_hash(const char *s, uint64_t salt) {
    uint64_t h = 14695981039346656037ULL ^ salt;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        h ^= *c;
        h *= 1099511628211ULL;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

/* Salts keep the distance and the jitter of each stage independent. */
#define SALT_DISTANCE 0x64697374616e6365ULL
#define SALT_JITTER 0x6a69747465720000ULL

int delivery_distance_hm(const char *order_id) {
    uint64_t span = DELIVERY_DISTANCE_MAX_HM - DELIVERY_DISTANCE_MIN_HM + 1;
    return DELIVERY_DISTANCE_MIN_HM + (int)(stable_hash(order_id, SALT_DISTANCE) % span);
}

int64_t delivery_travel_s(const delivery_params_t *p, int distance_hm) {
    /* hm / 10 km at speed km/h is hm * 360 / speed seconds */
    int64_t s = ((int64_t)distance_hm * 360 + p->speed_kmh / 2) / p->speed_kmh;
    return s > 0 ? s : 1;
}

static int64_t raw_jitter(const char *order_id, int64_t bound, delivery_stage_t stage) {
    uint64_t span = (uint64_t)(2 * bound + 1);
    return (int64_t)(stable_hash(order_id, SALT_JITTER + (uint64_t)stage) % span) - bound;
}

int64_t delivery_jitter_s(const char *order_id, int64_t travel_s, delivery_stage_t stage) {
    int64_t bound = travel_s / DELIVERY_JITTER_DIVISOR;
    if (bound <= 0 || stage == DELIVERY_DELIVERED)
        return 0;
    int64_t j = raw_jitter(order_id, bound, stage);
    if (stage == DELIVERY_PICKED_UP) {
        int64_t first = raw_jitter(order_id, bound, DELIVERY_ASSIGNED);
        if (j == first)
            j = first < bound ? first + 1 : first - 1;
    }
    return j;
}

int64_t delivery_real_ms(const delivery_params_t *p, int64_t simulated_s) {
    int64_t speed = p->clock_speed;
    int64_t ms = simulated_s * 1000;
    return ms >= 0 ? (ms + speed / 2) / speed : -((-ms + speed / 2) / speed);
}

/* ---- the life of a delivery ---- */

static bool copy_text(char *dst, size_t dstsize, const char *src) {
    if (!src || strlen(src) >= dstsize)
        return false;
    memcpy(dst, src, strlen(src) + 1);
    return true;
}

static int64_t pickup_s(const delivery_params_t *p) { return (int64_t)p->pickup_minutes * 60; }

deta_err_t delivery_assign(const delivery_params_t *p, delivery_t *d, const char *delivery_id,
                           const char *order_id, const char *driver_id, const char *driver_name,
                           int64_t now_ms) {
    memset(d, 0, sizeof *d);
    if (!copy_text(d->delivery_id, sizeof d->delivery_id, delivery_id) ||
        !copy_text(d->order_id, sizeof d->order_id, order_id) ||
        !copy_text(d->driver_id, sizeof d->driver_id, driver_id) ||
        !copy_text(d->driver_name, sizeof d->driver_name, driver_name))
        return DETA_ERR_INVALID;
    d->status = DELIVERY_ASSIGNED;
    d->distance_hm = delivery_distance_hm(order_id);
    d->assigned_ms = now_ms;
    int64_t travel = delivery_travel_s(p, d->distance_hm);
    int64_t jitter = delivery_jitter_s(order_id, travel, DELIVERY_ASSIGNED);
    d->next_transition_ms = now_ms + delivery_real_ms(p, pickup_s(p));
    d->eta_ms = now_ms + delivery_real_ms(p, pickup_s(p) + travel + jitter);
    return DETA_OK;
}

static int64_t not_before(int64_t t, int64_t floor) { return t > floor ? t : floor; }

deta_err_t delivery_advance(const delivery_params_t *p, delivery_t *d, int64_t now_ms) {
    if (d->status == DELIVERY_ASSIGNED) {
        int64_t travel = delivery_travel_s(p, d->distance_hm);
        int64_t jitter = delivery_jitter_s(d->order_id, travel, DELIVERY_PICKED_UP);
        d->picked_up_ms = not_before(now_ms, d->assigned_ms);
        d->eta_ms = d->picked_up_ms + delivery_real_ms(p, travel + jitter);
        d->next_transition_ms = d->eta_ms;
        d->status = DELIVERY_PICKED_UP;
        return DETA_OK;
    }
    if (d->status == DELIVERY_PICKED_UP) {
        d->delivered_ms = not_before(now_ms, d->picked_up_ms);
        d->eta_ms = d->delivered_ms;
        d->next_transition_ms = 0;
        d->status = DELIVERY_DELIVERED;
        return DETA_OK;
    }
    return DETA_ERR_INVALID;
}

double delivery_estimated_seconds(const delivery_params_t *p, const delivery_t *d) {
    int64_t travel = delivery_travel_s(p, d->distance_hm);
    int64_t jitter = delivery_jitter_s(d->order_id, travel, DELIVERY_ASSIGNED);
    return (double)(pickup_s(p) + travel + jitter);
}

/* ---- drivers ---- */

static bool can_take(const delivery_driver_t *d, long capacity) {
    return d->available && d->active < capacity;
}

static bool less_busy(const delivery_driver_t *a, const delivery_driver_t *b) {
    if (a->active != b->active)
        return a->active < b->active;
    return strcmp(a->driver_id, b->driver_id) < 0;
}

int delivery_choose_driver(const delivery_driver_t *rows, size_t n, long capacity) {
    int best = -1;
    for (size_t i = 0; i < n; i++)
        if (can_take(&rows[i], capacity) && (best < 0 || less_busy(&rows[i], &rows[best])))
            best = (int)i;
    return best;
}

bool delivery_driver_identity(long i, char *id, size_t idsize, char *name, size_t namesize) {
    if (i < 1)
        return false;
    int a = snprintf(id, idsize, "driver-%02ld", i);
    int b = snprintf(name, namesize, "Driver %02ld", i);
    return a > 0 && (size_t)a < idsize && b > 0 && (size_t)b < namesize;
}

/* ---- payment.authorized ---- */

/* The fields of payment.authorized's payload after orderId (deta/fields.h). */
static const deta_field_t AUTHORIZED_FIELDS[] = {
    DETA_FIELD("paymentId", DETA_FIELD_TEXT, true, 0, 0, payment_authorized_t, payment_id),
    DETA_FIELD("customerId", DETA_FIELD_TEXT, true, 0, 0, payment_authorized_t, customer_id),
    DETA_FIELD("amount", DETA_FIELD_AMOUNT, true, 0, 0, payment_authorized_t, amount),
    DETA_FIELD("currency", DETA_FIELD_CURRENCY, true, 0, 0, payment_authorized_t, currency),
    DETA_FIELD("authorizedAt", DETA_FIELD_INSTANT, true, 0, 0, payment_authorized_t,
               authorized_at),
};

/* The payload's orderId, read as text of at most DETA_ID_MAX bytes. */
typedef struct order_id_in {
    char order_id[DETA_ID_MAX + 1];
} order_id_in_t;

static const deta_field_t ORDER_ID_FIELD[] = {
    DETA_FIELD("orderId", DETA_FIELD_TEXT, true, 0, 0, order_id_in_t, order_id),
};

/* The payload's orderId into order_id: present, equal to the envelope's, a UUID. */
static deta_err_t read_order_id(const deta_event_t *ev, char order_id[DETA_UUID_LEN + 1],
                                char *errstr, size_t errsize) {
    const json_t *p = ev->payload;
    if (!json_is_object(p))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "payload must be an object");
    order_id_in_t in;
    deta_field_error_t e;
    if (deta_fields_read(p, "payload.", ORDER_ID_FIELD, 1, &in, &e))
        return deta_field_error_text(&e, errstr, errsize);
    if (!copy_text(order_id, DETA_UUID_LEN + 1, in.order_id))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "payload.orderId is not a UUID");
    if (strcmp(order_id, ev->order_id) != 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "payload.orderId %s differs from the envelope's orderId %s", order_id,
                         ev->order_id);
    if (!deta_uuid_valid(order_id))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "orderId %s is not a UUID",
                         order_id);
    return DETA_OK;
}

deta_err_t delivery_parse_payment_authorized(const deta_event_t *ev, payment_authorized_t *out,
                                             char *errstr, size_t errsize) {
    memset(out, 0, sizeof *out);
    deta_err_t err = read_order_id(ev, out->order_id, errstr, errsize);
    if (err)
        return err;
    deta_field_error_t e;
    if (deta_fields_read(ev->payload, "payload.", AUTHORIZED_FIELDS,
                         sizeof AUTHORIZED_FIELDS / sizeof *AUTHORIZED_FIELDS, out, &e))
        return deta_field_error_text(&e, errstr, errsize);
    return DETA_OK;
}

/* ---- payment.cancel_forwarded ---- */

static const deta_field_t FORWARDED_FIELDS[] = {
    DETA_FIELD("paymentId", DETA_FIELD_TEXT, true, 0, 0, payment_cancel_forwarded_t,
               payment_id),
    DETA_FIELD("requestedAt", DETA_FIELD_INSTANT, true, 0, 0, payment_cancel_forwarded_t,
               requested_at),
    DETA_FIELD("forwardedAt", DETA_FIELD_INSTANT, true, 0, 0, payment_cancel_forwarded_t,
               forwarded_at),
};

/* reason is the client's, copied along the saga: null when the client gave none. */
static const deta_field_t REASON_FIELD[] = {
    DETA_FIELD("reason", DETA_FIELD_TEXT, false, 0, DELIVERY_REASON_MAX,
               payment_cancel_forwarded_t, reason),
};

deta_err_t delivery_parse_cancel_forwarded(const deta_event_t *ev,
                                           payment_cancel_forwarded_t *out, char *errstr,
                                           size_t errsize) {
    memset(out, 0, sizeof *out);
    deta_err_t err = read_order_id(ev, out->order_id, errstr, errsize);
    if (err)
        return err;
    deta_field_error_t e;
    if (deta_fields_read(ev->payload, "payload.", FORWARDED_FIELDS,
                         sizeof FORWARDED_FIELDS / sizeof *FORWARDED_FIELDS, out, &e))
        return deta_field_error_text(&e, errstr, errsize);
    const json_t *reason = json_object_get(ev->payload, "reason");
    if (reason && !json_is_null(reason)) {
        if (deta_fields_read(ev->payload, "payload.", REASON_FIELD, 1, out, &e))
            return deta_field_error_text(&e, errstr, errsize);
        out->has_reason = true;
    }
    return DETA_OK;
}

delivery_cancel_verdict_t delivery_cancel_decide(const delivery_cancel_facts_t *f) {
    if (f->cancelled || f->refused)
        return DELIVERY_CANCEL_DECIDED;
    if (f->has_delivery) {
        switch (f->stage) {
        case DELIVERY_ASSIGNED:
            return DELIVERY_CANCEL_ASSIGNED;
        case DELIVERY_PICKED_UP:
        case DELIVERY_DELIVERED:
            return DELIVERY_CANCEL_REFUSE;
        case DELIVERY_CANCELLED: /* written with its cancelled_orders row: not seen alone */
            return DELIVERY_CANCEL_DECIDED;
        }
        return DELIVERY_CANCEL_DECIDED;
    }
    return f->waiting ? DELIVERY_CANCEL_WAITING : DELIVERY_CANCEL_NONE;
}

const char *delivery_cancel_stage(delivery_cancel_verdict_t v) {
    switch (v) {
    case DELIVERY_CANCEL_ASSIGNED:
        return "ASSIGNED";
    case DELIVERY_CANCEL_WAITING:
        return "WAITING";
    case DELIVERY_CANCEL_NONE:
        return "NONE";
    case DELIVERY_CANCEL_DECIDED:
    case DELIVERY_CANCEL_REFUSE:
        return NULL;
    }
    return NULL;
}

/* A string, or JSON null for NULL. */
static json_t *text_or_null(const char *s) { return s ? json_string(s) : json_null(); }

json_t *delivery_cancelled_payload(delivery_cancel_verdict_t v, const char *order_id,
                                   const char *delivery_id, const char *driver_id,
                                   const char *payment_id, const char *reason,
                                   const char *requested_at, int64_t cancelled_ms) {
    const char *stage = delivery_cancel_stage(v);
    bool assigned = v == DELIVERY_CANCEL_ASSIGNED;
    if (!stage || (assigned && (!delivery_id || !driver_id)))
        return NULL;
    char at[DETA_TS_LEN];
    deta_timestamp_from_ms(cancelled_ms, at);
    return json_pack("{s:s, s:s, s:o, s:o, s:s, s:o, s:s, s:s}", "orderId", order_id, "stage",
                     stage, "deliveryId", text_or_null(assigned ? delivery_id : NULL),
                     "driverId", text_or_null(assigned ? driver_id : NULL), "paymentId",
                     payment_id, "reason", text_or_null(reason), "requestedAt", requested_at,
                     "cancelledAt", at);
}

json_t *delivery_cancel_refused_payload(const char *order_id, delivery_stage_t stage,
                                        const char *reason, const char *requested_at,
                                        int64_t refused_ms) {
    const char *status = stage == DELIVERY_PICKED_UP   ? DETA_STATE_PICKED_UP
                         : stage == DELIVERY_DELIVERED ? DETA_STATE_DELIVERED
                                                       : NULL;
    if (!status)
        return NULL;
    char at[DETA_TS_LEN];
    deta_timestamp_from_ms(refused_ms, at);
    return json_pack("{s:s, s:s, s:o, s:s, s:s}", "orderId", order_id, "orderStatus", status,
                     "reason", text_or_null(reason), "requestedAt", requested_at, "refusedAt",
                     at);
}

/* ---- events out ---- */

void delivery_format_km(int distance_hm, char *out, size_t outsize) {
    snprintf(out, outsize, "%d.%d", distance_hm / 10, distance_hm % 10);
}

json_t *delivery_stage_payload(const delivery_t *d) {
    char at[DETA_TS_LEN], eta[DETA_TS_LEN];
    deta_timestamp_from_ms(d->eta_ms, eta);
    switch (d->status) {
    case DELIVERY_ASSIGNED:
        deta_timestamp_from_ms(d->assigned_ms, at);
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "orderId", d->order_id, "deliveryId",
                         d->delivery_id, "driverId", d->driver_id, "driverName", d->driver_name,
                         "assignedAt", at, "estimatedDeliveryAt", eta);
    case DELIVERY_PICKED_UP:
        deta_timestamp_from_ms(d->picked_up_ms, at);
        return json_pack("{s:s, s:s, s:s, s:s, s:s}", "orderId", d->order_id, "deliveryId",
                         d->delivery_id, "driverId", d->driver_id, "pickedUpAt", at,
                         "estimatedDeliveryAt", eta);
    case DELIVERY_DELIVERED:
        deta_timestamp_from_ms(d->delivered_ms, at);
        return json_pack("{s:s, s:s, s:s, s:s}", "orderId", d->order_id, "deliveryId",
                         d->delivery_id, "driverId", d->driver_id, "deliveredAt", at);
    case DELIVERY_CANCELLED:
        return NULL;
    }
    return NULL;
}

json_t *delivery_waiting_payload(const char *order_id, const char *payment_id, int64_t since_ms,
                                 long position) {
    if (position < 1)
        return NULL;
    char since[DETA_TS_LEN];
    deta_timestamp_from_ms(since_ms, since);
    return json_pack("{s:s, s:s, s:s, s:I}", "orderId", order_id, "paymentId", payment_id,
                     "waitingSince", since, "position", (json_int_t)position);
}

json_t *delivery_eta_payload(const delivery_t *d, int64_t calculated_ms) {
    const char *stage = delivery_stage_name(d->status);
    if (!stage)
        return NULL;
    char eta[DETA_TS_LEN], calc[DETA_TS_LEN];
    deta_timestamp_from_ms(d->eta_ms, eta);
    deta_timestamp_from_ms(calculated_ms, calc);
    return json_pack("{s:s, s:s, s:s, s:s, s:s}", "orderId", d->order_id, "deliveryId",
                     d->delivery_id, "stage", stage, "estimatedDeliveryAt", eta, "calculatedAt",
                     calc);
}
