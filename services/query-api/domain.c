/*
 * domain.c - the read model's rules: state ranks, what each event type gives the
 * view, the fold of an event into a view, instants, cursors and request
 * validation. (The dead-letter administration's rules: deadletters/domain.c.)
 *
 * What each event type contributes is a table (event_rules below), not code: a
 * reader sees at a glance which payload field lands in which column (or is only
 * checked), and whether it is required. Which state a type moves the order to is
 * libdeta's table (deta_state_for_event), the one order-service reads too. A
 * required field missing, or any known field of the wrong shape, makes the event
 * invalid (it is dead-lettered and visible there, rather than silently
 * half-applied).
 */
#include "domain.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "deta/states.h"
#include "deta/topics.h"

/* ---- what each event type contributes ---- */

typedef enum field_kind {
    FIELD_ID,       /* string of 1..64 bytes */
    FIELD_TEXT,     /* string of 1..128 bytes */
    FIELD_MONEY,    /* decimal amount >= 0, kept in canonical text */
    FIELD_CURRENCY, /* three capital letters */
    FIELD_INSTANT,  /* ISO-8601 UTC, kept normalized */
    FIELD_NOTE,     /* string of 1..200 bytes (a cancel's reason, the client's) */
    FIELD_STATE,    /* one of the order states (deta/states.h) */
} field_kind_t;

typedef struct field_rule {
    const char *name; /* in the payload */
    field_kind_t kind;
    size_t offset; /* into query_view_t; CHECK_ONLY: validated, kept nowhere */
    size_t size;
    bool required;
} field_rule_t;

#define QUERY_MAX_FIELDS 8
#define CHECK_ONLY SIZE_MAX
#define SCRATCH_MAX 256 /* room for any field kind's value that is only checked */

typedef struct event_rule {
    const char *type;
    bool authoritative; /* its identity fields overwrite */
    bool eta_is_delivery; /* the ETA becomes the delivery instant */
    field_rule_t fields[QUERY_MAX_FIELDS];
} event_rule_t;

#define F(json, kind, member, req) \
    {json, kind, offsetof(query_view_t, member), sizeof(((query_view_t *)0)->member), req}
/* A field the read model does not keep but checks, so that a malformed event is
 * dead-lettered naming it rather than shown in the timeline. */
#define V(json, kind, req) {json, kind, CHECK_ONLY, SCRATCH_MAX, req}

/* The three refusals of a cancel share their payload. */
#define CANCEL_REFUSED_FIELDS                                                                \
    {V("orderStatus", FIELD_STATE, true), V("reason", FIELD_NOTE, false),                   \
     V("requestedAt", FIELD_INSTANT, true), V("refusedAt", FIELD_INSTANT, true)}

/* estimatedDeliveryAt goes to estimated_delivery_at, and the instant the estimate
 * was made (assignedAt, pickedUpAt, calculatedAt) to eta_calculated_at; when an
 * event has an estimate but no such instant, its occurredAt stands in. */
static const event_rule_t event_rules[] = {
    {DETA_EVT_ORDER_CREATED, true, false,
     {F("customerId", FIELD_ID, customer_id, true),
      F("totalAmount", FIELD_MONEY, total_amount, true),
      F("currency", FIELD_CURRENCY, currency, true),
      F("createdAt", FIELD_INSTANT, created_at, true)}},
    {DETA_EVT_INVENTORY_RESERVED, false, false,
     {F("reservationId", FIELD_ID, reservation_id, false),
      F("customerId", FIELD_ID, customer_id, false),
      F("totalAmount", FIELD_MONEY, total_amount, false),
      F("currency", FIELD_CURRENCY, currency, false)}},
    {DETA_EVT_INVENTORY_REJECTED, false, false,
     {F("customerId", FIELD_ID, customer_id, false),
      F("reason", FIELD_TEXT, failure_reason, false)}},
    {DETA_EVT_INVENTORY_RELEASED, false, false, {{0}}},
    {DETA_EVT_PAYMENT_AUTHORIZED, false, false,
     {F("paymentId", FIELD_ID, payment_id, true),
      F("customerId", FIELD_ID, customer_id, false)}},
    {DETA_EVT_PAYMENT_FAILED, false, false,
     {F("paymentId", FIELD_ID, payment_id, false),
      F("customerId", FIELD_ID, customer_id, false),
      F("reason", FIELD_TEXT, failure_reason, false)}},
    {DETA_EVT_DELIVERY_WAITING, false, false,
     {F("paymentId", FIELD_ID, payment_id, false)}},
    {DETA_EVT_DELIVERY_ASSIGNED, false, false,
     {F("deliveryId", FIELD_ID, delivery_id, true),
      F("driverId", FIELD_ID, driver_id, false),
      F("driverName", FIELD_TEXT, driver_name, false),
      F("estimatedDeliveryAt", FIELD_INSTANT, estimated_delivery_at, true),
      F("assignedAt", FIELD_INSTANT, eta_calculated_at, false)}},
    {DETA_EVT_DELIVERY_PICKED_UP, false, false,
     {F("deliveryId", FIELD_ID, delivery_id, true),
      F("driverId", FIELD_ID, driver_id, false),
      F("estimatedDeliveryAt", FIELD_INSTANT, estimated_delivery_at, false),
      F("pickedUpAt", FIELD_INSTANT, eta_calculated_at, false)}},
    {DETA_EVT_DELIVERY_DELIVERED, false, true,
     {F("deliveryId", FIELD_ID, delivery_id, true),
      F("driverId", FIELD_ID, driver_id, false),
      F("deliveredAt", FIELD_INSTANT, delivered_at, true)}},
    {DETA_EVT_ETA_UPDATED, false, false,
     {F("deliveryId", FIELD_ID, delivery_id, false),
      F("estimatedDeliveryAt", FIELD_INSTANT, estimated_delivery_at, true),
      F("calculatedAt", FIELD_INSTANT, eta_calculated_at, true)}},
    /* The cancellation (docs/contracts.md#cancellation). Requests, forwards and
     * refusals set nothing but the timeline; the copied-forward ids and the
     * reason are checked when present (a reason may be null); the instants of
     * the step and a refusal's orderStatus are required. */
    {DETA_EVT_ORDER_CANCEL_REQUESTED, false, false,
     {V("reason", FIELD_NOTE, false), V("requestedAt", FIELD_INSTANT, true)}},
    {DETA_EVT_INVENTORY_CANCEL_FORWARDED, false, false,
     {V("reservationId", FIELD_ID, false), V("reason", FIELD_NOTE, false),
      V("requestedAt", FIELD_INSTANT, true), V("forwardedAt", FIELD_INSTANT, true)}},
    {DETA_EVT_PAYMENT_CANCEL_FORWARDED, false, false,
     {F("paymentId", FIELD_ID, payment_id, true), V("reason", FIELD_NOTE, false),
      V("requestedAt", FIELD_INSTANT, true), V("forwardedAt", FIELD_INSTANT, true)}},
    {DETA_EVT_INVENTORY_CANCEL_REFUSED, false, false, CANCEL_REFUSED_FIELDS},
    {DETA_EVT_PAYMENT_CANCEL_REFUSED, false, false, CANCEL_REFUSED_FIELDS},
    {DETA_EVT_DELIVERY_CANCEL_REFUSED, false, false, CANCEL_REFUSED_FIELDS},
    /* the verdicts: CANCELLED (deta_state_for_event), and when */
    {DETA_EVT_INVENTORY_CANCELLED, false, false,
     {V("stage", FIELD_ID, true), V("reason", FIELD_NOTE, false),
      V("requestedAt", FIELD_INSTANT, true),
      F("cancelledAt", FIELD_INSTANT, cancelled_at, true)}},
    {DETA_EVT_PAYMENT_CANCELLED, false, false,
     {V("stage", FIELD_ID, true), V("reservationId", FIELD_ID, false),
      V("reason", FIELD_NOTE, false), V("requestedAt", FIELD_INSTANT, true),
      F("cancelledAt", FIELD_INSTANT, cancelled_at, true)}},
    {DETA_EVT_DELIVERY_CANCELLED, false, false,
     {V("stage", FIELD_ID, true), F("deliveryId", FIELD_ID, delivery_id, false),
      F("driverId", FIELD_ID, driver_id, false), V("paymentId", FIELD_ID, false),
      V("reason", FIELD_NOTE, false), V("requestedAt", FIELD_INSTANT, true),
      F("cancelledAt", FIELD_INSTANT, cancelled_at, true)}},
    /* the compensation the customer sees */
    {DETA_EVT_PAYMENT_REFUNDED, false, false,
     {F("paymentId", FIELD_ID, payment_id, true), V("refundId", FIELD_ID, true),
      F("amount", FIELD_MONEY, refunded_amount, true), V("currency", FIELD_CURRENCY, true),
      V("reason", FIELD_NOTE, false), V("refundedAt", FIELD_INSTANT, true)}},
};

#undef F
#undef V
#undef CANCEL_REFUSED_FIELDS

static const event_rule_t *rule_for(const char *event_type) {
    for (size_t i = 0; i < sizeof event_rules / sizeof *event_rules; i++)
        if (event_type && strcmp(event_rules[i].type, event_type) == 0)
            return &event_rules[i];
    return NULL;
}

bool query_handles_event(const char *event_type) { return rule_for(event_type) != NULL; }

/* ---- the saga's stages ---- */

static const struct {
    const char *event_type;
    const char *name;
} saga_stages[QUERY_STAGE_COUNT] = {
    [QUERY_STAGE_RESERVED] = {DETA_EVT_INVENTORY_RESERVED, "reserved"},
    [QUERY_STAGE_AUTHORIZED] = {DETA_EVT_PAYMENT_AUTHORIZED, "authorized"},
    [QUERY_STAGE_ASSIGNED] = {DETA_EVT_DELIVERY_ASSIGNED, "assigned"},
    [QUERY_STAGE_DELIVERED] = {DETA_EVT_DELIVERY_DELIVERED, "delivered"},
};

int query_saga_stage_of(const char *event_type) {
    for (int i = 0; event_type && i < QUERY_STAGE_COUNT; i++)
        if (strcmp(saga_stages[i].event_type, event_type) == 0)
            return i;
    return -1;
}

const char *query_saga_stage_name(int stage) {
    return stage >= 0 && stage < QUERY_STAGE_COUNT ? saga_stages[stage].name : NULL;
}

double query_saga_stage_seconds(int64_t created_us, int64_t reached_us) {
    if (created_us <= 0)
        return -1;
    return reached_us > created_us ? (double)(reached_us - created_us) / 1e6 : 0.0;
}

/* ---- the ETA rule (instants: deta/timestamp.h) ---- */

bool query_eta_is_newer(const char *candidate, const char *current) {
    int64_t cand, cur;
    if (!deta_timestamp_us(candidate, &cand))
        return false;
    if (!current || !current[0] || !deta_timestamp_us(current, &cur))
        return true;
    return cand > cur;
}

/* ---- an event's contribution ---- */

static deta_err_t field_invalid(const char *name, const char *why, char *errstr,
                                size_t errsize) {
    return deta_errf(DETA_ERR_INVALID, errstr, errsize, "payload.%s %s", name, why);
}

static deta_err_t read_string(const field_rule_t *f, const json_t *v, size_t max, char *dst,
                              char *errstr, size_t errsize) {
    const char *s = json_string_value(v);
    size_t len = s ? strlen(s) : 0;
    if (!s || len == 0)
        return field_invalid(f->name, "must be a non-empty string", errstr, errsize);
    if (len > max || len >= f->size)
        return field_invalid(f->name, "is too long", errstr, errsize);
    memcpy(dst, s, len + 1);
    return DETA_OK;
}

static deta_err_t read_field(const field_rule_t *f, const json_t *v, char *dst, char *errstr,
                             size_t errsize) {
    switch (f->kind) {
    case FIELD_ID:
        return read_string(f, v, DETA_ID_MAX, dst, errstr, errsize);
    case FIELD_TEXT:
        return read_string(f, v, QUERY_TEXT_MAX, dst, errstr, errsize);
    case FIELD_NOTE:
        return read_string(f, v, QUERY_NOTE_MAX, dst, errstr, errsize);
    case FIELD_STATE:
        if (deta_state_rank(json_string_value(v)) == 0)
            return field_invalid(f->name, "must be an order state", errstr, errsize);
        snprintf(dst, f->size, "%s", json_string_value(v));
        return DETA_OK;
    case FIELD_CURRENCY:
        if (!deta_currency_valid(json_string_value(v)))
            return field_invalid(f->name, "must be three capital letters", errstr, errsize);
        snprintf(dst, f->size, "%s", json_string_value(v));
        return DETA_OK;
    case FIELD_MONEY: {
        deta_money_t m;
        if (deta_money_from_json(v, &m, NULL, 0) != DETA_OK || m < 0)
            return field_invalid(f->name, "must be an amount >= 0 with at most two decimals",
                                 errstr, errsize);
        char buf[DETA_MONEY_STRLEN];
        snprintf(dst, f->size, "%s", deta_money_format(m, buf));
        return DETA_OK;
    }
    case FIELD_INSTANT: {
        int64_t us;
        if (!deta_timestamp_us(json_string_value(v), &us))
            return field_invalid(f->name, "must be an ISO-8601 UTC instant", errstr, errsize);
        deta_timestamp_from_us(us, dst);
        return DETA_OK;
    }
    }
    return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "unknown field kind");
}

static deta_err_t read_fields(const event_rule_t *r, const json_t *payload, query_view_t *out,
                              char *errstr, size_t errsize) {
    for (size_t i = 0; i < QUERY_MAX_FIELDS && r->fields[i].name; i++) {
        const field_rule_t *f = &r->fields[i];
        const json_t *v = json_object_get(payload, f->name);
        if (!v || json_is_null(v)) {
            if (f->required)
                return field_invalid(f->name, "is required", errstr, errsize);
            continue;
        }
        char scratch[SCRATCH_MAX];
        char *dst = f->offset == CHECK_ONLY ? scratch : (char *)out + f->offset;
        deta_err_t err = read_field(f, v, dst, errstr, errsize);
        if (err)
            return err;
    }
    return DETA_OK;
}

/* An ETA needs both the estimate and when it was made: the event's occurredAt
 * stands in for a missing instant; an instant without an estimate is no ETA. */
static void settle_eta(const event_rule_t *r, query_change_t *c) {
    query_view_t *f = &c->fields;
    if (r->eta_is_delivery) {
        memcpy(f->estimated_delivery_at, f->delivered_at, sizeof f->delivered_at);
        memcpy(f->eta_calculated_at, f->delivered_at, sizeof f->delivered_at);
    } else if (!f->estimated_delivery_at[0]) {
        f->eta_calculated_at[0] = '\0';
    } else if (!f->eta_calculated_at[0]) {
        memcpy(f->eta_calculated_at, c->occurred_at, sizeof c->occurred_at);
    }
}

static void lower_copy(char *dst, const char *src, size_t size) {
    size_t i = 0;
    for (; src[i] && i + 1 < size; i++)
        dst[i] = (src[i] >= 'A' && src[i] <= 'F') ? (char)(src[i] - 'A' + 'a') : src[i];
    dst[i] = '\0';
}

static deta_err_t check_order_id(const deta_event_t *ev, char *errstr, size_t errsize) {
    if (!deta_uuid_valid(ev->order_id))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "orderId %s is not a UUID",
                         ev->order_id);
    const json_t *inner = json_object_get(ev->payload, "orderId");
    if (inner && !json_is_null(inner) &&
        (!json_is_string(inner) || strcasecmp(json_string_value(inner), ev->order_id) != 0))
        return field_invalid("orderId", "differs from the envelope's orderId", errstr, errsize);
    return DETA_OK;
}

deta_err_t query_change_from_event(const deta_event_t *ev, query_change_t *c, char *errstr,
                                   size_t errsize) {
    memset(c, 0, sizeof *c);
    const event_rule_t *r = rule_for(ev->event_type);
    if (!r)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "unknown event type %s",
                         ev->event_type);
    if (!json_is_object(ev->payload))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "payload must be an object");
    deta_err_t err = check_order_id(ev, errstr, errsize);
    if (err)
        return err;
    int64_t us;
    if (!deta_uuid_valid(ev->event_id) || !deta_timestamp_us(ev->occurred_at, &us))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "bad eventId or occurredAt");
    err = read_fields(r, ev->payload, &c->fields, errstr, errsize);
    if (err)
        return err;

    lower_copy(c->event_id, ev->event_id, sizeof c->event_id);
    c->event_type = r->type;
    c->topic = deta_topic_for_event_type(r->type);
    deta_timestamp_from_us(us, c->occurred_at);
    c->authoritative = r->authoritative;
    c->payload = ev->payload;
    settle_eta(r, c);

    query_view_t *f = &c->fields;
    lower_copy(f->order_id, ev->order_id, sizeof f->order_id);
    snprintf(f->correlation_id, sizeof f->correlation_id, "%s", ev->correlation_id);
    memcpy(f->updated_at, c->occurred_at, sizeof c->occurred_at);
    const char *status = deta_state_for_event(r->type);
    if (status) {
        snprintf(f->status, sizeof f->status, "%s", status);
        f->status_rank = deta_state_rank(status);
    }
    return DETA_OK;
}

/* ---- the fold ---- */

/* coalesce(new, old): a value the event has replaces; one it lacks erases nothing. */
static void take(char *dst, const char *src, size_t size) {
    if (src[0])
        snprintf(dst, size, "%s", src);
}

/* coalesce(old, new): only fills a gap. */
static void fill(char *dst, const char *src, size_t size) {
    if (!dst[0])
        snprintf(dst, size, "%s", src);
}

#define TAKE(v, f, m) take((v)->m, (f)->m, sizeof (v)->m)
#define FILL(v, f, m) fill((v)->m, (f)->m, sizeof (v)->m)

static void merge_identity(query_view_t *v, const query_change_t *c) {
    void (*apply)(char *, const char *, size_t) = c->authoritative ? take : fill;
    const query_view_t *f = &c->fields;
    apply(v->customer_id, f->customer_id, sizeof v->customer_id);
    apply(v->total_amount, f->total_amount, sizeof v->total_amount);
    apply(v->currency, f->currency, sizeof v->currency);
    apply(v->created_at, f->created_at, sizeof v->created_at);
}

static bool later(const char *a, const char *b) {
    int64_t x, y;
    if (!deta_timestamp_us(a, &x))
        return false;
    return !deta_timestamp_us(b, &y) || x > y;
}

bool query_view_merge(query_view_t *v, const query_change_t *c) {
    const query_view_t *f = &c->fields;
    FILL(v, f, order_id);
    FILL(v, f, correlation_id);
    FILL(v, f, first_seen_at);
    merge_identity(v, c);
    TAKE(v, f, reservation_id);
    TAKE(v, f, payment_id);
    TAKE(v, f, delivery_id);
    TAKE(v, f, driver_id);
    TAKE(v, f, driver_name);
    TAKE(v, f, delivered_at);
    TAKE(v, f, failure_reason);
    TAKE(v, f, refunded_amount);
    if (f->cancelled_at[0] && (!v->cancelled_at[0] || later(v->cancelled_at, f->cancelled_at)))
        TAKE(v, f, cancelled_at);
    if (f->estimated_delivery_at[0] && query_eta_is_newer(f->eta_calculated_at,
                                                         v->eta_calculated_at)) {
        TAKE(v, f, estimated_delivery_at);
        TAKE(v, f, eta_calculated_at);
    }
    if (later(f->updated_at, v->updated_at))
        TAKE(v, f, updated_at);
    if (f->status_rank <= v->status_rank)
        return false;
    TAKE(v, f, status);
    v->status_rank = f->status_rank;
    return true;
}

#undef TAKE
#undef FILL

/* ---- cursors ---- */

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static bool b64url_encode(const unsigned char *in, size_t n, char *out, size_t outsize) {
    size_t need = n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0) + 1;
    if (need > outsize)
        return false;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        size_t left = n - i;
        if (left > 1)
            v |= (unsigned)in[i + 1] << 8;
        if (left > 2)
            v |= in[i + 2];
        size_t chars = left >= 3 ? 4 : left + 1;
        for (size_t k = 0; k < chars; k++)
            out[o++] = B64URL[(v >> (18 - 6 * k)) & 0x3f];
    }
    out[o] = '\0';
    return true;
}

static int b64url_value(char ch) {
    const char *p = ch ? strchr(B64URL, ch) : NULL;
    return p ? (int)(p - B64URL) : -1;
}

/* Strict: a length that no encoder yields, a foreign character, padding, or
 * non-zero bits left over at the end all fail. Returns the decoded length or -1. */
static long b64url_decode(const char *in, unsigned char *out, size_t outsize) {
    size_t n = strlen(in);
    if (n % 4 == 1 || n / 4 * 3 + 2 > outsize)
        return -1;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value(in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return -1;
    return (long)o;
}

bool query_cursor_encode(const query_cursor_t *c, char *out, size_t outsize) {
    char plain[DETA_TS_LEN + DETA_UUID_LEN + 2];
    int n = snprintf(plain, sizeof plain, "%s|%s", c->at, c->order_id);
    if (n < 0 || (size_t)n >= sizeof plain)
        return false;
    return b64url_encode((const unsigned char *)plain, (size_t)n, out, outsize);
}

/* The instant must be the normalized spelling, so one position has one cursor. */
static bool normalized_instant(const char *s) {
    int64_t us;
    char again[DETA_TS_LEN];
    if (!deta_timestamp_us(s, &us))
        return false;
    deta_timestamp_from_us(us, again);
    return strcmp(again, s) == 0;
}

bool query_cursor_decode(const char *text, query_cursor_t *c) {
    unsigned char plain[QUERY_CURSOR_MAX];
    if (!text || !text[0] || strlen(text) >= QUERY_CURSOR_MAX)
        return false;
    long n = b64url_decode(text, plain, sizeof plain - 1);
    if (n < 0 || memchr(plain, '\0', (size_t)n))
        return false;
    plain[n] = '\0';
    char *bar = strchr((char *)plain, '|');
    if (!bar || (size_t)(bar - (char *)plain) >= sizeof c->at)
        return false;
    *bar = '\0';
    const char *at = (const char *)plain, *id = bar + 1;
    /* the UUID in lower case, as the encoder writes it: one position, one cursor */
    if (!normalized_instant(at) || strlen(id) != DETA_UUID_LEN || !deta_uuid_valid(id) ||
        strspn(id, "0123456789abcdef-") != DETA_UUID_LEN)
        return false;
    memcpy(c->at, at, strlen(at) + 1);
    lower_copy(c->order_id, id, sizeof c->order_id);
    return true;
}

/* ---- list requests ---- */

static bool parse_limit(const char *s, int *out) {
    size_t n = strlen(s);
    if (n == 0 || n > 9 || strspn(s, "0123456789") != n)
        return false;
    long v = strtol(s, NULL, 10);
    if (v < 1 || v > QUERY_LIMIT_MAX)
        return false;
    *out = (int)v;
    return true;
}

deta_err_t query_list_params_parse(const char *limit, const char *cursor, const char *status,
                                   const char *customer_id, query_list_params_t *p,
                                   query_violation_t *v) {
    memset(p, 0, sizeof *p);
    p->limit = QUERY_LIMIT_DEFAULT;
    if (limit && !parse_limit(limit, &p->limit))
        return query_violation(v, "limit", "limit must be an integer from 1 to 200");
    if (cursor) {
        if (!query_cursor_decode(cursor, &p->after))
            return query_violation(v, "cursor", "cursor is not one this API handed out");
        p->has_cursor = true;
    }
    if (status) {
        if (deta_state_rank(status) == 0)
            return query_violation(v, "status",
                                   "status must be CREATED, INVENTORY_RESERVED, "
                                   "PAYMENT_AUTHORIZED, DELIVERY_WAITING, DELIVERY_ASSIGNED, "
                                   "PICKED_UP, DELIVERED, "
                                   "INVENTORY_REJECTED, PAYMENT_FAILED, CANCELLED");
        snprintf(p->status, sizeof p->status, "%s", status);
    }
    if (customer_id) {
        if (!customer_id[0] || strlen(customer_id) > DETA_ID_MAX)
            return query_violation(v, "customerId",
                                   "customerId must have 1 to 64 characters");
        snprintf(p->customer_id, sizeof p->customer_id, "%s", customer_id);
    }
    return DETA_OK;
}

/* ---- rendering ---- */

static json_t *text_or_null(const char *s) { return s[0] ? json_string(s) : json_null(); }

json_t *query_view_to_json(const query_view_t *v) {
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "orderId", json_string(v->order_id));
    json_object_set_new(o, "customerId", text_or_null(v->customer_id));
    json_object_set_new(o, "totalAmount", text_or_null(v->total_amount));
    json_object_set_new(o, "currency", text_or_null(v->currency));
    json_object_set_new(o, "status", text_or_null(v->status));
    json_object_set_new(o, "createdAt", text_or_null(v->created_at));
    json_object_set_new(o, "updatedAt", text_or_null(v->updated_at));
    json_object_set_new(o, "reservationId", text_or_null(v->reservation_id));
    json_object_set_new(o, "paymentId", text_or_null(v->payment_id));
    json_object_set_new(o, "deliveryId", text_or_null(v->delivery_id));
    json_object_set_new(o, "driverId", text_or_null(v->driver_id));
    json_object_set_new(o, "driverName", text_or_null(v->driver_name));
    json_object_set_new(o, "estimatedDeliveryAt", text_or_null(v->estimated_delivery_at));
    json_object_set_new(o, "etaCalculatedAt", text_or_null(v->eta_calculated_at));
    json_object_set_new(o, "deliveredAt", text_or_null(v->delivered_at));
    json_object_set_new(o, "failureReason", text_or_null(v->failure_reason));
    json_object_set_new(o, "cancelledAt", text_or_null(v->cancelled_at));
    json_object_set_new(o, "refundedAmount", text_or_null(v->refunded_amount));
    json_object_set_new(o, "correlationId", text_or_null(v->correlation_id));
    return o;
}

json_t *query_timeline_entry_to_json(const query_timeline_entry_t *e) {
    return json_pack("{s:s, s:s, s:s, s:s, s:O}", "eventId", e->event_id, "eventType",
                     e->event_type, "topic", e->topic, "occurredAt", e->occurred_at, "payload",
                     e->payload ? e->payload : json_null());
}

json_t *query_stats_to_json(const query_stats_t *s) {
    json_t *by = json_object();
    long total = s->without_status;
    for (int i = 0; i < DETA_STATES_COUNT; i++) {
        json_object_set_new(by, deta_states[i], json_integer(s->by_status[i]));
        total += s->by_status[i];
    }
    return json_pack("{s:I, s:o, s:I}", "total", (json_int_t)total, "byStatus", by,
                     "withoutStatus", (json_int_t)s->without_status);
}
