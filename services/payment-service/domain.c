/*
 * domain.c - the simulated gateway, the inventory.reserved request and the
 * payment events (see domain.h for the rules and settings).
 *
 * Design. Settings are parsed strictly and once: a typo in a decline rule must
 * stop the service at start, not silently authorize everything. The decline rate
 * is read as a decimal into parts per million with integer arithmetic, and the
 * random rule draws from a hash of (seed, orderId) - FNV-1a, then a SplitMix64
 * finalizer so that similar ids spread evenly - so the same order always gets
 * the same answer, whatever instance or retry decides it.
 */
#include "domain.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "deta/fields.h"
#include "deta/states.h"
#include "deta/topics.h"

#define PAYMENT_PRODUCER "payment-service"
#define RATE_DECIMALS 6

/* ---- settings: the values settings.c read, parsed ---- */

deta_err_t payment_parse_decline_above(const char *v, payment_settings_t *s, char *errstr,
                                       size_t errsize) {
    char why[128];
    if (deta_money_parse(v, &s->decline_above, why, sizeof why) != DETA_OK)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "PAYMENT_DECLINE_ABOVE: %s", why);
    if (s->decline_above < 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "PAYMENT_DECLINE_ABOVE: must not be negative");
    return DETA_OK;
}

/* One comma-separated entry, blanks around it removed; false when malformed. */
static bool parse_customer_rule(const char *start, size_t len, payment_customer_rule_t *rule) {
    while (len > 0 && isspace((unsigned char)*start))
        start++, len--;
    while (len > 0 && isspace((unsigned char)start[len - 1]))
        len--;
    rule->prefix = len > 0 && start[len - 1] == '*';
    if (rule->prefix)
        len--;
    if (len > PAYMENT_ID_MAX || memchr(start, '*', len))
        return false;
    memcpy(rule->text, start, len);
    rule->text[len] = '\0';
    return true;
}

static bool rule_is_empty(const payment_customer_rule_t *rule) {
    return !rule->prefix && rule->text[0] == '\0';
}

deta_err_t payment_parse_decline_customers(const char *v, payment_settings_t *s, char *errstr,
                                           size_t errsize) {
    static const char var[] = "PAYMENT_DECLINE_CUSTOMERS";
    s->ndecline_customers = 0;
    if (strcmp(v, "none") == 0)
        return DETA_OK;
    for (const char *p = v;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        payment_customer_rule_t rule;
        if (!parse_customer_rule(p, len, &rule))
            return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                             "%s: \"%.*s\" is not a customer id of at most %d characters, "
                             "optionally ending in '*'",
                             var, (int)(len > 80 ? 80 : len), p, PAYMENT_ID_MAX);
        if (!rule_is_empty(&rule)) {
            if (s->ndecline_customers == PAYMENT_MAX_CUSTOMER_RULES)
                return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: more than %d entries",
                                 var, PAYMENT_MAX_CUSTOMER_RULES);
            s->decline_customers[s->ndecline_customers++] = rule;
        }
        if (!comma)
            break;
        p = comma + 1;
    }
    if (s->ndecline_customers == 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "%s: no customer ids (set it to none to decline nobody)", var);
    return DETA_OK;
}

/* "0", "1", "0.25", "1.000000": digits, then at most RATE_DECIMALS decimals. */
static bool parse_rate_ppm(const char *s, long *ppm) {
    long whole = 0, frac = 0;
    int decimals = 0;
    const char *p = s;
    if (!isdigit((unsigned char)*p))
        return false;
    for (; isdigit((unsigned char)*p); p++)
        if ((whole = whole * 10 + (*p - '0')) > 1)
            return false;
    if (*p == '.') {
        for (p++; isdigit((unsigned char)*p); p++, decimals++)
            if (decimals == RATE_DECIMALS)
                return false;
            else
                frac = frac * 10 + (*p - '0');
        if (decimals == 0)
            return false;
    }
    if (*p != '\0')
        return false;
    for (; decimals < RATE_DECIMALS; decimals++)
        frac *= 10;
    *ppm = whole * PAYMENT_RATE_SCALE + frac;
    return *ppm <= PAYMENT_RATE_SCALE;
}

deta_err_t payment_parse_decline_rate(const char *v, payment_settings_t *s, char *errstr,
                                      size_t errsize) {
    if (!parse_rate_ppm(v, &s->decline_rate_ppm))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "PAYMENT_DECLINE_RATE: \"%.32s\" is not a number from 0 to 1 with at "
                         "most %d decimals",
                         v, RATE_DECIMALS);
    return DETA_OK;
}

/* ---- the request ---- */

static deta_err_t invalid(char *errstr, size_t errsize, const char *field, const char *why) {
    return deta_errf(DETA_ERR_INVALID, errstr, errsize, "inventory.reserved %s %s", field, why);
}

/* The fields of inventory.reserved's payload after orderId (deta/fields.h); a
 * holdExpiresAt before 1970 is no expiry any producer writes. */
static const deta_field_t REQUEST_FIELDS[] = {
    DETA_FIELD("customerId", DETA_FIELD_TEXT, true, 1, PAYMENT_ID_MAX, payment_request_t,
               customer_id),
    DETA_FIELD("totalAmount", DETA_FIELD_AMOUNT, true, 0, 0, payment_request_t, amount),
    DETA_FIELD("currency", DETA_FIELD_CURRENCY, true, 0, 0, payment_request_t, currency),
    DETA_FIELD("holdExpiresAt", DETA_FIELD_INSTANT_MS, false, 0, 0, payment_request_t,
               hold_expires_ms),
};

deta_err_t payment_request_from_event(const deta_event_t *ev, payment_request_t *req,
                                      char *errstr, size_t errsize) {
    memset(req, 0, sizeof *req);
    if (!deta_uuid_valid(ev->order_id))
        return invalid(errstr, errsize, "orderId", "must be a UUID");
    if (!json_is_object(ev->payload))
        return invalid(errstr, errsize, "payload", "must be an object");
    const json_t *oid = json_object_get(ev->payload, "orderId");
    if (!json_is_string(oid) || strcmp(json_string_value(oid), ev->order_id) != 0)
        return invalid(errstr, errsize, "payload.orderId", "must equal the envelope's orderId");
    req->hold_expires_ms = -1; /* when the event has none */
    deta_field_error_t e;
    if (deta_fields_read(ev->payload, "payload.", REQUEST_FIELDS,
                         sizeof REQUEST_FIELDS / sizeof *REQUEST_FIELDS, req, &e))
        return invalid(errstr, errsize, e.field, e.message);
    memcpy(req->event_id, ev->event_id, sizeof req->event_id);
    memcpy(req->order_id, ev->order_id, sizeof req->order_id);
    memcpy(req->correlation_id, ev->correlation_id, sizeof req->correlation_id);
    return DETA_OK;
}

/* ---- the gateway ---- */

bool payment_customer_matches(const payment_customer_rule_t *rule, const char *customer_id) {
    if (rule->prefix)
        return strncmp(customer_id, rule->text, strlen(rule->text)) == 0;
    return strcmp(customer_id, rule->text) == 0;
}

static bool customer_declined(const payment_settings_t *s, const char *customer_id) {
    for (size_t i = 0; i < s->ndecline_customers; i++)
        if (payment_customer_matches(&s->decline_customers[i], customer_id))
            return true;
    return false;
}

static uint64_t fnv1a(uint64_t h, const char *s) {
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

static uint64_t splitmix64(uint64_t z) {
    z += UINT64_C(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* The order's draw in [0, PAYMENT_RATE_SCALE): the same for the same seed and id. */
static long random_draw(long seed, const char *order_id) {
    char seed_text[32];
    snprintf(seed_text, sizeof seed_text, "%ld:", seed);
    uint64_t h = fnv1a(fnv1a(UINT64_C(0xcbf29ce484222325), seed_text), order_id);
    return (long)(splitmix64(h) % PAYMENT_RATE_SCALE);
}

payment_decision_t payment_gateway_decide(const payment_settings_t *s,
                                          const payment_request_t *req) {
    if (customer_declined(s, req->customer_id))
        return (payment_decision_t){false, PAYMENT_DECLINED_CUSTOMER};
    if (req->amount > s->decline_above)
        return (payment_decision_t){false, PAYMENT_DECLINED_AMOUNT_LIMIT};
    if (s->decline_rate_ppm > 0 && random_draw(s->decline_seed, req->order_id) < s->decline_rate_ppm)
        return (payment_decision_t){false, PAYMENT_DECLINED_RANDOM};
    return (payment_decision_t){true, NULL};
}

bool payment_hold_expired(const payment_request_t *req, int64_t now_ms) {
    return req->hold_expires_ms >= 0 && now_ms >= req->hold_expires_ms;
}

/* ---- the simulated gateway's ledger ---- */

/* The decline reasons a ledger line may name, as the constants decisions carry. */
static const char *reason_named(const char *text) {
    static const char *const reasons[] = {PAYMENT_DECLINED_AMOUNT_LIMIT, PAYMENT_DECLINED_CUSTOMER,
                                          PAYMENT_DECLINED_RANDOM};
    for (size_t i = 0; i < sizeof reasons / sizeof *reasons; i++)
        if (strcmp(text, reasons[i]) == 0)
            return reasons[i];
    return NULL;
}

void payment_ledger_format(char out[PAYMENT_LEDGER_LINE_MAX], const char *key,
                           payment_decision_t decision, const char *instance) {
    snprintf(out, PAYMENT_LEDGER_LINE_MAX, "\ncharge %s %s %s %.96s\n", key,
             decision.authorized ? PAYMENT_STATUS_AUTHORIZED : PAYMENT_STATUS_DECLINED,
             decision.authorized ? "-" : decision.reason, instance);
}

bool payment_ledger_parse(const char *line, char key[DETA_UUID_LEN + 1],
                          payment_decision_t *decision) {
    char k[DETA_UUID_LEN + 2], status[16], reason[40];
    if (sscanf(line, "charge %37s %15s %39s", k, status, reason) != 3 || !deta_uuid_valid(k))
        return false;
    if (strcmp(status, PAYMENT_STATUS_AUTHORIZED) == 0 && strcmp(reason, "-") == 0)
        *decision = (payment_decision_t){true, NULL};
    else if (strcmp(status, PAYMENT_STATUS_DECLINED) == 0 && reason_named(reason))
        *decision = (payment_decision_t){false, reason_named(reason)};
    else
        return false;
    memcpy(key, k, DETA_UUID_LEN + 1);
    return true;
}

/* ---- the payment and its event ---- */

void payment_init(payment_t *p, const char *payment_id, const payment_request_t *req,
                  payment_decision_t decision) {
    memset(p, 0, sizeof *p);
    snprintf(p->payment_id, sizeof p->payment_id, "%s", payment_id);
    p->req = *req;
    p->decision = decision;
    deta_timestamp_now(p->decided_at);
}

const char *payment_status(const payment_t *p) {
    return p->decision.authorized ? PAYMENT_STATUS_AUTHORIZED : PAYMENT_STATUS_DECLINED;
}

const char *payment_event_type(const payment_t *p) {
    return p->decision.authorized ? DETA_EVT_PAYMENT_AUTHORIZED : DETA_EVT_PAYMENT_FAILED;
}

json_t *payment_event_payload(const payment_t *p) {
    char amount[DETA_MONEY_STRLEN];
    deta_money_format(p->req.amount, amount);
    if (p->decision.authorized)
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "orderId", p->req.order_id,
                         "paymentId", p->payment_id, "customerId", p->req.customer_id, "amount",
                         amount, "currency", p->req.currency, "authorizedAt", p->decided_at);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "orderId", p->req.order_id,
                     "paymentId", p->payment_id, "customerId", p->req.customer_id, "amount",
                     amount, "currency", p->req.currency, "reason", p->decision.reason,
                     "failedAt", p->decided_at);
}

deta_err_t payment_event_build(const payment_t *p, deta_event_t *ev, char *errstr,
                               size_t errsize) {
    json_t *payload = payment_event_payload(p);
    if (!payload)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    deta_err_t err = deta_event_init(ev, payment_event_type(p), p->req.order_id,
                                     p->req.correlation_id, PAYMENT_PRODUCER, payload, errstr,
                                     errsize);
    if (err == DETA_OK)
        snprintf(ev->occurred_at, sizeof ev->occurred_at, "%s", p->decided_at);
    return err;
}

/* ---- the cancellation saga ---- */

static deta_err_t invalid_of(const char *type, char *errstr, size_t errsize, const char *field,
                             const char *why) {
    return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s %s %s", type, field, why);
}

/* The envelope's orderId a UUID and the payload's the same (every event here). */
static deta_err_t check_order(const deta_event_t *ev, const char *type, char *errstr,
                              size_t errsize) {
    if (!deta_uuid_valid(ev->order_id))
        return invalid_of(type, errstr, errsize, "orderId", "must be a UUID");
    if (!json_is_object(ev->payload))
        return invalid_of(type, errstr, errsize, "payload", "must be an object");
    const json_t *oid = json_object_get(ev->payload, "orderId");
    if (!json_is_string(oid) || strcmp(json_string_value(oid), ev->order_id) != 0)
        return invalid_of(type, errstr, errsize, "payload.orderId",
                          "must equal the envelope's orderId");
    return DETA_OK;
}

static const deta_field_t CANCEL_FIELDS[] = {
    DETA_FIELD("reservationId", DETA_FIELD_TEXT, true, 1, DETA_ID_MAX, payment_cancel_t,
               reservation_id),
    DETA_FIELD("requestedAt", DETA_FIELD_INSTANT, true, 0, 0, payment_cancel_t, requested_at),
};
static const deta_field_t CANCEL_REASON_FIELD[] = {
    DETA_FIELD("reason", DETA_FIELD_TEXT, true, 1, PAYMENT_REASON_MAX, payment_cancel_t,
               reason),
};

deta_err_t payment_cancel_from_event(const deta_event_t *ev, payment_cancel_t *c, char *errstr,
                                     size_t errsize) {
    static const char type[] = DETA_EVT_INVENTORY_CANCEL_FORWARDED;
    memset(c, 0, sizeof *c);
    deta_err_t err = check_order(ev, type, errstr, errsize);
    if (err)
        return err;
    deta_field_error_t e;
    if (deta_fields_read(ev->payload, "payload.", CANCEL_FIELDS,
                         sizeof CANCEL_FIELDS / sizeof *CANCEL_FIELDS, c, &e))
        return invalid_of(type, errstr, errsize, e.field, e.message);
    /* reason: the client's, or null (absent is taken as null too) */
    const json_t *reason = json_object_get(ev->payload, "reason");
    if (reason && !json_is_null(reason)) {
        if (deta_fields_read(ev->payload, "payload.", CANCEL_REASON_FIELD, 1, c, &e))
            return invalid_of(type, errstr, errsize, e.field, e.message);
        c->has_reason = true;
    }
    memcpy(c->event_id, ev->event_id, sizeof c->event_id);
    memcpy(c->order_id, ev->order_id, sizeof c->order_id);
    memcpy(c->correlation_id, ev->correlation_id, sizeof c->correlation_id);
    return DETA_OK;
}

payment_cancel_verdict_t payment_cancel_decide(bool decided_before, const char *payment_status) {
    if (decided_before)
        return PAYMENT_CANCEL_DECIDED;
    if (!payment_status)
        return PAYMENT_CANCEL_FENCE;
    if (strcmp(payment_status, PAYMENT_STATUS_AUTHORIZED) == 0)
        return PAYMENT_CANCEL_FORWARD;
    return PAYMENT_CANCEL_REFUSE;
}

const char *payment_cancel_verdict_name(payment_cancel_verdict_t v) {
    switch (v) {
    case PAYMENT_CANCEL_FORWARD:
        return "FORWARDED";
    case PAYMENT_CANCEL_REFUSE:
        return "REFUSED";
    case PAYMENT_CANCEL_FENCE:
        return "CANCELLED";
    case PAYMENT_CANCEL_DECIDED:
        break;
    }
    return NULL;
}

static json_t *cancel_payload(const payment_cancel_t *c, payment_cancel_verdict_t v,
                              const char *payment_id, const char *at) {
    json_t *reason = c->has_reason ? json_string(c->reason) : json_null();
    switch (v) {
    case PAYMENT_CANCEL_FORWARD:
        return json_pack("{s:s, s:s, s:o, s:s, s:s}", "orderId", c->order_id, "paymentId",
                         payment_id, "reason", reason, "requestedAt", c->requested_at,
                         "forwardedAt", at);
    case PAYMENT_CANCEL_REFUSE:
        return json_pack("{s:s, s:s, s:o, s:s, s:s}", "orderId", c->order_id, "orderStatus",
                         DETA_STATE_PAYMENT_FAILED, "reason", reason, "requestedAt",
                         c->requested_at, "refusedAt", at);
    case PAYMENT_CANCEL_FENCE:
        return json_pack("{s:s, s:s, s:s, s:o, s:s, s:s}", "orderId", c->order_id, "stage",
                         PAYMENT_STAGE_NONE, "reservationId", c->reservation_id, "reason",
                         reason, "requestedAt", c->requested_at, "cancelledAt", at);
    case PAYMENT_CANCEL_DECIDED:
        break;
    }
    json_decref(reason);
    return NULL;
}

static const char *cancel_event_type(payment_cancel_verdict_t v) {
    return v == PAYMENT_CANCEL_FORWARD  ? DETA_EVT_PAYMENT_CANCEL_FORWARDED
           : v == PAYMENT_CANCEL_REFUSE ? DETA_EVT_PAYMENT_CANCEL_REFUSED
                                        : DETA_EVT_PAYMENT_CANCELLED;
}

deta_err_t payment_cancel_event_build(const payment_cancel_t *c, payment_cancel_verdict_t v,
                                      const char *payment_id, const char *decided_at,
                                      deta_event_t *ev, char *errstr, size_t errsize) {
    memset(ev, 0, sizeof *ev);
    if (v == PAYMENT_CANCEL_DECIDED || (v == PAYMENT_CANCEL_FORWARD && !payment_id))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "no event for this verdict");
    json_t *payload = cancel_payload(c, v, payment_id, decided_at);
    if (!payload)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    deta_err_t err = deta_event_init(ev, cancel_event_type(v), c->order_id, c->correlation_id,
                                     PAYMENT_PRODUCER, payload, errstr, errsize);
    if (err == DETA_OK)
        snprintf(ev->occurred_at, sizeof ev->occurred_at, "%s", decided_at);
    return err;
}

/* ---- refunds ---- */

deta_err_t payment_refund_request_from_event(const deta_event_t *ev,
                                             payment_refund_request_t *r, char *errstr,
                                             size_t errsize) {
    memset(r, 0, sizeof *r);
    deta_err_t err = check_order(ev, DETA_EVT_DELIVERY_CANCELLED, errstr, errsize);
    if (err)
        return err;
    memcpy(r->event_id, ev->event_id, sizeof r->event_id);
    memcpy(r->order_id, ev->order_id, sizeof r->order_id);
    memcpy(r->correlation_id, ev->correlation_id, sizeof r->correlation_id);
    return DETA_OK;
}

bool payment_refund_amount(const char *payment_status, deta_money_t charged,
                           deta_money_t *amount) {
    if (!payment_status || strcmp(payment_status, PAYMENT_STATUS_AUTHORIZED) != 0 || charged < 0)
        return false;
    *amount = charged; /* whole: a cancelled order is refunded what it was charged */
    return true;
}

json_t *payment_refund_payload(const payment_refund_t *r) {
    char amount[DETA_MONEY_STRLEN];
    deta_money_format(r->amount, amount);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "orderId", r->req.order_id,
                     "paymentId", r->payment_id, "refundId", r->refund_id, "amount", amount,
                     "currency", r->currency, "reason", DETA_REASON_ORDER_CANCELLED,
                     "refundedAt", r->refunded_at);
}

deta_err_t payment_refund_event_build(const payment_refund_t *r, deta_event_t *ev,
                                      char *errstr, size_t errsize) {
    json_t *payload = payment_refund_payload(r);
    if (!payload) {
        memset(ev, 0, sizeof *ev);
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    }
    deta_err_t err = deta_event_init(ev, DETA_EVT_PAYMENT_REFUNDED, r->req.order_id,
                                     r->req.correlation_id, PAYMENT_PRODUCER, payload, errstr,
                                     errsize);
    if (err == DETA_OK)
        snprintf(ev->occurred_at, sizeof ev->occurred_at, "%s", r->refunded_at);
    return err;
}

void payment_ledger_format_refund(char out[PAYMENT_LEDGER_LINE_MAX], const char *key,
                                  deta_money_t amount, const char *instance) {
    char text[DETA_MONEY_STRLEN];
    snprintf(out, PAYMENT_LEDGER_LINE_MAX, "\nrefund %s %s %.96s\n", key,
             deta_money_format(amount, text), instance);
}

bool payment_ledger_parse_refund(const char *line, char key[DETA_UUID_LEN + 1],
                                 deta_money_t *amount) {
    char k[DETA_UUID_LEN + 2], text[DETA_MONEY_STRLEN + 1], instance[2];
    deta_money_t m;
    if (sscanf(line, "refund %37s %24s %1s", k, text, instance) != 3 || !deta_uuid_valid(k) ||
        deta_money_parse(text, &m, NULL, 0) != DETA_OK || m < 0)
        return false;
    memcpy(key, k, DETA_UUID_LEN + 1);
    *amount = m;
    return true;
}

void payment_dedup_key(char out[PAYMENT_KEY_MAX], const char *event_id) {
    snprintf(out, PAYMENT_KEY_MAX, "payment:dedup:%s", event_id);
}

void payment_lock_key(char out[PAYMENT_KEY_MAX], const char *order_id) {
    snprintf(out, PAYMENT_KEY_MAX, "payment-lock:order:%s", order_id);
}
