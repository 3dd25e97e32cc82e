/*
 * domain.c - validation of order requests and the order.created payload.
 *
 * Decisions where docs/contracts.md is silent: an order holds at most ORDER_MAX_ITEMS
 * lines and a line at most ORDER_MAX_QUANTITY units; a unit price of zero is
 * allowed (a free item), a negative one is not; ids are 1..64 bytes; currency
 * defaults to USD when the field is absent, but an explicit null or empty string
 * is an error. The same itemId may appear on several lines (kept as sent).
 *
 * A cancel's body is optional; its reason may be null (= none). What a cancel
 * request is answered, and what each event the service follows does to its
 * order, are decided here too (order_cancel_decide, order_event_read).
 */
#include "domain.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "deta/fields.h"
#include "deta/money.h"
#include "deta/topics.h"

static deta_err_t violation(order_violation_t *v, const char *reason, const char *field,
                            const char *message) {
    snprintf(v->field, sizeof v->field, "%s", field);
    snprintf(v->message, sizeof v->message, "%s", message);
    v->reason = reason;
    return DETA_ERR_INVALID;
}

/* The body's fields (deta/fields.h); currency is optional: the default stands
 * when it is absent. items are read line by line with LINE_FIELDS. */
static const deta_field_t ORDER_FIELDS[] = {
    DETA_FIELD("customerId", DETA_FIELD_TEXT, true, 1, ORDER_ID_MAX, order_t, customer_id),
    DETA_FIELD("currency", DETA_FIELD_CURRENCY, false, 0, 0, order_t, currency),
};

typedef struct line_in {
    char item_id[ORDER_ID_MAX + 1];
    int64_t quantity;
    deta_money_t unit_price;
} line_in_t;

static const deta_field_t LINE_FIELDS[] = {
    DETA_FIELD("itemId", DETA_FIELD_TEXT, true, 1, ORDER_ID_MAX, line_in_t, item_id),
    DETA_FIELD("quantity", DETA_FIELD_INT, true, 1, ORDER_MAX_QUANTITY, line_in_t, quantity),
    DETA_FIELD("unitPrice", DETA_FIELD_AMOUNT, true, 0, 0, line_in_t, unit_price),
};

#define NFIELDS(t) (sizeof t / sizeof *t)

/* The rejection metric's label for a bad field: what is wrong with text, or
 * which kind of value is wrong. */
static const char *reason_of(const deta_field_error_t *e) {
    if (e->problem == DETA_FIELD_MISSING)
        return "missing_field";
    switch (e->kind) {
    case DETA_FIELD_INT: return "invalid_quantity";
    case DETA_FIELD_AMOUNT: return "invalid_price";
    case DETA_FIELD_CURRENCY: return "invalid_currency";
    default: break;
    }
    return e->problem == DETA_FIELD_EMPTY      ? "empty_field"
           : e->problem == DETA_FIELD_TOO_LONG ? "too_long"
                                               : "invalid_type";
}

static deta_err_t read_fields(const json_t *obj, const char *prefix, const deta_field_t *fields,
                              size_t n, void *out, order_violation_t *v) {
    deta_field_error_t e;
    if (deta_fields_read(obj, prefix, fields, n, out, &e) == DETA_OK)
        return DETA_OK;
    return violation(v, reason_of(&e), e.field, e.message);
}

static deta_err_t take_item(const json_t *j, size_t i, order_item_t *it, order_violation_t *v) {
    char prefix[32];
    if (!json_is_object(j)) {
        snprintf(prefix, sizeof prefix, "items[%zu]", i);
        return violation(v, "invalid_type", prefix, "must be an object");
    }
    snprintf(prefix, sizeof prefix, "items[%zu].", i);
    line_in_t line;
    if (read_fields(j, prefix, LINE_FIELDS, NFIELDS(LINE_FIELDS), &line, v))
        return DETA_ERR_INVALID;
    memcpy(it->item_id, line.item_id, sizeof it->item_id);
    it->quantity = (int)line.quantity;
    it->unit_price = line.unit_price;
    return DETA_OK;
}

static deta_err_t take_items(const json_t *body, order_t *o, order_violation_t *v) {
    const json_t *items = json_object_get(body, "items");
    if (!items)
        return violation(v, "missing_field", "items", "is required");
    if (!json_is_array(items))
        return violation(v, "invalid_type", "items", "must be a list");
    size_t n = json_array_size(items);
    if (n == 0)
        return violation(v, "empty_field", "items", "must not be empty");
    if (n > ORDER_MAX_ITEMS)
        return violation(v, "too_many_items", "items", "must hold at most 100 lines");
    o->total = 0;
    for (size_t i = 0; i < n; i++) {
        order_item_t *it = &o->items[i];
        if (take_item(json_array_get(items, i), i, it, v))
            return DETA_ERR_INVALID;
        deta_money_t line;
        if (!deta_money_mul(it->unit_price, it->quantity, &line) ||
            !deta_money_add(o->total, line, &o->total))
            return violation(v, "amount_out_of_range", "items", "total amount is out of range");
    }
    o->nitems = n;
    return DETA_OK;
}

deta_err_t order_from_request(const json_t *body, order_t *o, order_violation_t *v) {
    memset(o, 0, sizeof *o);
    if (!json_is_object(body))
        return violation(v, "invalid_type", "body", "must be a JSON object");
    memcpy(o->currency, ORDER_DEFAULT_CURRENCY, sizeof o->currency);
    if (read_fields(body, NULL, ORDER_FIELDS, NFIELDS(ORDER_FIELDS), o, v) ||
        take_items(body, o, v))
        return DETA_ERR_INVALID;
    return DETA_OK;
}

deta_err_t order_idempotency_key_check(const char *key, order_violation_t *v) {
    size_t n = key ? strlen(key) : 0;
    if (n == 0)
        return violation(v, "invalid_idempotency_key", ORDER_IDEMPOTENCY_HEADER,
                         "must not be empty");
    if (n > ORDER_IDEMPOTENCY_KEY_MAX)
        return violation(v, "invalid_idempotency_key", ORDER_IDEMPOTENCY_HEADER,
                         "must be at most 255 characters");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x21 || c > 0x7e)
            return violation(v, "invalid_idempotency_key", ORDER_IDEMPOTENCY_HEADER,
                             "must hold only visible ASCII characters ('!' to '~')");
    }
    return DETA_OK;
}

/* Integers, not decimal text, for the amounts: "9.9" and 9.90 were both parsed
 * to 990 minor units, so they compare equal without a formatting rule. The
 * leading tag names the form, should it ever change. */
char *order_request_canonical(const order_t *o) {
    json_t *lines = json_array();
    if (!lines)
        return NULL;
    for (size_t i = 0; i < o->nitems; i++) {
        const order_item_t *it = &o->items[i];
        if (json_array_append_new(lines, json_pack("[s, i, I]", it->item_id, it->quantity,
                                                   (json_int_t)it->unit_price))) {
            json_decref(lines);
            return NULL;
        }
    }
    json_t *form =
        json_pack("[s, s, s, o]", "order-request/1", o->customer_id, o->currency, lines);
    char *text = form ? json_dumps(form, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(form);
    return text;
}

void order_assign_identity(order_t *o, const char *correlation_id) {
    deta_uuid_new(o->order_id);
    if (correlation_id && deta_uuid_valid(correlation_id))
        snprintf(o->correlation_id, sizeof o->correlation_id, "%s", correlation_id);
    else
        deta_uuid_new(o->correlation_id);
    deta_timestamp_now(o->created_at);
}

json_t *order_created_payload(const order_t *o) {
    char buf[DETA_MONEY_STRLEN];
    json_t *items = json_array();
    for (size_t i = 0; items && i < o->nitems; i++) {
        const order_item_t *it = &o->items[i];
        json_array_append_new(items, json_pack("{s:s, s:i, s:s}", "itemId", it->item_id,
                                               "quantity", it->quantity, "unitPrice",
                                               deta_money_format(it->unit_price, buf)));
    }
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o*}", "orderId", o->order_id,
                     "customerId", o->customer_id, "totalAmount",
                     deta_money_format(o->total, buf), "currency", o->currency, "status",
                     ORDER_STATUS_CREATED, "createdAt", o->created_at, "items", items);
}

/* ---- cancellation ---- */

static const deta_field_t CANCEL_FIELDS[] = {
    DETA_FIELD("reason", DETA_FIELD_TEXT, true, 1, ORDER_CANCEL_REASON_MAX,
               order_cancel_request_t, reason),
};

/* An explicit null reason is the same as none: it is what GET and the event
 * show for "no reason", so a client may send back what it read. */
deta_err_t order_cancel_from_request(const json_t *body, order_cancel_request_t *c,
                                     order_violation_t *v) {
    memset(c, 0, sizeof *c);
    if (!body)
        return DETA_OK;
    if (!json_is_object(body))
        return violation(v, "invalid_type", "body", "must be a JSON object");
    const json_t *reason = json_object_get(body, "reason");
    if (!reason || json_is_null(reason))
        return DETA_OK;
    if (read_fields(body, NULL, CANCEL_FIELDS, NFIELDS(CANCEL_FIELDS), c, v))
        return DETA_ERR_INVALID;
    c->has_reason = true;
    return DETA_OK;
}

/* The cancel's own state decides first: once asked, the answer follows the
 * request (pending, won, refused) whatever the order's status says meanwhile (a
 * pick-up seen before the refusal arrives is still "not decided yet"). Without
 * a request, the order's status says whether one may be made. */
order_cancel_answer_t order_cancel_decide(const char *status, const char *cancel_status) {
    if (cancel_status && strcmp(cancel_status, ORDER_CANCEL_CANCELLED) == 0)
        return ORDER_CANCEL_DONE;
    if (cancel_status && strcmp(cancel_status, ORDER_CANCEL_REFUSED) == 0)
        return ORDER_CANCEL_WAS_REFUSED;
    if (cancel_status && strcmp(cancel_status, ORDER_CANCEL_REQUESTED) == 0)
        return ORDER_CANCEL_PENDING;
    /* A CANCELLED status without a request of ours (the saga cancelled it for
     * another reason) is an order that is cancelled: 200. */
    if (status && strcmp(status, DETA_STATE_CANCELLED) == 0)
        return ORDER_CANCEL_DONE;
    return deta_state_cancellable(status) ? ORDER_CANCEL_ASK : ORDER_CANCEL_NOT_CANCELLABLE;
}

int order_cancel_http_status(order_cancel_answer_t a) {
    switch (a) {
    case ORDER_CANCEL_ASK:
    case ORDER_CANCEL_PENDING: return 202;
    case ORDER_CANCEL_DONE: return 200;
    case ORDER_CANCEL_NOT_CANCELLABLE:
    case ORDER_CANCEL_WAS_REFUSED: return 409;
    }
    return 500;
}

const char *order_cancel_outcome(order_cancel_answer_t a) {
    switch (a) {
    case ORDER_CANCEL_ASK: return "requested";
    case ORDER_CANCEL_PENDING: return "already_requested";
    case ORDER_CANCEL_DONE: return "cancelled";
    case ORDER_CANCEL_NOT_CANCELLABLE: return "not_cancellable";
    case ORDER_CANCEL_WAS_REFUSED: return "refused";
    }
    return "error";
}

json_t *order_cancel_requested_payload(const char *order_id, const char *reason,
                                       const char *requested_at) {
    return json_pack("{s:s, s:s?, s:s}", "orderId", order_id, "reason", reason, "requestedAt",
                     requested_at);
}

/* ---- the order's events ---- */

typedef struct verdict_type {
    const char *event_type;
    const char *verdict;
} verdict_type_t;

static const verdict_type_t VERDICTS[] = {
    {DETA_EVT_INVENTORY_CANCELLED, ORDER_CANCEL_CANCELLED},
    {DETA_EVT_PAYMENT_CANCELLED, ORDER_CANCEL_CANCELLED},
    {DETA_EVT_DELIVERY_CANCELLED, ORDER_CANCEL_CANCELLED},
    {DETA_EVT_INVENTORY_CANCEL_REFUSED, ORDER_CANCEL_REFUSED},
    {DETA_EVT_PAYMENT_CANCEL_REFUSED, ORDER_CANCEL_REFUSED},
    {DETA_EVT_DELIVERY_CANCEL_REFUSED, ORDER_CANCEL_REFUSED},
};

static const char *verdict_of(const char *event_type) {
    for (size_t i = 0; event_type && i < NFIELDS(VERDICTS); i++)
        if (strcmp(VERDICTS[i].event_type, event_type) == 0)
            return VERDICTS[i].verdict;
    return NULL;
}

bool order_event_followed(const char *event_type) {
    return deta_state_for_event(event_type) != NULL || verdict_of(event_type) != NULL;
}

typedef struct event_in {
    char order_id[DETA_ID_MAX + 1];
    char at[DETA_TS_LEN];
    char order_status[DETA_STATE_MAX];
} event_in_t;

static const deta_field_t EVENT_ORDER_ID[] = {
    DETA_FIELD("orderId", DETA_FIELD_TEXT, true, 0, 0, event_in_t, order_id),
};
static const deta_field_t CANCELLED_FIELDS[] = {
    DETA_FIELD("cancelledAt", DETA_FIELD_INSTANT, true, 0, 0, event_in_t, at),
};
static const deta_field_t REFUSED_FIELDS[] = {
    DETA_FIELD("orderStatus", DETA_FIELD_TEXT, true, 0, 0, event_in_t, order_status),
    DETA_FIELD("refusedAt", DETA_FIELD_INSTANT, true, 0, 0, event_in_t, at),
};

deta_err_t order_event_read(const deta_event_t *ev, order_event_effect_t *eff, char *errstr,
                            size_t errsize) {
    memset(eff, 0, sizeof *eff);
    if (!order_event_followed(ev->event_type))
        return deta_errf(DETA_ERR_NOT_FOUND, errstr, errsize, "%s is not followed",
                         ev->event_type);
    if (!json_is_object(ev->payload))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "payload must be an object");
    event_in_t in;
    memset(&in, 0, sizeof in);
    deta_field_error_t e;
    if (deta_fields_read(ev->payload, "payload.", EVENT_ORDER_ID, 1, &in, &e))
        return deta_field_error_text(&e, errstr, errsize);
    if (strcmp(in.order_id, ev->order_id) != 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "payload.orderId %s differs from the envelope's orderId %s",
                         in.order_id, ev->order_id);
    if (!deta_uuid_valid(in.order_id))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "payload.orderId is not a UUID");
    memcpy(eff->order_id, in.order_id, sizeof eff->order_id);
    eff->state = deta_state_for_event(ev->event_type);
    eff->rank = deta_state_rank(eff->state);
    eff->verdict = verdict_of(ev->event_type);
    if (!eff->verdict)
        return DETA_OK;
    bool refused = strcmp(eff->verdict, ORDER_CANCEL_REFUSED) == 0;
    const deta_field_t *fields = refused ? REFUSED_FIELDS : CANCELLED_FIELDS;
    size_t n = refused ? NFIELDS(REFUSED_FIELDS) : NFIELDS(CANCELLED_FIELDS);
    if (deta_fields_read(ev->payload, "payload.", fields, n, &in, &e))
        return deta_field_error_text(&e, errstr, errsize);
    if (refused && deta_state_rank(in.order_status) == 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "payload.orderStatus must be an order state, not %s", in.order_status);
    memcpy(eff->decided_at, in.at, sizeof eff->decided_at);
    memcpy(eff->refused_because, in.order_status, sizeof eff->refused_because);
    return DETA_OK;
}

bool order_effect_foldable(const order_event_effect_t *eff) {
    return eff->state != NULL && eff->verdict == NULL;
}

void order_fold_outcomes(const order_event_effect_t *const *effs, const bool *folded,
                         const int *before, size_t n, order_event_result_t *results) {
    for (size_t i = 0; i < n; i++) {
        if (!folded[i])
            continue;
        if (before[i] < 0) {
            results[i] = ORDER_EVENT_UNKNOWN_ORDER;
            continue;
        }
        int highest = before[i];
        for (size_t j = 0; j < i; j++)
            if (strcasecmp(effs[j]->order_id, effs[i]->order_id) == 0 && effs[j]->rank > highest)
                highest = effs[j]->rank;
        results[i] = effs[i]->rank > highest ? ORDER_EVENT_APPLIED : ORDER_EVENT_UNCHANGED;
    }
}
