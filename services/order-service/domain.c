/*
 * domain.c - validation of order requests and the order.created payload.
 *
 * Decisions where docs/contracts.md is silent: an order holds at most ORDER_MAX_ITEMS
 * lines and a line at most ORDER_MAX_QUANTITY units; a unit price of zero is
 * allowed (a free item), a negative one is not; ids are 1..64 bytes; currency
 * defaults to USD when the field is absent, but an explicit null or empty string
 * is an error. The same itemId may appear on several lines (kept as sent).
 */
#include "domain.h"

#include <stdio.h>
#include <string.h>

#include "deta/money.h"

static deta_err_t violation(order_violation_t *v, const char *reason, const char *field,
                            const char *message) {
    snprintf(v->field, sizeof v->field, "%s", field);
    snprintf(v->message, sizeof v->message, "%s", message);
    v->reason = reason;
    return DETA_ERR_INVALID;
}

/* A required non-empty string of at most max bytes, copied into out. */
static deta_err_t take_id(const json_t *obj, const char *key, const char *field, char *out,
                          size_t max, order_violation_t *v) {
    const json_t *j = json_object_get(obj, key);
    if (!j)
        return violation(v, "missing_field", field, "is required");
    if (!json_is_string(j))
        return violation(v, "invalid_type", field, "must be a string");
    size_t len = json_string_length(j);
    if (len == 0)
        return violation(v, "empty_field", field, "must not be empty");
    if (len > max)
        return violation(v, "too_long", field, "must be at most 64 characters");
    if (strlen(json_string_value(j)) != len)
        return violation(v, "invalid_type", field, "must not contain NUL characters");
    memcpy(out, json_string_value(j), len + 1);
    return DETA_OK;
}

static deta_err_t take_currency(const json_t *body, order_t *o, order_violation_t *v) {
    const json_t *j = json_object_get(body, "currency");
    if (!j) {
        memcpy(o->currency, ORDER_DEFAULT_CURRENCY, sizeof o->currency);
        return DETA_OK;
    }
    if (!json_is_string(j) || !deta_currency_valid(json_string_value(j)))
        return violation(v, "invalid_currency", "currency",
                         "must be an ISO 4217 code: three capital letters");
    memcpy(o->currency, json_string_value(j), sizeof o->currency);
    return DETA_OK;
}

static deta_err_t take_item(const json_t *j, size_t i, order_item_t *it, order_violation_t *v) {
    char field[48];
    if (!json_is_object(j)) {
        snprintf(field, sizeof field, "items[%zu]", i);
        return violation(v, "invalid_type", field, "must be an object");
    }
    snprintf(field, sizeof field, "items[%zu].itemId", i);
    if (take_id(j, "itemId", field, it->item_id, ORDER_ID_MAX, v))
        return DETA_ERR_INVALID;

    snprintf(field, sizeof field, "items[%zu].quantity", i);
    const json_t *q = json_object_get(j, "quantity");
    if (!q)
        return violation(v, "missing_field", field, "is required");
    if (!json_is_integer(q))
        return violation(v, "invalid_quantity", field, "must be an integer");
    json_int_t qty = json_integer_value(q);
    if (qty < 1 || qty > ORDER_MAX_QUANTITY)
        return violation(v, "invalid_quantity", field, "must be between 1 and 100000");
    it->quantity = (int)qty;

    snprintf(field, sizeof field, "items[%zu].unitPrice", i);
    const json_t *p = json_object_get(j, "unitPrice");
    if (!p)
        return violation(v, "missing_field", field, "is required");
    char why[128];
    if (deta_money_from_json(p, &it->unit_price, why, sizeof why) != DETA_OK)
        return violation(v, "invalid_price", field, why);
    if (it->unit_price < 0)
        return violation(v, "invalid_price", field, "must not be negative");
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
    if (take_id(body, "customerId", "customerId", o->customer_id, ORDER_ID_MAX, v) ||
        take_currency(body, o, v) || take_items(body, o, v))
        return DETA_ERR_INVALID;
    return DETA_OK;
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
