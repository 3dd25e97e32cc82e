/*
 * domain.c - query-api's rules: state ranks, what each event type gives the view,
 * the fold of an event into a view, instants, cursors and request validation;
 * and for the dead-letter administration, the record of a dead letter, what a
 * replay sends, the list's arguments and the admin token check (at the end).
 *
 * What each event type contributes is a table (event_rules below), not code: a
 * reader sees at a glance which payload field lands in which column, whether it
 * is required, and which state the type moves the order to. A required field
 * missing, or any known field of the wrong shape, makes the event invalid (it is
 * dead-lettered and visible there, rather than silently half-applied).
 */
#include "domain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "deta/states.h"
#include "deta/topics.h"

/* ---- states ---- */

const char *const query_statuses[QUERY_STATUS_COUNT] = {
    DETA_STATE_CREATED,          DETA_STATE_INVENTORY_RESERVED, DETA_STATE_PAYMENT_AUTHORIZED,
    DETA_STATE_DELIVERY_WAITING, DETA_STATE_DELIVERY_ASSIGNED,  DETA_STATE_PICKED_UP,
    DETA_STATE_DELIVERED,        DETA_STATE_INVENTORY_REJECTED, DETA_STATE_PAYMENT_FAILED,
};

/* DELIVERY_WAITING (4) is a paid order that waits for a driver (delivery.waiting);
 * it moves on to DELIVERY_ASSIGNED once one has room. */
static const int status_ranks[QUERY_STATUS_COUNT] = {1, 2, 3, 4, 5, 6, 7, QUERY_RANK_FAILED,
                                                     QUERY_RANK_FAILED};

int query_status_rank(const char *status) {
    if (!status)
        return 0;
    for (int i = 0; i < QUERY_STATUS_COUNT; i++)
        if (strcmp(query_statuses[i], status) == 0)
            return status_ranks[i];
    return 0;
}

bool query_status_valid(const char *status) { return query_status_rank(status) > 0; }

bool query_status_may_move(const char *from, const char *to) {
    return query_status_rank(to) > query_status_rank(from);
}

/* ---- what each event type contributes ---- */

typedef enum field_kind {
    FIELD_ID,       /* string of 1..64 bytes */
    FIELD_TEXT,     /* string of 1..128 bytes */
    FIELD_MONEY,    /* decimal amount >= 0, kept in canonical text */
    FIELD_CURRENCY, /* three capital letters */
    FIELD_INSTANT,  /* ISO-8601 UTC, kept normalized */
} field_kind_t;

typedef struct field_rule {
    const char *name; /* in the payload */
    field_kind_t kind;
    size_t offset; /* into query_view_t */
    size_t size;
    bool required;
} field_rule_t;

#define QUERY_MAX_FIELDS 6

typedef struct event_rule {
    const char *type;
    const char *status; /* NULL: the type moves no state */
    bool authoritative; /* its identity fields overwrite */
    bool eta_is_delivery; /* the ETA becomes the delivery instant */
    field_rule_t fields[QUERY_MAX_FIELDS];
} event_rule_t;

#define F(json, kind, member, req) \
    {json, kind, offsetof(query_view_t, member), sizeof(((query_view_t *)0)->member), req}

/* estimatedDeliveryAt goes to estimated_delivery_at, and the instant the estimate
 * was made (assignedAt, pickedUpAt, calculatedAt) to eta_calculated_at; when an
 * event has an estimate but no such instant, its occurredAt stands in. */
static const event_rule_t event_rules[] = {
    {DETA_EVT_ORDER_CREATED, DETA_STATE_CREATED, true, false,
     {F("customerId", FIELD_ID, customer_id, true),
      F("totalAmount", FIELD_MONEY, total_amount, true),
      F("currency", FIELD_CURRENCY, currency, true),
      F("createdAt", FIELD_INSTANT, created_at, true)}},
    {DETA_EVT_INVENTORY_RESERVED, DETA_STATE_INVENTORY_RESERVED, false, false,
     {F("reservationId", FIELD_ID, reservation_id, false),
      F("customerId", FIELD_ID, customer_id, false),
      F("totalAmount", FIELD_MONEY, total_amount, false),
      F("currency", FIELD_CURRENCY, currency, false)}},
    {DETA_EVT_INVENTORY_REJECTED, DETA_STATE_INVENTORY_REJECTED, false, false,
     {F("customerId", FIELD_ID, customer_id, false),
      F("reason", FIELD_TEXT, failure_reason, false)}},
    {DETA_EVT_INVENTORY_RELEASED, NULL, false, false, {{0}}},
    {DETA_EVT_PAYMENT_AUTHORIZED, DETA_STATE_PAYMENT_AUTHORIZED, false, false,
     {F("paymentId", FIELD_ID, payment_id, true),
      F("customerId", FIELD_ID, customer_id, false)}},
    {DETA_EVT_PAYMENT_FAILED, DETA_STATE_PAYMENT_FAILED, false, false,
     {F("paymentId", FIELD_ID, payment_id, false),
      F("customerId", FIELD_ID, customer_id, false),
      F("reason", FIELD_TEXT, failure_reason, false)}},
    {DETA_EVT_DELIVERY_WAITING, DETA_STATE_DELIVERY_WAITING, false, false,
     {F("paymentId", FIELD_ID, payment_id, false)}},
    {DETA_EVT_DELIVERY_ASSIGNED, DETA_STATE_DELIVERY_ASSIGNED, false, false,
     {F("deliveryId", FIELD_ID, delivery_id, true),
      F("driverId", FIELD_ID, driver_id, false),
      F("driverName", FIELD_TEXT, driver_name, false),
      F("estimatedDeliveryAt", FIELD_INSTANT, estimated_delivery_at, true),
      F("assignedAt", FIELD_INSTANT, eta_calculated_at, false)}},
    {DETA_EVT_DELIVERY_PICKED_UP, DETA_STATE_PICKED_UP, false, false,
     {F("deliveryId", FIELD_ID, delivery_id, true),
      F("driverId", FIELD_ID, driver_id, false),
      F("estimatedDeliveryAt", FIELD_INSTANT, estimated_delivery_at, false),
      F("pickedUpAt", FIELD_INSTANT, eta_calculated_at, false)}},
    {DETA_EVT_DELIVERY_DELIVERED, DETA_STATE_DELIVERED, false, true,
     {F("deliveryId", FIELD_ID, delivery_id, true),
      F("driverId", FIELD_ID, driver_id, false),
      F("deliveredAt", FIELD_INSTANT, delivered_at, true)}},
    {DETA_EVT_ETA_UPDATED, NULL, false, false,
     {F("deliveryId", FIELD_ID, delivery_id, false),
      F("estimatedDeliveryAt", FIELD_INSTANT, estimated_delivery_at, true),
      F("calculatedAt", FIELD_INSTANT, eta_calculated_at, true)}},
};

#undef F

static const event_rule_t *rule_for(const char *event_type) {
    for (size_t i = 0; i < sizeof event_rules / sizeof *event_rules; i++)
        if (event_type && strcmp(event_rules[i].type, event_type) == 0)
            return &event_rules[i];
    return NULL;
}

const char *query_status_for_event(const char *event_type) {
    const event_rule_t *r = rule_for(event_type);
    return r ? r->status : NULL;
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
        deta_err_t err = read_field(f, v, (char *)out + f->offset, errstr, errsize);
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
    if (r->status) {
        snprintf(f->status, sizeof f->status, "%s", r->status);
        f->status_rank = query_status_rank(r->status);
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
    if (!normalized_instant(at) || strlen(id) != DETA_UUID_LEN || !deta_uuid_valid(id))
        return false;
    memcpy(c->at, at, strlen(at) + 1);
    lower_copy(c->order_id, id, sizeof c->order_id);
    return true;
}

/* ---- list requests ---- */

static deta_err_t violation(query_violation_t *v, const char *field, const char *message) {
    snprintf(v->field, sizeof v->field, "%s", field);
    snprintf(v->message, sizeof v->message, "%s", message);
    return DETA_ERR_INVALID;
}

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
        return violation(v, "limit", "limit must be an integer from 1 to 200");
    if (cursor) {
        if (!query_cursor_decode(cursor, &p->after))
            return violation(v, "cursor", "cursor is not one this API handed out");
        p->has_cursor = true;
    }
    if (status) {
        if (!query_status_valid(status))
            return violation(v, "status",
                             "status must be CREATED, INVENTORY_RESERVED, "
                             "PAYMENT_AUTHORIZED, DELIVERY_WAITING, DELIVERY_ASSIGNED, "
                             "PICKED_UP, DELIVERED, "
                             "INVENTORY_REJECTED, PAYMENT_FAILED");
        snprintf(p->status, sizeof p->status, "%s", status);
    }
    if (customer_id) {
        if (!customer_id[0] || strlen(customer_id) > DETA_ID_MAX)
            return violation(v, "customerId", "customerId must have 1 to 64 characters");
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
    for (int i = 0; i < QUERY_STATUS_COUNT; i++) {
        json_object_set_new(by, query_statuses[i], json_integer(s->by_status[i]));
        total += s->by_status[i];
    }
    return json_pack("{s:I, s:o, s:I}", "total", (json_int_t)total, "byStatus", by,
                     "withoutStatus", (json_int_t)s->without_status);
}

/* ---- dead letters ----
 *
 * Bytes from a dead letter are shown as text only when they are valid UTF-8
 * without NUL (what JSON and Postgres text can hold unchanged); anything else is
 * base64, so the API never alters what it shows. Header text copied into the
 * record's typed fields is cleaned instead (an invalid byte becomes '?'): those
 * fields are for reading, and the headers keep the exact bytes.
 */

const char *const query_dlq_topics[QUERY_DLQ_TOPIC_COUNT] = {
    DETA_TOPIC_DLQ_ORDER_EVENTS, DETA_TOPIC_DLQ_INVENTORY_EVENTS, DETA_TOPIC_DLQ_PAYMENT_EVENTS,
    DETA_TOPIC_DLQ_DELIVERY_EVENTS};

int query_dlq_topic_index(const char *topic) {
    for (int i = 0; topic && i < QUERY_DLQ_TOPIC_COUNT; i++)
        if (strcmp(query_dlq_topics[i], topic) == 0)
            return i;
    return -1;
}

#define HDR_ORIGINAL_TOPIC "x-original-topic"
#define HDR_ORIGINAL_PARTITION "x-original-partition"
#define HDR_ORIGINAL_OFFSET "x-original-offset"
#define HDR_CONSUMER_GROUP "x-consumer-group"
#define HDR_ERROR "x-error"
#define HDR_RETRY_COUNT "x-retry-count"
#define HDR_REPLAYED_FROM "x-replayed-from"

static const char *const dead_letter_headers[] = {
    HDR_RETRY_COUNT, HDR_ORIGINAL_TOPIC, HDR_ORIGINAL_PARTITION, HDR_ORIGINAL_OFFSET,
    HDR_ERROR,       HDR_CONSUMER_GROUP, HDR_REPLAYED_FROM};

bool query_dlq_header_is_ours(const char *name) {
    for (size_t i = 0; name && i < sizeof dead_letter_headers / sizeof *dead_letter_headers; i++)
        if (strcmp(dead_letter_headers[i], name) == 0)
            return true;
    return false;
}

/* The length of the UTF-8 sequence at s (at most n bytes), or 0 when it is not
 * a valid one: no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_sequence(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
                                           : c >= 0xf0 && c <= 0xf4 ? 4
                                                                     : 0;
    if (len == 0 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) ||
        (c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f))
        return 0;
    return len;
}

/* Valid UTF-8 without NUL. */
static bool is_text(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t k = s[i] ? utf8_sequence(s + i, n - i) : 0;
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

/* Copies bytes into dst as valid UTF-8: an invalid byte or a NUL becomes '?';
 * stops before a sequence that would not fit. */
static void clean_text(char *dst, size_t dstsize, const unsigned char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = s[i] ? utf8_sequence(s + i, n - i) : 0;
        size_t out = k ? k : 1;
        if (o + out >= dstsize)
            break;
        if (k)
            memcpy(dst + o, s + i, k);
        else
            dst[o] = '?';
        o += out;
        i += k ? k : 1;
    }
    dst[o] = '\0';
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 with padding; malloc'd. */
static char *base64_encode(const unsigned char *in, size_t n) {
    char *out = malloc((n + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        size_t left = n - i;
        unsigned v = (unsigned)in[i] << 16 | (left > 1 ? (unsigned)in[i + 1] << 8 : 0) |
                     (left > 2 ? in[i + 2] : 0);
        for (size_t k = 0; k < 4; k++)
            out[o++] = k <= (left < 3 ? left : 3) ? B64[(v >> (18 - 6 * k)) & 0x3f] : '=';
    }
    out[o] = '\0';
    return out;
}

/* Decodes standard base64 with padding into a malloc'd buffer (NUL-terminated,
 * *len bytes before it); NULL when malformed or out of memory. */
static unsigned char *base64_decode(const char *in, size_t *len) {
    size_t n = strlen(in);
    if (n % 4 != 0)
        return NULL;
    unsigned char *out = malloc(n / 4 * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        unsigned v = 0;
        int pad = 0;
        for (size_t k = 0; k < 4; k++) {
            const char *p = in[i + k] && in[i + k] != '=' ? strchr(B64, in[i + k]) : NULL;
            bool padding = in[i + k] == '=' && i + 4 == n && k >= 2;
            if ((!p && !padding) || (p && pad)) {
                free(out);
                return NULL;
            }
            pad += padding;
            v = v << 6 | (p ? (unsigned)(p - B64) : 0);
        }
        for (int k = 0; k < 3 - pad; k++)
            out[o++] = (unsigned char)(v >> (16 - 8 * k));
    }
    out[o] = '\0';
    *len = o;
    return out;
}

/* Bytes as a JSON string: text as is, else base64; *encoding says which. */
static json_t *bytes_to_json(const unsigned char *s, size_t n, const char **encoding) {
    if (is_text(s, n)) {
        *encoding = "utf-8";
        return json_stringn((const char *)s, n);
    }
    *encoding = "base64";
    char *b = base64_encode(s, n);
    json_t *j = b ? json_string(b) : NULL;
    free(b);
    return j;
}

bool query_dead_letter_set_bytes(unsigned char **dst, size_t *dst_len, bool *present,
                                 const void *src, size_t len) {
    free(*dst);
    *dst = NULL;
    *dst_len = 0;
    *present = src != NULL;
    if (!src)
        return true;
    *dst = malloc(len + 1);
    if (!*dst)
        return false;
    memcpy(*dst, src, len);
    (*dst)[len] = '\0';
    *dst_len = len;
    return true;
}

void query_dead_letter_clear(query_dead_letter_t *d) {
    free(d->key);
    free(d->value);
    json_decref(d->headers);
    d->key = d->value = NULL;
    d->headers = NULL;
}

/* A decimal number in [0, max] with no sign, blank or other character. */
static bool parse_count(const unsigned char *s, size_t n, int64_t max, int64_t *out) {
    if (n == 0 || n > 18)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

static json_t *header_to_json(const query_header_t *h) {
    json_t *o = json_object();
    char name[QUERY_DLQ_NAME_MAX + 1];
    clean_text(name, sizeof name, (const unsigned char *)(h->name ? h->name : ""),
               h->name ? strlen(h->name) : 0);
    json_object_set_new(o, "name", json_string(name));
    if (!h->value) {
        json_object_set_new(o, "value", json_null());
    } else {
        const char *encoding;
        json_t *v = bytes_to_json(h->value, h->len, &encoding);
        json_object_set_new(o, strcmp(encoding, "utf-8") == 0 ? "value" : "base64", v);
    }
    return o;
}

/* Reads one dead-letter header into its field; a malformed one leaves it unknown. */
static void read_dead_letter_header(query_dead_letter_t *d, const query_header_t *h) {
    const unsigned char *v = h->value;
    size_t n = v ? h->len : 0;
    int64_t num;
    if (!h->name || !v)
        return;
    if (strcmp(h->name, HDR_ORIGINAL_TOPIC) == 0)
        clean_text(d->original_topic, sizeof d->original_topic, v, n);
    else if (strcmp(h->name, HDR_CONSUMER_GROUP) == 0)
        clean_text(d->consumer_group, sizeof d->consumer_group, v, n);
    else if (strcmp(h->name, HDR_ERROR) == 0)
        clean_text(d->error, sizeof d->error, v, n);
    else if (strcmp(h->name, HDR_REPLAYED_FROM) == 0)
        clean_text(d->replayed_from, sizeof d->replayed_from, v, n);
    else if (strcmp(h->name, HDR_ORIGINAL_PARTITION) == 0 && parse_count(v, n, INT32_MAX, &num))
        d->original_partition = (int32_t)num;
    else if (strcmp(h->name, HDR_ORIGINAL_OFFSET) == 0 && parse_count(v, n, INT64_MAX, &num))
        d->original_offset = num;
    else if (strcmp(h->name, HDR_RETRY_COUNT) == 0 && parse_count(v, n, INT32_MAX, &num))
        d->retry_count = (int)num;
}

deta_err_t query_dead_letter_from_message(const char *topic, int32_t partition, int64_t offset,
                                          const void *key, size_t key_len, const void *value,
                                          size_t value_len, const query_header_t *headers,
                                          size_t nheaders, query_dead_letter_t *out) {
    memset(out, 0, sizeof *out);
    clean_text(out->topic, sizeof out->topic, (const unsigned char *)topic, strlen(topic));
    out->partition = partition;
    out->offset = offset;
    out->original_partition = -1;
    out->original_offset = -1;
    out->retry_count = -1;
    out->headers = json_array();
    if (!out->headers ||
        !query_dead_letter_set_bytes(&out->key, &out->key_len, &out->has_key, key, key_len) ||
        !query_dead_letter_set_bytes(&out->value, &out->value_len, &out->has_value, value,
                                     value_len))
        goto oom;
    for (size_t i = 0; i < nheaders; i++) {
        json_t *h = header_to_json(&headers[i]);
        if (!h || json_array_append_new(out->headers, h) != 0)
            goto oom;
        read_dead_letter_header(out, &headers[i]);
    }
    return DETA_OK;
oom:
    query_dead_letter_clear(out);
    return DETA_ERR_INTERNAL;
}

static json_t *int_or_null(int64_t v) { return v >= 0 ? json_integer(v) : json_null(); }

/* "key"/"keyEncoding" (or value) from optional bytes. */
static void set_bytes(json_t *o, const char *name, const char *encoding_name, bool present,
                      const unsigned char *s, size_t n) {
    const char *encoding = NULL;
    json_t *v = present ? bytes_to_json(s, n, &encoding) : NULL;
    json_object_set_new(o, name, v ? v : json_null());
    json_object_set_new(o, encoding_name, v ? json_string(encoding) : json_null());
}

json_t *query_dead_letter_to_json(const query_dead_letter_t *d, bool detail) {
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "id", json_integer(d->id));
    json_object_set_new(o, "topic", json_string(d->topic));
    json_object_set_new(o, "partition", json_integer(d->partition));
    json_object_set_new(o, "offset", json_integer(d->offset));
    set_bytes(o, "key", "keyEncoding", d->has_key, d->key, d->key_len);
    if (detail) {
        set_bytes(o, "value", "valueEncoding", d->has_value, d->value, d->value_len);
        json_object_set(o, "headers", d->headers ? d->headers : json_array());
    }
    json_object_set_new(o, "originalTopic", text_or_null(d->original_topic));
    json_object_set_new(o, "originalPartition", int_or_null(d->original_partition));
    json_object_set_new(o, "originalOffset", int_or_null(d->original_offset));
    json_object_set_new(o, "consumerGroup", text_or_null(d->consumer_group));
    json_object_set_new(o, "error", text_or_null(d->error));
    json_object_set_new(o, "retryCount", int_or_null(d->retry_count));
    json_object_set_new(o, "replayedFrom", text_or_null(d->replayed_from));
    json_object_set_new(o, "receivedAt", text_or_null(d->received_at));
    json_object_set_new(o, "replayCount", json_integer(d->replay_count));
    json_object_set_new(o, "lastReplayedAt", text_or_null(d->last_replayed_at));
    return o;
}

/* "dlq.x" -> "raw.x" into buf (DETA_TOPIC_MAX + 1 bytes). */
static void raw_twin(const char *dlq_topic, char *buf) {
    snprintf(buf, DETA_TOPIC_MAX + 1, "raw.%s", dlq_topic + 4);
}

json_t *query_dlq_summary_to_json(const query_dlq_counts_t counts[QUERY_DLQ_TOPIC_COUNT]) {
    json_t *topics = json_array();
    long total = 0, pending = 0;
    for (int i = 0; i < QUERY_DLQ_TOPIC_COUNT; i++) {
        char raw[DETA_TOPIC_MAX + 1];
        raw_twin(query_dlq_topics[i], raw);
        json_array_append_new(
            topics, json_pack("{s:s, s:s, s:I, s:I, s:I}", "topic", query_dlq_topics[i],
                              "originalTopic", raw, "total", (json_int_t)counts[i].total,
                              "pending", (json_int_t)counts[i].pending, "replayed",
                              (json_int_t)(counts[i].total - counts[i].pending)));
        total += counts[i].total;
        pending += counts[i].pending;
    }
    return json_pack("{s:o, s:I, s:I, s:I}", "topics", topics, "total", (json_int_t)total,
                     "pending", (json_int_t)pending, "replayed", (json_int_t)(total - pending));
}

static const char *const dlq_status_names[] = {"all", "pending", "replayed"};

const char *query_dlq_status_name(query_dlq_status_t s) {
    return (size_t)s < sizeof dlq_status_names / sizeof *dlq_status_names ? dlq_status_names[s]
                                                                         : "all";
}

deta_err_t query_dlq_list_params_parse(const char *status, const char *limit, const char *offset,
                                       const char *key, query_dlq_list_params_t *p,
                                       query_violation_t *v) {
    memset(p, 0, sizeof *p);
    p->limit = QUERY_DLQ_LIMIT_DEFAULT;
    if (status) {
        size_t i = 0;
        while (i < 3 && strcmp(dlq_status_names[i], status) != 0)
            i++;
        if (i == 3)
            return violation(v, "status", "status must be one of pending, replayed, all");
        p->status = (query_dlq_status_t)i;
    }
    int64_t n;
    if (limit) {
        if (!parse_count((const unsigned char *)limit, strlen(limit), QUERY_DLQ_LIMIT_MAX, &n) ||
            n < 1)
            return violation(v, "limit", "limit must be an integer from 1 to 200");
        p->limit = (int)n;
    }
    if (offset) {
        if (!parse_count((const unsigned char *)offset, strlen(offset), QUERY_DLQ_OFFSET_MAX, &n))
            return violation(v, "offset", "offset must be an integer from 0 to 1000000000");
        p->offset = (long)n;
    }
    if (key) {
        if (!key[0] || strlen(key) > QUERY_DLQ_KEY_MAX)
            return violation(v, "key", "key must have 1 to 256 bytes");
        snprintf(p->key, sizeof p->key, "%s", key);
        p->has_key = true;
    }
    return DETA_OK;
}

#define QUERY_DLQ_ID_MAX 9007199254740992LL /* 2^53 */

bool query_dlq_id_parse(const char *text, int64_t *id) {
    int64_t v;
    if (!text || text[0] == '0' ||
        !parse_count((const unsigned char *)text, strlen(text), QUERY_DLQ_ID_MAX, &v))
        return false;
    *id = v;
    return true;
}

/* ---- replays ---- */

void query_replay_clear(query_replay_t *r) {
    free(r->key);
    for (size_t i = 0; i < r->nheaders; i++) {
        free((char *)r->headers[i].name);
        free((char *)r->headers[i].value);
    }
    free(r->headers);
    memset(r, 0, sizeof *r);
}

static deta_err_t replay_target(const query_dead_letter_t *d, query_replay_t *r,
                                query_violation_t *v) {
    if (query_dlq_topic_index(d->topic) < 0)
        return violation(v, "topic", "not a dead-letter topic of this system");
    raw_twin(d->topic, r->topic);
    if (d->original_topic[0] && strcmp(d->original_topic, r->topic) != 0) {
        char why[sizeof v->message];
        snprintf(why, sizeof why, "x-original-topic is not %.40s, the only topic %.40s holds "
                 "dead letters of", r->topic, d->topic);
        return violation(v, "originalTopic", why);
    }
    return DETA_OK;
}

/* Appends one header to r, taking ownership of name and value. */
static bool add_replay_header(query_replay_t *r, char *name, char *value) {
    if (!name || !value) {
        free(name);
        free(value);
        return false;
    }
    r->headers[r->nheaders].name = name;
    r->headers[r->nheaders].value = value;
    r->nheaders++;
    return true;
}

/* One stored header, unless it is ours; its value must hold no NUL. */
static deta_err_t replay_header(const json_t *h, query_replay_t *r, query_violation_t *v) {
    const char *name = json_string_value(json_object_get(h, "name"));
    if (!name || !name[0])
        return violation(v, "headers", "a stored header has no name");
    if (query_dlq_header_is_ours(name))
        return DETA_OK;
    const json_t *text = json_object_get(h, "value");
    const char *b64 = json_string_value(json_object_get(h, "base64"));
    char *value;
    if (b64) {
        size_t len;
        value = (char *)base64_decode(b64, &len);
        if (value && memchr(value, '\0', len)) {
            free(value);
            return violation(v, "headers", "a header value holds a NUL byte, which cannot be sent");
        }
    } else {
        value = strdup(json_is_string(text) ? json_string_value(text) : "");
    }
    if (!value && b64)
        return violation(v, "headers", "a stored header value is not valid base64");
    return add_replay_header(r, strdup(name), value) ? DETA_OK : DETA_ERR_INTERNAL;
}

static deta_err_t replay_headers(const query_dead_letter_t *d, query_replay_t *r,
                                 query_violation_t *v) {
    size_t n = json_array_size(d->headers);
    r->headers = calloc(n + 1, sizeof *r->headers);
    if (!r->headers)
        return DETA_ERR_INTERNAL;
    for (size_t i = 0; i < n; i++) {
        deta_err_t err = replay_header(json_array_get(d->headers, i), r, v);
        if (err)
            return err;
    }
    char from[QUERY_DLQ_NAME_MAX + 1];
    snprintf(from, sizeof from, "%s/%d/%lld", d->topic, (int)d->partition, (long long)d->offset);
    return add_replay_header(r, strdup(HDR_REPLAYED_FROM), strdup(from)) ? DETA_OK
                                                                         : DETA_ERR_INTERNAL;
}

deta_err_t query_replay_prepare(const query_dead_letter_t *d, query_replay_t *r,
                                query_violation_t *v) {
    memset(r, 0, sizeof *r);
    deta_err_t err = replay_target(d, r, v);
    if (!err && d->has_key) {
        if (memchr(d->key, '\0', d->key_len))
            err = violation(v, "key", "the key holds a NUL byte, which cannot be sent");
        else if (!(r->key = strndup((const char *)d->key, d->key_len)))
            err = DETA_ERR_INTERNAL;
    }
    if (!err)
        err = replay_headers(d, r, v);
    if (err)
        query_replay_clear(r);
    return err;
}

/* ---- the admin token ---- */

bool query_secret_equal(const char *expected, const char *given) {
    size_t elen = strlen(expected), glen = strlen(given);
    volatile unsigned char diff = elen != glen;
    for (size_t i = 0; i < elen; i++)
        diff |= (unsigned char)expected[i] ^ (unsigned char)(glen ? given[i % glen] : 0);
    return diff == 0;
}

query_admin_auth_t query_admin_authorize(const char *token, const char *authorization) {
    static const char scheme[] = "Bearer";
    if (!token || !token[0])
        return QUERY_ADMIN_DISABLED;
    if (!authorization || strncasecmp(authorization, scheme, sizeof scheme - 1) != 0 ||
        authorization[sizeof scheme - 1] != ' ')
        return QUERY_ADMIN_MISSING;
    const char *given = authorization + sizeof scheme - 1;
    given += strspn(given, " ");
    if (!given[0])
        return QUERY_ADMIN_MISSING;
    return query_secret_equal(token, given) ? QUERY_ADMIN_OK : QUERY_ADMIN_WRONG;
}
